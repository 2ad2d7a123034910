//! An instance in format 2 (DESIGN §10, `docs/format-2.md`): what a flush and a sync
//! cost, counted in adapter bytes; conversion on open; a small edit with little free
//! space; a damaged piece restored from the cloud; compaction keeping pieces few.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::{manual, Meter};
use datasync::{
    Config, DataSync, DirPersistence, ErrorKind, MemoryPersistence, Persistence, TierId,
};
use serde_json::{json, Value};

fn users(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": format!("User.{i:016}"), "name": format!("user {i}"), "n": i}))
        .collect()
}

fn device(local: &Meter, cloud: &Meter) -> DataSync {
    DataSync::open(
        manual("app")
            .format(2)
            .local(local.clone())
            .cloud(cloud.clone()),
    )
    .unwrap()
}

/// A device in format 2 whose users are partitioned by their `team`.
fn team_device(local: &Meter, cloud: &Meter) -> DataSync {
    DataSync::open(
        manual("app")
            .format(2)
            .strategy(datasync::FieldStrategy::new("team"))
            .local(local.clone())
            .cloud(cloud.clone()),
    )
    .unwrap()
}

const N: usize = 100_000;

#[test]
fn one_edit_costs_its_own_bytes_in_a_partition_of_100k() {
    let (local_a, local_b, cloud) = (Meter::default(), Meter::default(), Meter::default());
    let a = device(&local_a, &cloud);
    a.repo("User").unwrap().save_many(&users(N)).unwrap();
    a.sync_now().unwrap();
    let b = device(&local_b, &cloud);
    b.sync_now().unwrap();
    let id = format!("User.{:016}", 7);
    assert!(b.repo("User").unwrap().get(&id).unwrap().is_some());

    // A flush of one edit hands the local adapter one small piece and an index.
    local_a.reset();
    a.repo("User")
        .unwrap()
        .save(&json!({"id": id, "name": "edited", "n": -1}))
        .unwrap();
    a.flush().unwrap();
    assert!(
        local_a.stored() < 2_000,
        "a flush stored {} bytes",
        local_a.stored()
    );
    assert!(
        local_a.loaded() < 2_000,
        "a flush loaded {} bytes",
        local_a.loaded()
    );

    // Syncing it into the cloud moves that piece, under 2 KB each way.
    cloud.reset();
    a.sync_now().unwrap();
    assert!(
        cloud.stored() < 2_000,
        "A's sync stored {} bytes in the cloud",
        cloud.stored()
    );
    assert!(
        cloud.loaded() < 2_000,
        "A's sync loaded {} bytes from the cloud",
        cloud.loaded()
    );

    // And down to the other device: under 2 KB from the cloud, and B sees the edit.
    cloud.reset();
    local_b.reset();
    b.sync_now().unwrap();
    assert!(
        cloud.loaded() < 2_000,
        "B's sync loaded {} bytes from the cloud",
        cloud.loaded()
    );
    assert!(
        cloud.stored() < 2_000,
        "B's sync stored {} bytes in the cloud",
        cloud.stored()
    );
    assert!(
        local_b.stored() < 4_000,
        "B's sync stored {} bytes locally",
        local_b.stored()
    );
    let got = b.repo("User").unwrap().get(&id).unwrap().unwrap();
    assert_eq!(got.value()["name"], "edited");

    // A no-op sync loads no piece anywhere.
    for t in [&local_a, &cloud] {
        t.reset();
    }
    let stats = a.sync_now().unwrap();
    assert_eq!(stats.keys_compared, 0, "{stats:?}");
    assert_eq!(cloud.piece_loads.load(Ordering::SeqCst), 0);
    assert_eq!(local_a.piece_loads.load(Ordering::SeqCst), 0);
    assert!(a.audit().unwrap().is_empty());
    assert!(b.audit().unwrap().is_empty());
}

