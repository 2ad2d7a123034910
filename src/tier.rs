//! A tier: one adapter, the calls to it serialised, plus the library's view of its
//! metadata. Adapter calls hold only the adapter's own serialisation lock (`io`),
//! never the state lock; the lock order is `io` then `state`.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::clock::{now_millis, Millis};
use crate::error::{Error, Result};
use crate::lock::Mutex;
use crate::meta::{Meta, MetaEntry, META_KEY, ROOT_KEY};
use crate::partition::{hash_bytes, Partition};
use crate::persistence::{Persistence, Store};

/// The adapter behind a tier.
pub(crate) enum Io {
    Store(Box<dyn Store>),
    Blobs(Box<dyn Persistence>),
}

impl Io {
    pub fn blobs(&mut self) -> &mut dyn Persistence {
        match self {
            Io::Store(s) => {
                let s: &mut dyn Persistence = s.as_mut();
                s
            }
            Io::Blobs(p) => p.as_mut(),
        }
    }
}

#[derive(Default)]
pub(crate) struct TierState {
    /// Entries per partition. For the store tier, entries of `stale` keys are out of date.
    pub meta: Meta,
    /// Whether `meta` was read from the adapter (blob tiers).
    pub loaded: bool,
    /// The root as last read from or written to the adapter.
    pub stored_root: Option<String>,
    /// Entries changed since the metadata was last stored.
    pub meta_changed: bool,
    /// Store tier: keys whose entry must be recomputed.
    pub stale: BTreeSet<String>,
    /// Store tier: keys written since their last sync to the tier below.
    pub unsynced: BTreeSet<String>,
    /// Store tier: keys the store holds (hydrated or written).
    pub present: HashSet<String>,
    /// Store tier: a write counter per key, the guard against concurrent change.
    pub generation: HashMap<String, u64>,
}

impl TierState {
    /// Store tier: records a write to `key` (new generation, stale entry, to sync).
    pub fn mark_written(&mut self, key: &str) {
        match self.generation.get_mut(key) {
            Some(g) => *g += 1,
            None => {
                self.generation.insert(key.to_string(), 1);
            }
        }
        if !self.stale.contains(key) {
            self.stale.insert(key.to_string());
        }
        if !self.unsynced.contains(key) {
            self.unsynced.insert(key.to_string());
        }
        if !self.present.contains(key) {
            self.present.insert(key.to_string());
        }
    }
}

/// A partition as an adapter returned it.
pub(crate) enum Raw {
    /// From a store: typed, with the key's generation when read.
    Typed(Partition, u64),
    /// From a blob tier.
    Bytes(Vec<u8>),
}

impl Raw {
    /// Size in bytes, roughly (what parsing it costs).
    pub fn weight(&self) -> usize {
        match self {
            Raw::Typed(p, _) => p.names.values().map(|ids| ids.len() * 256).sum(),
            Raw::Bytes(b) => b.len(),
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
                })
            }
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
                })
            }
        }
    }
}

/// A partition read from a tier, with what is needed to write back safely.
pub(crate) struct Loaded {
    pub partition: Partition,
    /// Hash of the canonical bytes.
    pub hash: String,
    /// The canonical bytes.
    pub bytes: Vec<u8>,
    /// Store tier: the key's generation when read.
    pub generation: u64,
    /// The stored bytes are not canonical (a host wrote them): write them again.
    pub rewrite: bool,
}

impl Loaded {
    /// The metadata entry describing this partition.
    pub fn entry(&self, now: Millis) -> MetaEntry {
        MetaEntry {
            hash: self.hash.clone(),
            updated_at: now,
            entities: self.partition.counts(),
        }
    }
}

pub(crate) struct Tier {
    pub label: &'static str,
    /// The store tier (typed, per-entity access) rather than a blob tier.
    is_store: bool,
    /// Other writers may change this tier (a shared cloud, or a tier synced standalone):
    /// its metadata is re-read on every sync.
    pub shared: bool,
    io: Mutex<Io>,
    pub state: Mutex<TierState>,
}

impl Tier {
    pub fn new(label: &'static str, io: Io, shared: bool) -> Tier {
        let is_store = matches!(io, Io::Store(_));
        Tier {
            label,
            is_store,
            shared,
            io: Mutex::new(io),
            state: Mutex::new(TierState {
                loaded: is_store,
                ..TierState::default()
            }),
        }
    }

    pub fn is_store(&self) -> bool {
        self.is_store
    }

