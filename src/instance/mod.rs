//! The instance handle (the seed's `DataOrchestrator`, without the singleton).
//!
//! - `repo.rs`: repositories, the entity-facing API (write planning, reads, queries);
//! - `hydrate.rs`: loading a partition the store lacks from the tiers below;
//! - `pending.rs`: which writes are not yet durable locally or in the cloud.
//!
//! The sync worker's side (its loop, the chain, status and backoff) is
//! `crate::sync::chain`.

mod hydrate;
mod pending;
mod repo;
mod splits;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::clock::{Clock, Millis};
use crate::config::Config;
use crate::entity::{validate_name, Entity};
use crate::error::{Error, Result};
use crate::id;
use crate::lock::{Condvar, Level, Mutex};
use crate::meta::{Meta, ROOT_KEY};
use crate::observe::{Registry, Source, Subscription};
use crate::partition::Partition;
use crate::split;
pub use crate::status::Status;
use crate::strategy::{partition_key, Candidates, KeyStrategy};
use crate::sync::engine::SyncStats;
use crate::sync::worker::{Answer, Request, Worker};
use crate::sync::ConflictResolver;
use crate::tier::{audit::audit, Adapter, Tier};

pub(crate) use pending::Pending;
pub use pending::{PendingWrite, PendingWrites};
pub use repo::Repository;

/// Which tier of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TierId {
    Store,
    Local,
    Cloud,
}

/// What every handle and repository of one instance shares.
pub(crate) struct Inner {
    pub prefix: String,
    pub strategy: Arc<dyn KeyStrategy>,
    pub resolver: Arc<dyn ConflictResolver>,
    pub clock: Clock,
    pub store: Tier,
    pub local: Option<Tier>,
    pub cloud: Option<Tier>,
    pub registry: Arc<Registry>,
    pub worker: Worker,
    /// The writes not yet durable locally or in the cloud.
    pub pending: Pending,
    closed: AtomicBool,
    pub status: Mutex<Status>,
    /// Keys being hydrated; readers of those keys wait.
    pub hydrating: Mutex<BTreeSet<String>>,
    hydrated: Condvar,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub chain_interval: Duration,
    /// Bounded partitions: the depth of new entities' sub-partitions, when the
    /// strategy splits and the configuration bounds partitions.
    splits: Option<splits::Splits>,
}

/// An open datasync instance. Cheap to share by reference across threads; every
/// method may be called from any thread. Dropping it closes it.
pub struct DataSync {
    inner: Arc<Inner>,
}

