//! "Is it synced?" (DESIGN §10): which of this instance's writes are not yet durable
//! in the local tier, which are not yet in the cloud, and waiting until they are.
//!
//! Every save or delete gets a sequence number, taken while the store is locked for
//! the write. Per partition key the tracker keeps two watermarks: every write to the
//! key numbered at or below `local_done` is durable locally, every one at or below
//! `cloud_done` is in the cloud. A store sync records the last number handed out
//! *before* it started and, when it synced the key, raises the key's watermark to
//! it; a write made while that sync runs has a higher number and stays pending.
//! An entity is listed by its latest write; once that write is in the last tier the
//! entity leaves the tracker, and a key without pending writes leaves with it.
//!
//! The tracker lives in memory: writes made before the instance was opened are not
//! listed (see [`crate::DataSync::pending_writes`]).

use std::collections::HashMap;
use std::time::Instant;

use crate::lock::{channel, Mutex};

/// One write not yet where it is going: the entity it wrote (saved or deleted) and
/// the partition holding it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct PendingWrite {
    /// The entity name.
    pub name: String,
    pub id: String,
    /// The partition key.
    pub key: String,
}

/// This instance's writes that are not yet durable below the store, each listed once
/// under the first tier it has still to reach, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PendingWrites {
    /// Not yet durable in the local tier (always empty without a local tier).
    pub local: Vec<PendingWrite>,
    /// Durable locally (or written, without a local tier) but not yet in the cloud
    /// (always empty without a cloud tier).
    pub cloud: Vec<PendingWrite>,
}

/// The writes of one partition key still pending somewhere.
#[derive(Default)]
struct KeyState {
    /// Every write to the key numbered at or below this is durable locally.
    local_done: u64,
    /// Every write to the key numbered at or below this is in the cloud.
    cloud_done: u64,
    /// The latest write's number per entity.
    writes: Writes,
}

/// The latest write's number per entity, by name then id: a write of an entity
/// already listed allocates nothing.
#[derive(Default)]
struct Writes(HashMap<String, HashMap<String, u64>>);

impl Writes {
    fn insert(&mut self, name: &str, id: &str, seq: u64) {
        let ids = match self.0.get_mut(name) {
            Some(ids) => ids,
            None => self.0.entry(name.to_string()).or_default(),
        };
        match ids.get_mut(id) {
            Some(at) => *at = seq,
            None => {
                ids.insert(id.to_string(), seq);
            }
        }
    }

    fn get(&self, name: &str, id: &str) -> Option<u64> {
        self.0.get(name)?.get(id).copied()
    }

    /// Keeps the writes numbered above `done`.
    fn keep_after(&mut self, done: u64) {
        self.0.retain(|_, ids| {
            ids.retain(|_, seq| *seq > done);
            !ids.is_empty()
        });
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str, u64)> {
        self.0.iter().flat_map(|(name, ids)| {
            ids.iter()
                .map(move |(id, &seq)| (name.as_str(), id.as_str(), seq))
        })
    }

    fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(_, _, seq)| seq)
    }
}

#[derive(Default)]
struct State {
    /// The last number handed out.
    last: u64,
    keys: HashMap<String, KeyState>,
    /// Callers of a wait, woken when a watermark moves (or the instance closes).
    waiters: Vec<channel::Sender<()>>,
    /// The instance closed: waits end.
    closed: bool,
}

/// A store sync's view of the tracker when it started: writes numbered at or below
/// `upto` were in the store before it read anything.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    upto: u64,
}

/// The tracker of one instance.
pub(crate) struct Pending {
    /// Whether there is a local tier (else writes go straight to the cloud).
    local: bool,
    /// Whether there is a cloud tier (else writes are done once local).
    cloud: bool,
    state: Mutex<State>,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    Done,
    TimedOut,
    /// The tracker was shut down (the instance closed) first.
    Closed,
}

