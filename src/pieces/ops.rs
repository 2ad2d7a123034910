//! What a device does with the pieces of one partition in a blob tier: append a
//! write, read the partition, sync it with another tier, compact it.

use std::collections::BTreeMap;

use super::index::{Entry, Index};
use super::piece::{content, fold, Piece, TombstoneRule};
use super::span::{Span, Vector};
use crate::clock::Millis;
use crate::error::{Error, Result};
use crate::partition::Partition;
use crate::persistence::Persistence;
use crate::sync::ConflictResolver;

/// The key of a partition's index.
pub fn index_key(partition: &str) -> String {
    format!("!index:{partition}")
}

/// The partition whose index `key` is, if it is an index key.
pub fn partition_of_index(key: &str) -> Option<&str> {
    key.strip_prefix("!index:")
}

/// The partitions a blob tier's listing names, in either format: a format-1 tier
/// keeps each partition under its own key, a format-2 tier under its index.
pub fn partitions_listed(listed: &[String]) -> Vec<String> {
    listed
        .iter()
        .filter_map(|k| match partition_of_index(k) {
            Some(partition) => Some(partition),
            None => (!crate::meta::is_reserved(k)).then_some(k.as_str()),
        })
        .map(str::to_string)
        .collect()
}

/// The key of one piece of a partition.
pub fn piece_key(partition: &str, name: &str) -> String {
    format!("!piece:{partition}:{name}")
}

/// How many times an index write is merged again and retried when another writer
/// stored the index meanwhile.
const INDEX_ATTEMPTS: usize = 8;

/// One blob tier, as the piece operations see it.
pub struct PieceTier<'a> {
    adapter: &'a mut dyn Persistence,
    /// Others write this tier too: index writes are conditional, and folded pieces
    /// are never removed (someone may be reading them).
    shared: bool,
    label: &'a str,
    /// A tier no one else writes: the index last read or written here, which is
    /// what the tier holds.
    known: Option<(String, Read)>,
    /// Conditional writes of mutable documents (indexes, the device register) that
    /// found another writer's update there.
    refused: u64,
}

/// An index as read, with the bytes a conditional write of it expects.
#[derive(Clone, Debug)]
pub struct IndexRead {
    pub index: Index,
    held: Option<Vec<u8>>,
}

impl IndexRead {
    /// Whether the tier holds an index for the partition.
    pub fn exists(&self) -> bool {
        self.held.is_some()
    }
}

type Read = IndexRead;

/// What a sync of one partition between two tiers moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PieceSync {
    /// Pieces copied each way.
    pub a_to_b: u64,
    pub b_to_a: u64,
    /// Bytes of the pieces copied, both ways.
    pub bytes: u64,
    /// Index writes refused because another writer stored the index meanwhile.
    pub races: u64,
    /// The writes each side holds after the sync (the union, unless another writer
    /// added to one meanwhile).
    pub a_vector: Vector,
    pub b_vector: Vector,
    /// The names of the pieces copied into `a`.
    pub into_a: Vec<String>,
    /// Whether the two sides hold the same tombstones after the sync, as far as
    /// their indexes tell ([`Index::same_tombstones`]).
    pub same_tombstones: bool,
}

/// When and how a partition is compacted.
#[derive(Debug, Clone, Copy)]
pub struct Compaction {
    /// More pieces than this: fold.
    pub bound: usize,
    /// Tombstones older than this are dropped in a full fold.
    pub horizon: Millis,
}

impl Default for Compaction {
    fn default() -> Self {
        Compaction {
            bound: 8,
            horizon: 30 * 24 * 3600 * 1000,
        }
    }
}

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// Pieces folded into one.
    pub folded: usize,
    /// Whether every piece was folded (then tombstones may be dropped).
    pub full: bool,
    /// Bytes of the new piece.
    pub bytes: u64,
}

