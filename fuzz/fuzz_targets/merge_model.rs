//! Arbitrary small partitions, merged by the library, against a model of the default
//! policy written out here (DESIGN.md §5): the later instant wins; at equal instants a
//! delete beats an edit, then the greater `version`, then the greater canonical bytes.
//! Merge must also be commutative, associative and idempotent (§10: the logical
//! partition is the merge of its pieces, in any order), and report exactly the slots
//! it changes on each side.
#![no_main]

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use arbitrary::Arbitrary;
use datasync::clock::{format_millis, Millis};
use datasync::sync::{merge, LastWriterWins, Merged};
use datasync::{Partition, Slot};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

/// Few names, ids and instants, so that the same id on both sides and equal
/// instants are common.
const NAMES: [&str; 2] = ["Post", "User"];
const IDS: [&str; 3] = ["k.a", "k.b", "k.c"];
const BASE: Millis = 1_767_225_600_000;

#[derive(Arbitrary, Debug)]
enum SlotIn {
    Active { at: u8, version: u8, payload: u8 },
    Deleted { at: u8 },
}

#[derive(Arbitrary, Debug)]
struct Item {
    name: u8,
    id: u8,
    slot: SlotIn,
}

#[derive(Arbitrary, Debug)]
struct Input {
    a: Vec<Item>,
    b: Vec<Item>,
    c: Vec<Item>,
}

/// The model's view of one slot: an entity as its canonical text, or a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Model {
    Active {
        at: Millis,
        version: u64,
        text: String,
    },
    Deleted(Millis),
}

type ModelPartition = BTreeMap<(&'static str, &'static str), Model>;

fn model_slot(id: &str, slot: &SlotIn) -> Model {
    match *slot {
        SlotIn::Active {
            at,
            version,
            payload,
        } => {
            let at = BASE + Millis::from(at % 4);
            let version = u64::from(version % 3) + 1;
            // Keys in sorted order, no whitespace: the canonical text of the entity.
            let text = format!(
                r#"{{"id":"{id}","p":{},"updatedAt":"{}","version":{version}}}"#,
                payload % 3,
                format_millis(at)
            );
            Model::Active { at, version, text }
        }
        SlotIn::Deleted { at } => Model::Deleted(BASE + Millis::from(at % 4)),
    }
}

fn model_partition(items: &[Item]) -> ModelPartition {
    let mut out = ModelPartition::new();
    for item in items.iter().take(12) {
        let name = NAMES[usize::from(item.name) % NAMES.len()];
        let id = IDS[usize::from(item.id) % IDS.len()];
        out.insert((name, id), model_slot(id, &item.slot));
    }
    out
}

/// The default policy, as DESIGN.md §5.4 states it.
fn model_winner(a: &Model, b: &Model) -> Model {
    let a_wins = match (a, b) {
        (
            Model::Active {
                at: ta,
                version: va,
                text: xa,
            },
            Model::Active {
                at: tb,
                version: vb,
                text: xb,
            },
        ) => match ta.cmp(tb) {
            Ordering::Equal => (va, xa.as_bytes()) >= (vb, xb.as_bytes()),
            order => order == Ordering::Greater,
        },
        (Model::Active { at, .. }, Model::Deleted(deleted)) => at > deleted,
        (Model::Deleted(deleted), Model::Active { at, .. }) => deleted >= at,
        (Model::Deleted(x), Model::Deleted(y)) => x >= y,
    };
    if a_wins {
        a.clone()
    } else {
        b.clone()
    }
}

fn model_merge(a: &ModelPartition, b: &ModelPartition) -> ModelPartition {
    let mut out = a.clone();
    for (key, slot) in b {
        let winner = match a.get(key) {
            Some(mine) => model_winner(mine, slot),
            None => slot.clone(),
        };
        out.insert(*key, winner);
    }
    out
}

