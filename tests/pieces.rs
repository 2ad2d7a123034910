//! Format 2 pieces (`src/pieces`): a partition as write-once pieces plus an index.
//! Cost is asserted by counting the bytes handed to and read from the adapter;
//! safety by random interleavings of writes, syncs, compactions and failing adapter
//! calls on devices sharing one cloud, with and without the conditional write,
//! compared with a last-writer-wins model of the acknowledged writes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use datasync::clock::format_millis;
use datasync::pieces::{index_key, piece_key, sync_partition, Compaction, Index, PieceTier};
use datasync::{
    AdapterError, AdapterResult, LastWriterWins, MemoryPersistence, Partition, Persistence, Slot,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const BASE: i64 = 1_767_225_600_000;
const KEY: &str = "app.User";
const DAY: i64 = 24 * 3600 * 1000;

/// What an adapter was asked.
#[derive(Debug, Default, Clone)]
struct Counts {
    loads: u64,
    loaded: u64,
    stores: u64,
    stored: u64,
}

/// A memory tier that counts, may lack the conditional write, and fails one chosen
/// call (before it takes effect).
#[derive(Clone)]
struct Tier {
    inner: MemoryPersistence,
    cas: bool,
    counts: Arc<Mutex<Counts>>,
    /// Calls left before the failing one (0: none fails).
    fail_in: Arc<AtomicU64>,
}

impl Tier {
    fn new(cas: bool) -> Tier {
        Tier {
            inner: MemoryPersistence::new(),
            cas,
            counts: Arc::default(),
            fail_in: Arc::default(),
        }
    }

    fn counts(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }

    fn reset(&self) {
        *self.counts.lock().unwrap() = Counts::default();
    }

    fn fail(&self) -> AdapterResult<()> {
        let left = self.fail_in.load(Ordering::SeqCst);
        if left == 0 {
            return Ok(());
        }
        self.fail_in.store(left - 1, Ordering::SeqCst);
        if left == 1 {
            return Err(AdapterError::from("injected failure"));
        }
        Ok(())
    }
}

impl Persistence for Tier {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        self.fail()?;
        let got = self.inner.load(key)?;
        let mut c = self.counts.lock().unwrap();
        c.loads += 1;
        c.loaded += got.as_ref().map_or(0, |b| b.len() as u64);
        Ok(got)
    }

    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        self.fail()?;
        let mut c = self.counts.lock().unwrap();
        c.stores += 1;
        c.stored += bytes.len() as u64;
        drop(c);
        self.inner.store(key, bytes)
    }

    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        self.fail()?;
        self.inner.clear(key)
    }

    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        self.inner.keys()
    }

    fn store_if(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        bytes: &[u8],
    ) -> AdapterResult<Option<bool>> {
        if !self.cas {
            return Ok(None);
        }
        self.fail()?;
        let mut c = self.counts.lock().unwrap();
        c.stores += 1;
        c.stored += bytes.len() as u64;
        drop(c);
        self.inner.store_if(key, expected, bytes)
    }
}

fn entity(id: &str, at: i64, tag: &str) -> Slot {
    let text = format!(
        r#"{{"User":{{"{id}":{{"id":"{id}","name":"{tag}","updatedAt":"{}","version":1}}}}}}"#,
        format_millis(BASE + at)
    );
    let p = Partition::parse(text.as_bytes(), false).unwrap();
    p.get("User", id).unwrap().clone()
}

fn slots(items: &[(&str, Slot)]) -> Partition {
    let mut p = Partition::default();
    for (id, slot) in items {
        p.put("User", id, slot.clone());
    }
    p
}

fn read(tier: &mut Tier, shared: bool) -> Partition {
    PieceTier::new(tier, shared, "t")
        .read(KEY, &LastWriterWins)
        .unwrap()
        .map(|r| r.partition)
        .unwrap_or_default()
}

/// What a partition shows: live entities by id, with their `name`.
fn live(p: &Partition) -> BTreeMap<String, String> {
    p.names
        .get("User")
        .into_iter()
        .flatten()
        .filter_map(|(id, s)| {
            s.entity().map(|e| {
                (
                    id.clone(),
                    e.value()["name"].as_str().unwrap_or("").to_string(),
                )
            })
        })
        .collect()
}