#[test]
fn one_edit_in_a_tier_of_1000_partitions_writes_summaries_for_one() {
    let (local_a, local_b, cloud) = (Meter::default(), Meter::default(), Meter::default());
    let open = |local: &Meter| team_device(local, &cloud);
    let a = open(&local_a);
    let users: Vec<Value> = (0..10_000)
        .map(|i| json!({"team": format!("t{}", i % 1000), "n": i}))
        .collect();
    let ids = a.repo("User").unwrap().save_many(&users).unwrap();
    a.sync_now().unwrap();
    assert_eq!(a.tier_keys(TierId::Local).unwrap().len(), 1000);
    let b = open(&local_b);
    b.sync_now().unwrap();

    // A flush of one edit stores its piece, its index and the summaries above its
    // partition: not a document that grows with the number of partitions.
    local_a.reset();
    let edited = json!({"id": ids[7], "team": "t7", "n": -1});
    a.repo("User").unwrap().save(&edited).unwrap();
    a.flush().unwrap();
    assert!(
        local_a.stored() <= 2_000,
        "a flush stored {} bytes",
        local_a.stored()
    );

    // A sync each way moves about as little (and records the device's sync).
    cloud.reset();
    a.sync_now().unwrap();
    assert!(
        cloud.stored() <= 2_500 && cloud.loaded() <= 2_500,
        "A's sync stored {} and loaded {} bytes in the cloud",
        cloud.stored(),
        cloud.loaded()
    );
    cloud.reset();
    local_b.reset();
    b.sync_now().unwrap();
    assert!(
        cloud.loaded() <= 2_500 && local_b.stored() <= 3_000,
        "B's sync loaded {} bytes from the cloud and stored {} locally",
        cloud.loaded(),
        local_b.stored()
    );
    let got = b.repo("User").unwrap().get(&ids[7]);
    assert_eq!(got.unwrap().unwrap().value()["n"], -1);

    // A no-op sync reads the top of each tree and nothing else.
    cloud.reset();
    let stats = b.sync_now().unwrap();
    assert_eq!(stats.keys_compared, 0, "{stats:?}");
    assert!(cloud.loaded() < 600, "{} bytes", cloud.loaded());
    assert!(a.audit().unwrap().is_empty());
    assert!(b.audit().unwrap().is_empty());
}

#[test]
fn a_damaged_or_missing_summary_document_is_rebuilt_and_loses_nothing() {
    let (local_a, local_b, cloud) = (Meter::default(), Meter::default(), Meter::default());
    let open = |local: &Meter| team_device(local, &cloud);
    let a = open(&local_a);
    let users: Vec<Value> = (0..200)
        .map(|i| json!({"team": format!("t{}", i % 50), "n": i}))
        .collect();
    let ids = a.repo("User").unwrap().save_many(&users).unwrap();
    a.sync_now().unwrap();
    let leaves: Vec<String> = cloud
        .inner
        .snapshot()
        .keys()
        .filter(|k| k.starts_with("!datasync.meta.") && k.len() == "!datasync.meta.ab".len())
        .cloned()
        .collect();
    assert!(leaves.len() > 10, "{leaves:?}");
    // One leaf is garbage and another is gone: the cloud's metadata is rebuilt from
    // its indexes by the next device that reads it, and that device gets everything.
    cloud.inner.clone().clear(&leaves[1]).unwrap();
    let b = open(&local_b);
    b.sync_now().unwrap();
    let repo = b.repo("User").unwrap();
    for id in &ids {
        assert!(repo.get(id).unwrap().is_some(), "{id} is missing on B");
    }
    // The same for a leaf that does not parse, seen by a device that read it before.
    a.repo("User")
        .unwrap()
        .save(&json!({"team": "t1", "n": -1}))
        .unwrap();
    a.sync_now().unwrap();
    let leaf = datasync::summary::node_key(&datasync::summary::leaf_of("app.User.t1"));
    assert!(cloud.inner.snapshot().contains_key(&leaf), "{leaf}");
    cloud.inner.poke(&leaf, b"{\"leaf\":2,\"e\":[");
    b.sync_now().unwrap();
    assert_eq!(repo.query(&Default::default()).unwrap().len(), 201);
    // A top that does not parse is rebuilt and stored once, even by a sync that
    // then finds nothing to do.
    cloud.inner.poke("!datasync.root", b"not a top");
    b.sync_now().unwrap();
    let top = cloud.inner.snapshot()["!datasync.root"].clone();
    assert!(datasync::summary::Node::parse("", &top).is_ok());
    // And the cloud's tree describes every partition again.
    let tree = datasync::Meta::read_tree(|k| cloud.inner.snapshot().get(k).cloned())
        .unwrap()
        .unwrap();
    assert_eq!(tree.entries.len(), 50);
    a.sync_now().unwrap();
    assert!(a.audit().unwrap().is_empty());
    assert!(b.audit().unwrap().is_empty());
}

