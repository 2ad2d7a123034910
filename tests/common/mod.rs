//! Helpers shared by the integration tests: instrumented adapters and blob checks.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datasync::meta::{Meta, MetaEntry, META_KEY, ROOT_KEY};
use datasync::partition::hash_bytes;
use datasync::{AdapterError, AdapterResult, Config, MemoryPersistence, Partition, Persistence};

/// A memory adapter that counts calls and can be told to fail or return garbage.
#[derive(Clone, Default)]
pub struct Probe {
    pub inner: MemoryPersistence,
    pub loads: Arc<Mutex<Vec<String>>>,
    pub stores: Arc<Mutex<Vec<String>>>,
    pub failing: Arc<AtomicBool>,
    pub garbage_for: Arc<Mutex<Option<String>>>,
    pub calls: Arc<AtomicU64>,
}

impl Probe {
    pub fn new() -> Probe {
        Probe::default()
    }

    /// Partition keys loaded since the last reset (metadata keys left out; in
    /// format 2, the partitions whose index or pieces were loaded).
    pub fn partition_loads(&self) -> Vec<String> {
        self.loads
            .lock()
            .unwrap()
            .iter()
            .filter_map(|k| {
                if let Some(p) = k.strip_prefix("!index:") {
                    return Some(p.to_string());
                }
                if let Some(rest) = k.strip_prefix("!piece:") {
                    return rest.rsplit_once(':').map(|(p, _)| p.to_string());
                }
                (!k.starts_with('!')).then(|| k.clone())
            })
            .collect()
    }

    pub fn reset(&self) {
        self.loads.lock().unwrap().clear();
        self.stores.lock().unwrap().clear();
    }

    pub fn fail(&self, yes: bool) {
        self.failing.store(yes, Ordering::SeqCst);
    }
}

impl Persistence for Probe {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(AdapterError::new("unreachable"));
        }
        self.loads.lock().unwrap().push(key.to_string());
        if self.garbage_for.lock().unwrap().as_deref() == Some(key) {
            return Ok(Some(b"\x00garbage{".to_vec()));
        }
        self.inner.load(key)
    }

    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(AdapterError::new("unreachable"));
        }
        self.stores.lock().unwrap().push(key.to_string());
        self.inner.store(key, bytes)
    }

    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        self.inner.clear(key)
    }

    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        self.inner.keys()
    }
}

/// A config that syncs only when asked (no timers), for deterministic tests.
pub fn manual(prefix: &str) -> Config {
    Config::new(prefix)
        .cloud_sync_interval(Duration::from_secs(3600))
        .store_sync_delay(Duration::from_secs(3600))
        .sync_on_open(false)
}

static TICK: AtomicI64 = AtomicI64::new(1_767_225_600_000);

/// A clock source where every reading is one millisecond after the previous one,
/// process-wide: stamps follow the order operations happen in, exactly.
pub fn ticking() -> i64 {
    TICK.fetch_add(1, Ordering::SeqCst)
}

/// Whether configurations default to format 2 (`DATASYNC_DEFAULT_FORMAT`).
pub fn format2() -> bool {
    Config::new("x").format == 2
}

/// The partition keys a blob tier holds, in either format.
pub fn partition_keys(tier: &MemoryPersistence) -> Vec<String> {
    let blobs = tier.snapshot();
    if blobs.contains_key(datasync::pieces::FORMAT_KEY) {
        return blobs
            .keys()
            .filter_map(|k| k.strip_prefix("!index:"))
            .map(str::to_string)
            .collect();
    }
    blobs.into_keys().filter(|k| !k.starts_with('!')).collect()
}

/// The key to damage to damage partition `key` in the default format: the
/// partition's document in format 1, its index in format 2.
pub fn data_key(key: &str) -> String {
    if format2() {
        format!("!index:{key}")
    } else {
        key.to_string()
    }
}

/// Whether a blob tier holds partition `key`, in either format.
pub fn holds(tier: &MemoryPersistence, key: &str) -> bool {
    partition_keys(tier).iter().any(|k| k == key)
}

/// The canonical text of partition `key` in a blob tier, in either format (empty
/// when it lacks it).
pub fn partition_text(tier: &MemoryPersistence, key: &str) -> String {
    let blobs = tier.snapshot();
    if blobs.contains_key(datasync::pieces::FORMAT_KEY) {
        let mut adapter = tier.clone();
        return datasync::pieces::PieceTier::new(&mut adapter, false, "test")
            .read(key, &datasync::LastWriterWins)
            .expect("pieces read")
            .map(|r| String::from_utf8(r.partition.to_canonical()).unwrap())
            .unwrap_or_default();
    }
    blobs
        .get(key)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// The key of the document that describes a blob tier's partitions: format 1's
/// metadata, or the top of format 2's tree (`datasync::summary`).
pub fn meta_key(tier: &MemoryPersistence) -> &'static str {
    if in_pieces(tier) {
        ROOT_KEY
    } else {
        META_KEY
    }
}