fn append(tier: &mut Tier, writer: &str, clock: i64, p: Partition) -> u64 {
    PieceTier::new(tier, false, "local")
        .append(KEY, writer, BASE + clock, p)
        .unwrap()
}

fn sync(local: &mut Tier, cloud: &mut Tier) -> datasync::pieces::PieceSync {
    let mut a = PieceTier::new(local, false, "local");
    let mut b = PieceTier::new(cloud, true, "cloud");
    sync_partition(&mut a, &mut b, KEY).unwrap()
}

#[test]
fn one_edit_costs_its_own_bytes_whatever_the_partition_holds() {
    let mut local = Tier::new(true);
    let mut cloud = Tier::new(true);
    // 100,000 entities in one piece, on both sides.
    let many: Vec<(String, Slot)> = (0..100_000)
        .map(|i| {
            let id = format!("User.{i:016}");
            let s = entity(&id, 1, "seed");
            (id, s)
        })
        .collect();
    let refs: Vec<(&str, Slot)> = many.iter().map(|(i, s)| (i.as_str(), s.clone())).collect();
    append(&mut local, "w1", 1, slots(&refs));
    sync(&mut local, &mut cloud);
    assert!(cloud.counts().stored > 10_000_000);

    // One edit: one small piece and the index.
    local.reset();
    append(
        &mut local,
        "w1",
        2,
        slots(&[(
            "User.0000000000000007",
            entity("User.0000000000000007", 2, "edited"),
        )]),
    );
    let c = local.counts();
    assert!(c.stored < 2_000, "one edit stored {} bytes", c.stored);
    assert!(c.loaded < 2_000, "one edit loaded {} bytes", c.loaded);
    assert_eq!(c.stores, 2, "a piece and the index");

    // Syncing it moves that piece only, each way under 2 KB.
    local.reset();
    cloud.reset();
    let moved = sync(&mut local, &mut cloud);
    assert_eq!((moved.a_to_b, moved.b_to_a), (1, 0));
    for (side, c) in [("local", local.counts()), ("cloud", cloud.counts())] {
        assert!(c.loaded < 2_000, "{side} loaded {} bytes", c.loaded);
        assert!(c.stored < 2_000, "{side} stored {} bytes", c.stored);
    }

    // A no-op sync reads the two indexes and no piece.
    local.reset();
    cloud.reset();
    let noop = sync(&mut local, &mut cloud);
    assert_eq!((noop.a_to_b, noop.b_to_a, noop.bytes), (0, 0, 0));
    assert_eq!(noop.a_vector, noop.b_vector);
    assert_eq!((local.counts().loads, cloud.counts().loads), (1, 1));
    assert_eq!((local.counts().stores, cloud.counts().stores), (0, 0));

    let mut back = Tier::new(true);
    sync(&mut back, &mut cloud);
    let p = read(&mut back, false);
    assert_eq!(live(&p).len(), 100_000);
    assert_eq!(live(&p)["User.0000000000000007"], "edited");
}

