//! The instance handle (the seed's `DataOrchestrator`, without the singleton) and
//! repositories (the entity-facing API).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::clock::{format_millis, now_millis, parse_millis, Clock, Millis};
use crate::config::Config;
use crate::entity::{validate_name, Entity};
use crate::error::{Error, Result};
use crate::id;
use crate::lock::{Condvar, Mutex};
use crate::meta::Meta;
use crate::observe::{Change, ChangeSet, Registry, Source, Subscription};
use crate::partition::{hash_bytes, Partition, Slot};
use crate::query::QueryOptions;
pub use crate::status::Status;
use crate::strategy::{partition_key, Candidates, KeyStrategy};
use crate::sync::engine::{sync_pair, PairOutcome, Scope, SyncCtx, SyncStats};
use crate::sync::worker::{Job, Worker};
use crate::sync::ConflictResolver;
use crate::tier::{Io, Tier};

/// Which tier of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TierId {
    Store,
    Local,
    Cloud,
}

pub(crate) struct Inner {
    prefix: String,
    strategy: Arc<dyn KeyStrategy>,
    resolver: Arc<dyn ConflictResolver>,
    clock: Clock,
    store: Tier,
    local: Option<Tier>,
    cloud: Option<Tier>,
    registry: Arc<Registry>,
    worker: Worker,
    closed: AtomicBool,
    status: Mutex<Status>,
    /// Keys being hydrated; readers of those keys wait.
    hydrating: Mutex<BTreeSet<String>>,
    hydrated: Condvar,
    retry_base: Duration,
    retry_max: Duration,
    chain_interval: Duration,
}

/// An open datasync instance. Cheap to share by reference across threads; every
/// method may be called from any thread. Dropping it closes it.
pub struct DataSync {
    inner: Arc<Inner>,
}

/// The entity-facing API for one entity name.
#[derive(Clone)]
pub struct Repository {
    inner: Arc<Inner>,
    name: String,
}

enum Op<'a> {
    /// The caller's object, borrowed; copied only when the strategy must see a
    /// `createdAt` the caller did not give.
    Save(Cow<'a, Map<String, Value>>),
    Delete(String),
}

struct Planned<'a> {
    key: String,
    id: String,
    op: Op<'a>,
    /// `createdAt` as it will be written, when known before the write.
    created: Option<Millis>,
    /// Whether `created` was issued by the clock for a new entity (reused as `updatedAt`).
    issued: bool,
}

impl DataSync {
    /// Opens an instance: validates the config, reads local metadata, starts the
    /// sync worker and the dispatcher.
    pub fn open(config: Config) -> Result<DataSync> {
        config.validate()?;
        let skew = config.max_clock_skew.as_millis() as Millis;
        let first_chain = (config.local.is_some() && config.cloud.is_some()
            || config.local.is_none() && config.cloud.is_some())
        .then(|| {
            Instant::now()
                + if config.sync_on_open {
                    Duration::ZERO
                } else {
                    config.cloud_sync_interval
                }
        });
        let inner = Arc::new(Inner {
            prefix: config.prefix.clone(),
            strategy: config.strategy.clone(),
            resolver: config.resolver.clone(),
            clock: Clock::with_source(skew, config.clock_source),
            store: Tier::new("store", Io::Store(config.store), false),
            local: config
                .local
                .map(|p| Tier::new("local", Io::Blobs(p), false)),
            cloud: config.cloud.map(|p| Tier::new("cloud", Io::Blobs(p), true)),
            registry: Registry::new(),
            worker: Worker::new(config.store_sync_delay, first_chain),
            closed: AtomicBool::new(false),
            status: Mutex::new(Status {
                online: true,
                ..Status::default()
            }),
            hydrating: Mutex::new(BTreeSet::new()),
            hydrated: Condvar::new(),
            retry_base: config.retry_base,
            retry_max: config.retry_max,
            chain_interval: config.cloud_sync_interval,
        });
        let source: Weak<dyn Source> = Arc::downgrade(&inner) as Weak<Inner>;
        inner.registry.start(source, &inner.prefix)?;
        if let Some(local) = &inner.local {
            if let Err(e) = local.meta() {
                inner.registry.shutdown();
                return Err(e);
            }
        }
        let weak = Arc::downgrade(&inner);
        if let Err(e) = inner.worker.spawn(&inner.prefix, move || worker_loop(weak)) {
            inner.registry.shutdown();
            return Err(e);
        }
        log::info!(target: "datasync::instance", "opened instance {:?}", inner.prefix);
        Ok(DataSync { inner })
    }

