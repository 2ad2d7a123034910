//! The traits tiers are made of. Hosts implement them (directly in Rust, through
//! vtables in C, or as foreign traits in Python, Kotlin and Swift).
//!
//! The library never calls one adapter from two threads at once and never hands it
//! data it may mutate, so an adapter need not be thread-safe. An adapter must not
//! call back into the library from inside a call.

use std::fmt;

use crate::entity::Entity;
use crate::partition::{Partition, Slot};

/// A failure reported by an adapter: a message the library wraps with tier and key.
///
/// Most failures make the tier unreachable for this sync (the instance goes offline
/// and retries with backoff). A [refusal](AdapterError::refused) is narrower: the
/// medium will not let this device touch one key, and the sync goes on without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterError {
    message: String,
    refused: bool,
}

impl AdapterError {
    /// A failure of the medium (unreachable, timed out, broken).
    pub fn new(message: impl Into<String>) -> AdapterError {
        AdapterError {
            message: message.into(),
            refused: false,
        }
    }

    /// The medium refuses this key to this device (e.g. a server's 403 for a
    /// partition outside the device's token): the key is left out of the sync, the
    /// other keys are synced, and the tier stays online.
    pub fn refused(message: impl Into<String>) -> AdapterError {
        AdapterError {
            message: message.into(),
            refused: true,
        }
    }

    /// Whether this is a refusal of one key rather than a failure of the medium.
    pub fn is_refused(&self) -> bool {
        self.refused
    }

    /// What the adapter said.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for AdapterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AdapterError {}

impl From<std::io::Error> for AdapterError {
    fn from(e: std::io::Error) -> Self {
        AdapterError::new(e.to_string())
    }
}

impl From<String> for AdapterError {
    fn from(s: String) -> Self {
        AdapterError::new(s)
    }
}

impl From<&str> for AdapterError {
    fn from(s: &str) -> Self {
        AdapterError::new(s.to_string())
    }
}

/// Result of an adapter call.
pub type AdapterResult<T> = Result<T, AdapterError>;

/// Bulk blob storage: one byte string per key.
pub trait Persistence: Send {
    /// The bytes stored under `key`; `Ok(None)` when there are none (never an error).
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>>;
    /// Replaces the bytes under `key`, atomically per key where the medium allows.
    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()>;
    /// Removes `key`; removing an absent key is not an error.
    fn clear(&mut self, key: &str) -> AdapterResult<()>;
    /// Every stored key, if the adapter can list them (used to rebuild metadata).
    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        Ok(None)
    }
    /// Conditional write (store-if-unchanged): stores `bytes` under `key` only if the
    /// key holds exactly `expected` now (`None`: only if the key is absent), as one
    /// atomic step against every other writer of the medium. Returns `Some(true)` when
    /// stored, `Some(false)` when the key held something else (nothing is written).
    ///
    /// Optional. The default, `Ok(None)`, says the adapter does not offer it; the
    /// library then reads the key just before writing it, writes unconditionally and
    /// reads it back a moment later, which still leaves a short
    /// window in which two writers of a shared tier can overwrite each other's update
    /// (it is repaired by a later sync; see the README's "Shared tiers"). A tier
    /// shared by several devices should offer it.
    fn store_if(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        bytes: &[u8],
    ) -> AdapterResult<Option<bool>> {
        let _ = (key, expected, bytes);
        Ok(None)
    }
    /// The library has just stored the metadata that describes every partition it
    /// wrote through this adapter before, and counts the writes since the last
    /// commit as durable once this returns. An adapter may hold its writes until
    /// then and make them durable together (the directory tier appends them to its
    /// journal with one fdatasync), as long as its loads see them at once; one whose
    /// every store is durable on return has nothing to do (the default).
    fn commit(&mut self) -> AdapterResult<()> {
        Ok(())
    }
}

/// How long a write without the conditional write waits before it reads its key
/// back (see [`write_over`]).
pub(crate) const BLIND_WRITE_SETTLE: std::time::Duration = std::time::Duration::from_millis(1);

