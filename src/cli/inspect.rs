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

impl Report {
    /// The report of `dir`: the root found, the metadata's root and instant if it
    /// has readable metadata, and the files moved aside as corrupt.
    fn new(
        dir: &DirPersistence,
        root: String,
        recorded: Option<(String, datasync::clock::Millis)>,
        partitions: Vec<PartitionReport>,
        problems: Vec<String>,
    ) -> Report {
        let quarantined = std::fs::read_dir(dir.path().join("corrupt"))
            .map(|d| d.count())
            .unwrap_or(0);
        let (recorded_root, updated_at) = match recorded {
            Some((root, at)) => (Some(root), Some(datasync::clock::format_millis(at))),
            None => (None, None),
        };
        Report {
            dir: dir.path().display().to_string(),
            root,
            recorded_root,
            updated_at,
            partitions,
            quarantined,
            problems,
        }
    }
}

/// Reads a directory tier and checks it with the library's audit, changing nothing
/// (except the recovery that opening a directory performs after a crash).
pub fn examine(dir: &mut DirPersistence) -> CliResult<Report> {
    if datasync::pieces::is_converted(dir, "dir")? {
        return examine_pieces(dir);
    }
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
    Ok(Report::new(
        dir,
        found.rebuilt.root(),
        meta.as_ref().map(|m| (m.root(), m.updated_at)),
        partitions,
        problems,
    ))
}

/// [`examine`] of a directory in format 2: every partition read through its pieces
/// (each checked against its name), compared with the summary tree's entries.
/// `hash` is then the hash of the writes a partition holds, `bytes` its pieces' size,
/// `file` its index, and the roots are the tree's.
fn examine_pieces(dir: &mut DirPersistence) -> CliResult<Report> {
    let mut problems = Vec::new();
    let meta = match Meta::read_stored(|k| match dir.read(k) {
        Ok(found) => found,
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    }) {
        Ok(meta) => meta,
        Err(why) => {
            problems.push(format!("metadata is damaged: {why}"));
            None
        }
    };
    let listed = dir.keys()?.unwrap_or_default();
    let mut found = Meta::default();
    let mut partitions = Vec::new();
    for key in listed
        .iter()
        .filter_map(|k| datasync::pieces::partition_of_index(k))
    {
        let index_key = datasync::pieces::index_key(key);
        let bytes = match dir
            .read(&index_key)?
            .map(|b| datasync::pieces::Index::parse(&b))
        {
            Some(Ok(index)) => index.entries.iter().map(|e| e.bytes as usize).sum(),
            Some(Err(why)) => {
                problems.push(format!("{key:?}: its index is damaged: {why}"));
                continue;
            }
            None => continue,
        };
        let mut adapter = Inspecting(dir);
        let read = datasync::pieces::PieceTier::new(&mut adapter, false, "dir")
            .read(key, &datasync::LastWriterWins);
        let read = match read {
            Ok(Some(read)) => read,
            Ok(None) => continue,
            Err(e) => {
                problems.push(format!("{key:?}: {e}"));
                continue;
            }
        };
        let entry = datasync::MetaEntry {
            hash: read.vector.summary(),
            updated_at: 0,
            entities: read.partition.counts(),
        };
        match meta.as_ref().and_then(|m| m.entries.get(key)) {
            None if meta.is_some() => problems.push(format!("{key:?} has an index but no entry")),
            Some(recorded) if recorded.hash != entry.hash => problems.push(format!(
                "{key:?}: the entry does not record the writes the partition holds"
            )),
            Some(recorded) if recorded.entities != entry.entities => problems.push(format!(
                "{key:?}: the entry's counts are not the partition's"
            )),
            _ => {}
        }
        partitions.push(PartitionReport {
            file: dir.file_of(&index_key).display().to_string(),
            key: key.to_string(),
            hash: entry.hash.clone(),
            bytes,
            entities: entry.entities.clone(),
        });
        found.entries.insert(key.to_string(), entry);
    }
    if let Some(meta) = &meta {
        for key in meta.entries.keys() {
            if !found.entries.contains_key(key) {
                problems.push(format!("{key:?} is recorded but has no readable index"));
            }
        }
    }
    // Missing metadata is not damage in format 2: a directory recovering from an
    // interrupted write removes it, and the next instance rebuilds it from the
    // indexes (the report's recorded root is then absent).
    Ok(Report::new(
        dir,
        found.tree_root(),
        meta.as_ref().map(|m| (m.tree_root(), m.updated_at)),
        partitions,
        problems,
    ))
}

/// A directory tier read without changing it: a damaged file is an error naming
/// it, and stays where it is (an instance's read moves it aside); writes are refused.
struct Inspecting<'a>(&'a DirPersistence);

impl Persistence for Inspecting<'_> {
    fn load(&mut self, key: &str) -> datasync::AdapterResult<Option<Vec<u8>>> {
        self.0
            .read(key)
            .map_err(|e| datasync::AdapterError::new(e.to_string()))
    }

    fn store(&mut self, key: &str, _bytes: &[u8]) -> datasync::AdapterResult<()> {
        Err(datasync::AdapterError::refused(format!(
            "inspection writes nothing ({key})"
        )))
    }

    fn clear(&mut self, key: &str) -> datasync::AdapterResult<()> {
        self.store(key, &[])
    }
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
    if report.recorded_root.is_none() && !report.partitions.is_empty() {
        println!("metadata   none yet (rebuilt from the partitions when the tier next opens)");
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
