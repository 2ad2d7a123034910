//! The directory tier: keys, the lock, corrupt and truncated files, damaged metadata,
//! missing and unwritable directories, and recovery after an interrupted write.
//! The instances here keep format 1 (one file per partition), whose files these
//! tests damage; `tests/format2.rs` damages format 2's pieces and summary tree.

use std::fs;
use std::path::Path;

use datasync::meta::{META_KEY, ROOT_KEY};
use datasync::{
    Config, DataSync, DirOptions, DirPersistence, ErrorKind, MemoryPersistence, Meta, Persistence,
    TierId,
};
use serde_json::json;

fn instance(dir: &Path, cloud: Option<&MemoryPersistence>) -> DataSync {
    let mut config = Config::new("app")
        .format(1)
        .local(DirPersistence::open(dir).unwrap());
    if let Some(cloud) = cloud {
        config = config
            .cloud(cloud.clone())
            .cloud_sync_interval(std::time::Duration::from_secs(3600));
    }
    DataSync::open(config).unwrap()
}

fn meta_of(dir: &mut DirPersistence) -> Meta {
    Meta::parse(&dir.load(META_KEY).unwrap().expect("metadata")).unwrap()
}

fn quarantined(dir: &Path) -> usize {
    fs::read_dir(dir.join("corrupt"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn any_key_round_trips_and_is_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "long/".repeat(100);
    let keys = [
        "app.User",
        "app.user",
        "a/b/../c",
        "x:y!z",
        "..",
        ".",
        "Ünïcödé ✓ 日本",
        "tab\tnew\nline",
        "percent%2f^caret~tilde",
        long.as_str(),
        META_KEY,
        ROOT_KEY,
    ];
    {
        let mut dir = DirPersistence::open(tmp.path()).unwrap();
        for (i, key) in keys.iter().enumerate() {
            dir.store(key, format!("value {i}").as_bytes()).unwrap();
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(
                dir.load(key).unwrap(),
                Some(format!("value {i}").into_bytes()),
                "{key:?}"
            );
        }
        assert_eq!(dir.load("absent").unwrap(), None);
        dir.clear("absent").unwrap();
    }
    let mut dir = DirPersistence::open(tmp.path()).unwrap();
    let mut listed = dir.keys().unwrap().unwrap();
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    dir.clear("a/b/../c").unwrap();
    assert_eq!(dir.load("a/b/../c").unwrap(), None);
    assert_eq!(dir.keys().unwrap().unwrap().len(), keys.len() - 1);
    // Nothing escaped the directory.
    assert!(!tmp.path().join("c").exists());
}

#[test]
fn a_second_open_of_a_held_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let first = DirPersistence::open(tmp.path()).unwrap();
    let err = DirPersistence::open(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("another instance holds"), "{err}");
    // Clones share the lock, and it lasts until the last one goes.
    let clone = first.clone();
    drop(first);
    assert!(DirPersistence::open(tmp.path()).is_err());
    drop(clone);
    DirPersistence::open(tmp.path()).unwrap();
}

#[test]
fn an_instance_holds_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = instance(tmp.path(), None);
    let err = DataSync::open(Config::new("app").local(
        DirPersistence::open(tmp.path()).map_or_else(
            |e| {
                assert!(e.to_string().contains("in use"), "{e}");
                MemoryPersistence::new()
            },
            |_| panic!("opened a held directory"),
        ),
    ));
    assert!(err.is_ok());
    ds.close().unwrap();
    DirPersistence::open(tmp.path()).unwrap();
}

/// Saves two partitions, syncs them to the cloud, closes; returns (user id, task id).
fn seed(dir: &Path, cloud: &MemoryPersistence) -> (String, String) {
    let ds = instance(dir, Some(cloud));
    let user = ds
        .repo("User")
        .unwrap()
        .save(&json!({"name": "Alice"}))
        .unwrap();
    let task = ds
        .repo("Task")
        .unwrap()
        .save(&json!({"title": "Buy milk"}))
        .unwrap();
    ds.sync_now().unwrap();
    ds.close().unwrap();
    (user, task)
}

fn damage(dir: &Path, key: &str, how: impl FnOnce(&mut Vec<u8>)) -> std::path::PathBuf {
    let file = DirPersistence::open(dir).unwrap().file_of(key);
    let mut bytes = fs::read(&file).unwrap();
    how(&mut bytes);
    fs::write(&file, bytes).unwrap();
    file
}

