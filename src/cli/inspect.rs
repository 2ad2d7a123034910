//! `inspect` and `verify`: what a directory tier holds, checked against its metadata.

use std::collections::BTreeMap;
use std::path::Path;

use datasync::meta::{META_KEY, ROOT_KEY};
use datasync::partition::{hash_bytes, Counts};
use datasync::{DirPersistence, Meta, MetaEntry, Partition, Persistence};
use serde::Serialize;

use super::{existing_dir, CliResult};

/// One partition as found on disk.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    pub key: String,
    /// Hash of the partition's canonical bytes, recomputed from the file.
    pub hash: String,
    /// Size of the stored partition document.
    pub bytes: usize,
    pub entities: BTreeMap<String, Counts>,
    pub file: String,
}

/// Everything `inspect` shows and `verify` checks.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dir: String,
    /// The root over the partitions as found on disk (equal to the recorded root
    /// when the tier is consistent). Two tiers with equal roots hold equal data.
    pub root: String,
    /// The root the tier's metadata records, if it has readable metadata.
    #[serde(rename = "recordedRoot")]
    pub recorded_root: Option<String>,
    #[serde(rename = "updatedAt")]
    pub updated_at: Option<String>,
    pub partitions: Vec<PartitionReport>,
    /// Files moved aside as corrupt (in `corrupt/`).
    #[serde(rename = "quarantined")]
    pub quarantined: usize,
    /// Everything that disagrees; empty when the tier is consistent.
    pub problems: Vec<String>,
}

/// Reads a directory tier through the adapter and checks it, changing nothing
/// (except the recovery that opening a directory performs after a crash).
pub fn examine(dir: &mut DirPersistence) -> CliResult<Report> {
    let mut problems = Vec::new();
    let keys = dir.keys()?.unwrap_or_default();
    let meta = match dir.read(META_KEY) {
        Ok(None) => None,
        Ok(Some(bytes)) => match Meta::parse(&bytes) {
            Ok(meta) => Some(meta),
            Err(why) => {
                problems.push(format!("metadata is damaged: {why}"));
                None
            }
        },
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let mut found = Meta::default();
    let mut partitions = Vec::new();
    for key in keys.iter().filter(|k| !k.starts_with('!')) {
        let bytes = match dir.read(key) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => continue,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        let partition = match Partition::parse(&bytes, false) {
            Ok(p) => p,
            Err(why) => {
                problems.push(format!("partition {key:?} does not parse: {why}"));
                continue;
            }
        };
        let canonical = partition.to_canonical();
        if canonical != bytes {
            problems.push(format!("partition {key:?} is not stored in canonical form"));
        }
        let entry = MetaEntry::describe(&partition, &canonical, 0);
        match meta.as_ref().map(|m| m.entries.get(key)) {
            Some(None) => problems.push(format!("partition {key:?} is missing from the metadata")),
            Some(Some(recorded)) => {
                if recorded.hash != entry.hash {
                    problems.push(format!(
                        "partition {key:?}: hash {} differs from the recorded {}",
                        short(&entry.hash),
                        short(&recorded.hash)
                    ));
                }
                if recorded.entities != entry.entities {
                    problems.push(format!(
                        "partition {key:?}: counts differ from the metadata"
                    ));
                }
            }
            None => {}
        }
        partitions.push(PartitionReport {
            key: key.clone(),
            hash: hash_bytes(&canonical),
            bytes: bytes.len(),
            entities: entry.entities.clone(),
            file: dir.file_of(key).display().to_string(),
        });
        found.entries.insert(key.clone(), entry);
    }
    match &meta {
        Some(meta) => {
            for key in meta
                .entries
                .keys()
                .filter(|k| !found.entries.contains_key(*k))
            {
                problems.push(format!(
                    "partition {key:?} is in the metadata but its file is missing or unreadable"
                ));
            }
            match dir.read(ROOT_KEY) {
                Ok(Some(root)) if root != meta.root().as_bytes() => {
                    problems.push("the stored root differs from the metadata's".into())
                }
                Ok(_) => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
        None if !partitions.is_empty() && problems.is_empty() => {
            problems.push("partitions exist but the metadata is missing".into())
        }
        None => {}
    }
    let quarantined = std::fs::read_dir(dir.path().join("corrupt"))
        .map(|d| d.count())
        .unwrap_or(0);
    Ok(Report {
        dir: dir.path().display().to_string(),
        root: found.root(),
        recorded_root: meta.as_ref().map(Meta::root),
        updated_at: meta
            .as_ref()
            .map(|m| datasync::clock::format_millis(m.updated_at)),
        partitions,
        quarantined,
        problems,
    })
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

fn describe_counts(entities: &BTreeMap<String, Counts>) -> String {
    if entities.is_empty() {
        return "empty".into();
    }
    entities
        .iter()
        .map(|(name, c)| {
            if c.deleted_count > 0 {
                format!("{name}: {} (+{} deleted)", c.count, c.deleted_count)
            } else {
                format!("{name}: {}", c.count)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn inspect(path: &Path, json: bool) -> CliResult<u8> {
    existing_dir(path)?;
    let mut dir = DirPersistence::open(path)?;
    let report = examine(&mut dir)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    println!("directory  {}", report.dir);
    println!("root       {}", report.root);
    if let Some(at) = &report.updated_at {
        println!("updated    {at}");
    }
    let total: usize = report.partitions.iter().map(|p| p.bytes).sum();
    println!("{} partition(s), {total} bytes", report.partitions.len());
    let width = report
        .partitions
        .iter()
        .map(|p| p.key.chars().count())
        .max()
        .unwrap_or(0)
        .max(9);
    if !report.partitions.is_empty() {
        println!();
        println!(
            "  {:<width$}  {:>9}  {:<12}  entities",
            "partition", "bytes", "hash"
        );
    }
    for p in &report.partitions {
        println!(
            "  {:<width$}  {:>9}  {:<12}  {}",
            p.key,
            p.bytes,
            short(&p.hash),
            describe_counts(&p.entities)
        );
    }
    if report.quarantined > 0 {
        println!(
            "\n{} file(s) moved aside as corrupt in {}",
            report.quarantined,
            dir.path().join("corrupt").display()
        );
    }
    if !report.problems.is_empty() {
        println!(
            "\n{} problem(s) (run `datasync verify` for the list)",
            report.problems.len()
        );
    }
    Ok(0)
}

pub fn verify(path: &Path) -> CliResult<u8> {
    existing_dir(path)?;
    let mut dir = DirPersistence::open(path)?;
    let report = examine(&mut dir)?;
    if report.problems.is_empty() {
        println!(
            "ok: {} partition(s) verified, root {}",
            report.partitions.len(),
            report.root
        );
        return Ok(0);
    }
    println!("{} problem(s) in {}:", report.problems.len(), report.dir);
    for problem in &report.problems {
        println!("  {problem}");
    }
    Ok(1)
}
