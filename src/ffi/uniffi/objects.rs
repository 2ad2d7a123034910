//! The objects hosts hold: the instance, its repositories, subscriptions, and the
//! shareable in-memory tier. Each is a thin wrapper over the core API.

use std::sync::Arc;

use crate::lock::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::error::{DataSyncError, FfiResult};
use super::traits::{
    EntityBatchObserver, EntityObserver, HostConflictResolver, HostKeyStrategy, HostPersistence,
    PersistenceBridge, QueryObserver, ResolverBridge, StatusObserver, StrategyBridge,
};
use super::types::{DateGranularity, PendingWrites, Query, Status, SyncStats, TierKind};
use crate::error::Error;
use crate::ffi::shared::list_json;
use crate::persistence::Persistence;
use crate::query::QueryOptions;
use crate::strategy::KeyStrategy;

/// An in-memory blob tier that several instances may share (a stand-in cloud in
/// tests and demos). Cloning the handle shares the data.
#[derive(uniffi::Object)]
pub struct MemoryTier {
    inner: crate::MemoryPersistence,
}

#[uniffi::export]
impl MemoryTier {
    #[uniffi::constructor]
    pub fn new() -> Arc<Self> {
        Arc::new(MemoryTier {
            inner: crate::MemoryPersistence::new(),
        })
    }

    /// Every stored key (partition and metadata keys), sorted.
    pub fn keys(&self) -> Vec<String> {
        self.inner.snapshot().into_keys().collect()
    }

    /// The bytes under `key`, if any.
    pub fn read(&self, key: String) -> Option<Vec<u8>> {
        self.inner.snapshot().remove(&key)
    }

    /// Overwrites the bytes under `key` behind the library's back (for tests of
    /// corrupt or foreign data).
    pub fn overwrite(&self, key: String, bytes: Vec<u8>) {
        self.inner.poke(&key, &bytes);
    }
}

/// Where a tier below the in-memory store keeps its blobs.
#[derive(uniffi::Enum)]
pub enum TierSpec {
    /// A shareable in-memory tier.
    Memory { tier: Arc<MemoryTier> },
    /// The crash-safe directory store (the embedded default). `durable` syncs files
    /// to disk before a write counts as done.
    Directory { path: String, durable: bool },
    /// The sync server at `url` (`http://` or `https://`), authenticated by the
    /// bearer `token`. Timeouts in milliseconds; `None`: 5 s to connect, 30 s per read.
    Http {
        url: String,
        token: String,
        connect_timeout_ms: Option<u64>,
        read_timeout_ms: Option<u64>,
    },
    /// An adapter the host implements.
    Host { adapter: Arc<dyn HostPersistence> },
}

impl TierSpec {
    fn into_persistence(self) -> FfiResult<Box<dyn Persistence>> {
        Ok(match self {
            TierSpec::Memory { tier } => Box::new(tier.inner.clone()),
            TierSpec::Directory { path, durable } => Box::new(crate::DirPersistence::open_with(
                path,
                crate::DirOptions { durable },
            )?),
            TierSpec::Http {
                url,
                token,
                connect_timeout_ms,
                read_timeout_ms,
            } => {
                let defaults = crate::HttpOptions::default();
                let options = crate::HttpOptions {
                    connect_timeout: connect_timeout_ms
                        .map_or(defaults.connect_timeout, Duration::from_millis),
                    read_timeout: read_timeout_ms
                        .map_or(defaults.read_timeout, Duration::from_millis),
                };
                Box::new(crate::HttpPersistence::with_options(&url, &token, options)?)
            }
            TierSpec::Host { adapter } => Box::new(PersistenceBridge(adapter)),
        })
    }
}

/// How entities are grouped into partitions.
#[derive(uniffi::Enum)]
pub enum StrategySpec {
    /// One partition per entity name.
    Global,
    /// By the year, month or day of `createdAt`; a query filter
    /// `{"from": <instant>, "to": <instant>}` narrows the partitions read.
    Date { granularity: DateGranularity },
    /// By the value of one field (e.g. `region`); filter `{"values": [...]}`.
    Field { field: String },
    /// A strategy the host implements. `separator` is one character, not a letter,
    /// digit, `_` or `-`; `id_length` is 8..=64. Either one `None`: the library's
    /// default (that of the built-in strategies).
    Host {
        strategy: Arc<dyn HostKeyStrategy>,
        separator: Option<String>,
        id_length: Option<u32>,
    },
}