#[test]
fn a_corrupt_partition_is_reported_moved_aside_and_restored_from_the_cloud() {
    let tmp = tempfile::tempdir().unwrap();
    let cloud = MemoryPersistence::new();
    let (user, task) = seed(tmp.path(), &cloud);
    let file = damage(tmp.path(), "app.User", |b| {
        let mid = b.len() / 2;
        b[mid] ^= 0x20;
    });

    let ds = instance(tmp.path(), Some(&cloud));
    let users = ds.repo("User").unwrap();
    let err = users.get(&user).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Adapter);
    assert!(
        text.contains("app.User")
            && text.contains(&file.display().to_string())
            && text.contains("moved aside"),
        "{text}"
    );
    assert!(!file.exists());
    assert_eq!(quarantined(tmp.path()), 1);
    // The rest of the tier kept working, and the damaged partition comes back.
    assert_eq!(
        ds.repo("Task")
            .unwrap()
            .get(&task)
            .unwrap()
            .unwrap()
            .value()["title"],
        "Buy milk"
    );
    assert_eq!(users.get(&user).unwrap().unwrap().value()["name"], "Alice");
    ds.sync_now().unwrap();
    assert!(ds.audit().unwrap().is_empty(), "{:?}", ds.audit());
    assert_eq!(
        ds.tier_meta(TierId::Local).unwrap().root(),
        ds.tier_meta(TierId::Cloud).unwrap().root()
    );
    ds.close().unwrap();
    assert!(file.exists());
}

#[test]
fn a_truncated_file_is_an_error_once_then_absent() {
    let tmp = tempfile::tempdir().unwrap();
    let cloud = MemoryPersistence::new();
    seed(tmp.path(), &cloud);
    for cut in [1, 10, 40] {
        let file = damage(tmp.path(), "app.Task", |b| {
            b.truncate(b.len().saturating_sub(cut))
        });
        let mut dir = DirPersistence::open(tmp.path()).unwrap();
        let err = dir.load("app.Task").unwrap_err().to_string();
        assert!(
            err.contains("\"app.Task\"") && err.contains(&file.display().to_string()),
            "{err}"
        );
        assert_eq!(dir.load("app.Task").unwrap(), None);
        assert!(dir.load("app.User").unwrap().is_some());
        // Put it back for the next round.
        dir.store("app.Task", b"{}").unwrap();
    }
    assert_eq!(quarantined(tmp.path()), 3);
    // Inspection reads without moving anything.
    damage(tmp.path(), "app.User", |b| b.truncate(3));
    let dir = DirPersistence::open(tmp.path()).unwrap();
    assert_eq!(dir.read("app.User").unwrap_err().kind(), ErrorKind::Corrupt);
    assert!(dir.file_of("app.User").exists());
}

#[test]
fn garbage_metadata_is_rebuilt_from_the_partitions() {
    let tmp = tempfile::tempdir().unwrap();
    let cloud = MemoryPersistence::new();
    let (user, task) = seed(tmp.path(), &cloud);
    let before = meta_of(&mut DirPersistence::open(tmp.path()).unwrap());
    assert_eq!(before.entries.len(), 2);

    // Readable file, garbage document.
    DirPersistence::open(tmp.path())
        .unwrap()
        .store(META_KEY, b"{not json")
        .unwrap();
    let ds = instance(tmp.path(), None);
    assert_eq!(ds.tier_meta(TierId::Local).unwrap().root(), before.root());
    assert!(ds.repo("User").unwrap().get(&user).unwrap().is_some());
    ds.repo("User")
        .unwrap()
        .save(&json!({"name": "Bob"}))
        .unwrap();
    ds.flush().unwrap();
    assert!(ds.audit().unwrap().is_empty());
    ds.close().unwrap();
    let after = meta_of(&mut DirPersistence::open(tmp.path()).unwrap());
    assert_eq!(after.entries["app.User"].entities["User"].count, 2);

    // Garbage bytes in place of the file itself: moved aside, rebuilt.
    damage(tmp.path(), META_KEY, |b| {
        b.iter_mut().for_each(|x| *x = 0xff)
    });
    let ds = instance(tmp.path(), None);
    assert_eq!(quarantined(tmp.path()), 1);
    assert_eq!(ds.tier_meta(TierId::Local).unwrap().entries.len(), 2);
    assert_eq!(
        ds.repo("Task")
            .unwrap()
            .get(&task)
            .unwrap()
            .unwrap()
            .value()["title"],
        "Buy milk"
    );
    ds.close().unwrap();

    // Metadata gone altogether: rebuilt as well.
    // (The rebuilt document is stored at the next sync that writes; none did here.)
    let _ = fs::remove_file(DirPersistence::open(tmp.path()).unwrap().file_of(META_KEY));
    assert!(!DirPersistence::open(tmp.path())
        .unwrap()
        .file_of(META_KEY)
        .exists());
    let ds = instance(tmp.path(), None);
    assert_eq!(ds.tier_meta(TierId::Local).unwrap().entries.len(), 2);
    assert_eq!(
        ds.repo("User")
            .unwrap()
            .query(&Default::default())
            .unwrap()
            .len(),
        2
    );
    ds.close().unwrap();
}

