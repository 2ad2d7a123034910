//! The committed format-1 tier (`tests/fixtures/format1/`, see its README) still
//! opens with today's code and holds exactly what `expected.json` lists: every
//! entity, byte for byte as a value, and every tombstone with its instant.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datasync::clock::format_millis;
use datasync::{Config, DataSync, DirPersistence, Partition, QueryOptions, Slot};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of the fixture's tier in a temporary directory (the committed one is never
/// opened: opening creates a lock file and may rewrite metadata).
fn tier_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tier");
    copy_dir(&fixture().join("tier"), &dir);
    (tmp, dir)
}

/// The names listed in `expected.json`, with their entities by id.
fn expected_entities(expected: &Value) -> BTreeMap<String, BTreeMap<String, Value>> {
    expected["entities"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, list)| {
            let by_id = list
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["id"].as_str().unwrap().to_string(), e.clone()))
                .collect();
            (name.clone(), by_id)
        })
        .collect()
}

fn expected_deleted(expected: &Value) -> BTreeMap<String, BTreeMap<String, String>> {
    serde_json::from_value(expected["deleted"].clone()).unwrap()
}

#[test]
fn the_fixture_is_what_its_readme_says() {
    let expected = expected();
    assert_eq!(expected["format"], 1);
    assert_eq!(expected["prefix"], "app");
    let entities = expected_entities(&expected);
    let deleted = expected_deleted(&expected);
    let names: Vec<&String> = entities.keys().collect();
    assert_eq!(names, ["Note", "User"]);
    let total: usize = entities.values().map(BTreeMap::len).sum();
    assert!(total >= 24, "a few dozen entities, not {total}");
    for (name, ids) in &entities {
        assert!(!deleted[name].is_empty(), "{name} has no tombstones");
        assert!(
            ids.values().any(|e| e["version"].as_u64().unwrap() > 1),
            "{name} has no edited entity"
        );
        for id in deleted[name].keys() {
            assert!(!ids.contains_key(id), "{id} is both active and deleted");
        }
    }
    // One file per partition plus the metadata and root, each in the format-1
    // envelope; no lock file (opening creates it).
    let mut files: Vec<String> = std::fs::read_dir(fixture().join("tier/blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    for file in &files {
        let bytes = std::fs::read(fixture().join("tier/blobs").join(file)).unwrap();
        assert!(
            bytes.starts_with(b"DSB1\n"),
            "{file} is not a format-1 file"
        );
    }
    assert!(!fixture().join("tier/datasync.lock").exists());
    assert!(!fixture().join("tier/recovering").exists());
}

#[test]
fn todays_code_reads_every_entity_and_no_deleted_one() {
    let expected = expected();
    let entities = expected_entities(&expected);
    let deleted = expected_deleted(&expected);
    let (_tmp, dir) = tier_copy();

    let ds = DataSync::open(
        Config::new("app")
            .format(1)
            .local(DirPersistence::open(&dir).unwrap()),
    )
    .unwrap();
    check_entities(&ds, &entities, &deleted);
    ds.close().unwrap();

    // The tombstones, with their instants, as the partitions on disk hold them.
    let tier = DirPersistence::open(&dir).unwrap();
    for (name, tombstones) in &deleted {
        let key = format!("app.{name}");
        let bytes = tier.read(&key).unwrap().expect("the partition exists");
        let partition = Partition::parse(&bytes, false).unwrap();
        assert_eq!(partition.to_canonical(), bytes, "{key} is not canonical");
        check_tombstones(&key, name, &partition, tombstones, entities[name].len());
    }
}

/// Format 2 opens the fixture by converting it in place: every entity and no deleted
/// one, the tombstones kept with their instants, and format 1 refuses it after.
#[test]
fn format_2_converts_the_fixture_and_reads_every_entity_and_no_deleted_one() {
    let expected = expected();
    let entities = expected_entities(&expected);
    let deleted = expected_deleted(&expected);
    let (_tmp, dir) = tier_copy();
    let open = |format: u32| {
        DataSync::open(
            Config::new("app")
                .format(format)
                .local(DirPersistence::open(&dir).unwrap()),
        )
    };
    let ds = open(2).unwrap();
    check_entities(&ds, &entities, &deleted);
    ds.close().unwrap();
    drop(ds);
    let mut tier = DirPersistence::open(&dir).unwrap();
    for (name, tombstones) in &deleted {
        let key = format!("app.{name}");
        let read = datasync::pieces::PieceTier::new(&mut tier, false, "local")
            .read(&key, &datasync::LastWriterWins)
            .unwrap()
            .expect("the partition exists");
        check_tombstones(
            &key,
            name,
            &read.partition,
            tombstones,
            entities[name].len(),
        );
    }
    drop(tier);
    let err = open(1)
        .err()
        .expect("format 1 refuses a converted directory");
    assert_eq!(err.kind(), datasync::ErrorKind::InvalidConfig);
}

fn check_entities(
    ds: &DataSync,
    entities: &BTreeMap<String, BTreeMap<String, Value>>,
    deleted: &BTreeMap<String, BTreeMap<String, String>>,
) {
    for (name, by_id) in entities {
        let repo = ds.repo(name).unwrap();
        let all: BTreeMap<String, Value> = repo
            .query(&QueryOptions::default())
            .unwrap()
            .iter()
            .map(|e| (e.id().to_string(), e.value()))
            .collect();
        assert_eq!(
            &all, by_id,
            "{name}: the entities differ from expected.json"
        );
        for (id, value) in by_id {
            let entity = repo
                .get(id)
                .unwrap()
                .unwrap_or_else(|| panic!("{id} is gone"));
            assert_eq!(&entity.value(), value, "{id}");
            assert_eq!(entity.id(), id);
            assert_eq!(entity.version(), value["version"].as_u64().unwrap());
            assert_eq!(
                entity.updated_at_text(),
                value["updatedAt"].as_str().unwrap()
            );
        }
        for id in deleted[name].keys() {
            assert!(repo.get(id).unwrap().is_none(), "{id} was deleted");
        }
    }
    assert_eq!(ds.audit().unwrap(), Vec::<String>::new());
}

fn check_tombstones(
    key: &str,
    name: &str,
    partition: &Partition,
    tombstones: &BTreeMap<String, String>,
    live: usize,
) {
    {
        let found: BTreeMap<String, String> = partition.names[name]
            .iter()
            .filter_map(|(id, slot)| match slot {
                Slot::Deleted(at) => Some((id.clone(), format_millis(*at))),
                Slot::Active(_) => None,
            })
            .collect();
        assert_eq!(&found, tombstones, "{key}: the tombstones differ");
        assert_eq!(partition.counts()[name].count as usize, live);
    }
}

/// `datasync verify` finds the fixture clean, before and after today's code opened it.
#[cfg(feature = "cli")]
#[test]
fn verify_reports_the_fixture_clean() {
    let verify = |dir: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_datasync"))
            .arg("verify")
            .arg(dir)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "verify failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.starts_with("ok: 2 partition(s)"), "{stdout}");
        stdout
    };
    let (_tmp, dir) = tier_copy();
    let before = verify(&dir);
    let ds = DataSync::open(
        Config::new("app")
            .format(1)
            .local(DirPersistence::open(&dir).unwrap()),
    )
    .unwrap();
    ds.repo("User")
        .unwrap()
        .get("User.fixture-user-00")
        .unwrap();
    ds.close().unwrap();
    assert_eq!(verify(&dir), before, "opening changed what the tier holds");
}