/// What an instance is opened from. Only `prefix` is required.
#[derive(uniffi::Record)]
pub struct OpenOptions {
    /// Prefix of every partition key.
    pub prefix: String,
    /// The durable tier on the device; none means store-only (or store + cloud).
    #[uniffi(default = None)]
    pub local: Option<TierSpec>,
    /// The remote tier, possibly shared with other instances.
    #[uniffi(default = None)]
    pub cloud: Option<TierSpec>,
    /// Global when absent.
    #[uniffi(default = None)]
    pub strategy: Option<StrategySpec>,
    /// Last writer wins (deletes win ties) when absent.
    #[uniffi(default = None)]
    pub resolver: Option<Arc<dyn HostConflictResolver>>,
    /// Delay after a write before the store syncs down (writes in between
    /// coalesce). `None` (every timing below too): the library's default, as
    /// [`default_options`] reports it.
    #[uniffi(default = None)]
    pub store_sync_delay_ms: Option<u64>,
    /// How often local and cloud sync.
    #[uniffi(default = None)]
    pub cloud_sync_interval_ms: Option<u64>,
    /// First retry delay after a cloud failure; doubles up to `retry_max_ms`.
    #[uniffi(default = None)]
    pub retry_base_ms: Option<u64>,
    #[uniffi(default = None)]
    pub retry_max_ms: Option<u64>,
    /// Stamps further ahead of now than this are not adopted into the instance clock.
    #[uniffi(default = None)]
    pub max_clock_skew_ms: Option<u64>,
    /// Sync local and cloud as soon as the instance opens.
    #[uniffi(default = None)]
    pub sync_on_open: Option<bool>,
    /// How the blob tiers keep partitions: 2 (the default), write-once pieces; 1,
    /// one document per partition, for a cloud shared with devices that do not
    /// read format 2 yet (README, "Format 2").
    #[uniffi(default = None)]
    pub format: Option<u32>,
    /// Bounded partitions: new entities go to sub-partitions of about this many
    /// entities each (1,000 by default); 0 keeps every partition the strategy gives
    /// whole (README, "Bounded partitions").
    #[uniffi(default = None)]
    pub partition_bound: Option<u64>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Options for `prefix` with every timing set to the library's default (read from
/// the core's configuration, the one place defaults are kept) and no tiers.
#[uniffi::export]
pub fn default_options(prefix: String) -> OpenOptions {
    let core = crate::Config::new(prefix.clone());
    OpenOptions {
        prefix,
        local: None,
        cloud: None,
        strategy: None,
        resolver: None,
        store_sync_delay_ms: Some(millis(core.store_sync_delay)),
        cloud_sync_interval_ms: Some(millis(core.cloud_sync_interval)),
        retry_base_ms: Some(millis(core.retry_base)),
        retry_max_ms: Some(millis(core.retry_max)),
        max_clock_skew_ms: Some(millis(core.max_clock_skew)),
        sync_on_open: Some(core.sync_on_open),
        format: Some(core.format),
        partition_bound: Some(core.partition_bound.unwrap_or(0)),
    }
}

impl OpenOptions {
    fn into_config(self) -> FfiResult<crate::Config> {
        let mut config = crate::Config::new(self.prefix);
        let ms = Duration::from_millis;
        if let Some(delay) = self.store_sync_delay_ms {
            config.store_sync_delay = ms(delay);
        }
        if let Some(interval) = self.cloud_sync_interval_ms {
            config.cloud_sync_interval = ms(interval);
        }
        if let Some(base) = self.retry_base_ms {
            config.retry_base = ms(base);
        }
        if let Some(max) = self.retry_max_ms {
            config.retry_max = ms(max);
        }
        if let Some(skew) = self.max_clock_skew_ms {
            config.max_clock_skew = ms(skew);
        }
        if let Some(yes) = self.sync_on_open {
            config.sync_on_open = yes;
        }
        if let Some(format) = self.format {
            config.format = format;
        }
        if let Some(bound) = self.partition_bound {
            config.partition_bound = (bound > 0).then_some(bound);
        }
        config.local = self.local.map(TierSpec::into_persistence).transpose()?;
        config.cloud = self.cloud.map(TierSpec::into_persistence).transpose()?;
        config.strategy = match self.strategy.unwrap_or(StrategySpec::Global) {
            StrategySpec::Global => Arc::new(crate::GlobalStrategy),
            StrategySpec::Date { granularity } => {
                Arc::new(crate::DateStrategy::new(granularity.into()))
            }
            StrategySpec::Field { field } => Arc::new(crate::FieldStrategy::new(field)),
            StrategySpec::Host {
                strategy,
                separator,
                id_length,
            } => {
                let defaults = crate::GlobalStrategy;
                let separator = match separator {
                    None => defaults.separator(),
                    Some(text) => {
                        let mut chars = text.chars();
                        let (Some(sep), None) = (chars.next(), chars.next()) else {
                            return Err(Error::InvalidConfig(format!(
                                "separator {text:?} must be one character"
                            ))
                            .into());
                        };
                        sep
                    }
                };
                Arc::new(StrategyBridge {
                    host: strategy,
                    separator,
                    id_length: id_length.map_or(defaults.id_length(), |n| n as usize),
                })
            }
        };
        if let Some(resolver) = self.resolver {
            config.resolver = Arc::new(ResolverBridge(resolver));
        }
        Ok(config)
    }
}

/// An open datasync instance. Every method may be called from any thread.
/// Shut it down with [`DataSync::shutdown`]; dropping the last reference does too.
#[derive(uniffi::Object)]
pub struct DataSync {
    core: crate::DataSync,
}

#[uniffi::export]
impl DataSync {
    /// Opens an instance: validates the options, reads local metadata, starts the
    /// sync worker and the dispatcher thread.
    #[uniffi::constructor]
    pub fn open(options: OpenOptions) -> FfiResult<Arc<Self>> {
        Ok(Arc::new(DataSync {
            core: crate::DataSync::open(options.into_config()?)?,
        }))
    }

