use std::collections::{BTreeSet, HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock, Weak};
use std::thread::{self, JoinHandle, ThreadId};

use crate::entity::Entity;
use crate::error::{Error, Result};
use crate::lock::{Condvar, Level, Mutex};
use crate::query::QueryOptions;
use crate::status::Status;
use crate::strategy::Candidates;

/// Called with the entity (`None` when absent or deleted).
pub type EntityCallback = Box<dyn FnMut(Option<&Entity>) + Send>;
/// Called with the full matching list.
pub type ListCallback = Box<dyn FnMut(&[Entity]) + Send>;
/// Called with the sync status.
pub type StatusCallback = Box<dyn FnMut(&Status) + Send>;

/// One entity that changed in the store tier.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub key: String,
    pub name: String,
    pub id: String,
    pub entity: Option<Entity>,
}

/// What the dispatcher reads to deliver current values.
pub(crate) trait Source: Send + Sync {
    fn current(&self, name: &str, id: &str) -> Result<Option<Entity>>;
    fn list(&self, name: &str, query: &QueryOptions) -> Result<Vec<Entity>>;
}

enum Target {
    One {
        name: String,
        id: String,
    },
    All {
        name: String,
        query: QueryOptions,
        candidates: Candidates,
    },
    Status,
}

enum Callback {
    One(EntityCallback),
    All(ListCallback),
    Status(StatusCallback),
}

struct Sub {
    target: Target,
    active: AtomicBool,
    /// The callback; held while it runs, so `unsubscribe` can wait for a running call.
    call: Mutex<Option<Callback>>,
}

enum Job {
    Changes(Vec<Change>),
    /// First delivery; single observers carry the value read when they subscribed.
    Initial(u64, Option<Option<Entity>>),
    /// First delivery of a status observer.
    InitialStatus(u64, Status),
    /// A new sync status, for every status observer.
    Status(Status),
    Barrier(mpsc::Sender<()>),
}

#[derive(Default)]
struct Subs {
    next_id: u64,
    all: HashMap<u64, Arc<Sub>>,
    /// Single observers by entity name, then id (looked up without allocating).
    by_entity: HashMap<String, HashMap<String, Vec<u64>>>,
    lists: BTreeSet<u64>,
    statuses: BTreeSet<u64>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    shutdown: bool,
}

/// Subscriptions and the dispatcher's queue.
pub(crate) struct Registry {
    subs: Mutex<Subs>,
    count: AtomicUsize,
    queue: Mutex<Queue>,
    wake: Condvar,
    thread_id: OnceLock<ThreadId>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A live observer. Dropping it, or calling [`Subscription::unsubscribe`], stops it:
/// once that returns, the callback is not called again.
pub struct Subscription {
    id: u64,
    registry: Weak<Registry>,
}

impl Subscription {
    /// Stops the observer. Idempotent; may be called from inside the callback.
    pub fn unsubscribe(&self) {
        if let Some(registry) = self.registry.upgrade() {
            registry.remove(self.id);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.unsubscribe();
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Subscription({})", self.id)
    }
}

impl Registry {
    /// An empty registry; [`Registry::start`] starts its dispatcher.
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry {
            subs: Mutex::new(Subs::default()),
            count: AtomicUsize::new(0),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            thread_id: OnceLock::new(),
            thread: Mutex::new(None),
        })
    }

