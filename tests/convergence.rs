//! Property test against a tiny reference model: random saves, deletes, flushes,
//! syncs and crashes on three instances (store + local each) sharing a cloud, some of
//! them run at the same time from several threads, under clocks the test sets. In
//! format 2 the tiers fold past two pieces, so that folds (and the tombstones they
//! drop) come often.
//!
//! A crash is what a killed process leaves: the device's store is gone, and its local
//! tier keeps only what the library had committed (the adapter holds each write
//! apart until the library's commit, as the directory tier's journal does); the
//! device then opens again on that local tier. The model forgets the writes the
//! device made since its last flush or sync, and nothing else.
//!
//! The clocks stand still until an operation moves them, and both devices draw from
//! the same few instants, so equal instants across devices, a delete and an edit at
//! the same instant, and stamps far beyond `max_clock_skew` are all common.
//!
//! The model: every write makes a slot (an entity or a tombstone; the test reads the
//! one the write made from the store). A device's new slot always beats the one it
//! replaces (DESIGN.md §4), so after the final syncs every tier holds, per entity, the
//! last-writer-wins greatest of all slots ever written (§5: the later instant; at
//! equal instants a delete, then the greater version, then the greater canonical
//! bytes). The test also checks each stamp against the clock rules: never before the
//! device's clock, and never dragged beyond `max_clock_skew` by another device.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{audit_blobs, manual, stored_root, SharedStore};
use datasync::{
    AdapterError, AdapterResult, DataSync, MemoryPersistence, Persistence, Slot, TierId,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::json;

/// Two of them live in sub-partitions of their name's partition (bounded partitions,
/// `datasync::split`), as ids created in a large tier do.
const ENTITIES: [(&str, &str); 5] = [
    ("User", "User.e0"),
    ("User", "User.e1"),
    ("User", "User.~1.e2"),
    ("Post", "Post.e0"),
    ("Post", "Post.~0.e1"),
];

const DEVICES: usize = 3;
const BASE: i64 = 1_767_225_600_000;
const SKEW: i64 = 5 * 60_000;
/// Instants a device clock can be set to: a few close ones (so devices meet on the
/// same instant), one within `SKEW` ahead, and one far beyond it.
const INSTANTS: [i64; 6] = [
    BASE,
    BASE + 1,
    BASE + 2,
    BASE + 7,
    BASE + SKEW / 2,
    BASE + 3_600_000,
];

/// One clock per device, read by `clock0` / `clock1` (a clock source is a plain
/// function). Only the one test in this file moves them.
static CLOCKS: [AtomicI64; DEVICES] = [
    AtomicI64::new(BASE),
    AtomicI64::new(BASE),
    AtomicI64::new(BASE),
];

fn clock0() -> i64 {
    CLOCKS[0].load(Ordering::SeqCst)
}

fn clock1() -> i64 {
    CLOCKS[1].load(Ordering::SeqCst)
}

fn clock2() -> i64 {
    CLOCKS[2].load(Ordering::SeqCst)
}

/// A local tier whose writes since the library's last commit are held apart, as a
/// process's writes that are not yet durable. `crash` drops them, and everything
/// the crashed instance writes afterwards (closing, it flushes) reaches nothing.
#[derive(Clone, Default)]
struct Volatile {
    durable: MemoryPersistence,
    pending: Arc<Mutex<BTreeMap<String, Option<Vec<u8>>>>>,
    dead: Arc<AtomicBool>,
    /// n > 0: the process dies at the n-th write from now (0: it does not).
    dies_at: Arc<AtomicI64>,
}

impl Volatile {
    /// The process dies: its uncommitted writes are lost. Returns the tier as the
    /// next process finds it.
    fn crash(&self) -> Volatile {
        self.dead.store(true, Ordering::SeqCst);
        self.pending.lock().unwrap().clear();
        Volatile {
            durable: self.durable.clone(),
            ..Volatile::default()
        }
    }

    fn alive(&self) -> AdapterResult<()> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(AdapterError::new("the process is gone"));
        }
        Ok(())
    }

    /// A write: the process dies here if its time has come.
    fn writing(&self) -> AdapterResult<()> {
        self.alive()?;
        match self.dies_at.load(Ordering::SeqCst) {
            1 => {
                self.dead.store(true, Ordering::SeqCst);
                self.pending.lock().unwrap().clear();
                Err(AdapterError::new("the process was killed"))
            }
            n if n > 1 => {
                self.dies_at.store(n - 1, Ordering::SeqCst);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl Persistence for Volatile {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        self.alive()?;
        if let Some(pending) = self.pending.lock().unwrap().get(key) {
            return Ok(pending.clone());
        }
        self.durable.load(key)
    }
    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        self.writing()?;
        let mut pending = self.pending.lock().unwrap();
        pending.insert(key.to_string(), Some(bytes.to_vec()));
        Ok(())
    }
    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        self.writing()?;
        self.pending.lock().unwrap().insert(key.to_string(), None);
        Ok(())
    }
    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        self.alive()?;
        let mut keys: BTreeSet<String> = self
            .durable
            .keys()?
            .unwrap_or_default()
            .into_iter()
            .collect();
        for (key, value) in self.pending.lock().unwrap().iter() {
            match value {
                Some(_) => keys.insert(key.clone()),
                None => keys.remove(key),
            };
        }
        Ok(Some(keys.into_iter().collect()))
    }
    fn commit(&mut self) -> AdapterResult<()> {
        self.alive()?;
        let mut pending = self.pending.lock().unwrap();
        for (key, value) in std::mem::take(&mut *pending) {
            match value {
                Some(bytes) => self.durable.store(&key, &bytes)?,
                None => self.durable.clear(&key)?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Save {
        dev: usize,
        entity: usize,
        n: u8,
    },
    Delete {
        dev: usize,
        entity: usize,
    },
    Flush(usize),
    Sync(usize),
    /// The device's process is killed, and the device opens again.
    Crash(usize),
    /// The device's process is killed at its `at`-th write of a flush into its
    /// local tier (or after the flush, if it writes fewer), then opens again.
    CrashInFlush {
        dev: usize,
        at: i64,
    },
    /// Sets a device's clock to one of `INSTANTS`.
    Clock {
        dev: usize,
        instant: usize,
    },
    /// Operations run at once, one thread each (those that would touch the same
    /// entity on the same device, or sync a device that also writes, are dropped).
    Together(Vec<Op>),
}

fn write_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // Few distinct values, so equal instants with equal versions often differ
        // only in their bytes.
        4 => (0..DEVICES, 0..ENTITIES.len(), 0..3u8).prop_map(|(dev, entity, n)| Op::Save { dev, entity, n }),
        2 => (0..DEVICES, 0..ENTITIES.len()).prop_map(|(dev, entity)| Op::Delete { dev, entity }),
        1 => (0..DEVICES).prop_map(Op::Flush),
        2 => (0..DEVICES).prop_map(Op::Sync),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        9 => write_op(),
        2 => (0..DEVICES, 0..INSTANTS.len()).prop_map(|(dev, instant)| Op::Clock { dev, instant }),
        2 => proptest::collection::vec(write_op(), 2..4).prop_map(Op::Together),
        1 => (0..DEVICES).prop_map(Op::Crash),
        1 => (0..DEVICES, 1..7i64).prop_map(|(dev, at)| Op::CrashInFlush { dev, at }),
    ]
}

