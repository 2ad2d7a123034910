//! A collection observer's view: the query's whole sorted result (before limit and
//! offset), kept up to date from the changed entities alone, and the change set of
//! its limit/offset window between two emissions.
//!
//! Order is the query's: the sort fields, then the partition (in the order the query
//! reads them), then the id, so it is total and equals what `query` returns. A
//! changed entity is found by binary search on that order. An update that keeps its
//! place is replaced in place; one that moves, an insert and a removal shift the
//! entries between (a memmove of handles); a batch that moves many at once is merged
//! into the list in one pass instead. The window's change set is derived from the
//! changed positions alone: entries that slide into or out of the window because of
//! inserts or removals before it are found by counting, not by comparing the windows.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::changeset::{ChangeSet, ListSnapshot, Upsert};
use super::registry::Source;
use crate::entity::Entity;
use crate::error::Result;
use crate::query::{compare_values, json_eq, Order, QueryOptions};
use crate::strategy::Candidates;

/// Where an entity sits in the order: its sort values, partition and id.
struct RowKey {
    fields: Box<[Value]>,
    part: Arc<str>,
    id: Box<str>,
}

/// One entity whose state the batch read, with its place before and after.
struct Changed {
    id: String,
    old: Option<usize>,
    new: Option<(Arc<RowKey>, Entity)>,
    /// Where `new` sits once the batch is applied.
    at: Option<usize>,
    /// Updated without moving: its place in the order did not change.
    in_place: bool,
}

pub(super) struct View {
    name: String,
    query: QueryOptions,
    candidates: Candidates,
    wanted: Option<HashSet<String>>,
    /// For `Candidates::Keys` and `Split`: each key's rank in the order the query
    /// reads them.
    ranks: Option<Ranks>,
    /// Partitions whose entities are in the view.
    loaded: HashSet<String>,
    parts: HashMap<String, Arc<str>>,
    entities: Arc<Vec<Entity>>,
    keys: Vec<Arc<RowKey>>,
    /// Each entity's place in the order, and a hint of its index: right unless
    /// entries moved since (checked before use), so updates in place need no search.
    by_id: HashMap<String, (Arc<RowKey>, usize)>,
}

impl View {
    /// Reads the whole result from `source`.
    pub fn build(
        source: &dyn Source,
        name: &str,
        query: &QueryOptions,
        candidates: &Candidates,
    ) -> Result<View> {
        let ranks = match candidates {
            Candidates::Keys(keys) => Some(Ranks::of(keys, None)),
            Candidates::Split { keys, separator } => Some(Ranks::of(keys, Some(*separator))),
            Candidates::Prefix(_) => None,
        };
        let mut view = View {
            name: name.to_string(),
            query: query.clone(),
            candidates: candidates.clone(),
            wanted: query.ids.as_ref().map(|ids| ids.iter().cloned().collect()),
            ranks,
            loaded: HashSet::new(),
            parts: HashMap::new(),
            entities: Arc::new(Vec::new()),
            keys: Vec::new(),
            by_id: HashMap::new(),
        };
        let mut rows = Vec::new();
        for key in source.partition_keys(candidates)? {
            if view.loaded.contains(&key) {
                continue;
            }
            for entity in source.partition(name, &key)? {
                if let Some(row) = view.row_key(&key, &entity) {
                    rows.push((row, entity));
                }
            }
            view.loaded.insert(key);
        }
        rows.sort_by(|a, b| view.compare(&a.0, &b.0));
        let mut entities = Vec::with_capacity(rows.len());
        view.keys.reserve(rows.len());
        for (at, (row, entity)) in rows.into_iter().enumerate() {
            let row = Arc::new(row);
            view.by_id.insert(row.id.to_string(), (row.clone(), at));
            view.keys.push(row);
            entities.push(entity);
        }
        view.entities = Arc::new(entities);
        Ok(view)
    }

    /// The first emission: the whole window, as upserts.
    pub fn initial(&self) -> ChangeSet {
        let window = self.window(self.keys.len());
        let upserted = self.entities[window.clone()]
            .iter()
            .enumerate()
            .map(|(position, entity)| Upsert {
                position,
                entity: entity.clone(),
                in_place: false,
            })
            .collect();
        ChangeSet {
            initial: true,
            removed: Vec::new(),
            removed_at: Vec::new(),
            upserted,
            list: ListSnapshot::new(self.entities.clone(), window),
        }
    }

    /// The window now, without a change set.
    pub fn snapshot(&self) -> ListSnapshot {
        ListSnapshot::new(self.entities.clone(), self.window(self.keys.len()))
    }