#[test]
fn with_less_free_space_than_the_partition_a_small_edit_commits() {
    let local = Meter::default();
    let ds = DataSync::open(manual("app").format(2).local(local.clone())).unwrap();
    let repo = ds.repo("User").unwrap();
    repo.save_many(&users(5_000)).unwrap();
    ds.flush().unwrap();
    let used = local.used();
    assert!(used > 500_000, "the partition is {used} bytes");
    // 4 KB free: far less than the partition.
    local.capacity.store(used + 4_096, Ordering::SeqCst);
    let id = format!("User.{:016}", 42);
    repo.save(&json!({"id": id, "name": "small edit"})).unwrap();
    ds.flush().unwrap();
    ds.close().unwrap();
    drop(ds);
    local.capacity.store(0, Ordering::SeqCst);
    let ds = DataSync::open(manual("app").format(2).local(local.clone())).unwrap();
    let got = ds.repo("User").unwrap().get(&id).unwrap().unwrap();
    assert_eq!(got.value()["name"], "small edit");
    assert_eq!(
        ds.repo("User")
            .unwrap()
            .query(&Default::default())
            .unwrap()
            .len(),
        5_000
    );
}

#[test]
fn compaction_keeps_a_partition_to_a_few_pieces_and_loses_nothing() {
    let local = MemoryPersistence::new();
    let config = manual("app")
        .format(2)
        .compaction_bound(4)
        .local(local.clone());
    let ds = DataSync::open(config).unwrap();
    let repo = ds.repo("User").unwrap();
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(repo.save(&json!({"n": i})).unwrap());
        if i % 3 == 0 {
            repo.delete(&ids[i / 2]).unwrap();
        }
        ds.flush().unwrap();
    }
    let pieces = local
        .snapshot()
        .keys()
        .filter(|k| k.starts_with("!piece:"))
        .count();
    assert!(
        pieces <= 5,
        "{pieces} pieces after 40 flushes with a bound of 4"
    );
    let expected = repo.query(&Default::default()).unwrap().len();
    ds.close().unwrap();
    drop(ds);
    let ds = DataSync::open(manual("app").format(2).local(local.clone())).unwrap();
    assert_eq!(
        ds.repo("User")
            .unwrap()
            .query(&Default::default())
            .unwrap()
            .len(),
        expected
    );
    assert!(ds.audit().unwrap().is_empty());
    common::audit_blobs(&local);
}

#[test]
fn a_damaged_piece_is_an_error_until_the_cloud_restores_it() {
    let (local, cloud) = (MemoryPersistence::new(), common::Probe::new());
    let open = || {
        DataSync::open(
            manual("app")
                .format(2)
                .local(local.clone())
                .cloud(cloud.clone()),
        )
        .unwrap()
    };
    let ds = open();
    let id = ds
        .repo("User")
        .unwrap()
        .save(&json!({"name": "kept"}))
        .unwrap();
    ds.sync_now().unwrap();
    ds.close().unwrap();
    drop(ds);
    // Damage every piece of the partition in local.
    for key in local.snapshot().keys().filter(|k| k.starts_with("!piece:")) {
        local.poke(key, b"{\"v\":2,\"garbage\"");
    }
    // With the cloud unreachable the read fails: never a silent empty answer.
    cloud.fail(true);
    let ds = open();
    let err = ds.repo("User").unwrap().get(&id).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    // The next sync with the cloud restores it.
    cloud.fail(false);
    let stats = ds.sync_now().unwrap();
    assert!(stats.errors.is_empty(), "{stats:?}");
    let got = ds.repo("User").unwrap().get(&id).unwrap().unwrap();
    assert_eq!(got.value()["name"], "kept");
    assert!(ds.audit().unwrap().is_empty());
    ds.close().unwrap();
    drop(ds);
    // With the cloud reachable, a read of a damaged partition restores it on the way.
    for key in local.snapshot().keys().filter(|k| k.starts_with("!piece:")) {
        local.poke(key, b"not a piece");
    }
    let ds = open();
    let got = ds.repo("User").unwrap().get(&id).unwrap().unwrap();
    assert_eq!(got.value()["name"], "kept");
    assert!(ds.audit().unwrap().is_empty());
}