    /// The repository of one entity name.
    pub fn repo(&self, name: String) -> FfiResult<Arc<Repository>> {
        Ok(Arc::new(Repository {
            core: self.core.repo(&name)?,
        }))
    }

    /// Runs the whole sync chain now and returns what it did. An unreachable cloud
    /// is reported in the stats (`offline`, `errors`), not as an error.
    pub fn sync_now(&self) -> FfiResult<SyncStats> {
        Ok(self.core.sync_now()?.into())
    }

    /// Returns once every earlier write is durable in the tier below the store.
    pub fn flush(&self) -> FfiResult<()> {
        Ok(self.core.flush()?)
    }

    /// Returns once observers have been called for every earlier change.
    pub fn drain_events(&self) -> FfiResult<()> {
        Ok(self.core.drain_events()?)
    }

    pub fn status(&self) -> Status {
        self.core.status().into()
    }

    /// This instance's writes not yet durable locally, and those not yet in the
    /// cloud (kept in memory: writes of an earlier run are not listed).
    pub fn pending_writes(&self) -> FfiResult<PendingWrites> {
        Ok(self.core.pending_writes()?.into())
    }

    /// Waits up to `timeout_ms` until the latest write of entity `id` of `name` is
    /// in the cloud: true when it is, false when the time ran out. Fails with
    /// `WouldDeadlock` from an observer or adapter callback.
    pub fn wait_in_cloud(&self, name: String, id: String, timeout_ms: u64) -> FfiResult<bool> {
        Ok(self
            .core
            .wait_in_cloud(&name, &id, Duration::from_millis(timeout_ms))?)
    }

    /// Waits up to `timeout_ms` until every earlier write is in the cloud.
    pub fn wait_all_in_cloud(&self, timeout_ms: u64) -> FfiResult<bool> {
        Ok(self
            .core
            .wait_all_in_cloud(Duration::from_millis(timeout_ms))?)
    }

