//! The dispatcher thread: takes the queued events in rounds, routes each to the
//! subscriptions it concerns, and calls them in order, never under a library lock.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Weak};

use super::registry::{Callback, Change, Event, Registry, Source, Sub, Target};
use crate::entity::Entity;
use crate::status::Status;

/// The thread's body: one round per batch of queued events, until shutdown.
pub(super) fn run(registry: Weak<Registry>, source: Weak<dyn Source>) {
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
            lists: BTreeSet::new(),
            barriers: Vec::new(),
        };
        for event in events {
            round.handle(event);
        }
        round.finish();
    }
}

/// One batch of events. Collection observers are delivered once, at its end, so a
/// burst of changes gives one emission per observer.
struct Round<'a> {
    registry: &'a Registry,
    source: Option<Arc<dyn Source>>,
    /// Collection observers to deliver at the end of the round.
    lists: BTreeSet<u64>,
    barriers: Vec<mpsc::Sender<()>>,
}

impl Round<'_> {
    fn handle(&mut self, event: Event) {
        match event {
            Event::Changes(changes) => self.changes(&changes),
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
                    let ids = subs.by_entity.get(&c.name)?.get(&c.id)?;
                    Some((c, subs.live(ids)))
                })
                .collect();
            (singles, subs.live_with_ids(&subs.lists))
        };
        for (id, sub) in lists {
            if affects(&sub, changes) {
                self.lists.insert(id);
            }
        }
        for (change, subs) in singles {
            for sub in subs {
                deliver_entity(&sub, change.entity.as_ref());
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
                self.lists.insert(id);
            }
            (Target::Status, _) => {}
        }
    }

    /// Delivers the collection observers the round touched, then answers barriers.
    fn finish(self) {
        for id in &self.lists {
            if let (Some(sub), Some(source)) = (self.registry.sub(*id), &self.source) {
                deliver_list(&sub, source.as_ref());
            }
        }
        for tx in self.barriers {
            let _ = tx.send(());
        }
    }
}

/// Whether a change is in a collection observer's entity name and partitions.
fn affects(sub: &Sub, changes: &[Change]) -> bool {
    let Target::All {
        name, candidates, ..
    } = &sub.target
    else {
        return false;
    };
    changes
        .iter()
        .any(|c| &c.name == name && candidates.covers(&c.key))
}

/// Runs the query of a collection observer and calls it with the list.
fn deliver_list(sub: &Sub, source: &dyn Source) {
    let Target::All { name, query, .. } = &sub.target else {
        return;
    };
    match source.list(name, query) {
        Ok(list) => deliver(sub, |cb| {
            if let Callback::All(f) = cb {
                f(&list)
            }
        }),
        Err(e) => {
            log::error!(target: "datasync::observe", "cannot query {name} for its observer: {e}")
        }
    }
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
