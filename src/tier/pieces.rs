//! Blob tiers in format 2 (`docs/format-2.md`): a partition is write-once pieces and
//! a small index (`crate::pieces`), read and written through the tier's adapter one
//! call at a time, so that no adapter lock is held across two tiers.
//!
//! The tier's metadata stays as in format 1 (entries and a root, so that a no-op sync
//! is two small reads), but an entry's hash is the hash of the partition's version
//! vector: equal vectors hold equal content, and no write needs the whole partition
//! hashed.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Loaded, Tier};
use crate::clock::Millis;
use crate::error::{Error, ErrorKind, Result};
use crate::lock::Mutex;
use crate::meta::{Meta, MetaEntry};
use crate::partition::{Counts, Partition};
use crate::pieces::{
    index_key, sync_partition, Compaction, Index, IndexRead, PieceRead, PieceSide, PieceSync,
    PieceTier, Vector,
};
use crate::sync::merge::SlotChange;
use crate::sync::ConflictResolver;

use crate::pieces::WRITER_KEY;

/// What a tier in pieces needs besides its adapter.
pub(crate) struct PiecesMode {
    resolver: Arc<dyn ConflictResolver>,
    compaction: Compaction,
    /// The instance's time source: the instant a piece is cut, and the `now` of a
    /// compaction's tombstone rule.
    clock: fn() -> Millis,
    /// The id this device appends under (read or made on first use).
    writer: Mutex<Option<String>>,
    /// Shared tier: when this instance last recorded a sync in the device register.
    noted: Mutex<Option<Millis>>,
    /// Whether the tier was found in format 2 (or converted) by this instance.
    prepared: std::sync::atomic::AtomicBool,
    /// Held across a read, merge and write of an index of a tier no one else
    /// writes (there the write is not conditional).
    writing: Mutex<()>,
    /// Whether this instance has swept the tier's unlisted pieces.
    swept: std::sync::atomic::AtomicBool,
}

/// How often an instance whose syncs find nothing to do records them in the device
/// register anyway (so that it does not hold tombstones back).
const NOTE_IDLE_EVERY: Millis = 3600 * 1000;

/// The hash an entry records for a partition holding the writes `vector`.
fn summary_of(vector: &Vector) -> String {
    vector.summary()
}

/// A new writer id: 16 random hex digits.
fn new_writer_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A tier of an instance as one side of a sync of pieces: each call locks its adapter
/// for that call only.
struct Side<'t>(&'t Tier);

impl PieceSide for Side<'_> {
    fn side_label(&self) -> &str {
        self.0.label
    }
    fn index_of(&mut self, partition: &str) -> Result<IndexRead> {
        self.0.with_pieces(|p| p.index_of(partition))
    }
    fn piece_bytes(&mut self, partition: &str, name: &str) -> Result<Vec<u8>> {
        self.0.with_pieces(|p| p.piece_bytes(partition, name))
    }
    fn put_piece(&mut self, partition: &str, name: &str, bytes: &[u8]) -> Result<()> {
        self.0.with_pieces(|p| p.put_piece(partition, name, bytes))
    }
    fn replace_index(&mut self, partition: &str, read: &IndexRead, index: &Index) -> Result<bool> {
        self.0
            .with_pieces(|p| p.replace_index(partition, read, index))
    }
}

/// A slot another tier holds: entity name, id, slot.
pub(crate) type PulledSlot = (String, String, crate::partition::Slot);

/// What a sync of one partition's pieces between two tiers did.
pub(crate) struct PiecesSynced {
    pub moved: PieceSync,
    /// The latest instant the pieces copied into this tier were cut at.
    pub latest_into: Option<Millis>,
}

