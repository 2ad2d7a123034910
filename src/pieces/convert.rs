//! Conversion of a blob tier from format 1 (one document per partition, one metadata
//! document) to pieces, in place and crash-safely.
//!
//! Each format-1 partition becomes one piece (the whole partition, as the write of a
//! writer named after its bytes) and an index. Format-1 documents stay as they are
//! until every partition has its index and the format marker is stored; only then
//! are they removed. Every step is idempotent, so a conversion killed at any point is
//! finished by the next one, and nothing is lost.
//!
//! A partition that cannot be converted (its document does not parse, or the
//! metadata records it but the tier no longer holds it) does not stop the others: its
//! key is listed under [`UNCONVERTED_KEY`], its document (if any) is left where it is,
//! and the tier's metadata records it as damaged, so that its reads fail (never an
//! empty answer) until a sync restores it from a tier that holds it.

use std::collections::BTreeSet;

use super::ops::{index_key, PieceTier};
use super::piece::{Piece, FORMAT};
use super::span::short_hash;
use crate::error::{Error, Result};
use crate::meta::{is_reserved, Meta, META_KEY, ROOT_KEY};
use crate::partition::Partition;
use crate::persistence::Persistence;

/// The reserved key of the format marker: stored once every partition is in pieces.
pub const FORMAT_KEY: &str = "!datasync.format";

/// The reserved key listing the partitions a conversion could not convert (a JSON
/// array of keys).
pub const UNCONVERTED_KEY: &str = "!datasync.unconverted";

/// The partitions a conversion of this tier could not convert.
pub fn unconverted(adapter: &mut dyn Persistence, label: &str) -> Result<BTreeSet<String>> {
    match adapter
        .load(UNCONVERTED_KEY)
        .map_err(adapter_err(label, UNCONVERTED_KEY))?
    {
        None => Ok(BTreeSet::new()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|why| Error::corrupt(label, UNCONVERTED_KEY, why.to_string())),
    }
}

/// What a conversion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Converted {
    /// Partitions given an index by this run.
    pub partitions: usize,
    /// Partitions an earlier, interrupted run had already converted.
    pub already: usize,
    /// Format-1 documents removed.
    pub removed: usize,
    /// Partitions that could not be converted (recorded as damaged).
    pub unconverted: usize,
}

fn adapter_err<'a>(
    label: &'a str,
    key: &str,
) -> impl Fn(crate::persistence::AdapterError) -> Error + 'a {
    let key = key.to_string();
    move |e| Error::from_adapter(label, &key, e)
}

/// Whether the tier is in pieces already.
pub fn is_converted(adapter: &mut dyn Persistence, label: &str) -> Result<bool> {
    Ok(adapter
        .load(FORMAT_KEY)
        .map_err(adapter_err(label, FORMAT_KEY))?
        .is_some())
}

/// Converts a format-1 tier to pieces (nothing to do when it is converted already,
/// except removing format-1 documents an interrupted run left).
pub fn convert_format1(adapter: &mut dyn Persistence, label: &str) -> Result<Converted> {
    let mut out = Converted::default();
    let mut keys: BTreeSet<String> = BTreeSet::new();
    // Recorded by the metadata: a partition it names that is gone could not be
    // converted. Damaged metadata names none (the listing still does).
    let mut recorded = BTreeSet::new();
    if let Some(bytes) = adapter
        .load(META_KEY)
        .map_err(adapter_err(label, META_KEY))?
    {
        match Meta::parse(&bytes) {
            Ok(meta) => recorded.extend(meta.entries.into_keys()),
            Err(why) => {
                log::error!(target: "datasync::pieces", "{label}: the format-1 metadata is damaged ({why}); converting the partitions the tier lists");
            }
        }
    }
    keys.extend(recorded.iter().cloned());
    if let Some(listed) = adapter.keys().map_err(adapter_err(label, "(keys)"))? {
        keys.extend(listed.into_iter().filter(|k| !is_reserved(k)));
    }
    let mut failed = unconverted(adapter, label)?;
    if !is_converted(adapter, label)? {
        for key in &keys {
            if adapter
                .load(&index_key(key))
                .map_err(adapter_err(label, key))?
                .is_some()
            {
                out.already += 1;
                continue;
            }
            let Some(bytes) = adapter.load(key).map_err(adapter_err(label, key))? else {
                if recorded.contains(key) {
                    log::error!(target: "datasync::pieces", "{label} {key:?}: recorded by the metadata but not held; it is marked damaged");
                    failed.insert(key.clone());
                }
                continue;
            };
            let partition = match Partition::parse(&bytes, false) {
                Ok(partition) => partition,
                Err(why) => {
                    log::error!(target: "datasync::pieces", "{label} {key:?}: cannot be converted ({why}); it is kept as it is and marked damaged");
                    failed.insert(key.clone());
                    continue;
                }
            };
            let writer = format!("f1-{}", &short_hash(&bytes)[..8]);
            let latest = partition
                .names
                .values()
                .flat_map(|ids| ids.values().map(|s| s.instant()))
                .max()
                .unwrap_or_default();
            let piece = Piece::delta(&writer, 1, "", latest, partition);
            PieceTier::new(&mut *adapter, false, label).add_piece(key, &piece)?;
            out.partitions += 1;
        }
        if !failed.is_empty() {
            let list = serde_json::to_vec(&failed).expect("keys serialize");
            adapter
                .store(UNCONVERTED_KEY, &list)
                .map_err(adapter_err(label, UNCONVERTED_KEY))?;
        }
        let marker = format!("{{\"v\":{FORMAT},\"from\":1}}");
        adapter
            .store(FORMAT_KEY, marker.as_bytes())
            .map_err(adapter_err(label, FORMAT_KEY))?;
    }
    // Converted: the format-1 documents go, partitions first, metadata last (a run
    // killed here finds the metadata and removes what is left).
    out.unconverted = failed.len();
    let kept = keys.iter().filter(|k| !failed.contains(*k));
    for key in kept.map(String::as_str).chain([ROOT_KEY, META_KEY]) {
        if adapter
            .load(key)
            .map_err(adapter_err(label, key))?
            .is_some()
        {
            adapter.clear(key).map_err(adapter_err(label, key))?;
            out.removed += 1;
        }
    }
    adapter.commit().map_err(adapter_err(label, META_KEY))?;
    Ok(out)
}
