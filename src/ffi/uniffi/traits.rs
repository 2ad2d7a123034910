//! What hosts supply, as foreign traits, and the bridges that make them core
//! adapters. Every method returns a `Result` whose error absorbs unexpected foreign
//! exceptions, so a callback that raises is an error value, never a panic.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::error::{DataSyncError, FfiResult};
use super::types::{CandidateKeys, LogLevel, SlotState, Status};
use crate::clock::format_millis;
use crate::error::{Error, Result};
use crate::ffi::shared::{active_answer, conflict_id, deleted_answer, resolved_or_last_writer};
use crate::partition::Slot;
use crate::persistence::{AdapterError, AdapterResult, Persistence};
use crate::strategy::{Candidates, KeyStrategy};
use crate::sync::ConflictResolver;

/// Bulk blob storage supplied by the host (a local database, a cloud bucket...).
///
/// The library never calls one adapter from two threads at once and never from
/// inside one of its own locks' critical sections that the adapter could re-enter;
/// an adapter must not call back into the library from inside a call.
#[uniffi::export(with_foreign)]
pub trait HostPersistence: Send + Sync {
    /// The bytes stored under `key`, or `None` when there are none (not an error).
    fn load(&self, key: String) -> FfiResult<Option<Vec<u8>>>;
    /// Replaces the bytes under `key`.
    fn store(&self, key: String, bytes: Vec<u8>) -> FfiResult<()>;
    /// Removes `key`; removing an absent key is not an error.
    fn clear(&self, key: String) -> FfiResult<()>;
    /// Every stored key, or `None` if the adapter cannot list them.
    fn keys(&self) -> FfiResult<Option<Vec<String>>>;
    /// The conditional write: stores `bytes` under `key` only if the key holds
    /// exactly `expected` now (`None`: only if it is absent), atomically against every
    /// other writer. Returns `true` when stored, `false` when the key held something
    /// else (nothing written), or `None` when the medium cannot do it: then the
    /// library reads the key just before writing it, and two devices syncing a
    /// shared tier at the same moment can overwrite each other's update until a later
    /// sync repairs it. A tier shared by several devices should offer it.
    fn store_if(
        &self,
        key: String,
        expected: Option<Vec<u8>>,
        bytes: Vec<u8>,
    ) -> FfiResult<Option<bool>>;
}

/// Maps entities to logical keys and queries to partition keys.
#[uniffi::export(with_foreign)]
pub trait HostKeyStrategy: Send + Sync {
    /// The logical key (partition, without prefix) of an entity about to be saved.
    /// Must be pure: the same entity always gives the same key.
    fn logical_key(&self, entity_name: String, entity_json: String) -> FfiResult<String>;
    /// The partitions a query over `entity_name` reads; only keys the caller may
    /// read (this is the authorisation hook). `filter_json` is the query's filter.
    fn candidate_keys(
        &self,
        prefix: String,
        entity_name: String,
        filter_json: Option<String>,
    ) -> FfiResult<CandidateKeys>;
}

/// Chooses between two different states of the same entity. Must be deterministic
/// and symmetric (`resolve(a, b) == resolve(b, a)`), or tiers diverge. When it
/// fails or returns something unusable, last-writer-wins decides.
#[uniffi::export(with_foreign)]
pub trait HostConflictResolver: Send + Sync {
    fn resolve(&self, entity_name: String, a: SlotState, b: SlotState) -> FfiResult<SlotState>;
}

/// Receives one entity's value: the current one first, then each change (`None`
/// when absent or deleted). Called on the dispatcher thread.
#[uniffi::export(with_foreign)]
pub trait EntityObserver: Send + Sync {
    fn on_change(&self, entity_json: Option<String>) -> FfiResult<()>;
}

/// Receives, once per dispatcher round, what the entity observers registered with
/// [`super::objects::Repository::observe_batched`] got in that round, as one JSON
/// array of `[handle, entity or null]` pairs in delivery order. One call crosses the
/// binding per round instead of one per change; the host calls its own callbacks
/// from it. Called on the dispatcher thread.
#[uniffi::export(with_foreign)]
pub trait EntityBatchObserver: Send + Sync {
    fn on_entities(&self, batch_json: String) -> FfiResult<()>;
}

/// Receives a query's full result list, as one JSON array: first the current one,
/// then after changes (bursts coalesced). Called on the dispatcher thread. One string
/// crosses the binding instead of one per entity, and parses in one call.
#[uniffi::export(with_foreign)]
pub trait QueryObserver: Send + Sync {
    fn on_results(&self, entities_json: String) -> FfiResult<()>;
}

/// Receives the instance's sync status: the current one first, then the new one
/// after every chain sync (success or failure). Called on the dispatcher thread.
#[uniffi::export(with_foreign)]
pub trait StatusObserver: Send + Sync {
    fn on_status(&self, status: Status) -> FfiResult<()>;
}

