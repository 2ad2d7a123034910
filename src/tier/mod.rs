//! A tier: one adapter, the calls to it serialised, plus the library's view of its
//! metadata. Only this module touches a tier's state. Adapter calls hold only the
//! adapter's own serialisation lock, never the state lock; the lock order is adapter
//! then state (`src/lock.rs`).
//!
//! - `store.rs`: the in-memory store tier (typed partitions, write marks);
//! - `blob.rs`: blob tiers (metadata read from and written to the adapter);
//! - `pieces.rs`: blob tiers in format 2 (partitions as write-once pieces);
//! - `audit.rs`: the one audit and rebuild of a tier's metadata from its partitions.

pub mod audit;
mod blob;
mod pieces;
mod store;
mod summary;

use crate::clock::Millis;
use crate::error::{Error, Result};
use crate::lock::{Level, Mutex};
use crate::meta::{Meta, MetaEntry};
use crate::partition::{hash_bytes, Partition};
use crate::persistence::{AdapterError, AdapterResult, Persistence, Store};

use blob::BlobMarks;
use pieces::PiecesMode;
use store::StoreMarks;
pub(crate) use store::{Was, Written};

/// The adapter behind a tier.
pub(crate) enum Adapter {
    Store(Box<dyn Store>),
    Blobs(Box<dyn Persistence>),
}

impl Adapter {
    fn blobs(&mut self) -> &mut dyn Persistence {
        match self {
            Adapter::Store(s) => {
                let s: &mut dyn Persistence = s.as_mut();
                s
            }
            Adapter::Blobs(p) => p.as_mut(),
        }
    }
}

/// What the library knows of a tier besides its adapter.
struct TierState {
    /// Entries per partition. For the store tier, entries of stale keys are out of date.
    meta: Meta,
    /// What only one kind of tier keeps.
    marks: Marks,
}

enum Marks {
    Store(Box<StoreMarks>),
    Blobs(BlobMarks),
}

/// A partition as an adapter returned it.
pub(crate) enum Raw {
    /// From a store: typed, with the key's generation when read.
    Typed(Partition, u64),
    /// From a blob tier.
    Bytes(Vec<u8>),
    /// From a blob tier in pieces, merged.
    Pieces(crate::pieces::PieceRead),
}

impl Raw {
    /// Size in bytes, roughly (what parsing it costs).
    pub fn weight(&self) -> usize {
        match self {
            Raw::Typed(p, _) => p.names.values().map(|ids| ids.len() * 256).sum(),
            Raw::Bytes(b) => b.len(),
            Raw::Pieces(_) => 0,
        }
    }

    /// Parses and hashes. Bytes whose hash equals `expected_hash` are known canonical
    /// and are not re-serialised.
    pub fn finish(self, tier: &str, key: &str, expected_hash: Option<&str>) -> Result<Loaded> {
        match self {
            Raw::Typed(partition, generation) => {
                let bytes = partition.to_canonical();
                Ok(Loaded {
                    hash: hash_bytes(&bytes),
                    partition,
                    bytes,
                    generation,
                    rewrite: false,
                    stored: None,
                    summary: None,
                    vector: None,
                })
            }
            Raw::Pieces(read) => Ok(Loaded::from_pieces(read)),
            Raw::Bytes(bytes) => {
                let hash = hash_bytes(&bytes);
                let trusted = expected_hash == Some(hash.as_str());
                let partition = Partition::parse(&bytes, trusted)
                    .map_err(|why| Error::corrupt(tier, key, why))?;
                if trusted {
                    return Ok(Loaded {
                        partition,
                        hash,
                        bytes,
                        generation: 0,
                        rewrite: false,
                        stored: None,
                        summary: None,
                        vector: None,
                    });
                }
                let canonical = partition.to_canonical();
                let rewrite = canonical != bytes;
                Ok(Loaded {
                    hash: hash_bytes(&canonical),
                    partition,
                    bytes: canonical,
                    generation: 0,
                    rewrite,
                    stored: rewrite.then_some(bytes),
                    summary: None,
                    vector: None,
                })
            }
        }
    }
}