    /// The repository of one entity name.
    pub fn repo(&self, name: &str) -> Result<Repository> {
        self.inner.check_open()?;
        validate_name(name, self.inner.strategy.separator())?;
        Ok(Repository {
            inner: self.inner.clone(),
            name: name.to_string(),
        })
    }

    /// Runs the whole chain now (store → local → cloud, and changes back up) and
    /// returns what it did. An unreachable cloud is reported in the stats
    /// (`offline`, `errors`), not as an error.
    pub fn sync_now(&self) -> Result<SyncStats> {
        self.inner.check_open()?;
        self.inner.worker.request(Job::SyncNow)
    }

    /// Returns once every write made before the call is durable in the tier below
    /// the store (local, or the cloud when there is no local tier).
    pub fn flush(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.worker.request(Job::Flush).map(|_| ())
    }

    /// Blocks until observers have been called for every change made before the call.
    pub fn drain_events(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.registry.drain()
    }

    /// The sync status.
    pub fn status(&self) -> Status {
        self.inner.status_now()
    }

    /// Observes the sync status: `callback` gets the current status first, then the
    /// new one after every chain sync (success or failure), on the dispatcher thread.
    pub fn observe_status(
        &self,
        callback: impl FnMut(&Status) + Send + 'static,
    ) -> Result<Subscription> {
        self.inner.check_open()?;
        Ok(self
            .inner
            .registry
            .observe_status(self.inner.status_now(), Box::new(callback)))
    }

    /// Flushes, stops the worker and the dispatcher, and joins them. Idempotent;
    /// every other call fails with [`Error::Closed`] afterwards. Observers still
    /// queued are called before it returns.
    pub fn close(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.registry.on_dispatcher() || inner.worker.on_worker() {
            return Err(Error::WouldDeadlock("close".into()));
        }
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        inner.worker.shutdown();
        inner.worker.refuse_pending();
        inner.registry.shutdown();
        // Release the adapters now (a directory's lock, a host's resources), not when
        // the last handle goes: the same storage can be reopened right after close.
        for tier in [
            Some(&inner.store),
            inner.local.as_ref(),
            inner.cloud.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            tier.release();
        }
        log::info!(target: "datasync::instance", "closed instance {:?}", inner.prefix);
        Ok(())
    }

    /// The metadata of one tier, with every hash brought up to date.
    pub fn tier_meta(&self, tier: TierId) -> Result<Meta> {
        self.inner.check_open()?;
        self.inner.tier(tier)?.meta()
    }

    /// The partition keys a tier holds, according to its metadata.
    pub fn tier_keys(&self, tier: TierId) -> Result<Vec<String>> {
        Ok(self.tier_meta(tier)?.entries.into_keys().collect())
    }

    /// Recomputes every hash and count of every tier from its partitions and lists
    /// where the metadata disagrees (empty when everything is true).
    pub fn audit(&self) -> Result<Vec<String>> {
        self.inner.check_open()?;
        let mut problems = Vec::new();
        for id in [TierId::Store, TierId::Local, TierId::Cloud] {
            let Ok(tier) = self.inner.tier(id) else {
                continue;
            };
            problems.extend(audit_tier(tier)?);
        }
        Ok(problems)
    }
}