impl Tier {
    /// This tier keeps its partitions in pieces (format 2).
    pub fn in_pieces(
        mut self,
        resolver: Arc<dyn ConflictResolver>,
        compaction: Compaction,
        clock: fn() -> Millis,
    ) -> Tier {
        self.pieces = Some(PiecesMode {
            resolver,
            compaction,
            clock,
            writer: Mutex::new(None),
            noted: Mutex::new(None),
            prepared: std::sync::atomic::AtomicBool::new(false),
            writing: Mutex::ordered(crate::lock::Level::PiecesWriter, ()),
            swept: std::sync::atomic::AtomicBool::new(false),
        });
        self
    }

    /// Makes sure the tier is in pieces before anything reads it: a tier in format
    /// 1 is converted in place (crash-safely: a conversion cut short is finished by
    /// the next one, see `crate::pieces::convert_format1`). Once per instance. A
    /// shared tier in format 1 is checked, once, not to be in format 2 already
    /// (another device converted it): then this instance must use format 2 too, or
    /// its syncs would see the tier as empty.
    pub fn ensure_format(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        let Some(mode) = &self.pieces else {
            if self.shared && !self.is_store() && !self.checked_format.load(Ordering::Acquire) {
                if self.load(crate::pieces::FORMAT_KEY)?.is_some() {
                    return Err(Error::InvalidConfig(format!(
                        "the {} tier is in format 2 (another device converted it); open this instance with format 2",
                        self.label
                    )));
                }
                self.checked_format.store(true, Ordering::Release);
            }
            return Ok(());
        };
        if mode.prepared.load(Ordering::Acquire) {
            return Ok(());
        }
        let label = self.label;
        self.with_adapter(|a| {
            let adapter = a.blobs();
            if crate::pieces::is_converted(adapter, label)? {
                return Ok(());
            }
            let done = crate::pieces::convert_format1(adapter, label)?;
            if done.partitions + done.already > 0 {
                log::info!(target: "datasync::tier", "converted the {label} tier to format 2 ({} partitions)", done.partitions + done.already);
            }
            Ok::<(), Error>(())
        })?;
        mode.prepared.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether this tier keeps its partitions in pieces.
    pub fn is_pieces(&self) -> bool {
        self.pieces.is_some()
    }

    fn mode(&self) -> Result<&PiecesMode> {
        self.pieces
            .as_ref()
            .ok_or_else(|| Error::Internal(format!("the {} tier is not in pieces", self.label)))
    }

    /// Runs `f` with the piece operations over this tier's adapter (locked for `f`).
    fn with_pieces<R>(&self, f: impl FnOnce(&mut PieceTier) -> Result<R>) -> Result<R> {
        let (shared, label) = (self.shared, self.label);
        let (result, refused) = self.with_adapter(|a| {
            let mut tier = PieceTier::new(a.blobs(), shared, label);
            let result = f(&mut tier);
            (result, tier.refused())
        });
        self.raced(refused);
        result
    }

    /// Reads a partition from its pieces, every piece checked (`None`: no index).
    /// The adapter is held while the bytes are read; parsing, checking and merging
    /// them (the resolver may be host code) come after.
    pub(super) fn read_pieces(&self, key: &str) -> Result<Option<PieceRead>> {
        let resolver = self.mode()?.resolver.clone();
        self.with_pieces(|p| p.read_raw(key))?
            .map(|raw| raw.finish(resolver.as_ref()))
            .transpose()
    }

    /// The id this device writes under. A tier no one else writes keeps it (so that
    /// a device's writes form one chain across restarts); in a shared tier every
    /// instance takes a new one, since the key would be everyone's.
    pub fn writer_id(&self) -> Result<String> {
        let mode = self.mode()?;
        if let Some(id) = mode.writer.lock().clone() {
            return Ok(id);
        }
        let id = if self.shared {
            new_writer_id()
        } else {
            match self.load(WRITER_KEY)? {
                Some(bytes) => match String::from_utf8(bytes) {
                    Ok(id) if !id.is_empty() && id.len() <= 64 => id,
                    _ => return Err(Error::corrupt(self.label, WRITER_KEY, "not a writer id")),
                },
                None => {
                    let id = new_writer_id();
                    self.store(WRITER_KEY, id.as_bytes())?;
                    id
                }
            }
        };
        *mode.writer.lock() = Some(id.clone());
        Ok(id)
    }

    /// Once per instance, on a tier no one else writes: removes the pieces no index
    /// lists, left by a crash between a piece and its index or by a compaction cut
    /// short before it removed what it folded. One listing of the tier's keys, then
    /// one partition at a time, each under the lock its index writes take (the
    /// adapter is not held across partitions). A partition without an index, or
    /// whose index cannot be read, keeps its pieces. Returns how many went.
    pub fn sweep_unlisted(&self) -> Result<usize> {
        let mode = self.mode()?;
        if self.shared || mode.swept.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Ok(0);
        }
        let Some(listed) = self.with_pieces(|p| p.pieces_by_partition())? else {
            return Ok(0);
        };
        let mut removed = 0;
        for (partition, names) in listed {
            // The lock is let go before anything is logged (a logger may be host code).
            let swept = {
                let _writing = mode.writing.lock();
                self.with_pieces(|p| p.sweep_listed(&partition, &names))
            };
            match swept {
                Ok(n) => removed += n,
                Err(e) => {
                    log::warn!(target: "datasync::pieces", "{} {partition:?}: unlisted pieces kept: {e}", self.label)
                }
            }
        }
        if removed > 0 {
            log::info!(target: "datasync::pieces", "{}: removed {removed} pieces no index lists", self.label);
        }
        Ok(removed)
    }