/// Writes `bytes` under `key` of a shared tier only over `expected` (`None`:
/// absent): by [`Persistence::store_if`] where the adapter offers it, else by
/// reading the key just before writing it, and reading it back a moment after.
/// `false`: another writer's bytes are there (before the write, or over it since),
/// and the caller merges with them and writes again. The read back narrows, and does
/// not close, the window in which two unconditional writers can overwrite each
/// other: a writer paused between its read and its write for longer than the
/// settle time can still overwrite an update unseen; that update's writer puts it
/// back at its next sync.
pub(crate) fn write_over(
    blobs: &mut dyn Persistence,
    key: &str,
    expected: Option<&[u8]>,
    bytes: &[u8],
) -> AdapterResult<bool> {
    if let Some(done) = blobs.store_if(key, expected, bytes)? {
        return Ok(done);
    }
    if blobs.load(key)?.as_deref() != expected {
        return Ok(false);
    }
    blobs.store(key, bytes)?;
    std::thread::sleep(BLIND_WRITE_SETTLE);
    Ok(blobs.load(key)?.as_deref() == Some(bytes))
}

/// The fast primary tier: blobs plus per-entity access.
pub trait Store: Persistence {
    /// One entity's slot (active or tombstone) in partition `key`.
    fn get(&mut self, key: &str, name: &str, id: &str) -> AdapterResult<Option<Slot>>;
    /// Every active entity of `name` in partition `key`, in id order.
    fn get_all(&mut self, key: &str, name: &str) -> AdapterResult<Vec<Entity>>;
    /// Saves an entity (replacing it or its tombstone).
    fn save(&mut self, key: &str, name: &str, entity: &Entity) -> AdapterResult<()>;
    /// Replaces an entity (known or not) by a tombstone.
    fn delete(
        &mut self,
        key: &str,
        name: &str,
        id: &str,
        deleted_at: crate::clock::Millis,
    ) -> AdapterResult<()>;

    /// The whole partition, typed. The default parses `load`'s bytes.
    fn load_partition(&mut self, key: &str) -> AdapterResult<Option<Partition>> {
        match self.load(key)? {
            None => Ok(None),
            Some(bytes) => Partition::parse(&bytes, false)
                .map(Some)
                .map_err(AdapterError::new),
        }
    }

    /// Replaces the whole partition. The default stores its canonical bytes.
    fn store_partition(&mut self, key: &str, partition: &Partition) -> AdapterResult<()> {
        self.store(key, &partition.to_canonical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Blobs without the conditional write, where another writer's bytes may land
    /// right after one of ours.
    #[derive(Default)]
    struct Blind {
        blobs: HashMap<String, Vec<u8>>,
        overwrite_with: Option<Vec<u8>>,
    }

    impl Persistence for Blind {
        fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
            Ok(self.blobs.get(key).cloned())
        }
        fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
            let bytes = self.overwrite_with.take().unwrap_or_else(|| bytes.to_vec());
            self.blobs.insert(key.to_string(), bytes);
            Ok(())
        }
        fn clear(&mut self, key: &str) -> AdapterResult<()> {
            self.blobs.remove(key);
            Ok(())
        }
    }

    #[test]
    fn a_write_without_the_conditional_write_reads_its_key_back() {
        let mut blobs = Blind::default();
        assert!(write_over(&mut blobs, "k", None, b"one").unwrap());
        // Not over what it read: nothing is written.
        assert!(!write_over(&mut blobs, "k", None, b"two").unwrap());
        assert_eq!(blobs.load("k").unwrap().as_deref(), Some(&b"one"[..]));
        // Another writer's bytes landed over ours: the caller is told to merge.
        blobs.overwrite_with = Some(b"theirs".to_vec());
        assert!(!write_over(&mut blobs, "k", Some(b"one"), b"mine").unwrap());
        assert!(write_over(&mut blobs, "k", Some(b"theirs"), b"both").unwrap());
        assert_eq!(blobs.load("k").unwrap().as_deref(), Some(&b"both"[..]));
    }
}