impl DataSync {
    /// Opens an instance: validates the config, reads local metadata, starts the
    /// sync worker and the dispatcher.
    pub fn open(mut config: Config) -> Result<DataSync> {
        config.validate()?;
        if config.format == 1 {
            if let Some(local) = config.local.as_mut() {
                refuse_format2(local.as_mut())?;
            }
        }
        let pieces = (config.format == 2).then(|| (config.resolver.clone(), config.compaction));
        let clock_source = config.clock_source;
        let in_format = |tier: Tier| match &pieces {
            Some((resolver, compaction)) => {
                tier.in_pieces(resolver.clone(), *compaction, clock_source)
            }
            None => tier,
        };
        let skew = config.max_clock_skew.as_millis() as Millis;
        let pending = Pending::new(config.local.is_some(), config.cloud.is_some());
        let first_chain = config.cloud.is_some().then(|| {
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
            store: Tier::new("store", Adapter::Store(config.store), false),
            local: config
                .local
                .map(|p| in_format(Tier::new("local", Adapter::Blobs(p), false))),
            cloud: config
                .cloud
                .map(|p| in_format(Tier::new("cloud", Adapter::Blobs(p), true))),
            registry: Registry::new(),
            worker: Worker::new(config.store_sync_delay, first_chain),
            pending,
            closed: AtomicBool::new(false),
            status: Mutex::new(Status {
                online: true,
                ..Status::default()
            }),
            hydrating: Mutex::ordered(Level::Hydrating, BTreeSet::new()),
            hydrated: Condvar::new(),
            retry_base: config.retry_base,
            retry_max: config.retry_max,
            chain_interval: config.cloud_sync_interval,
            splits: config
                .partition_bound
                .filter(|_| config.strategy.splits())
                .map(splits::Splits::new),
        });
        if inner.local.as_ref().is_some_and(Tier::is_pieces) {
            inner.store.track_written_ids();
        }
        let source: Weak<dyn Source> = Arc::downgrade(&inner) as Weak<Inner>;
        inner.registry.start(source, &inner.prefix)?;
        if let Some(local) = &inner.local {
            if let Err(e) = local.ensure_format().and_then(|_| local.meta().map(|_| ())) {
                inner.registry.shutdown();
                return Err(e);
            }
        }
        let weak = Arc::downgrade(&inner);
        if let Err(e) = inner.worker.spawn(&inner.prefix, move |mailbox| {
            crate::sync::chain::run(weak, mailbox)
        }) {
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
        Ok(Repository::new(self.inner.clone(), name))
    }

    /// Runs the whole chain now (store → local → cloud, and changes back up) and
    /// returns what it did. An unreachable cloud is reported in the stats
    /// (`offline`, `errors`), not as an error.
    pub fn sync_now(&self) -> Result<SyncStats> {
        self.inner.check_open()?;
        match self.inner.worker.request(Request::SyncNow)? {
            Answer::Synced(stats) => Ok(stats),
            Answer::Audited(_) => Err(Error::Internal("the worker answered an audit".into())),
        }
    }

    /// Returns once every write made before the call is durable in the tier below
    /// the store (local, or the cloud when there is no local tier).
    pub fn flush(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.worker.request(Request::Flush).map(|_| ())
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

    /// The writes of this instance not yet durable in the local tier, and those not
    /// yet in the cloud, oldest first; an entity written twice is listed once, by
    /// its latest write. A write is pending locally from its save or delete until
    /// the store sync that carried it (a flush, ~`store_sync_delay` after it) has
    /// succeeded, then pending for the cloud until a cloud sync that included its
    /// partition has. A write made while its partition syncs stays pending for the
    /// next sync. Without a local tier writes are pending for the cloud right away;
    /// without a cloud nothing is pending for it.
    ///
    /// Kept in memory only: writes made before this instance was opened (by an
    /// earlier run) are not listed, even if they have not reached the cloud yet.
    pub fn pending_writes(&self) -> Result<PendingWrites> {
        self.inner.check_open()?;
        Ok(self.inner.pending.list())
    }

    /// Waits until the latest write of entity `id` of `name` made before the call is
    /// in the cloud: `true` when it is (at once when nothing of it is pending),
    /// `false` when `timeout` passed first. It only waits: the chain syncs on its
    /// interval, or call [`DataSync::sync_now`]. Fails with `WouldDeadlock` from an
    /// observer callback or an adapter (the syncs it waits for run behind them),
    /// `InvalidConfig` without a cloud tier, `Closed` when the instance closes.
    pub fn wait_in_cloud(&self, name: &str, id: &str, timeout: Duration) -> Result<bool> {
        self.inner.check_wait("wait_in_cloud")?;
        validate_name(name, self.inner.sep())?;
        id::parse(id, self.inner.sep())?;
        self.inner.wait_in_cloud(Some((name, id)), timeout)
    }

    /// Waits until every write made before the call is in the cloud; as
    /// [`DataSync::wait_in_cloud`] otherwise.
    pub fn wait_all_in_cloud(&self, timeout: Duration) -> Result<bool> {
        self.inner.check_wait("wait_all_in_cloud")?;
        self.inner.wait_in_cloud(None, timeout)
    }

    /// Observes the sync status: `callback` gets the current status first, then the
    /// new one after every chain sync (success or failure), and after a store sync
    /// that changed `pending_cloud`, on the dispatcher thread.
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

    /// Calls `callback` on the dispatcher thread at the end of each round's entity
    /// deliveries: after the entity observers got the changes of one batch of
    /// events (and the first values of new ones), before that batch's collection
    /// emissions. A host that gathers what its entity observers got can hand it on
    /// in one call there. Rounds with nothing delivered call it too.
    pub fn observe_rounds(&self, callback: impl FnMut() + Send + 'static) -> Result<Subscription> {
        self.inner.check_open()?;
        Ok(self.inner.registry.observe_rounds(Box::new(callback)))
    }

    /// Flushes, stops the worker and the dispatcher, and joins them. Idempotent;
    /// every other call fails with [`Error::Closed`] afterwards. Observers still
    /// queued are called before it returns.
    pub fn close(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.registry.on_dispatcher()
            || inner.worker.on_worker()
            || crate::tier::in_adapter_call()
        {
            return Err(Error::WouldDeadlock("close".into()));
        }
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        inner.worker.shutdown();
        inner.pending.shutdown();
        inner.registry.shutdown();
        // Release the adapters now (a directory's lock, a host's resources), not when
        // the last handle goes: the same storage can be reopened right after close.
        for tier in inner.tiers() {
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

    /// One partition as a tier holds it (`None`: the tier lacks it), read whole:
    /// for inspection and checks, in either format.
    pub fn tier_partition(&self, tier: TierId, key: &str) -> Result<Option<Partition>> {
        self.inner.check_open()?;
        let tier = self.inner.tier(tier)?;
        match tier.load_raw(key)? {
            Some(raw) => Ok(Some(raw.finish(tier.label, key, None)?.partition)),
            None => Ok(None),
        }
    }

    /// The partition keys a tier holds, according to its metadata.
    pub fn tier_keys(&self, tier: TierId) -> Result<Vec<String>> {
        Ok(self.tier_meta(tier)?.entries.into_keys().collect())
    }

    /// Recomputes every hash and count of every tier from its partitions and lists
    /// where the metadata disagrees (empty when everything is true). It runs on the
    /// sync worker, between syncs.
    pub fn audit(&self) -> Result<Vec<String>> {
        self.inner.check_open()?;
        match self.inner.worker.request(Request::Audit)? {
            Answer::Audited(problems) => Ok(problems),
            Answer::Synced(_) => Err(Error::Internal("the worker answered a sync".into())),
        }
    }
}

impl Inner {
    /// The audit of every tier (on the worker thread, so no sync runs meanwhile).
    /// Store partitions written during the audit are left out: their entries are
    /// recomputed at the next sync, and a difference there is no damage.
    pub(crate) fn audit_tiers(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        for tier in self.tiers() {
            let meta = tier.meta()?;
            let root = if tier.is_store() {
                None
            } else {
                tier.load(ROOT_KEY)?
            };
            if tier.is_pieces() {
                problems.extend(tier.audit_pieces(&meta, root.as_deref())?);
                continue;
            }
            let found = audit(tier.label, None, Some(&meta), root.as_deref(), |key| {
                tier.load(key)
            });
            let written_since: Vec<&String> = if tier.is_store() {
                meta.entries
                    .keys()
                    .filter(|k| tier.fresh_entry(k).is_none())
                    .collect()
            } else {
                Vec::new()
            };
            problems.extend(
                found
                    .problems
                    .into_iter()
                    .filter(|p| !written_since.iter().any(|k| p.contains(&format!("{k:?}")))),
            );
        }
        Ok(problems)
    }
}

/// With format 1, a local tier already in format 2 is refused rather than read as
/// empty.
fn refuse_format2(adapter: &mut dyn crate::Persistence) -> Result<()> {
    if crate::pieces::is_converted(adapter, "local")? {
        return Err(Error::InvalidConfig(
            "the local tier is in format 2; open it with format 2".into(),
        ));
    }
    Ok(())
}

impl Drop for DataSync {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            log::warn!(target: "datasync::instance", "instance dropped without closing: {e}");
        }
    }
}

impl Inner {
    /// Every call of the public API starts here: the instance must be open, and the
    /// call must not come from inside an adapter call (a host persistence callback
    /// calling back in could wait on the lock that call holds).
    pub fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if crate::tier::in_adapter_call() {
            return Err(Error::WouldDeadlock(
                "a datasync call from inside a persistence adapter callback".into(),
            ));
        }
        Ok(())
    }

    /// A wait for the cloud must come from a thread the syncs do not run behind.
    fn check_wait(&self, what: &str) -> Result<()> {
        self.check_open()?;
        if self.registry.on_dispatcher() || self.worker.on_worker() {
            return Err(Error::WouldDeadlock(what.into()));
        }
        if self.cloud.is_none() {
            return Err(Error::InvalidConfig(format!(
                "{what}: this instance has no cloud tier"
            )));
        }
        Ok(())
    }

    fn wait_in_cloud(&self, entity: Option<(&str, &str)>, timeout: Duration) -> Result<bool> {
        // A timeout too long to add to now is as good as forever.
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600));
        match self.pending.wait_in_cloud(entity, deadline) {
            pending::Waited::Done => Ok(true),
            pending::Waited::TimedOut => Ok(false),
            pending::Waited::Closed => Err(Error::Closed),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn tier(&self, id: TierId) -> Result<&Tier> {
        match id {
            TierId::Store => Some(&self.store),
            TierId::Local => self.local.as_ref(),
            TierId::Cloud => self.cloud.as_ref(),
        }
        .ok_or_else(|| Error::InvalidConfig(format!("this instance has no {id:?} tier")))
    }

    /// The tiers present, fastest first.
    fn tiers(&self) -> impl Iterator<Item = &Tier> {
        [Some(&self.store), self.local.as_ref(), self.cloud.as_ref()]
            .into_iter()
            .flatten()
    }

    fn sep(&self) -> char {
        self.strategy.separator()
    }

    /// Whether partition `key` could hold entities of `name`: the strategy says so of
    /// it, or, for a strategy that splits, of the base it is a sub-partition of.
    fn could_hold(&self, name: &str, key: &str) -> bool {
        self.strategy.could_hold(&self.prefix, name, key)
            || (self.strategy.splits()
                && split::split_key(key, self.sep())
                    .is_some_and(|(base, _)| self.strategy.could_hold(&self.prefix, name, base)))
    }

    /// The strategy's candidates, with a splitting strategy's exact keys read as
    /// those keys and their sub-partitions.
    fn candidates(&self, name: &str, filter: Option<&serde_json::Value>) -> Result<Candidates> {
        Ok(
            match self.strategy.candidate_keys(&self.prefix, name, filter)? {
                Candidates::Keys(keys) if self.strategy.splits() => Candidates::Split {
                    keys,
                    separator: self.sep(),
                },
                other => other,
            },
        )
    }

    /// The logical key of a new entity of `name` whose strategy gave `logical` and
    /// whose identifier is `ident`: with bounded partitions, the sub-partition its
    /// base has reached.
    fn bounded_logical(&self, name: &str, logical: String, ident: &str) -> Result<String> {
        let Some(splits) = &self.splits else {
            return Ok(logical);
        };
        let sep = self.sep();
        if split::split_key(&logical, sep).is_some() {
            return Err(Error::InvalidKey(
                logical,
                format!(
                    "it ends like a sub-partition label ({sep}{} and binary digits)",
                    split::LABEL_MARK
                ),
            ));
        }
        let base = partition_key(&self.prefix, sep, &logical);
        let depth = splits.depth_of_new(&base, || {
            self.local
                .as_ref()
                .unwrap_or(&self.store)
                .recorded_count_within(&base, name, sep)
        });
        Ok(split::labelled(&logical, sep, ident, depth).unwrap_or(logical))
    }

    fn key_of_id(&self, id: &str) -> Result<String> {
        let (logical, _) = id::parse(id, self.sep())?;
        Ok(partition_key(&self.prefix, self.sep(), logical))
    }
}

impl Source for Inner {
    fn current(&self, name: &str, id: &str) -> Result<Option<Entity>> {
        self.read(name, id)
    }

    fn current_in(&self, name: &str, key: &str, ids: &[&str]) -> Result<Vec<Option<Entity>>> {
        self.ensure_present(key)?;
        let slots = self.store.with_store(key, |s| {
            ids.iter()
                .map(|id| s.get(key, name, id))
                .collect::<crate::persistence::AdapterResult<Vec<_>>>()
        })?;
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
        self.store.with_store(key, |s| s.get_all(key, name))
    }
}

/// Handles are shared across threads.
#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<DataSync>();
    is::<Repository>();
}
