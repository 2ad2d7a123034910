//! The laws a conflict resolver must keep, checked through `merge` on random small
//! partitions: merging is commutative, associative and idempotent, so pieces of a
//! partition can be merged in any order and every device reaches the same bytes.
//!
//! The partitions share a few ids and draw instants, versions and contents from a few
//! values each, so the interesting cases are common: equal instants with different
//! content, an edit and a delete at the same instant, two deletes, an id on one side
//! only. The laws are checked for the default [`LastWriterWins`] and for a custom
//! resolver written here ([`HighScore`]), and a resolver that prefers one side is
//! shown to break them.

use std::cmp::Ordering;

use datasync::clock::format_millis;
use datasync::sync::merge::merge;
use datasync::{ConflictResolver, LastWriterWins, Partition, Slot};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const BASE: i64 = 1_767_225_600_000;

/// The ids the partitions draw from, with their entity names: two names, so the
/// merge meets names present on one side only too.
const IDS: [(&str, &str); 5] = [
    ("User", "User.a"),
    ("User", "User.b"),
    ("User", "User.c"),
    ("Note", "Note.a"),
    ("Note", "Note.b"),
];

/// One generated slot: a tombstone at `BASE + at`, or an entity.
#[derive(Debug, Clone)]
enum Spec {
    Deleted {
        at: i64,
    },
    Active {
        at: i64,
        version: u64,
        score: Option<i64>,
        tag: u8,
    },
}

fn spec() -> impl Strategy<Value = Spec> {
    // Three instants and few contents: equal instants, and equal instants and
    // versions with different bytes, happen in most cases.
    prop_oneof![
        1 => (0..3i64).prop_map(|at| Spec::Deleted { at }),
        3 => (0..3i64, 1..3u64, proptest::option::weighted(0.8, 0..3i64), 0..2u8)
            .prop_map(|(at, version, score, tag)| Spec::Active { at, version, score, tag }),
    ]
}

