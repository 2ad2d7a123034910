//! Crash safety of the pieces layer on the directory tier: a child appends one write
//! per piece to a local directory, syncs it with a cloud directory and compacts both,
//! and is killed with SIGKILL at random moments. After every kill both tiers read
//! without error, every write the child reported is in the local tier, and a sync
//! makes the cloud hold the same.

#![cfg(unix)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use datasync::pieces::{sync_partition, PieceTier};
use datasync::{DirPersistence, LastWriterWins, Partition};

const KILLS: usize = 50;
const KEY: &str = "crash.Item";

fn run_child(dir: &Path, run: usize, delay: Duration) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_datasync"))
        .args([
            "crash-writer",
            dir.to_str().unwrap(),
            "--pieces",
            "--run",
            &run.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let (mut lines, mut line) = (Vec::new(), Vec::new());
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            if line.ends_with(b"\n") {
                lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
            line.clear();
        }
        lines
    });
    std::thread::sleep(delay);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}

fn read(dir: &Path, shared: bool) -> Partition {
    let mut tier = DirPersistence::open(dir).unwrap();
    PieceTier::new(&mut tier, shared, "t")
        .read(KEY, &LastWriterWins)
        .unwrap_or_else(|e| panic!("{} does not read after the kill: {e}", dir.display()))
        .map(|r| r.partition)
        .unwrap_or_default()
}

fn counter(p: &Partition, id: &str) -> Option<u64> {
    p.get("Item", id)?.entity()?.value()["counter"].as_u64()
}

#[test]
fn killed_writers_lose_no_reported_piece() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiers");
    let mut model: BTreeMap<String, Option<u64>> = BTreeMap::new();
    let mut reported = 0;
    for run in 0..KILLS {
        let delay = Duration::from_millis(rand::random::<u64>() % (30 + 6 * run as u64) + 5);
        let lines = run_child(&dir, run, delay);
        reported += lines.len();
        for line in &lines {
            match line.split(' ').collect::<Vec<_>>().as_slice() {
                ["put", id, c] => model.insert(id.to_string(), Some(c.parse().unwrap())),
                ["del", id] => model.insert(id.to_string(), None),
                _ => panic!("unexpected line {line:?}"),
            };
        }
        if !dir.join("local").exists() {
            continue;
        }
        let local = read(&dir.join("local"), false);
        // One write may have landed without being reported.
        let mut unreported = Vec::new();
        for (id, expected) in &model {
            let found = counter(&local, id);
            if found == *expected {
                continue;
            }
            match (expected, found) {
                (Some(c), Some(f)) if f == c + 1 => unreported.push((id.clone(), found)),
                (Some(_), None) => unreported.push((id.clone(), found)),
                _ => panic!("run {run}: {id} should be {expected:?} but is {found:?}"),
            }
        }
        assert!(
            unreported.len() <= 1,
            "run {run}: several unreported writes {unreported:?}"
        );
        for (id, found) in unreported {
            model.insert(id, found);
        }
        // A sync after the kill completes what the child left, in both tiers.
        let (mut l, mut c) = (
            DirPersistence::open(dir.join("local")).unwrap(),
            DirPersistence::open(dir.join("cloud")).unwrap(),
        );
        sync_partition(
            &mut PieceTier::new(&mut l, false, "local"),
            &mut PieceTier::new(&mut c, true, "cloud"),
            KEY,
        )
        .unwrap();
        drop((l, c));
        let cloud = read(&dir.join("cloud"), true);
        assert_eq!(
            cloud.names.get("Item").map(|ids| ids.len()),
            read(&dir.join("local"), false)
                .names
                .get("Item")
                .map(|ids| ids.len()),
            "run {run}: the cloud differs from the local tier after a sync"
        );
        for (id, expected) in &model {
            assert_eq!(counter(&cloud, id), *expected, "run {run}: cloud {id}");
        }
    }
    assert!(
        reported >= KILLS,
        "the writers reported only {reported} writes"
    );
    eprintln!(
        "{KILLS} kills, {reported} reported writes checked, {} entities",
        model.len()
    );
}
