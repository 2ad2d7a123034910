//! W6 and W7 on the pieces layer of format 2 (`datasync::pieces`), one partition
//! holding every user: what one edit costs where nothing durable is rewritten. The
//! instance's tiers do not use pieces yet, so these measure the layer itself (W6P: an
//! append to a durable directory and the compaction after it; W7P: an appended edit
//! synced up by one device and down by another through a shared cloud).

use std::time::Instant;

use datasync::clock::format_millis;
use datasync::pieces::{sync_partition, Compaction, PieceTier};
use datasync::{DirPersistence, LastWriterWins, MemoryPersistence, Partition};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map};

use super::bench::{measure, peak_rss_mb, reset_peak, Counting, Measure, Tally};
use super::bench_edit::{io_now, per, quantile, DiskWrites};
use super::CliResult;

const BASE: i64 = 1_767_225_600_000;
const KEY: &str = "app.User";
const EDITS: usize = 200;
const ROUNDS: usize = 20;

fn id(i: usize) -> String {
    format!("User.{i:016}")
}

fn user_json(i: usize, score: f64, at: i64) -> String {
    let stamp = format_millis(BASE + at);
    let created = format_millis(BASE + i as i64);
    json!({
        "id": id(i),
        "name": format!("User {i}"),
        "email": format!("user{i}@example.com"),
        "age": 18 + i % 60,
        "score": score,
        "tags": [format!("tag{}", i % 10), format!("tag{}", i % 7), format!("tag{}", i % 3)],
        "createdAt": created,
        "updatedAt": stamp,
        "version": 1,
    })
    .to_string()
}

/// The slots of the given users, as a partition.
fn users(items: impl Iterator<Item = (usize, f64, i64)>) -> CliResult<Partition> {
    let mut text = String::from("{\"User\":{");
    for (k, (i, score, at)) in items.enumerate() {
        if k > 0 {
            text.push(',');
        }
        text.push_str(&format!("\"{}\":{}", id(i), user_json(i, score, at)));
    }
    text.push_str("}}");
    Ok(Partition::parse(text.as_bytes(), false)?)
}

fn score_of(p: &Partition, i: usize) -> Option<f64> {
    p.get("User", &id(i))?.entity()?.value()["score"].as_f64()
}

/// W6P: N users in one partition of a durable directory; 200 times, one user
/// updated: an appended piece, then the compaction a sync worker would run.
pub fn w6p(n: usize) -> CliResult<Measure> {
    let dir = tempfile::tempdir()?;
    let (mut disk_tier, counts) = Counting::new(DirPersistence::open(dir.path())?);
    let seed = users((0..n).map(|i| (i, 1.0, 1)))?;
    PieceTier::new(&mut disk_tier, false, "local").append(KEY, "seed", BASE + 1, seed)?;
    let mut rng = StdRng::seed_from_u64(6);
    let mut times = Vec::with_capacity(EDITS);
    let mut expected = std::collections::HashMap::new();
    let mut disk = DiskWrites::new();
    let mut bytes = Tally::default();
    let mut compactions = 0;
    reset_peak();
    for k in 0..EDITS {
        let i = rng.gen_range(0..n);
        let score = 1000.0 + k as f64;
        let edit = users(std::iter::once((i, score, 10 + k as i64)))?;
        let (io0, c0) = (io_now(), counts.now());
        let t = Instant::now();
        let mut tier = PieceTier::new(&mut disk_tier, false, "local");
        tier.append(KEY, "w1", BASE + 10 + k as i64, edit)?;
        let folded = tier.compact(
            KEY,
            &LastWriterWins,
            Compaction::default(),
            BASE + 10 + k as i64,
            None,
        )?;
        times.push(t.elapsed().as_secs_f64());
        compactions += usize::from(folded.is_some());
        let (io1, c1) = (io_now(), counts.now());
        disk.add(io0, io1);
        bytes = bytes + (c1 - c0);
        expected.insert(i, score);
    }
    let peak = peak_rss_mb();
    times.sort_by(f64::total_cmp);
    drop(disk_tier);
    // Read back from a fresh handle on the directory.
    let mut fresh = DirPersistence::open(dir.path())?;
    let read = PieceTier::new(&mut fresh, false, "local").read(KEY, &LastWriterWins)?;
    let p = read.map(|r| r.partition).unwrap_or_default();
    let mut verified = p.names.get("User").map_or(0, |ids| ids.len()) == n;
    for (i, score) in &expected {
        verified &= score_of(&p, *i) == Some(*score);
    }
    let mut extra = Map::new();
    extra.insert("edits".into(), json!(EDITS));
    extra.insert("compactions".into(), json!(compactions));
    extra.insert("median_ms".into(), json!(quantile(&times, 0.5) * 1e3));
    extra.insert("p99_ms".into(), json!(quantile(&times, 0.99) * 1e3));
    extra.insert("disk_write_bytes_per_edit".into(), disk.per(EDITS));
    extra.insert(
        "adapter_stored_bytes_per_edit".into(),
        json!(per(bytes.stored_bytes, EDITS)),
    );
    extra.insert(
        "adapter_loaded_bytes_per_edit".into(),
        json!(per(bytes.loaded_bytes, EDITS)),
    );
    extra.insert(
        "adapter_stores_per_edit".into(),
        json!(per(bytes.stores, EDITS)),
    );
    let median = quantile(&times, 0.5);
    Ok(measure(peak, ("W6P", n, 0), median, 1.0, verified, extra).with_bytes(bytes, EDITS as u64))
}

