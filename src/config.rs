//! What an instance is opened from.

use std::sync::Arc;
use std::time::Duration;

use crate::adapters::MemoryStore;
use crate::error::{Error, Result};
use crate::persistence::{Persistence, Store};
use crate::strategy::{GlobalStrategy, KeyStrategy};
use crate::sync::{ConflictResolver, LastWriterWins};

/// The configuration of one instance: prefix, strategy, tiers and timings.
pub struct Config {
    /// Prefix of every partition key (`<prefix><sep><logicalKey>`).
    pub prefix: String,
    pub strategy: Arc<dyn KeyStrategy>,
    pub resolver: Arc<dyn ConflictResolver>,
    /// The in-memory tier; [`MemoryStore`] by default.
    pub store: Box<dyn Store>,
    /// The durable tier on the device.
    pub local: Option<Box<dyn Persistence>>,
    /// The remote tier, possibly shared with other instances.
    pub cloud: Option<Box<dyn Persistence>>,
    /// How long after a write the store is synced to the tier below (writes within
    /// this window are coalesced).
    pub store_sync_delay: Duration,
    /// How often local and cloud are synced.
    pub cloud_sync_interval: Duration,
    /// First retry delay after a cloud failure; doubles up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Stamps further ahead of now than this are not adopted into the instance clock.
    pub max_clock_skew: Duration,
    /// Sync local and cloud as soon as the instance opens.
    pub sync_on_open: bool,
    /// The wall clock in milliseconds since the epoch (replaceable for simulations
    /// and tests that need exact instants).
    pub clock_source: fn() -> crate::clock::Millis,
    /// How the blob tiers (local, cloud) keep partitions: 1, one document per
    /// partition rewritten by every flush; 2, write-once pieces and a small index
    /// per partition (`docs/format-2.md`), so that a flush or a sync moves only
    /// what changed. Opening a format-1 tier with format 2 converts it in place; a
    /// tier in format 2 refuses to open with format 1. The default is 2, or the
    /// value of the environment variable `DATASYNC_DEFAULT_FORMAT` when it is `1`
    /// (so that a test suite can run on either).
    pub format: u32,
    /// Format 2: when a partition's pieces are folded, and when tombstones go.
    pub compaction: crate::pieces::Compaction,
    /// Bounded partitions ([`crate::split`]): about this many entities per
    /// partition of a strategy that splits (the built-in ones do). `None` keeps each
    /// partition the strategy gives whole, however large. Default: 1,000.
    pub partition_bound: Option<u64>,
}

/// The format a configuration gets unless it chooses one.
fn default_format() -> u32 {
    match std::env::var("DATASYNC_DEFAULT_FORMAT").as_deref() {
        Ok("1") => 1,
        _ => 2,
    }
}

impl Config {
    /// A store-only configuration with the defaults: global strategy, last writer wins,
    /// store synced 50 ms after writes, cloud every 30 s.
    pub fn new(prefix: impl Into<String>) -> Config {
        Config {
            prefix: prefix.into(),
            strategy: Arc::new(GlobalStrategy),
            resolver: Arc::new(LastWriterWins),
            store: Box::new(MemoryStore::new()),
            local: None,
            cloud: None,
            store_sync_delay: Duration::from_millis(50),
            cloud_sync_interval: Duration::from_secs(30),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_clock_skew: Duration::from_secs(300),
            sync_on_open: true,
            clock_source: crate::clock::now_millis,
            format: default_format(),
            compaction: crate::pieces::Compaction::default(),
            partition_bound: Some(crate::split::DEFAULT_BOUND),
        }
    }

    /// New entities go to sub-partitions of about `bound` entities each
    /// ([`crate::split`]); at least 1.
    pub fn partition_bound(mut self, bound: u64) -> Self {
        self.partition_bound = Some(bound);
        self
    }

    /// Every new entity goes to the partition its strategy gives, however large it
    /// grows (the behaviour before bounded partitions). Sub-partitions that other
    /// devices created are still read.
    pub fn unbounded_partitions(mut self) -> Self {
        self.partition_bound = None;
        self
    }