#[test]
fn a_write_left_without_its_metadata_makes_the_next_open_rebuild_the_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let cloud = MemoryPersistence::new();
    seed(tmp.path(), &cloud);
    let old = meta_of(&mut DirPersistence::open(tmp.path()).unwrap());
    {
        // A writer that stores a partition and goes before its metadata and commit:
        // what it stored is kept, recorded as an incomplete commit (a crash would
        // lose the uncommitted write instead; tests/crash.rs kills writers).
        let mut dir = DirPersistence::open(tmp.path()).unwrap();
        dir.store("app.Note", br#"{"Note":{"Note.abcdefghijklmnop":{"createdAt":"2026-01-01T00:00:00.000Z","id":"Note.abcdefghijklmnop","updatedAt":"2026-01-01T00:00:00.000Z","version":1}}}"#).unwrap();
        fs::write(dir.path().join("blobs").join(".999-1.tmp"), b"half a write").unwrap();
        assert!(
            !dir.file_of("app.Note").exists(),
            "nothing reaches its file before a commit"
        );
        assert!(dir.load("app.Note").unwrap().is_some(), "but loads see it");
    }
    let mut dir = DirPersistence::open(tmp.path()).unwrap();
    assert!(!dir.path().join("blobs").join(".999-1.tmp").exists());
    let meta = meta_of(&mut dir);
    assert_eq!(meta.entries.len(), 3);
    assert_eq!(meta.entries["app.User"].hash, old.entries["app.User"].hash);
    assert_eq!(meta.entries["app.Note"].entities["Note"].count, 1);
    assert_eq!(
        dir.load(ROOT_KEY).unwrap().unwrap(),
        meta.root().into_bytes()
    );
}

#[test]
fn a_recovering_marker_of_an_older_version_rebuilds_the_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let cloud = MemoryPersistence::new();
    seed(tmp.path(), &cloud);
    {
        let mut dir = DirPersistence::open(tmp.path()).unwrap();
        dir.store(META_KEY, b"{}").unwrap();
        dir.commit().unwrap();
    }
    fs::write(tmp.path().join("recovering"), b"").unwrap();
    let mut dir = DirPersistence::open(tmp.path()).unwrap();
    assert!(!tmp.path().join("recovering").exists());
    assert_eq!(meta_of(&mut dir).entries.len(), 2);
}

#[test]
fn a_commit_is_one_journal_append_and_the_journal_empties_when_the_directory_closes() {
    let tmp = tempfile::tempdir().unwrap();
    let journal = tmp.path().join("journal");
    let len = || fs::metadata(&journal).map(|m| m.len()).unwrap_or(0);
    let mut dir = DirPersistence::open(tmp.path()).unwrap();
    dir.store("app.A", b"one").unwrap();
    dir.store("!index:app.B", b"two").unwrap();
    assert_eq!(len(), 0, "nothing is written before the commit");
    dir.commit().unwrap();
    let after_one = len();
    assert!(after_one > 0);
    assert_eq!(dir.load("app.A").unwrap().unwrap(), b"one");
    // The files wait for the checkpoint: a document rewritten by every commit
    // reaches its file once per checkpoint.
    assert!(!dir.file_of("app.A").exists());
    dir.clear("app.A").unwrap();
    assert_eq!(dir.load("app.A").unwrap(), None);
    assert_eq!(
        dir.keys().unwrap().unwrap(),
        vec!["!index:app.B".to_string()]
    );
    dir.commit().unwrap();
    assert!(len() > after_one);
    // A commit with nothing to write appends nothing.
    let before = len();
    dir.commit().unwrap();
    assert_eq!(len(), before);
    let (a, b) = (dir.file_of("app.A"), dir.file_of("!index:app.B"));
    drop(dir);
    assert!(
        len() <= 5,
        "closing writes and syncs the files and empties the journal"
    );
    assert!(b.exists() && !a.exists());
    let mut dir = DirPersistence::open(tmp.path()).unwrap();
    assert_eq!(dir.load("!index:app.B").unwrap().unwrap(), b"two");
    assert_eq!(dir.load("app.A").unwrap(), None);
}