#[test]
fn pieces_are_checked_against_their_names_and_chains() {
    let mut t = Tier::new(true);
    append(&mut t, "w1", 1, slots(&[("a", entity("a", 1, "one"))]));
    append(&mut t, "w1", 2, slots(&[("b", entity("b", 2, "two"))]));
    let index = Index::parse(&t.inner.load(&index_key(KEY)).unwrap().unwrap()).unwrap();
    let second = index
        .entries
        .iter()
        .find(|e| e.span["w1"] == (2, 2))
        .unwrap()
        .name
        .clone();
    let key = piece_key(KEY, &second);
    let good = t.inner.load(&key).unwrap().unwrap();

    // A piece whose bytes changed is refused by name, never read as something else.
    let mut bad = good.clone();
    let at = bad.iter().position(|&b| b == b't').unwrap();
    bad[at] = b'T';
    t.inner.poke(&key, &bad);
    let err = PieceTier::new(&mut t, false, "t")
        .read(KEY, &LastWriterWins)
        .unwrap_err();
    assert!(err.to_string().contains("does not match its hash"), "{err}");

    // A missing piece is an error naming it, not an older state.
    t.inner.clear(&key).unwrap();
    let err = PieceTier::new(&mut t, false, "t")
        .read(KEY, &LastWriterWins)
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    t.inner.poke(&key, &good);

    // An index that lost a write in the middle of a writer's run is detected.
    append(&mut t, "w1", 3, slots(&[("c", entity("c", 3, "three"))]));
    let full = t.inner.load(&index_key(KEY)).unwrap().unwrap();
    let mut index = Index::parse(&full).unwrap();
    index.entries.retain(|e| e.span["w1"] != (2, 2));
    t.inner.poke(&index_key(KEY), &index.to_bytes());
    let err = PieceTier::new(&mut t, false, "t")
        .read(KEY, &LastWriterWins)
        .unwrap_err();
    assert!(err.to_string().contains("listed nowhere"), "{err}");

    // A write replaced by another one of the same number breaks the chain.
    let mut other = Tier::new(true);
    append(&mut other, "w1", 1, slots(&[("a", entity("a", 1, "one"))]));
    append(
        &mut other,
        "w1",
        2,
        slots(&[("b", entity("b", 2, "forged"))]),
    );
    let forged_index = Index::parse(&other.inner.load(&index_key(KEY)).unwrap().unwrap()).unwrap();
    let forged = forged_index
        .entries
        .iter()
        .find(|e| e.span["w1"] == (2, 2))
        .unwrap()
        .clone();
    t.inner.poke(
        &piece_key(KEY, &forged.name),
        &other
            .inner
            .load(&piece_key(KEY, &forged.name))
            .unwrap()
            .unwrap(),
    );
    let mut index = Index::parse(&full).unwrap();
    index.entries.retain(|e| e.span["w1"] != (2, 2));
    index = index.with(forged);
    t.inner.poke(&index_key(KEY), &index.to_bytes());
    let err = PieceTier::new(&mut t, false, "t")
        .read(KEY, &LastWriterWins)
        .unwrap_err();
    assert!(err.to_string().contains("replaced or rolled back"), "{err}");
}

#[test]
fn compaction_folds_without_changing_what_the_partition_holds() {
    let mut t = Tier::new(true);
    for i in 0..40 {
        let id = format!("e{}", i % 7);
        let slot = if i % 5 == 4 {
            Slot::Deleted(BASE + i)
        } else {
            entity(&id, i, &format!("v{i}"))
        };
        append(
            &mut t,
            if i % 2 == 0 { "w1" } else { "w2" },
            i,
            slots(&[(&id, slot)]),
        );
    }
    let before = read(&mut t, false);
    let policy = Compaction {
        bound: 8,
        horizon: 365 * DAY,
    };
    let done = PieceTier::new(&mut t, false, "t")
        .compact(KEY, &LastWriterWins, policy, BASE + 100, None)
        .unwrap()
        .expect("more pieces than the bound");
    assert_eq!(done.folded, 40);
    let after = read(&mut t, false);
    assert_eq!(live(&after), live(&before));
    // The folded pieces are gone from a tier no one else writes.
    let pieces = t
        .inner
        .snapshot()
        .keys()
        .filter(|k| k.starts_with("!piece:"))
        .count();
    assert_eq!(pieces, 1);
    // Writes go on after a fold, and the chain continues through it.
    append(
        &mut t,
        "w1",
        50,
        slots(&[("e1", entity("e1", 50, "after"))]),
    );
    assert_eq!(live(&read(&mut t, false))["e1"], "after");

    // A few small pieces beside a big one are folded among themselves.
    for i in 0..9 {
        append(
            &mut t,
            "w2",
            60 + i,
            slots(&[("z", entity("z", 60 + i, &format!("z{i}")))]),
        );
    }
    let big = t
        .inner
        .snapshot()
        .into_iter()
        .filter(|(k, _)| k.starts_with("!piece:"))
        .map(|(_, v)| v.len())
        .max()
        .unwrap();
    assert!(big > 500);
    let done = PieceTier::new(&mut t, false, "t")
        .compact(KEY, &LastWriterWins, policy, BASE + 100, None)
        .unwrap();
    let done = done.expect("ten pieces over a bound of 8");
    assert!(!done.full || big < 4 * 2_000, "{done:?}");
    assert_eq!(live(&read(&mut t, false))["z"], "z8");
}

