//! The dispatcher thread: takes the queued events in rounds, routes each to the
//! subscriptions it concerns, and calls them in order, never under a library lock.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::lock::channel;

use super::changeset::ChangeSet;
use super::registry::{Callback, Change, Event, Registry, Source, Sub, Target};
use super::view::View;
use crate::entity::Entity;
use crate::status::Status;

/// How soon after a round's end the next may end while events keep coming: a
/// round then gathers what arrives until this much time has passed since the last
/// end, so a burst gives collection observers (and hosts that batch their entity
/// observers' deliveries per round) one emission per this interval at most.
/// Entity observers are called as their changes are taken, never later; the first
/// round after a quiet spell, and a round that holds a barrier, end at once.
pub(crate) const ROUND_INTERVAL: Duration = Duration::from_millis(2);

/// The thread's body: one round per batch of queued events, until shutdown.
pub(super) fn run(registry: Weak<Registry>, source: Weak<dyn Source>) {
    let mut last_end: Option<Instant> = None;
    loop {
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let Some(events) = registry.next_events() else {
            return;
        };
        let mut round = Round {
            registry: &registry,
            source: source.upgrade(),
            lists: BTreeMap::new(),
            barriers: Vec::new(),
        };
        for event in events {
            round.handle(event);
        }
        while let Some(last) = last_end.filter(|_| round.barriers.is_empty()) {
            let left = ROUND_INTERVAL.saturating_sub(last.elapsed());
            if left.is_zero() {
                break;
            }
            let Some(events) = registry.more_events_within(left) else {
                break;
            };
            for event in events {
                round.handle(event);
            }
        }
        round.finish();
        last_end = Some(Instant::now());
    }
}

/// What a collection observer has to catch up on at the end of a round.
#[derive(Default)]
struct Pending {
    /// Subscribed this round: its first emission is due.
    first: bool,
    /// Entities changed in its partitions: id → partition key.
    touched: HashMap<String, String>,
}

/// One batch of events. Collection observers are delivered once, at its end, so a
/// burst of changes gives one emission per observer.
struct Round<'a> {
    registry: &'a Registry,
    source: Option<Arc<dyn Source>>,
    /// Collection observers to deliver at the end of the round.
    lists: BTreeMap<u64, Pending>,
    barriers: Vec<channel::Sender<()>>,
}

impl Round<'_> {
    fn handle(&mut self, event: Event) {
        match event {
            Event::Changes(changes) => self.changes(&changes),
            Event::Partitions(keys) => self.partitions(&keys),
            Event::Subscribed(id, value) => self.subscribed(id, value),
            Event::StatusSubscribed(id, status) => {
                if let Some(sub) = self.registry.sub(id) {
                    deliver_status(&sub, &status);
                }
            }
            Event::Status(status) => {
                let subs = {
                    let subs = self.registry.subs.lock();
                    subs.live(&subs.statuses)
                };
                for sub in subs {
                    deliver_status(&sub, &status);
                }
            }
            Event::Barrier(tx) => self.barriers.push(tx),
            // Taken out by `Registry::next_events`.
            Event::Shutdown => {}
        }
    }

    /// Calls the entity observers of each change now; notes the collection
    /// observers a change may affect.
    fn changes(&mut self, changes: &[Change]) {
        let (singles, lists) = {
            let subs = self.registry.subs.lock();
            let singles: Vec<(&Change, Vec<Arc<Sub>>)> = changes
                .iter()
                .filter_map(|c| {
                    let ids = subs.by_entity.get(&*c.name)?.get(&c.id)?;
                    Some((c, subs.live(ids)))
                })
                .collect();
            (singles, subs.live_with_ids(&subs.lists))
        };
        for (id, sub) in lists {
            let mut touched = relevant(&sub, changes).peekable();
            if touched.peek().is_some() {
                let pending = self.lists.entry(id).or_default();
                for c in touched {
                    pending.touched.insert(c.id.clone(), c.key.to_string());
                }
            }
        }
        for (change, subs) in singles {
            for sub in subs {
                deliver_entity(&sub, change.entity.as_ref());
            }
        }
    }

    /// Notes the collection observers whose partitions changed below the store; at
    /// the end of the round their views load what they lack.
    fn partitions(&mut self, keys: &[String]) {
        let lists = {
            let subs = self.registry.subs.lock();
            subs.live_with_ids(&subs.lists)
        };
        for (id, sub) in lists {
            if let Target::All { candidates, .. } = &sub.target {
                if keys.iter().any(|k| candidates.covers(k)) {
                    self.lists.entry(id).or_default();
                }
            }
        }
    }

    fn subscribed(&mut self, id: u64, value: Option<Option<Entity>>) {
        let Some(sub) = self.registry.sub(id) else {
            return;
        };
        match (&sub.target, value) {
            (Target::One { .. }, Some(value)) => deliver_entity(&sub, value.as_ref()),
            (Target::One { name, id }, None) => {
                let Some(source) = &self.source else { return };
                match source.current(name, id) {
                    Ok(value) => deliver_entity(&sub, value.as_ref()),
                    Err(e) => {
                        log::error!(target: "datasync::observe", "cannot read {name} {id:?} for its observer: {e}")
                    }
                }
            }
            (Target::All { .. }, _) => {
                self.lists.entry(id).or_default().first = true;
            }
            (Target::Status | Target::Rounds, _) => {}
        }
    }

    /// Ends the round's entity deliveries (round observers), delivers the
    /// collection observers the round touched, then answers barriers.
    fn finish(self) {
        let rounds = {
            let subs = self.registry.subs.lock();
            subs.live(&subs.rounds)
        };
        for sub in rounds {
            deliver(&sub, |cb| {
                if let Callback::Round(f) = cb {
                    f()
                }
            });
        }
        for (id, pending) in &self.lists {
            if let (Some(sub), Some(source)) = (self.registry.sub(*id), &self.source) {
                deliver_collection(&sub, source.as_ref(), pending);
            }
        }
        for tx in self.barriers {
            let _ = tx.send(());
        }
    }
}