    /// Brings the view up to date for entities `touched` (id → partition key) and for
    /// partitions the query reads that it has not loaded; returns what changed in the
    /// window. Values are read from `source`, so whatever order the changes arrived
    /// in, the view ends equal to the store.
    pub fn update(&mut self, source: &dyn Source, touched: &HashMap<String, String>) -> ChangeSet {
        let mut read: HashMap<String, (String, Option<Entity>)> = HashMap::new();
        let mut by_key: HashMap<&str, Vec<&str>> = HashMap::new();
        for (id, key) in touched {
            by_key.entry(key.as_str()).or_default().push(id.as_str());
        }
        for (key, ids) in by_key {
            match source.current_in(&self.name, key, &ids) {
                Ok(entities) => {
                    for (id, entity) in ids.into_iter().zip(entities) {
                        read.insert(id.to_string(), (key.to_string(), entity));
                    }
                }
                Err(e) => {
                    log::error!(target: "datasync::observe", "cannot read partition {key:?} for its observer: {e}")
                }
            }
        }
        self.load_new_partitions(source, &mut read);
        let changed = self.changed(read);
        let len_old = self.keys.len();
        let t_old: Vec<usize> = sorted(changed.iter().filter_map(|c| c.old));
        let mut changed = changed;
        self.apply(&mut changed);
        let t_new: Vec<usize> = sorted(changed.iter().filter_map(|c| c.at));
        self.window_changes(len_old, &t_old, &t_new, &changed)
    }

    /// Loads, whole, the partitions a prefix query now reads that the view lacks
    /// (new partitions, or ones brought into the store since the view was built).
    fn load_new_partitions(
        &mut self,
        source: &dyn Source,
        read: &mut HashMap<String, (String, Option<Entity>)>,
    ) {
        if matches!(self.candidates, Candidates::Keys(_)) {
            return;
        }
        let keys = match source.partition_keys(&self.candidates) {
            Ok(keys) => keys,
            Err(e) => {
                log::error!(target: "datasync::observe", "cannot list the partitions of {} for its observer: {e}", self.name);
                return;
            }
        };
        for key in keys {
            if self.loaded.contains(&key) {
                continue;
            }
            match source.partition(&self.name, &key) {
                Ok(entities) => {
                    for entity in entities {
                        read.insert(entity.id().to_string(), (key.clone(), Some(entity)));
                    }
                    self.loaded.insert(key);
                }
                Err(e) => {
                    log::error!(target: "datasync::observe", "cannot read partition {key:?} for its observer: {e}")
                }
            }
        }
    }

    /// The entities whose place or value differs from the view's, with their old
    /// positions (read before anything moves).
    fn changed(&mut self, read: HashMap<String, (String, Option<Entity>)>) -> Vec<Changed> {
        let mut out = Vec::new();
        for (id, (key, entity)) in read {
            let new = entity.and_then(|e| Some((Arc::new(self.row_key(&key, &e)?), e)));
            let old = self
                .by_id
                .get(&id)
                .map(|(row, hint)| self.locate(row, *hint));
            if let (Some(at), Some((_, entity))) = (old, &new) {
                if self.entities[at] == *entity {
                    continue;
                }
            }
            if old.is_none() && new.is_none() {
                continue;
            }
            out.push(Changed {
                id,
                old,
                new,
                at: None,
                in_place: false,
            });
        }
        out
    }

    /// Applies the changes to the list: in place when an entity keeps its place,
    /// else by moving entries, or by one merge when many move.
    fn apply(&mut self, changed: &mut [Changed]) {
        let entities = Arc::make_mut(&mut self.entities);
        let mut moves = Vec::new();
        for (i, c) in changed.iter_mut().enumerate() {
            match (c.old, &c.new) {
                (Some(at), Some((row, entity)))
                    if compare(&self.ranks, &self.query, &self.keys[at], row)
                        == Ordering::Equal =>
                {
                    entities[at] = entity.clone();
                    self.keys[at] = row.clone();
                    self.by_id.insert(c.id.clone(), (row.clone(), at));
                    c.at = Some(at);
                    c.in_place = true;
                }
                _ => moves.push(i),
            }
        }
        if moves.is_empty() {
            return;
        }
        for &i in &moves {
            let c = &changed[i];
            match &c.new {
                Some((row, _)) => {
                    self.by_id.insert(c.id.clone(), (row.clone(), 0));
                }
                None => {
                    self.by_id.remove(&c.id);
                }
            }
        }
        let (ranks, query) = (&self.ranks, &self.query);
        if moves.len().saturating_mul(64) <= self.keys.len() {
            let mut gone: Vec<usize> = moves.iter().filter_map(|&i| changed[i].old).collect();
            gone.sort_unstable();
            for at in gone.into_iter().rev() {
                entities.remove(at);
                self.keys.remove(at);
            }
            for &i in &moves {
                if let Some((row, entity)) = &changed[i].new {
                    let at = self
                        .keys
                        .partition_point(|k| compare(ranks, query, k, row) == Ordering::Less);
                    entities.insert(at, entity.clone());
                    self.keys.insert(at, row.clone());
                }
            }
        } else {
            let gone: HashSet<usize> = moves.iter().filter_map(|&i| changed[i].old).collect();
            let mut incoming: Vec<(Arc<RowKey>, Entity)> = moves
                .iter()
                .filter_map(|&i| changed[i].new.clone())
                .collect();
            incoming.sort_by(|a, b| compare(ranks, query, &a.0, &b.0));
            let old_keys = std::mem::take(&mut self.keys);
            let old_entities = std::mem::take(entities);
            let mut kept = old_keys
                .into_iter()
                .zip(old_entities)
                .enumerate()
                .filter(|(i, _)| !gone.contains(i))
                .map(|(_, row)| row)
                .peekable();
            let mut incoming = incoming.into_iter().peekable();
            let total = kept.size_hint().0 + incoming.len();
            self.keys.reserve(total);
            entities.reserve(total);
            loop {
                let take_incoming = match (kept.peek(), incoming.peek()) {
                    (Some(k), Some(n)) => compare(ranks, query, &n.0, &k.0) == Ordering::Less,
                    (None, Some(_)) => true,
                    (Some(_), None) => false,
                    (None, None) => break,
                };
                let (row, entity) = if take_incoming {
                    incoming.next()
                } else {
                    kept.next()
                }
                .expect("peeked");
                self.keys.push(row);
                entities.push(entity);
            }
        }
        self.place(changed);
    }

