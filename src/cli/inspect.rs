//! `inspect` and `verify`: what a directory tier holds, checked against its metadata.

use std::collections::BTreeMap;
use std::path::Path;

use datasync::audit::{audit, short};
use datasync::meta::{META_KEY, ROOT_KEY};
use datasync::partition::Counts;
use datasync::{DirPersistence, Meta, Persistence};
use serde::Serialize;

use super::{existing_tier, CliResult};

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

/// Reads a directory tier and checks it with the library's audit, changing nothing
/// (except the recovery that opening a directory performs after a crash).
pub fn examine(dir: &mut DirPersistence) -> CliResult<Report> {
    let mut problems = Vec::new();
    let listed = dir.keys()?;
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
    let root = match dir.read(ROOT_KEY) {
        Ok(root) => root,
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let found = audit("dir", listed, meta.as_ref(), root.as_deref(), |key| {
        dir.read(key)
    });
    problems.extend(found.problems);
    if meta.is_none() && !found.partitions.is_empty() && problems.is_empty() {
        problems.push("partitions exist but the metadata is missing".into());
    }
    let partitions = found
        .partitions
        .into_iter()
        .map(|p| PartitionReport {
            file: dir.file_of(&p.key).display().to_string(),
            key: p.key,
            hash: p.entry.hash,
            bytes: p.bytes,
            entities: p.entry.entities,
        })
        .collect();
    let quarantined = std::fs::read_dir(dir.path().join("corrupt"))
        .map(|d| d.count())
        .unwrap_or(0);
    Ok(Report {
        dir: dir.path().display().to_string(),
        root: found.rebuilt.root(),
        recorded_root: meta.as_ref().map(Meta::root),
        updated_at: meta
            .as_ref()
            .map(|m| datasync::clock::format_millis(m.updated_at)),
        partitions,
        quarantined,
        problems,
    })
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
    existing_tier(path)?;
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
    existing_tier(path)?;
    let mut dir = DirPersistence::open(path)?;
    if datasync::pieces::is_converted(&mut dir, "local")? {
        return verify_pieces(path, dir);
    }
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

/// `verify` of a directory in format 2: every partition read through its pieces
/// (each checked against its hash, the writers' chains checked) and compared with
/// the metadata.
fn verify_pieces(path: &Path, dir: DirPersistence) -> CliResult<u8> {
    let ds = datasync::DataSync::open(
        datasync::Config::new("verify")
            .format(2)
            .sync_on_open(false)
            .local(dir),
    )?;
    let problems = ds.audit()?;
    let partitions = ds.tier_keys(datasync::TierId::Local)?.len();
    ds.close()?;
    if problems.is_empty() {
        println!("ok: {partitions} partition(s) verified (format 2)");
        return Ok(0);
    }
    println!("{} problem(s) in {}:", problems.len(), path.display());
    for problem in &problems {
        println!("  {problem}");
    }
    Ok(1)
}