/// The changes in a collection observer's entity name and partitions.
fn relevant<'a>(sub: &'a Sub, changes: &'a [Change]) -> impl Iterator<Item = &'a Change> + 'a {
    let scope = match &sub.target {
        Target::All {
            name, candidates, ..
        } => Some((name, candidates)),
        _ => None,
    };
    changes.iter().filter(move |c| {
        scope.is_some_and(|(name, candidates)| *c.name == **name && candidates.covers(&c.key))
    })
}

/// Brings a collection observer's view up to date and calls it: with the first
/// list (built from the store), then with what changed, when something did.
fn deliver_collection(sub: &Sub, source: &dyn Source, pending: &Pending) {
    let Target::All {
        name,
        query,
        candidates,
        changes,
    } = &sub.target
    else {
        return;
    };
    // The view is taken out of its lock while it reads the store: a read may
    // hydrate a partition through a host adapter, and host code never runs under a
    // library lock. Only this thread touches views.
    let taken = sub.view.lock().take();
    let (view, emission) = match taken {
        Some(mut view) if !pending.first => {
            let emission = view.update(source, &pending.touched);
            (view, emission)
        }
        _ => match View::build(source, name, query, candidates) {
            Ok(view) => {
                let first = if *changes {
                    view.initial()
                } else {
                    ChangeSet {
                        initial: true,
                        removed: Vec::new(),
                        removed_at: Vec::new(),
                        upserted: Vec::new(),
                        list: view.snapshot(),
                    }
                };
                (view, first)
            }
            Err(e) => {
                log::error!(target: "datasync::observe", "cannot query {name} for its observer: {e}");
                return;
            }
        },
    };
    *sub.view.lock() = Some(view);
    if emission.is_empty() {
        return;
    }
    deliver(sub, |cb| match cb {
        Callback::All(f) => f(emission.list()),
        Callback::Changes(f) => f(&emission),
        _ => {}
    });
}

fn deliver_entity(sub: &Sub, value: Option<&Entity>) {
    deliver(sub, |cb| {
        if let Callback::One(f) = cb {
            f(value)
        }
    })
}

fn deliver_status(sub: &Sub, status: &Status) {
    deliver(sub, |cb| {
        if let Callback::Status(f) = cb {
            f(status)
        }
    })
}

/// Calls a subscription's callback unless it was cancelled; a panic is caught and
/// logged (after the callback lock is released: a host logger is host code too).
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
    if panicked {
        log::error!(target: "datasync::observe", "an observer callback panicked; the dispatcher goes on");
    }
}