    /// Starts the dispatcher thread, reading current values from `source`.
    pub fn start(self: &Arc<Self>, source: Weak<dyn Source>, name: &str) -> Result<()> {
        let weak = Arc::downgrade(self);
        let handle = thread::Builder::new()
            .name(format!("datasync-dispatch-{name}"))
            .spawn(move || run(weak, source))
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

    fn push(&self, job: Job) {
        let mut q = self.queue.lock();
        q.jobs.push_back(job);
        drop(q);
        self.wake.notify_one();
    }

    /// Queues changes for delivery.
    pub fn publish(&self, changes: Vec<Change>) {
        if !changes.is_empty() && self.has_subscribers() {
            self.push(Job::Changes(changes));
        }
    }

    fn add(
        self: &Arc<Self>,
        target: Target,
        callback: Callback,
        initial: impl FnOnce(u64) -> Job,
    ) -> Subscription {
        let sub = Arc::new(Sub {
            target,
            active: AtomicBool::new(true),
            call: Mutex::ordered(Level::Callback, Some(callback)),
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
            }
            let counted = !matches!(sub.target, Target::Status);
            subs.all.insert(id, sub);
            if counted {
                self.count.fetch_add(1, Ordering::AcqRel);
            }
            id
        };
        self.push(initial(id));
        Subscription {
            id,
            registry: Arc::downgrade(self),
        }
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
            Job::Initial(id, Some(current))
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
        };
        self.add(target, Callback::All(callback), |id| Job::Initial(id, None))
    }

    /// Observes the sync status, starting from `current`.
    pub fn observe_status(
        self: &Arc<Self>,
        current: Status,
        callback: StatusCallback,
    ) -> Subscription {
        self.add(Target::Status, Callback::Status(callback), |id| {
            Job::InitialStatus(id, current)
        })
    }

    /// Queues a new status for the status observers.
    pub fn publish_status(&self, status: Status) {
        if !self.subs.lock().statuses.is_empty() {
            self.push(Job::Status(status));
        }
    }

