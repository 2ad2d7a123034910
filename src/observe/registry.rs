//! The subscriptions, indexed for routing, and the queue of events the dispatcher
//! delivers.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle, ThreadId};

use super::changeset::ChangeSet;
use super::dispatcher;
use super::subscription::Subscription;
use super::view::View;
use crate::entity::Entity;
use crate::error::{Error, Result};
use crate::lock::{channel, Level, Mutex};
use crate::query::QueryOptions;
use crate::status::Status;
use crate::strategy::Candidates;

/// Called with the entity (`None` when absent or deleted).
pub type EntityCallback = Box<dyn FnMut(Option<&Entity>) + Send>;
/// Called with the full matching list.
pub type ListCallback = Box<dyn FnMut(&[Entity]) + Send>;
/// Called with what changed in a query's result.
pub type ChangeCallback = Box<dyn FnMut(&ChangeSet) + Send>;
/// Called with the sync status.
pub type StatusCallback = Box<dyn FnMut(&Status) + Send>;
/// Called at the end of each dispatcher round's entity deliveries.
pub type RoundCallback = Box<dyn FnMut() + Send>;

/// One entity that changed in the store tier. The key and name are shared by the
/// changes of one write or sync (a save allocates none for them).
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub key: Arc<str>,
    pub name: Arc<str>,
    pub id: String,
    pub entity: Option<Entity>,
}

/// What the dispatcher reads to deliver current values.
pub(crate) trait Source: Send + Sync {
    /// One entity now (`None` when absent or deleted).
    fn current(&self, name: &str, id: &str) -> Result<Option<Entity>>;
    /// Several entities of partition `key` now, in the order of `ids`, read under
    /// one lock of the store.
    fn current_in(&self, name: &str, key: &str, ids: &[&str]) -> Result<Vec<Option<Entity>>>;
    /// The partitions `candidates` name now, in the order a query reads them.
    fn partition_keys(&self, candidates: &Candidates) -> Result<Vec<String>>;
    /// The active entities of `name` in partition `key` (brought into the store
    /// first), in id order.
    fn partition(&self, name: &str, key: &str) -> Result<Vec<Entity>>;
}

/// What a subscription observes.
pub(super) enum Target {
    One {
        name: String,
        id: String,
    },
    All {
        name: String,
        query: QueryOptions,
        candidates: Candidates,
        changes: bool,
    },
    Status,
    Rounds,
}

pub(super) enum Callback {
    One(EntityCallback),
    All(ListCallback),
    Changes(ChangeCallback),
    Status(StatusCallback),
    Round(RoundCallback),
}

/// One subscription as the dispatcher sees it.
pub(super) struct Sub {
    pub target: Target,
    pub active: AtomicBool,
    /// The callback; held while it runs, so `unsubscribe` can wait for a running call.
    pub call: Mutex<Option<Callback>>,
    /// A collection observer's maintained result; only the dispatcher touches it.
    pub view: Mutex<Option<View>>,
}

/// What the dispatcher is asked to deliver, in the order it was asked.
pub(super) enum Event {
    /// Entities changed in the store tier.
    Changes(Vec<Change>),
    /// Partitions that changed in a lower tier while the store does not hold them:
    /// a query that reads them sees them, so its observers must too.
    Partitions(Vec<String>),
    /// First delivery of an entity or collection observer; an entity observer
    /// carries the value read when it subscribed.
    Subscribed(u64, Option<Option<Entity>>),
    /// First delivery of a status observer.
    StatusSubscribed(u64, Status),
    /// A new sync status, for every status observer.
    Status(Status),
    /// Answered once every event queued before it was delivered.
    Barrier(channel::Sender<()>),
    /// Deliver what was queued before, then stop.
    Shutdown,
}

#[derive(Default)]
pub(super) struct Subs {
    next_id: u64,
    pub all: HashMap<u64, Arc<Sub>>,
    /// Entity observers by entity name, then id (looked up without allocating).
    pub by_entity: HashMap<String, HashMap<String, Vec<u64>>>,
    pub lists: BTreeSet<u64>,
    pub statuses: BTreeSet<u64>,
    pub rounds: BTreeSet<u64>,
}