/// Last-writer-wins as DESIGN.md §5 states it: whether `a` beats `b`.
fn beats(a: &Slot, b: &Slot) -> bool {
    match (a, b) {
        (Slot::Active(x), Slot::Active(y)) => {
            (x.updated_at(), x.version(), x.json().as_bytes())
                > (y.updated_at(), y.version(), y.json().as_bytes())
        }
        (Slot::Active(x), Slot::Deleted(at)) => x.updated_at() > *at,
        (Slot::Deleted(at), Slot::Active(y)) => *at >= y.updated_at(),
        (Slot::Deleted(x), Slot::Deleted(y)) => x > y,
    }
}

fn key_of(entity: usize) -> String {
    let (logical, _) = ENTITIES[entity].1.rsplit_once('.').expect("an id");
    format!("app.{logical}")
}

struct World {
    cloud: MemoryPersistence,
    locals: Vec<Volatile>,
    stores: Vec<SharedStore>,
    devices: Vec<DataSync>,
}

const SOURCES: [fn() -> i64; DEVICES] = [clock0, clock1, clock2];

impl World {
    fn new() -> World {
        for clock in &CLOCKS {
            clock.store(BASE, Ordering::SeqCst);
        }
        let cloud = MemoryPersistence::new();
        let locals: Vec<Volatile> = (0..DEVICES).map(|_| Volatile::default()).collect();
        let stores: Vec<SharedStore> = (0..DEVICES).map(|_| SharedStore::new()).collect();
        let devices: Vec<DataSync> = (0..DEVICES)
            .map(|dev| open(dev, &stores[dev], &locals[dev], &cloud))
            .collect();
        // Each device syncs once, so that the cloud knows it: a fold drops no
        // tombstone a known device has not synced past. (A device's writes before
        // its first sync are not waited for: docs/format-2.md, "Compaction and
        // tombstones".)
        for ds in &devices {
            ds.sync_now().unwrap();
        }
        World {
            cloud,
            locals,
            stores,
            devices,
        }
    }

