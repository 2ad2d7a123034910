//! Per-tier metadata: a hash and counts per partition, and a root over all of them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::{format_millis, parse_millis, Millis};
use crate::partition::{hash_bytes, Counts, Partition};

/// The reserved key the metadata document is stored under. Partition keys start with
/// the instance prefix, which may not start with `!`, so they never collide.
pub const META_KEY: &str = "!datasync.meta";
/// The reserved key of the root hash alone, so a no-op sync reads two short values.
pub const ROOT_KEY: &str = "!datasync.root";

/// The first character of every key the library keeps for itself (metadata, root).
/// Partition keys start with the instance prefix, which may not start with it.
pub const RESERVED_MARK: char = '!';

/// The hash recorded for a partition that exists but cannot be read as the metadata
/// says (its file is missing, damaged, or an older copy). It equals no real hash, so
/// every sync compares the key again and restores it from a tier that holds it, and
/// reads of it fail until then. It is kept across restarts like any entry.
pub const DAMAGED: &str = "damaged";

/// Whether `key` is one of the library's own keys rather than a partition.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_MARK)
}

/// What the metadata says of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaEntry {
    pub hash: String,
    pub updated_at: Millis,
    pub entities: BTreeMap<String, Counts>,
}

impl MetaEntry {
    /// The entry describing `partition`, whose canonical bytes are `bytes`.
    pub fn describe(partition: &Partition, bytes: &[u8], now: Millis) -> MetaEntry {
        MetaEntry {
            hash: hash_bytes(bytes),
            updated_at: now,
            entities: partition.counts(),
        }
    }
}

/// The metadata of one tier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub updated_at: Millis,
    pub entries: BTreeMap<String, MetaEntry>,
}

#[derive(Serialize, Deserialize)]
struct EntryDoc {
    hash: String,
    #[serde(rename = "updatedAt")]
    updated_at: String,
    #[serde(default)]
    entities: BTreeMap<String, Counts>,
}

impl EntryDoc {
    fn of(e: &MetaEntry) -> EntryDoc {
        EntryDoc {
            hash: e.hash.clone(),
            updated_at: format_millis(e.updated_at),
            entities: e.entities.clone(),
        }
    }

    /// The entry, checked: a 64-digit hex hash (or [`DAMAGED`]) and an instant.
    fn into_entry(self, key: &str) -> Result<MetaEntry, String> {
        let hex = self.hash.len() == 64 && self.hash.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex && self.hash != DAMAGED {
            return Err(format!("entry {key:?} has a malformed hash"));
        }
        Ok(MetaEntry {
            updated_at: instant(&self.updated_at)?,
            hash: self.hash,
            entities: self.entities,
        })
    }
}

pub(crate) fn instant(s: &str) -> Result<Millis, String> {
    parse_millis(s).ok_or_else(|| format!("{s:?} is not an instant"))
}

#[derive(Serialize, Deserialize)]
struct MetaDoc {
    #[serde(rename = "updatedAt")]
    updated_at: String,
    #[serde(default)]
    root: String,
    #[serde(rename = "entityKeys", default)]
    entity_keys: BTreeMap<String, EntryDoc>,
}

impl Meta {
    /// The root hash: BLAKE3 over the sorted `(key, hash)` pairs. Equal roots mean
    /// equal partitions (up to a hash collision).
    pub fn root(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        for (key, entry) in &self.entries {
            hasher.update(key.as_bytes());
            hasher.update(&[0]);
            hasher.update(entry.hash.as_bytes());
            hasher.update(b"\n");
        }
        hasher.finalize().to_hex().to_string()
    }

    /// The hash recorded for `key`.
    pub fn hash_of(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|e| e.hash.as_str())
    }

    /// The stored form: canonical JSON as DESIGN.md §3 describes it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let doc = MetaDoc {
            updated_at: format_millis(self.updated_at),
            root: self.root(),
            entity_keys: self
                .entries
                .iter()
                .map(|(k, e)| (k.clone(), EntryDoc::of(e)))
                .collect(),
        };
        serde_json::to_vec(&doc).unwrap_or_default()
    }

    /// Parses the stored form.
    pub fn parse(bytes: &[u8]) -> Result<Meta, String> {
        let doc: MetaDoc =
            serde_json::from_slice(bytes).map_err(|e| format!("not a metadata document: {e}"))?;
        let mut entries = BTreeMap::new();
        for (key, e) in doc.entity_keys {
            let entry = e.into_entry(&key)?;
            entries.insert(key, entry);
        }
        Ok(Meta {
            updated_at: instant(&doc.updated_at)?,
            entries,
        })
    }
}