/// A device's sync with the cloud as the library runs it: registered before it reads
/// anything, and recorded as past `began` once complete.
fn sync_as(
    device: &str,
    began: i64,
    local: &mut Tier,
    cloud: &mut Tier,
) -> datasync::pieces::PieceSync {
    PieceTier::new(cloud, true, "cloud")
        .note_synced(device, i64::MIN)
        .unwrap();
    let moved = sync(local, cloud);
    PieceTier::new(cloud, true, "cloud")
        .note_synced(device, BASE + began)
        .unwrap();
    moved
}

fn fold_cloud(cloud: &mut Tier, policy: Compaction, now: i64) {
    let mut t = PieceTier::new(cloud, true, "cloud");
    let past = t.synced_past().unwrap();
    t.compact(KEY, &LastWriterWins, policy, BASE + now, past)
        .unwrap();
}

#[test]
fn a_tombstone_stays_until_every_device_has_synced_past_it() {
    let policy = Compaction {
        bound: 1,
        horizon: 30 * DAY,
    };
    let mut a = Tier::new(true);
    let mut b = Tier::new(true);
    let mut cloud = Tier::new(true);
    append(&mut a, "A", 1, slots(&[("x", entity("x", 1, "x"))]));
    sync_as("A", 1, &mut a, &mut cloud);
    sync_as("B", 2, &mut b, &mut cloud);
    // B edits x offline, before the delete (its clock is behind).
    append(
        &mut b,
        "B",
        3,
        slots(&[("x", entity("x", 3, "older edit"))]),
    );
    // A deletes x at 10 and syncs; the cloud is folded at 20: B has not synced since 2.
    append(&mut a, "A", 10, slots(&[("x", Slot::Deleted(BASE + 10))]));
    append(&mut a, "A", 11, slots(&[("q", entity("q", 11, "q"))]));
    sync_as("A", 12, &mut a, &mut cloud);
    fold_cloud(&mut cloud, policy, 20);
    let p = read(&mut cloud, true);
    assert_eq!(
        p.get("User", "x"),
        Some(&Slot::Deleted(BASE + 10)),
        "B has not synced past the delete"
    );
    // B syncs (bringing its older edit, which the delete beats), then the fold drops it.
    sync_as("B", 21, &mut b, &mut cloud);
    sync_as("A", 22, &mut a, &mut cloud);
    fold_cloud(&mut cloud, policy, 23);
    let p = read(&mut cloud, true);
    assert_eq!(p.get("User", "x"), None, "the tombstone is dropped");
    // Both devices still hold x's older versions in their own pieces: nothing comes back.
    for (side, t) in [("b", &mut b), ("a", &mut a)] {
        sync(t, &mut cloud);
        assert_eq!(live(&read(t, false)).get("x"), None, "{side} revived x");
        assert_eq!(live(&read(t, false))["q"], "q");
    }
    assert_eq!(
        live(&read(&mut cloud, true)).get("x"),
        None,
        "the cloud revived x"
    );
}

