//! The workloads that follow one edit (W6 trickle edits, W7 one edit across devices,
//! W8 cold start) of the benchmark definitions: what one change costs an instance
//! that already holds its data, in time and in bytes handed to disks and networks.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use datasync::{DataSync, DirPersistence, MemoryPersistence, QueryOptions, Repository, TierId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use super::bench::{
    active_count, config, entity, measure, peak_rss_mb, reset_peak, Counting, Counts, Measure,
    Tally,
};
use super::CliResult;

/// Edits of W6, and of W6 from this N on (each flush rewrites whole partitions, so at
/// a million entities in one partition 200 edits would take minutes).
const W6_EDITS: usize = 200;
const W6_EDITS_LARGE: usize = 20;
const LARGE: usize = 1_000_000;
const W7_ROUNDS: usize = 20;

/// The process's storage counters from `/proc/self/io`: bytes it made the kernel
/// fetch from (`read_bytes`) and send to (`write_bytes`) the storage layer, and bytes
/// its read calls returned, page cache included (`rchar`). Counts every thread.
#[derive(Debug, Clone, Copy)]
pub(super) struct Io {
    read_bytes: u64,
    write_bytes: u64,
    rchar: u64,
}

pub(super) fn io_now() -> Option<Io> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    let field = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(':')?
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some(Io {
        read_bytes: field("read_bytes")?,
        write_bytes: field("write_bytes")?,
        rchar: field("rchar")?,
    })
}

/// Sums `write_bytes` differences; `None` as soon as one reading is missing.
#[derive(Debug, Clone, Copy)]
pub(super) struct DiskWrites(Option<u64>);

impl DiskWrites {
    pub(super) fn new() -> DiskWrites {
        DiskWrites(Some(0))
    }

    pub(super) fn add(&mut self, before: Option<Io>, after: Option<Io>) {
        self.0 = match (self.0, before, after) {
            (Some(sum), Some(b), Some(a)) => {
                Some(sum + a.write_bytes.saturating_sub(b.write_bytes))
            }
            _ => None,
        };
    }

    pub(super) fn per(&self, count: usize) -> Value {
        json!(self.0.map(|b| b / count.max(1) as u64))
    }
}

/// Nearest-rank quantile of sorted samples.
pub(super) fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(0.0)
}

pub(super) fn per(total: u64, count: usize) -> f64 {
    total as f64 / count.max(1) as f64
}

/// Saves the N users in batches of 10,000; returns their ids.
pub(super) fn save_all(ds: &DataSync, n: usize) -> CliResult<Vec<String>> {
    let users = ds.repo("User")?;
    let mut ids = Vec::with_capacity(n);
    for start in (0..n).step_by(10_000) {
        let rows: Vec<Value> = (start..n.min(start + 10_000)).map(entity).collect();
        ids.extend(users.save_many(&rows)?);
    }
    Ok(ids)
}

/// An instance whose local tier is a durable directory (behind a counting adapter)
/// holding the N users, flushed; with its counters and the ids.
fn settled_dir(dir: &Path, n: usize, ps: usize) -> CliResult<(DataSync, Arc<Counts>, Vec<String>)> {
    let (local, counts) = Counting::new(DirPersistence::open(dir)?);
    let ds = DataSync::open(config(ps, n).local(local))?;
    let ids = save_all(&ds, n)?;
    ds.flush()?;
    Ok((ds, counts, ids))
}

/// Entity `id` as stored, with `change` applied (read outside the timed part).
fn edited(users: &Repository, id: &str, change: impl FnOnce(&mut Value)) -> CliResult<Value> {
    let mut e = users.get(id)?.ok_or("missing entity")?.value();
    change(&mut e);
    Ok(e)
}

fn partitions_of(ds: &DataSync) -> CliResult<usize> {
    Ok(ds.tier_meta(TierId::Local)?.entries.len())
}