#[test]
fn a_completed_write_leaves_no_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = DataSync::open(
        Config::new("app")
            .format(1)
            .local(DirPersistence::open_with(tmp.path(), DirOptions { durable: false }).unwrap()),
    )
    .unwrap();
    ds.repo("User")
        .unwrap()
        .save(&json!({"name": "Alice"}))
        .unwrap();
    ds.flush().unwrap();
    assert!(!tmp.path().join("recovering").exists());
    ds.close().unwrap();
    assert!(DirOptions::default().durable);
}

#[test]
fn a_missing_directory_is_created_and_a_vanished_one_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("not").join("yet");
    let ds = instance(&path, None);
    let id = ds
        .repo("User")
        .unwrap()
        .save(&json!({"name": "Alice"}))
        .unwrap();
    ds.flush().unwrap();
    assert!(path.join("blobs").is_dir());

    fs::remove_dir_all(&path).unwrap();
    ds.repo("User")
        .unwrap()
        .save(&json!({"id": id, "name": "Alice 2"}))
        .unwrap();
    let err = ds.flush().unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    // The instance keeps working in memory.
    assert_eq!(
        ds.repo("User").unwrap().get(&id).unwrap().unwrap().value()["name"],
        "Alice 2"
    );
    ds.close().unwrap();
}

#[test]
fn an_unwritable_location_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    // A path under a regular file cannot be a directory for anyone, root included.
    let file = tmp.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    let err = DirPersistence::open(&file).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.to_string().contains("not a directory"), "{err}");
    let err = DirPersistence::open(file.join("sub"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot create directory") && err.contains("plain-file"),
        "{err}"
    );

    // A read-only directory. Permission bits do not stop a privileged user (tests
    // often run as root), so this part runs only where they take effect.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = tmp.path().join("read-only");
        fs::create_dir(&ro).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        let privileged = fs::write(ro.join("probe"), b"").is_ok();
        if privileged {
            eprintln!("permission bits are not enforced for this user; read-only check skipped");
        } else {
            let err = DirPersistence::open(&ro).unwrap_err().to_string();
            assert!(err.contains("cannot") && err.contains("read-only"), "{err}");
        }
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// An instance that syncs with the cloud only when asked.
fn quiet(dir: &Path, cloud: &MemoryPersistence) -> DataSync {
    let config = Config::new("app")
        .format(1)
        .local(DirPersistence::open(dir).unwrap())
        .cloud(cloud.clone())
        .sync_on_open(false)
        .cloud_sync_interval(std::time::Duration::from_secs(3600));
    DataSync::open(config).unwrap()
}

#[test]
fn a_lost_partition_that_no_tier_holds_leaves_the_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let cloud = MemoryPersistence::new();
    let (user, _) = seed(tmp.path(), &cloud);
    // A partition written after the last cloud sync, then damaged: no tier can restore it.
    let ds = quiet(tmp.path(), &cloud);
    let note = ds
        .repo("Note")
        .unwrap()
        .save(&json!({"text": "local only"}))
        .unwrap();
    ds.flush().unwrap();
    ds.close().unwrap();
    damage(tmp.path(), "app.Note", |b| b.truncate(b.len() / 2));

    let ds = quiet(tmp.path(), &cloud);
    assert!(ds.repo("Note").unwrap().get(&note).is_err());
    // Moved aside, the partition is still known: reads fail, naming it, rather than
    // answer "absent".
    let err = ds.repo("Note").unwrap().get(&note).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("app.Note"), "{err}");
    ds.sync_now().unwrap();
    assert!(ds.audit().unwrap().is_empty(), "{:?}", ds.audit());
    assert!(!ds
        .tier_keys(TierId::Local)
        .unwrap()
        .contains(&"app.Note".to_string()));
    assert!(ds.repo("User").unwrap().get(&user).unwrap().is_some());
    ds.close().unwrap();
    let meta = meta_of(&mut DirPersistence::open(tmp.path()).unwrap());
    assert!(!meta.entries.contains_key("app.Note"));
}