/// A partition's index and its pieces' bytes as [`PieceTier::read_raw`] loaded them:
/// [`RawRead::finish`] parses, checks and merges them without the adapter, so that a
/// tier's adapter is held only while the bytes are read (and a resolver, which may
/// be host code, runs with no lock of the tier held).
pub struct RawRead {
    label: String,
    partition: String,
    index: Index,
    /// Each listed piece's bytes, in the index's order, checked against its name.
    pieces: Vec<Vec<u8>>,
}

impl RawRead {
    /// The partition: every piece parsed and checked against its index entry, the
    /// writers' chains checked, the slots merged.
    pub fn finish(self, resolver: &dyn ConflictResolver) -> Result<PieceRead> {
        let RawRead {
            label,
            partition: key,
            index,
            pieces: raw,
        } = self;
        let vector = index.vector();
        let mut pieces = Vec::with_capacity(raw.len());
        for (entry, bytes) in index.entries.iter().zip(raw) {
            let name = piece_key(&key, &entry.name);
            let piece = Piece::parse(&bytes).map_err(|why| Error::corrupt(&label, &name, why))?;
            if piece.span != entry.span {
                return Err(Error::corrupt(
                    &label,
                    &name,
                    "the piece holds other writes than its index entry says",
                ));
            }
            pieces.push((entry.name.clone(), piece));
        }
        check_chains(&index, &pieces)
            .map_err(|why| Error::corrupt(&label, &index_key(&key), why))?;
        let count = pieces.len();
        // One piece (a partition just converted, or folded in full): a fold files each
        // id once, under the write it came from, so its slots are the partition with
        // nothing to merge.
        if count == 1 {
            if let Some(partition) = disjoint_union(&mut pieces[0].1) {
                return Ok(PieceRead {
                    partition,
                    vector,
                    pieces: count,
                });
            }
        }
        let refs: Vec<(&str, &Piece)> = pieces.iter().map(|(n, p)| (n.as_str(), p)).collect();
        let partition = content(&super::piece::winners(&refs, resolver));
        Ok(PieceRead {
            partition,
            vector,
            pieces: count,
        })
    }
}

/// A partition read from its pieces.
#[derive(Debug, Clone)]
pub struct PieceRead {
    pub partition: Partition,
    /// The writes it holds.
    pub vector: Vector,
    /// How many pieces were read.
    pub pieces: usize,
}

impl<'a> PieceTier<'a> {
    pub fn new(adapter: &'a mut dyn Persistence, shared: bool, label: &'a str) -> Self {
        PieceTier {
            adapter,
            shared,
            label,
            known: None,
            refused: 0,
        }
    }