/// Whether a blob tier keeps its partitions in pieces (format 2).
pub fn in_pieces(tier: &MemoryPersistence) -> bool {
    tier.snapshot().contains_key(datasync::pieces::FORMAT_KEY)
}

/// Reads every partition of a blob tier in pieces, each piece checked, and compares
/// what it holds with the stored metadata and root.
fn audit_pieces(tier: &MemoryPersistence) -> BTreeMap<String, Partition> {
    let blobs = tier.snapshot();
    let meta = tree_of(&blobs);
    let mut adapter = tier.clone();
    let mut partitions = BTreeMap::new();
    for key in blobs.keys().filter_map(|k| k.strip_prefix("!index:")) {
        let read = datasync::pieces::PieceTier::new(&mut adapter, false, "audit")
            .read(key, &datasync::LastWriterWins)
            .expect("pieces read")
            .expect("an index");
        let entry = meta
            .entries
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from metadata"));
        assert_eq!(
            entry.hash,
            read.vector.summary(),
            "{key}: the entry does not record the writes the partition holds"
        );
        assert_eq!(
            entry.entities,
            read.partition.counts(),
            "{key}: counts differ from metadata"
        );
        partitions.insert(key.to_string(), read.partition);
    }
    assert_eq!(
        meta.entries.len(),
        partitions.len(),
        "metadata lists partitions that do not exist"
    );
    partitions
}

/// The metadata tree of a tier in format 2, each document checked against its
/// parent (empty when it holds none).
fn tree_of(blobs: &BTreeMap<String, Vec<u8>>) -> Meta {
    Meta::read_tree(|k| blobs.get(k).cloned())
        .expect("the metadata tree reads")
        .unwrap_or_default()
}

/// Recomputes every hash and count of a blob tier from its partitions and compares
/// them with its stored metadata and root. Returns the partitions.
pub fn audit_blobs(tier: &MemoryPersistence) -> BTreeMap<String, Partition> {
    if in_pieces(tier) {
        return audit_pieces(tier);
    }
    let blobs = tier.snapshot();
    let meta = blobs
        .get(META_KEY)
        .map(|b| Meta::parse(b).expect("metadata parses"))
        .unwrap_or_default();
    let mut partitions = BTreeMap::new();
    for (key, bytes) in &blobs {
        if key.starts_with('!') {
            continue;
        }
        let p = Partition::parse(bytes, false).expect("partition parses");
        assert_eq!(p.to_canonical(), *bytes, "{key} is not canonical");
        let entry = meta
            .entries
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from metadata"));
        assert_eq!(
            entry.hash,
            hash_bytes(bytes),
            "{key}: hash differs from metadata"
        );
        assert_eq!(
            entry.entities,
            p.counts(),
            "{key}: counts differ from metadata"
        );
        partitions.insert(key.clone(), p);
    }
    assert_eq!(
        meta.entries.len(),
        partitions.len(),
        "metadata lists partitions that do not exist"
    );
    if let Some(root) = blobs.get(ROOT_KEY) {
        assert_eq!(
            String::from_utf8_lossy(root),
            meta.root(),
            "stored root differs"
        );
    }
    partitions
}

/// The root stored in a blob tier.
pub fn stored_root(tier: &MemoryPersistence) -> String {
    let blobs = tier.snapshot();
    if in_pieces(tier) {
        return tree_of(&blobs).tree_root();
    }
    blobs
        .get(META_KEY)
        .map(|b| Meta::parse(b).expect("metadata parses").root())
        .unwrap_or_else(|| Meta::default().root())
}

/// Writes a partition and correct metadata into a blob tier, as if a sync had (in
/// the format the default configuration uses: pieces where it is 2).
pub fn put_partition(tier: &MemoryPersistence, key: &str, partition: &Partition) {
    put_partition_in(tier, key, partition, Config::new("x").format)
}

/// [`put_partition`] in the given format.
pub fn put_partition_in(tier: &MemoryPersistence, key: &str, partition: &Partition, format: u32) {
    let blobs = tier.snapshot();
    let bytes = partition.to_canonical();
    if format == 2 {
        let mut meta = tree_of(&blobs);
        tier.poke(datasync::pieces::FORMAT_KEY, b"{\"v\":2}");
        let mut adapter = tier.clone();
        let mut pieces = datasync::pieces::PieceTier::new(&mut adapter, false, "put");
        let writer = format!("put-{}", &hash_bytes(&bytes)[..12]);
        pieces
            .append(key, &writer, 0, partition.clone())
            .expect("append");
        let read = pieces
            .read(key, &datasync::LastWriterWins)
            .expect("read")
            .expect("index");
        let mut entry = MetaEntry::describe(&read.partition, &bytes, 0);
        entry.hash = read.vector.summary();
        meta.entries.insert(key.to_string(), entry);
        for (key, bytes) in datasync::summary::Tree::of(&meta).documents() {
            tier.poke(&key, &bytes);
        }
        return;
    }
    let mut meta = blobs
        .get(META_KEY)
        .map(|b| Meta::parse(b).unwrap())
        .unwrap_or_default();
    meta.entries
        .insert(key.to_string(), MetaEntry::describe(partition, &bytes, 0));
    tier.poke(key, &bytes);
    tier.poke(META_KEY, &meta.to_bytes());
    tier.poke(ROOT_KEY, meta.root().as_bytes());
}

