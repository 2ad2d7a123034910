//! In-memory adapters: a typed store (the default store tier) and a blob map that
//! several instances can share (a cloud stand-in for tests and demos).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::clock::Millis;
use crate::entity::Entity;
use crate::lock::{Level, Mutex};
use crate::meta::is_reserved;
use crate::partition::{Partition, Slot};
use crate::persistence::{AdapterError, AdapterResult, Persistence, Store};

/// The default store tier: typed partitions in memory, per-entity access in O(log n).
#[derive(Debug, Default)]
pub struct MemoryStore {
    partitions: HashMap<String, Partition>,
    blobs: BTreeMap<String, Vec<u8>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl Persistence for MemoryStore {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        if let Some(p) = self.partitions.get(key) {
            return Ok(Some(p.to_canonical()));
        }
        Ok(self.blobs.get(key).cloned())
    }

    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        if is_reserved(key) {
            self.blobs.insert(key.to_string(), bytes.to_vec());
            return Ok(());
        }
        let partition = Partition::parse(bytes, false).map_err(AdapterError::new)?;
        self.partitions.insert(key.to_string(), partition);
        Ok(())
    }

    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        self.partitions.remove(key);
        self.blobs.remove(key);
        Ok(())
    }

    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        let mut keys: Vec<String> = self
            .partitions
            .keys()
            .chain(self.blobs.keys())
            .cloned()
            .collect();
        keys.sort();
        Ok(Some(keys))
    }
}

impl Store for MemoryStore {
    fn get(&mut self, key: &str, name: &str, id: &str) -> AdapterResult<Option<Slot>> {
        Ok(self
            .partitions
            .get(key)
            .and_then(|p| p.get(name, id))
            .cloned())
    }

    fn get_all(&mut self, key: &str, name: &str) -> AdapterResult<Vec<Entity>> {
        let Some(ids) = self.partitions.get(key).and_then(|p| p.names.get(name)) else {
            return Ok(Vec::new());
        };
        // The contract's id order (the map keeps insertion order, for O(1) saves):
        // queries break sort ties by it, so every device lists alike.
        let mut all: Vec<Entity> = ids.values().filter_map(|s| s.entity().cloned()).collect();
        all.sort_unstable_by(|a, b| a.id().cmp(b.id()));
        Ok(all)
    }

    fn save(&mut self, key: &str, name: &str, entity: &Entity) -> AdapterResult<()> {
        let partition = match self.partitions.get_mut(key) {
            Some(p) => p,
            None => self.partitions.entry(key.to_string()).or_default(),
        };
        partition.put(name, entity.id(), Slot::Active(entity.clone()));
        Ok(())
    }

    fn delete(&mut self, key: &str, name: &str, id: &str, deleted_at: Millis) -> AdapterResult<()> {
        let partition = self.partitions.entry(key.to_string()).or_default();
        partition.put(name, id, Slot::Deleted(deleted_at));
        Ok(())
    }

    fn load_partition(&mut self, key: &str) -> AdapterResult<Option<Partition>> {
        Ok(self.partitions.get(key).cloned())
    }

    fn store_partition(&mut self, key: &str, partition: &Partition) -> AdapterResult<()> {
        self.partitions.insert(key.to_string(), partition.clone());
        Ok(())
    }
}

/// Blobs in a shared map. Clones share the same map, so one value can serve as the
/// cloud of two instances, and a test can look inside.
#[derive(Debug, Clone)]
pub struct MemoryPersistence {
    blobs: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl Default for MemoryPersistence {
    fn default() -> Self {
        MemoryPersistence {
            blobs: Arc::new(Mutex::ordered(Level::AdapterInner, BTreeMap::new())),
        }
    }
}

impl MemoryPersistence {
    pub fn new() -> MemoryPersistence {
        MemoryPersistence::default()
    }

    /// A copy of every stored blob.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.blobs.lock().clone()
    }

    /// Overwrites one blob directly (tests: simulate corruption).
    pub fn poke(&self, key: &str, bytes: &[u8]) {
        self.blobs.lock().insert(key.to_string(), bytes.to_vec());
    }
}

impl Persistence for MemoryPersistence {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        Ok(self.blobs.lock().get(key).cloned())
    }

    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        self.blobs.lock().insert(key.to_string(), bytes.to_vec());
        Ok(())
    }

    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        self.blobs.lock().remove(key);
        Ok(())
    }

    fn store_if(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        bytes: &[u8],
    ) -> AdapterResult<Option<bool>> {
        let mut blobs = self.blobs.lock();
        if blobs.get(key).map(Vec::as_slice) != expected {
            return Ok(Some(false));
        }
        blobs.insert(key.to_string(), bytes.to_vec());
        Ok(Some(true))
    }

    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        Ok(Some(self.blobs.lock().keys().cloned().collect()))
    }
}
