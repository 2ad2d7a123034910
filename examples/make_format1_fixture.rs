//! Writes a directory tier in format 1 (the on-disk format before format 2) and the
//! list of what it holds, for `tests/format1_fixture.rs` and the conversion to
//! format 2.
//!
//! Run with `scripts/make-format1-fixture.sh`, which writes `tests/fixtures/format1/`;
//! by hand: `cargo run --example make_format1_fixture -- TIER_DIR EXPECTED_JSON`.
//!
//! One instance (prefix `app`, the default global strategy, a directory tier as its
//! local tier) saves Users and Notes under ids it chooses, edits some of them, deletes
//! some (one id is deleted without ever being saved, one is saved again after its
//! delete), flushes and closes. The instance's clock is a fixed sequence of instants,
//! so the entities and tombstones are the same on every run. Then the tier is opened
//! again, and every entity and tombstone is read back and written to EXPECTED_JSON.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};

use datasync::{Config, DataSync, DirPersistence, Partition, QueryOptions, Slot};
use serde_json::{json, Value};

/// 2026-01-01T00:00:00.000Z, the first instant of the clock.
const START: i64 = 1_767_225_600_000;

static CLOCK: AtomicI64 = AtomicI64::new(START);

/// The instance's clock: it stands still until [`tick`] moves it.
fn clock() -> i64 {
    CLOCK.load(Ordering::SeqCst)
}

/// Moves the clock a little over a second forward, so every write has its own instant.
fn tick() {
    CLOCK.fetch_add(1_237, Ordering::SeqCst);
}

const PREFIX: &str = "app";
const NAMES: [&str; 2] = ["User", "Note"];
const USERS: usize = 24;
const NOTES: usize = 18;
const TEAMS: [&str; 3] = ["core", "web", "mobile"];

fn user_id(i: usize) -> String {
    format!("User.fixture-user-{i:02}")
}

fn note_id(i: usize) -> String {
    format!("Note.fixture-note-{i:02}")
}

fn user(i: usize, revision: u32) -> Value {
    json!({
        "id": user_id(i),
        "name": format!("User {i}"),
        "email": format!("user{i}@example.com"),
        "age": 20 + i,
        "team": TEAMS[i % TEAMS.len()],
        "active": !i.is_multiple_of(4),
        "revision": revision,
    })
}

fn note(i: usize, revision: u32) -> Value {
    json!({
        "id": note_id(i),
        "title": format!("Note {i}, revision {revision}"),
        // Escapes and characters outside ASCII, as the canonical form writes them.
        "body": format!("line one\nline \"two\"\ttabbed \\ caf\u{e9} \u{65e5}\u{672c} \u{1f4dd} #{i}"),
        "rating": (i as f64) * 0.5 + 0.25,
        "pinned": i.is_multiple_of(3),
        "archived": Value::Null,
        "tags": ["fixture", format!("t{}", i % 4)],
        "meta": {"words": 10 * i + revision as usize, "lang": if i.is_multiple_of(2) { "en" } else { "fr" }},
        "author": user_id(i % USERS),
    })
}

fn write(ds: &DataSync) -> datasync::Result<()> {
    let users = ds.repo("User")?;
    let notes = ds.repo("Note")?;
    for i in 0..USERS {
        tick();
        users.save(&user(i, 1))?;
    }
    for i in 0..NOTES {
        tick();
        notes.save(&note(i, 1))?;
    }
    ds.flush()?;
    // Edits: users 0..8 once more, users 0..3 twice; notes 0..6 once.
    for i in 0..8 {
        tick();
        users.save(&user(i, 2))?;
    }
    for i in 0..3 {
        tick();
        users.save(&user(i, 3))?;
    }
    for i in 0..6 {
        tick();
        notes.save(&note(i, 2))?;
    }
    // Deletes: the last four users, one of them edited before; the last four notes;
    // a note never saved; and a user deleted, then saved again (a new life).
    for i in USERS - 4..USERS {
        if i == USERS - 1 {
            tick();
            users.save(&user(i, 2))?;
        }
        tick();
        users.delete(&user_id(i))?;
    }
    for i in NOTES - 4..NOTES {
        tick();
        notes.delete(&note_id(i))?;
    }
    tick();
    notes.delete("Note.fixture-note-never-saved")?;
    tick();
    users.delete(&user_id(10))?;
    tick();
    users.save(&user(10, 4))?;
    ds.flush()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tier, expected] = args.as_slice() else {
        return Err("usage: make_format1_fixture TIER_DIR EXPECTED_JSON".into());
    };
    let tier = PathBuf::from(tier);
    if tier.exists() {
        return Err(format!("{} exists; remove it first", tier.display()).into());
    }

    let config = Config::new(PREFIX)
        .format(1)
        .local(DirPersistence::open(&tier)?)
        .clock_source(clock);
    let ds = DataSync::open(config)?;
    write(&ds)?;
    ds.close()?;

    // Read everything back as today's code sees it: the entities through a new
    // instance, the tombstones from the partitions on disk.
    let ds = DataSync::open(
        Config::new(PREFIX)
            .format(1)
            .local(DirPersistence::open(&tier)?),
    )?;
    let mut entities = BTreeMap::new();
    for name in NAMES {
        let mut list: Vec<Value> = ds
            .repo(name)?
            .query(&QueryOptions::default())?
            .iter()
            .map(|e| e.value())
            .collect();
        list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        entities.insert(name, list);
    }
    ds.close()?;
    let dir = DirPersistence::open(&tier)?;
    let mut deleted = BTreeMap::new();
    for name in NAMES {
        let key = format!("{PREFIX}.{name}");
        let bytes = dir.read(&key)?.ok_or_else(|| format!("{key} is missing"))?;
        let partition = Partition::parse(&bytes, false)?;
        let tombstones: BTreeMap<String, String> = partition
            .names
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|(id, slot)| match slot {
                Slot::Deleted(at) => Some((id.clone(), datasync::clock::format_millis(*at))),
                Slot::Active(_) => None,
            })
            .collect();
        deleted.insert(name, tombstones);
    }
    drop(dir);

    let document = json!({
        "format": 1,
        "prefix": PREFIX,
        "strategy": "global",
        "entities": entities,
        "deleted": deleted,
    });
    std::fs::write(expected, serde_json::to_string_pretty(&document)? + "\n")?;
    println!(
        "wrote {} and {expected}: {} users, {} notes, {} tombstones",
        tier.display(),
        entities["User"].len(),
        entities["Note"].len(),
        deleted.values().map(BTreeMap::len).sum::<usize>()
    );
    Ok(())
}