/// A partition read from a tier, with what is needed to write back safely.
pub(crate) struct Loaded {
    pub partition: Partition,
    /// Hash of the canonical bytes (read from pieces: the summary of its writes).
    pub hash: String,
    /// The canonical bytes (read from pieces: empty, never written as a document).
    pub bytes: Vec<u8>,
    /// Store tier: the key's generation when read.
    pub generation: u64,
    /// The stored bytes are not canonical (a host wrote them): write them again.
    pub rewrite: bool,
    /// The bytes as stored, when they are not the canonical ones (`rewrite`).
    pub stored: Option<Vec<u8>>,
    /// Read from pieces: the hash of the writes it holds, which its entry records
    /// instead of the content's hash.
    pub summary: Option<String>,
    /// Read from pieces: the writes it holds.
    pub vector: Option<crate::pieces::Vector>,
}

impl Loaded {
    /// A partition the library just built (a merge), in canonical form.
    pub fn new(partition: Partition) -> Loaded {
        let bytes = partition.to_canonical();
        Loaded {
            hash: hash_bytes(&bytes),
            partition,
            bytes,
            generation: 0,
            rewrite: false,
            stored: None,
            summary: None,
            vector: None,
        }
    }

    /// The hash the tier's entry records for this partition.
    pub fn entry_hash(&self) -> &str {
        self.summary.as_deref().unwrap_or(&self.hash)
    }

    /// The bytes the tier held when this was read: what a conditional write back
    /// expects to find there.
    pub fn into_held(self) -> Vec<u8> {
        self.stored.unwrap_or(self.bytes)
    }

    /// The metadata entry describing this partition.
    pub fn entry(&self, now: Millis) -> MetaEntry {
        MetaEntry {
            hash: self.entry_hash().to_string(),
            updated_at: now,
            entities: self.partition.counts(),
        }
    }
}

thread_local! {
    /// How many adapter calls this thread is inside (a host callback that calls back
    /// into the library runs at depth > 0).
    static ADAPTER_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether this thread is inside a call to a tier's adapter: a library call made
/// from there (a host persistence callback calling back in) could wait on the very
/// lock the call holds, so the instance refuses it with `WouldDeadlock`.
pub(crate) fn in_adapter_call() -> bool {
    ADAPTER_DEPTH.with(|d| d.get() > 0)
}

/// A tier's adapter, locked, with this thread counted as inside an adapter call.
pub(crate) struct AdapterGuard<'a>(crate::lock::MutexGuard<'a, Adapter>);

impl<'a> AdapterGuard<'a> {
    fn new(guard: crate::lock::MutexGuard<'a, Adapter>) -> Self {
        ADAPTER_DEPTH.with(|d| d.set(d.get() + 1));
        AdapterGuard(guard)
    }
}

impl Drop for AdapterGuard<'_> {
    fn drop(&mut self) {
        ADAPTER_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

impl std::ops::Deref for AdapterGuard<'_> {
    type Target = Adapter;
    fn deref(&self) -> &Adapter {
        &self.0
    }
}

impl std::ops::DerefMut for AdapterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Adapter {
        &mut self.0
    }
}

pub(crate) struct Tier {
    pub label: &'static str,
    /// Other writers may change this tier (a shared cloud, or a tier synced standalone):
    /// its metadata is re-read on every sync.
    pub shared: bool,
    adapter: Mutex<Adapter>,
    state: Mutex<TierState>,
    /// Format 2: partitions kept as pieces (blob tiers only).
    pieces: Option<PiecesMode>,
    /// Format 1, shared tier: whether it was checked not to be in format 2.
    checked_format: std::sync::atomic::AtomicBool,
    /// Format 2: conditional writes of mutable documents (the summary tree, the
    /// device register) that found another writer's update, since last taken.
    races: std::sync::atomic::AtomicU64,
}