    /// Kills device `dev` and opens it again on what its local tier kept.
    fn crash(&mut self, dev: usize) {
        self.locals[dev] = self.locals[dev].crash();
        self.stores[dev] = SharedStore::new();
        let fresh = open(dev, &self.stores[dev], &self.locals[dev], &self.cloud);
        // Closing flushes into a tier that no longer takes anything from it.
        drop(std::mem::replace(&mut self.devices[dev], fresh));
    }

    /// Runs one write and returns the slot it made, checked against the clock rules.
    /// A flush or sync returns none.
    /// `latest` is the latest reading of this device's clock so far.
    fn write(&self, op: &Op, latest: i64) -> Option<(usize, Slot)> {
        let (dev, entity) = match *op {
            Op::Save { dev, entity, .. } | Op::Delete { dev, entity } => (dev, entity),
            Op::Flush(dev) => {
                self.devices[dev].flush().unwrap();
                return None;
            }
            Op::Sync(dev) => {
                let stats = self.devices[dev].sync_now().unwrap();
                assert!(stats.errors.is_empty(), "{stats:?}");
                return None;
            }
            Op::Clock { .. } | Op::Together(_) | Op::Crash(_) | Op::CrashInFlush { .. } => {
                unreachable!("not a single write")
            }
        };
        let (name, id) = ENTITIES[entity];
        let key = key_of(entity);
        let store = &self.stores[dev];
        let now = CLOCKS[dev].load(Ordering::SeqCst);
        let repo = self.devices[dev].repo(name).unwrap();
        // What this device holds before the write: it must lose to the new slot. (The
        // store may not hold the partition yet; the write hydrates it first.)
        repo.get(id).unwrap();
        let before = store.slot(&key, name, id);
        match *op {
            Op::Save { n, .. } => {
                repo.save(&json!({"id": id, "n": n})).unwrap();
            }
            _ => {
                repo.delete(id).unwrap();
            }
        }
        let slot = store
            .slot(&key, name, id)
            .expect("a write leaves a slot in the store");
        match (op, &slot) {
            (Op::Save { n, .. }, Slot::Active(e)) => assert_eq!(e.value()["n"], json!(n)),
            (Op::Delete { .. }, Slot::Deleted(_)) => {}
            other => panic!("{id}: the store holds another slot than written: {other:?}"),
        }
        let stamp = slot.instant();
        assert!(
            stamp >= now,
            "{id}: stamp {stamp} is before the clock {now}"
        );
        let floor = before.as_ref().map_or(i64::MIN, |s| s.instant() + 1);
        assert!(
            stamp <= floor.max(latest + SKEW),
            "{id}: stamp {stamp} was dragged beyond the skew bound (clock {latest}, previous {before:?})"
        );
        if let Some(before) = &before {
            // An edit beats what it was made on; deleting a tombstone again may leave
            // it as it was, never earlier.
            let ok = match slot {
                Slot::Active(_) => beats(&slot, before),
                Slot::Deleted(_) => !beats(before, &slot),
            };
            assert!(
                ok,
                "{id}: the new slot {slot:?} loses to the one it replaced {before:?}"
            );
        }
        Some((entity, slot))
    }
}

fn open(dev: usize, store: &SharedStore, local: &Volatile, cloud: &MemoryPersistence) -> DataSync {
    let mut config = manual("app")
        .store(store.clone())
        .local(local.clone())
        .cloud(cloud.clone())
        .clock_source(SOURCES[dev])
        .compaction_bound(2);
    config.max_clock_skew = Duration::from_millis(SKEW as u64);
    DataSync::open(config).unwrap()
}