    fn remove(&self, id: u64) {
        let sub = {
            let mut subs = self.subs.lock();
            let Some(sub) = subs.all.remove(&id) else {
                return;
            };
            match &sub.target {
                Target::One { name, id: eid } => {
                    if let Some(by_id) = subs.by_entity.get_mut(name) {
                        if let Some(ids) = by_id.get_mut(eid) {
                            ids.retain(|x| *x != id);
                            if ids.is_empty() {
                                by_id.remove(eid);
                            }
                        }
                        if by_id.is_empty() {
                            subs.by_entity.remove(name);
                        }
                    }
                }
                Target::All { .. } => {
                    subs.lists.remove(&id);
                }
                Target::Status => {
                    subs.statuses.remove(&id);
                }
            }
            if !matches!(sub.target, Target::Status) {
                self.count.fetch_sub(1, Ordering::AcqRel);
            }
            sub
        };
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

    /// Blocks until every job queued before the call was delivered.
    pub fn drain(&self) -> Result<()> {
        if self.on_dispatcher() {
            return Err(Error::WouldDeadlock("waiting for observers".into()));
        }
        let (tx, rx) = mpsc::channel();
        self.push(Job::Barrier(tx));
        rx.recv().map_err(|_| Error::Closed)
    }

    /// Stops the dispatcher after it has delivered what is queued, and joins it.
    pub fn shutdown(&self) {
        self.queue.lock().shutdown = true;
        self.wake.notify_all();
        if self.on_dispatcher() {
            return;
        }
        if let Some(handle) = self.thread.lock().take() {
            let _ = handle.join();
        }
    }

    fn sub(&self, id: u64) -> Option<Arc<Sub>> {
        self.subs.lock().all.get(&id).cloned()
    }
}

fn deliver(sub: &Sub, f: impl FnOnce(&mut Callback)) {
    let panicked = {
        let mut call = sub.call.lock();
        if !sub.active.load(Ordering::Acquire) {
            return;
        }
        match call.as_mut() {
            Some(callback) => catch_unwind(AssertUnwindSafe(|| f(callback))).is_err(),
            None => false,
        }
    };
    // Logged after the callback lock is released: a host logger is host code too.
    if panicked {
        log::error!(target: "datasync::observe", "an observer callback panicked; the dispatcher goes on");
    }
}

fn run(registry: Weak<Registry>, source: Weak<dyn Source>) {
    loop {
        let Some(reg) = registry.upgrade() else {
            return;
        };
        let jobs: Vec<Job> = {
            let mut q = reg.queue.lock();
            while q.jobs.is_empty() && !q.shutdown {
                reg.wake.wait(&mut q);
            }
            if q.jobs.is_empty() {
                return;
            }
            q.jobs.drain(..).collect()
        };
        let source = source.upgrade();
        let mut lists: BTreeSet<u64> = BTreeSet::new();
        let mut barriers = Vec::new();
        for job in jobs {
            match job {
                Job::Changes(changes) => {
                    type Routed = (Vec<(usize, Vec<Arc<Sub>>)>, Vec<(u64, Arc<Sub>)>);
                    let (singles, list_ids): Routed = {
                        let subs = reg.subs.lock();
                        let singles = changes
                            .iter()
                            .enumerate()
                            .filter_map(|(i, c)| {
                                let ids = subs.by_entity.get(&c.name)?.get(&c.id)?;
                                Some((
                                    i,
                                    ids.iter()
                                        .filter_map(|id| subs.all.get(id).cloned())
                                        .collect(),
                                ))
                            })
                            .collect();
                        let lists = subs
                            .lists
                            .iter()
                            .filter_map(|id| Some((*id, subs.all.get(id)?.clone())))
                            .collect();
                        (singles, lists)
                    };
                    for (id, sub) in list_ids {
                        if let Target::All {
                            name, candidates, ..
                        } = &sub.target
                        {
                            if changes
                                .iter()
                                .any(|c| &c.name == name && candidates.covers(&c.key))
                            {
                                lists.insert(id);
                            }
                        }
                    }
                    for (i, subs) in singles {
                        for sub in subs {
                            deliver(&sub, |cb| {
                                if let Callback::One(f) = cb {
                                    f(changes[i].entity.as_ref())
                                }
                            });
                        }
                    }
                }
                Job::Initial(id, initial) => {
                    let Some(sub) = reg.sub(id) else { continue };
                    match &sub.target {
                        Target::One { .. } if initial.is_some() => {
                            let value = initial.flatten();
                            deliver(&sub, |cb| {
                                if let Callback::One(f) = cb {
                                    f(value.as_ref())
                                }
                            })
                        }
                        Target::One { name, id } => {
                            let Some(source) = &source else { continue };
                            match source.current(name, id) {
                                Ok(value) => deliver(&sub, |cb| {
                                    if let Callback::One(f) = cb {
                                        f(value.as_ref())
                                    }
                                }),
                                Err(e) => {
                                    log::error!(target: "datasync::observe", "cannot read {name} {id:?} for its observer: {e}")
                                }
                            }
                        }
                        Target::All { .. } => {
                            lists.insert(id);
                        }
                        Target::Status => {}
                    }
                }
                Job::InitialStatus(id, status) => {
                    if let Some(sub) = reg.sub(id) {
                        deliver(&sub, |cb| {
                            if let Callback::Status(f) = cb {
                                f(&status)
                            }
                        });
                    }
                }
                Job::Status(status) => {
                    let subs: Vec<Arc<Sub>> = {
                        let subs = reg.subs.lock();
                        subs.statuses
                            .iter()
                            .filter_map(|id| subs.all.get(id).cloned())
                            .collect()
                    };
                    for sub in subs {
                        deliver(&sub, |cb| {
                            if let Callback::Status(f) = cb {
                                f(&status)
                            }
                        });
                    }
                }
                Job::Barrier(tx) => barriers.push(tx),
            }
        }
        for id in lists {
            let (Some(sub), Some(source)) = (reg.sub(id), &source) else {
                continue;
            };
            let Target::All { name, query, .. } = &sub.target else {
                continue;
            };
            match source.list(name, query) {
                Ok(list) => deliver(&sub, |cb| {
                    if let Callback::All(f) = cb {
                        f(&list)
                    }
                }),
                Err(e) => {
                    log::error!(target: "datasync::observe", "cannot query {name} for its observer: {e}")
                }
            }
        }
        for tx in barriers {
            let _ = tx.send(());
        }
    }
}