#[test]
fn a_device_back_after_the_horizon_keeps_its_edits_and_revives_nothing() {
    let policy = Compaction {
        bound: 1,
        horizon: 30 * DAY,
    };
    let mut a = Tier::new(true);
    let mut gone = Tier::new(true);
    let mut cloud = Tier::new(true);
    append(
        &mut a,
        "A",
        1,
        slots(&[("x", entity("x", 1, "x")), ("y", entity("y", 1, "y"))]),
    );
    sync_as("A", 1, &mut a, &mut cloud);
    sync_as("G", 1, &mut gone, &mut cloud);
    append(&mut gone, "G", 2, slots(&[("g", entity("g", 2, "g"))]));
    sync_as("G", 2, &mut gone, &mut cloud);
    // G goes away holding x, and folds its own tier (x active in its base).
    append(
        &mut gone,
        "G",
        3,
        slots(&[("y", entity("y", 3, "offline edit"))]),
    );
    PieceTier::new(&mut gone, false, "g")
        .compact(KEY, &LastWriterWins, policy, BASE + 3, None)
        .unwrap();
    // Meanwhile x is deleted; 40 days later the cloud is folded: G has not written
    // past the delete, but the horizon has passed.
    append(&mut a, "A", 5, slots(&[("x", Slot::Deleted(BASE + 5))]));
    sync_as("A", 5, &mut a, &mut cloud);
    fold_cloud(&mut cloud, policy, 40 * DAY);
    assert_eq!(read(&mut cloud, true).get("User", "x"), None);
    // G comes back: its edit survives, x stays deleted everywhere.
    sync(&mut gone, &mut cloud);
    sync(&mut a, &mut cloud);
    for (side, t, shared) in [
        ("device", &mut gone, false),
        ("cloud", &mut cloud, true),
        ("other", &mut a, false),
    ] {
        let l = live(&read(t, shared));
        assert_eq!(l.get("x"), None, "{side} revived x");
        assert_eq!(l["y"], "offline edit", "{side}");
        assert_eq!(l["g"], "g", "{side}");
    }
}

/// Two devices race into one slow shared cloud for many rounds; after one more
/// sync of each, every device holds every write.
fn racing_rounds(cas: bool) -> usize {
    let cloud = Tier::new(cas);
    let mut missing = 0;
    let mut devices = [Tier::new(true), Tier::new(true)];
    for round in 0..100i64 {
        for (d, dev) in devices.iter_mut().enumerate() {
            let id = format!("r{round}d{d}");
            append(
                dev,
                ["A", "B"][d],
                round * 10 + d as i64,
                slots(&[(&id, entity(&id, round * 10 + d as i64, "x"))]),
            );
        }
        std::thread::scope(|s| {
            for dev in devices.iter_mut() {
                let mut c = cloud.clone();
                s.spawn(move || {
                    let mut a = PieceTier::new(dev, false, "local");
                    let mut b = PieceTier::new(&mut c, true, "cloud");
                    // A race may leave the key for the next sync; never an error here.
                    let _ = sync_partition(&mut a, &mut b, KEY);
                });
            }
        });
        for dev in devices.iter_mut() {
            sync(dev, &mut cloud.clone());
        }
        let want: Vec<String> = (0..=round)
            .flat_map(|r| [format!("r{r}d0"), format!("r{r}d1")])
            .collect();
        for dev in devices.iter_mut() {
            let l = live(&read(dev, false));
            if want.iter().any(|id| !l.contains_key(id)) {
                missing += 1;
            }
        }
    }
    missing
}

#[test]
fn racing_syncs_lose_nothing_with_the_conditional_write() {
    assert_eq!(racing_rounds(true), 0);
}

#[test]
fn racing_syncs_lose_nothing_without_the_conditional_write() {
    // A lost index update is repaired by its writer's next sync: its own index still
    // lists the pieces.
    assert_eq!(racing_rounds(false), 0);
}