    /// Where each changed entity now sits, once some moved (in-place indexes shift
    /// too); refreshes their hints.
    fn place(&mut self, changed: &mut [Changed]) {
        for c in changed.iter_mut() {
            c.at = c.new.as_ref().map(|(row, _)| self.position(row));
            if let (Some(at), Some(entry)) = (c.at, self.by_id.get_mut(&c.id)) {
                entry.1 = at;
            }
        }
    }

    /// The window's change set, from the changed entities' positions before
    /// (`t_old`) and after (`t_new`), both sorted.
    fn window_changes(
        &self,
        len_old: usize,
        t_old: &[usize],
        t_new: &[usize],
        changed: &[Changed],
    ) -> ChangeSet {
        let (old, new) = (self.window(len_old), self.window(self.keys.len()));
        let mut removed = Vec::new();
        let mut removed_at = Vec::new();
        let mut upserted = Vec::new();
        for c in changed {
            let now = c.at.filter(|p| new.contains(p));
            let was = c.old.filter(|p| old.contains(p));
            if let Some(p) = now {
                // Kept in the window and in its place among the kept: replaced there.
                let in_place = c.in_place && was.is_some();
                if let (Some(w), false) = (was, in_place) {
                    removed_at.push(w - old.start);
                }
                upserted.push(Upsert {
                    position: p - new.start,
                    entity: self.entities[p].clone(),
                    in_place,
                });
            } else if let Some(w) = was {
                removed.push(c.id.clone());
                removed_at.push(w - old.start);
            }
        }
        // Unchanged entries keep their order; number them 0.. (`u`). The window held
        // unchanged entries u_old and holds u_new; those in one and not the other
        // slid in or out.
        let untouched = |window: &Range<usize>, touched: &[usize]| {
            let before = |p: usize| p - touched.partition_point(|&t| t < p);
            before(window.start)..before(window.end)
        };
        let (u_old, u_new) = (untouched(&old, t_old), untouched(&new, t_new));
        for range in difference(&u_new, &u_old) {
            for p in untouched_positions(t_new, range) {
                upserted.push(Upsert {
                    position: p - new.start,
                    entity: self.entities[p].clone(),
                    in_place: false,
                });
            }
        }
        for range in difference(&u_old, &u_new) {
            let was = untouched_positions(t_old, range.clone());
            for (p, w) in untouched_positions(t_new, range).into_iter().zip(was) {
                removed.push(self.entities[p].id().to_string());
                removed_at.push(w - old.start);
            }
        }
        upserted.sort_by_key(|u| u.position);
        removed_at.sort_unstable();
        ChangeSet {
            initial: false,
            removed,
            removed_at,
            upserted,
            list: ListSnapshot::new(self.entities.clone(), new),
        }
    }

    /// The limit/offset window of a list of `len` entries.
    fn window(&self, len: usize) -> Range<usize> {
        let start = self.query.offset.unwrap_or(0).min(len);
        let end = self
            .query
            .limit
            .map_or(len, |l| start.saturating_add(l).min(len));
        start..end
    }