/// The writes a device made since its last flush or sync are durable now.
fn settle(op: &Op, pending: &mut [Vec<(usize, Slot)>; DEVICES]) {
    if let Op::Flush(dev) | Op::Sync(dev) = *op {
        pending[dev].clear();
    }
}

/// One run at a time: the device clocks are process-wide (`CLOCKS`), and the tests
/// of this file run on several threads at once.
static ONE_RUN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(ops: &[Op]) {
    let _alone = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let mut world = World::new();
    // Every slot written and not lost in a crash, per entity; per device, the slots
    // written since its last flush or sync; the latest reading of each clock.
    let mut written: BTreeMap<usize, Vec<Slot>> = BTreeMap::new();
    let mut pending: [Vec<(usize, Slot)>; DEVICES] = Default::default();
    let mut latest = [BASE; DEVICES];
    for op in ops {
        match op {
            Op::Crash(_) | Op::CrashInFlush { .. } => {
                let dev = device(op);
                if let Op::CrashInFlush { at, .. } = op {
                    world.locals[dev].dies_at.store(*at, Ordering::SeqCst);
                    let flushed = world.devices[dev].flush();
                    world.locals[dev].dies_at.store(0, Ordering::SeqCst);
                    let died = world.locals[dev].dead.load(Ordering::SeqCst);
                    assert_eq!(flushed.is_err(), died, "{flushed:?}");
                    if !died {
                        settle(&Op::Flush(dev), &mut pending);
                    }
                }
                world.crash(dev);
                for (entity, slot) in pending[dev].drain(..) {
                    let slots = written.get_mut(&entity).expect("written");
                    let at = slots.iter().position(|s| *s == slot).expect("the slot");
                    slots.remove(at);
                }
            }
            Op::Clock { dev, instant } => {
                CLOCKS[*dev].store(INSTANTS[*instant], Ordering::SeqCst);
                latest[*dev] = latest[*dev].max(INSTANTS[*instant]);
            }
            Op::Together(batch) => {
                let mut kept: Vec<&Op> = Vec::new();
                for op in batch {
                    let clash = kept.iter().any(|other| clashes(op, other));
                    if !clash {
                        kept.push(op);
                    }
                }
                let world = &world;
                let latest = &latest;
                let slots: Vec<Option<(usize, Slot)>> = std::thread::scope(|scope| {
                    let threads: Vec<_> = kept
                        .iter()
                        .map(|op| scope.spawn(move || world.write(op, latest[device(op)])))
                        .collect();
                    threads.into_iter().map(|t| t.join().unwrap()).collect()
                });
                for (op, made) in kept.iter().zip(slots) {
                    settle(op, &mut pending);
                    if let Some((entity, slot)) = made {
                        written.entry(entity).or_default().push(slot.clone());
                        pending[device(op)].push((entity, slot));
                    }
                }
            }
            op => {
                settle(op, &mut pending);
                if let Some((entity, slot)) = world.write(op, latest[device(op)]) {
                    written.entry(entity).or_default().push(slot.clone());
                    pending[device(op)].push((entity, slot));
                }
            }
        }
    }
    let World {
        cloud,
        locals,
        devices,
        ..
    } = &world;
    for dev in [0, 1, 2, 0, 1] {
        let stats = devices[dev].sync_now().unwrap();
        assert!(stats.errors.is_empty(), "{stats:?}");
    }
    let partitions = audit_blobs(cloud);
    // In format 2 a compaction drops the tombstones every device has synced past
    // (DESIGN §10), so tiers may differ in tombstones they no longer need; what they
    // hold alive is the same.
    let format2 = common::format2();
    let alive = |tier: &BTreeMap<String, datasync::Partition>| -> Vec<(String, String, String)> {
        tier.iter()
            .flat_map(|(key, p)| {
                p.names.iter().flat_map(move |(name, ids)| {
                    ids.iter().filter_map(move |(id, slot)| {
                        slot.entity()
                            .map(|e| (key.clone(), format!("{name}/{id}"), format!("{e:?}")))
                    })
                })
            })
            .collect()
    };
    for local in locals.iter().map(|l| &l.durable) {
        if format2 {
            assert_eq!(
                alive(&audit_blobs(local)),
                alive(&partitions),
                "a local tier differs from the cloud"
            );
            continue;
        }
        assert_eq!(
            audit_blobs(local),
            partitions,
            "a local tier differs from the cloud"
        );
        assert_eq!(stored_root(local), stored_root(cloud));
    }
    for (entity, slots) in &written {
        let (name, id) = ENTITIES[*entity];
        let slot = partitions
            .get(&key_of(*entity))
            .and_then(|p| p.get(name, id));
        let Some(winner) = slots
            .iter()
            .reduce(|best, slot| if beats(slot, best) { slot } else { best })
        else {
            // Every write of it was lost in a crash before it was flushed.
            assert_eq!(slot, None, "{id}: a write lost in a crash came back");
            for ds in devices {
                assert!(ds.repo(name).unwrap().get(id).unwrap().is_none(), "{id}");
            }
            continue;
        };
        if format2 && slot.is_none() && winner.entity().is_none() {
            // A tombstone every device has synced past, collected.
            continue;
        }
        assert_eq!(
            slot,
            Some(winner),
            "{id}: the cloud holds another winner than the model (written: {slots:?})"
        );
        for ds in devices {
            let got = ds.repo(name).unwrap().get(id).unwrap();
            assert_eq!(got.as_ref(), winner.entity(), "{id} in a store");
        }
    }
    for ds in devices {
        let store = ds.tier_meta(TierId::Store).unwrap();
        let local = ds.tier_meta(TierId::Local).unwrap();
        for (key, entry) in &store.entries {
            // In format 2 a local entry records the writes the partition holds, not
            // its content's hash; the entities were compared above.
            if common::format2() {
                assert!(local.entries.contains_key(key), "local lacks {key}");
                continue;
            }
            assert_eq!(
                Some(&entry.hash),
                local.entries.get(key).map(|e| &e.hash),
                "store and local differ on {key}"
            );
        }
        let problems = ds.audit().unwrap();
        assert!(problems.is_empty(), "{problems:?}");
    }
}

