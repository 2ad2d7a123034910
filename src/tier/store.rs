//! The store tier's own state: which partitions it holds, which were written since
//! they were last hashed or synced, and a write counter per key (the guard against a
//! sync writing back an older merge over a newer save).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{Adapter, Loaded, Marks, Tier, TierState};
use crate::clock::{now_millis, Millis};
use crate::error::Result;
use crate::meta::MetaEntry;
use crate::partition::Counts;

#[derive(Default)]
pub(super) struct StoreMarks {
    /// Keys whose entry must be recomputed.
    pub stale: BTreeSet<String>,
    /// Keys written since their last sync to the tier below.
    pub unsynced: BTreeSet<String>,
    /// Keys the store holds (hydrated or written).
    pub present: HashSet<String>,
    /// A write counter per key.
    pub generation: HashMap<String, u64>,
    /// Whether the tier below keeps pieces: then the ids written are kept too.
    pub track_ids: bool,
    /// Per key, the slots written since the key was last synced below, each with
    /// what it held before the first of those writes.
    pub written_ids: HashMap<String, HashMap<(String, String), Was>>,
    /// Per key, the entry hash and the writes of the tier below whose content the
    /// store holds, but for the slots written since (`written_ids`): then a flush
    /// appends just those, and a pull applies just the writes beyond.
    pub reflects: HashMap<String, (String, crate::pieces::Vector)>,
    /// Keys read whole for a merge with the tier below and not written since.
    pub merging: HashSet<String>,
}

/// What a slot held before a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Was {
    Absent,
    Active,
    Deleted,
}

impl Was {
    pub fn of(slot: Option<&crate::partition::Slot>) -> Was {
        match slot {
            None => Was::Absent,
            Some(crate::partition::Slot::Active(_)) => Was::Active,
            Some(crate::partition::Slot::Deleted(_)) => Was::Deleted,
        }
    }
}

/// What a flush of the slots written since the last sync needs.
pub(crate) struct Written {
    /// The entry hash of the tier below the store reflects.
    pub reflects: String,
    /// Each slot written: name, id, what it held before, what it holds now.
    pub slots: Vec<(String, String, Was, Option<crate::partition::Slot>)>,
}

impl TierState {
    fn store_marks(&mut self) -> &mut StoreMarks {
        match &mut self.marks {
            Marks::Store(marks) => marks,
            Marks::Blobs(_) => unreachable!("store marks asked of a blob tier"),
        }
    }

    fn store_marks_ref(&self) -> Option<&StoreMarks> {
        match &self.marks {
            Marks::Store(marks) => Some(marks),
            Marks::Blobs(_) => None,
        }
    }
}

fn insert_absent(set: &mut HashSet<String>, key: &str) {
    if !set.contains(key) {
        set.insert(key.to_string());
    }
}