/// Checks one tier's metadata against its partitions.
fn audit_tier(tier: &Tier) -> Result<Vec<String>> {
    let meta = tier.meta()?;
    let mut problems = Vec::new();
    for (key, entry) in &meta.entries {
        match tier.load(key)? {
            None => problems.push(format!(
                "{}: {key:?} is in the metadata but has no partition",
                tier.label
            )),
            Some(bytes) => match Partition::parse(&bytes, false) {
                Err(why) => problems.push(format!("{}: {key:?} is corrupt: {why}", tier.label)),
                Ok(p) => {
                    let canonical = p.to_canonical();
                    if canonical != bytes {
                        problems.push(format!(
                            "{}: {key:?} is not stored in canonical form",
                            tier.label
                        ));
                    }
                    if hash_bytes(&canonical) != entry.hash {
                        problems.push(format!(
                            "{}: {key:?} hash differs from its metadata",
                            tier.label
                        ));
                    }
                    if p.counts() != entry.entities {
                        problems.push(format!(
                            "{}: {key:?} counts differ from its metadata",
                            tier.label
                        ));
                    }
                }
            },
        }
    }
    if !tier.is_store() {
        if let Some(root) = tier.load(crate::meta::ROOT_KEY)? {
            if root != meta.root().as_bytes() {
                problems.push(format!(
                    "{}: stored root differs from the metadata's",
                    tier.label
                ));
            }
        }
    }
    Ok(problems)
}

impl Drop for DataSync {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            log::warn!(target: "datasync::instance", "instance dropped without closing: {e}");
        }
    }
}

impl Inner {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn tier(&self, id: TierId) -> Result<&Tier> {
        match id {
            TierId::Store => Some(&self.store),
            TierId::Local => self.local.as_ref(),
            TierId::Cloud => self.cloud.as_ref(),
        }
        .ok_or_else(|| Error::InvalidConfig(format!("this instance has no {id:?} tier")))
    }

    fn sep(&self) -> char {
        self.strategy.separator()
    }

    fn key_of_id(&self, id: &str) -> Result<String> {
        let (logical, _) = id::parse(id, self.sep())?;
        Ok(partition_key(&self.prefix, self.sep(), logical))
    }

    /// Makes sure the store holds partition `key`, loading it from local (or cloud,
    /// writing it down to local on the way) the first time.
    fn ensure_present(&self, key: &str) -> Result<()> {
        {
            let mut hydrating = self.hydrating.lock();
            loop {
                if self.store.state.lock().present.contains(key) {
                    return Ok(());
                }
                if !hydrating.contains(key) {
                    hydrating.insert(key.to_string());
                    break;
                }
                self.hydrated.wait(&mut hydrating);
            }
        }
        let result = self.hydrate(key);
        let mut hydrating = self.hydrating.lock();
        hydrating.remove(key);
        if result.is_ok() {
            self.store.state.lock().present.insert(key.to_string());
        }
        drop(hydrating);
        self.hydrated.notify_all();
        result
    }

    fn hydrate(&self, key: &str) -> Result<()> {
        let guard = self.store.generation(key);
        let mut found = None;
        if let Some(local) = &self.local {
            let expected = local.entry(key).map(|e| e.hash);
            found = local.load_partition(key, expected.as_deref())?;
        }
        if found.is_none() {
            if let Some(cloud) = self.cloud.as_ref().filter(|_| self.status.lock().online) {
                match cloud.load_partition(key, None) {
                    Ok(Some(loaded)) => {
                        if let Some(local) = &self.local {
                            local.write_partition(key, &loaded, now_millis(), None)?;
                            local.persist_meta(now_millis())?;
                        }
                        found = Some(loaded);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        log::warn!(target: "datasync::instance", "cannot hydrate {key:?} from the cloud: {e}")
                    }
                }
            }
        }
        if let Some(loaded) = found {
            if !self
                .store
                .write_partition(key, &loaded, now_millis(), Some(guard))?
            {
                // Written meanwhile (a sync brought it up): the store already has it.
                log::debug!(target: "datasync::instance", "{key:?} changed while hydrating; keeping the store's");
            }
        }
        Ok(())
    }