fn device(op: &Op) -> usize {
    match *op {
        Op::Save { dev, .. }
        | Op::Delete { dev, .. }
        | Op::Flush(dev)
        | Op::Sync(dev)
        | Op::Crash(dev)
        | Op::CrashInFlush { dev, .. } => dev,
        Op::Clock { dev, .. } => dev,
        Op::Together(_) => unreachable!("batches do not nest"),
    }
}

/// Whether two operations of one batch cannot run at once and keep the model exact:
/// writes of one entity on one device (each reads back its own slot), or a flush or
/// sync of a device that also runs anything else in the batch.
fn clashes(a: &Op, b: &Op) -> bool {
    let entity = |op: &Op| match *op {
        Op::Save { entity, .. } | Op::Delete { entity, .. } => Some(entity),
        _ => None,
    };
    if device(a) != device(b) {
        return false;
    }
    match (entity(a), entity(b)) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/convergence.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn tiers_converge_on_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops);
    }
}

/// A cloud fold that dropped a tombstone once left the next syncing device's
/// metadata counting it (found with folds at every second piece).
#[test]
fn a_fold_that_drops_a_tombstone_leaves_counts_right() {
    use Op::*;
    run(&[
        Delete { dev: 2, entity: 2 },
        Clock { dev: 2, instant: 1 },
        Save {
            dev: 0,
            entity: 0,
            n: 0,
        },
        Sync(2),
        Clock { dev: 0, instant: 1 },
        Save {
            dev: 0,
            entity: 3,
            n: 0,
        },
        Flush(0),
        Save {
            dev: 2,
            entity: 0,
            n: 0,
        },
        Sync(0),
        Save {
            dev: 0,
            entity: 0,
            n: 0,
        },
        Sync(2),
    ]);
}

/// A device's delete collected by a fold while another device, known to the cloud,
/// holds an older save of the entity offline: the save must not revive it.
#[test]
fn a_collected_delete_is_not_revived_by_a_known_device() {
    use Op::*;
    run(&[
        Clock { dev: 1, instant: 3 },
        Delete { dev: 1, entity: 0 },
        Save {
            dev: 0,
            entity: 0,
            n: 0,
        },
        Clock { dev: 0, instant: 3 },
        Sync(0),
        Clock { dev: 0, instant: 0 },
        Save {
            dev: 2,
            entity: 2,
            n: 0,
        },
        Delete { dev: 0, entity: 2 },
        Sync(1),
    ]);
}
