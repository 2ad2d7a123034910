//! WS, saves while the worker syncs: how long one `save` takes while the sync
//! worker flushes, syncs with a shared cloud and applies another device's edits.
//! DESIGN §10 "Reads and memory": a save never waits for a sync.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datasync::{DataSync, DirPersistence, MemoryPersistence, QueryOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map};

use super::bench::{config, measure, peak_rss_mb, reset_peak, Counting, Counts, Measure};
use super::bench_edit::quantile;
use super::CliResult;

/// Saves timed on device A.
const SAVES: usize = 5_000;
/// Time between two of A's saves, and between two of B's: a peer device editing
/// 500 entities a second keeps A's syncs bringing edits down without taking the
/// machine's cores from A.
const PACE: Duration = Duration::from_micros(200);
const B_PACE: Duration = Duration::from_millis(2);
/// The background worker's pace: the default flush delay, and a cloud sync every
/// 100 ms (the default is 30 s), so that about twenty run while A saves.
const FLUSH_DELAY: Duration = Duration::from_millis(50);
const SYNC_INTERVAL: Duration = Duration::from_millis(100);

pub fn ws(n: usize, ps: usize) -> CliResult<Measure> {
    let cloud = MemoryPersistence::new();
    // A device, with what its local and cloud adapters carry.
    let open = |dir: &std::path::Path| -> CliResult<(DataSync, [Arc<Counts>; 2])> {
        let (local, local_counts) = Counting::new(DirPersistence::open(dir)?);
        let (cloud, cloud_counts) = Counting::new(cloud.clone());
        let config = config(ps, n)
            .local(local)
            .cloud(cloud)
            .store_sync_delay(FLUSH_DELAY)
            .cloud_sync_interval(SYNC_INTERVAL);
        Ok((DataSync::open(config)?, [local_counts, cloud_counts]))
    };
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let ((a, counts), (b, _)) = (open(dir_a.path())?, open(dir_b.path())?);
    let carried = || counts[0].now() + counts[1].now();
    let ids = super::bench_edit::save_all(&a, n)?;
    let mut verified = a.sync_now()?.errors.is_empty();
    verified &= b.sync_now()?.errors.is_empty();
    // B reads its partitions in before it starts, so its edits do not wait for that.
    let all = b.repo("User")?.query(&QueryOptions::default())?;
    verified &= all.len() == n;
    let ids = Arc::new(ids);
    let stop = Arc::new(AtomicBool::new(false));
    // B edits users as a peer device would, so A's syncs bring edits down into its
    // store.
    let editor = {
        let (ids, stop) = (ids.clone(), stop.clone());
        let users = b.repo("User")?;
        std::thread::spawn(move || -> datasync::Result<usize> {
            let mut rng = StdRng::seed_from_u64(11);
            let mut edits = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = &ids[rng.gen_range(0..ids.len())];
                users.save(&json!({"id": id, "name": format!("from B {edits}")}))?;
                edits += 1;
                std::thread::sleep(B_PACE);
            }
            Ok(edits)
        })
    };
    let users = a.repo("User")?;
    let mut rng = StdRng::seed_from_u64(7);
    let mut times = Vec::with_capacity(SAVES);
    let mut last = Vec::new();
    reset_peak();
    let before = carried();
    let started = Instant::now();
    for s in 0..SAVES {
        let id = &ids[rng.gen_range(0..ids.len())];
        let row = json!({"id": id, "name": format!("from A {s}"), "score": s});
        let t = Instant::now();
        users.save(&row)?;
        times.push(t.elapsed().as_secs_f64());
        if s + 10 >= SAVES {
            last.push((id.clone(), s));
        }
        std::thread::sleep(PACE);
    }
    let wall = started.elapsed().as_secs_f64();
    let bytes = carried() - before;
    stop.store(true, Ordering::Relaxed);
    let b_edits = editor.join().map_err(|_| "B's editor panicked")??;
    let peak = peak_rss_mb();
    // Everything A saved reaches B.
    a.flush()?;
    verified &= a.sync_now()?.errors.is_empty();
    verified &= b.sync_now()?.errors.is_empty();
    let ub = b.repo("User")?;
    for (id, s) in &last {
        let got = ub.get(id)?;
        // B may have edited it after A did; then it carries B's name.
        verified &= got.is_some_and(|g| {
            g.value()["score"] == json!(s)
                || g.value()["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("from B"))
        });
    }
    times.sort_by(f64::total_cmp);
    let mut extra = Map::new();
    extra.insert("saves".into(), json!(SAVES));
    extra.insert("b_edits".into(), json!(b_edits));
    extra.insert("wall_seconds".into(), json!(wall));
    extra.insert("save_median_ms".into(), json!(quantile(&times, 0.5) * 1e3));
    extra.insert("save_p99_ms".into(), json!(quantile(&times, 0.99) * 1e3));
    extra.insert("save_p999_ms".into(), json!(quantile(&times, 0.999) * 1e3));
    extra.insert("save_max_ms".into(), json!(quantile(&times, 1.0) * 1e3));
    let p99 = quantile(&times, 0.99);
    a.close()?;
    b.close()?;
    // Bytes: what A handed its local tier and the cloud, and loaded from them,
    // per save.
    Ok(
        measure(peak, ("WS", n, ps), p99, SAVES as f64, verified, extra)
            .with_bytes(bytes, SAVES as u64),
    )
}
