//! The parity scenario through the Rust API: every door (Rust, C, Python, Kotlin,
//! Swift) runs the same steps and prints the same lines, which
//! `tests/parity/run.sh` compares with `tests/parity/expected.txt`.
//!
//! The instance has prefix `app`, a host key strategy partitioning notes by their
//! `owner` (this device may read and write only `app.alice`), no local tier, and a
//! cloud that is a host byte map the scenario can switch offline. Every sync is one
//! the scenario asks for (timers and retries are an hour away).
//!
//! The cloud is seeded with partitions in canonical form whose instants lie far in
//! the future (2100): the instance clock never adopts a stamp that far ahead, so an
//! edit of a seeded entity is stamped exactly at the entity's own `updatedAt` (with
//! its version + 1), and no printed line depends on the wall clock.
//!
//! `cargo run --example parity`

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datasync::{
    AdapterError, AdapterResult, Candidates, Config, DataSync, KeyStrategy, Persistence,
    QueryOptions, SortKey,
};
use serde_json::{json, Map, Value};

const BASE: &str = "2100-01-01T00:00:00.000Z";
const LATER: &str = "2100-01-01T00:00:01.000Z";
const EARLIER: &str = "2099-12-31T23:59:59.000Z";

/// The cloud: a byte map that can be switched offline (every call then fails).
#[derive(Clone, Default)]
struct Cloud {
    blobs: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    offline: Arc<AtomicBool>,
}

impl Cloud {
    fn check(&self) -> AdapterResult<()> {
        if self.offline.load(Ordering::SeqCst) {
            return Err(AdapterError::new("the network is down"));
        }
        Ok(())
    }

    /// Replaces the cloud's content by these partitions, as another device's sync
    /// would leave it, without metadata (the library rebuilds it from the partitions).
    fn seed(&self, partitions: &[(&str, String)]) {
        let mut blobs = self.blobs.lock().unwrap();
        blobs.retain(|key, _| !key.starts_with('!'));
        for (key, text) in partitions {
            blobs.insert(key.to_string(), text.as_bytes().to_vec());
        }
    }

    /// The partition `key` as JSON.
    fn partition(&self, key: &str) -> Value {
        let blobs = self.blobs.lock().unwrap();
        serde_json::from_slice(&blobs[key]).expect("a partition is JSON")
    }
}

impl Persistence for Cloud {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        self.check()?;
        Ok(self.blobs.lock().unwrap().get(key).cloned())
    }

    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        self.check()?;
        self.blobs
            .lock()
            .unwrap()
            .insert(key.to_string(), bytes.to_vec());
        Ok(())
    }

    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        self.check()?;
        self.blobs.lock().unwrap().remove(key);
        Ok(())
    }

    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        self.check()?;
        Ok(Some(self.blobs.lock().unwrap().keys().cloned().collect()))
    }
}

/// Partitions notes by owner (`app.<owner>`); this device may use only `app.alice`.
struct Owner;

impl KeyStrategy for Owner {
    fn logical_key(&self, _name: &str, entity: &Map<String, Value>) -> datasync::Result<String> {
        Ok(entity["owner"].as_str().unwrap_or("nobody").to_string())
    }

    fn candidate_keys(
        &self,
        prefix: &str,
        _name: &str,
        _filter: Option<&Value>,
    ) -> datasync::Result<Candidates> {
        Ok(Candidates::Keys(vec![format!("{prefix}.alice")]))
    }
}

/// One note as a tier stores it (canonical: keys sorted, no whitespace).
fn note(id: &str, owner: &str, title: &str, at: &str, version: u64) -> String {
    format!(
        r#""{id}":{{"createdAt":"{BASE}","id":"{id}","owner":"{owner}","title":"{title}","updatedAt":"{at}","version":{version}}}"#
    )
}