    /// Appends the slots a sync or a flush changed as one new piece of this device,
    /// records the partition's entry (its vector's hash, with `counts`), and compacts
    /// the partition when it has more pieces than the bound. Returns the bytes of
    /// the new piece. Nothing stored is rewritten.
    pub fn append_slots(
        &self,
        key: &str,
        slots: Partition,
        counts: BTreeMap<String, Counts>,
        now: Millis,
    ) -> Result<(u64, Vector)> {
        let writer = self.writer_id()?;
        let mode = self.mode()?;
        let _writing = (!self.shared).then(|| mode.writing.lock());
        let clock = self.cut_clock(&slots)?;
        let (seq, index) = self.with_pieces(|p| p.append_indexed(key, &writer, clock, slots))?;
        self.appended(key, &writer, seq, index, counts, now)
    }

    /// The clock a new piece of `slots` is cut at: now by the instance's clock, or
    /// the latest stamp among them if later.
    fn cut_clock(&self, slots: &Partition) -> Result<Millis> {
        let cut = (self.mode()?.clock)();
        Ok(slots
            .names
            .values()
            .flat_map(|ids| ids.values().map(|s| s.instant()))
            .max()
            .map_or(cut, |latest| latest.max(cut)))
    }

    /// After write `seq` of `writer` was appended and `index` written: records the
    /// partition's entry and compacts it past the bound. Returns the new piece's
    /// bytes and the partition's writes.
    fn appended(
        &self,
        key: &str,
        writer: &str,
        seq: u64,
        index: Index,
        counts: BTreeMap<String, Counts>,
        now: Millis,
    ) -> Result<(u64, Vector)> {
        let bytes = index
            .entries
            .iter()
            .find(|e| {
                e.span
                    .get(writer)
                    .is_some_and(|&(a, b)| a <= seq && seq <= b)
            })
            .map_or(0, |e| e.bytes);
        let vector = index.vector();
        self.set_entry(
            key,
            MetaEntry {
                hash: summary_of(&vector),
                updated_at: now,
                entities: counts,
            },
        );
        if index.entries.len() > self.mode()?.compaction.bound.max(1) {
            self.compact_pieces(key)?;
        }
        Ok((bytes, vector))
    }

    /// The writes partition `key` holds in this tier now (its index read).
    pub fn pieces_vector(&self, key: &str) -> Result<Vector> {
        Ok(self.with_pieces(|p| p.index_of(key))?.index.vector())
    }