/// An entity as a partition holds it, built from its canonical text.
fn slot(name: &str, id: &str, spec: &Spec) -> Slot {
    match *spec {
        Spec::Deleted { at } => Slot::Deleted(BASE + at),
        Spec::Active {
            at,
            version,
            score,
            tag,
        } => {
            let score = score.map_or(String::new(), |s| format!(r#""score":{s},"#));
            let entity = format!(
                r#"{{"id":"{id}",{score}"tag":"t{tag}","updatedAt":"{}","version":{version}}}"#,
                format_millis(BASE + at)
            );
            let text = format!(r#"{{"{name}":{{"{id}":{entity}}}}}"#);
            let p = Partition::parse(text.as_bytes(), false).expect("a valid partition");
            p.get(name, id).expect("the entity just written").clone()
        }
    }
}

/// A random partition: each id of [`IDS`] absent or holding a random slot.
fn partition() -> impl Strategy<Value = Partition> {
    proptest::collection::vec(proptest::option::of(spec()), IDS.len()).prop_map(|specs| {
        let mut p = Partition::default();
        for ((name, id), spec) in IDS.iter().zip(&specs) {
            if let Some(spec) = spec {
                p.put(name, id, slot(name, id, spec));
            }
        }
        p
    })
}

/// A custom policy that keeps the laws: the entity with the greater `"score"` wins
/// (no score is below every score), ties go to the greater canonical bytes; a
/// tombstone beats every entity (a delete is final), and of two tombstones the later
/// one wins. It is "the greater slot" in one total order, whichever side is which.
struct HighScore;

fn score(slot: &Slot) -> Option<i64> {
    slot.entity().and_then(|e| e.value()["score"].as_i64())
}

impl ConflictResolver for HighScore {
    fn resolve(&self, _entity_name: &str, a: &Slot, b: &Slot) -> Slot {
        let order = match (a, b) {
            (Slot::Active(x), Slot::Active(y)) => score(a)
                .cmp(&score(b))
                .then_with(|| x.json().as_bytes().cmp(y.json().as_bytes())),
            (Slot::Active(_), Slot::Deleted(_)) => Ordering::Less,
            (Slot::Deleted(_), Slot::Active(_)) => Ordering::Greater,
            (Slot::Deleted(x), Slot::Deleted(y)) => x.cmp(y),
        };
        if order == Ordering::Less {
            b.clone()
        } else {
            a.clone()
        }
    }
}

/// Breaks the laws on purpose: keeps side A (as "the local copy wins" would).
struct PreferA;

impl ConflictResolver for PreferA {
    fn resolve(&self, _entity_name: &str, a: &Slot, _b: &Slot) -> Slot {
        a.clone()
    }
}

fn m(a: &Partition, b: &Partition, resolver: &dyn ConflictResolver) -> Partition {
    merge(a, b, resolver).partition
}

/// Partitions are equal, and so are the bytes a tier would hash and store.
fn assert_same(left: &Partition, right: &Partition, law: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(left, right, "{} does not hold", law);
    prop_assert_eq!(
        left.to_canonical(),
        right.to_canonical(),
        "{}: equal partitions, different bytes",
        law
    );
    Ok(())
}

/// What the merge reports as changed on one side must turn that side into the
/// merged partition.
fn assert_changes_apply(
    side: &Partition,
    changes: &[datasync::sync::merge::SlotChange],
    merged: &Partition,
) -> Result<(), TestCaseError> {
    let mut applied = side.clone();
    for change in changes {
        applied.put(&change.name, &change.id, change.slot.clone());
    }
    prop_assert_eq!(&applied, merged, "the reported changes miss something");
    Ok(())
}

fn check_laws(
    resolver: &dyn ConflictResolver,
    a: &Partition,
    b: &Partition,
    c: &Partition,
    pieces: &[Partition],
    order: &[usize],
) -> Result<(), TestCaseError> {
    let ab = merge(a, b, resolver);
    let ba = merge(b, a, resolver);
    assert_same(&ab.partition, &ba.partition, "merge(a, b) == merge(b, a)")?;
    prop_assert_eq!(ab.conflicts, ba.conflicts);
    assert_changes_apply(a, &ab.changed_a, &ab.partition)?;
    assert_changes_apply(b, &ab.changed_b, &ab.partition)?;

    let left = m(&ab.partition, c, resolver);
    let right = m(a, &m(b, c, resolver), resolver);
    assert_same(
        &left,
        &right,
        "merge(merge(a, b), c) == merge(a, merge(b, c))",
    )?;

    let aa = merge(a, a, resolver);
    assert_same(&aa.partition, a, "merge(a, a) == a")?;
    prop_assert_eq!(aa.conflicts, 0);
    prop_assert!(aa.changed_a.is_empty() && aa.changed_b.is_empty());

    // What the laws buy: pieces folded in any order give the same partition.
    let fold = |indices: &mut dyn Iterator<Item = usize>| {
        indices.fold(Partition::default(), |acc, i| m(&acc, &pieces[i], resolver))
    };
    let in_order = fold(&mut (0..pieces.len()));
    let shuffled = fold(&mut order.iter().copied());
    assert_same(&in_order, &shuffled, "pieces merged in any order")?;
    Ok(())
}

/// Some pieces and a permutation of their indices.
fn pieces() -> impl Strategy<Value = (Vec<Partition>, Vec<usize>)> {
    proptest::collection::vec(partition(), 2..5).prop_flat_map(|pieces| {
        let order: Vec<usize> = (0..pieces.len()).collect();
        (Just(pieces), Just(order).prop_shuffle())
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 750,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/resolver_laws.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn last_writer_wins_keeps_the_laws(
        a in partition(),
        b in partition(),
        c in partition(),
        (pieces, order) in pieces(),
    ) {
        check_laws(&LastWriterWins, &a, &b, &c, &pieces, &order)?;
    }

    #[test]
    fn a_custom_total_order_keeps_the_laws(
        a in partition(),
        b in partition(),
        c in partition(),
        (pieces, order) in pieces(),
    ) {
        check_laws(&HighScore, &a, &b, &c, &pieces, &order)?;
    }
}

fn one(spec: &Spec) -> Partition {
    let mut p = Partition::default();
    p.put("User", "User.a", slot("User", "User.a", spec));
    p
}

/// Why the rule exists: a resolver that keeps "its own" side gives each device the
/// slot it already had, so two devices that merge the same pair in opposite orders
/// never converge (and a sync between them never becomes a no-op).
#[test]
fn a_resolver_that_prefers_one_side_breaks_commutativity() {
    let phone = one(&Spec::Active {
        at: 1,
        version: 2,
        score: Some(1),
        tag: 0,
    });
    let laptop = one(&Spec::Active {
        at: 1,
        version: 2,
        score: Some(2),
        tag: 1,
    });
    // Each device merges with itself as side A.
    let on_phone = m(&phone, &laptop, &PreferA);
    let on_laptop = m(&laptop, &phone, &PreferA);
    assert_eq!(on_phone, phone);
    assert_eq!(on_laptop, laptop);
    assert_ne!(on_phone, on_laptop, "the devices should have diverged");

    // The lawful resolvers give both devices the same answer for the same pair.
    for resolver in [&LastWriterWins as &dyn ConflictResolver, &HighScore] {
        assert_eq!(
            m(&phone, &laptop, resolver),
            m(&laptop, &phone, resolver),
            "a lawful resolver diverged"
        );
    }
}

/// The custom resolver's rules, on single pairs.
#[test]
fn high_score_rules() {
    let low = one(&Spec::Active {
        at: 2,
        version: 2,
        score: Some(1),
        tag: 0,
    });
    let high = one(&Spec::Active {
        at: 0,
        version: 1,
        score: Some(5),
        tag: 0,
    });
    let none = one(&Spec::Active {
        at: 2,
        version: 2,
        score: None,
        tag: 1,
    });
    let gone = one(&Spec::Deleted { at: 0 });
    let later = one(&Spec::Deleted { at: 2 });
    assert_eq!(m(&low, &high, &HighScore), high, "the greater score wins");
    assert_eq!(m(&none, &low, &HighScore), low, "any score beats none");
    assert_eq!(m(&high, &gone, &HighScore), gone, "a delete is final");
    assert_eq!(m(&gone, &later, &HighScore), later, "the later delete wins");
}