impl Pending {
    pub fn new(local: bool, cloud: bool) -> Pending {
        Pending {
            local,
            cloud,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether anything is tracked at all (an instance with only a store tier has
    /// nowhere to make writes durable).
    fn tracks(&self) -> bool {
        self.local || self.cloud
    }

    /// Records writes of entities of `name`, as (key, id). Called while the store is
    /// locked for the write, so a sync that starts later reads it.
    pub fn record<'a>(&self, name: &str, writes: impl IntoIterator<Item = (&'a str, &'a str)>) {
        if !self.tracks() {
            return;
        }
        let mut state = self.state.lock();
        for (key, id) in writes {
            state.last += 1;
            let seq = state.last;
            // A key not tracked has nothing pending: every earlier write to it is
            // already where it is going.
            let entry = match state.keys.get_mut(key) {
                Some(entry) => entry,
                None => state.keys.entry(key.to_string()).or_insert(KeyState {
                    local_done: seq - 1,
                    cloud_done: seq - 1,
                    writes: Writes::default(),
                }),
            };
            entry.writes.insert(name, id, seq);
        }
    }

    /// Taken by a store sync before it reads the store.
    pub fn mark(&self) -> Mark {
        Mark {
            upto: self.state.lock().last,
        }
    }

    /// A store sync that started at `mark` made `keys` durable in the tier below the
    /// store (local, or the cloud without a local tier).
    pub fn store_synced<'a>(&self, mark: Mark, keys: impl IntoIterator<Item = &'a String>) {
        if !self.tracks() {
            return;
        }
        let to_cloud = !self.local;
        self.advance(keys, |k| {
            if to_cloud {
                k.cloud_done = k.cloud_done.max(mark.upto);
            } else {
                k.local_done = k.local_done.max(mark.upto);
            }
        });
    }

    /// A local → cloud sync put what local holds of `keys` in the cloud. Local only
    /// changes on the sync worker, so what it holds is what `local_done` says.
    pub fn cloud_synced<'a>(&self, keys: impl IntoIterator<Item = &'a String>) {
        self.advance(keys, |k| k.cloud_done = k.cloud_done.max(k.local_done));
    }

    /// The keys with writes pending somewhere.
    pub fn tracked_keys(&self) -> Vec<String> {
        self.state.lock().keys.keys().cloned().collect()
    }