impl Tier {
    /// Records writes to `keys` (new generation, stale entry, to sync). Called while
    /// the store adapter is still locked, so a sync that read a key before the write
    /// sees the new generation.
    pub fn mark_written<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
        name: &str,
        ids: impl IntoIterator<Item = (&'a str, &'a str, Was)>,
    ) {
        let mut state = self.state.lock();
        let marks = state.store_marks();
        if marks.track_ids {
            for (key, id, was) in ids {
                // Only where a flush can append them: the store reflects the tier
                // below. A write during a whole merge makes that merge's result
                // unknown to reflect anything.
                marks.merging.remove(key);
                if !marks.reflects.contains_key(key) {
                    continue;
                }
                let per_key = match marks.written_ids.get_mut(key) {
                    Some(m) => m,
                    None => marks.written_ids.entry(key.to_string()).or_default(),
                };
                per_key
                    .entry((name.to_string(), id.to_string()))
                    .or_insert(was);
            }
        }
        for key in keys {
            match marks.generation.get_mut(key) {
                Some(g) => *g += 1,
                None => {
                    marks.generation.insert(key.to_string(), 1);
                }
            }
            if !marks.stale.contains(key) {
                marks.stale.insert(key.to_string());
            }
            if !marks.unsynced.contains(key) {
                marks.unsynced.insert(key.to_string());
            }
            insert_absent(&mut marks.present, key);
        }
    }

    /// A partition written by the library itself (hydration, sync): new generation,
    /// fresh entry.
    pub(super) fn record_store_write(&self, key: &str, entry: MetaEntry) {
        let mut state = self.state.lock();
        let marks = state.store_marks();
        *marks.generation.entry(key.to_string()).or_insert(0) += 1;
        insert_absent(&mut marks.present, key);
        marks.stale.remove(key);
        state.meta.entries.insert(key.to_string(), entry);
    }

    /// Store tier: the entry of `key` is to be recomputed before it is used.
    pub(super) fn mark_stale(&self, key: &str) {
        let mut state = self.state.lock();
        let marks = state.store_marks();
        if !marks.stale.contains(key) {
            marks.stale.insert(key.to_string());
        }
    }

    /// Store tier: the write counter of a key (0 for a key never written; always 0 on
    /// a blob tier).
    pub fn generation(&self, key: &str) -> u64 {
        let state = self.state.lock();
        state
            .store_marks_ref()
            .and_then(|m| m.generation.get(key).copied())
            .unwrap_or(0)
    }

    /// Store tier: records the entry of a partition just read, unless it was written
    /// since (then it stays stale).
    pub fn settle_entry(&self, key: &str, loaded: &Loaded, now: Millis) {
        let mut state = self.state.lock();
        let marks = state.store_marks();
        if marks.generation.get(key).copied().unwrap_or(0) == loaded.generation {
            marks.stale.remove(key);
            state
                .meta
                .entries
                .insert(key.to_string(), loaded.entry(now));
        }
    }

    /// Store tier: recompute the entries of keys written since they were last hashed.
    /// A key written again meanwhile stays stale; the next refresh takes it.
    pub(super) fn refresh_store_entries(&self) -> Result<()> {
        let stale: Vec<String> = {
            let mut state = self.state.lock();
            state.store_marks().stale.iter().cloned().collect()
        };
        for key in &stale {
            if let Some(loaded) = self.load_partition(key, None)? {
                self.settle_entry(key, &loaded, now_millis());
            }
        }
        Ok(())
    }

    /// Store tier: whether the store holds partition `key`.
    pub fn holds(&self, key: &str) -> bool {
        let state = self.state.lock();
        state
            .store_marks_ref()
            .is_some_and(|m| m.present.contains(key))
    }

    /// Store tier: notes that the store holds `key` (hydrated, possibly empty).
    pub fn mark_present(&self, key: &str) {
        insert_absent(&mut self.state.lock().store_marks().present, key);
    }

    /// Store tier: the keys it holds, optionally only those starting with `prefix`.
    pub fn held_keys(&self, prefix: &str) -> Vec<String> {
        let state = self.state.lock();
        state
            .store_marks_ref()
            .map(|m| {
                m.present
                    .iter()
                    .filter(|k| k.starts_with(prefix))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Store tier: which of `keys` it holds or is about to (`loading`).
    pub fn held_among(&self, keys: &[String], loading: &BTreeSet<String>) -> Vec<String> {
        let state = self.state.lock();
        let Some(marks) = state.store_marks_ref() else {
            return Vec::new();
        };
        keys.iter()
            .filter(|k| marks.present.contains(*k) || loading.contains(*k))
            .cloned()
            .collect()
    }

    /// Store tier: takes the keys written since their last sync below.
    pub fn take_unsynced(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().store_marks().unsynced)
            .into_iter()
            .collect()
    }

    /// Store tier: keys whose sync below failed; they stay pending.
    pub fn requeue_unsynced(&self, keys: impl IntoIterator<Item = String>) {
        self.state.lock().store_marks().unsynced.extend(keys);
    }

    /// Store tier: keep the ids written per key (the tier below keeps pieces).
    pub fn track_written_ids(&self) {
        self.state.lock().store_marks().track_ids = true;
    }

    /// Store tier: forgets the slots written in `key` and what the store reflects,
    /// as a read of the whole partition takes them along (called with the store
    /// adapter locked, so no write falls between the read and this).
    pub(super) fn forget_written(&self, key: &str) {
        let mut state = self.state.lock();
        let marks = state.store_marks();
        if marks.track_ids {
            marks.written_ids.remove(key);
            marks.reflects.remove(key);
            insert_absent(&mut marks.merging, key);
        }
    }

    /// Store tier: when the store is known to hold the lower tier's content of `key`
    /// but for the slots written since, takes those slots as they are now, with what
    /// each held before; the ids and the store's slots are read under one hold of
    /// the store adapter, so no write falls between them. Either way the key is no
    /// longer known to reflect anything until [`Tier::update_reflects`] (writes that
    /// come meanwhile are kept for the next flush).
    pub fn take_written(&self, key: &str) -> Result<Option<Written>> {
        let mut adapter = self.lock_adapter();
        let taken = {
            let mut state = self.state.lock();
            let marks = state.store_marks();
            let ids = marks.written_ids.remove(key).unwrap_or_default();
            marks
                .reflects
                .get(key)
                .map(|(reflects, _)| (reflects.clone(), ids))
        };
        let Some((reflects, ids)) = taken else {
            return Ok(None);
        };
        let Adapter::Store(store) = &mut *adapter else {
            return Ok(None);
        };
        let mut slots = Vec::with_capacity(ids.len());
        for ((name, id), was) in ids {
            let slot = store
                .get(key, &name, &id)
                .map_err(|e| crate::Error::from_adapter(self.label, key, e))?;
            slots.push((name, id, was, slot));
        }
        Ok(Some(Written { reflects, slots }))
    }

    /// Store tier: records that the store holds the content of the tier below whose
    /// entry hash is `hash` (a hydration just wrote it, and no write can come before
    /// it is done).
    pub fn set_reflects(&self, key: &str, hash: &str, vector: crate::pieces::Vector) {
        let mut state = self.state.lock();
        let marks = state.store_marks();
        if marks.track_ids {
            marks.written_ids.remove(key);
            marks
                .reflects
                .insert(key.to_string(), (hash.to_string(), vector));
        }
    }

    /// Store tier: after a whole merge with the tier below, records that the store
    /// holds its content (entry hash `hash`), unless the key was written since it was
    /// read for the merge (then the next flush merges again).
    pub fn reflects_after_merge(&self, key: &str, hash: &str, vector: crate::pieces::Vector) {
        let mut state = self.state.lock();
        let marks = state.store_marks();
        if marks.track_ids && marks.merging.remove(key) {
            marks
                .reflects
                .insert(key.to_string(), (hash.to_string(), vector));
        }
    }

    /// Store tier: the tier below moved on by what the store holds (a flush of its
    /// written slots, or a pull): what it reflects follows, where it still reflects
    /// anything. Writes made meanwhile stay in `written_ids` for the next flush.
    pub fn update_reflects(&self, key: &str, hash: &str, vector: crate::pieces::Vector) {
        let mut state = self.state.lock();
        let marks = state.store_marks();
        if let Some(known) = marks.reflects.get_mut(key) {
            *known = (hash.to_string(), vector);
        }
    }

    /// Store tier: what the store reflects of `key` is no longer known (a flush or a
    /// pull failed half way).
    pub fn drop_reflects(&self, key: &str) {
        let mut state = self.state.lock();
        let marks = state.store_marks();
        marks.reflects.remove(key);
        marks.written_ids.remove(key);
    }

    /// Store tier: what the store reflects of `key` in the tier below, if known.
    pub fn reflects(&self, key: &str) -> Option<(String, crate::pieces::Vector)> {
        let state = self.state.lock();
        state
            .store_marks_ref()
            .and_then(|m| m.reflects.get(key).cloned())
    }

    /// Store tier: whether one of the ids of `pulled` was written in `key` since its
    /// last sync below (call with the store adapter locked).
    fn wrote_any_of(&self, key: &str, pulled: &[super::pieces::PulledSlot]) -> bool {
        let state = self.state.lock();
        let Some(written) = state
            .store_marks_ref()
            .and_then(|m| m.written_ids.get(key))
            .filter(|ids| !ids.is_empty())
        else {
            return false;
        };
        pulled
            .iter()
            .any(|(name, id, _)| written.contains_key(&(name.clone(), id.clone())))
    }

    /// Store tier: the counts of partition `key` in the tier below once it holds the
    /// slots of `pulled` too (the writes it received beyond those the store
    /// reflects of it), taken from the store without reading that tier: while the
    /// store reflects its entry `hash`, the store's slot of an id it did not write
    /// since is that tier's, and the slot that wins against the pulled ones decides
    /// the id's count. `before` are that tier's counts for `hash`. `None` when the
    /// store does not hold the key, reflects something else, or wrote one of the
    /// pulled ids since (then the caller reads the partition).
    pub fn counts_below_with(
        &self,
        key: &str,
        hash: &str,
        before: &BTreeMap<String, Counts>,
        pulled: &[super::pieces::PulledSlot],
        resolver: &dyn crate::sync::ConflictResolver,
    ) -> Result<Option<BTreeMap<String, Counts>>> {
        use crate::partition::Slot;
        // The store's slots of the pulled ids, taken under one hold of the adapter
        // (no save changes a slot or its marks meanwhile); the resolver, which may be
        // host code, runs after it is let go.
        let held: HashMap<(&str, &str), Option<Slot>> = {
            let mut adapter = self.lock_adapter();
            {
                let state = self.state.lock();
                let Some(marks) = state.store_marks_ref() else {
                    return Ok(None);
                };
                let reflected = marks.reflects.get(key).map(|(h, _)| h.as_str());
                if !marks.present.contains(key) || reflected != Some(hash) {
                    return Ok(None);
                }
            }
            if self.wrote_any_of(key, pulled) {
                return Ok(None);
            }
            let Adapter::Store(store) = &mut *adapter else {
                return Ok(None);
            };
            let mut held = HashMap::new();
            for (name, id, _) in pulled {
                if let std::collections::hash_map::Entry::Vacant(e) =
                    held.entry((name.as_str(), id.as_str()))
                {
                    let slot = store
                        .get(key, name, id)
                        .map_err(|e| crate::Error::from_adapter(self.label, key, e))?;
                    e.insert(slot);
                }
            }
            held
        };
        // Per id: the tier's slot before, and the one that wins.
        let mut winners: HashMap<(&str, &str), (Option<Slot>, Slot)> = HashMap::new();
        for (name, id, slot) in pulled {
            let win = |current: &Slot| {
                if current == slot {
                    current.clone()
                } else {
                    resolver.resolve(name, current, slot)
                }
            };
            let named = (name.as_str(), id.as_str());
            match winners.get_mut(&named) {
                Some((_, winner)) => *winner = win(winner),
                None => {
                    let was = held.get(&named).cloned().flatten();
                    let winner = was.as_ref().map_or_else(|| slot.clone(), win);
                    winners.insert(named, (was, winner));
                }
            }
        }
        let mut counts = before.clone();
        for ((name, _), (was, winner)) in &winners {
            let c = counts.entry(name.to_string()).or_default();
            match was {
                Some(Slot::Active(_)) => c.count = c.count.saturating_sub(1),
                Some(Slot::Deleted(_)) => c.deleted_count = c.deleted_count.saturating_sub(1),
                None => {}
            }
            match winner {
                Slot::Active(_) => c.count += 1,
                Slot::Deleted(_) => c.deleted_count += 1,
            }
        }
        counts.retain(|_, c| *c != Counts::default());
        Ok(Some(counts))
    }

    /// Store tier: applies slots another tier brought (`pulled`), each through the
    /// resolver against the store's slot; returns the slots that changed. `None`, and
    /// nothing applied, when one of the pulled ids was written since the key's last
    /// sync (then a whole merge decides). Other ids written since keep their slots and
    /// what they held before: the tier below still holds that for them, and the next
    /// flush appends them.
    ///
    /// The resolver may be host code, so it runs with no lock held: the store's slots
    /// are read under one hold of its adapter, resolved, and applied under a second
    /// hold, provided the slots read are still the store's (else `None`).
    pub fn apply_pulled(
        &self,
        key: &str,
        pulled: Vec<super::pieces::PulledSlot>,
        resolver: &dyn crate::sync::ConflictResolver,
    ) -> Result<Option<Vec<crate::sync::merge::SlotChange>>> {
        use crate::partition::Slot;
        use std::collections::BTreeMap;
        let err = |e| crate::Error::from_adapter(self.label, key, e);
        // The store's slot of every id pulled (an id may come more than once).
        type Held = BTreeMap<(String, String), Option<Slot>>;
        let read = |adapter: &mut Adapter| -> Result<Option<(u64, Held)>> {
            if self.wrote_any_of(key, &pulled) {
                return Ok(None);
            }
            let Adapter::Store(store) = adapter else {
                return Ok(None);
            };
            let mut held = Held::new();
            for (name, id, _) in &pulled {
                if let std::collections::btree_map::Entry::Vacant(at) =
                    held.entry((name.clone(), id.clone()))
                {
                    at.insert(store.get(key, name, id).map_err(err)?);
                }
            }
            Ok(Some((self.generation(key), held)))
        };
        let Some((generation, held)) = read(&mut self.lock_adapter())? else {
            return Ok(None);
        };
        // Each pulled slot in turn against what the id holds by then.
        let mut winners = held.clone();
        for (name, id, slot) in &pulled {
            let at = winners.entry((name.clone(), id.clone())).or_default();
            let winner = match at.as_ref() {
                None => slot.clone(),
                Some(current) => resolver.resolve(name, current, slot),
            };
            *at = Some(winner);
        }
        let mut adapter = self.lock_adapter();
        if self.generation(key) != generation {
            // Written meanwhile: apply only if the slots resolved against are still
            // the store's.
            match read(&mut adapter)? {
                Some((_, now)) if now == held => {}
                _ => return Ok(None),
            }
        }
        let Adapter::Store(store) = &mut *adapter else {
            return Ok(None);
        };
        let mut changes = Vec::new();
        for ((name, id), winner) in winners {
            let Some(winner) = winner else { continue };
            if held
                .get(&(name.clone(), id.clone()))
                .and_then(Option::as_ref)
                == Some(&winner)
            {
                continue;
            }
            match &winner {
                Slot::Active(entity) => store.save(key, &name, entity).map_err(err)?,
                Slot::Deleted(at) => store.delete(key, &name, &id, *at).map_err(err)?,
            }
            changes.push(crate::sync::merge::SlotChange {
                name,
                id,
                slot: winner,
            });
        }
        if !changes.is_empty() {
            // Written by the library: a new generation, and an entry to recompute.
            let mut state = self.state.lock();
            let marks = state.store_marks();
            *marks.generation.entry(key.to_string()).or_insert(0) += 1;
            marks.stale.insert(key.to_string());
        }
        Ok(Some(changes))
    }

    /// Store tier: how many written partitions wait for a sync below.
    pub fn unsynced_count(&self) -> usize {
        let state = self.state.lock();
        state.store_marks_ref().map_or(0, |m| m.unsynced.len())
    }
}
