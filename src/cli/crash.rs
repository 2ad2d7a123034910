//! The hidden `crash-writer` command: the child process of the crash test. It writes
//! and flushes in a loop and prints one line per write once it is flushed, until it
//! is killed (or stops after `max_ops`).
//!
//! Lines: `put <id> <counter>` (the entity now has this counter) and `del <id>`.

use std::io::Write;
use std::path::Path;

use datasync::{Config, DataSync, DirPersistence};
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