    /// Observes the sync status: the current status first, then the new one after
    /// every chain sync (success or failure), on the dispatcher thread.
    pub fn observe_status(
        &self,
        observer: Arc<dyn StatusObserver>,
    ) -> FfiResult<Arc<Subscription>> {
        let sub = self.core.observe_status(move |status| {
            if let Err(e) = observer.on_status(status.clone().into()) {
                log::warn!(target: "datasync::ffi", "status observer failed: {e}");
            }
        })?;
        Ok(Subscription::wrap(sub))
    }

    /// A batch for entity observers: what the observers registered into it with
    /// [`Repository::observe_batched`] get in one dispatcher round reaches
    /// `observer` in one call, at the end of that round's entity deliveries.
    pub fn entity_batch(
        &self,
        observer: Arc<dyn EntityBatchObserver>,
    ) -> FfiResult<Arc<EntityBatch>> {
        let gathered: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
        let taken = gathered.clone();
        let rounds = self.core.observe_rounds(move || {
            let text = std::mem::take(&mut *taken.lock());
            if text.is_empty() {
                return;
            }
            if let Err(e) = observer.on_entities(format!("[{text}]")) {
                log::warn!(target: "datasync::ffi", "entity batch observer failed: {e}");
            }
        })?;
        Ok(Arc::new(EntityBatch {
            gathered,
            rounds: Mutex::new(Some(rounds)),
        }))
    }

    /// The partition keys a tier holds.
    pub fn tier_keys(&self, tier: TierKind) -> FfiResult<Vec<String>> {
        Ok(self.core.tier_keys(tier.into())?)
    }

    /// Recomputes every hash and count from the partitions and lists disagreements
    /// with the metadata (empty when all is well).
    pub fn audit(&self) -> FfiResult<Vec<String>> {
        Ok(self.core.audit()?)
    }

    /// Flushes, stops the worker and dispatcher and joins them; queued observer
    /// calls run first. Idempotent; other calls fail with `Closed` afterwards.
    /// (Not `close`: that name belongs to Kotlin's `AutoCloseable`, which frees
    /// the handle.)
    pub fn shutdown(&self) -> FfiResult<()> {
        Ok(self.core.close()?)
    }
}

fn entity_value(json: &str) -> FfiResult<Value> {
    serde_json::from_str(json).map_err(|e| Error::InvalidJson(e.to_string()).into())
}

/// The entity-facing API for one entity name. Entities cross as JSON text.
#[derive(uniffi::Object)]
pub struct Repository {
    pub(super) core: crate::Repository,
}

#[uniffi::export]
impl Repository {
    /// The entity name.
    pub fn name(&self) -> String {
        self.core.name().to_string()
    }

    /// Saves an entity (a JSON object) and returns its id.
    pub fn save(&self, entity_json: String) -> FfiResult<String> {
        Ok(self.core.save(&entity_value(&entity_json)?)?)
    }

    /// Saves several entities at once (all or none) and returns their ids.
    pub fn save_many(&self, entities_json: Vec<String>) -> FfiResult<Vec<String>> {
        let values = entities_json
            .iter()
            .map(|j| entity_value(j))
            .collect::<FfiResult<Vec<_>>>()?;
        Ok(self.core.save_many(&values)?)
    }

    /// Saves a JSON array of entities at once (all or none) and returns their ids as
    /// a JSON array: one string each way for the whole batch, so a binding encodes
    /// and decodes the batch in one go instead of lowering one string per entity.
    pub fn save_many_json(&self, entities_json: String) -> FfiResult<String> {
        let entities = match entity_value(&entities_json)? {
            Value::Array(items) => items,
            _ => return Err(Error::InvalidJson("expected a JSON array of entities".into()).into()),
        };
        let ids = self.core.save_many(&entities)?;
        Ok(Value::from(ids).to_string())
    }

    /// The entity with this id as JSON, if it exists.
    pub fn get(&self, id: String) -> FfiResult<Option<String>> {
        Ok(self.core.get(&id)?.map(|e| e.json().to_string()))
    }

    /// Deletes an entity; returns whether it existed.
    pub fn delete(&self, id: String) -> FfiResult<bool> {
        Ok(self.core.delete(&id)?)
    }