/// W6: one random entity updated and flushed to a durable directory, over and over.
pub fn w6(n: usize, ps: usize) -> CliResult<Measure> {
    let dir = tempfile::tempdir()?;
    let (ds, counts, ids) = settled_dir(dir.path(), n, ps)?;
    let users = ds.repo("User")?;
    let edits = if n >= LARGE { W6_EDITS_LARGE } else { W6_EDITS };
    let mut rng = StdRng::seed_from_u64(6);
    let mut times = Vec::with_capacity(edits);
    let mut expected = HashMap::new();
    let mut disk = DiskWrites::new();
    let mut bytes = Tally::default();
    reset_peak();
    for k in 0..edits {
        let i = rng.gen_range(0..n);
        let score = 1000.0 + k as f64;
        let e = edited(&users, &ids[i], |e| e["score"] = json!(score))?;
        let (io0, c0) = (io_now(), counts.now());
        let t = Instant::now();
        users.save(&e)?;
        ds.flush()?;
        times.push(t.elapsed().as_secs_f64());
        let (io1, c1) = (io_now(), counts.now());
        disk.add(io0, io1);
        bytes = bytes + (c1 - c0);
        expected.insert(i, score);
    }
    let peak = peak_rss_mb();
    times.sort_by(f64::total_cmp);
    let partitions = partitions_of(&ds)?;
    let mut verified = active_count(&ds.tier_meta(TierId::Local)?) == n as u64;
    verified &= ds.audit()?.is_empty();
    ds.close()?;
    drop(ds);
    // The edits are on disk: a new instance over the directory reads them back.
    let ds = DataSync::open(config(ps, n).local(DirPersistence::open(dir.path())?))?;
    let users = ds.repo("User")?;
    for (i, score) in &expected {
        let found = users.get(&ids[*i])?.map(|e| e.value()["score"].as_f64());
        verified &= found == Some(Some(*score));
    }
    ds.close()?;
    let mut extra = Map::new();
    extra.insert("edits".into(), json!(edits));
    if n >= LARGE {
        extra.insert(
            "edits_note".into(),
            json!(format!(
                "{edits} edits at this N ({W6_EDITS} below {LARGE})"
            )),
        );
    }
    extra.insert("median_ms".into(), json!(quantile(&times, 0.5) * 1e3));
    extra.insert("p99_ms".into(), json!(quantile(&times, 0.99) * 1e3));
    extra.insert("disk_write_bytes_per_edit".into(), disk.per(edits));
    extra.insert(
        "adapter_stored_bytes_per_edit".into(),
        json!(per(bytes.stored_bytes, edits)),
    );
    extra.insert(
        "adapter_loaded_bytes_per_edit".into(),
        json!(per(bytes.loaded_bytes, edits)),
    );
    extra.insert(
        "adapter_stores_per_flush".into(),
        json!(per(bytes.stores, edits)),
    );
    extra.insert(
        "adapter_loads_per_flush".into(),
        json!(per(bytes.loads, edits)),
    );
    extra.insert(
        "adapter_commits_per_flush".into(),
        json!(per(bytes.commits, edits)),
    );
    extra.insert("partitions".into(), json!(partitions));
    let median = quantile(&times, 0.5);
    Ok(measure(peak, ("W6", n, ps), median, 1.0, verified, extra).with_bytes(bytes, edits as u64))
}

/// A device of W7: an instance with a directory tier and the shared cloud, each behind
/// a counting adapter. (Fields drop in order: the instance before its directory.)
struct Device {
    ds: DataSync,
    local: Arc<Counts>,
    cloud: Arc<Counts>,
    _dir: tempfile::TempDir,
}

fn device(cloud: &MemoryPersistence, n: usize, ps: usize) -> CliResult<Device> {
    let dir = tempfile::tempdir()?;
    let (local, local_counts) = Counting::new(DirPersistence::open(dir.path())?);
    let (cloud, cloud_counts) = Counting::new(cloud.clone());
    let ds = DataSync::open(config(ps, n).local(local).cloud(cloud))?;
    Ok(Device {
        ds,
        local: local_counts,
        cloud: cloud_counts,
        _dir: dir,
    })
}