/// A [`MemoryStore`](datasync::MemoryStore) that a test can look into while an
/// instance uses it: clones share the same store.
#[derive(Clone, Default)]
pub struct SharedStore(pub Arc<Mutex<datasync::MemoryStore>>);

impl SharedStore {
    pub fn new() -> SharedStore {
        SharedStore::default()
    }

    /// The slot (entity or tombstone) of one id, as the store holds it now.
    pub fn slot(&self, key: &str, name: &str, id: &str) -> Option<datasync::Slot> {
        use datasync::Store;
        self.0
            .lock()
            .unwrap()
            .get(key, name, id)
            .expect("the memory store cannot fail")
    }
}

impl Persistence for SharedStore {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        self.0.lock().unwrap().load(key)
    }

    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        self.0.lock().unwrap().store(key, bytes)
    }

    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        self.0.lock().unwrap().clear(key)
    }

    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        self.0.lock().unwrap().keys()
    }
}

impl datasync::Store for SharedStore {
    fn get(&mut self, key: &str, name: &str, id: &str) -> AdapterResult<Option<datasync::Slot>> {
        self.0.lock().unwrap().get(key, name, id)
    }

    fn get_all(&mut self, key: &str, name: &str) -> AdapterResult<Vec<datasync::Entity>> {
        self.0.lock().unwrap().get_all(key, name)
    }

    fn save(&mut self, key: &str, name: &str, entity: &datasync::Entity) -> AdapterResult<()> {
        self.0.lock().unwrap().save(key, name, entity)
    }

    fn delete(&mut self, key: &str, name: &str, id: &str, deleted_at: i64) -> AdapterResult<()> {
        self.0.lock().unwrap().delete(key, name, id, deleted_at)
    }

    fn load_partition(&mut self, key: &str) -> AdapterResult<Option<Partition>> {
        self.0.lock().unwrap().load_partition(key)
    }

    fn store_partition(&mut self, key: &str, partition: &Partition) -> AdapterResult<()> {
        self.0.lock().unwrap().store_partition(key, partition)
    }
}

/// A memory adapter that counts the bytes and calls it is handed, and can be given a
/// capacity (stores that would exceed it fail, as a full disk does).
#[derive(Clone, Default)]
pub struct Meter {
    pub inner: MemoryPersistence,
    pub loaded: Arc<AtomicU64>,
    pub stored: Arc<AtomicU64>,
    pub piece_loads: Arc<AtomicU64>,
    pub capacity: Arc<AtomicU64>,
}

impl Meter {
    pub fn reset(&self) {
        self.loaded.store(0, Ordering::SeqCst);
        self.stored.store(0, Ordering::SeqCst);
        self.piece_loads.store(0, Ordering::SeqCst);
    }
    pub fn loaded(&self) -> u64 {
        self.loaded.load(Ordering::SeqCst)
    }
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::SeqCst)
    }
    /// The size of the largest document it holds (a partition's base piece).
    pub fn largest(&self) -> u64 {
        self.inner
            .snapshot()
            .values()
            .map(|v| v.len() as u64)
            .max()
            .unwrap_or(0)
    }
    pub fn used(&self) -> u64 {
        self.inner.snapshot().values().map(|v| v.len() as u64).sum()
    }
}

impl Persistence for Meter {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        let got = self.inner.load(key)?;
        if key.starts_with("!piece:") {
            self.piece_loads.fetch_add(1, Ordering::SeqCst);
        }
        let n = got.as_ref().map_or(0, |b| b.len() as u64);
        self.loaded.fetch_add(n, Ordering::SeqCst);
        Ok(got)
    }
    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        let capacity = self.capacity.load(Ordering::SeqCst);
        if capacity > 0 {
            let old = self.inner.load(key)?.map_or(0, |b| b.len() as u64);
            if self.used() - old + bytes.len() as u64 > capacity {
                return Err(AdapterError::new("no space left on device"));
            }
        }
        self.stored.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        self.inner.store(key, bytes)
    }
    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        self.inner.clear(key)
    }
    fn store_if(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        bytes: &[u8],
    ) -> AdapterResult<Option<bool>> {
        if self.inner.load(key)?.as_deref() != expected {
            return Ok(Some(false));
        }
        self.store(key, bytes).map(|_| Some(true))
    }
    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        self.inner.keys()
    }
}