#[test]
fn a_format1_directory_is_converted_on_open_and_then_refuses_format1() {
    let dir = tempfile::tempdir().unwrap();
    let open = |format: u32| -> datasync::Result<DataSync> {
        DataSync::open(
            manual("app")
                .format(format)
                .local(DirPersistence::open(dir.path()).unwrap()),
        )
    };
    let ds = open(1).unwrap();
    let repo = ds.repo("User").unwrap();
    let kept = repo.save(&json!({"name": "from format 1"})).unwrap();
    let gone = repo.save(&json!({"name": "deleted in format 1"})).unwrap();
    repo.delete(&gone).unwrap();
    ds.close().unwrap();
    drop(ds);

    let ds = open(2).unwrap();
    let repo = ds.repo("User").unwrap();
    assert_eq!(
        repo.get(&kept).unwrap().unwrap().value()["name"],
        "from format 1"
    );
    assert!(repo.get(&gone).unwrap().is_none());
    let added = repo.save(&json!({"name": "in format 2"})).unwrap();
    ds.close().unwrap();
    drop(ds);

    let err = open(1)
        .err()
        .expect("format 1 refuses a format-2 directory");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    let ds = open(2).unwrap();
    let repo = ds.repo("User").unwrap();
    assert!(repo.get(&added).unwrap().is_some());
    assert!(repo.get(&kept).unwrap().is_some());
    assert_eq!(ds.tier_keys(TierId::Local).unwrap(), vec!["app.User"]);
    assert!(ds.audit().unwrap().is_empty());
}

#[test]
fn a_format1_partition_that_cannot_be_converted_is_an_error_until_the_cloud_restores_it() {
    // A format-1 device syncs two partitions to its cloud; then its local copy of
    // one is damaged, and the metadata records a third that is no longer there.
    let (local, cloud) = (MemoryPersistence::new(), MemoryPersistence::new());
    let open = |format: u32, cloud: Option<&MemoryPersistence>| {
        let mut config = manual("app").format(format).local(local.clone());
        if let Some(cloud) = cloud {
            config = config.cloud(cloud.clone());
        }
        DataSync::open(config).unwrap()
    };
    let ds = open(1, Some(&cloud));
    let user = ds.repo("User").unwrap().save(&json!({"n": 1})).unwrap();
    let task = ds.repo("Task").unwrap().save(&json!({"n": 2})).unwrap();
    ds.repo("Gone").unwrap().save(&json!({"n": 3})).unwrap();
    ds.sync_now().unwrap();
    ds.close().unwrap();
    drop(ds);
    local.poke("app.Task", b"{not a partition");
    local.clone().clear("app.Gone").unwrap();

    let n_of = |ds: &DataSync, name: &str, id: &str| {
        let found = ds.repo(name).unwrap().get(id).unwrap();
        found.map(|e| e.value()["n"].clone())
    };
    // Format 2 opens, converts what it can, and keeps the damaged document.
    let ds = open(2, None);
    assert_eq!(n_of(&ds, "User", &user), Some(json!(1)));
    for (name, id) in [("Task", task.as_str()), ("Gone", "Gone.abcdefgh12345678")] {
        let err = ds.repo(name).unwrap().get(id).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{name}: {err}");
    }
    assert_eq!(local.snapshot()["app.Task"], b"{not a partition");
    ds.close().unwrap();
    drop(ds);

    // With the cloud, the sync restores the one the cloud holds.
    let ds = open(2, Some(&cloud));
    ds.sync_now().unwrap();
    assert_eq!(n_of(&ds, "Task", &task), Some(json!(2)));
    assert_eq!(n_of(&ds, "User", &user), Some(json!(1)));
}

#[test]
fn an_unknown_format_is_refused() {
    let err = DataSync::open(Config::new("app").format(3)).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
}