/// W7: devices A and B share a cloud; A edits one entity and syncs, B syncs and reads
/// it, 20 times.
pub fn w7(n: usize, ps: usize) -> CliResult<Measure> {
    let cloud = MemoryPersistence::new();
    let (a, b) = (device(&cloud, n, ps)?, device(&cloud, n, ps)?);
    let ids = save_all(&a.ds, n)?;
    let mut verified = a.ds.sync_now()?.errors.is_empty();
    verified &= b.ds.sync_now()?.errors.is_empty();
    verified &= active_count(&b.ds.tier_meta(TierId::Local)?) == n as u64;
    let (ua, ub) = (a.ds.repo("User")?, b.ds.repo("User")?);
    let mut rng = StdRng::seed_from_u64(7);
    let (mut rounds, mut a_times, mut b_times) = (Vec::new(), Vec::new(), Vec::new());
    let (mut a_disk, mut b_disk) = (DiskWrites::new(), DiskWrites::new());
    let zero = Tally::default();
    let (mut a_cloud, mut b_cloud, mut a_local, mut b_local) = (zero, zero, zero, zero);
    reset_peak();
    for r in 0..W7_ROUNDS {
        let i = rng.gen_range(0..n);
        let name = format!("edit {r}");
        let e = edited(&ua, &ids[i], |e| e["name"] = json!(name))?;
        let (io0, ac0, al0) = (io_now(), a.cloud.now(), a.local.now());
        let t = Instant::now();
        ua.save(&e)?;
        let sa = a.ds.sync_now()?;
        a_times.push(t.elapsed().as_secs_f64());
        let (io1, ac1, al1) = (io_now(), a.cloud.now(), a.local.now());
        let (bc0, bl0) = (b.cloud.now(), b.local.now());
        let t = Instant::now();
        let sb = b.ds.sync_now()?;
        let got = ub.get(&ids[i])?;
        b_times.push(t.elapsed().as_secs_f64());
        let (io2, bc1, bl1) = (io_now(), b.cloud.now(), b.local.now());
        rounds.push(a_times[r] + b_times[r]);
        a_disk.add(io0, io1);
        b_disk.add(io1, io2);
        a_cloud = a_cloud + (ac1 - ac0);
        a_local = a_local + (al1 - al0);
        b_cloud = b_cloud + (bc1 - bc0);
        b_local = b_local + (bl1 - bl0);
        verified &= sa.errors.is_empty() && sb.errors.is_empty();
        verified &= got.is_some_and(|g| g.value()["name"] == json!(name));
    }
    let peak = peak_rss_mb();
    for times in [&mut rounds, &mut a_times, &mut b_times] {
        times.sort_by(f64::total_cmp);
    }
    verified &= a.ds.tier_meta(TierId::Cloud)?.root() == b.ds.tier_meta(TierId::Cloud)?.root();
    let partitions = partitions_of(&a.ds)?;
    let mut extra = Map::new();
    let k = W7_ROUNDS;
    extra.insert("rounds".into(), json!(k));
    extra.insert(
        "a_edit_sync_median_ms".into(),
        json!(quantile(&a_times, 0.5) * 1e3),
    );
    extra.insert(
        "b_sync_read_median_ms".into(),
        json!(quantile(&b_times, 0.5) * 1e3),
    );
    extra.insert("round_p99_ms".into(), json!(quantile(&rounds, 0.99) * 1e3));
    extra.insert(
        "a_cloud_stored_bytes_per_sync".into(),
        json!(per(a_cloud.stored_bytes, k)),
    );
    extra.insert(
        "a_cloud_loaded_bytes_per_sync".into(),
        json!(per(a_cloud.loaded_bytes, k)),
    );
    extra.insert(
        "b_cloud_loaded_bytes_per_sync".into(),
        json!(per(b_cloud.loaded_bytes, k)),
    );
    extra.insert(
        "b_cloud_stored_bytes_per_sync".into(),
        json!(per(b_cloud.stored_bytes, k)),
    );
    extra.insert(
        "a_local_stored_bytes_per_sync".into(),
        json!(per(a_local.stored_bytes, k)),
    );
    extra.insert(
        "b_local_stored_bytes_per_sync".into(),
        json!(per(b_local.stored_bytes, k)),
    );
    extra.insert("a_disk_write_bytes_per_sync".into(), a_disk.per(k));
    extra.insert("b_disk_write_bytes_per_sync".into(), b_disk.per(k));
    extra.insert("partitions".into(), json!(partitions));
    let all = a_cloud + b_cloud + a_local + b_local;
    Ok(measure(
        peak,
        ("W7", n, ps),
        quantile(&rounds, 0.5),
        1.0,
        verified,
        extra,
    )
    .with_bytes(all, k as u64))
}

/// Drops the page cache of every file under `dir` (the files are fsynced, so clean),
/// so that a cold open reads them from the disk. Returns whether it could.
fn evict(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut ok = true;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            ok &= evict(&path);
        } else {
            ok &= std::fs::File::open(&path).is_ok_and(|f| drop_cache(&f));
        }
    }
    ok
}