impl Tier {
    pub fn new(label: &'static str, adapter: Adapter, shared: bool) -> Tier {
        let marks = match adapter {
            Adapter::Store(_) => Marks::Store(Box::default()),
            Adapter::Blobs(_) => Marks::Blobs(BlobMarks::default()),
        };
        Tier {
            label,
            shared,
            adapter: Mutex::ordered(Level::TierAdapter, adapter),
            state: Mutex::ordered(
                Level::TierState,
                TierState {
                    meta: Meta::default(),
                    marks,
                },
            ),
            pieces: None,
            checked_format: std::sync::atomic::AtomicBool::new(false),
            races: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The store tier (typed, per-entity access) rather than a blob tier.
    pub fn is_store(&self) -> bool {
        matches!(self.state.lock().marks, Marks::Store(_))
    }

    fn adapter_err(&self, key: &str) -> impl Fn(AdapterError) -> Error + '_ {
        let key = key.to_string();
        move |e| Error::from_adapter(self.label, &key, e)
    }

    fn lock_adapter(&self) -> AdapterGuard<'_> {
        AdapterGuard::new(self.adapter.lock())
    }

    /// Runs `f` with the adapter, calls serialised.
    pub fn with_adapter<R>(&self, f: impl FnOnce(&mut Adapter) -> R) -> R {
        f(&mut self.lock_adapter())
    }

    /// Runs `f` with the store adapter (per-entity access); an error on a blob tier.
    pub fn with_store<R>(
        &self,
        key: &str,
        f: impl FnOnce(&mut dyn Store) -> AdapterResult<R>,
    ) -> Result<R> {
        self.with_adapter(|adapter| match adapter {
            Adapter::Store(store) => f(store.as_mut()),
            Adapter::Blobs(_) => Err(AdapterError::new("not a store tier")),
        })
        .map_err(self.adapter_err(key))
    }

    pub fn load(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.with_adapter(|a| a.blobs().load(key))
            .map_err(self.adapter_err(key))
    }

    pub fn store(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.with_adapter(|a| a.blobs().store(key, bytes))
            .map_err(self.adapter_err(key))
    }

    /// Writes `bytes` under `key` if the key still holds `before` (`None`: absent);
    /// returns whether it wrote. On a shared tier this is the adapter's conditional
    /// write where it offers one, else a read just before an unconditional write (a
    /// short window remains: see [`Persistence::store_if`]). A tier no one else
    /// writes is written unconditionally.
    pub fn put_if(&self, key: &str, before: Option<&[u8]>, bytes: &[u8]) -> Result<bool> {
        if !self.shared {
            self.store(key, bytes)?;
            return Ok(true);
        }
        let written =
            self.with_adapter(|a| crate::persistence::write_over(a.blobs(), key, before, bytes));
        let written = written.map_err(self.adapter_err(key))?;
        if !written && self.is_pieces() {
            self.raced(1);
        }
        if !written {
            log::debug!(target: "datasync::tier", "{} {key:?} changed since it was read; not overwriting it", self.label);
        }
        Ok(written)
    }

    /// Counts conditional writes that found another writer's update (format 2; a
    /// format-1 sync counts its own, per partition).
    pub fn raced(&self, refused: u64) {
        self.races
            .fetch_add(refused, std::sync::atomic::Ordering::Relaxed);
    }