#[test]
fn a_format1_device_on_a_cloud_in_format_2_is_told_so_and_keeps_its_writes() {
    let cloud = MemoryPersistence::new();
    let modern = DataSync::open(
        manual("app")
            .format(2)
            .local(MemoryPersistence::new())
            .cloud(cloud.clone()),
    )
    .unwrap();
    modern
        .repo("User")
        .unwrap()
        .save(&json!({"name": "in pieces"}))
        .unwrap();
    modern.sync_now().unwrap();
    let old = DataSync::open(
        manual("app")
            .format(1)
            .local(MemoryPersistence::new())
            .cloud(cloud.clone()),
    )
    .unwrap();
    let id = old
        .repo("User")
        .unwrap()
        .save(&json!({"name": "format 1"}))
        .unwrap();
    let stats = old.sync_now().unwrap();
    assert!(stats.offline, "{stats:?}");
    assert!(
        stats.errors.iter().any(|e| e.contains("format 2")),
        "{stats:?}"
    );
    assert!(old.status().last_error.unwrap().contains("format 2"));
    // Its write is kept, and the cloud still holds only pieces.
    assert!(old.repo("User").unwrap().get(&id).unwrap().is_some());
    assert!(cloud.snapshot().keys().all(|k| k.starts_with('!')));
}

/// Two writes that each hydrate one partition at the same moment both reach the
/// tier below at the next flush. (The store held the partition once the hydration
/// wrote it, a moment before it recorded what it reflects of local; a write in that
/// moment was kept in the store and never flushed.)
#[test]
fn writes_racing_a_hydration_are_all_flushed() {
    let rounds = 400;
    let mut lost = 0;
    for round in 0..rounds {
        let (local, cloud) = (Meter::default(), Meter::default());
        {
            let ds = device(&local, &cloud);
            ds.repo("User")
                .unwrap()
                .save(&json!({"id": "User.seed", "n": 0}))
                .unwrap();
            ds.flush().unwrap();
        }
        let ds = device(&local, &cloud);
        let ids: Vec<String> = (0..2).map(|t| format!("User.r{round}t{t}")).collect();
        std::thread::scope(|s| {
            for id in &ids {
                let ds = &ds;
                s.spawn(move || {
                    let users = ds.repo("User").unwrap();
                    users.save(&json!({"id": id, "n": 1})).unwrap();
                });
            }
        });
        ds.flush().unwrap();
        drop(ds);
        let reopened = device(&local, &cloud);
        let users = reopened.repo("User").unwrap();
        if ids.iter().any(|id| users.get(id).unwrap().is_none()) {
            lost += 1;
        }
    }
    assert_eq!(lost, 0, "{lost} of {rounds} rounds lost a write");
}

#[test]
fn pieces_no_index_lists_are_swept_before_the_first_flush_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = MemoryPersistence::new();
    let open = || {
        DataSync::open(
            manual("app")
                .format(2)
                .local(DirPersistence::open(dir.path()).unwrap())
                .cloud(cloud.clone()),
        )
        .unwrap()
    };
    let ds = open();
    let repo = ds.repo("User").unwrap();
    let kept = repo.save(&json!({"name": "kept"})).unwrap();
    ds.sync_now().unwrap();
    ds.close().unwrap();
    drop(ds);
    // What a crash between a piece and its index leaves: a piece of a partition
    // with an index that does not list it. Beside it, a piece of a partition with
    // no index at all (it may be all that is left of one), and an orphan in the
    // shared cloud (it may be another device's, about to be listed).
    let orphan = "!piece:app.User:0123456789abcdef0123456789abcdef";
    let alone = "!piece:app.Ghost:0123456789abcdef0123456789abcdef";
    {
        let mut local = DirPersistence::open(dir.path()).unwrap();
        local.store(orphan, b"cut short").unwrap();
        local.store(alone, b"no index").unwrap();
        local.commit().unwrap();
    }
    cloud.clone().store(orphan, b"another device's").unwrap();
    let pieces = || {
        let mut local = DirPersistence::open(dir.path()).unwrap();
        let keys = local.keys().unwrap().unwrap();
        keys.into_iter()
            .filter(|k| k.starts_with("!piece:"))
            .collect::<Vec<_>>()
    };
    let before = pieces();
    assert!(before.iter().any(|k| k == orphan) && before.iter().any(|k| k == alone));

    let ds = open();
    let repo = ds.repo("User").unwrap();
    assert_eq!(repo.get(&kept).unwrap().unwrap().value()["name"], "kept");
    let added = repo.save(&json!({"name": "added"})).unwrap();
    ds.flush().unwrap();
    ds.close().unwrap();
    drop(ds);
    let after = pieces();
    assert!(
        !after.iter().any(|k| k == orphan),
        "the unlisted piece went"
    );
    assert!(
        after.iter().any(|k| k == alone),
        "a partition without an index keeps its pieces"
    );
    assert_eq!(
        after.len(),
        before.len(),
        "one piece went and the flush added one: {before:?} then {after:?}"
    );
    assert!(
        cloud.snapshot().contains_key(orphan),
        "the shared tier is never swept"
    );

    let ds = open();
    let repo = ds.repo("User").unwrap();
    assert_eq!(repo.get(&kept).unwrap().unwrap().value()["name"], "kept");
    assert_eq!(repo.get(&added).unwrap().unwrap().value()["name"], "added");
    assert!(ds.audit().unwrap().is_empty());
}