    fn plan<'a>(&self, name: &str, op: Op<'a>) -> Result<Planned<'a>> {
        match op {
            Op::Delete(id) => {
                let key = self.key_of_id(&id)?;
                Ok(Planned {
                    key,
                    id,
                    op: Op::Delete(String::new()),
                    created: None,
                    issued: false,
                })
            }
            Op::Save(mut object) => {
                let mut created = match object.get("createdAt") {
                    None => None,
                    Some(value) => {
                        Some(value.as_str().and_then(parse_millis).ok_or_else(|| {
                            Error::InvalidEntity(format!(
                                "\"createdAt\" must be an instant, got {value}"
                            ))
                        })?)
                    }
                };
                match object.get("id") {
                    Some(Value::String(id)) => {
                        let id = id.clone();
                        let key = self.key_of_id(&id)?;
                        Ok(Planned {
                            key,
                            id,
                            op: Op::Save(object),
                            created,
                            issued: false,
                        })
                    }
                    Some(other) => Err(Error::InvalidId(
                        other.to_string(),
                        "an id must be a string".into(),
                    )),
                    None => {
                        let mut issued = false;
                        if created.is_none() {
                            let stamp = self.clock.stamp(Millis::MIN);
                            created = Some(stamp);
                            issued = true;
                            object
                                .to_mut()
                                .insert("createdAt".into(), Value::String(format_millis(stamp)));
                        }
                        let logical = self.strategy.logical_key(name, &object)?;
                        id::validate_logical_key(&logical, self.sep())?;
                        let id = id::generate(&logical, self.sep(), self.strategy.id_length());
                        let key = partition_key(&self.prefix, self.sep(), &logical);
                        Ok(Planned {
                            key,
                            id,
                            op: Op::Save(object),
                            created,
                            issued,
                        })
                    }
                }
            }
        }
    }

    /// Applies saves and deletes of one entity name: one store lock, one dirty mark
    /// per key, one event batch.
    fn write(&self, name: &str, ops: Vec<Op<'_>>) -> Result<Vec<(String, bool)>> {
        self.check_open()?;
        let planned: Vec<Planned> = ops
            .into_iter()
            .map(|op| self.plan(name, op))
            .collect::<Result<_>>()?;
        let keys: BTreeSet<&str> = planned.iter().map(|p| p.key.as_str()).collect();
        for key in &keys {
            self.ensure_present(key)?;
        }
        let observed = self.registry.has_subscribers();
        let mut changes = Vec::new();
        let mut results = Vec::with_capacity(planned.len());
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let outcome = self.store.with_io(|io| {
            let Io::Store(store) = io else {
                return Err(Error::Internal("store tier without a store".into()));
            };
            let err = |key: &str| {
                let key = key.to_string();
                move |e| Error::adapter("store", &key, e)
            };
            let applied = || -> Result<()> {
                for p in planned {
                    let previous = store.get(&p.key, name, &p.id).map_err(err(&p.key))?;
                    let (slot, existed) = match p.op {
                        Op::Save(object) => {
                            let (floor, version, before) = match &previous {
                                Some(Slot::Active(e)) => (e.updated_at(), e.version() + 1, Some(e)),
                                Some(Slot::Deleted(at)) => (at + 1, 1, None),
                                None => (Millis::MIN, 1, None),
                            };
                            let stamp = match (p.created, p.issued, &previous) {
                                (Some(issued), true, None) => issued,
                                _ => self.clock.stamp(floor),
                            };
                            let created = p
                                .created
                                .or_else(|| before.and_then(|e| e.created_at()))
                                .unwrap_or(stamp);
                            let entity = Entity::build(&object, &p.id, created, stamp, version)?;
                            store.save(&p.key, name, &entity).map_err(err(&p.key))?;
                            (
                                Slot::Active(entity),
                                previous.is_some_and(|s| s.entity().is_some()),
                            )
                        }
                        Op::Delete(_) => {
                            let floor = previous.as_ref().map_or(Millis::MIN, Slot::instant);
                            let stamp = self.clock.stamp(floor);
                            store
                                .delete(&p.key, name, &p.id, stamp)
                                .map_err(err(&p.key))?;
                            (
                                Slot::Deleted(stamp),
                                previous.is_some_and(|s| s.entity().is_some()),
                            )
                        }
                    };
                    if !touched.contains(&p.key) {
                        touched.insert(p.key.clone());
                    }
                    if observed {
                        let entity = slot.entity().cloned();
                        changes.push(Change {
                            key: p.key.clone(),
                            name: name.to_string(),
                            id: p.id.clone(),
                            entity,
                        });
                    }
                    results.push((p.id, existed));
                }
                Ok(())
            };
            let outcome = applied();
            // Mark what was written (even if a later write of the batch failed) while
            // the store is still locked: a sync that read the key before this write
            // must see the new generation and not write its older merge back.
            let mut state = self.store.state.lock();
            for key in &touched {
                state.mark_written(key);
            }
            outcome
        });
        if !touched.is_empty() {
            self.worker.note_write();
        }
        self.registry.publish(changes);
        outcome.map(|_| results)
    }

    fn get(&self, name: &str, id: &str) -> Result<Option<Entity>> {
        self.check_open()?;
        self.read(name, id)
    }

    /// Reads one entity (also after close, for the dispatcher's last deliveries).
    fn read(&self, name: &str, id: &str) -> Result<Option<Entity>> {
        let key = self.key_of_id(id)?;
        self.ensure_present(&key)?;
        let slot = self.store.with_io(|io| match io {
            Io::Store(s) => s.get(&key, name, id),
            Io::Blobs(_) => Ok(None),
        });
        Ok(slot
            .map_err(|e| Error::adapter("store", &key, e))?
            .and_then(|s| s.entity().cloned()))
    }

    fn candidate_keys(&self, name: &str, query: &QueryOptions) -> Result<Candidates> {
        self.strategy
            .candidate_keys(&self.prefix, name, query.filter.as_ref())
    }

    fn resolve_keys(&self, candidates: &Candidates) -> Result<Vec<String>> {
        match candidates {
            Candidates::Keys(keys) => Ok(keys.clone()),
            Candidates::Prefix(prefix) => {
                let mut keys: BTreeSet<String> = BTreeSet::new();
                keys.extend(
                    self.store
                        .state
                        .lock()
                        .present
                        .iter()
                        .filter(|k| k.starts_with(prefix.as_str()))
                        .cloned(),
                );
                if let Some(local) = &self.local {
                    let state = local.state.lock();
                    keys.extend(
                        state
                            .meta
                            .entries
                            .keys()
                            .filter(|k| k.starts_with(prefix.as_str()))
                            .cloned(),
                    );
                }
                Ok(keys.into_iter().collect())
            }
        }
    }

    fn query(&self, name: &str, query: &QueryOptions) -> Result<Vec<Entity>> {
        self.check_open()?;
        self.select(name, query)
    }

    /// Runs a query (also after close, for the dispatcher's last deliveries).
    fn select(&self, name: &str, query: &QueryOptions) -> Result<Vec<Entity>> {
        let candidates = self.candidate_keys(name, query)?;
        let keys = self.resolve_keys(&candidates)?;
        let mut all = Vec::new();
        for key in &keys {
            self.ensure_present(key)?;
            let part = self.store.with_io(|io| match io {
                Io::Store(s) => s.get_all(key, name),
                Io::Blobs(_) => Ok(Vec::new()),
            });
            all.extend(part.map_err(|e| Error::adapter("store", key, e))?);
        }
        Ok(query.apply(all))
    }

    // ---- the worker's side ----

    /// The pair right below the store: store ↔ local, or store ↔ cloud.
    fn store_pair_lower(&self) -> Option<&Tier> {
        self.local.as_ref().or(self.cloud.as_ref())
    }

    /// Syncs the store's written keys (or `keys`) down one tier, publishing changes
    /// the sync made in the store.
    fn sync_store(&self, keys: Option<Vec<String>>) -> Result<SyncStats> {
        let Some(lower) = self.store_pair_lower() else {
            self.store.state.lock().unsynced.clear();
            return Ok(SyncStats::default());
        };
        let keys = match keys {
            Some(keys) => keys,
            None => std::mem::take(&mut self.store.state.lock().unsynced)
                .into_iter()
                .collect(),
        };
        if keys.is_empty() {
            return Ok(SyncStats::default());
        }
        let ctx = SyncCtx {
            resolver: self.resolver.as_ref(),
            clock: Some(&self.clock),
        };
        let result = sync_pair(&self.store, lower, Scope::Keys(keys.clone()), &ctx);
        match result {
            Ok(outcome) => {
                let failed = outcome.failed_keys.clone();
                self.store
                    .state
                    .lock()
                    .unsynced
                    .extend(failed.iter().cloned());
                let stats = outcome.stats.clone();
                let first_error = outcome.first_error.clone();
                self.publish(outcome);
                // A key that could not be synced (corrupt data) fails the flush with
                // its own error; the other keys were synced.
                if let Some(e) = first_error {
                    return Err(e);
                }
                Ok(stats)
            }
            Err(e) => {
                self.store.state.lock().unsynced.extend(keys);
                Err(e)
            }
        }
    }

    fn publish(&self, outcome: PairOutcome) {
        let changes: Vec<Change> = outcome
            .upper_changes
            .into_iter()
            .flat_map(|(key, slots)| {
                slots.into_iter().map(move |c| Change {
                    key: key.clone(),
                    name: c.name,
                    id: c.id,
                    entity: c.slot.entity().cloned(),
                })
            })
            .collect();
        self.registry.publish(changes);
    }

    /// The periodic chain: local ↔ cloud in full, then changed partitions the store
    /// holds brought up. Without a local tier: store ↔ cloud over what the store holds.
    fn sync_chain(&self) -> Result<SyncStats> {
        let mut stats = SyncStats::default();
        let ctx = SyncCtx {
            resolver: self.resolver.as_ref(),
            clock: Some(&self.clock),
        };
        let result = match (&self.local, &self.cloud) {
            (Some(local), Some(cloud)) => {
                sync_pair(local, cloud, Scope::Full, &ctx).map(|outcome| {
                    let held: Vec<String> = {
                        // Lock order: `hydrating` before the store's state (as in `ensure_present`).
                        let hydrating = self.hydrating.lock();
                        let state = self.store.state.lock();
                        outcome
                            .upper_keys_changed
                            .iter()
                            .filter(|k| state.present.contains(*k) || hydrating.contains(*k))
                            .cloned()
                            .collect()
                    };
                    self.registry.publish_partitions(
                        outcome
                            .upper_keys_changed
                            .iter()
                            .filter(|k| !held.contains(k))
                            .cloned()
                            .collect(),
                    );
                    (outcome.stats, held)
                })
            }
            (None, Some(cloud)) => {
                let held: Vec<String> = self.store.state.lock().present.iter().cloned().collect();
                sync_pair(&self.store, cloud, Scope::Keys(held), &ctx).map(|outcome| {
                    let stats = outcome.stats.clone();
                    self.publish(outcome);
                    (stats, Vec::new())
                })
            }
            _ => return Ok(stats),
        };
        match result {
            Ok((chain_stats, held)) => {
                stats.absorb(chain_stats);
                if !held.is_empty() {
                    stats.absorb(self.sync_store(Some(held))?);
                }
                let mut status = self.status.lock();
                status.online = true;
                status.failures = 0;
                status.last_error = None;
                status.last_sync = Some(format_millis(now_millis()));
                drop(status);
                self.registry.publish_status(self.status_now());
                self.worker
                    .schedule_chain(Some(Instant::now() + self.chain_interval));
                Ok(stats)
            }
            Err(e) => {
                let failures = {
                    let mut status = self.status.lock();
                    status.online = false;
                    status.failures = status.failures.saturating_add(1);
                    status.last_error = Some(e.to_string());
                    status.failures
                };
                self.registry.publish_status(self.status_now());
                let delay = backoff(self.retry_base, self.retry_max, failures);
                log::warn!(target: "datasync::sync", "cloud sync failed ({e}); retrying in {delay:?}");
                self.worker.schedule_chain(Some(Instant::now() + delay));
                stats.offline = true;
                stats.errors.push(e.to_string());
                Ok(stats)
            }
        }
    }
}