/// W7P: devices A and B (durable directories) and a shared cloud hold N users in
/// one partition; 20 rounds of: A appends one edit and syncs it up, B syncs it down.
pub fn w7p(n: usize) -> CliResult<Measure> {
    let (da, db) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (mut a, ca) = Counting::new(DirPersistence::open(da.path())?);
    let (mut b, cb) = Counting::new(DirPersistence::open(db.path())?);
    let (mut cloud, cc) = Counting::new(MemoryPersistence::new());
    let seed = users((0..n).map(|i| (i, 1.0, 1)))?;
    PieceTier::new(&mut a, false, "a").append(KEY, "seed", BASE + 1, seed)?;
    for side in [&mut a, &mut b] {
        let mut local = PieceTier::new(side, false, "local");
        let mut shared = PieceTier::new(&mut cloud, true, "cloud");
        sync_partition(&mut local, &mut shared, KEY)?;
    }
    let mut rng = StdRng::seed_from_u64(7);
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let (mut up_bytes, mut down_bytes) = (Tally::default(), Tally::default());
    let mut last = (0, 0.0);
    reset_peak();
    for r in 0..ROUNDS {
        let i = rng.gen_range(0..n);
        let score = 2000.0 + r as f64;
        let edit = users(std::iter::once((i, score, 100 + r as i64)))?;
        PieceTier::new(&mut a, false, "a").append(KEY, "A", BASE + 100 + r as i64, edit)?;
        last = (i, score);
        let (a0, c0) = (ca.now(), cc.now());
        let t = Instant::now();
        {
            let mut local = PieceTier::new(&mut a, false, "a");
            let mut shared = PieceTier::new(&mut cloud, true, "cloud");
            sync_partition(&mut local, &mut shared, KEY)?;
        }
        up.push(t.elapsed().as_secs_f64());
        up_bytes = up_bytes + (ca.now() - a0) + (cc.now() - c0);
        let (b0, c0) = (cb.now(), cc.now());
        let t = Instant::now();
        {
            let mut local = PieceTier::new(&mut b, false, "b");
            let mut shared = PieceTier::new(&mut cloud, true, "cloud");
            sync_partition(&mut local, &mut shared, KEY)?;
        }
        down.push(t.elapsed().as_secs_f64());
        down_bytes = down_bytes + (cb.now() - b0) + (cc.now() - c0);
    }
    let peak = peak_rss_mb();
    up.sort_by(f64::total_cmp);
    down.sort_by(f64::total_cmp);
    let p = PieceTier::new(&mut b, false, "b")
        .read(KEY, &LastWriterWins)?
        .map(|r| r.partition)
        .unwrap_or_default();
    let verified =
        score_of(&p, last.0) == Some(last.1) && p.names.get("User").map_or(0, |ids| ids.len()) == n;
    let mut extra = Map::new();
    extra.insert("rounds".into(), json!(ROUNDS));
    extra.insert("up_median_ms".into(), json!(quantile(&up, 0.5) * 1e3));
    extra.insert("down_median_ms".into(), json!(quantile(&down, 0.5) * 1e3));
    extra.insert(
        "up_bytes_stored_per_round".into(),
        json!(per(up_bytes.stored_bytes, ROUNDS)),
    );
    extra.insert(
        "up_bytes_loaded_per_round".into(),
        json!(per(up_bytes.loaded_bytes, ROUNDS)),
    );
    extra.insert(
        "down_bytes_stored_per_round".into(),
        json!(per(down_bytes.stored_bytes, ROUNDS)),
    );
    extra.insert(
        "down_bytes_loaded_per_round".into(),
        json!(per(down_bytes.loaded_bytes, ROUNDS)),
    );
    let both = up_bytes + down_bytes;
    let median = quantile(&up, 0.5) + quantile(&down, 0.5);
    Ok(measure(peak, ("W7P", n, 0), median, 1.0, verified, extra).with_bytes(both, ROUNDS as u64))
}
