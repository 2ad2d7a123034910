//! Repositories: the entity-facing API for one entity name. Writes are planned
//! (ids, keys, `createdAt`) before the store is locked, then applied under one lock
//! with one dirty mark per key and one event batch.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::Inner;
use crate::clock::{format_millis, parse_millis, Millis};
use crate::entity::Entity;
use crate::error::{Error, Result};
use crate::id;
use crate::observe::{Change, ChangeSet, Subscription};
use crate::partition::Slot;
use crate::persistence::Store;
use crate::query::QueryOptions;
use crate::split;
use crate::strategy::{partition_key, Candidates};
use crate::tier::{Adapter, Was};

/// The entity-facing API for one entity name.
#[derive(Clone)]
pub struct Repository {
    inner: Arc<Inner>,
    name: String,
}

enum Op<'a> {
    /// The caller's object, borrowed; copied only when the strategy must see a
    /// `createdAt` the caller did not give.
    Save(Cow<'a, Map<String, Value>>),
    Delete(String),
}

struct Planned<'a> {
    key: String,
    id: String,
    op: Op<'a>,
    /// `createdAt` as it will be written, when known before the write.
    created: Option<Millis>,
    /// Whether `created` was issued by the clock for a new entity (reused as `updatedAt`).
    issued: bool,
}