/// Subscriptions and the dispatcher's queue.
pub(crate) struct Registry {
    pub(super) subs: Mutex<Subs>,
    count: AtomicUsize,
    /// The dispatcher's mailbox.
    mail: channel::Sender<Event>,
    inbox: channel::Receiver<Event>,
    /// Set once the dispatcher took the shutdown event: it ends when the inbox is empty.
    stopping: AtomicBool,
    thread_id: OnceLock<ThreadId>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Registry {
    /// An empty registry; [`Registry::start`] starts its dispatcher.
    pub fn new() -> Arc<Registry> {
        let (mail, inbox) = channel::unbounded();
        Arc::new(Registry {
            subs: Mutex::new(Subs::default()),
            count: AtomicUsize::new(0),
            mail,
            inbox,
            stopping: AtomicBool::new(false),
            thread_id: OnceLock::new(),
            thread: Mutex::new(None),
        })
    }

    /// Starts the dispatcher thread, reading current values from `source`.
    pub fn start(self: &Arc<Self>, source: std::sync::Weak<dyn Source>, name: &str) -> Result<()> {
        let weak = Arc::downgrade(self);
        let handle = thread::Builder::new()
            .name(format!("datasync-dispatch-{name}"))
            .spawn(move || dispatcher::run(weak, source))
            .map_err(|e| Error::Internal(format!("cannot start the dispatcher: {e}")))?;
        let _ = self.thread_id.set(handle.thread().id());
        *self.thread.lock() = Some(handle);
        Ok(())
    }

    /// Whether the calling thread is the dispatcher.
    pub fn on_dispatcher(&self) -> bool {
        self.thread_id.get() == Some(&thread::current().id())
    }

    /// Whether anyone observes (saves skip building events when nobody does).
    pub fn has_subscribers(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    fn push(&self, event: Event) {
        // The registry holds the receiver, so the channel stays connected.
        let _ = self.mail.send(event);
    }

    /// Waits for events; takes every queued one. `None` once shut down and empty.
    pub(super) fn next_events(&self) -> Option<Vec<Event>> {
        let first = if self.stopping.load(Ordering::Acquire) {
            self.inbox.try_recv().ok()?
        } else {
            self.inbox.recv().ok()?
        };
        Some(self.with_queued(first))
    }

    /// `first` and every event queued after it, less the shutdown (noted).
    fn with_queued(&self, first: Event) -> Vec<Event> {
        let mut events: Vec<Event> = std::iter::once(first)
            .chain(self.inbox.try_iter())
            .collect();
        events.retain(|e| {
            let stop = matches!(e, Event::Shutdown);
            if stop {
                self.stopping.store(true, Ordering::Release);
            }
            !stop
        });
        events
    }

    /// More events, waiting at most `timeout` for the first (`None`: none came, or
    /// the registry is stopping and must not wait).
    pub(super) fn more_events_within(&self, timeout: std::time::Duration) -> Option<Vec<Event>> {
        if self.stopping.load(Ordering::Acquire) {
            return None;
        }
        let first = self.inbox.recv_timeout(timeout).ok()?;
        Some(self.with_queued(first))
    }

    /// Queues changes for delivery.
    pub fn publish(&self, changes: Vec<Change>) {
        if !changes.is_empty() && self.has_subscribers() {
            self.push(Event::Changes(changes));
        }
    }

    /// Queues partitions that changed below the store (see [`Event::Partitions`]).
    pub fn publish_partitions(&self, keys: Vec<String>) {
        if !keys.is_empty() && !self.subs.lock().lists.is_empty() {
            self.push(Event::Partitions(keys));
        }
    }

    fn add(
        self: &Arc<Self>,
        target: Target,
        callback: Callback,
        first: impl FnOnce(u64) -> Option<Event>,
    ) -> Subscription {
        let sub = Arc::new(Sub {
            target,
            active: AtomicBool::new(true),
            call: Mutex::ordered(Level::Callback, Some(callback)),
            view: Mutex::new(None),
        });
        let id = {
            let mut subs = self.subs.lock();
            subs.next_id += 1;
            let id = subs.next_id;
            match &sub.target {
                Target::One { name, id: eid } => subs
                    .by_entity
                    .entry(name.clone())
                    .or_default()
                    .entry(eid.clone())
                    .or_default()
                    .push(id),
                Target::All { .. } => {
                    subs.lists.insert(id);
                }
                Target::Status => {
                    subs.statuses.insert(id);
                }
                Target::Rounds => {
                    subs.rounds.insert(id);
                }
            }
            let counted = !matches!(sub.target, Target::Status | Target::Rounds);
            subs.all.insert(id, sub);
            if counted {
                self.count.fetch_add(1, Ordering::AcqRel);
            }
            id
        };
        if let Some(event) = first(id) {
            self.push(event);
        }
        Subscription::new(id, Arc::downgrade(self))
    }

    pub fn observe(
        self: &Arc<Self>,
        name: &str,
        id: &str,
        current: Option<Entity>,
        callback: EntityCallback,
    ) -> Subscription {
        let target = Target::One {
            name: name.to_string(),
            id: id.to_string(),
        };
        self.add(target, Callback::One(callback), |id| {
            Some(Event::Subscribed(id, Some(current)))
        })
    }

    pub fn observe_all(
        self: &Arc<Self>,
        name: &str,
        query: QueryOptions,
        candidates: Candidates,
        callback: ListCallback,
    ) -> Subscription {
        let target = Target::All {
            name: name.to_string(),
            query,
            candidates,
            changes: false,
        };
        self.add(target, Callback::All(callback), |id| {
            Some(Event::Subscribed(id, None))
        })
    }

    /// Observes a query by change sets (see [`ChangeSet`]).
    pub fn observe_changes(
        self: &Arc<Self>,
        name: &str,
        query: QueryOptions,
        candidates: Candidates,
        callback: ChangeCallback,
    ) -> Subscription {
        let target = Target::All {
            name: name.to_string(),
            query,
            candidates,
            changes: true,
        };
        self.add(target, Callback::Changes(callback), |id| {
            Some(Event::Subscribed(id, None))
        })
    }

    /// Observes the sync status, starting from `current`.
    pub fn observe_status(
        self: &Arc<Self>,
        current: Status,
        callback: StatusCallback,
    ) -> Subscription {
        self.add(Target::Status, Callback::Status(callback), |id| {
            Some(Event::StatusSubscribed(id, current))
        })
    }

    /// Calls `callback` at the end of each round's entity deliveries, before the
    /// round's collection emissions (see [`crate::DataSync::observe_rounds`]).
    pub fn observe_rounds(self: &Arc<Self>, callback: RoundCallback) -> Subscription {
        self.add(Target::Rounds, Callback::Round(callback), |_| None)
    }

    /// Queues a new status for the status observers.
    pub fn publish_status(&self, status: Status) {
        if !self.subs.lock().statuses.is_empty() {
            self.push(Event::Status(status));
        }
    }

    pub(super) fn remove(&self, id: u64) {
        let Some(sub) = self.subs.lock().unindex(id) else {
            return;
        };
        if !matches!(sub.target, Target::Status | Target::Rounds) {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
        sub.active.store(false, Ordering::Release);
        // Wait for a running call to end, unless it is this thread's own (a callback
        // unsubscribing itself): then `active` stops the next one.
        let callback = if self.on_dispatcher() {
            sub.call.try_lock().and_then(|mut c| c.take())
        } else {
            sub.call.lock().take()
        };
        drop(callback);
    }

    /// Blocks until every event queued before the call was delivered.
    pub fn drain(&self) -> Result<()> {
        if self.on_dispatcher() {
            return Err(Error::WouldDeadlock("waiting for observers".into()));
        }
        let (tx, rx) = channel::bounded(1);
        self.push(Event::Barrier(tx));
        rx.recv().map_err(|_| Error::Closed)
    }

    /// Stops the dispatcher after it has delivered what is queued, and joins it.
    pub fn shutdown(&self) {
        self.push(Event::Shutdown);
        if self.on_dispatcher() {
            return;
        }
        if let Some(handle) = self.thread.lock().take() {
            let _ = handle.join();
        }
    }

    pub(super) fn sub(&self, id: u64) -> Option<Arc<Sub>> {
        self.subs.lock().all.get(&id).cloned()
    }
}

impl Subs {
    /// Removes a subscription from every index; returns it if it was there.
    fn unindex(&mut self, id: u64) -> Option<Arc<Sub>> {
        let sub = self.all.remove(&id)?;
        match &sub.target {
            Target::One { name, id: eid } => {
                if let Some(by_id) = self.by_entity.get_mut(name) {
                    if let Some(ids) = by_id.get_mut(eid) {
                        ids.retain(|x| *x != id);
                        if ids.is_empty() {
                            by_id.remove(eid);
                        }
                    }
                    if by_id.is_empty() {
                        self.by_entity.remove(name);
                    }
                }
            }
            Target::All { .. } => {
                self.lists.remove(&id);
            }
            Target::Status => {
                self.statuses.remove(&id);
            }
            Target::Rounds => {
                self.rounds.remove(&id);
            }
        }
        Some(sub)
    }

    /// The live subscriptions among `ids`.
    pub fn live<'a>(&self, ids: impl IntoIterator<Item = &'a u64>) -> Vec<Arc<Sub>> {
        ids.into_iter()
            .filter_map(|id| self.all.get(id).cloned())
            .collect()
    }

    /// The live subscriptions among `ids`, with their ids.
    pub fn live_with_ids<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a u64>,
    ) -> Vec<(u64, Arc<Sub>)> {
        ids.into_iter()
            .filter_map(|id| Some((*id, self.all.get(id)?.clone())))
            .collect()
    }
}
