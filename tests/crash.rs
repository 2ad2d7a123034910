//! Crash safety: a child process writes and flushes in a loop and is killed with
//! SIGKILL at random moments. After every kill the directory opens, `datasync verify`
//! passes, and every write the child reported flushed is there.

#![cfg(unix)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use datasync::{Config, DataSync, DirPersistence};

const KILLS: usize = 50;

/// The last flushed state of an entity: its counter, or deleted.
type Model = BTreeMap<String, Option<u64>>;

/// Runs the writer, kills it after `delay`, returns the complete lines it printed.
fn run_child(dir: &Path, run: usize, delay: Duration) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_datasync"))
        .args([
            "crash-writer",
            dir.to_str().unwrap(),
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
        let mut lines = Vec::new();
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            // A line cut by the kill was not reported.
            if line.ends_with(b"\n") {
                lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
            line.clear();
        }
        lines
    });
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}

/// Time from starting a writer to its first reported write (the writer is then killed).
fn first_report(dir: &Path) -> Duration {
    let started = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_datasync"))
        .args(["crash-writer", dir.to_str().unwrap(), "--run", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let took = started.elapsed();
    child.kill().unwrap();
    child.wait().unwrap();
    took
}

fn apply(model: &mut Model, lines: &[String]) {
    for line in lines {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["put", id, counter] => {
                model.insert(id.to_string(), Some(counter.parse().unwrap()));
            }
            ["del", id] => {
                model.insert(id.to_string(), None);
            }
            _ => panic!("unexpected line {line:?}"),
        }
    }
}

#[test]
fn killed_writers_lose_no_flushed_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tier");
    let mut model = Model::new();
    let mut reported = 0;
    let mut interrupted = 0;
    // How long a writer takes to report its first write on this machine (slower on a
    // loaded one), so that later runs live long enough to write, whatever the load.
    let startup = first_report(&dir.with_extension("calibration"));
    for run in 0..KILLS {
        // Early runs die during start-up or their first writes; later ones write more.
        let delay = Duration::from_millis(rand::random::<u64>() % (20 + 4 * run as u64) + 1)
            + startup.mul_f64(2.0 * run as f64 / KILLS as f64);
        let lines = run_child(&dir, run, delay);
        reported += lines.len();
        apply(&mut model, &lines);

        // Killed with commits in the journal (more than its magic): the next open
        // replays them.
        interrupted +=
            usize::from(std::fs::metadata(dir.join("journal")).is_ok_and(|m| m.len() > 5));
        let verify = Command::new(env!("CARGO_BIN_EXE_datasync"))
            .arg("verify")
            .arg(&dir)
            .output()
            .unwrap();
        if !dir.join("blobs").exists() {
            // Killed before the tier existed (before, or while, its directory was
            // made): nothing was written, and `verify` rightly says it is no tier.
            assert!(
                lines.is_empty(),
                "run {run}: writes reported without a tier"
            );
            continue;
        }
        assert!(
            verify.status.success(),
            "run {run}: verify failed after the kill:\n{}{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );

        let ds = DataSync::open(Config::new("crash").local(DirPersistence::open(&dir).unwrap()))
            .unwrap();
        let items = ds.repo("Item").unwrap();
        // At most one write was in flight when the child died: it may have landed
        // without being reported, one step after what the model says.
        let mut unreported = Vec::new();
        for (id, expected) in model.iter() {
            let found = items
                .get(id)
                .unwrap()
                .map(|e| e.value()["counter"].as_u64().unwrap());
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
        ds.close().unwrap();
    }
    assert!(
        reported >= KILLS,
        "the writers reported only {reported} flushed writes"
    );
    eprintln!("{KILLS} kills ({interrupted} with commits to replay), {reported} flushed writes checked, {} entities", model.len());
}