#[test]
fn a_partition_file_rolled_back_to_an_older_copy_is_not_served_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let cloud = MemoryPersistence::new();
    let (user, _) = seed(tmp.path(), &cloud);
    let file = DirPersistence::open(tmp.path())
        .unwrap()
        .file_of("app.User");
    let older = fs::read(&file).unwrap();
    let ds = instance(tmp.path(), Some(&cloud));
    ds.repo("User")
        .unwrap()
        .save(&json!({"id": user, "name": "Alice, later"}))
        .unwrap();
    ds.sync_now().unwrap();
    ds.close().unwrap();
    // An older, valid copy of the file is put back (a backup restored by hand).
    fs::write(&file, &older).unwrap();

    let offline = quiet(tmp.path(), &MemoryPersistence::new());
    let err = offline.repo("User").unwrap().get(&user).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("app.User"), "{err}");
    // Still refused on the next read: not "absent", not the older value.
    assert_eq!(
        offline.repo("User").unwrap().get(&user).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    offline.close().unwrap();
    // And after a restart: the mark is kept in the metadata.
    let offline = quiet(tmp.path(), &MemoryPersistence::new());
    assert_eq!(
        offline.repo("User").unwrap().get(&user).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    offline.close().unwrap();

    // A sync with the cloud, which holds the later copy, repairs it.
    let ds = quiet(tmp.path(), &cloud);
    ds.sync_now().unwrap();
    let alice = ds.repo("User").unwrap().get(&user).unwrap().unwrap();
    assert_eq!(alice.value()["name"], "Alice, later");
    assert!(ds.audit().unwrap().is_empty(), "{:?}", ds.audit());
    ds.close().unwrap();
}

/// The conditional write of the directory and memory tiers: it stores only over the
/// bytes expected (or into an absent key), and its compare and write are one step
/// against the other handles of the directory.
#[test]
fn conditional_writes_store_only_over_what_was_expected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DirPersistence::open(tmp.path().join("tier")).unwrap();
    let tiers: Vec<Box<dyn Persistence>> =
        vec![Box::new(dir.clone()), Box::new(MemoryPersistence::new())];
    for mut tier in tiers {
        assert_eq!(tier.store_if("k", Some(b"x"), b"1").unwrap(), Some(false));
        assert_eq!(tier.load("k").unwrap(), None, "nothing written");
        assert_eq!(tier.store_if("k", None, b"1").unwrap(), Some(true));
        assert_eq!(tier.store_if("k", None, b"2").unwrap(), Some(false));
        assert_eq!(tier.store_if("k", Some(b"2"), b"3").unwrap(), Some(false));
        assert_eq!(tier.load("k").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(tier.store_if("k", Some(b"1"), b"").unwrap(), Some(true));
        assert_eq!(tier.store_if("k", Some(b""), b"4").unwrap(), Some(true));
        assert_eq!(tier.load("k").unwrap().as_deref(), Some(&b"4"[..]));
    }
    // Many handles of one directory racing to replace one value: each expected
    // value is replaced exactly once.
    let mut seed = dir.clone();
    seed.store("counter", b"0").unwrap();
    let won = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            let mut handle = dir.clone();
            let won = &won;
            s.spawn(move || {
                for _ in 0..50 {
                    loop {
                        let held = handle.load("counter").unwrap().unwrap();
                        let n: u64 = String::from_utf8(held.clone()).unwrap().parse().unwrap();
                        let next = (n + 1).to_string();
                        if handle
                            .store_if("counter", Some(&held), next.as_bytes())
                            .unwrap()
                            == Some(true)
                        {
                            won.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            break;
                        }
                    }
                }
            });
        }
    });
    assert_eq!(won.into_inner(), 200);
    assert_eq!(seed.load("counter").unwrap().as_deref(), Some(&b"200"[..]));
}