    /// The entry of partition `key` as this tier holds it now, when one of
    /// `candidates` describes it: the index holds the writes that entry hashes, and
    /// no fold listed dropped tombstones (then those writes alone decide the
    /// partition, and the counts the entry was made with are its counts). `None`
    /// otherwise, or on a tier that does not keep pieces: read the partition.
    pub(super) fn entry_from_index(
        &self,
        key: &str,
        candidates: &[&MetaEntry],
    ) -> Result<Option<MetaEntry>> {
        if !self.is_pieces() {
            return Ok(None);
        }
        let index = self.with_pieces(|p| p.index_of(key))?.index;
        if index.entries.is_empty() || index.entries.iter().any(|e| e.dropped > 0) {
            return Ok(None);
        }
        let hash = summary_of(&index.vector());
        Ok(candidates
            .iter()
            .find(|e| e.hash == hash)
            .map(|e| (*e).clone()))
    }

    /// The slots of the writes partition `key` holds beyond `known`, each with the
    /// write it came from: only the pieces holding such writes are loaded, and of a
    /// fold only the slots filed under those writes are taken. `None` when the
    /// partition does not hold every write of `known` (then only a whole read
    /// tells what it holds).
    pub fn slots_beyond(
        &self,
        key: &str,
        known: &Vector,
    ) -> Result<Option<(Vec<PulledSlot>, Vector)>> {
        let index = self.with_pieces(|p| p.index_of(key))?.index;
        let vector = index.vector();
        let known_spans = known.runs.iter().flat_map(|(w, runs)| {
            runs.iter()
                .map(move |r| -> crate::pieces::Span { [(w.clone(), *r)].into() })
        });
        if !known_spans.into_iter().all(|span| vector.covers(&span)) {
            return Ok(None);
        }
        let mut slots = Vec::new();
        for entry in &index.entries {
            if known.covers(&entry.span) {
                continue;
            }
            let bytes = Side(self).piece_bytes(key, &entry.name)?;
            let piece = crate::pieces::Piece::parse(&bytes).map_err(|why| {
                Error::corrupt(self.label, &crate::pieces::piece_key(key, &entry.name), why)
            })?;
            for ((writer, seq), part) in piece.data {
                let one: crate::pieces::Span = [(writer, (seq, seq))].into();
                if known.covers(&one) {
                    continue;
                }
                for (name, ids) in part.names {
                    for (id, slot) in ids {
                        slots.push((name.clone(), id, slot));
                    }
                }
            }
        }
        Ok(Some((slots, vector)))
    }

    /// [`Tier::append_slots`] of a whole partition this tier lacks, given with its
    /// canonical bytes (which are not made again).
    pub fn append_whole(&self, key: &str, loaded: &Loaded, now: Millis) -> Result<u64> {
        let writer = self.writer_id()?;
        let mode = self.mode()?;
        let _writing = (!self.shared).then(|| mode.writing.lock());
        let clock = self.cut_clock(&loaded.partition)?;
        let (seq, index) =
            self.with_pieces(|p| p.append_canonical(key, &writer, clock, &loaded.bytes))?;
        let counts = loaded.partition.counts();
        self.appended(key, &writer, seq, index, counts, now)
            .map(|(bytes, _)| bytes)
    }

    /// [`Tier::append_slots`] of the slots a merge changed in this tier.
    pub fn append_changes(
        &self,
        key: &str,
        changes: &[SlotChange],
        merged: &Partition,
        now: Millis,
    ) -> Result<u64> {
        let mut slots = Partition::default();
        for c in changes {
            slots.put(&c.name, &c.id, c.slot.clone());
        }
        self.append_slots(key, slots, merged.counts(), now)
            .map(|(bytes, _)| bytes)
    }