impl Inner {
    /// The status as an app sees it now.
    fn status_now(&self) -> Status {
        let mut status = self.status.lock().clone();
        status.pending_keys = self.store.state.lock().unsynced.len();
        status.closed = self.closed.load(Ordering::Acquire);
        status
    }
}

/// Exponential backoff with jitter: base * 2^(failures-1), capped, ±25 %.
fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(max);
    let jitter = rand::random::<f64>() * 0.5 + 0.75;
    exp.mul_f64(jitter).min(max)
}

fn worker_loop(inner: Weak<Inner>) {
    loop {
        let Some(this) = inner.upgrade() else { return };
        let turn = this.worker.next_turn();
        if turn.flush_due && turn.requests.is_empty() {
            if let Err(e) = this.sync_store(None) {
                log::warn!(target: "datasync::sync", "store sync failed: {e}");
            }
        }
        for (job, reply) in turn.requests {
            let result = match job {
                Job::Flush => this.sync_store(None),
                Job::SyncNow => this.sync_store(None).and_then(|mut stats| {
                    stats.absorb(this.sync_chain()?);
                    Ok(stats)
                }),
            };
            let _ = reply.send(result);
        }
        if turn.chain_due {
            if let Err(e) = this.sync_chain() {
                log::warn!(target: "datasync::sync", "chain sync failed: {e}");
            }
        }
        if turn.shutdown {
            if let Err(e) = this.sync_store(None) {
                log::error!(target: "datasync::sync", "last flush before closing failed: {e}");
            }
            return;
        }
    }
}