    fn advance<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a String>,
        raise: impl Fn(&mut KeyState),
    ) {
        let waiters = {
            let mut state = self.state.lock();
            let mut moved = false;
            for key in keys {
                let Some(k) = state.keys.get_mut(key) else {
                    continue;
                };
                let before = (k.local_done, k.cloud_done);
                raise(k);
                if (k.local_done, k.cloud_done) == before {
                    continue;
                }
                moved = true;
                let done = if self.cloud {
                    k.cloud_done
                } else {
                    k.local_done
                };
                k.writes.keep_after(done);
                if k.writes.is_empty() {
                    state.keys.remove(key);
                }
            }
            if moved {
                std::mem::take(&mut state.waiters)
            } else {
                Vec::new()
            }
        };
        for waiter in waiters {
            let _ = waiter.send(());
        }
    }

    /// The writes pending now, each under the first tier it has still to reach.
    pub fn list(&self) -> PendingWrites {
        let mut local = Vec::new();
        let mut cloud = Vec::new();
        {
            let state = self.state.lock();
            for (key, k) in &state.keys {
                for (name, id, seq) in k.writes.iter() {
                    let write = PendingWrite {
                        name: name.to_string(),
                        id: id.to_string(),
                        key: key.clone(),
                    };
                    if self.local && seq > k.local_done {
                        local.push((seq, write));
                    } else if self.cloud && seq > k.cloud_done {
                        cloud.push((seq, write));
                    }
                }
            }
        }
        local.sort_by_key(|(seq, _)| *seq);
        cloud.sort_by_key(|(seq, _)| *seq);
        PendingWrites {
            local: local.into_iter().map(|(_, w)| w).collect(),
            cloud: cloud.into_iter().map(|(_, w)| w).collect(),
        }
    }

    /// How many writes are pending for the cloud (durable locally, not yet in the
    /// cloud; without a local tier, every write not yet in the cloud).
    pub fn cloud_count(&self) -> usize {
        if !self.cloud {
            return 0;
        }
        let state = self.state.lock();
        state
            .keys
            .values()
            .map(|k| {
                if self.local {
                    k.writes
                        .seqs()
                        .filter(|&seq| seq <= k.local_done && seq > k.cloud_done)
                        .count()
                } else {
                    k.writes.seqs().filter(|&seq| seq > k.cloud_done).count()
                }
            })
            .sum()
    }

    /// What must reach the cloud for a wait to end: the latest write of one entity
    /// (`Some`) or of every pending entity (`None`), as (key, number) pairs.
    fn targets(state: &State, entity: Option<(&str, &str)>) -> Vec<(String, u64)> {
        match entity {
            Some((name, id)) => state
                .keys
                .iter()
                .find_map(|(key, k)| k.writes.get(name, id).map(|seq| (key.clone(), seq)))
                .into_iter()
                .collect(),
            None => state
                .keys
                .iter()
                .filter_map(|(key, k)| k.writes.seqs().max().map(|seq| (key.clone(), seq)))
                .collect(),
        }
    }

    fn reached(state: &State, targets: &[(String, u64)]) -> bool {
        targets.iter().all(|(key, seq)| {
            // A key no longer tracked has nothing pending any more.
            state.keys.get(key).is_none_or(|k| k.cloud_done >= *seq)
        })
    }

    /// Waits until the latest write of an entity (or every write made so far, for
    /// `None`) is in the cloud, or until `deadline`. Never holds the tracker's lock
    /// while it waits.
    pub fn wait_in_cloud(&self, entity: Option<(&str, &str)>, deadline: Instant) -> Waited {
        let targets = Self::targets(&self.state.lock(), entity);
        loop {
            let woken = {
                let mut state = self.state.lock();
                if Self::reached(&state, &targets) {
                    return Waited::Done;
                }
                if state.closed {
                    return Waited::Closed;
                }
                let (tx, rx) = channel::bounded(1);
                state.waiters.push(tx);
                rx
            };
            match woken.recv_deadline(deadline) {
                Ok(()) => {}
                Err(channel::RecvTimeoutError::Timeout) => {
                    return if Self::reached(&self.state.lock(), &targets) {
                        Waited::Done
                    } else {
                        Waited::TimedOut
                    };
                }
                Err(channel::RecvTimeoutError::Disconnected) => return Waited::Closed,
            }
        }
    }

    /// Wakes every waiter for good (the instance closed): their channels disconnect.
    pub fn shutdown(&self) {
        let waiters = {
            let mut state = self.state.lock();
            state.closed = true;
            std::mem::take(&mut state.waiters)
        };
        drop(waiters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn names(list: &[PendingWrite]) -> Vec<&str> {
        list.iter().map(|w| w.id.as_str()).collect()
    }

    #[test]
    fn a_write_moves_from_local_to_cloud_to_nothing() {
        let p = Pending::new(true, true);
        p.record("User", [("k", "a")]);
        assert_eq!(names(&p.list().local), ["a"]);
        let mark = p.mark();
        p.store_synced(mark, [&"k".to_string()]);
        assert!(p.list().local.is_empty());
        assert_eq!(names(&p.list().cloud), ["a"]);
        assert_eq!(p.cloud_count(), 1);
        p.cloud_synced([&"k".to_string()]);
        assert_eq!(p.list(), PendingWrites::default());
    }

    #[test]
    fn a_write_after_the_mark_stays_pending() {
        let p = Pending::new(true, true);
        p.record("User", [("k", "a")]);
        let mark = p.mark();
        p.record("User", [("k", "b")]);
        p.store_synced(mark, [&"k".to_string()]);
        assert_eq!(names(&p.list().local), ["b"]);
        assert_eq!(names(&p.list().cloud), ["a"]);
        p.cloud_synced([&"k".to_string()]);
        assert_eq!(names(&p.list().local), ["b"]);
        assert!(p.list().cloud.is_empty());
    }

    #[test]
    fn rewriting_an_entity_keeps_it_pending_under_its_new_write() {
        let p = Pending::new(false, true);
        p.record("User", [("k", "a")]);
        let mark = p.mark();
        p.record("User", [("k", "a")]);
        p.store_synced(mark, [&"k".to_string()]);
        assert!(p.list().local.is_empty());
        assert_eq!(names(&p.list().cloud), ["a"]);
    }

    #[test]
    fn a_wait_ends_when_the_write_is_in_the_cloud_or_times_out() {
        let p = std::sync::Arc::new(Pending::new(false, true));
        p.record("User", [("k", "a")]);
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(p.wait_in_cloud(Some(("User", "a")), soon), Waited::TimedOut);
        assert_eq!(p.wait_in_cloud(Some(("User", "b")), soon), Waited::Done);
        let other = p.clone();
        let mark = p.mark();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            other.store_synced(mark, [&"k".to_string()]);
        });
        let later = Instant::now() + Duration::from_secs(10);
        assert_eq!(p.wait_in_cloud(None, later), Waited::Done);
        t.join().unwrap();
    }

    #[test]
    fn nothing_is_tracked_without_a_tier_below() {
        let p = Pending::new(false, false);
        p.record("User", [("k", "a")]);
        assert_eq!(p.list(), PendingWrites::default());
    }
}