/// A canonical partition holding these notes (given in id order).
fn partition(notes: &[String]) -> String {
    format!(r#"{{"Note":{{{}}}}}"#, notes.join(","))
}

/// Where the scenario's lines go: printed at once, so that a failing step still
/// shows how far it got.
struct Lines;

impl Lines {
    fn push(&mut self, line: String) {
        println!("{line}");
    }
}

/// The error kind's name, or the value's, for one line.
fn outcome<T>(result: datasync::Result<T>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("{:?}", e.kind()),
    }
}

/// `title vN` of an entity.
fn describe(entity: &Value) -> String {
    format!(
        "{} v{}",
        entity["title"].as_str().unwrap(),
        entity["version"]
    )
}

fn main() -> datasync::Result<()> {
    let cloud = Cloud::default();
    cloud.seed(&[
        (
            "app.alice",
            partition(&[
                note("alice.c1", "alice", "c1 base", BASE, 1),
                note("alice.c2", "alice", "c2 base", BASE, 1),
                note("alice.t1", "alice", "t1 base", BASE, 1),
                note("alice.t2", "alice", "t2 base", BASE, 4),
            ]),
        ),
        (
            "app.bob",
            partition(&[note("bob.n9", "bob", "bob's", BASE, 1)]),
        ),
    ]);
    let hour = Duration::from_secs(3600);
    let ds = DataSync::open(
        Config::new("app")
            .strategy(Owner)
            .cloud(cloud.clone())
            .store_sync_delay(hour)
            .cloud_sync_interval(hour)
            .retry(hour, hour)
            .sync_on_open(false)
            // The scenario reads the cloud's partition documents back: format 1.
            .format(1),
    )?;
    let notes = ds.repo("Note")?;
    let mut out = Lines;

    // Saves with caller-supplied ids, and deletes.
    let save = |out: &mut Lines, value: Value| -> datasync::Result<()> {
        let id = notes.save(&value)?;
        let saved = notes.get(&id)?.expect("a saved note is there");
        out.push(format!("save {id} v{}", saved.version()));
        Ok(())
    };
    let delete = |out: &mut Lines, id: &str| -> datasync::Result<()> {
        let existed = notes.delete(id)?;
        out.push(format!("delete {id} existed={existed}"));
        Ok(())
    };
    save(
        &mut out,
        json!({"id": "alice.n1", "owner": "alice", "title": "n1 first"}),
    )?;
    save(
        &mut out,
        json!({"id": "alice.n1", "owner": "alice", "title": "n1 second"}),
    )?;
    save(
        &mut out,
        json!({"id": "alice.n2", "owner": "alice", "title": "n2"}),
    )?;
    delete(&mut out, "alice.n2")?;
    let n2 = notes.get("alice.n2")?;
    out.push(format!(
        "get alice.n2 -> {}",
        n2.map_or("none".to_string(), |e| describe(&e.value()))
    ));
    delete(&mut out, "alice.n2")?;
    // An id the strategy chooses: its partition, not its random part, is printed.
    let fresh = notes.save(&json!({"owner": "alice", "title": "fresh"}))?;
    let (logical, ident) = fresh.rsplit_once('.').expect("an id has a separator");
    let version = notes.get(&fresh)?.expect("saved").version();
    out.push(format!("save new {logical}.<{}> v{version}", ident.len()));
    out.push(format!("delete new existed={}", notes.delete(&fresh)?));

    // Local edits of the seeded notes.
    save(
        &mut out,
        json!({"id": "alice.c1", "owner": "alice", "title": "c1 local"}),
    )?;
    save(
        &mut out,
        json!({"id": "alice.c2", "owner": "alice", "title": "c2 local"}),
    )?;
    delete(&mut out, "alice.t1")?;
    save(
        &mut out,
        json!({"id": "alice.t2", "owner": "alice", "title": "t2 local"}),
    )?;

    // Meanwhile another device's edits reached the cloud: c1 newer, c2 older (with a
    // greater version), t1 edited at the instant of the local delete, t2 edited at
    // the instant of the local edit with a smaller version (and greater bytes).
    cloud.seed(&[(
        "app.alice",
        partition(&[
            note("alice.c1", "alice", "c1 remote", LATER, 2),
            note("alice.c2", "alice", "c2 remote", EARLIER, 9),
            note("alice.t1", "alice", "t1 remote", BASE, 7),
            note("alice.t2", "alice", "t2 remote", BASE, 3),
        ]),
    )]);
    let stats = ds.sync_now()?;
    out.push(format!(
        "sync offline={} copied={} merged={} refused={} conflicts={}",
        stats.offline, stats.keys_copied, stats.keys_merged, stats.keys_refused, stats.conflicts
    ));
    let winner = |id: &str, local: &str, remote: &str| -> datasync::Result<String> {
        Ok(match notes.get(id)? {
            None => "deleted".to_string(),
            Some(e) => {
                let value = e.value();
                let side = match value["title"].as_str() {
                    Some(t) if t == local => "local",
                    Some(t) if t == remote => "remote",
                    _ => "neither",
                };
                format!("{side}: {}", describe(&value))
            }
        })
    };
    out.push(format!(
        "conflict alice.c1 newer remote -> {}",
        winner("alice.c1", "c1 local", "c1 remote")?
    ));
    out.push(format!(
        "conflict alice.c2 older remote -> {}",
        winner("alice.c2", "c2 local", "c2 remote")?
    ));
    out.push(format!(
        "tie alice.t1 delete vs edit -> {}",
        winner("alice.t1", "t1 local", "t1 remote")?
    ));
    out.push(format!(
        "tiebreak alice.t2 equal instant -> {}",
        winner("alice.t2", "t2 local", "t2 remote")?
    ));
    // The merge reached the cloud too.
    let stored = cloud.partition("app.alice");
    for id in ["alice.c1", "alice.c2", "alice.n1", "alice.t1", "alice.t2"] {
        let line = match stored["Note"].get(id) {
            Some(e) => describe(e),
            None if stored["deleted"]["Note"].get(id).is_some() => "deleted".to_string(),
            None => "absent".to_string(),
        };
        out.push(format!("cloud {id} -> {line}"));
    }

    // A sorted query, one line per note.
    for e in notes.query(&QueryOptions::default().sort_by(SortKey::desc("title")))? {
        out.push(format!(
            "query title:desc {} {}",
            e.id(),
            describe(&e.value())
        ));
    }

    // Bob's partition is not this device's: every path refuses it.
    out.push(format!("get bob.n9 -> {}", outcome(notes.get("bob.n9"))));
    out.push(format!(
        "save bob.n9 -> {}",
        outcome(notes.save(&json!({"id": "bob.n9", "owner": "bob", "title": "taken"})))
    ));
    out.push(format!(
        "delete bob.n9 -> {}",
        outcome(notes.delete("bob.n9"))
    ));

    // Offline: the write waits in the store, the sync says so, and goes through later.
    cloud.offline.store(true, Ordering::SeqCst);
    save(
        &mut out,
        json!({"id": "alice.n3", "owner": "alice", "title": "n3 offline"}),
    )?;
    let stats = ds.sync_now()?;
    out.push(format!("sync offline={}", stats.offline));
    let status = ds.status();
    out.push(format!(
        "status online={} pending={}",
        status.online, status.pending_keys
    ));
    cloud.offline.store(false, Ordering::SeqCst);
    let stats = ds.sync_now()?;
    out.push(format!(
        "sync offline={} copied={} merged={} refused={} conflicts={}",
        stats.offline, stats.keys_copied, stats.keys_merged, stats.keys_refused, stats.conflicts
    ));
    let status = ds.status();
    out.push(format!(
        "status online={} pending={}",
        status.online, status.pending_keys
    ));
    let stored = cloud.partition("app.alice");
    out.push(format!(
        "cloud alice.n3 -> {}",
        stored["Note"]
            .get("alice.n3")
            .map_or("absent".to_string(), describe)
    ));
    ds.close()
}
