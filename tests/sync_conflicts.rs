//! Sync scenarios between two tiers (DESIGN.md §5), with exact instants. The tiers
//! here are in format 1 (one document per partition, whose metadata some tests
//! damage); the convergence property test (`tests/convergence.rs`) holds format 2
//! to the same rules.

mod common;

use common::{audit_blobs, put_partition_in, stored_root, Probe};
use datasync::clock::format_millis;
use datasync::{sync_tiers, LastWriterWins, MemoryPersistence, Partition, Slot};

const T: i64 = 1_767_225_600_000;

fn put_partition(tier: &MemoryPersistence, key: &str, partition: &Partition) {
    put_partition_in(tier, key, partition, 1);
}

fn user(id: &str, at: i64, version: u64, name: &str) -> String {
    format!(
        r#""{id}":{{"id":"{id}","name":"{name}","updatedAt":"{}","version":{version}}}"#,
        format_millis(at)
    )
}

fn blob(active: &[String], deleted: &[(&str, i64)]) -> Partition {
    let mut text = format!("{{\"User\":{{{}}}", active.join(","));
    if !deleted.is_empty() {
        let d: Vec<String> = deleted
            .iter()
            .map(|(id, at)| format!("\"{id}\":\"{}\"", format_millis(*at)))
            .collect();
        text.push_str(&format!(",\"deleted\":{{\"User\":{{{}}}}}", d.join(",")));
    }
    text.push('}');
    Partition::parse(text.as_bytes(), false).unwrap()
}

fn sync(a: &MemoryPersistence, b: &MemoryPersistence) -> datasync::SyncStats {
    sync_tiers(
        Box::new(a.clone()),
        Box::new(b.clone()),
        std::sync::Arc::new(LastWriterWins),
    )
    .unwrap()
}

/// Syncs A and B, checks both converged and their metadata is true, and returns the
/// slot both hold for `id` in partition `key`.
fn converge(a: &MemoryPersistence, b: &MemoryPersistence, key: &str, id: &str) -> Option<Slot> {
    sync(a, b);
    let pa = audit_blobs(a);
    let pb = audit_blobs(b);
    assert_eq!(pa, pb, "tiers did not converge");
    assert_eq!(stored_root(a), stored_root(b));
    let again = sync(a, b);
    assert_eq!(
        again,
        datasync::SyncStats::default(),
        "second sync was not a no-op"
    );
    pa.get(key).and_then(|p| p.get("User", id).cloned())
}

fn pair(pa: Partition, pb: Partition) -> (MemoryPersistence, MemoryPersistence) {
    let (a, b) = (MemoryPersistence::new(), MemoryPersistence::new());
    put_partition(&a, "app.User", &pa);
    put_partition(&b, "app.User", &pb);
    (a, b)
}

fn name_of(slot: Option<Slot>) -> String {
    match slot {
        Some(Slot::Active(e)) => e.value()["name"].as_str().unwrap().to_string(),
        other => format!("{other:?}"),
    }
}

#[test]
fn keys_only_on_one_side_are_copied_both_ways() {
    let (a, b) = (MemoryPersistence::new(), MemoryPersistence::new());
    put_partition(&a, "app.A", &blob(&[user("U.1", T, 1, "in A")], &[]));
    put_partition(
        &b,
        "app.B",
        &blob(&[user("U.2", T, 1, "in B")], &[("U.3", T)]),
    );
    let stats = sync(&a, &b);
    assert_eq!(stats.keys_copied, 2);
    assert_eq!(stats.keys_merged, 0);
    assert_eq!(name_of(converge(&a, &b, "app.B", "U.2")), "in B");
    assert_eq!(name_of(converge(&a, &b, "app.A", "U.1")), "in A");
    assert_eq!(converge(&a, &b, "app.B", "U.3"), Some(Slot::Deleted(T)));
}

#[test]
fn divergent_keys_merge_entity_by_entity() {
    let (a, b) = pair(
        blob(&[user("U.1", T, 1, "a1"), user("U.2", T + 5, 2, "a2")], &[]),
        blob(&[user("U.2", T + 1, 1, "b2"), user("U.3", T, 1, "b3")], &[]),
    );
    let stats = sync(&a, &b);
    assert_eq!((stats.keys_merged, stats.conflicts), (1, 1));
    assert_eq!(name_of(converge(&a, &b, "app.User", "U.1")), "a1");
    assert_eq!(name_of(converge(&a, &b, "app.User", "U.2")), "a2");
    assert_eq!(name_of(converge(&a, &b, "app.User", "U.3")), "b3");
}

#[test]
fn newer_update_wins_on_either_side() {
    let (a, b) = pair(
        blob(&[user("U.1", T + 1, 2, "A newer")], &[]),
        blob(&[user("U.1", T, 2, "B")], &[]),
    );
    assert_eq!(name_of(converge(&a, &b, "app.User", "U.1")), "A newer");
    let (a, b) = pair(
        blob(&[user("U.1", T, 2, "A")], &[]),
        blob(&[user("U.1", T + 1, 2, "B newer")], &[]),
    );
    assert_eq!(name_of(converge(&a, &b, "app.User", "U.1")), "B newer");
}