    /// Deletes several entities; returns how many existed.
    pub fn delete_many(&self, ids: Vec<String>) -> FfiResult<u64> {
        Ok(self.core.delete_many(&ids)? as u64)
    }

    /// The entities matching `query`, as JSON.
    pub fn query(&self, query: Query) -> FfiResult<Vec<String>> {
        let options = QueryOptions::try_from(query)?;
        Ok(self
            .core
            .query(&options)?
            .iter()
            .map(|e| e.json().to_string())
            .collect())
    }

    /// Observes one entity: its current value first, then every change.
    pub fn observe(
        &self,
        id: String,
        observer: Arc<dyn EntityObserver>,
    ) -> FfiResult<Arc<Subscription>> {
        let sub = self.core.observe(&id, move |entity| {
            if let Err(e) = observer.on_change(entity.map(|e| e.json().to_string())) {
                log::warn!(target: "datasync::ffi", "entity observer failed: {e}");
            }
        })?;
        Ok(Subscription::wrap(sub))
    }

    /// Observes one entity into `batch` under `handle`: its current value first,
    /// then every change, each handed to the batch's observer with the others of
    /// its round. Unsubscribing stops what this observer adds; pairs already
    /// gathered in the round still arrive, so a host drops those of handles it
    /// no longer serves.
    pub fn observe_batched(
        &self,
        id: String,
        batch: Arc<EntityBatch>,
        handle: u64,
    ) -> FfiResult<Arc<Subscription>> {
        let gathered = batch.gathered.clone();
        let sub = self.core.observe(&id, move |entity| {
            use std::fmt::Write;
            let mut text = gathered.lock();
            if !text.is_empty() {
                text.push(',');
            }
            let _ = write!(text, "[{handle},{}]", entity.map_or("null", |e| e.json()));
        })?;
        Ok(Subscription::wrap(sub))
    }

    /// Observes a query: the full list first, then the new list after changes.
    pub fn observe_all(
        &self,
        query: Query,
        observer: Arc<dyn QueryObserver>,
    ) -> FfiResult<Arc<Subscription>> {
        let options = QueryOptions::try_from(query)?;
        let sub = self.core.observe_all(options, move |entities| {
            let list = list_json(entities);
            if let Err(e) = observer.on_results(list) {
                log::warn!(target: "datasync::ffi", "query observer failed: {e}");
            }
        })?;
        Ok(Subscription::wrap(sub))
    }
}

/// Gathers entity observers' deliveries per dispatcher round (see
/// [`DataSync::entity_batch`]). `stop` (idempotent) or dropping it stops it.
#[derive(uniffi::Object)]
pub struct EntityBatch {
    gathered: Arc<Mutex<String>>,
    rounds: Mutex<Option<crate::Subscription>>,
}

#[uniffi::export]
impl EntityBatch {
    /// Stops handing rounds to the batch's observer. Idempotent.
    pub fn stop(&self) {
        let rounds = self.rounds.lock().take();
        drop(rounds);
    }
}

/// A live observer. `unsubscribe` (idempotent) or dropping it stops it: once that
/// returns, the observer is not called again.
#[derive(uniffi::Object)]
pub struct Subscription {
    core: Mutex<Option<crate::Subscription>>,
}

impl Subscription {
    pub(super) fn wrap(core: crate::Subscription) -> Arc<Self> {
        Arc::new(Subscription {
            core: Mutex::new(Some(core)),
        })
    }
}

#[uniffi::export]
impl Subscription {
    /// Stops the observer. Idempotent; may be called from inside the observer.
    pub fn unsubscribe(&self) {
        let core = self.core.lock().take();
        // Dropped outside our lock.
        drop(core);
    }

    /// Whether the observer is still subscribed.
    pub fn is_active(&self) -> bool {
        self.core.lock().is_some()
    }
}

/// The error as one sentence (what `Display` says in Rust), for wrappers whose
/// exceptions show a message.
#[uniffi::export]
pub fn describe_error(error: DataSyncError) -> String {
    error.to_string()
}

/// The library's version.
#[uniffi::export]
pub fn library_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
