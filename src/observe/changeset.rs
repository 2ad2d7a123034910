//! What a change-set observer receives: the difference between two emissions of a
//! query's result, and the full result on demand.

use std::fmt::Write as _;
use std::ops::{Deref, Range};
use std::sync::Arc;

use crate::entity::Entity;

/// An entity inserted into or updated in the result, at its index in the new result.
#[derive(Debug, Clone, PartialEq)]
pub struct Upsert {
    pub position: usize,
    pub entity: Entity,
    /// The entity was in the previous list and kept its place among the entries
    /// kept: applying by position replaces the entry at `position` instead of
    /// inserting one.
    pub in_place: bool,
}

/// The full result of a query at one emission, shared with the observer's view:
/// taking it costs nothing; keeping it past the callback makes the next change copy
/// the view's list of handles once (copy on write), never the entities.
#[derive(Clone)]
pub struct ListSnapshot {
    entities: Arc<Vec<Entity>>,
    window: Range<usize>,
}

impl ListSnapshot {
    pub(super) fn new(entities: Arc<Vec<Entity>>, window: Range<usize>) -> ListSnapshot {
        ListSnapshot { entities, window }
    }

    pub fn as_slice(&self) -> &[Entity] {
        &self.entities[self.window.clone()]
    }

    /// The list as one JSON array of the entities' canonical text.
    pub fn to_json(&self) -> String {
        let list = self.as_slice();
        let mut out =
            String::with_capacity(2 + list.iter().map(|e| e.json().len() + 1).sum::<usize>());
        out.push('[');
        for (i, e) in list.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(e.json());
        }
        out.push(']');
        out
    }
}

impl Deref for ListSnapshot {
    type Target = [Entity];
    fn deref(&self) -> &[Entity] {
        self.as_slice()
    }
}

impl std::fmt::Debug for ListSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// One emission of [`crate::Repository::observe_changes`].
///
/// The first emission (`is_initial()`) carries the whole result as upserts at
/// positions 0..count. Every later one says what changed since the previous one.
///
/// **Applying it by position** (what [`ChangeSet::apply_to`] does; the cost follows
/// the change, whatever the list's size): to the list of the previous emission (an
/// empty list for the first), (1) remove the entries at the indexes
/// `removed_at()` (indexes into that previous list, ascending: remove from the
/// last); (2) for each upsert, in the order given (ascending position), replace the
/// entry at `position` when `in_place`, else insert the entity at `position`.
///
/// **Applying it by id** gives the same list: (1) remove every entity whose id is
/// in `removed()` or in `upserted()`; (2) insert each upserted entity at its
/// `position`, in the order given.
///
/// The result is `list()`, `count()` entities long. Entities that are not mentioned
/// did not change; they may still have moved by the inserts and removals around
/// them.
#[derive(Debug, Clone)]
pub struct ChangeSet {
    pub(super) initial: bool,
    pub(super) removed: Vec<String>,
    pub(super) removed_at: Vec<usize>,
    pub(super) upserted: Vec<Upsert>,
    pub(super) list: ListSnapshot,
}

impl ChangeSet {
    /// Whether this is the first emission (the whole result, as upserts).
    pub fn is_initial(&self) -> bool {
        self.initial
    }

    /// Ids that left the result.
    pub fn removed(&self) -> &[String] {
        &self.removed
    }

    /// The indexes, in the previous emission's list, of the entries that leave their
    /// place: those in `removed()` and the upserts that moved. Ascending.
    pub fn removed_at(&self) -> &[usize] {
        &self.removed_at
    }

    /// Entities that entered the result or changed, by ascending position.
    pub fn upserted(&self) -> &[Upsert] {
        &self.upserted
    }

    /// How many entities the result now has.
    pub fn count(&self) -> usize {
        self.list.len()
    }

    /// The whole result now, without another query.
    pub fn list(&self) -> &[Entity] {
        self.list.as_slice()
    }

    /// The whole result, to keep past the callback (see [`ListSnapshot`]).
    pub fn snapshot(&self) -> ListSnapshot {
        self.list.clone()
    }

    /// Whether nothing changed (never true for the first emission).
    pub fn is_empty(&self) -> bool {
        !self.initial && self.removed.is_empty() && self.upserted.is_empty()
    }

    /// Applies the change set to the previous emission's list, by position, as the
    /// type's documentation says.
    pub fn apply_to(&self, list: &mut Vec<Entity>) {
        for &at in self.removed_at.iter().rev() {
            if at < list.len() {
                list.remove(at);
            }
        }
        for u in &self.upserted {
            match list.get_mut(u.position) {
                Some(slot) if u.in_place => *slot = u.entity.clone(),
                _ => list.insert(u.position.min(list.len()), u.entity.clone()),
            }
        }
    }

    /// The change set as one JSON document, what the doors hand across:
    /// `{"initial":bool,"count":n,"removed":["id",...],"removedAt":[i,...],
    /// "upserted":[{"position":i,"inPlace":bool,"entity":{...}},...]}`.
    pub fn to_json(&self) -> String {
        let entities: usize = self.upserted.iter().map(|u| u.entity.json().len()).sum();
        let mut out = String::with_capacity(64 + entities + 32 * self.upserted.len());
        let _ = write!(
            out,
            "{{\"initial\":{},\"count\":{},\"removed\":[",
            self.initial,
            self.count()
        );
        for (i, id) in self.removed.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // An id is a string; serde_json escapes it.
            out.push_str(&serde_json::Value::from(id.as_str()).to_string());
        }
        out.push_str("],\"removedAt\":[");
        for (i, at) in self.removed_at.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{at}");
        }
        out.push_str("],\"upserted\":[");
        for (i, u) in self.upserted.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"position\":{},\"inPlace\":{},\"entity\":",
                u.position, u.in_place
            );
            out.push_str(u.entity.json());
            out.push('}');
        }
        out.push_str("]}");
        out
    }
}