#[test]
fn two_devices_compacting_one_shared_partition_at_once_lose_nothing() {
    for cas in [true, false] {
        let cloud = Tier::new(cas);
        let mut devices = [Tier::new(true), Tier::new(true)];
        for i in 0..30i64 {
            let d = (i % 2) as usize;
            let id = format!("c{i}");
            append(
                &mut devices[d],
                ["A", "B"][d],
                i,
                slots(&[(&id, entity(&id, i, "x"))]),
            );
            sync(&mut devices[d], &mut cloud.clone());
        }
        let policy = Compaction {
            bound: 4,
            horizon: 30 * DAY,
        };
        std::thread::scope(|s| {
            for (d, dev) in devices.iter_mut().enumerate() {
                let mut c = cloud.clone();
                s.spawn(move || {
                    let _ = PieceTier::new(&mut c, true, "cloud").compact(
                        KEY,
                        &LastWriterWins,
                        policy,
                        BASE + 100,
                        None,
                    );
                    let id = format!("late{d}");
                    append(
                        dev,
                        ["A", "B"][d],
                        200 + d as i64,
                        slots(&[(&id, entity(&id, 200, "x"))]),
                    );
                    let mut a = PieceTier::new(dev, false, "local");
                    let mut b = PieceTier::new(&mut c, true, "cloud");
                    let _ = sync_partition(&mut a, &mut b, KEY);
                });
            }
        });
        for dev in devices.iter_mut() {
            sync(dev, &mut cloud.clone());
        }
        for dev in devices.iter_mut() {
            let l = live(&read(dev, false));
            assert_eq!(l.len(), 32, "cas {cas}: {:?}", l.keys().collect::<Vec<_>>());
        }
    }
}

/// One step of the model.
#[derive(Debug, Clone)]
enum Op {
    Save {
        dev: usize,
        id: u8,
    },
    Delete {
        dev: usize,
        id: u8,
    },
    Sync {
        dev: usize,
    },
    CompactLocal {
        dev: usize,
        bound: usize,
    },
    CompactCloud {
        bound: usize,
    },
    /// The next op's `n`-th adapter call fails.
    Fault {
        n: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..6u8).prop_map(|(dev, id)| Op::Save { dev, id }),
        2 => (0..3usize, 0..6u8).prop_map(|(dev, id)| Op::Delete { dev, id }),
        4 => (0..3usize).prop_map(|dev| Op::Sync { dev }),
        1 => (0..3usize, 1..4usize).prop_map(|(dev, bound)| Op::CompactLocal { dev, bound }),
        1 => (1..4usize).prop_map(|bound| Op::CompactCloud { bound }),
        1 => (1..6u64).prop_map(|n| Op::Fault { n }),
    ]
}