impl Inner {
    fn plan<'a>(&self, name: &str, op: Op<'a>) -> Result<Planned<'a>> {
        match op {
            Op::Delete(id) => {
                let key = self.key_of_id(&id)?;
                Ok(Planned {
                    key,
                    id,
                    op: Op::Delete(String::new()),
                    created: None,
                    issued: false,
                })
            }
            Op::Save(mut object) => {
                check_reserved_types(&object)?;
                let mut created = match object.get("createdAt") {
                    None => None,
                    Some(value) => {
                        Some(value.as_str().and_then(parse_millis).ok_or_else(|| {
                            Error::InvalidEntity(format!(
                                "\"createdAt\" must be an instant, got {value}"
                            ))
                        })?)
                    }
                };
                match object.get("id") {
                    Some(Value::String(id)) => {
                        let id = id.clone();
                        let key = self.key_of_id(&id)?;
                        Ok(Planned {
                            key,
                            id,
                            op: Op::Save(object),
                            created,
                            issued: false,
                        })
                    }
                    Some(other) => Err(Error::InvalidId(
                        other.to_string(),
                        "an id must be a string".into(),
                    )),
                    None => {
                        let mut issued = false;
                        if created.is_none() {
                            let stamp = self.clock.stamp(Millis::MIN);
                            created = Some(stamp);
                            issued = true;
                            if self.strategy.reads_created_at() {
                                object.to_mut().insert(
                                    "createdAt".into(),
                                    Value::String(format_millis(stamp)),
                                );
                            }
                        }
                        let logical = self.strategy.logical_key(name, &object)?;
                        id::validate_logical_key(&logical, self.sep())?;
                        let ident = id::identifier(self.strategy.id_length());
                        let logical = self.bounded_logical(name, logical, &ident)?;
                        let id = id::join(&logical, self.sep(), &ident);
                        let key = partition_key(&self.prefix, self.sep(), &logical);
                        Ok(Planned {
                            key,
                            id,
                            op: Op::Save(object),
                            created,
                            issued,
                        })
                    }
                }
            }
        }
    }

    /// Applies saves and deletes of one entity name: one store lock, one dirty mark
    /// per key, one event batch.
    fn write(&self, name: &str, ops: Vec<Op<'_>>) -> Result<Vec<(String, bool)>> {
        self.check_open()?;
        let planned: Vec<Planned> = ops
            .into_iter()
            .map(|op| self.plan(name, op))
            .collect::<Result<_>>()?;
        let keys: BTreeSet<&str> = planned.iter().map(|p| p.key.as_str()).collect();
        let allowed = self.candidates(name, None)?;
        for p in &planned {
            self.check_key(name, &p.key, &p.id, &allowed)?;
        }
        for key in &keys {
            self.ensure_present(key)?;
        }
        let observed = self.registry.has_subscribers();
        let shared_name: Option<Arc<str>> = observed.then(|| Arc::from(name));
        let mut changes = Vec::new();
        let mut existed = Vec::with_capacity(planned.len());
        let outcome = self.store.with_adapter(|adapter| {
            let Adapter::Store(store) = adapter else {
                return Err(Error::Internal("store tier without a store".into()));
            };
            let mut touched: BTreeSet<&str> = BTreeSet::new();
            let mut written: Vec<(&str, &str, Was)> = Vec::with_capacity(planned.len());
            let mut last_key: Option<Arc<str>> = None;
            let mut applied = || -> Result<()> {
                for p in &planned {
                    let (slot, was) = self.apply(store.as_mut(), name, p)?;
                    existed.push(was == Was::Active);
                    touched.insert(&p.key);
                    if let Some(shared_name) = &shared_name {
                        // One shared key per run of changes to the same partition.
                        let key = match &last_key {
                            Some(k) if **k == *p.key => k.clone(),
                            _ => last_key.insert(Arc::from(p.key.as_str())).clone(),
                        };
                        changes.push(Change {
                            key,
                            name: shared_name.clone(),
                            id: p.id.clone(),
                            entity: slot.entity().cloned(),
                        });
                    }
                    written.push((&p.key, &p.id, was));
                }
                Ok(())
            };
            let outcome = applied();
            // Mark what was written (even if a later write of the batch failed) while
            // the store is still locked: a sync that read the key before this write
            // must see the new generation and not write its older merge back, and a
            // sync that starts later must find it pending.
            self.store
                .mark_written(touched.iter().copied(), name, written.iter().copied());
            self.pending
                .record(name, written.iter().map(|&(key, id, _)| (key, id)));
            outcome
        });
        if !existed.is_empty() {
            self.worker.note_write();
        }
        self.registry.publish(changes);
        outcome.map(|_| {
            planned
                .into_iter()
                .zip(existed)
                .map(|(p, existed)| (p.id, existed))
                .collect()
        })
    }

    /// Applies one planned save or delete to the store; returns the new slot and
    /// what the slot held before.
    fn apply(&self, store: &mut dyn Store, name: &str, p: &Planned<'_>) -> Result<(Slot, Was)> {
        let err = |e| Error::adapter("store", &p.key, e);
        let previous = store.get(&p.key, name, &p.id).map_err(err)?;
        let was = Was::of(previous.as_ref());
        let slot = match &p.op {
            Op::Save(object) => {
                let (floor, version, before) = match &previous {
                    Some(Slot::Active(e)) => (e.updated_at(), e.version() + 1, Some(e)),
                    Some(Slot::Deleted(at)) => (at + 1, 1, None),
                    None => (Millis::MIN, 1, None),
                };
                let stamp = match (p.created, p.issued, &previous) {
                    (Some(issued), true, None) => issued,
                    _ => self.clock.stamp(floor),
                };
                let created = p
                    .created
                    .or_else(|| before.and_then(|e| e.created_at()))
                    .unwrap_or(stamp);
                let entity = Entity::build(object, &p.id, created, stamp, version)?;
                store.save(&p.key, name, &entity).map_err(err)?;
                Slot::Active(entity)
            }
            Op::Delete(_) => {
                let floor = previous.as_ref().map_or(Millis::MIN, Slot::instant);
                let stamp = self.clock.stamp(floor);
                store.delete(&p.key, name, &p.id, stamp).map_err(err)?;
                Slot::Deleted(stamp)
            }
        };
        Ok((slot, was))
    }

    pub(crate) fn get(&self, name: &str, id: &str) -> Result<Option<Entity>> {
        self.check_open()?;
        self.read(name, id)
    }

    /// Reads one entity (also after close, for the dispatcher's last deliveries).
    pub(crate) fn read(&self, name: &str, id: &str) -> Result<Option<Entity>> {
        let key = self.key_for(name, id)?;
        self.ensure_present(&key)?;
        let slot = self.store.with_store(&key, |s| s.get(&key, name, id))?;
        Ok(slot.and_then(|s| s.entity().cloned()))
    }

    /// The partition of `id`, an entity of `name`, once checked (see [`Inner::check_key`]).
    pub(crate) fn key_for(&self, name: &str, id: &str) -> Result<String> {
        let key = self.key_of_id(id)?;
        let allowed = self.candidates(name, None)?;
        self.check_key(name, &key, id, &allowed)?;
        Ok(key)
    }

    /// DESIGN §11: the partition an id names must be one the strategy could give an
    /// entity of `name` (else `InvalidId`: an id cannot move an entity into another
    /// name's partition), and one of `allowed`, the partitions of `name` this
    /// instance may read and write (else `Forbidden`).
    fn check_key(&self, name: &str, key: &str, id: &str, allowed: &Candidates) -> Result<()> {
        if !self.could_hold(name, key) {
            return Err(Error::InvalidId(
                id.to_string(),
                format!("it names partition {key:?}, which the key strategy never gives a {name}"),
            ));
        }
        if !allowed.covers(key) {
            return Err(Error::Forbidden(format!(
                "{name} {id:?} is in partition {key:?}, which this instance's key strategy does not let it read or write"
            )));
        }
        Ok(())
    }

    /// Whether a partition holding entities of `names` may be synced here: one of the
    /// names has it among the partitions this instance may read (an empty partition
    /// names nobody and is harmless).
    pub(crate) fn may_read_partition(&self, key: &str, names: &[&str]) -> bool {
        names.is_empty()
            || names.iter().any(|name| {
                self.could_hold(name, key)
                    && self.candidates(name, None).is_ok_and(|c| c.covers(key))
            })
    }

    pub(crate) fn candidate_keys(&self, name: &str, query: &QueryOptions) -> Result<Candidates> {
        self.candidates(name, query.filter.as_ref())
    }

    pub(crate) fn resolve_keys(&self, candidates: &Candidates) -> Result<Vec<String>> {
        match candidates {
            Candidates::Keys(keys) => Ok(keys.clone()),
            Candidates::Prefix(prefix) => Ok(self.known_keys(prefix).into_iter().collect()),
            Candidates::Split { keys, separator } => {
                let mut out = Vec::with_capacity(keys.len());
                for key in keys {
                    out.push(key.clone());
                    let mut subs = self.known_keys(&split::sub_prefix(key, *separator));
                    subs.retain(|k| split::split_key(k, *separator).is_some_and(|(b, _)| b == key));
                    out.extend(subs);
                }
                Ok(out)
            }
        }
    }

    /// The partition keys starting with `prefix` that the store holds or the local
    /// tier records.
    fn known_keys(&self, prefix: &str) -> BTreeSet<String> {
        let mut keys: BTreeSet<String> = self.store.held_keys(prefix).into_iter().collect();
        if let Some(local) = &self.local {
            keys.extend(local.recorded_keys_with_prefix(prefix));
        }
        keys
    }

    pub(crate) fn query(&self, name: &str, query: &QueryOptions) -> Result<Vec<Entity>> {
        self.check_open()?;
        self.select(name, query)
    }

    /// Runs a query (also after close, for the dispatcher's last deliveries).
    pub(crate) fn select(&self, name: &str, query: &QueryOptions) -> Result<Vec<Entity>> {
        let candidates = self.candidate_keys(name, query)?;
        let keys = self.resolve_keys(&candidates)?;
        let mut all = Vec::new();
        for key in &keys {
            self.ensure_present(key)?;
            all.extend(self.store.with_store(key, |s| s.get_all(key, name))?);
        }
        Ok(query.apply(all))
    }
}