    /// The format of the blob tiers (1 or 2; see [`Config::format`]).
    pub fn format(mut self, format: u32) -> Self {
        self.format = format;
        self
    }

    /// Format 2: fold a partition's pieces when there are more than `bound`.
    pub fn compaction_bound(mut self, bound: usize) -> Self {
        self.compaction.bound = bound;
        self
    }

    /// Format 2: tombstones older than this are dropped by a full fold even where a
    /// device has not synced past them.
    pub fn tombstone_horizon(mut self, horizon: Duration) -> Self {
        self.compaction.horizon = horizon.as_millis().min(i64::MAX as u128) as i64;
        self
    }

    pub fn strategy(mut self, strategy: impl KeyStrategy + 'static) -> Self {
        self.strategy = Arc::new(strategy);
        self
    }

    pub fn resolver(mut self, resolver: impl ConflictResolver + 'static) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    pub fn store(mut self, store: impl Store + 'static) -> Self {
        self.store = Box::new(store);
        self
    }

    pub fn local(mut self, local: impl Persistence + 'static) -> Self {
        self.local = Some(Box::new(local));
        self
    }

    pub fn cloud(mut self, cloud: impl Persistence + 'static) -> Self {
        self.cloud = Some(Box::new(cloud));
        self
    }

    /// Uses the sync server at `url` (`http://` or `https://`) as the cloud tier,
    /// authenticated by `token`, with these timeouts (see [`HttpOptions`]).
    ///
    /// [`HttpOptions`]: crate::adapters::HttpOptions
    #[cfg(feature = "http")]
    pub fn cloud_http(
        self,
        url: &str,
        token: &str,
        options: crate::adapters::HttpOptions,
    ) -> Result<Self> {
        let http = crate::adapters::HttpPersistence::with_options(url, token, options)?;
        Ok(self.cloud(http))
    }

    pub fn store_sync_delay(mut self, delay: Duration) -> Self {
        self.store_sync_delay = delay;
        self
    }

    pub fn cloud_sync_interval(mut self, interval: Duration) -> Self {
        self.cloud_sync_interval = interval;
        self
    }

    pub fn retry(mut self, base: Duration, max: Duration) -> Self {
        self.retry_base = base;
        self.retry_max = max;
        self
    }

    pub fn clock_source(mut self, source: fn() -> crate::clock::Millis) -> Self {
        self.clock_source = source;
        self
    }

    pub fn sync_on_open(mut self, yes: bool) -> Self {
        self.sync_on_open = yes;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let p = &self.prefix;
        if p.is_empty()
            || p.len() > 128
            || crate::meta::is_reserved(p)
            || p.chars().any(|c| c.is_control())
        {
            return Err(Error::InvalidConfig(format!(
                "prefix {p:?} must be 1-128 characters, not start with '!', and hold no control characters"
            )));
        }
        crate::strategy::validate_strategy(self.strategy.as_ref())?;
        if p.contains(self.strategy.separator()) {
            return Err(Error::InvalidConfig(format!(
                "prefix {p:?} contains the key separator"
            )));
        }
        if self.cloud_sync_interval.is_zero()
            || self.retry_base.is_zero()
            || self.retry_max < self.retry_base
        {
            return Err(Error::InvalidConfig(
                "intervals must be positive and retry_max >= retry_base".into(),
            ));
        }
        if self.partition_bound == Some(0) {
            return Err(Error::InvalidConfig(
                "a partition bound must be at least 1 entity".into(),
            ));
        }
        if !matches!(self.format, 1 | 2) {
            return Err(Error::InvalidConfig(format!(
                "format {} is not 1 or 2",
                self.format
            )));
        }
        if self.compaction.bound == 0 || self.compaction.horizon <= 0 {
            return Err(Error::InvalidConfig(
                "the compaction bound and the tombstone horizon must be positive".into(),
            ));
        }
        Ok(())
    }
}