/// The model as a partition blob (not canonical: through the library's full parse).
fn to_partition(model: &ModelPartition) -> Partition {
    let mut top = Map::new();
    let mut tombstones = Map::new();
    for ((name, id), slot) in model {
        match slot {
            Model::Active { text, .. } => {
                let entity: Value = serde_json::from_str(text).expect("model text is JSON");
                top.entry(*name)
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .expect("a section is an object")
                    .insert((*id).to_string(), entity);
            }
            Model::Deleted(at) => {
                tombstones
                    .entry(*name)
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .expect("a section is an object")
                    .insert((*id).to_string(), json!(format_millis(*at)));
            }
        }
    }
    if !tombstones.is_empty() {
        top.insert("deleted".into(), Value::Object(tombstones));
    }
    let bytes = serde_json::to_vec_pretty(&Value::Object(top)).expect("JSON serialises");
    Partition::parse(&bytes, false).unwrap_or_else(|e| panic!("a model blob is refused: {e}"))
}

/// Checks that the library's partition holds exactly the model's slots.
fn assert_matches(got: &Partition, want: &ModelPartition, what: &str) {
    let mut seen = 0;
    for (name, ids) in &got.names {
        for (id, slot) in ids {
            seen += 1;
            let expected = want
                .iter()
                .find(|((n, i), _)| n == name && i == id)
                .map(|(_, slot)| slot)
                .unwrap_or_else(|| panic!("{what}: {name} {id} is not in the model"));
            match (slot, expected) {
                (Slot::Active(e), Model::Active { text, .. }) => {
                    assert_eq!(e.json(), text, "{what}: {name} {id}")
                }
                (Slot::Deleted(at), Model::Deleted(want_at)) => {
                    assert_eq!(at, want_at, "{what}: {name} {id} deletedAt")
                }
                (slot, expected) => {
                    panic!("{what}: {name} {id}: library {slot:?}, model {expected:?}")
                }
            }
        }
    }
    assert_eq!(
        seen,
        want.len(),
        "{what}: the model has slots the library lost"
    );
}

/// `changed_x` lists exactly the slots that turn `x` into the merged partition.
fn assert_changes(
    side: &Partition,
    changes: &[datasync::sync::merge::SlotChange],
    merged: &Partition,
    what: &str,
) {
    let mut applied = side.clone();
    let mut keys = BTreeSet::new();
    for change in changes {
        assert!(
            keys.insert((change.name.clone(), change.id.clone())),
            "{what}: {} {} listed twice",
            change.name,
            change.id
        );
        assert_ne!(
            side.get(&change.name, &change.id),
            Some(&change.slot),
            "{what}: {} {} listed as changed but is not",
            change.name,
            change.id
        );
        applied.put(&change.name, &change.id, change.slot.clone());
    }
    assert_eq!(
        &applied, merged,
        "{what}: applying the changes does not give the merge"
    );
}

fn merged(a: &Partition, b: &Partition) -> Merged {
    merge(a, b, &LastWriterWins)
}

fuzz_target!(|input: Input| {
    let (ma, mb, mc) = (
        model_partition(&input.a),
        model_partition(&input.b),
        model_partition(&input.c),
    );
    let (a, b, c) = (to_partition(&ma), to_partition(&mb), to_partition(&mc));
    assert_matches(&a, &ma, "parsed a");

    let ab = merged(&a, &b);
    let want = model_merge(&ma, &mb);
    assert_matches(&ab.partition, &want, "merge(a, b)");
    assert_changes(&a, &ab.changed_a, &ab.partition, "merge(a, b) side a");
    assert_changes(&b, &ab.changed_b, &ab.partition, "merge(a, b) side b");
    let conflicts = ma
        .iter()
        .filter(|(key, slot)| mb.get(*key).is_some_and(|other| other != *slot))
        .count();
    assert_eq!(ab.conflicts, conflicts as u64, "conflict count");

    let ba = merged(&b, &a);
    assert_eq!(ba.partition, ab.partition, "merge is not commutative");
    assert_eq!(ba.partition.to_canonical(), ab.partition.to_canonical());

    let left = merged(&ab.partition, &c).partition;
    let right = merged(&a, &merged(&b, &c).partition).partition;
    assert_eq!(left, right, "merge is not associative");
    assert_matches(&left, &model_merge(&want, &mc), "merge(merge(a, b), c)");

    let again = merged(&ab.partition, &a);
    assert_eq!(again.partition, ab.partition, "merge is not idempotent");
    assert!(
        again.changed_a.is_empty(),
        "merging a again changes the merge"
    );
    let itself = merged(&ab.partition, &ab.partition);
    assert!(itself.changed_a.is_empty() && itself.changed_b.is_empty() && itself.conflicts == 0);
});
