//! The merge of two versions of one partition: a pure function, blobs in, blob out.

use std::cmp::Ordering;

use crate::partition::{Ids, Partition, Slot};

/// Chooses between two different slots of the same entity.
///
/// # The laws
///
/// A resolver must be
///
/// - **deterministic**: the answer depends on the two slots and the entity name
///   only, never on time, randomness, the device or any state of its own;
/// - **commutative**: `resolve(a, b) == resolve(b, a)`;
/// - **associative**: resolving `a` with `b` and the result with `c` gives the same
///   slot as resolving `b` with `c` first and `a` with the result.
///
/// Why: devices merge the same versions in different orders (which copy is side `a`
/// depends on which tier syncs with which, and when), and the merge is meant to
/// combine the immutable pieces of a partition in whatever order it finds them. Only
/// a resolver with these laws gives every order the same bytes, so that tiers
/// converge and a second sync is a no-op; one without them leaves devices
/// disagreeing for ever, each sure it is up to date.
///
/// The simplest way to keep them is to rank every slot by one total order and
/// return the greater of the two, as [`LastWriterWins`] does (instant, then version,
/// then canonical bytes). A custom resolver should do the same:
///
/// - compare by a total order over what the slots hold (a field, the instant, and
///   finally the canonical bytes, [`Entity::json`](crate::Entity::json), so that no
///   two different slots tie);
/// - never prefer a side because it is `a` or `b`: neither side is "local" or
///   "remote" in a way the resolver can rely on;
/// - decide deletes by a rule that does not depend on the side either (for example
///   "a delete beats every edit", or "the later instant wins");
/// - if it builds a new slot instead of picking one (a field-wise merge), make that
///   combination itself commutative, associative and idempotent.
///
/// The merge calls the resolver only for two different slots of one id; equal
/// slots are kept as they are. `tests/resolver_laws.rs` checks the laws through the
/// merge for [`LastWriterWins`] and for a custom resolver.
pub trait ConflictResolver: Send + Sync {
    /// The winner (or a merge) of `a` and `b`, which differ.
    fn resolve(&self, entity_name: &str, a: &Slot, b: &Slot) -> Slot;
}

/// The default policy: last writer wins, deletes win ties.
///
/// - Active vs Active: greater `updatedAt`; then greater `version`; then greater
///   canonical bytes.
/// - Active vs Deleted: the later instant; equal instants: the delete.
/// - Deleted vs Deleted: the later `deletedAt`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LastWriterWins;

impl ConflictResolver for LastWriterWins {
    fn resolve(&self, _entity_name: &str, a: &Slot, b: &Slot) -> Slot {
        let a_wins = match (a, b) {
            (Slot::Active(x), Slot::Active(y)) => {
                let order = x
                    .updated_at()
                    .cmp(&y.updated_at())
                    .then(x.version().cmp(&y.version()))
                    .then_with(|| x.json().as_bytes().cmp(y.json().as_bytes()));
                order != Ordering::Less
            }
            (Slot::Active(x), Slot::Deleted(at)) => x.updated_at() > *at,
            (Slot::Deleted(at), Slot::Active(y)) => *at >= y.updated_at(),
            (Slot::Deleted(x), Slot::Deleted(y)) => x >= y,
        };
        if a_wins {
            a.clone()
        } else {
            b.clone()
        }
    }
}

/// One entity whose slot a merge changed on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotChange {
    pub name: String,
    pub id: String,
    pub slot: Slot,
}

/// The result of merging A and B.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// The partition both sides should hold.
    pub partition: Partition,
    /// Slots that differ from A's (what applying `partition` changes in A).
    pub changed_a: Vec<SlotChange>,
    /// Slots that differ from B's.
    pub changed_b: Vec<SlotChange>,
    /// How many ids were present on both sides with different slots.
    pub conflicts: u64,
}

fn same(a: &Slot, b: &Slot) -> bool {
    match (a, b) {
        (Slot::Active(x), Slot::Active(y)) => x.same_content(y),
        (Slot::Deleted(x), Slot::Deleted(y)) => x == y,
        _ => false,
    }
}