    /// Folds a partition's pieces (see [`PieceTier::compact`]). In a shared tier the
    /// tombstones every device has synced past may go (the tier's device register);
    /// elsewhere only those past the horizon.
    pub fn compact_pieces(&self, key: &str) -> Result<()> {
        let mode = self.mode()?;
        let (resolver, policy) = (mode.resolver.clone(), mode.compaction);
        let now = (mode.clock)();
        let shared = self.shared;
        let done = self.with_pieces(|p| {
            let past = if shared { p.synced_past()? } else { None };
            p.compact(key, resolver.as_ref(), policy, now, past)
        })?;
        let Some(done) = done else {
            return Ok(());
        };
        log::debug!(target: "datasync::pieces", "{} {key:?}: folded {} pieces into one of {} bytes", self.label, done.folded, done.bytes);
        if done.full {
            // A full fold may drop tombstones: the counts are taken again.
            if let (Some(read), Some(mut entry)) = (self.read_pieces(key)?, self.entry(key)) {
                let counts = read.partition.counts();
                if entry.entities != counts {
                    entry.entities = counts;
                    self.set_entry(key, entry);
                }
            }
        }
        Ok(())
    }

    /// Syncs partition `key`'s pieces between this tier and `other`: each gets the
    /// pieces it lacks, then the union of the indexes; then both entries record what
    /// each holds. A side whose entry says it is damaged is first restored from the
    /// other. A partition neither side holds loses its entries.
    ///
    /// `store`: the instance's store, when this tier is the one right below it; a
    /// side that received pieces then takes its counts from the store where the store
    /// holds what this tier held ([`Tier::counts_below_with`]) instead of reading
    /// the partition.
    pub(crate) fn sync_pieces(
        &self,
        other: &Tier,
        key: &str,
        now: Millis,
        store: Option<&Tier>,
    ) -> Result<PiecesSynced> {
        // The index writes of the side no one else writes are this instance's only.
        let _writing = [self, other]
            .into_iter()
            .find(|t| !t.shared)
            .map(|t| t.mode().map(|m| m.writing.lock()))
            .transpose()?;
        let (mine, theirs) = (self.entry(key), other.entry(key));
        let damaged =
            |e: &Option<MetaEntry>| e.as_ref().is_some_and(|e| e.hash == crate::meta::DAMAGED);
        if damaged(&mine) {
            self.restore_pieces(other, key)?;
        }
        if damaged(&theirs) {
            other.restore_pieces(self, key)?;
        }
        let moved = sync_partition(&mut Side(self), &mut Side(other), key)?;
        let exists = !moved.a_vector.runs.is_empty() || !moved.b_vector.runs.is_empty();
        if !exists {
            if mine.is_some() {
                self.remove_entry(key);
            }
            if theirs.is_some() {
                other.remove_entry(key);
            }
            return Ok(PiecesSynced {
                moved,
                latest_into: None,
            });
        }
        // Counts: a side that received nothing and whose entry records the writes
        // it holds keeps its counts; a side that received pieces and now holds
        // what the other held takes the other's, when both hold the same
        // tombstones (a fold that dropped some is on both sides or neither); else
        // the partition is read (both sides wrote since they last met, an entry was
        // out of date, or the tombstones differ), on one side only when the two
        // now hold the same.
        let counts_after = |tier: &Tier,
                            own: &Option<MetaEntry>,
                            vector: &Vector,
                            received: u64,
                            peer: &Option<MetaEntry>,
                            peer_vector: &Vector,
                            peer_received: u64,
                            derived: &dyn Fn() -> Result<Option<BTreeMap<String, Counts>>>|
         -> Result<BTreeMap<String, Counts>> {
            let records = |e: &Option<MetaEntry>, v: &Vector| {
                e.as_ref()
                    .filter(|e| e.hash == summary_of(v))
                    .map(|e| e.entities.clone())
            };
            if received == 0 {
                if let Some(c) = records(own, vector) {
                    return Ok(c);
                }
            }
            if peer_received == 0 && vector == peer_vector && moved.same_tombstones {
                if let Some(c) = records(peer, peer_vector) {
                    return Ok(c);
                }
            }
            if let Some(c) = derived()? {
                return Ok(c);
            }
            Ok(tier
                .read_pieces(key)?
                .map(|r| r.partition.counts())
                .unwrap_or_default())
        };
        let counts_mine = counts_after(
            self,
            &mine,
            &moved.a_vector,
            moved.b_to_a,
            &theirs,
            &moved.b_vector,
            moved.a_to_b,
            &|| self.counts_from_store(store, key, mine.as_ref()),
        )?;
        // Two sides that now hold the same writes and tombstones hold the same
        // partition: one read counts both (when both wrote, the other is not read).
        let counts_theirs = if moved.a_vector == moved.b_vector && moved.same_tombstones {
            counts_mine.clone()
        } else {
            counts_after(
                other,
                &theirs,
                &moved.b_vector,
                moved.a_to_b,
                &mine,
                &moved.a_vector,
                moved.b_to_a,
                &|| Ok(None),
            )?
        };
        for (tier, vector, counts, before) in [
            (self, &moved.a_vector, counts_mine, &mine),
            (other, &moved.b_vector, counts_theirs, &theirs),
        ] {
            let hash = summary_of(vector);
            if before
                .as_ref()
                .is_some_and(|e| e.hash == hash && e.entities == counts)
            {
                continue;
            }
            tier.set_entry(
                key,
                MetaEntry {
                    hash,
                    updated_at: now,
                    entities: counts,
                },
            );
        }
        // Read before a compaction folds them away.
        let latest_into = self.latest_cut(key, &moved.into_a)?;
        for (tier, received) in [(self, moved.b_to_a), (other, moved.a_to_b)] {
            if received > 0 {
                let bound = tier.mode()?.compaction.bound.max(1);
                let pieces = tier.with_pieces(|p| p.index_of(key))?.index.entries.len();
                if pieces > bound {
                    tier.compact_pieces(key)?;
                }
            }
        }
        Ok(PiecesSynced { moved, latest_into })
    }