    /// How many conditional writes through this found another writer's update.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    fn load(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        self.adapter
            .load(key)
            .map_err(|e| Error::from_adapter(self.label, key, e))
    }

    fn store(&mut self, key: &str, bytes: &[u8]) -> Result<()> {
        self.adapter
            .store(key, bytes)
            .map_err(|e| Error::from_adapter(self.label, key, e))
    }

    fn read_index(&mut self, partition: &str) -> Result<Read> {
        if let Some((known, read)) = &self.known {
            if known == partition {
                return Ok(read.clone());
            }
        }
        let read = self.read_index_stored(partition)?;
        self.remember(partition, &read);
        Ok(read)
    }

    fn remember(&mut self, partition: &str, read: &Read) {
        if !self.shared {
            self.known = Some((partition.to_string(), read.clone()));
        }
    }

    fn read_index_stored(&mut self, partition: &str) -> Result<Read> {
        let key = index_key(partition);
        let held = self.load(&key)?;
        let index = match held.as_deref() {
            None => Index::default(),
            Some(bytes) => {
                Index::parse(bytes).map_err(|why| Error::corrupt(self.label, &key, why))?
            }
        };
        Ok(Read { index, held })
    }

    /// Writes an index over the one read. On a shared tier the write is conditional
    /// (or, where the adapter has no conditional write, follows a fresh read): false
    /// when another writer stored it meanwhile, and nothing was written.
    fn write_index(&mut self, partition: &str, read: &Read, index: &Index) -> Result<bool> {
        let bytes = index.to_bytes();
        self.known = None;
        let written = self.write_doc(&index_key(partition), read.held.as_deref(), &bytes)?;
        if written {
            let now = Read {
                index: index.clone(),
                held: Some(bytes),
            };
            self.remember(partition, &now);
        }
        Ok(written)
    }

    /// Writes a mutable document over `held`, the bytes read (`None`: absent).
    fn write_doc(&mut self, key: &str, held: Option<&[u8]>, bytes: &[u8]) -> Result<bool> {
        let key = key.to_string();
        if held == Some(bytes) {
            return Ok(true);
        }
        if !self.shared {
            self.store(&key, bytes)?;
            return Ok(true);
        }
        let stored = crate::persistence::write_over(self.adapter, &key, held, bytes)
            .map_err(|e| Error::from_adapter(self.label, &key, e))?;
        if !stored {
            self.refused += 1;
        }
        Ok(stored)
    }

    /// The bytes of a piece the index lists, checked against its name.
    fn load_checked(&mut self, partition: &str, name: &str) -> Result<Vec<u8>> {
        let key = piece_key(partition, name);
        let Some(bytes) = self.load(&key)? else {
            return Err(Error::corrupt(
                self.label,
                &key,
                "a piece the index lists is missing",
            ));
        };
        if Piece::name_of(&bytes) != name {
            return Err(Error::corrupt(
                self.label,
                &key,
                "the piece does not match its hash",
            ));
        }
        Ok(bytes)
    }

    fn load_piece(&mut self, partition: &str, name: &str) -> Result<Piece> {
        let bytes = self.load_checked(partition, name)?;
        Piece::parse(&bytes)
            .map_err(|why| Error::corrupt(self.label, &piece_key(partition, name), why))
    }

    /// Stores a piece under its name; returns its index entry.
    fn store_piece(&mut self, partition: &str, piece: &Piece) -> Result<Entry> {
        let bytes = piece.to_bytes();
        let name = Piece::name_of(&bytes);
        self.store(&piece_key(partition, &name), &bytes)?;
        Ok(Entry {
            name,
            span: piece.span.clone(),
            bytes: bytes.len() as u64,
            tip: piece.tip.clone(),
            dropped: 0,
        })
    }

    /// Stores a piece's canonical bytes; returns its index entry.
    fn store_piece_bytes(&mut self, partition: &str, bytes: &[u8], span: Span) -> Result<Entry> {
        let name = Piece::name_of(bytes);
        self.store(&piece_key(partition, &name), bytes)?;
        Ok(Entry {
            name,
            span,
            bytes: bytes.len() as u64,
            tip: Default::default(),
            dropped: 0,
        })
    }

    /// [`PieceTier::append_indexed`] of slots given in canonical form (a partition's
    /// canonical bytes, checked by the caller), which are not made again.
    pub fn append_canonical(
        &mut self,
        partition: &str,
        writer: &str,
        clock: Millis,
        canonical: &[u8],
    ) -> Result<(u64, Index)> {
        self.append_delta(partition, writer, |seq, prev| {
            Piece::delta_bytes(writer, seq, prev, clock, canonical)
        })
    }

    /// Stores a piece and adds it to the partition's index.
    pub fn add_piece(&mut self, partition: &str, piece: &Piece) -> Result<()> {
        let entry = self.store_piece(partition, piece)?;
        let mut read = self.read_index(partition)?;
        for _ in 0..INDEX_ATTEMPTS {
            if self.write_index(partition, &read, &read.index.with(entry.clone()))? {
                return Ok(());
            }
            read = self.read_index(partition)?;
        }
        Err(self.busy(partition))
    }

    /// Adds the next write of `writer` to a partition: one new piece of the given
    /// slots, then the index. Returns the write's sequence number. Nothing already
    /// stored is rewritten.
    pub fn append(
        &mut self,
        partition: &str,
        writer: &str,
        clock: Millis,
        slots: Partition,
    ) -> Result<u64> {
        self.append_indexed(partition, writer, clock, slots)
            .map(|(seq, _)| seq)
    }

    /// [`PieceTier::append`], returning the index written as well.
    pub fn append_indexed(
        &mut self,
        partition: &str,
        writer: &str,
        clock: Millis,
        slots: Partition,
    ) -> Result<(u64, Index)> {
        self.append_delta(partition, writer, |seq, prev| {
            Piece::delta(writer, seq, prev, clock, slots).to_bytes()
        })
    }

    /// Appends the next write of `writer`: `bytes(seq, prev)` makes the delta's
    /// canonical bytes from its sequence number and the piece before it; the piece
    /// is stored, then the index. Returns the write's number and the index written.
    fn append_delta(
        &mut self,
        partition: &str,
        writer: &str,
        bytes: impl FnOnce(u64, &str) -> Vec<u8>,
    ) -> Result<(u64, Index)> {
        let mut read = self.read_index(partition)?;
        let seq = read.index.vector().last(writer) + 1;
        let prev = read.index.tip_for(writer, seq - 1);
        let span: Span = [(writer.to_string(), (seq, seq))].into();
        let entry = self.store_piece_bytes(partition, &bytes(seq, &prev), span)?;
        for _ in 0..INDEX_ATTEMPTS {
            let index = read.index.with(entry.clone());
            if self.write_index(partition, &read, &index)? {
                return Ok((seq, index));
            }
            read = self.read_index(partition)?;
        }
        Err(self.busy(partition))
    }

    fn busy(&self, partition: &str) -> Error {
        busy(self.label, partition)
    }

    /// Reads a partition: every piece its index lists, each checked against its
    /// name, the writers' chains checked, merged slot by slot. `None`: no index.
    pub fn read(
        &mut self,
        partition: &str,
        resolver: &dyn ConflictResolver,
    ) -> Result<Option<PieceRead>> {
        self.read_raw(partition)?
            .map(|raw| raw.finish(resolver))
            .transpose()
    }

    /// The adapter's part of [`PieceTier::read`]: the index and the bytes of every
    /// piece it lists, each checked against its name, not parsed. `None`: no index.
    pub fn read_raw(&mut self, partition: &str) -> Result<Option<RawRead>> {
        let read = self.read_index(partition)?;
        if read.held.is_none() {
            return Ok(None);
        }
        let key = index_key(partition);
        let vector = read.index.vector();
        if let Some((writer, (first, last))) = vector.gaps().into_iter().next() {
            return Err(Error::corrupt(
                self.label,
                &key,
                format!("writes {first}..{last} of writer {writer:?} are listed nowhere (a piece was lost or the index rolled back)"),
            ));
        }
        let mut pieces = Vec::with_capacity(read.index.entries.len());
        for entry in &read.index.entries {
            pieces.push(self.load_checked(partition, &entry.name)?);
        }
        Ok(Some(RawRead {
            label: self.label.to_string(),
            partition: partition.to_string(),
            index: read.index,
            pieces,
        }))
    }

    /// Folds a partition's pieces when there are more than `policy.bound`: when the
    /// pieces other than the largest are small beside it (under a quarter), those of
    /// one size class, the most numerous (no tombstone is dropped then); else every
    /// piece, dropping the tombstones the rule allows.
    /// The new piece is written first, then the index; on a tier no one else writes
    /// the folded pieces are removed last. A crash at any point leaves the partition
    /// readable and complete.
    ///
    /// `past`: the instant every device of the tier has synced past (from
    /// [`PieceTier::synced_past`] of a shared tier). Pass `None` where not every
    /// device syncs through this tier (a device's own tier): there only the horizon
    /// drops tombstones.
    pub fn compact(
        &mut self,
        partition: &str,
        resolver: &dyn ConflictResolver,
        policy: Compaction,
        now: Millis,
        past: Option<Millis>,
    ) -> Result<Option<Compacted>> {
        let mut read = self.read_index(partition)?;
        let entries = &read.index.entries;
        if entries.len() <= policy.bound.max(1) {
            return Ok(None);
        }
        let largest = entries
            .iter()
            .max_by(|a, b| a.bytes.cmp(&b.bytes).then(b.name.cmp(&a.name)))
            .map(|e| e.name.clone())
            .unwrap_or_default();
        let largest_bytes = entries
            .iter()
            .find(|e| e.name == largest)
            .map_or(0, |e| e.bytes);
        let rest: u64 = entries.iter().map(|e| e.bytes).sum::<u64>() - largest_bytes;
        // A fold holds one run of each writer: a set whose writes leave a hole is not
        // folded on its own (the whole partition is, when it has no hole).
        let one_run = |set: &[Entry]| {
            Vector::of(set.iter().map(|e| &e.span))
                .runs
                .values()
                .all(|runs| runs.len() == 1)
        };
        let rest_only: Vec<Entry> = entries
            .iter()
            .filter(|e| e.name != largest)
            .cloned()
            .collect();
        // Size-tiered: pieces of about the same size (the same power of four) are
        // folded together, so a slot is refolded a logarithmic number of times.
        let class = |e: &Entry| (64 - e.bytes.max(1).leading_zeros()) / 2;
        let mut classes: std::collections::BTreeMap<u32, Vec<Entry>> = Default::default();
        for e in &rest_only {
            classes.entry(class(e)).or_default().push(e.clone());
        }
        let fullest = classes
            .into_values()
            .filter(|set| set.len() >= 2)
            .max_by(|a, b| a.len().cmp(&b.len()).then(class(&b[0]).cmp(&class(&a[0]))));
        let small = rest.saturating_mul(4) < largest_bytes;
        let chosen: Vec<Entry> = match fullest {
            Some(set) if small && one_run(&set) => set,
            _ if small && one_run(&rest_only) => rest_only,
            _ => entries.clone(),
        };
        let partial = chosen.len() < entries.len();
        if chosen.len() < 2 {
            return Ok(None);
        }
        if !one_run(&chosen) || !read.index.vector().gaps().is_empty() {
            log::warn!(target: "datasync::pieces", "{} partition {partition:?} has writes listed nowhere; not compacting it", self.label);
            return Ok(None);
        }
        let mut pieces = Vec::with_capacity(chosen.len());
        for entry in &chosen {
            pieces.push((entry.name.clone(), self.load_piece(partition, &entry.name)?));
        }
        let refs: Vec<(&str, &Piece)> = pieces.iter().map(|(n, p)| (n.as_str(), p)).collect();
        let rule = (!partial).then_some(TombstoneRule {
            now,
            horizon: policy.horizon,
            past,
        });
        let (folded, dropped) = fold(&refs, resolver, rule);
        let mut entry = self.store_piece(partition, &folded)?;
        entry.dropped = dropped + chosen.iter().map(|e| e.dropped).sum::<u64>();
        let outcome = Compacted {
            folded: chosen.len(),
            full: !partial,
            bytes: entry.bytes,
        };
        for _ in 0..INDEX_ATTEMPTS {
            let index = read.index.with(entry.clone());
            if self.write_index(partition, &read, &index)? {
                if !self.shared {
                    for gone in chosen.iter().filter(|e| !index.entries.contains(e)) {
                        let key = piece_key(partition, &gone.name);
                        self.adapter
                            .clear(&key)
                            .map_err(|e| Error::from_adapter(self.label, &key, e))?;
                    }
                }
                return Ok(Some(outcome));
            }
            read = self.read_index(partition)?;
        }
        Err(self.busy(partition))
    }
}