fn run_model(cas: bool, ops: &[Op]) -> Result<(), TestCaseError> {
    let writers = ["A", "B", "C"];
    let mut cloud = Tier::new(cas);
    let mut devices: Vec<Tier> = (0..3).map(|_| Tier::new(true)).collect();
    // The acknowledged writes: id -> (instant, live?).
    let mut model: BTreeMap<String, (i64, bool)> = BTreeMap::new();
    let mut clock = 0i64;
    // Every device is known to the cloud before the random part.
    for (d, dev) in devices.iter_mut().enumerate() {
        clock += 1;
        let id = format!("seed{d}");
        append(
            dev,
            writers[d],
            clock,
            slots(&[(&id, entity(&id, clock, "seed"))]),
        );
        model.insert(id, (clock, true));
        sync_as(writers[d], clock, dev, &mut cloud);
    }
    let policy = |bound| Compaction {
        bound,
        horizon: 3650 * DAY,
    };
    let mut fault = 0;
    for op in ops {
        if let Op::Fault { n } = op {
            fault = *n;
            continue;
        }
        let target = match op {
            Op::CompactCloud { .. } => cloud.clone(),
            Op::Save { dev, .. } | Op::Delete { dev, .. } | Op::CompactLocal { dev, .. } => {
                devices[*dev].clone()
            }
            Op::Sync { dev } => {
                if fault % 2 == 0 {
                    cloud.clone()
                } else {
                    devices[*dev].clone()
                }
            }
            Op::Fault { .. } => unreachable!(),
        };
        target
            .fail_in
            .store(std::mem::take(&mut fault), Ordering::SeqCst);
        clock += 1;
        match op {
            Op::Save { dev, id } | Op::Delete { dev, id } => {
                let id = format!("e{id}");
                let live_write = matches!(op, Op::Save { .. });
                let slot = if live_write {
                    entity(&id, clock, &format!("v{clock}"))
                } else {
                    Slot::Deleted(BASE + clock)
                };
                let done = PieceTier::new(&mut devices[*dev], false, "local").append(
                    KEY,
                    writers[*dev],
                    BASE + clock,
                    slots(&[(&id, slot)]),
                );
                if done.is_ok() {
                    model.insert(id, (clock, live_write));
                }
            }
            Op::Sync { dev } => {
                let mut c = cloud.clone();
                let began = BASE + clock;
                let _ = (|| -> datasync::Result<()> {
                    let mut b = PieceTier::new(&mut c, true, "cloud");
                    b.note_synced(writers[*dev], i64::MIN)?;
                    let mut a = PieceTier::new(&mut devices[*dev], false, "local");
                    sync_partition(&mut a, &mut b, KEY)?;
                    b.note_synced(writers[*dev], began)
                })();
            }
            Op::CompactLocal { dev, bound } => {
                let _ = PieceTier::new(&mut devices[*dev], false, "local").compact(
                    KEY,
                    &LastWriterWins,
                    policy(*bound),
                    BASE + clock,
                    None,
                );
            }
            Op::CompactCloud { bound } => {
                let mut c = cloud.clone();
                let mut t = PieceTier::new(&mut c, true, "cloud");
                if let Ok(past) = t.synced_past() {
                    let _ = t.compact(KEY, &LastWriterWins, policy(*bound), BASE + clock, past);
                }
            }
            Op::Fault { .. } => unreachable!(),
        }
        target.fail_in.store(0, Ordering::SeqCst);
    }
    // Heal: one sync of each device, then one more of each.
    for _ in 0..2 {
        for (d, dev) in devices.iter_mut().enumerate() {
            clock += 1;
            sync_as(writers[d], clock, dev, &mut cloud);
        }
    }
    let want: BTreeMap<String, String> = model
        .iter()
        .filter(|(_, (_, l))| *l)
        .map(|(id, (at, _))| {
            (
                id.clone(),
                if id.starts_with("seed") {
                    "seed".into()
                } else {
                    format!("v{at}")
                },
            )
        })
        .collect();
    for (d, dev) in devices.iter_mut().enumerate() {
        prop_assert_eq!(&live(&read(dev, false)), &want, "device {}", d);
    }
    prop_assert_eq!(&live(&read(&mut cloud, true)), &want, "cloud");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/pieces.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn devices_converge_on_every_acknowledged_write(cas in any::<bool>(), ops in proptest::collection::vec(op(), 1..40)) {
        run_model(cas, &ops)?;
    }
}

#[test]
fn a_sweep_removes_the_pieces_no_index_lists_and_nothing_else() {
    let mut t = Tier::new(true);
    append(&mut t, "w1", 1, slots(&[("a", entity("a", 1, "one"))]));
    // An append that dies between its piece and its index leaves the piece behind.
    // Its calls: the index read, the piece, the index: the third fails.
    t.fail_in.store(3, Ordering::SeqCst);
    let lost = PieceTier::new(&mut t, false, "t").append(
        KEY,
        "w1",
        BASE + 2,
        slots(&[("b", entity("b", 2, "two"))]),
    );
    assert!(lost.is_err());
    // Another partition whose name starts like this one keeps its pieces.
    PieceTier::new(&mut t, false, "t")
        .append(
            "app.User:x",
            "w1",
            BASE + 3,
            slots(&[("c", entity("c", 3, "three"))]),
        )
        .unwrap();
    let pieces = |t: &Tier| {
        t.inner
            .snapshot()
            .keys()
            .filter(|k| k.starts_with("!piece:"))
            .count()
    };
    assert_eq!(pieces(&t), 3);
    assert_eq!(
        PieceTier::new(&mut t, true, "t").sweep(KEY).unwrap(),
        0,
        "never in a shared tier"
    );
    assert_eq!(PieceTier::new(&mut t, false, "t").sweep(KEY).unwrap(), 1);
    assert_eq!(pieces(&t), 2);
    assert_eq!(live(&read(&mut t, false)).len(), 1);
    let other = PieceTier::new(&mut t, false, "t")
        .read("app.User:x", &LastWriterWins)
        .unwrap()
        .unwrap();
    assert_eq!(live(&other.partition).len(), 1);
}