    /// This tier's counts of `key` after a sync brought it pieces, from the store
    /// right above it: the slots of the writes beyond those the store reflects,
    /// each against the store's slot for its id. `before` is this tier's entry from
    /// before the sync. `None` (the partition is read instead) where the store does
    /// not reflect that entry, or a fold this tier lists dropped tombstones (the
    /// store may still hold them, or a received one changes more than its slots).
    fn counts_from_store(
        &self,
        store: Option<&Tier>,
        key: &str,
        before: Option<&MetaEntry>,
    ) -> Result<Option<BTreeMap<String, Counts>>> {
        let (Some(store), Some(before)) = (store, before) else {
            return Ok(None);
        };
        let Some((hash, known)) = store.reflects(key) else {
            return Ok(None);
        };
        if self.shared || hash != before.hash || summary_of(&known) != before.hash {
            return Ok(None);
        }
        // A fold that dropped tombstones, received or this tier's own, may leave the
        // store holding tombstones this tier no longer does: then only a read
        // counts it.
        let index = self.with_pieces(|p| p.index_of(key))?.index;
        if index.entries.iter().any(|e| e.dropped > 0) {
            return Ok(None);
        }
        let Some((slots, _)) = self.slots_beyond(key, &known)? else {
            return Ok(None);
        };
        let resolver = self.mode()?.resolver.clone();
        store.counts_below_with(key, &hash, &before.entities, &slots, resolver.as_ref())
    }

    /// The latest instant the given pieces of `key` were cut at (their writers'
    /// clocks), to adopt into an instance clock when they come up.
    pub fn latest_cut(&self, key: &str, names: &[String]) -> Result<Option<Millis>> {
        let mut latest = None;
        for name in names {
            let bytes = Side(self).piece_bytes(key, name)?;
            let piece = crate::pieces::Piece::parse(&bytes).map_err(|why| {
                Error::corrupt(self.label, &crate::pieces::piece_key(key, name), why)
            })?;
            latest = latest.max(piece.clock.values().copied().max());
        }
        Ok(latest)
    }