impl Source for Inner {
    fn current(&self, name: &str, id: &str) -> Result<Option<Entity>> {
        self.read(name, id)
    }

    fn current_in(&self, name: &str, key: &str, ids: &[&str]) -> Result<Vec<Option<Entity>>> {
        self.ensure_present(key)?;
        let slots = self.store.with_io(|io| {
            ids.iter()
                .map(|id| match io {
                    Io::Store(s) => s.get(key, name, id),
                    Io::Blobs(_) => Ok(None),
                })
                .collect::<std::result::Result<Vec<_>, _>>()
        });
        let slots = slots.map_err(|e| Error::adapter("store", key, e))?;
        Ok(slots
            .into_iter()
            .map(|s| s.and_then(|s| s.entity().cloned()))
            .collect())
    }

    fn partition_keys(&self, candidates: &Candidates) -> Result<Vec<String>> {
        self.resolve_keys(candidates)
    }

    fn partition(&self, name: &str, key: &str) -> Result<Vec<Entity>> {
        self.ensure_present(key)?;
        let part = self.store.with_io(|io| match io {
            Io::Store(s) => s.get_all(key, name),
            Io::Blobs(_) => Ok(Vec::new()),
        });
        part.map_err(|e| Error::adapter("store", key, e))
    }
}

fn object_of(value: &Value) -> Result<Cow<'_, Map<String, Value>>> {
    match value {
        Value::Object(map) => Ok(Cow::Borrowed(map)),
        other => Err(Error::InvalidEntity(format!(
            "an entity must be a JSON object, got {}",
            kind_of(other)
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Repository {
    /// The entity name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Saves an entity (a JSON object) and returns its id. Generates the id when
    /// absent, sets `createdAt` when absent, `updatedAt` from the instance clock and
    /// `version` = previous + 1. The caller's value is not changed.
    pub fn save(&self, entity: &Value) -> Result<String> {
        let mut out = self
            .inner
            .write(&self.name, vec![Op::Save(object_of(entity)?)])?;
        Ok(out.pop().map(|(id, _)| id).unwrap_or_default())
    }

    /// Saves an entity given as JSON text.
    pub fn save_json(&self, json: &str) -> Result<String> {
        self.save(&serde_json::from_str::<Value>(json)?)
    }

    /// Saves several entities at once: one lock, one event batch. Either every
    /// entity is valid and all are saved, or none is.
    pub fn save_many(&self, entities: &[Value]) -> Result<Vec<String>> {
        let ops = entities
            .iter()
            .map(|e| object_of(e).map(Op::Save))
            .collect::<Result<Vec<_>>>()?;
        Ok(self
            .inner
            .write(&self.name, ops)?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// The entity with this id, if it exists.
    pub fn get(&self, id: &str) -> Result<Option<Entity>> {
        self.inner.get(&self.name, id)
    }

    /// Deletes an entity: records a tombstone (even for an id not known here, so the
    /// delete still reaches other tiers). Returns whether it existed.
    pub fn delete(&self, id: &str) -> Result<bool> {
        let mut out = self
            .inner
            .write(&self.name, vec![Op::Delete(id.to_string())])?;
        Ok(out.pop().is_some_and(|(_, existed)| existed))
    }

    /// Deletes several entities at once; returns how many existed.
    pub fn delete_many<S: AsRef<str>>(&self, ids: &[S]) -> Result<usize> {
        let ops = ids
            .iter()
            .map(|id| Op::Delete(id.as_ref().to_string()))
            .collect();
        Ok(self
            .inner
            .write(&self.name, ops)?
            .into_iter()
            .filter(|(_, existed)| *existed)
            .count())
    }

    /// The entities matching `query`.
    pub fn query(&self, query: &QueryOptions) -> Result<Vec<Entity>> {
        self.inner.query(&self.name, query)
    }

    /// Observes one entity: `callback` gets its current value first (`None` if
    /// absent), then every change (`None` on delete), on the dispatcher thread.
    pub fn observe(
        &self,
        id: &str,
        callback: impl FnMut(Option<&Entity>) + Send + 'static,
    ) -> Result<Subscription> {
        self.inner.check_open()?;
        let key = self.inner.key_of_id(id)?;
        self.inner.ensure_present(&key)?;
        // Read the current value and register under the store's lock: every write
        // after it is routed to the new observer, every write before it is in the value.
        self.inner.store.with_io(|io| {
            let current = match io {
                Io::Store(s) => s
                    .get(&key, &self.name, id)
                    .map_err(|e| Error::adapter("store", &key, e))?,
                Io::Blobs(_) => None,
            };
            let current = current.and_then(|slot| slot.entity().cloned());
            Ok(self
                .inner
                .registry
                .observe(&self.name, id, current, Box::new(callback)))
        })
    }

    /// Observes a query: `callback` gets the full matching list first, then the new
    /// list after changes that may affect it (bursts coalesced; the last call always
    /// carries the final state).
    pub fn observe_all(
        &self,
        query: QueryOptions,
        callback: impl FnMut(&[Entity]) + Send + 'static,
    ) -> Result<Subscription> {
        self.inner.check_open()?;
        let candidates = self.inner.candidate_keys(&self.name, &query)?;
        Ok(self
            .inner
            .registry
            .observe_all(&self.name, query, candidates, Box::new(callback)))
    }

    /// Observes a query by change sets: `callback` gets the whole result first, then
    /// what changed since its previous call (ids removed, entities inserted or updated
    /// with their positions, the new count, and the whole list on demand), on the
    /// dispatcher thread, bursts coalesced. See [`ChangeSet`] for how to apply one.
    pub fn observe_changes(
        &self,
        query: QueryOptions,
        callback: impl FnMut(&ChangeSet) + Send + 'static,
    ) -> Result<Subscription> {
        self.inner.check_open()?;
        let candidates = self.inner.candidate_keys(&self.name, &query)?;
        Ok(self
            .inner
            .registry
            .observe_changes(&self.name, query, candidates, Box::new(callback)))
    }
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({:?})", self.name)
    }
}

/// Handles are shared across threads.
#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<DataSync>();
    is::<Repository>();
}
