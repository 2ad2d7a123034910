//! The hidden `crash-writer` command: the child process of the crash test. It writes
//! and flushes in a loop and prints one line per write once it is flushed, until it
//! is killed (or stops after `max_ops`).
//!
//! Lines: `put <id> <counter>` (the entity now has this counter) and `del <id>`.
//!
//! With `--pieces` it appends format-2 pieces to `DIR/local` instead, one write per
//! piece, and every few writes syncs the partition with `DIR/cloud` and compacts
//! both tiers: a kill can land in an append, a sync or a compaction.

use std::io::Write;
use std::path::Path;

use datasync::{Config, DataSync, DirPersistence, Persistence};
use serde_json::json;

use super::CliResult;

pub fn run(path: &Path, run: u64, max_ops: u64) -> CliResult<u8> {
    let instance = DataSync::open(Config::new("crash").local(DirPersistence::open(path)?))?;
    let items = instance.repo("Item")?;
    let mut live: Vec<(String, u64)> = Vec::new();
    let mut out = std::io::stdout().lock();
    for i in 0..max_ops {
        let line = if i % 7 == 6 && live.len() > 2 {
            let (id, _) = live.remove(0);
            items.delete(&id)?;
            format!("del {id}")
        } else if i % 2 == 1 && !live.is_empty() {
            let at = (i as usize / 2) % live.len();
            let (id, counter) = &mut live[at];
            *counter += 1;
            items
                .save(&json!({"id": id, "run": run, "counter": *counter, "pad": "x".repeat(64)}))?;
            format!("put {id} {counter}")
        } else {
            let id =
                items.save(&json!({"run": run, "seq": i, "counter": 0, "pad": "x".repeat(64)}))?;
            live.push((id.clone(), 0));
            format!("put {id} 0")
        };
        instance.flush()?;
        // The parent reads these lines; if it is gone, stop.
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    instance.close()?;
    Ok(0)
}

const PIECES_KEY: &str = "crash.Item";

/// One slot as a partition: the entity `id` with `counter`, or its tombstone.
fn piece_slots(id: &str, counter: Option<u64>, at: i64) -> CliResult<datasync::Partition> {
    let stamp = datasync::clock::format_millis(at);
    let text = match counter {
        Some(c) => format!(
            r#"{{"Item":{{"{id}":{{"id":"{id}","counter":{c},"pad":"{}","updatedAt":"{stamp}","version":1}}}}}}"#,
            "x".repeat(64)
        ),
        None => format!(r#"{{"deleted":{{"Item":{{"{id}":"{stamp}"}}}}}}"#),
    };
    Ok(datasync::Partition::parse(text.as_bytes(), false)?)
}

pub fn run_pieces(path: &Path, run: u64, max_ops: u64) -> CliResult<u8> {
    use datasync::pieces::{sync_partition, Compaction, PieceTier};
    use datasync::LastWriterWins;
    std::fs::create_dir_all(path)?;
    let mut local = DirPersistence::open(path.join("local"))?;
    let mut cloud = DirPersistence::open(path.join("cloud"))?;
    let policy = Compaction {
        bound: 3,
        ..Compaction::default()
    };
    let mut live: Vec<(String, u64)> = Vec::new();
    let mut out = std::io::stdout().lock();
    let base = datasync::clock::now_millis();
    for i in 0..max_ops {
        let at = base + i as i64;
        let (id, counter, line) = if i % 7 == 6 && live.len() > 2 {
            let (id, _) = live.remove(0);
            (id.clone(), None, format!("del {id}"))
        } else if i % 2 == 1 && !live.is_empty() {
            let k = (i as usize / 2) % live.len();
            live[k].1 += 1;
            let (id, c) = live[k].clone();
            (id.clone(), Some(c), format!("put {id} {c}"))
        } else {
            let id = format!("Item.r{run:03}i{i:06}");
            live.push((id.clone(), 0));
            (id.clone(), Some(0), format!("put {id} 0"))
        };
        PieceTier::new(&mut local, false, "local").append(
            PIECES_KEY,
            "writer",
            at,
            piece_slots(&id, counter, at)?,
        )?;
        // A directory's writes are durable once committed (the instance commits
        // after each flush and sync).
        local.commit()?;
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break;
        }
        if i % 3 == 2 {
            let mut a = PieceTier::new(&mut local, false, "local");
            let mut b = PieceTier::new(&mut cloud, true, "cloud");
            sync_partition(&mut a, &mut b, PIECES_KEY)?;
            local.commit()?;
            cloud.commit()?;
        }
        if i % 5 == 4 {
            PieceTier::new(&mut local, false, "local").compact(
                PIECES_KEY,
                &LastWriterWins,
                policy,
                at,
                None,
            )?;
            PieceTier::new(&mut cloud, true, "cloud").compact(
                PIECES_KEY,
                &LastWriterWins,
                policy,
                at,
                None,
            )?;
            local.commit()?;
            cloud.commit()?;
        }
    }
    Ok(0)
}