    /// Shared tier: registers `device` in the tier's device register before its
    /// first sync of this instance reads anything (so that nothing it may hold is
    /// forgotten while it is away). Once per instance.
    pub fn register_device(&self, device: &str) -> Result<()> {
        let mode = self.mode()?;
        if mode.noted.lock().is_some() {
            return Ok(());
        }
        self.with_pieces(|p| p.note_synced(device, Millis::MIN))?;
        *mode.noted.lock() = Some(Millis::MIN);
        Ok(())
    }

    /// Shared tier: records that `device` completed a sync that began at `began`.
    /// A sync that found nothing to do is recorded at most once an hour.
    pub fn device_synced(&self, device: &str, began: Millis, worked: bool) -> Result<()> {
        let mode = self.mode()?;
        let last = mode.noted.lock().unwrap_or(Millis::MIN);
        if !worked && began.saturating_sub(last) < NOTE_IDLE_EVERY {
            return Ok(());
        }
        self.with_pieces(|p| p.note_synced(device, began))?;
        *mode.noted.lock() = Some(began);
        Ok(())
    }

    /// Restores a partition this tier holds damaged (a piece missing or not matching
    /// its hash, or the index unreadable) from `from`: every piece `from` lists that
    /// this tier cannot read is copied, the pieces of this tier that cannot be read
    /// and that `from` lacks are dropped from the index, and the partition is read
    /// again to check it. Returns how many pieces were copied.
    pub(crate) fn restore_pieces(&self, from: &Tier, key: &str) -> Result<u64> {
        let theirs = Side(from).index_of(key)?;
        if theirs.index.entries.is_empty() {
            // Nothing to restore from: what is damaged here stays as it is (a tier
            // that holds the partition may still restore it), and reads fail.
            return Err(Error::corrupt(
                self.label,
                key,
                format!(
                    "the partition is damaged here and the {} tier does not hold it; a sync with a tier that holds it restores it",
                    from.label
                ),
            ));
        }
        let mine = match Side(self).index_of(key) {
            Ok(read) => Some(read),
            Err(e) if e.kind() == ErrorKind::Corrupt => None,
            Err(e) => return Err(e),
        };
        let readable = |tier: &Tier, name: &str| -> Result<Option<Vec<u8>>> {
            match Side(tier).piece_bytes(key, name) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == ErrorKind::Corrupt => Ok(None),
                Err(e) => Err(e),
            }
        };
        let mut copied = 0;
        let mut kept = Vec::new();
        for entry in &theirs.index.entries {
            if readable(self, &entry.name)?.is_none() {
                let bytes = Side(from).piece_bytes(key, &entry.name)?;
                Side(self).put_piece(key, &entry.name, &bytes)?;
                copied += 1;
            }
            kept.push(entry.clone());
        }
        if let Some(mine) = &mine {
            for entry in &mine.index.entries {
                if theirs.index.entries.contains(entry) {
                    continue;
                }
                if readable(self, &entry.name)?.is_some() {
                    kept.push(entry.clone());
                } else {
                    log::error!(target: "datasync::pieces", "{} {key:?}: piece {} is unreadable and no other tier holds it; its writes are lost here", self.label, entry.name);
                }
            }
        }
        let index = Index::from_entries(kept);
        let over = match mine {
            Some(read) => read,
            // An unreadable index is replaced whatever it holds.
            None => {
                self.store(&index_key(key), &index.to_bytes())?;
                Side(self).index_of(key)?
            }
        };
        Side(self).replace_index(key, &over, &index)?;
        match self.read_pieces(key)? {
            Some(read) => {
                self.set_entry(
                    key,
                    MetaEntry {
                        hash: summary_of(&read.vector),
                        updated_at: crate::clock::now_millis(),
                        entities: read.partition.counts(),
                    },
                );
                log::info!(target: "datasync::pieces", "{} {key:?} restored from the {} tier ({copied} pieces copied)", self.label, from.label);
            }
            None => self.remove_entry(key),
        }
        Ok(copied)
    }

    /// The entries of every partition the tier holds in pieces, each read in full
    /// (the metadata is missing or damaged). Unreadable partitions are recorded as
    /// damaged, so that a sync restores them.
    pub(super) fn rebuild_pieces_meta(&self) -> Result<Meta> {
        let listed = self.list()?.unwrap_or_default();
        let mut meta = Meta {
            updated_at: crate::clock::now_millis(),
            ..Meta::default()
        };
        for key in listed
            .iter()
            .filter_map(|k| crate::pieces::partition_of_index(k))
        {
            let entry = match self.read_pieces(key) {
                Ok(Some(read)) => MetaEntry {
                    hash: summary_of(&read.vector),
                    updated_at: meta.updated_at,
                    entities: read.partition.counts(),
                },
                Ok(None) => continue,
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    log::error!(target: "datasync::tier", "while rebuilding metadata: {e}");
                    MetaEntry {
                        hash: crate::meta::DAMAGED.to_string(),
                        updated_at: meta.updated_at,
                        entities: BTreeMap::new(),
                    }
                }
                Err(e) => return Err(e),
            };
            meta.entries.insert(key.to_string(), entry);
        }
        // Partitions the conversion from format 1 could not convert, and that no
        // sync has restored since: damaged, so that their reads fail.
        let label = self.label;
        let unconverted = self.with_adapter(|a| crate::pieces::unconverted(a.blobs(), label))?;
        for key in unconverted {
            meta.entries.entry(key).or_insert_with(|| MetaEntry {
                hash: crate::meta::DAMAGED.to_string(),
                updated_at: meta.updated_at,
                entities: BTreeMap::new(),
            });
        }
        Ok(meta)
    }

    /// The audit of a tier in pieces: every recorded partition read through its
    /// pieces (each checked), its vector and counts compared with its entry, and
    /// every index the adapter lists recorded.
    pub fn audit_pieces(&self, recorded: &Meta, stored_root: Option<&[u8]>) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let label = self.label;
        for (key, entry) in &recorded.entries {
            match self.read_pieces(key) {
                Ok(Some(read)) => {
                    if summary_of(&read.vector) != entry.hash {
                        problems.push(format!("{label} {key:?}: the entry does not record the writes the partition holds"));
                    }
                    if read.partition.counts() != entry.entities {
                        problems.push(format!(
                            "{label} {key:?}: the entry's counts are not the partition's"
                        ));
                    }
                }
                Ok(None) => problems.push(format!("{label} {key:?} is recorded but has no index")),
                Err(e) => problems.push(format!("{label} {key:?}: {e}")),
            }
        }
        if let Some(listed) = self.list()? {
            for key in listed
                .iter()
                .filter_map(|k| crate::pieces::partition_of_index(k))
            {
                if !recorded.entries.contains_key(key) {
                    problems.push(format!("{label} {key:?} has an index but no entry"));
                }
            }
        }
        // Only a shared tier's stored root is read (by other devices, to see that
        // nothing changed); a tier no one else writes compares its metadata itself,
        // and a root left behind by a write cut short is rewritten with the next.
        if let Some(top) = stored_root.filter(|_| self.shared) {
            let root = crate::summary::Node::parse("", top).map(|t| t.hash());
            if root.as_deref() != Ok(recorded.tree_root().as_str()) {
                problems.push(format!("{label} root does not match its metadata"));
            }
        }
        Ok(problems)
    }
}

impl Loaded {
    /// A partition read from its pieces. It is never written as one document, so
    /// its canonical bytes are not made: `bytes` is empty and `hash` is the summary
    /// of its writes (which compares equal to no content hash, so a merge decides).
    pub(crate) fn from_pieces(read: PieceRead) -> Loaded {
        let summary = summary_of(&read.vector);
        Loaded {
            partition: read.partition,
            hash: summary.clone(),
            bytes: Vec::new(),
            generation: 0,
            rewrite: false,
            stored: None,
            summary: Some(summary),
            vector: Some(read.vector),
        }
    }
}