impl PieceTier<'_> {
    /// Removes the pieces of a partition its index does not list (left by a crash
    /// between a piece and its index, or by a compaction killed before it removed
    /// what it folded). Only on a tier no one else writes: in a shared tier an
    /// unlisted piece may be another device's, about to be listed. Returns how many
    /// were removed (none where the adapter cannot list its keys).
    pub fn sweep(&mut self, partition: &str) -> Result<usize> {
        if self.shared {
            return Ok(0);
        }
        let Some(mut all) = self.pieces_by_partition()? else {
            return Ok(0);
        };
        let names = all.remove(partition).unwrap_or_default();
        let read = self.read_index_stored(partition)?;
        self.remove_unlisted(partition, &read.index, &names)
    }

    /// The names of the pieces the tier holds, by partition (`None` where the adapter
    /// cannot list its keys).
    pub fn pieces_by_partition(&mut self) -> Result<Option<BTreeMap<String, Vec<String>>>> {
        let listed = self
            .adapter
            .keys()
            .map_err(|e| Error::from_adapter(self.label, "(keys)", e))?;
        let Some(keys) = listed else {
            return Ok(None);
        };
        let mut by_partition: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in keys {
            // `!piece:<partition>:<name>`: a name has no colon, a partition may.
            let Some((partition, name)) = key
                .strip_prefix("!piece:")
                .and_then(|rest| rest.rsplit_once(':'))
            else {
                continue;
            };
            by_partition
                .entry(partition.to_string())
                .or_default()
                .push(name.to_string());
        }
        Ok(Some(by_partition))
    }

    /// [`PieceTier::sweep`] of `names`, the pieces a listing found for `partition`,
    /// where the partition has an index: a partition without one keeps its pieces
    /// (they may be all that is left of it). Errors when the index is unreadable.
    pub fn sweep_listed(&mut self, partition: &str, names: &[String]) -> Result<usize> {
        if self.shared {
            return Ok(0);
        }
        let read = self.read_index_stored(partition)?;
        if read.held.is_none() {
            return Ok(0);
        }
        self.remove_unlisted(partition, &read.index, names)
    }

    fn remove_unlisted(
        &mut self,
        partition: &str,
        index: &Index,
        names: &[String],
    ) -> Result<usize> {
        let mut removed = 0;
        for name in names {
            if index.entries.iter().any(|e| &e.name == name) {
                continue;
            }
            let key = piece_key(partition, name);
            self.adapter
                .clear(&key)
                .map_err(|e| Error::from_adapter(self.label, &key, e))?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// The reserved key of a tier's device register: per device, the instant its last
/// completed sync with the tier began.
pub const DEVICES_KEY: &str = "!datasync.devices";

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Devices {
    v: u32,
    devices: std::collections::BTreeMap<String, Millis>,
}

impl PieceTier<'_> {
    /// Records in the tier's register that `device` completed a sync that began at
    /// `began` (never lowering what it holds). A device registers before its first
    /// sync reads anything, with `Millis::MIN`, so that nothing it may hold is
    /// forgotten while it is away.
    pub fn note_synced(&mut self, device: &str, began: Millis) -> Result<()> {
        for _ in 0..INDEX_ATTEMPTS {
            let held = self.load(DEVICES_KEY)?;
            let mut doc: Devices = match held.as_deref() {
                None => Devices::default(),
                Some(bytes) => serde_json::from_slice(bytes).map_err(|e| {
                    Error::corrupt(
                        self.label,
                        DEVICES_KEY,
                        format!("not a device register: {e}"),
                    )
                })?,
            };
            let known = doc.devices.get(device).copied();
            if known.is_some_and(|at| at >= began) {
                return Ok(());
            }
            doc.v = super::piece::FORMAT;
            doc.devices.insert(device.to_string(), began);
            let bytes = serde_json::to_vec(&doc).unwrap_or_default();
            if self.write_doc(DEVICES_KEY, held.as_deref(), &bytes)? {
                return Ok(());
            }
        }
        Err(Error::adapter(
            self.label,
            DEVICES_KEY,
            "the device register kept changing while it was written",
        ))
    }

    /// The instant every device in the register has synced past (`None`: no device).
    pub fn synced_past(&mut self) -> Result<Option<Millis>> {
        let Some(bytes) = self.load(DEVICES_KEY)? else {
            return Ok(None);
        };
        let doc: Devices = serde_json::from_slice(&bytes).map_err(|e| {
            Error::corrupt(
                self.label,
                DEVICES_KEY,
                format!("not a device register: {e}"),
            )
        })?;
        Ok(doc.devices.values().copied().min())
    }
}

/// Checks every writer's hash chain: where one listed piece continues another
/// writer's run, it must name that piece's last delta as the one before it.
fn check_chains(index: &Index, pieces: &[(String, Piece)]) -> std::result::Result<(), String> {
    for (name, piece) in pieces {
        for (writer, &(first, _)) in &piece.span {
            let said = piece.prev.get(writer).map(String::as_str).unwrap_or("");
            if first == 1 {
                if !said.is_empty() {
                    return Err(format!(
                        "piece {name} starts writer {writer:?} but names a piece before it"
                    ));
                }
                continue;
            }
            let before = index.tip_for(writer, first - 1);
            if !before.is_empty() && before != said {
                return Err(format!(
                    "write {first} of writer {writer:?} follows {said:?}, but the index holds {before:?} before it (a piece was replaced or rolled back)"
                ));
            }
        }
    }
    Ok(())
}

/// The slots of one piece as one partition, taken out of it, when no id is filed
/// under two of its writes (else `None`, and the piece is left whole).
fn disjoint_union(piece: &mut Piece) -> Option<Partition> {
    if piece.data.len() == 1 {
        return piece.data.pop_first().map(|(_, p)| p);
    }
    let mut seen = std::collections::HashSet::new();
    for part in piece.data.values() {
        for (name, ids) in &part.names {
            for id in ids.keys() {
                if !seen.insert((name.as_str(), id.as_str())) {
                    return None;
                }
            }
        }
    }
    drop(seen);
    let mut out = Partition::default();
    for (_, part) in std::mem::take(&mut piece.data) {
        for (name, ids) in part.names {
            let slots = out.names.entry(name).or_default();
            slots.extend(ids);
        }
    }
    Some(out)
}

fn busy(label: &str, partition: &str) -> Error {
    Error::adapter(
        label,
        &index_key(partition),
        "the index kept changing while it was written (too many writers at once); the next sync writes it",
    )
}

/// One side of a sync of pieces: a partition's index and pieces, read and written.
/// A [`PieceTier`] is one; so is a tier of an instance, whose adapter is locked call
/// by call rather than for the whole sync.
pub trait PieceSide {
    fn side_label(&self) -> &str;
    /// The partition's index as the tier holds it now.
    fn index_of(&mut self, partition: &str) -> Result<IndexRead>;
    /// The bytes of a listed piece, checked against its name.
    fn piece_bytes(&mut self, partition: &str, name: &str) -> Result<Vec<u8>>;
    /// Stores a piece's bytes under its name.
    fn put_piece(&mut self, partition: &str, name: &str, bytes: &[u8]) -> Result<()>;
    /// Writes `index` over the one read; false when another writer stored it meanwhile.
    fn replace_index(&mut self, partition: &str, read: &IndexRead, index: &Index) -> Result<bool>;
}

impl PieceSide for PieceTier<'_> {
    fn side_label(&self) -> &str {
        self.label
    }
    fn index_of(&mut self, partition: &str) -> Result<IndexRead> {
        self.read_index(partition)
    }
    fn piece_bytes(&mut self, partition: &str, name: &str) -> Result<Vec<u8>> {
        self.load_checked(partition, name)
    }
    fn put_piece(&mut self, partition: &str, name: &str, bytes: &[u8]) -> Result<()> {
        self.store(&piece_key(partition, name), bytes)
    }
    fn replace_index(&mut self, partition: &str, read: &IndexRead, index: &Index) -> Result<bool> {
        if !self.write_index(partition, read, index)? {
            return Ok(false);
        }
        if !self.shared {
            // A received fold covers these pieces; on a tier no one else writes they
            // go now, after the index that no longer lists them.
            let listed = |name: &str| index.entries.iter().any(|e| e.name == name);
            for gone in read.index.entries.iter().filter(|e| !listed(&e.name)) {
                let key = piece_key(partition, &gone.name);
                self.adapter
                    .clear(&key)
                    .map_err(|e| Error::from_adapter(self.label, &key, e))?;
            }
        }
        Ok(true)
    }
}