#[test]
fn a_sync_of_two_tiers_that_both_wrote_reads_the_partition_once() {
    const N: usize = 20_000;
    let a = Meter::default();
    {
        let ds = DataSync::open(manual("app").format(2).local(a.clone())).unwrap();
        ds.repo("User").unwrap().save_many(&users(N)).unwrap();
        ds.close().unwrap();
    }
    // B starts as a copy of A, writing as a device of its own.
    let b = Meter::default();
    for (k, v) in a.inner.snapshot() {
        if k != datasync::pieces::WRITER_KEY {
            b.inner.poke(&k, &v);
        }
    }
    let base = a.largest();
    for (tier, edited, deleted) in [(&a, 0..10, 100), (&b, 10..20, 101)] {
        let ds = DataSync::open(manual("app").format(2).local(tier.clone())).unwrap();
        let repo = ds.repo("User").unwrap();
        for i in edited {
            repo.save(&json!({"id": format!("User.{i:016}"), "name": "edited", "n": -1}))
                .unwrap();
        }
        repo.delete(&format!("User.{deleted:016}")).unwrap();
        ds.close().unwrap();
    }
    a.reset();
    b.reset();
    let stats = datasync::sync_tiers(
        Box::new(a.clone()),
        Box::new(b.clone()),
        Arc::new(datasync::LastWriterWins),
    )
    .unwrap();
    assert!(stats.errors.is_empty(), "{stats:?}");
    // Both received the other's pieces and hold the same writes after: one of them
    // is read to count the partition, not both.
    let loaded = a.loaded() + b.loaded();
    assert!(
        loaded < base + base / 2,
        "the sync loaded {loaded} bytes for a partition of {base}"
    );
    assert!(
        a.stored() + b.stored() < 16_000,
        "stored {}",
        a.stored() + b.stored()
    );
    // And the counts both record are the partition's: N users less the two deleted.
    for tier in [&a, &b] {
        let ds = DataSync::open(manual("app").format(2).local(tier.clone())).unwrap();
        let meta = ds.tier_meta(TierId::Local).unwrap();
        let active: u64 = meta
            .entries
            .values()
            .map(|e| e.entities["User"].count)
            .sum();
        assert_eq!(active, N as u64 - 2);
        for i in 0..20 {
            let got = ds
                .repo("User")
                .unwrap()
                .get(&format!("User.{i:016}"))
                .unwrap();
            assert_eq!(got.unwrap().value()["name"], "edited");
        }
        assert!(ds.audit().unwrap().is_empty());
    }
}