/// Merges two partitions entity by entity (DESIGN.md §5.4).
pub fn merge(a: &Partition, b: &Partition, resolver: &dyn ConflictResolver) -> Merged {
    let mut out = Merged::default();
    let empty = Ids::new();
    let mut names: Vec<&String> = a.names.keys().chain(b.names.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let ids_a = a.names.get(name).unwrap_or(&empty);
        let ids_b = b.names.get(name).unwrap_or(&empty);
        let mut merged = Ids::with_capacity(ids_a.len().max(ids_b.len()));
        let change = |id: &str, slot: &Slot| SlotChange {
            name: name.clone(),
            id: id.to_string(),
            slot: slot.clone(),
        };
        for (id, sa) in ids_a {
            let winner = match ids_b.get(id) {
                None => {
                    out.changed_b.push(change(id, sa));
                    sa.clone()
                }
                Some(sb) if same(sa, sb) => sa.clone(),
                Some(sb) => {
                    out.conflicts += 1;
                    let winner = resolver.resolve(name, sa, sb);
                    if !same(&winner, sa) {
                        out.changed_a.push(change(id, &winner));
                    }
                    if !same(&winner, sb) {
                        out.changed_b.push(change(id, &winner));
                    }
                    winner
                }
            };
            merged.insert(id.clone(), winner);
        }
        for (id, sb) in ids_b {
            if !ids_a.contains_key(id) {
                out.changed_a.push(change(id, sb));
                merged.insert(id.clone(), sb.clone());
            }
        }
        if !merged.is_empty() {
            out.partition.names.insert(name.clone(), merged);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::Entity;

    fn active(id: &str, at: i64, version: u64, extra: &str) -> Slot {
        let text = format!(
            r#"{{"id":"{id}","updatedAt":"{}","version":{version},"x":"{extra}"}}"#,
            crate::clock::format_millis(at)
        );
        Slot::Active(Entity::parse(&text).unwrap())
    }

    fn one(slot: Slot) -> Partition {
        let mut p = Partition::default();
        p.put("User", "U.1", slot);
        p
    }

    fn winner(a: Slot, b: Slot) -> Slot {
        let ab = merge(&one(a.clone()), &one(b.clone()), &LastWriterWins);
        let ba = merge(&one(b), &one(a), &LastWriterWins);
        assert_eq!(ab.partition, ba.partition, "merge is not symmetric");
        ab.partition.get("User", "U.1").unwrap().clone()
    }

    #[test]
    fn last_writer_wins_rules() {
        assert_eq!(
            winner(active("U.1", 10, 1, "a"), active("U.1", 20, 1, "b")),
            active("U.1", 20, 1, "b")
        );
        assert_eq!(
            winner(active("U.1", 10, 1, "a"), Slot::Deleted(10)),
            Slot::Deleted(10)
        );
        assert_eq!(
            winner(active("U.1", 11, 1, "a"), Slot::Deleted(10)),
            active("U.1", 11, 1, "a")
        );
        assert_eq!(
            winner(active("U.1", 10, 1, "a"), Slot::Deleted(11)),
            Slot::Deleted(11)
        );
        assert_eq!(winner(Slot::Deleted(3), Slot::Deleted(9)), Slot::Deleted(9));
        assert_eq!(
            winner(active("U.1", 10, 2, "a"), active("U.1", 10, 3, "a")),
            active("U.1", 10, 3, "a")
        );
        assert_eq!(
            winner(active("U.1", 10, 2, "a"), active("U.1", 10, 2, "b")),
            active("U.1", 10, 2, "b")
        );
    }

    #[test]
    fn one_sided_ids_are_copied_and_reported() {
        let mut a = Partition::default();
        a.put("User", "U.1", active("U.1", 1, 1, "a"));
        let mut b = Partition::default();
        b.put("Post", "P.1", Slot::Deleted(4));
        let m = merge(&a, &b, &LastWriterWins);
        assert_eq!(m.changed_a.len(), 1);
        assert_eq!(m.changed_b.len(), 1);
        assert_eq!(m.conflicts, 0);
        assert_eq!(m.partition.get("Post", "P.1"), Some(&Slot::Deleted(4)));
        assert!(m.partition.get("User", "U.1").is_some());
    }
}