/// Syncs one partition between two blob tiers: each gets the pieces holding writes
/// it lacks, then the union of both indexes. No piece is parsed, and only what a
/// side lacks crosses. An index write refused because another writer stored it
/// meanwhile is merged again and retried.
pub fn sync_partition<A, B>(a: &mut A, b: &mut B, partition: &str) -> Result<PieceSync>
where
    A: PieceSide + ?Sized,
    B: PieceSide + ?Sized,
{
    let mut out = PieceSync::default();
    for _ in 0..INDEX_ATTEMPTS {
        let (ra, rb) = (a.index_of(partition)?, b.index_of(partition)?);
        let (va, vb) = (ra.index.vector(), rb.index.vector());
        // A side also takes a fold that dropped tombstones, when it would keep it:
        // it holds those writes, but with the tombstones.
        let lacks = |e: &Entry, v: &Vector, theirs: &Index| {
            !v.covers(&e.span)
                || e.dropped > 0
                    && !theirs.entries.iter().any(|t| t.name == e.name)
                    && e.kept_among(&theirs.entries)
        };
        let to_b: Vec<Entry> = ra
            .index
            .entries
            .iter()
            .filter(|e| lacks(e, &vb, &rb.index))
            .cloned()
            .collect();
        let to_a: Vec<Entry> = rb
            .index
            .entries
            .iter()
            .filter(|e| lacks(e, &va, &ra.index))
            .cloned()
            .collect();
        if to_b.is_empty() && to_a.is_empty() {
            out.same_tombstones = ra.index.same_tombstones(&rb.index);
            out.a_vector = va;
            out.b_vector = vb;
            // A piece received and then covered by a fold received after it is no
            // longer listed (a private tier has removed it).
            out.into_a
                .retain(|name| ra.index.entries.iter().any(|e| &e.name == name));
            return Ok(out);
        }
        // Only what the receiving side will list crosses (not a piece that a fold
        // crossing with it covers).
        let new_b = Index::from_entries(rb.index.entries.iter().chain(&to_b).cloned());
        let new_a = Index::from_entries(ra.index.entries.iter().chain(&to_a).cloned());
        let listed = |index: &Index, e: &Entry| index.entries.iter().any(|l| l.name == e.name);
        let to_b: Vec<Entry> = to_b.into_iter().filter(|e| listed(&new_b, e)).collect();
        let to_a: Vec<Entry> = to_a.into_iter().filter(|e| listed(&new_a, e)).collect();
        for entry in &to_b {
            out.bytes += copy_piece(a, b, partition, entry)?;
        }
        if !to_b.is_empty() && !b.replace_index(partition, &rb, &new_b)? {
            out.races += 1;
            continue;
        }
        out.a_to_b += to_b.len() as u64;
        for entry in &to_a {
            out.bytes += copy_piece(b, a, partition, entry)?;
        }
        if !to_a.is_empty() && !a.replace_index(partition, &ra, &new_a)? {
            out.races += 1;
            continue;
        }
        out.b_to_a += to_a.len() as u64;
        out.into_a.extend(to_a.iter().map(|e| e.name.clone()));
        // Read both again: a writer without the conditional write may have stored
        // the shared index over ours meanwhile, and this repairs it at once.
    }
    Err(busy(a.side_label(), partition))
}

/// Copies one piece's bytes, checked against its name, from one tier to another.
fn copy_piece<S, D>(src: &mut S, dst: &mut D, partition: &str, entry: &Entry) -> Result<u64>
where
    S: PieceSide + ?Sized,
    D: PieceSide + ?Sized,
{
    let bytes = src.piece_bytes(partition, &entry.name)?;
    dst.put_piece(partition, &entry.name, &bytes)?;
    Ok(bytes.len() as u64)
}