#[test]
fn a_device_that_wrote_while_another_synced_takes_its_counts_from_its_store() {
    const N: usize = 20_000;
    let (local_a, local_b, cloud) = (Meter::default(), Meter::default(), Meter::default());
    let a = device(&local_a, &cloud);
    a.repo("User").unwrap().save_many(&users(N)).unwrap();
    a.sync_now().unwrap();
    let b = device(&local_b, &cloud);
    b.sync_now().unwrap();
    let base = cloud.largest();
    let id = |i: usize| format!("User.{i:016}");
    let edit = |ds: &DataSync, i: usize, name: &str| {
        ds.repo("User")
            .unwrap()
            .save(&json!({"id": id(i), "name": name, "n": i}))
            .unwrap();
    };
    // B edits 0..10, deletes 100 and 8, and syncs.
    for i in 0..10 {
        edit(&b, i, "by B");
    }
    b.repo("User")
        .unwrap()
        .delete_many(&[id(100), id(8)])
        .unwrap();
    b.sync_now().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    // A then edits 10..20, 5 and 8 (later than B: A wins both), deletes 101.
    for i in (10..20).chain([5, 8]) {
        edit(&a, i, "by A");
    }
    a.repo("User").unwrap().delete(&id(101)).unwrap();
    // A's sync: its local tier receives B's pieces and the cloud A's.
    local_a.reset();
    cloud.reset();
    let stats = a.sync_now().unwrap();
    assert!(stats.errors.is_empty(), "{stats:?}");
    assert!(
        local_a.loaded() + cloud.loaded() < base / 4,
        "A's sync loaded {} + {} bytes for a partition of {base}",
        local_a.loaded(),
        cloud.loaded()
    );
    b.sync_now().unwrap();
    // Both devices and both tiers count N less 100 and 101 (8 came back through A).
    for ds in [&a, &b] {
        assert_counts(ds, N as u64 - 2);
        let repo = ds.repo("User").unwrap();
        assert_eq!(repo.get(&id(5)).unwrap().unwrap().value()["name"], "by A");
        assert_eq!(repo.get(&id(8)).unwrap().unwrap().value()["name"], "by A");
        assert_eq!(repo.get(&id(7)).unwrap().unwrap().value()["name"], "by B");
        assert!(repo.get(&id(100)).unwrap().is_none());
    }
}

#[test]
fn syncs_that_bring_edits_down_while_the_device_saves_lose_nothing_and_count_right() {
    const N: usize = 5_000;
    let (local_a, local_b, cloud) = (Meter::default(), Meter::default(), Meter::default());
    let a = Arc::new(device(&local_a, &cloud));
    a.repo("User").unwrap().save_many(&users(N)).unwrap();
    a.sync_now().unwrap();
    let b = device(&local_b, &cloud);
    b.sync_now().unwrap();
    let id = |i: usize| format!("User.{i:016}");
    for round in 0..5 {
        // B edits users 0..100 and deletes one, then syncs.
        let repo_b = b.repo("User").unwrap();
        for i in 0..100 {
            repo_b
                .save(&json!({"id": id(i), "name": format!("B {round}"), "n": i}))
                .unwrap();
        }
        repo_b.delete(&id(1_000 + round)).unwrap();
        b.sync_now().unwrap();
        // A saves 200 users of 2000..3000 (each once in all) on a thread while its
        // syncs bring B's edits down.
        let saver = {
            let a = a.clone();
            std::thread::spawn(move || {
                let repo = a.repo("User").unwrap();
                for i in 0..200 {
                    let i = 2_000 + (round * 200 + i) % 1_000;
                    repo.save(&json!({"id": id(i), "name": format!("A {round}"), "n": i}))
                        .unwrap();
                }
            })
        };
        for _ in 0..3 {
            assert!(a.sync_now().unwrap().errors.is_empty());
        }
        saver.join().unwrap();
    }
    a.sync_now().unwrap();
    b.sync_now().unwrap();
    for ds in [&*a, &b] {
        let repo = ds.repo("User").unwrap();
        for i in 0..100 {
            assert_eq!(repo.get(&id(i)).unwrap().unwrap().value()["name"], "B 4");
        }
        for i in 2_000..3_000 {
            let round = (i - 2_000) / 200;
            let got = repo.get(&id(i)).unwrap().unwrap();
            assert_eq!(got.value()["name"], format!("A {round}"));
        }
        assert_counts(ds, N as u64 - 5);
    }
}

