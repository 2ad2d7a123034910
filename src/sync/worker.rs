//! The sync worker: one thread per instance running every sync, so syncs never
//! overlap and callers wait on a reply, not on a lock. Its mailbox is a channel;
//! the timers (a flush due after writes, the next chain sync) live on the thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lock::{channel, Mutex};
use crate::sync::engine::SyncStats;

/// What a caller asks the worker for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// Sync the store with the tier below (make every write durable there).
    Flush,
    /// The whole chain, then bring changes up to the store.
    SyncNow,
    /// Check every tier against its partitions, between syncs (so that no sync is
    /// half way through writing a tier while it is read).
    Audit,
}

/// What the worker answers.
pub(crate) enum Answer {
    Synced(SyncStats),
    Audited(Vec<String>),
}

pub(crate) type Reply = channel::Sender<Result<Answer>>;

enum Mail {
    Request(Request, Reply),
    /// The first write since the last flush.
    Wrote,
    Shutdown,
}

/// What the worker does in one turn.
pub(crate) struct Turn {
    pub requests: Vec<(Request, Reply)>,
    pub flush_due: bool,
    pub chain_due: bool,
    pub shutdown: bool,
}

/// The worker's end of the mailbox, and its timers.
pub(crate) struct Mailbox {
    inbox: channel::Receiver<Mail>,
    write_noted: Arc<AtomicBool>,
    delay: Duration,
    writes_since: Option<Instant>,
    next_chain: Option<Instant>,
    requests: Vec<(Request, Reply)>,
    shutdown: bool,
}

/// The callers' end: the mailbox and the thread.
pub(crate) struct Worker {
    mail: channel::Sender<Mail>,
    /// Handed to the thread when it starts.
    mailbox: Mutex<Option<Mailbox>>,
    write_noted: Arc<AtomicBool>,
    thread_id: OnceLock<ThreadId>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Worker {
    pub fn new(delay: Duration, first_chain: Option<Instant>) -> Worker {
        let (mail, inbox) = channel::unbounded();
        let write_noted = Arc::new(AtomicBool::new(false));
        Worker {
            mail,
            mailbox: Mutex::new(Some(Mailbox {
                inbox,
                write_noted: write_noted.clone(),
                delay,
                writes_since: None,
                next_chain: first_chain,
                requests: Vec::new(),
                shutdown: false,
            })),
            write_noted,
            thread_id: OnceLock::new(),
            thread: Mutex::new(None),
        }
    }

    /// Starts the thread; `body` receives the mailbox.
    pub fn spawn(&self, name: &str, body: impl FnOnce(Mailbox) + Send + 'static) -> Result<()> {
        let mailbox = self
            .mailbox
            .lock()
            .take()
            .ok_or_else(|| Error::Internal("the sync worker was started twice".into()))?;
        let handle = thread::Builder::new()
            .name(format!("datasync-sync-{name}"))
            .spawn(move || {
                super::priority::lower_this_thread();
                body(mailbox)
            })
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
        if !self.write_noted.swap(true, Ordering::AcqRel) {
            let _ = self.mail.send(Mail::Wrote);
        }
    }

    /// Asks for a job and waits for its result.
    pub fn request(&self, request: Request) -> Result<Answer> {
        if self.on_worker() {
            return Err(Error::WouldDeadlock(format!("{request:?}")));
        }
        let (reply, result) = channel::bounded(1);
        // Once the thread has ended its mailbox is gone: the send or the wait fails.
        self.mail
            .send(Mail::Request(request, reply))
            .map_err(|_| Error::Closed)?;
        result.recv().map_err(|_| Error::Closed)?
    }

    /// Stops the worker after a last flush and joins it. Requests that arrive later
    /// fail with `Closed`.
    pub fn shutdown(&self) {
        let _ = self.mail.send(Mail::Shutdown);
        if let Some(handle) = self.thread.lock().take() {
            let _ = handle.join();
        }
        // Never started: drop the mailbox, so that requests fail instead of waiting.
        self.mailbox.lock().take();
    }
}

impl Mailbox {
    /// Waits for the next turn.
    pub fn next_turn(&mut self) -> Turn {
        loop {
            while let Ok(mail) = self.inbox.try_recv() {
                self.take(mail);
            }
            let now = Instant::now();
            let flush_at = self.writes_since.map(|t| t + self.delay);
            let flush_due = flush_at.is_some_and(|t| now >= t);
            let chain_due = self.next_chain.is_some_and(|t| now >= t);
            let asked = !self.requests.is_empty();
            if self.shutdown || asked || flush_due || chain_due {
                if flush_due || self.shutdown || asked {
                    // Every write noted so far is taken by this turn's flush.
                    self.writes_since = None;
                    self.write_noted.store(false, Ordering::Release);
                }
                if chain_due {
                    self.next_chain = None;
                }
                return Turn {
                    requests: std::mem::take(&mut self.requests),
                    flush_due,
                    chain_due,
                    shutdown: self.shutdown,
                };
            }
            let mail = match [flush_at, self.next_chain].into_iter().flatten().min() {
                Some(deadline) => match self.inbox.recv_deadline(deadline) {
                    Ok(mail) => Some(mail),
                    Err(channel::RecvTimeoutError::Timeout) => None,
                    Err(channel::RecvTimeoutError::Disconnected) => Some(Mail::Shutdown),
                },
                None => Some(self.inbox.recv().unwrap_or(Mail::Shutdown)),
            };
            if let Some(mail) = mail {
                self.take(mail);
            }
        }
    }

    fn take(&mut self, mail: Mail) {
        match mail {
            Mail::Request(request, reply) => self.requests.push((request, reply)),
            Mail::Wrote => {
                self.writes_since.get_or_insert_with(Instant::now);
            }
            Mail::Shutdown => self.shutdown = true,
        }
    }

    /// Sets when the next chain sync runs.
    pub fn schedule_chain(&mut self, at: Instant) {
        self.next_chain = Some(at);
    }
}