    /// The conditional writes counted by [`Tier::raced`] since last taken.
    pub fn take_races(&self) -> u64 {
        self.races.swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    /// The keys the adapter lists (`None` when it cannot list).
    pub fn list(&self) -> Result<Option<Vec<String>>> {
        self.with_adapter(|a| a.blobs().keys())
            .map_err(self.adapter_err(crate::meta::META_KEY))
    }

    /// The root of the tier as its adapter holds it now (re-read when shared).
    pub fn root(&self) -> Result<String> {
        if self.is_store() {
            self.refresh_store_entries()?;
            return Ok(self.state.lock().meta.root());
        }
        self.blob_root()
    }

    /// The root, for the store tier in the form of format 2 (`tree`) or format 1
    /// (blob tiers answer in their own).
    pub fn root_as(&self, tree: bool) -> Result<String> {
        if self.is_store() && tree {
            self.refresh_store_entries()?;
            return Ok(self.state.lock().meta.tree_root());
        }
        self.root()
    }

    /// [`Tier::meta`] right after [`Tier::root`] in one sync: a tier in format 2
    /// reads its tree from the top the root was read from.
    pub fn meta_after_root(&self) -> Result<Meta> {
        if self.is_pieces() {
            return self.tree_meta_from(true);
        }
        self.meta()
    }

    /// A snapshot of the tier's metadata, read from the adapter when needed.
    pub fn meta(&self) -> Result<Meta> {
        if self.is_store() {
            self.refresh_store_entries()?;
            return Ok(self.state.lock().meta.clone());
        }
        self.blob_meta()
    }

    /// The keys of the tier's recorded entries that start with `prefix`.
    pub fn recorded_keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        let state = self.state.lock();
        state
            .meta
            .entries
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The entities of `name` the tier's recorded entries count in partition `base`
    /// and its sub-partitions ([`crate::split`]).
    pub fn recorded_count_within(&self, base: &str, name: &str, separator: char) -> u64 {
        let state = self.state.lock();
        state
            .meta
            .entries
            .range::<str, _>((std::ops::Bound::Included(base), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(base))
            .filter(|(k, _)| crate::split::within(k, base, separator))
            .map(|(_, e)| e.entities.get(name).map_or(0, |c| c.count))
            .sum()
    }

    /// Reads one partition. Bytes whose hash equals `expected_hash` are known
    /// canonical and are not re-serialised.
    pub fn load_partition(&self, key: &str, expected_hash: Option<&str>) -> Result<Option<Loaded>> {
        match self.load_raw(key)? {
            None => Ok(None),
            Some(raw) => raw.finish(self.label, key, expected_hash).map(Some),
        }
    }

    /// Reads one partition without parsing it (the adapter call; parsing is
    /// [`Raw::finish`], pure, so two sides can be parsed at once).
    pub fn load_raw(&self, key: &str) -> Result<Option<Raw>> {
        if self.is_pieces() {
            return Ok(self.read_pieces(key)?.map(Raw::Pieces));
        }
        let mut adapter = self.lock_adapter();
        match &mut *adapter {
            Adapter::Store(store) => {
                let partition = store.load_partition(key).map_err(self.adapter_err(key))?;
                self.forget_written(key);
                let generation = self.generation(key);
                Ok(partition.map(|p| Raw::Typed(p, generation)))
            }
            Adapter::Blobs(blobs) => Ok(blobs
                .load(key)
                .map_err(self.adapter_err(key))?
                .map(Raw::Bytes)),
        }
    }

    /// Writes a partition and records its entry; returns whether it was written. On
    /// the store tier the write happens only if the key's generation is still `guard`
    /// (no write since it was read); on a shared blob tier only if the key still
    /// holds `before`, the bytes it held when read (`None`: it lacked the key).
    pub fn write_partition(
        &self,
        key: &str,
        loaded: &Loaded,
        now: Millis,
        guard: Option<u64>,
        before: Option<&[u8]>,
    ) -> Result<bool> {
        if self.is_pieces() {
            // Every slot as one piece (the callers that know what changed append
            // only that, with `append_changes`).
            self.append_slots(
                key,
                loaded.partition.clone(),
                loaded.partition.counts(),
                now,
            )?;
            return Ok(true);
        }
        let entry = loaded.entry(now);
        {
            let mut adapter = self.lock_adapter();
            if let Adapter::Store(store) = &mut *adapter {
                if guard.is_some_and(|guard| self.generation(key) != guard) {
                    return Ok(false);
                }
                store
                    .store_partition(key, &loaded.partition)
                    .map_err(self.adapter_err(key))?;
                self.record_store_write(key, entry);
                if loaded.summary.is_some() {
                    // The store's entries hash the content; one read from pieces
                    // carries the hash of its writes: recomputed when needed.
                    self.mark_stale(key);
                }
                return Ok(true);
            }
        }
        if !self.put_if(key, before, &loaded.bytes)? {
            return Ok(false);
        }
        self.set_entry(key, entry);
        Ok(true)
    }

    /// Records an entry without writing the partition (metadata repair of a blob tier;
    /// the store tier uses [`Tier::settle_entry`]).
    pub fn set_entry(&self, key: &str, entry: MetaEntry) {
        let mut state = self.state.lock();
        state.meta.entries.insert(key.to_string(), entry);
        state.note_meta_changed();
        state.note_touched(key);
    }

    /// The recorded entry of a key, `None` when it is stale (store tier: written since
    /// it was last hashed).
    pub fn fresh_entry(&self, key: &str) -> Option<MetaEntry> {
        let state = self.state.lock();
        if let Marks::Store(marks) = &state.marks {
            if marks.stale.contains(key) {
                return None;
            }
        }
        state.meta.entries.get(key).cloned()
    }

    /// Forgets the entry of a key that holds no partition (metadata repair).
    pub fn remove_entry(&self, key: &str) {
        let mut state = self.state.lock();
        if state.meta.entries.remove(key).is_some() {
            state.note_meta_changed();
            state.note_touched(key);
        }
    }

    /// The recorded entry of one key.
    pub fn entry(&self, key: &str) -> Option<MetaEntry> {
        self.state.lock().meta.entries.get(key).cloned()
    }

    /// Records the true entry of a key whose recorded one disagrees with its content.
    pub fn repair_entry(
        &self,
        key: &str,
        recorded: Option<&MetaEntry>,
        loaded: &Loaded,
        now: Millis,
    ) {
        if self.is_store() {
            self.settle_entry(key, loaded, now);
        } else if recorded.map(|e| e.hash.as_str()) != Some(loaded.entry_hash()) {
            self.set_entry(key, loaded.entry(now));
        }
    }

    /// Drops the adapter (closing its files, releasing its locks, running a host's
    /// destroy callback) once the instance is closed; later calls fail. The adapter is
    /// dropped after the tier's lock is released.
    pub fn release(&self) {
        let old = {
            let mut adapter = self.lock_adapter();
            let closed = match &*adapter {
                Adapter::Store(_) => Adapter::Store(Box::new(Released)),
                Adapter::Blobs(_) => Adapter::Blobs(Box::new(Released)),
            };
            std::mem::replace(&mut *adapter, closed)
        };
        drop(old);
    }
}

impl TierState {
    fn note_meta_changed(&mut self) {
        if let Marks::Blobs(marks) = &mut self.marks {
            marks.meta_changed = true;
        }
    }

    /// Records that this process changed the entry of `key` (kept when the stored
    /// metadata changed meanwhile and must be merged with ours).
    fn note_touched(&mut self, key: &str) {
        if let Marks::Blobs(marks) = &mut self.marks {
            if !marks.touched.contains(key) {
                marks.touched.insert(key.to_string());
            }
        }
    }
}

/// What a tier holds once its instance is closed: every call fails.
struct Released;

const RELEASED: &str = "the instance is closed";

impl Persistence for Released {
    fn load(&mut self, _key: &str) -> AdapterResult<Option<Vec<u8>>> {
        Err(RELEASED.into())
    }
    fn store(&mut self, _key: &str, _bytes: &[u8]) -> AdapterResult<()> {
        Err(RELEASED.into())
    }
    fn clear(&mut self, _key: &str) -> AdapterResult<()> {
        Err(RELEASED.into())
    }
}

impl Store for Released {
    fn get(
        &mut self,
        _key: &str,
        _name: &str,
        _id: &str,
    ) -> AdapterResult<Option<crate::partition::Slot>> {
        Err(RELEASED.into())
    }
    fn get_all(&mut self, _key: &str, _name: &str) -> AdapterResult<Vec<crate::entity::Entity>> {
        Err(RELEASED.into())
    }
    fn save(
        &mut self,
        _key: &str,
        _name: &str,
        _entity: &crate::entity::Entity,
    ) -> AdapterResult<()> {
        Err(RELEASED.into())
    }
    fn delete(&mut self, _key: &str, _name: &str, _id: &str, _at: Millis) -> AdapterResult<()> {
        Err(RELEASED.into())
    }
}