    fn adapter_err(&self, key: &str) -> impl Fn(crate::persistence::AdapterError) -> Error + '_ {
        let key = key.to_string();
        move |e| Error::adapter(self.label, &key, e)
    }

    /// Runs `f` with the adapter, calls serialised.
    pub fn with_io<R>(&self, f: impl FnOnce(&mut Io) -> R) -> R {
        f(&mut self.io.lock())
    }

    pub fn load(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.with_io(|io| io.blobs().load(key))
            .map_err(self.adapter_err(key))
    }

    pub fn store(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.with_io(|io| io.blobs().store(key, bytes))
            .map_err(self.adapter_err(key))
    }

    /// The root of the tier as its adapter holds it now (re-read when shared).
    pub fn root(&self) -> Result<String> {
        if self.is_store() {
            self.refresh_store_entries()?;
            return Ok(self.state.lock().meta.root());
        }
        if !self.shared && self.state.lock().loaded {
            return Ok(self.state.lock().meta.root());
        }
        match self.load(ROOT_KEY)? {
            Some(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            None => {
                let meta = self.meta()?;
                Ok(meta.root())
            }
        }
    }

    /// A snapshot of the tier's metadata, read from the adapter when needed.
    pub fn meta(&self) -> Result<Meta> {
        if self.is_store() {
            self.refresh_store_entries()?;
            return Ok(self.state.lock().meta.clone());
        }
        if !self.shared && self.state.lock().loaded {
            return Ok(self.state.lock().meta.clone());
        }
        let (meta, rebuilt) = match self.load(META_KEY)? {
            // No metadata over existing partitions (it was lost or moved aside): rebuild.
            None if self.lists_partitions()? => {
                log::warn!(target: "datasync::tier", "{} metadata is missing; rebuilding it", self.label);
                (self.rebuild_meta()?, true)
            }
            None => (Meta::default(), false),
            Some(bytes) => match Meta::parse(&bytes) {
                // Two devices syncing a shared tier at once can leave one's root beside
                // the other's metadata; a device whose own root matches would then never
                // look again. Rewriting both makes every device compare afresh.
                Ok(meta)
                    if self.shared
                        && self
                            .load(ROOT_KEY)?
                            .is_some_and(|r| r != meta.root().as_bytes()) =>
                {
                    log::warn!(target: "datasync::tier", "{} root and metadata disagree; rewriting both", self.label);
                    (meta, true)
                }
                Ok(meta) => (meta, false),
                Err(why) => {
                    log::warn!(target: "datasync::tier", "{} metadata is damaged ({why}); rebuilding it", self.label);
                    (self.rebuild_meta()?, true)
                }
            },
        };
        let mut state = self.state.lock();
        // A rebuilt document is not what the adapter holds: store it at the next chance.
        state.stored_root = (!rebuilt).then(|| meta.root());
        state.meta = meta.clone();
        state.loaded = true;
        state.meta_changed = rebuilt;
        Ok(meta)
    }

    /// Whether the adapter lists any partition key (false when it cannot list).
    fn lists_partitions(&self) -> Result<bool> {
        let keys = self
            .with_io(|io| io.blobs().keys())
            .map_err(self.adapter_err(META_KEY))?;
        Ok(keys.is_some_and(|keys| keys.iter().any(|k| !k.starts_with('!'))))
    }

    /// Rebuilds metadata from the partitions the adapter lists.
    fn rebuild_meta(&self) -> Result<Meta> {
        let keys = self
            .with_io(|io| io.blobs().keys())
            .map_err(self.adapter_err(META_KEY))?
            .unwrap_or_default();
        let mut meta = Meta {
            updated_at: now_millis(),
            ..Meta::default()
        };
        for key in keys.iter().filter(|k| !k.starts_with('!')) {
            match self.load_partition(key, None) {
                Ok(Some(loaded)) => {
                    meta.entries
                        .insert(key.clone(), loaded.entry(meta.updated_at));
                }
                Ok(None) => {}
                Err(e) => log::error!(target: "datasync::tier", "while rebuilding metadata: {e}"),
            }
        }
        self.state.lock().meta_changed = true;
        Ok(meta)
    }

    /// Store tier: recompute the entries of keys written since they were last hashed.
    /// A key written again meanwhile stays stale; the next refresh takes it.
    pub fn refresh_store_entries(&self) -> Result<()> {
        let stale: Vec<String> = self.state.lock().stale.iter().cloned().collect();
        for key in &stale {
            if let Some(loaded) = self.load_partition(key, None)? {
                self.settle_entry(key, &loaded, now_millis());
            }
        }
        Ok(())
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
        let mut io = self.io.lock();
        match &mut *io {
            Io::Store(store) => {
                let partition = store.load_partition(key).map_err(self.adapter_err(key))?;
                let generation = self.state.lock().generation.get(key).copied().unwrap_or(0);
                Ok(partition.map(|p| Raw::Typed(p, generation)))
            }
            Io::Blobs(blobs) => Ok(blobs
                .load(key)
                .map_err(self.adapter_err(key))?
                .map(Raw::Bytes)),
        }
    }

    /// Writes a partition and records its entry. On the store tier the write happens
    /// only if the key's generation is still `guard` (no write since it was read);
    /// returns whether it was written.
    pub fn write_partition(
        &self,
        key: &str,
        loaded: &Loaded,
        now: Millis,
        guard: Option<u64>,
    ) -> Result<bool> {
        let entry = loaded.entry(now);
        let mut io = self.io.lock();
        match &mut *io {
            Io::Store(store) => {
                if let Some(guard) = guard {
                    if self.state.lock().generation.get(key).copied().unwrap_or(0) != guard {
                        return Ok(false);
                    }
                }
                store
                    .store_partition(key, &loaded.partition)
                    .map_err(self.adapter_err(key))?;
                let mut state = self.state.lock();
                *state.generation.entry(key.to_string()).or_insert(0) += 1;
                state.present.insert(key.to_string());
                state.meta.entries.insert(key.to_string(), entry);
                state.stale.remove(key);
            }
            Io::Blobs(blobs) => {
                blobs
                    .store(key, &loaded.bytes)
                    .map_err(self.adapter_err(key))?;
                drop(io);
                self.set_entry(key, entry);
            }
        }
        Ok(true)
    }

    /// Records an entry without writing the partition (metadata repair of a blob tier;
    /// the store tier uses [`Tier::settle_entry`]).
    pub fn set_entry(&self, key: &str, entry: MetaEntry) {
        let mut state = self.state.lock();
        state.meta.entries.insert(key.to_string(), entry);
        state.meta_changed = true;
    }

    /// The recorded entry of a key, `None` when it is stale (store tier: written since
    /// it was last hashed).
    pub fn fresh_entry(&self, key: &str) -> Option<MetaEntry> {
        let state = self.state.lock();
        if state.stale.contains(key) {
            return None;
        }
        state.meta.entries.get(key).cloned()
    }

    /// Store tier: records the entry of a partition just read, unless it was written
    /// since (then it stays stale).
    pub fn settle_entry(&self, key: &str, loaded: &Loaded, now: Millis) {
        let mut state = self.state.lock();
        if state.generation.get(key).copied().unwrap_or(0) == loaded.generation {
            state
                .meta
                .entries
                .insert(key.to_string(), loaded.entry(now));
            state.stale.remove(key);
        }
    }

    /// Forgets the entry of a key that holds no partition (metadata repair).
    pub fn remove_entry(&self, key: &str) {
        let mut state = self.state.lock();
        if state.meta.entries.remove(key).is_some() {
            state.meta_changed = true;
        }
    }

    /// The recorded entry of one key.
    pub fn entry(&self, key: &str) -> Option<MetaEntry> {
        self.state.lock().meta.entries.get(key).cloned()
    }

    /// Stores the metadata and its root if they changed (blob tiers only).
    pub fn persist_meta(&self, now: Millis) -> Result<()> {
        if self.is_store() {
            return Ok(());
        }
        let (bytes, root) = {
            let mut state = self.state.lock();
            if !state.meta_changed {
                return Ok(());
            }
            state.meta.updated_at = now;
            state.meta_changed = false;
            (state.meta.to_bytes(), state.meta.root())
        };
        let result = self
            .store(META_KEY, &bytes)
            .and_then(|_| self.store(ROOT_KEY, root.as_bytes()));
        let mut state = self.state.lock();
        match result {
            Ok(()) => state.stored_root = Some(root),
            Err(_) => state.meta_changed = true,
        }
        result
    }
}