#[test]
fn delete_versus_update_in_both_orders() {
    // Delete later than the update: the delete wins, whichever side holds it.
    let (a, b) = pair(
        blob(&[], &[("U.1", T + 2)]),
        blob(&[user("U.1", T + 1, 3, "edit")], &[]),
    );
    assert_eq!(
        converge(&a, &b, "app.User", "U.1"),
        Some(Slot::Deleted(T + 2))
    );
    let (a, b) = pair(
        blob(&[user("U.1", T + 1, 3, "edit")], &[]),
        blob(&[], &[("U.1", T + 2)]),
    );
    assert_eq!(
        converge(&a, &b, "app.User", "U.1"),
        Some(Slot::Deleted(T + 2))
    );
    // Update later than the delete: the update wins.
    let (a, b) = pair(
        blob(&[], &[("U.1", T)]),
        blob(&[user("U.1", T + 1, 3, "edit")], &[]),
    );
    assert_eq!(name_of(converge(&a, &b, "app.User", "U.1")), "edit");
    let (a, b) = pair(
        blob(&[user("U.1", T + 1, 3, "edit")], &[]),
        blob(&[], &[("U.1", T)]),
    );
    assert_eq!(name_of(converge(&a, &b, "app.User", "U.1")), "edit");
}

#[test]
fn equal_instants_delete_wins() {
    let (a, b) = pair(
        blob(&[user("U.1", T, 9, "edit")], &[]),
        blob(&[], &[("U.1", T)]),
    );
    assert_eq!(converge(&a, &b, "app.User", "U.1"), Some(Slot::Deleted(T)));
    let (a, b) = pair(
        blob(&[], &[("U.1", T)]),
        blob(&[user("U.1", T, 9, "edit")], &[]),
    );
    assert_eq!(converge(&a, &b, "app.User", "U.1"), Some(Slot::Deleted(T)));
}

#[test]
fn equal_instants_with_different_contents_pick_one_winner_everywhere() {
    // Greater version first.
    let (a, b) = pair(
        blob(&[user("U.1", T, 4, "v4")], &[]),
        blob(&[user("U.1", T, 5, "v5")], &[]),
    );
    assert_eq!(name_of(converge(&a, &b, "app.User", "U.1")), "v5");
    // Same version: greater canonical bytes, the same on both sides whatever the order.
    let (a, b) = pair(
        blob(&[user("U.1", T, 4, "apple")], &[]),
        blob(&[user("U.1", T, 4, "pear")], &[]),
    );
    assert_eq!(name_of(converge(&a, &b, "app.User", "U.1")), "pear");
    let (a, b) = pair(
        blob(&[user("U.1", T, 4, "pear")], &[]),
        blob(&[user("U.1", T, 4, "apple")], &[]),
    );
    assert_eq!(name_of(converge(&a, &b, "app.User", "U.1")), "pear");
}

#[test]
fn recreated_entity_after_delete_comes_back() {
    let (a, b) = pair(
        blob(&[], &[("U.1", T)]),
        blob(&[user("U.1", T - 5, 1, "old")], &[]),
    );
    assert_eq!(converge(&a, &b, "app.User", "U.1"), Some(Slot::Deleted(T)));
    put_partition(
        &a,
        "app.User",
        &blob(&[user("U.1", T + 10, 1, "reborn")], &[]),
    );
    assert_eq!(name_of(converge(&a, &b, "app.User", "U.1")), "reborn");
}

#[test]
fn second_sync_loads_nothing_and_changes_nothing() {
    let (a, b) = pair(
        blob(&[user("U.1", T, 1, "x")], &[]),
        blob(&[user("U.2", T, 1, "y")], &[]),
    );
    sync(&a, &b);
    let (pa, pb) = (
        Probe {
            inner: a.clone(),
            ..Probe::new()
        },
        Probe {
            inner: b.clone(),
            ..Probe::new()
        },
    );
    let stats = sync_tiers(
        Box::new(pa.clone()),
        Box::new(pb.clone()),
        std::sync::Arc::new(LastWriterWins),
    )
    .unwrap();
    assert_eq!(stats, datasync::SyncStats::default());
    assert!(pa.partition_loads().is_empty() && pb.partition_loads().is_empty());
    assert!(
        pa.stores.lock().unwrap().is_empty() && pb.stores.lock().unwrap().is_empty(),
        "a no-op sync wrote"
    );
}

#[test]
fn stale_metadata_is_repaired_and_corrupt_partitions_are_reported() {
    let (a, b) = pair(
        blob(&[user("U.1", T, 1, "a")], &[]),
        blob(&[user("U.2", T, 1, "b")], &[]),
    );
    put_partition(&a, "app.Other", &blob(&[user("O.1", T, 1, "o")], &[]));
    // Someone overwrote A's partition without updating its metadata.
    a.poke(
        "app.User",
        &blob(&[user("U.1", T + 1, 2, "a2")], &[]).to_canonical(),
    );
    // And B holds garbage under a key A also has.
    b.poke("app.Other", b"{not json");
    let mut meta = datasync::Meta::parse(&b.snapshot()["!datasync.meta"]).unwrap();
    meta.entries.insert(
        "app.Other".into(),
        datasync::MetaEntry {
            hash: "0".repeat(64),
            updated_at: 0,
            entities: Default::default(),
        },
    );
    b.poke("!datasync.meta", &meta.to_bytes());
    b.poke("!datasync.root", meta.root().as_bytes());
    let stats = sync(&a, &b);
    assert_eq!(stats.errors.len(), 1, "{:?}", stats.errors);
    assert!(
        stats.errors[0].contains("app.Other"),
        "error does not name the key: {}",
        stats.errors[0]
    );
    let pa = audit_blobs(&a);
    assert_eq!(name_of(pa["app.User"].get("User", "U.1").cloned()), "a2");
    assert!(pa["app.User"].get("User", "U.2").is_some());
    assert_eq!(b.snapshot()["app.User"], a.snapshot()["app.User"]);
}