/// Receives the library's log records. Called on whichever thread logs; must not
/// call back into the library.
#[uniffi::export(with_foreign)]
pub trait HostLogger: Send + Sync {
    fn log(&self, level: LogLevel, target: String, text: String) -> FfiResult<()>;
}

/// A [`HostPersistence`] as a core [`Persistence`].
pub(crate) struct PersistenceBridge(pub Arc<dyn HostPersistence>);

fn adapter_error(e: DataSyncError) -> AdapterError {
    AdapterError::new(e.host_reason())
}

impl Persistence for PersistenceBridge {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        self.0.load(key.to_string()).map_err(adapter_error)
    }

    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        self.0
            .store(key.to_string(), bytes.to_vec())
            .map_err(adapter_error)
    }

    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        self.0.clear(key.to_string()).map_err(adapter_error)
    }

    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        self.0.keys().map_err(adapter_error)
    }

    fn store_if(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        bytes: &[u8],
    ) -> AdapterResult<Option<bool>> {
        self.0
            .store_if(
                key.to_string(),
                expected.map(<[u8]>::to_vec),
                bytes.to_vec(),
            )
            .map_err(adapter_error)
    }
}

/// A [`HostKeyStrategy`] as a core [`KeyStrategy`]; the separator and id length are
/// fixed when the instance opens, so ids parse without calling the host.
pub(crate) struct StrategyBridge {
    pub host: Arc<dyn HostKeyStrategy>,
    pub separator: char,
    pub id_length: usize,
}

impl KeyStrategy for StrategyBridge {
    fn separator(&self) -> char {
        self.separator
    }

    fn id_length(&self) -> usize {
        self.id_length
    }

    fn logical_key(&self, entity_name: &str, entity: &Map<String, Value>) -> Result<String> {
        let json = serde_json::to_string(entity)?;
        self.host
            .logical_key(entity_name.to_string(), json)
            .map_err(Error::from)
    }

    fn candidate_keys(
        &self,
        prefix: &str,
        entity_name: &str,
        filter: Option<&Value>,
    ) -> Result<Candidates> {
        let filter = filter.map(Value::to_string);
        Ok(self
            .host
            .candidate_keys(prefix.to_string(), entity_name.to_string(), filter)?
            .into())
    }
}

/// A [`HostConflictResolver`] as a core [`ConflictResolver`].
pub(crate) struct ResolverBridge(pub Arc<dyn HostConflictResolver>);

fn slot_state(slot: &Slot) -> SlotState {
    match slot {
        Slot::Active(e) => SlotState::Active {
            entity_json: e.json().to_string(),
        },
        Slot::Deleted(at) => SlotState::Deleted {
            deleted_at: format_millis(*at),
        },
    }
}

impl ConflictResolver for ResolverBridge {
    fn resolve(&self, entity_name: &str, a: &Slot, b: &Slot) -> Slot {
        let answer = match self
            .0
            .resolve(entity_name.to_string(), slot_state(a), slot_state(b))
        {
            Err(e) => Err(e.host_reason()),
            Ok(SlotState::Deleted { deleted_at }) => deleted_answer(&deleted_at),
            Ok(SlotState::Active { entity_json }) => serde_json::from_str(&entity_json)
                .map_err(|e| format!("the answer is not JSON: {e}"))
                .and_then(|entity| {
                    active_answer(entity_name, conflict_id(a, b).as_deref(), entity)
                }),
        };
        resolved_or_last_writer(entity_name, a, b, answer)
    }
}

/// Collects every log record of the library to a host logger until removed.
#[derive(uniffi::Object)]
pub struct LoggerRegistration {
    id: crate::lock::Mutex<Option<u64>>,
}

#[uniffi::export]
impl LoggerRegistration {
    /// Stops forwarding records to this logger. Idempotent.
    pub fn remove(&self) {
        let id = self.id.lock().take();
        if let Some(id) = id {
            crate::ffi::log_bridge::remove_sink(id);
        }
    }
}

impl Drop for LoggerRegistration {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Installs a logger for records at `max_level` and above; keep the returned
/// registration (dropping it, or calling `remove`, uninstalls the logger).
#[uniffi::export]
pub fn add_logger(logger: Arc<dyn HostLogger>, max_level: LogLevel) -> Arc<LoggerRegistration> {
    let floor = log::LevelFilter::from(max_level);
    let sink: crate::ffi::log_bridge::Sink =
        Arc::new(move |level: log::Level, target: &str, text: &str| {
            if level <= floor {
                // A logger that fails has nowhere to report it.
                let _ = logger.log(level.into(), target.to_string(), text.to_string());
            }
        });
    let id = crate::ffi::log_bridge::add_sink(sink, floor);
    Arc::new(LoggerRegistration {
        id: crate::lock::Mutex::new(Some(id)),
    })
}