/// Both tiers of `ds` record `users` active users, and its audit finds nothing.
fn assert_counts(ds: &DataSync, users: u64) {
    for tier in [TierId::Local, TierId::Cloud] {
        let meta = ds.tier_meta(tier).unwrap();
        let active: u64 = meta
            .entries
            .values()
            .map(|e| e.entities["User"].count)
            .sum();
        assert_eq!(active, users, "{tier:?}");
    }
    assert!(ds.audit().unwrap().is_empty(), "{:?}", ds.audit().unwrap());
}

/// Last writer wins, asking its instance for its pending writes on every call (as a
/// host resolver that calls back in would) and keeping each answer's error, if any.
#[derive(Clone, Default)]
struct CallsBack {
    ds: Arc<std::sync::OnceLock<Arc<DataSync>>>,
    answers: Arc<std::sync::Mutex<Vec<Option<ErrorKind>>>>,
}

impl datasync::ConflictResolver for CallsBack {
    fn resolve(&self, name: &str, a: &datasync::Slot, b: &datasync::Slot) -> datasync::Slot {
        if let Some(ds) = self.ds.get() {
            let answer = ds.pending_writes().err().map(|e| e.kind());
            self.answers.lock().unwrap().push(answer);
        }
        datasync::LastWriterWins.resolve(name, a, b)
    }
}

impl CallsBack {
    /// An instance in format 2 resolving with this resolver, which it is given.
    fn device(&self, local: &Meter, cloud: &Meter) -> Arc<DataSync> {
        let ds = Arc::new(
            DataSync::open(
                manual("app")
                    .format(2)
                    .resolver(self.clone())
                    .local(local.clone())
                    .cloud(cloud.clone()),
            )
            .unwrap(),
        );
        assert!(self.ds.set(ds.clone()).is_ok());
        ds
    }

    /// Every call was answered, and there was at least one.
    fn assert_answered(&self) {
        let answers = self.answers.lock().unwrap().clone();
        assert!(!answers.is_empty(), "the resolver was never called");
        assert!(answers.iter().all(Option::is_none), "{answers:?}");
    }
}

/// A resolver may be host code that calls back into its instance. When another
/// device's edits come down into the store, it runs with no lock of the store held,
/// so such a call is answered, not refused with `WouldDeadlock`.
#[test]
fn a_resolver_that_calls_back_while_edits_come_down_is_answered() {
    let (local_a, local_b, cloud) = (Meter::default(), Meter::default(), Meter::default());
    let resolver = CallsBack::default();
    let a = resolver.device(&local_a, &cloud);
    let b = device(&local_b, &cloud);
    let ua = a.repo("User").unwrap();
    ua.save_many(&users(10)).unwrap();
    a.sync_now().unwrap();
    b.sync_now().unwrap();
    // A's store holds the partition the edit comes down into.
    let id = "User.0000000000000003";
    assert!(ua.get(id).unwrap().is_some());
    let edit = json!({"id": id, "name": "from b", "n": -3});
    b.repo("User").unwrap().save(&edit).unwrap();
    b.sync_now().unwrap();
    a.sync_now().unwrap();
    assert_eq!(ua.get(id).unwrap().unwrap().value()["name"], "from b");
    resolver.assert_answered();
    a.close().unwrap();
}

/// Reading a partition merges its pieces through the resolver (here two devices'
/// versions of one user). The resolver runs after the tier's adapter is let go, so
/// a resolver that calls back into its instance is answered.
#[test]
fn a_resolver_that_calls_back_while_a_partition_is_read_is_answered() {
    let cloud = Meter::default();
    let id = "User.0000000000000003";
    for (n, name) in [(1, "from a"), (2, "from b")] {
        let d = device(&Meter::default(), &cloud);
        d.repo("User")
            .unwrap()
            .save(&json!({"id": id, "name": name, "n": n}))
            .unwrap();
        d.sync_now().unwrap();
        d.close().unwrap();
    }
    let resolver = CallsBack::default();
    let c = resolver.device(&Meter::default(), &cloud);
    c.sync_now().unwrap();
    let got = c.repo("User").unwrap().get(id).unwrap().unwrap();
    assert_eq!(got.value()["name"], "from b");
    resolver.assert_answered();
    c.close().unwrap();
}
