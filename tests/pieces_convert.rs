//! Conversion of a format-1 directory tier to pieces (`datasync::pieces::convert_format1`):
//! the committed format-1 fixture converts to exactly what `expected.json` lists, and a
//! conversion killed with SIGKILL at random moments loses nothing: the tier is then
//! either still format 1 and complete, or finished by the next conversion.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use datasync::clock::format_millis;
use datasync::pieces::{convert_format1, is_converted, PieceTier};
use datasync::{
    Config, DataSync, DirOptions, DirPersistence, LastWriterWins, Partition, Persistence, Slot,
};
use serde_json::{json, Value};

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

fn read(tier: &mut DirPersistence, key: &str) -> Partition {
    PieceTier::new(tier, false, "local")
        .read(key, &LastWriterWins)
        .unwrap()
        .unwrap_or_else(|| panic!("{key} has no index"))
        .partition
}

#[test]
fn the_format1_fixture_converts_to_what_it_held() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap())
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tier");
    copy_dir(&fixture.join("tier"), &dir);

    let mut tier = DirPersistence::open(&dir).unwrap();
    let done = convert_format1(&mut tier, "local").unwrap();
    assert_eq!((done.partitions, done.already, done.removed), (2, 0, 4));
    assert!(is_converted(&mut tier, "local").unwrap());
    for (name, list) in expected["entities"].as_object().unwrap() {
        let p = read(&mut tier, &format!("app.{name}"));
        let live: BTreeMap<String, Value> = p.names[name.as_str()]
            .iter()
            .filter_map(|(id, s)| s.entity().map(|e| (id.clone(), e.value())))
            .collect();
        let want: BTreeMap<String, Value> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["id"].as_str().unwrap().to_string(), e.clone()))
            .collect();
        assert_eq!(live, want, "{name}");
        let tombstones: BTreeMap<String, Value> = p.names[name.as_str()]
            .iter()
            .filter_map(|(id, s)| match s {
                Slot::Deleted(at) => Some((id.clone(), json!(format_millis(*at)))),
                Slot::Active(_) => None,
            })
            .collect();
        let want: BTreeMap<String, Value> =
            serde_json::from_value(expected["deleted"][name].clone()).unwrap();
        assert_eq!(tombstones, want, "{name} tombstones");
    }
    // The format-1 documents are gone; a second conversion has nothing to do.
    let keys = tier.keys().unwrap().unwrap();
    assert!(keys.iter().all(|k| k.starts_with('!')), "{keys:?}");
    assert!(!keys
        .iter()
        .any(|k| k == "!datasync.meta" || k == "!datasync.root"));
    let again = convert_format1(&mut tier, "local").unwrap();
    assert_eq!((again.partitions, again.removed), (0, 0));
}

const NAMES: usize = 60;
const KILLS: usize = 25;

/// A format-1 tier of `NAMES` partitions written by today's instance, and what it holds.
fn format1_tier(dir: &Path) -> BTreeMap<String, Partition> {
    let ds = DataSync::open(
        Config::new("app")
            .format(1)
            .local(DirPersistence::open(dir).unwrap()),
    )
    .unwrap();
    for n in 0..NAMES {
        let repo = ds.repo(&format!("Kind{n:02}")).unwrap();
        for i in 0..8 {
            let id = repo
                .save(&json!({"n": n, "i": i, "pad": "x".repeat(40)}))
                .unwrap();
            if i % 3 == 0 {
                repo.delete(&id).unwrap();
            }
        }
    }
    ds.flush().unwrap();
    ds.close().unwrap();
    let tier = DirPersistence::open(dir).unwrap();
    (0..NAMES)
        .map(|n| {
            let key = format!("app.Kind{n:02}");
            let bytes = tier.read(&key).unwrap().unwrap();
            (key, Partition::parse(&bytes, false).unwrap())
        })
        .collect()
}

/// The child: converts the directory named by the environment, not durably (a kill
/// of the process, not a power loss, is what is tested), and exits.
#[test]
fn convert_child() {
    let Ok(dir) = std::env::var("DATASYNC_CONVERT_CHILD") else {
        return;
    };
    let mut tier = DirPersistence::open_with(dir, DirOptions { durable: false }).unwrap();
    convert_format1(&mut tier, "local").unwrap();
}

fn convert_in_child(dir: &Path, kill_after: Option<Duration>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "convert_child", "--test-threads", "1"])
        .env("DATASYNC_CONVERT_CHILD", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    match kill_after {
        Some(delay) => {
            std::thread::sleep(delay);
            let _ = child.kill();
            child.wait().unwrap();
        }
        None => assert!(child.wait().unwrap().success()),
    }
}

#[cfg(unix)]
#[test]
fn a_conversion_killed_at_any_moment_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let source: PathBuf = tmp.path().join("source");
    let want = format1_tier(&source);
    // How long a whole conversion takes here, so that kills land all through it.
    let probe = tmp.path().join("probe");
    copy_dir(&source, &probe);
    let started = Instant::now();
    convert_in_child(&probe, None);
    let whole = started.elapsed();
    let (mut still_format1, mut finished_by_next) = (0, 0);
    for k in 0..KILLS {
        let dir = tmp.path().join(format!("kill{k}"));
        copy_dir(&source, &dir);
        convert_in_child(&dir, Some(whole.mul_f64(k as f64 / KILLS as f64)));
        let mut tier = DirPersistence::open(&dir).unwrap();
        if !is_converted(&mut tier, "local").unwrap() {
            // Not converted yet: today's instance still reads every partition.
            still_format1 += 1;
            drop(tier);
            let ds = DataSync::open(
                Config::new("app")
                    .format(1)
                    .local(DirPersistence::open(&dir).unwrap()),
            )
            .unwrap();
            for (key, p) in &want {
                let name = key.trim_start_matches("app.");
                let live = ds
                    .repo(name)
                    .unwrap()
                    .query(&Default::default())
                    .unwrap()
                    .len();
                assert_eq!(live as u64, p.counts()[name].count, "kill {k}: {key}");
            }
            ds.close().unwrap();
            tier = DirPersistence::open(&dir).unwrap();
        } else {
            finished_by_next += 1;
        }
        convert_format1(&mut tier, "local").unwrap();
        for (key, p) in &want {
            assert_eq!(
                &read(&mut tier, key),
                p,
                "kill {k}: {key} after the conversion"
            );
        }
        let keys = tier.keys().unwrap().unwrap();
        assert!(
            keys.iter().all(|k| k.starts_with('!')),
            "kill {k}: format-1 left: {keys:?}"
        );
    }
    eprintln!(
        "{KILLS} kills over a {:.0} ms conversion of {NAMES} partitions: {still_format1} before the marker, {finished_by_next} after",
        whole.as_secs_f64() * 1e3
    );
}
