//! The sync worker: one thread per instance running every sync, so syncs never
//! overlap and callers wait on a reply, not on a lock.

use std::sync::mpsc;
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lock::{Condvar, Mutex};
use crate::sync::engine::SyncStats;

/// What a caller asks the worker for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Job {
    /// Sync the store with the tier below (make every write durable there).
    Flush,
    /// The whole chain, then bring changes up to the store.
    SyncNow,
}

pub(crate) type Reply = mpsc::Sender<Result<SyncStats>>;

/// What the worker does in one turn.
pub(crate) struct Turn {
    pub requests: Vec<(Job, Reply)>,
    pub flush_due: bool,
    pub chain_due: bool,
    pub shutdown: bool,
}

struct Control {
    shutdown: bool,
    requests: Vec<(Job, Reply)>,
    writes_since: Option<Instant>,
    next_chain: Option<Instant>,
}

/// The worker's mailbox and timers.
pub(crate) struct Worker {
    control: Mutex<Control>,
    wake: Condvar,
    delay: Duration,
    thread_id: std::sync::OnceLock<ThreadId>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Worker {
    pub fn new(delay: Duration, first_chain: Option<Instant>) -> Worker {
        Worker {
            control: Mutex::new(Control {
                shutdown: false,
                requests: Vec::new(),
                writes_since: None,
                next_chain: first_chain,
            }),
            wake: Condvar::new(),
            delay,
            thread_id: std::sync::OnceLock::new(),
            thread: Mutex::new(None),
        }
    }

    pub fn spawn(&self, name: &str, body: impl FnOnce() + Send + 'static) -> Result<()> {
        let handle = thread::Builder::new()
            .name(format!("datasync-sync-{name}"))
            .spawn(body)
            .map_err(|e| Error::Internal(format!("cannot start the sync worker: {e}")))?;
        let _ = self.thread_id.set(handle.thread().id());
        *self.thread.lock() = Some(handle);
        Ok(())
    }

    pub fn on_worker(&self) -> bool {
        self.thread_id.get() == Some(&thread::current().id())
    }

    /// Notes a write: a flush becomes due `delay` after the first unsynced write.
    pub fn note_write(&self) {
        let mut c = self.control.lock();
        if c.writes_since.is_none() {
            c.writes_since = Some(Instant::now());
            drop(c);
            self.wake.notify_one();
        }
    }

    /// Sets when the next chain sync runs.
    pub fn schedule_chain(&self, at: Option<Instant>) {
        self.control.lock().next_chain = at;
        self.wake.notify_one();
    }

    /// Asks for a job and waits for its result.
    pub fn request(&self, job: Job) -> Result<SyncStats> {
        if self.on_worker() {
            return Err(Error::WouldDeadlock(format!("{job:?}")));
        }
        let (tx, rx) = mpsc::channel();
        {
            let mut c = self.control.lock();
            if c.shutdown {
                return Err(Error::Closed);
            }
            c.requests.push((job, tx));
        }
        self.wake.notify_one();
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// Waits for the next turn (worker thread only).
    pub fn next_turn(&self) -> Turn {
        let mut c = self.control.lock();
        loop {
            let now = Instant::now();
            let flush_at = c.writes_since.map(|t| t + self.delay);
            let flush_due = flush_at.is_some_and(|t| now >= t);
            let chain_due = c.next_chain.is_some_and(|t| now >= t);
            if c.shutdown || !c.requests.is_empty() || flush_due || chain_due {
                if flush_due || c.shutdown || !c.requests.is_empty() {
                    c.writes_since = None;
                }
                if chain_due {
                    c.next_chain = None;
                }
                return Turn {
                    requests: std::mem::take(&mut c.requests),
                    flush_due,
                    chain_due,
                    shutdown: c.shutdown,
                };
            }
            match [flush_at, c.next_chain].into_iter().flatten().min() {
                Some(deadline) => {
                    self.wake.wait_until(&mut c, deadline);
                }
                None => self.wake.wait(&mut c),
            }
        }
    }

    /// Stops the worker after a last flush and joins it.
    pub fn shutdown(&self) {
        self.control.lock().shutdown = true;
        self.wake.notify_all();
        if let Some(handle) = self.thread.lock().take() {
            let _ = handle.join();
        }
    }

    /// Replies `Closed` to requests that arrive after the last turn.
    pub fn refuse_pending(&self) {
        let requests = std::mem::take(&mut self.control.lock().requests);
        for (_, reply) in requests {
            let _ = reply.send(Err(Error::Closed));
        }
    }
}
