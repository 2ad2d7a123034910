//! The one audit of a tier: every partition re-read, re-hashed and re-counted, and
//! compared with what the metadata records. Rebuilding lost or damaged metadata is
//! the same walk keeping what it found. The instance's `audit`, a blob tier's
//! rebuild, the directory tier's recovery and the command's `inspect`/`verify` all
//! use it.

use crate::clock::now_millis;
use crate::error::Result;
use crate::meta::{is_reserved, Meta, MetaEntry};
use crate::partition::Partition;

/// One partition as the audit found it.
#[derive(Debug, Clone)]
pub struct FoundPartition {
    pub key: String,
    /// Size of the stored document.
    pub bytes: usize,
    /// Hash and counts recomputed from the canonical form.
    pub entry: MetaEntry,
}

/// What an audit found.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    /// Metadata rebuilt from every partition that parses.
    pub rebuilt: Meta,
    /// The partitions read, in key order.
    pub partitions: Vec<FoundPartition>,
    /// Everything that disagrees, one sentence each; empty when the tier is true.
    pub problems: Vec<String>,
}

/// Audits one tier named `label`. The partitions examined are those `listed` by the
/// adapter (reserved keys are skipped) and those the `recorded` metadata names; the
/// `stored_root` is checked against the recorded metadata. `load` reads one key.
pub fn audit(
    label: &str,
    listed: Option<Vec<String>>,
    recorded: Option<&Meta>,
    stored_root: Option<&[u8]>,
    mut load: impl FnMut(&str) -> Result<Option<Vec<u8>>>,
) -> Audit {
    let now = now_millis();
    let mut found = Audit {
        rebuilt: Meta {
            updated_at: now,
            ..Meta::default()
        },
        ..Audit::default()
    };
    let listed: std::collections::BTreeSet<String> = listed
        .unwrap_or_default()
        .into_iter()
        .filter(|k| !is_reserved(k))
        .collect();
    let mut keys = listed.clone();
    if let Some(meta) = recorded {
        keys.extend(meta.entries.keys().cloned());
    }
    for key in keys {
        let recorded_entry = recorded.and_then(|m| m.entries.get(&key));
        let bytes = match load(&key) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                if recorded_entry.is_some() {
                    found.problems.push(format!(
                        "{label}: {key:?} is in the metadata but has no partition"
                    ));
                }
                continue;
            }
            Err(e) => {
                found.problems.push(e.to_string());
                continue;
            }
        };
        let partition = match Partition::parse(&bytes, false) {
            Ok(p) => p,
            Err(why) => {
                found
                    .problems
                    .push(format!("{label}: {key:?} is corrupt: {why}"));
                continue;
            }
        };
        let canonical = partition.to_canonical();
        if canonical != bytes {
            found
                .problems
                .push(format!("{label}: {key:?} is not stored in canonical form"));
        }
        let entry = MetaEntry::describe(&partition, &canonical, now);
        match (recorded, recorded_entry) {
            (Some(_), None) => found
                .problems
                .push(format!("{label}: {key:?} is missing from the metadata")),
            (Some(_), Some(r)) => {
                if r.hash != entry.hash {
                    found.problems.push(format!(
                        "{label}: {key:?} hash {} differs from its metadata's {}",
                        short(&entry.hash),
                        short(&r.hash)
                    ));
                }
                if r.entities != entry.entities {
                    found
                        .problems
                        .push(format!("{label}: {key:?} counts differ from its metadata"));
                }
            }
            (None, _) => {}
        }
        found.partitions.push(FoundPartition {
            key: key.clone(),
            bytes: bytes.len(),
            entry: entry.clone(),
        });
        found.rebuilt.entries.insert(key, entry);
    }
    if let (Some(meta), Some(root)) = (recorded, stored_root) {
        if root != meta.root().as_bytes() {
            found
                .problems
                .push(format!("{label}: stored root differs from the metadata's"));
        }
    }
    found
}

/// The first characters of a hash, enough to tell two apart in a message.
pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