/// What a tier holds once its instance is closed: every call fails.
struct Released;

impl Persistence for Released {
    fn load(&mut self, _key: &str) -> crate::persistence::AdapterResult<Option<Vec<u8>>> {
        Err("the instance is closed".into())
    }
    fn store(&mut self, _key: &str, _bytes: &[u8]) -> crate::persistence::AdapterResult<()> {
        Err("the instance is closed".into())
    }
    fn clear(&mut self, _key: &str) -> crate::persistence::AdapterResult<()> {
        Err("the instance is closed".into())
    }
}

impl Store for Released {
    fn get(
        &mut self,
        _key: &str,
        _name: &str,
        _id: &str,
    ) -> crate::persistence::AdapterResult<Option<crate::partition::Slot>> {
        Err("the instance is closed".into())
    }
    fn get_all(
        &mut self,
        _key: &str,
        _name: &str,
    ) -> crate::persistence::AdapterResult<Vec<crate::entity::Entity>> {
        Err("the instance is closed".into())
    }
    fn save(
        &mut self,
        _key: &str,
        _name: &str,
        _entity: &crate::entity::Entity,
    ) -> crate::persistence::AdapterResult<()> {
        Err("the instance is closed".into())
    }
    fn delete(
        &mut self,
        _key: &str,
        _name: &str,
        _id: &str,
        _at: Millis,
    ) -> crate::persistence::AdapterResult<()> {
        Err("the instance is closed".into())
    }
}

impl Tier {
    /// Drops the adapter (closing its files, releasing its locks, running a host's
    /// destroy callback) once the instance is closed; later calls fail. The adapter is
    /// dropped after the tier's lock is released.
    pub fn release(&self) {
        let old = {
            let mut io = self.io.lock();
            let closed = match &*io {
                Io::Store(_) => Io::Store(Box::new(Released)),
                Io::Blobs(_) => Io::Blobs(Box::new(Released)),
            };
            std::mem::replace(&mut *io, closed)
        };
        drop(old);
    }

    /// Store tier: the write counter of a key (0 for a key never written).
    pub fn generation(&self, key: &str) -> u64 {
        self.state.lock().generation.get(key).copied().unwrap_or(0)
    }
}
