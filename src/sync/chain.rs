//! The sync worker's side of an instance: its loop, the two syncs it runs (the store
//! with the tier below; local with the cloud), the status they leave, and the backoff
//! after a failed cloud sync.

use std::sync::Weak;
use std::time::{Duration, Instant};

use crate::clock::{format_millis, now_millis};
use crate::error::{ErrorKind, Result};
use crate::instance::{Inner, Status};
use crate::observe::Change;
use crate::sync::engine::{sync_pair, PairOutcome, ReadFilter, Scope, SyncCtx, SyncStats};
use crate::sync::worker::{Answer, Mailbox, Request};
use crate::tier::Tier;

/// The worker thread's body: one turn after another until the instance closes.
pub(crate) fn run(inner: Weak<Inner>, mut mailbox: Mailbox) {
    loop {
        let Some(this) = inner.upgrade() else { return };
        let turn = mailbox.next_turn();
        if turn.flush_due && turn.requests.is_empty() {
            if let Err(e) = this.flush(&mut mailbox) {
                log::warn!(target: "datasync::sync", "store sync failed: {e}");
            }
        }
        for (request, reply) in turn.requests {
            let result = match request {
                Request::Flush => this.flush(&mut mailbox).map(Answer::Synced),
                Request::SyncNow => this.sync_now(&mut mailbox).map(Answer::Synced),
                Request::Audit => this.audit_tiers().map(Answer::Audited),
            };
            let _ = reply.send(result);
        }
        if turn.chain_due {
            if let Err(e) = this.sync_chain(&mut mailbox) {
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

/// The delay before the next cloud attempt after `failures` failures in a row:
/// base * 2^(failures-1), capped at `max`.
fn nominal_delay(base: Duration, max: Duration, failures: u32) -> Duration {
    base.saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(max)
}

/// Exponential backoff with jitter: the nominal delay ±25 %, never over `max`.
fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let jitter = rand::random::<f64>() * 0.5 + 0.75;
    nominal_delay(base, max, failures).mul_f64(jitter).min(max)
}

/// The keys of a sync that did not fail.
fn succeeded<'a>(keys: &'a [String], failed: &'a [String]) -> impl Iterator<Item = &'a String> {
    keys.iter().filter(move |k| !failed.contains(k))
}

impl ReadFilter for Inner {
    fn may_read(&self, key: &str, names: &[&str]) -> bool {
        self.may_read_partition(key, names)
    }
}

impl Inner {
    /// The status as an app sees it now.
    pub(crate) fn status_now(&self) -> Status {
        let mut status = self.status.lock().clone();
        status.pending_keys = self.store.unsynced_count();
        status.pending_cloud = self.pending.cloud_count();
        status.closed = self.is_closed();
        status
    }

    fn sync_ctx(&self) -> SyncCtx<'_> {
        SyncCtx {
            resolver: self.resolver.as_ref(),
            clock: Some(&self.clock),
            may_read: Some(self),
            store: Some(&self.store),
        }
    }

    /// Makes the store's writes durable in the tier below. Without a local tier that
    /// is the cloud, and a failure there makes the instance offline (and retried with
    /// backoff) like a failed chain sync. Status observers hear of the writes it made
    /// pending for the cloud.
    fn flush(&self, mailbox: &mut Mailbox) -> Result<SyncStats> {
        let pending_cloud = self.pending.cloud_count();
        let result = self.flush_store(mailbox);
        if self.pending.cloud_count() != pending_cloud {
            self.registry.publish_status(self.status_now());
        }
        result
    }

    /// [`Inner::flush`] without telling status observers.
    fn flush_store(&self, mailbox: &mut Mailbox) -> Result<SyncStats> {
        let result = self.sync_store(None);
        if let Err(e) = &result {
            if self.store_writes_to_cloud() && e.kind() != ErrorKind::Corrupt {
                self.cloud_failed(e, mailbox);
            }
        }
        result
    }

    /// The whole chain now. An unreachable cloud is reported in the stats
    /// (`offline`, `errors`), not as an error.
    fn sync_now(&self, mailbox: &mut Mailbox) -> Result<SyncStats> {
        // The chain sync that follows reports the status, once.
        match self.flush_store(mailbox) {
            Ok(mut stats) => {
                stats.absorb(self.sync_chain(mailbox)?);
                Ok(stats)
            }
            Err(e) if self.store_writes_to_cloud() && e.kind() != ErrorKind::Corrupt => {
                Ok(SyncStats {
                    offline: true,
                    errors: vec![e.to_string()],
                    ..SyncStats::default()
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Before this instance's first flush into it: the local tier loses the pieces
    /// no index lists (see [`Tier::sweep_unlisted`]). Not at open, so that a first
    /// read never waits for it; a failure is logged and costs nothing else.
    fn sweep_local(&self) {
        let Some(local) = self.local.as_ref().filter(|t| t.is_pieces()) else {
            return;
        };
        if let Err(e) = local.sweep_unlisted() {
            log::warn!(target: "datasync::sync", "sweeping the local tier failed: {e}");
        }
    }

    /// Whether the tier right below the store is the cloud (no local tier).
    fn store_writes_to_cloud(&self) -> bool {
        self.local.is_none() && self.cloud.is_some()
    }

    /// The pair right below the store: store ↔ local, or store ↔ cloud.
    fn store_pair_lower(&self) -> Option<&Tier> {
        self.local.as_ref().or(self.cloud.as_ref())
    }

    /// Syncs the store's written keys (or `keys`) down one tier, publishing changes
    /// the sync made in the store.
    fn sync_store(&self, keys: Option<Vec<String>>) -> Result<SyncStats> {
        let Some(lower) = self.store_pair_lower() else {
            self.store.take_unsynced();
            return Ok(SyncStats::default());
        };
        let keys = keys.unwrap_or_else(|| self.store.take_unsynced());
        if keys.is_empty() {
            return Ok(SyncStats::default());
        }
        self.sweep_local();
        // Writes numbered up to here are in the store before the sync reads it.
        let mark = self.pending.mark();
        match sync_pair(
            &self.store,
            lower,
            Scope::Keys(keys.clone()),
            &self.sync_ctx(),
        ) {
            Ok(outcome) => {
                self.store
                    .requeue_unsynced(outcome.failed_keys.iter().cloned());
                self.pending
                    .store_synced(mark, succeeded(&keys, &outcome.failed_keys));
                let stats = outcome.stats.clone();
                let first_error = outcome.first_error.clone();
                self.publish(outcome);
                // A key that could not be synced (corrupt data) fails the flush with
                // its own error; the other keys were synced.
                match first_error {
                    Some(e) => Err(e),
                    None => Ok(stats),
                }
            }
            Err(e) => {
                self.store.requeue_unsynced(keys);
                Err(e)
            }
        }
    }

    /// Hands the changes a sync made in the store to the observers.
    fn publish(&self, outcome: PairOutcome) {
        let changes: Vec<Change> = outcome
            .upper_changes
            .into_iter()
            .flat_map(|(key, slots)| {
                let key: std::sync::Arc<str> = key.into();
                slots.into_iter().map(move |c| Change {
                    key: key.clone(),
                    name: c.name.into(),
                    id: c.id,
                    entity: c.slot.entity().cloned(),
                })
            })
            .collect();
        self.registry.publish(changes);
    }

    /// Local ↔ cloud in full, returning the keys it changed in local that the store
    /// holds (to bring up). Without a local tier: store ↔ cloud over what the store holds.
    fn sync_cloud(&self, cloud: &Tier) -> Result<(SyncStats, Vec<String>)> {
        let ctx = self.sync_ctx();
        match &self.local {
            Some(local) => {
                let began = self.clock.now();
                let device = if cloud.is_pieces() {
                    let device = local.writer_id()?;
                    cloud.register_device(&device)?;
                    Some(device)
                } else {
                    None
                };
                let outcome = sync_pair(local, cloud, Scope::Full, &ctx)?;
                if let Some(device) = &device {
                    if outcome.failed_keys.is_empty() {
                        let worked = outcome.stats.keys_compared > 0;
                        cloud.device_synced(device, began, worked)?;
                    }
                }
                // A pending write's partition is in the cloud once both tiers hold
                // the same content for it (local changes only on this thread).
                let in_cloud: Vec<String> = self
                    .pending
                    .tracked_keys()
                    .into_iter()
                    .filter(|k| !outcome.failed_keys.contains(k))
                    .filter(|k| local.entry(k).map(|e| e.hash) == cloud.entry(k).map(|e| e.hash))
                    .collect();
                self.pending.cloud_synced(&in_cloud);
                let held = {
                    // Lock order: `hydrating` before the store's state (as in `ensure_present`).
                    let hydrating = self.hydrating.lock();
                    self.store
                        .held_among(&outcome.upper_keys_changed, &hydrating)
                };
                // Partitions the store does not hold changed too: collection observers
                // that read them (a prefix query) load them.
                self.registry.publish_partitions(
                    outcome
                        .upper_keys_changed
                        .iter()
                        .filter(|k| !held.contains(k))
                        .cloned()
                        .collect(),
                );
                Ok((outcome.stats, held))
            }
            None => {
                // Every partition the store holds, the pending writes among them.
                let pending = self.store.take_unsynced();
                let held = self.store.held_keys("");
                let mark = self.pending.mark();
                match sync_pair(&self.store, cloud, Scope::Keys(held.clone()), &ctx) {
                    Ok(outcome) => {
                        self.store
                            .requeue_unsynced(outcome.failed_keys.iter().cloned());
                        self.pending
                            .store_synced(mark, succeeded(&held, &outcome.failed_keys));
                        let stats = outcome.stats.clone();
                        self.publish(outcome);
                        Ok((stats, Vec::new()))
                    }
                    Err(e) => {
                        self.store.requeue_unsynced(pending);
                        Err(e)
                    }
                }
            }
        }
    }

    /// The periodic chain: the cloud sync, then changed partitions the store holds
    /// brought up. A failing cloud is reported in the stats and the status and
    /// retried with backoff; it is not an error.
    fn sync_chain(&self, mailbox: &mut Mailbox) -> Result<SyncStats> {
        let mut stats = SyncStats::default();
        let Some(cloud) = &self.cloud else {
            return Ok(stats);
        };
        match self.sync_cloud(cloud) {
            Ok((cloud_stats, held)) => {
                stats.absorb(cloud_stats);
                if !held.is_empty() {
                    stats.absorb(self.sync_store(Some(held))?);
                }
                {
                    let mut status = self.status.lock();
                    status.online = true;
                    status.failures = 0;
                    status.last_error = None;
                    status.last_sync = Some(format_millis(now_millis()));
                }
                self.registry.publish_status(self.status_now());
                mailbox.schedule_chain(Instant::now() + self.chain_interval);
                Ok(stats)
            }
            Err(e) => {
                self.cloud_failed(&e, mailbox);
                stats.offline = true;
                stats.errors.push(e.to_string());
                Ok(stats)
            }
        }
    }

    /// The cloud could not be reached: the instance is offline, observers hear it,
    /// and the chain runs again after a backoff (it takes the pending writes along).
    fn cloud_failed(&self, e: &crate::Error, mailbox: &mut Mailbox) {
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
        mailbox.schedule_chain(Instant::now() + delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_stop_at_their_cap() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let nominal: Vec<Duration> = (1..=12).map(|f| nominal_delay(base, max, f)).collect();
        assert_eq!(nominal[0], base);
        for pair in nominal.windows(2) {
            assert!(
                pair[1] == (pair[0] * 2).min(max),
                "{pair:?}: each failure doubles the delay up to the cap"
            );
        }
        assert_eq!(*nominal.last().unwrap(), max);
        assert_eq!(nominal_delay(base, max, u32::MAX), max);
        for failures in 1..=40u32 {
            let n = nominal_delay(base, max, failures);
            for _ in 0..20 {
                let delay = backoff(base, max, failures);
                assert!(delay <= max, "failure {failures}: {delay:?} over the cap");
                assert!(
                    delay >= n.mul_f64(0.75) && delay <= n.mul_f64(1.25),
                    "failure {failures}: {delay:?} is not within 25 % of {n:?}"
                );
            }
        }
    }
}