/// The library sets `updatedAt` and `version` itself, but a value of the wrong type
/// is the caller's mistake and is refused rather than silently replaced.
fn check_reserved_types(object: &Map<String, Value>) -> Result<()> {
    if let Some(v) = object.get("version") {
        if v.as_u64().is_none_or(|n| n < 1) {
            return Err(Error::InvalidEntity(format!(
                "\"version\" must be an integer >= 1, got {v}"
            )));
        }
    }
    if let Some(v) = object.get("updatedAt") {
        if v.as_str().and_then(parse_millis).is_none() {
            return Err(Error::InvalidEntity(format!(
                "\"updatedAt\" must be an instant (YYYY-MM-DDTHH:MM:SS.sssZ), got {v}"
            )));
        }
    }
    Ok(())
}

fn object_of(value: &Value) -> Result<Cow<'_, Map<String, Value>>> {
    match value {
        Value::Object(map) => Ok(Cow::Borrowed(map)),
        other => Err(Error::InvalidEntity(format!(
            "an entity must be a JSON object, got {}",
            kind_of(other)
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Repository {
    pub(super) fn new(inner: Arc<Inner>, name: &str) -> Repository {
        Repository {
            inner,
            name: name.to_string(),
        }
    }

    /// The entity name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Saves an entity (a JSON object) and returns its id. Generates the id when
    /// absent, sets `createdAt` when absent, `updatedAt` from the instance clock and
    /// `version` = previous + 1. The caller's value is not changed.
    pub fn save(&self, entity: &Value) -> Result<String> {
        let mut out = self
            .inner
            .write(&self.name, vec![Op::Save(object_of(entity)?)])?;
        Ok(out.pop().map(|(id, _)| id).unwrap_or_default())
    }

    /// Saves an entity given as JSON text.
    pub fn save_json(&self, json: &str) -> Result<String> {
        self.save(&serde_json::from_str::<Value>(json)?)
    }

    /// Saves several entities at once: one lock, one event batch. Either every
    /// entity is valid and all are saved, or none is.
    pub fn save_many(&self, entities: &[Value]) -> Result<Vec<String>> {
        let ops = entities
            .iter()
            .map(|e| object_of(e).map(Op::Save))
            .collect::<Result<Vec<_>>>()?;
        Ok(self
            .inner
            .write(&self.name, ops)?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// The entity with this id, if it exists.
    pub fn get(&self, id: &str) -> Result<Option<Entity>> {
        self.inner.get(&self.name, id)
    }

    /// Deletes an entity: records a tombstone (even for an id not known here, so the
    /// delete still reaches other tiers). Returns whether it existed.
    pub fn delete(&self, id: &str) -> Result<bool> {
        let mut out = self
            .inner
            .write(&self.name, vec![Op::Delete(id.to_string())])?;
        Ok(out.pop().is_some_and(|(_, existed)| existed))
    }

    /// Deletes several entities at once; returns how many existed.
    pub fn delete_many<S: AsRef<str>>(&self, ids: &[S]) -> Result<usize> {
        let ops = ids
            .iter()
            .map(|id| Op::Delete(id.as_ref().to_string()))
            .collect();
        Ok(self
            .inner
            .write(&self.name, ops)?
            .into_iter()
            .filter(|(_, existed)| *existed)
            .count())
    }

    /// The entities matching `query`.
    pub fn query(&self, query: &QueryOptions) -> Result<Vec<Entity>> {
        self.inner.query(&self.name, query)
    }

    /// Observes one entity: `callback` gets its current value first (`None` if
    /// absent), then every change (`None` on delete), on the dispatcher thread.
    pub fn observe(
        &self,
        id: &str,
        callback: impl FnMut(Option<&Entity>) + Send + 'static,
    ) -> Result<Subscription> {
        self.inner.check_open()?;
        let key = self.inner.key_for(&self.name, id)?;
        self.inner.ensure_present(&key)?;
        // Read the current value and register under the store's lock: every write
        // after it is routed to the new observer, every write before it is in the value.
        self.inner.store.with_store(&key, |s| {
            let current = s.get(&key, &self.name, id)?;
            let current = current.and_then(|slot| slot.entity().cloned());
            Ok(self
                .inner
                .registry
                .observe(&self.name, id, current, Box::new(callback)))
        })
    }

    /// Observes a query: `callback` gets the full matching list first, then the new
    /// list after changes that may affect it (bursts coalesced; the last call always
    /// carries the final state).
    pub fn observe_all(
        &self,
        query: QueryOptions,
        callback: impl FnMut(&[Entity]) + Send + 'static,
    ) -> Result<Subscription> {
        self.inner.check_open()?;
        let candidates = self.inner.candidate_keys(&self.name, &query)?;
        Ok(self
            .inner
            .registry
            .observe_all(&self.name, query, candidates, Box::new(callback)))
    }

    /// Observes a query by change sets: `callback` gets the whole result first, then
    /// what changed since its previous call (ids removed, entities inserted or updated
    /// with their positions, the new count, and the whole list on demand), on the
    /// dispatcher thread, bursts coalesced. See [`ChangeSet`] for how to apply one.
    pub fn observe_changes(
        &self,
        query: QueryOptions,
        callback: impl FnMut(&ChangeSet) + Send + 'static,
    ) -> Result<Subscription> {
        self.inner.check_open()?;
        let candidates = self.inner.candidate_keys(&self.name, &query)?;
        Ok(self
            .inner
            .registry
            .observe_changes(&self.name, query, candidates, Box::new(callback)))
    }
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({:?})", self.name)
    }
}