    /// The entity's place in the order, or `None` when the query does not select it.
    fn row_key(&mut self, key: &str, entity: &Entity) -> Option<RowKey> {
        if let Some(wanted) = &self.wanted {
            if !wanted.contains(entity.id()) {
                return None;
            }
        }
        let fields: Box<[Value]> = if self.query.where_.is_empty() && self.query.sort.is_empty() {
            Box::new([])
        } else {
            let object: Map<String, Value> = entity.object();
            let matches = self
                .query
                .where_
                .iter()
                .all(|(f, v)| object.get(f).is_some_and(|x| json_eq(x, v)));
            if !matches {
                return None;
            }
            self.query
                .sort
                .iter()
                .map(|s| object.get(&s.field).cloned().unwrap_or(Value::Null))
                .collect()
        };
        let part = match self.parts.get(key) {
            Some(p) => p.clone(),
            None => {
                let p: Arc<str> = Arc::from(key);
                self.parts.insert(key.to_string(), p.clone());
                p
            }
        };
        Some(RowKey {
            fields,
            part,
            id: entity.id().into(),
        })
    }

    fn compare(&self, a: &RowKey, b: &RowKey) -> Ordering {
        compare(&self.ranks, &self.query, a, b)
    }

    /// The index of `row`, trying `hint` first.
    fn locate(&self, row: &Arc<RowKey>, hint: usize) -> usize {
        match self.keys.get(hint) {
            Some(k) if Arc::ptr_eq(k, row) => hint,
            _ => self.position(row),
        }
    }

    fn position(&self, row: &RowKey) -> usize {
        self.keys
            .partition_point(|k| self.compare(k, row) == Ordering::Less)
    }
}

/// The rank of each partition a `Keys` or `Split` query reads, in its order; a
/// sub-partition ranks with its base.
pub(super) struct Ranks {
    of: HashMap<String, usize>,
    separator: Option<char>,
}

impl Ranks {
    fn of(keys: &[String], separator: Option<char>) -> Ranks {
        Ranks {
            of: keys
                .iter()
                .enumerate()
                .rev()
                .map(|(i, k)| (k.clone(), i))
                .collect(),
            separator,
        }
    }

    fn rank(&self, part: &str) -> Option<usize> {
        self.of.get(part).copied().or_else(|| {
            self.separator
                .and_then(|sep| self.of.get(crate::split::base_of(part, sep)).copied())
        })
    }
}

/// The query's order over row keys.
fn compare(ranks: &Option<Ranks>, query: &QueryOptions, a: &RowKey, b: &RowKey) -> Ordering {
    for (i, key) in query.sort.iter().enumerate() {
        let o = compare_values(Some(&a.fields[i]), Some(&b.fields[i]));
        let o = if key.order == Order::Desc {
            o.reverse()
        } else {
            o
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    let parts = if Arc::ptr_eq(&a.part, &b.part) {
        Ordering::Equal
    } else {
        match ranks {
            Some(ranks) => ranks
                .rank(&a.part)
                .cmp(&ranks.rank(&b.part))
                .then_with(|| a.part.cmp(&b.part)),
            None => a.part.cmp(&b.part),
        }
    };
    parts.then_with(|| a.id.cmp(&b.id))
}

fn sorted(positions: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut v: Vec<usize> = positions.collect();
    v.sort_unstable();
    v
}

/// `a` minus `b`, as at most two ranges.
fn difference(a: &Range<usize>, b: &Range<usize>) -> [Range<usize>; 2] {
    let left = a.start..a.end.min(b.start).max(a.start);
    let right = b.end.max(a.start).min(a.end)..a.end;
    if b.is_empty() {
        return [a.clone(), 0..0];
    }
    [left, right]
}

/// The positions in the list of the unchanged entries numbered `range`, given the
/// sorted positions of the changed ones.
fn untouched_positions(touched: &[usize], range: Range<usize>) -> Vec<usize> {
    let mut out = Vec::with_capacity(range.len());
    let (mut j, mut p) = (0, range.start);
    for _ in range {
        while j < touched.len() && touched[j] <= p {
            p += 1;
            j += 1;
        }
        out.push(p);
        p += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_entries_are_found_around_the_changed_ones() {
        assert_eq!(untouched_positions(&[0], 0..2), [1, 2]);
        assert_eq!(untouched_positions(&[1, 2], 1..3), [3, 4]);
        assert_eq!(untouched_positions(&[], 3..5), [3, 4]);
        assert_eq!(untouched_positions(&[0, 5], 2..5), [3, 4, 6]);
    }

    #[test]
    fn range_difference() {
        assert_eq!(difference(&(0..10), &(3..5)), [0..3, 5..10]);
        assert_eq!(difference(&(3..5), &(0..10)), [3..3, 5..5]);
        assert_eq!(difference(&(0..5), &(5..9)), [0..5, 5..5]);
        assert_eq!(difference(&(4..9), &(0..5)), [4..4, 5..9]);
        assert_eq!(difference(&(4..9), &(2..2)), [4..9, 0..0]);
    }
}