#[cfg(target_os = "linux")]
fn drop_cache(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the duration of the call; the advice only
    // concerns the kernel's cache of the file.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn drop_cache(_file: &std::fs::File) -> bool {
    false
}

/// W8: a directory tier holding the N users, opened cold in a fresh process that gets
/// one id, then queries every user.
pub fn w8(n: usize, ps: usize) -> CliResult<Measure> {
    let dir = tempfile::tempdir()?;
    let probe = n / 2;
    let (id, partitions) = {
        let (ds, _, ids) = settled_dir(dir.path(), n, ps)?;
        let partitions = partitions_of(&ds)?;
        ds.close()?;
        (ids[probe].clone(), partitions)
    };
    let evicted = evict(dir.path());
    let out = Command::new(std::env::current_exe()?)
        .arg("bench")
        .arg("--cold-open")
        .arg(dir.path())
        .args(["--cold-id", &id])
        .args(["--n", &n.to_string(), "--partition-size", &ps.to_string()])
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "the cold-start process failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    let cold: Value = serde_json::from_slice(&out.stdout)?;
    let secs = |k: &str| cold[k].as_f64().unwrap_or(f64::NAN);
    let seconds = secs("open_seconds") + secs("get_seconds") + secs("query_seconds");
    let verified =
        cold["count"] == json!(n) && cold["first_name"] == json!(format!("User {probe}"));
    let mut extra = Map::new();
    extra.insert("open_ms".into(), json!(secs("open_seconds") * 1e3));
    extra.insert("first_get_ms".into(), json!(secs("get_seconds") * 1e3));
    extra.insert("query_ms".into(), json!(secs("query_seconds") * 1e3));
    for k in [
        "disk_read_bytes",
        "file_read_bytes",
        "adapter_loads",
        "peak_rss_after_get_mb",
        "get_loaded_bytes",
    ] {
        extra.insert(k.into(), cold[k].clone());
    }
    extra.insert(
        "page_cache".into(),
        json!(if evicted { "dropped" } else { "warm" }),
    );
    extra.insert("partitions".into(), json!(partitions));
    let tally = Tally {
        stored_bytes: cold["adapter_stored_bytes"].as_u64().unwrap_or(0),
        loaded_bytes: cold["adapter_loaded_bytes"].as_u64().unwrap_or(0),
        ..Tally::default()
    };
    let peak = cold["peak_rss_mb"].as_f64().unwrap_or(0.0);
    Ok(measure(peak, ("W8", n, ps), seconds, n as f64, verified, extra).with_bytes(tally, 1))
}

/// W8's fresh process: opens the directory, gets `id`, queries every user; reports the
/// times, what was read and the peak RSS of the whole process.
pub fn cold_open(dir: &Path, id: &str, n: usize, ps: usize) -> CliResult<Value> {
    let io0 = io_now();
    let t = Instant::now();
    let (local, counts) = Counting::new(DirPersistence::open(dir)?);
    let ds = DataSync::open(config(ps, n).local(local))?;
    let open = t.elapsed().as_secs_f64();
    let users = ds.repo("User")?;
    let t = Instant::now();
    let first = users.get(id)?;
    let get = t.elapsed().as_secs_f64();
    let get_peak = peak_rss_mb();
    let get_loaded = counts.now().loaded_bytes;
    let t = Instant::now();
    let all = users.query(&QueryOptions::default())?;
    let query = t.elapsed().as_secs_f64();
    let io1 = io_now();
    let peak = peak_rss_mb();
    let c = counts.now();
    let io = |f: fn(&Io) -> u64| match (io0, io1) {
        (Some(a), Some(b)) => json!(f(&b).saturating_sub(f(&a))),
        _ => Value::Null,
    };
    let figures = json!({
        "open_seconds": open,
        "get_seconds": get,
        "query_seconds": query,
        "count": all.len(),
        "first_name": first.map(|e| e.value()["name"].clone()),
        "disk_read_bytes": io(|i| i.read_bytes),
        "file_read_bytes": io(|i| i.rchar),
        "adapter_loaded_bytes": c.loaded_bytes,
        "adapter_stored_bytes": c.stored_bytes,
        "adapter_loads": c.loads,
        "peak_rss_mb": peak,
        "peak_rss_after_get_mb": get_peak,
        "get_loaded_bytes": get_loaded,
    });
    drop(all);
    ds.close()?;
    Ok(figures)
}
