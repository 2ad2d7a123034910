//! `datasync bench`: the workloads of the benchmark definitions, through the public
//! API (W1..W5 here, the one-edit workloads W6..W8 in `bench_edit`). Each (workload,
//! N, partitioning) runs in a child process of its own, R times; one JSON line per
//! combination with the median time, the peak RSS and the bytes handed to and
//! returned by the adapters.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datasync::clock::format_millis;
use datasync::meta::is_reserved;
use datasync::meta::Meta;
use datasync::{
    sync_tiers, AdapterResult, Candidates, Config, DataSync, DirPersistence, KeyStrategy,
    LastWriterWins, MemoryPersistence, Partition, Persistence, QueryOptions, Slot,
};
use serde_json::{json, Map, Value};

use super::CliResult;

/// 2026-01-01T00:00:00.000Z
const BASE: i64 = 1_767_225_600_000;

/// What one child run reports.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Measure {
    pub workload: String,
    pub n: usize,
    pub partitioning: String,
    pub seconds: f64,
    pub ops_per_s: f64,
    pub peak_rss_mb: f64,
    pub verified: bool,
    /// Bytes handed to adapters to store during what `seconds` measures (per round
    /// where `seconds` is one round); `None` where it cannot be known.
    #[serde(default)]
    pub bytes_written: Option<u64>,
    /// Bytes adapters returned from loads during the same span.
    #[serde(default)]
    pub bytes_loaded: Option<u64>,
    #[serde(default)]
    pub extra: Map<String, Value>,
    /// The format of the blob tiers (`DATASYNC_DEFAULT_FORMAT`, 1 unless set).
    #[serde(default = "format_one")]
    pub format: u32,
}

fn format_one() -> u32 {
    1
}

impl Measure {
    /// Sets the bytes figures from what the adapters counted, divided by `per`.
    pub fn with_bytes(mut self, tally: Tally, per: u64) -> Measure {
        let per = per.max(1);
        self.bytes_written = Some(tally.stored_bytes / per);
        self.bytes_loaded = Some(tally.loaded_bytes / per);
        self
    }
}

/// What a [`Counting`] adapter saw, or the difference of two such readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub stored_bytes: u64,
    pub loaded_bytes: u64,
    pub stores: u64,
    pub loads: u64,
    pub clears: u64,
    pub commits: u64,
}

impl std::ops::Sub for Tally {
    type Output = Tally;
    fn sub(self, o: Tally) -> Tally {
        Tally {
            stored_bytes: self.stored_bytes - o.stored_bytes,
            loaded_bytes: self.loaded_bytes - o.loaded_bytes,
            stores: self.stores - o.stores,
            loads: self.loads - o.loads,
            clears: self.clears - o.clears,
            commits: self.commits - o.commits,
        }
    }
}

impl std::ops::Add for Tally {
    type Output = Tally;
    fn add(self, o: Tally) -> Tally {
        Tally {
            stored_bytes: self.stored_bytes + o.stored_bytes,
            loaded_bytes: self.loaded_bytes + o.loaded_bytes,
            stores: self.stores + o.stores,
            loads: self.loads + o.loads,
            clears: self.clears + o.clears,
            commits: self.commits + o.commits,
        }
    }
}

/// The counters a [`Counting`] adapter shares with whoever reads them.
#[derive(Debug, Default)]
pub struct Counts {
    stored_bytes: AtomicU64,
    loaded_bytes: AtomicU64,
    stores: AtomicU64,
    loads: AtomicU64,
    clears: AtomicU64,
    commits: AtomicU64,
}

impl Counts {
    pub fn now(&self) -> Tally {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Tally {
            stored_bytes: get(&self.stored_bytes),
            loaded_bytes: get(&self.loaded_bytes),
            stores: get(&self.stores),
            loads: get(&self.loads),
            clears: get(&self.clears),
            commits: get(&self.commits),
        }
    }
}

/// A persistence that hands every call to `inner` and counts the calls and the bytes
/// passed to `store` and returned by `load`: what a disk or a network would carry.
pub struct Counting<P> {
    inner: P,
    counts: Arc<Counts>,
}

impl<P: Persistence> Counting<P> {
    pub fn new(inner: P) -> (Counting<P>, Arc<Counts>) {
        let counts = Arc::<Counts>::default();
        (
            Counting {
                inner,
                counts: counts.clone(),
            },
            counts,
        )
    }
}

/// Clones share the counters (and whatever `P`'s clones share).
impl<P: Clone> Clone for Counting<P> {
    fn clone(&self) -> Self {
        Counting {
            inner: self.inner.clone(),
            counts: self.counts.clone(),
        }
    }
}

impl<P: Persistence> Persistence for Counting<P> {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        let found = self.inner.load(key)?;
        self.counts.loads.fetch_add(1, Ordering::Relaxed);
        let len = found.as_ref().map_or(0, Vec::len) as u64;
        self.counts.loaded_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(found)
    }

    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        self.counts.stores.fetch_add(1, Ordering::Relaxed);
        self.counts
            .stored_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.inner.store(key, bytes)
    }

    fn store_if(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        bytes: &[u8],
    ) -> AdapterResult<Option<bool>> {
        let stored = self.inner.store_if(key, expected, bytes)?;
        if stored == Some(true) {
            self.counts.stores.fetch_add(1, Ordering::Relaxed);
            let len = bytes.len() as u64;
            self.counts.stored_bytes.fetch_add(len, Ordering::Relaxed);
        }
        Ok(stored)
    }

    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        self.counts.clears.fetch_add(1, Ordering::Relaxed);
        self.inner.clear(key)
    }

    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        self.inner.keys()
    }

    fn commit(&mut self) -> AdapterResult<()> {
        self.counts.commits.fetch_add(1, Ordering::Relaxed);
        self.inner.commit()
    }
}

pub struct BenchArgs {
    pub n: Vec<usize>,
    pub workloads: Vec<String>,
    pub partition_size: Option<usize>,
    pub runs: usize,
    pub child: bool,
    /// W8's fresh process: the directory to open cold and the id to get first.
    pub cold_open: Option<(std::path::PathBuf, String)>,
}

/// Entity i as the benchmark definitions give it.
pub fn entity(i: usize) -> Value {
    let at = format_millis(BASE + i as i64);
    json!({
        "name": format!("User {i}"),
        "email": format!("user{i}@example.com"),
        "age": 18 + i % 60,
        "score": (i * 7919 % 10000) as f64 / 100.0,
        "tags": [format!("tag{}", i % 10), format!("tag{}", i % 7), format!("tag{}", i % 3)],
        "createdAt": at,
        "updatedAt": at,
    })
}

/// About `size` entities per partition: a pure function of the email.
struct Buckets {
    count: usize,
}

impl KeyStrategy for Buckets {
    fn reads_created_at(&self) -> bool {
        false
    }

    fn logical_key(&self, name: &str, entity: &Map<String, Value>) -> datasync::Result<String> {
        let email = entity
            .get("email")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let hash = blake3::hash(email.as_bytes());
        let bucket = u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap_or_default())
            % self.count as u64;
        Ok(format!("{name}.b{bucket:05}"))
    }

    fn candidate_keys(
        &self,
        prefix: &str,
        name: &str,
        _filter: Option<&Value>,
    ) -> datasync::Result<Candidates> {
        Ok(Candidates::Prefix(format!("{prefix}.{name}.b")))
    }
}

/// `--partition-size bounded`: the global strategy with the default partition bound.
pub const BOUNDED: usize = usize::MAX;

/// Reads `--partition-size`: a number, or `bounded` ([`BOUNDED`]).
pub fn parse_partitioning(text: &str) -> Result<usize, String> {
    match text {
        "bounded" => Ok(BOUNDED),
        _ => text
            .parse()
            .map_err(|_| format!("{text:?} is neither a number nor \"bounded\"")),
    }
}

pub fn config(partition_size: usize, n: usize) -> Config {
    let config = Config::new("bench")
        .store_sync_delay(Duration::from_secs(3600))
        .cloud_sync_interval(Duration::from_secs(3600))
        .sync_on_open(false);
    if partition_size == 0 {
        config.unbounded_partitions()
    } else if partition_size == BOUNDED {
        config
    } else {
        config.strategy(Buckets {
            count: n.div_ceil(partition_size).max(1),
        })
    }
}

/// Starts peak-RSS accounting afresh (Linux: resets VmHWM to the current RSS), so a
/// workload's setup does not count in its peak; what it holds still does.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Every partition a blob tier holds, read in either format.
fn partitions(tier: &MemoryPersistence) -> HashMap<String, Partition> {
    let blobs = tier.snapshot();
    if blobs.contains_key(datasync::pieces::FORMAT_KEY) {
        let mut adapter = tier.clone();
        return blobs
            .keys()
            .filter_map(|k| datasync::pieces::partition_of_index(k))
            .filter_map(|key| {
                let read = datasync::pieces::PieceTier::new(&mut adapter, false, "bench")
                    .read(key, &LastWriterWins)
                    .ok()??;
                Some((key.to_string(), read.partition))
            })
            .collect();
    }
    blobs
        .into_iter()
        .filter(|(k, _)| !is_reserved(k))
        .filter_map(|(k, b)| Some((k, Partition::parse(&b, false).ok()?)))
        .collect()
}

fn meta_of(tier: &MemoryPersistence) -> Meta {
    let blobs = tier.snapshot();
    Meta::read_stored(|k| blobs.get(k).cloned())
        .ok()
        .flatten()
        .unwrap_or_default()
}

pub fn active_count(meta: &Meta) -> u64 {
    meta.entries
        .values()
        .flat_map(|e| e.entities.values())
        .map(|c| c.count)
        .sum()
}

/// Fills a memory tier with the N entities through an instance; returns the ids.
fn filled(partition_size: usize, n: usize) -> CliResult<(MemoryPersistence, Vec<String>)> {
    let tier = MemoryPersistence::new();
    let ds = DataSync::open(config(partition_size, n).local(tier.clone()))?;
    let users = ds.repo("User")?;
    let ids = (0..n)
        .map(|i| users.save(&entity(i)))
        .collect::<datasync::Result<Vec<_>>>()?;
    ds.close()?;
    Ok((tier, ids))
}

/// A second device's tier that starts as a copy of `tier`: everything but the id
/// the first device writes under (in format 2 each device writes as itself).
fn copy_of(tier: &MemoryPersistence) -> MemoryPersistence {
    let copy = MemoryPersistence::new();
    for (k, v) in tier.snapshot() {
        if k != datasync::pieces::WRITER_KEY {
            copy.poke(&k, &v);
        }
    }
    copy
}

/// `peak` is the peak RSS when the measured phase ended, before verification.
pub fn measure(
    peak: f64,
    (workload, n, partition_size): (&str, usize, usize),
    seconds: f64,
    ops: f64,
    verified: bool,
    extra: Map<String, Value>,
) -> Measure {
    Measure {
        workload: workload.to_string(),
        n,
        partitioning: partitioning_name(partition_size),
        seconds,
        ops_per_s: if seconds > 0.0 { ops / seconds } else { 0.0 },
        peak_rss_mb: peak,
        verified,
        bytes_written: None,
        bytes_loaded: None,
        extra,
        format: Config::new("bench").format,
    }
}

fn partitioning_name(size: usize) -> String {
    if size == 0 {
        "global".into()
    } else if size == BOUNDED {
        "bounded".into()
    } else {
        format!("~{size}/partition")
    }
}

fn w1(n: usize, ps: usize) -> CliResult<Measure> {
    let dir = tempfile::tempdir()?;
    let (local, counts) = Counting::new(DirPersistence::open(dir.path())?);
    let ds = DataSync::open(config(ps, n).local(local))?;
    let users = ds.repo("User")?;
    let before = counts.now();
    reset_peak();
    // Rows are made in chunks outside the timed part, so the input does not weigh on
    // the peak memory of what is measured.
    let mut save = 0.0;
    let mut json_bytes = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let rows: Vec<Value> = chunk.iter().map(|i| entity(*i)).collect();
        json_bytes += rows.iter().map(|r| r.to_string().len()).sum::<usize>();
        let t = Instant::now();
        for row in &rows {
            users.save(row)?;
        }
        save += t.elapsed().as_secs_f64();
    }
    let t = Instant::now();
    ds.flush()?;
    let flush = t.elapsed().as_secs_f64();
    let peak = peak_rss_mb();
    let bytes = counts.now() - before;
    let local_meta = ds.tier_meta(datasync::TierId::Local)?;
    let verified = active_count(&local_meta) == n as u64 && ds.audit()?.is_empty();
    let mut extra = Map::new();
    extra.insert("save_seconds".into(), json!(save));
    extra.insert("flush_seconds".into(), json!(flush));
    extra.insert("json_mb".into(), json!(json_bytes as f64 / 1e6));
    extra.insert("partitions".into(), json!(local_meta.entries.len()));
    ds.close()?;
    Ok(measure(peak, ("W1", n, ps), save, n as f64, verified, extra).with_bytes(bytes, 1))
}

/// One `sync_tiers` between `a` and `b`, each behind a counting adapter; returns the
/// stats and what both adapters carried.
fn counted_sync(
    a: &MemoryPersistence,
    b: &MemoryPersistence,
) -> datasync::Result<(datasync::SyncStats, Tally)> {
    let (ca, na) = Counting::new(a.clone());
    let (cb, nb) = Counting::new(b.clone());
    let stats = sync_tiers(
        Box::new(ca),
        Box::new(cb),
        std::sync::Arc::new(LastWriterWins),
    )?;
    Ok((stats, na.now() + nb.now()))
}

fn w2(n: usize, ps: usize) -> CliResult<Measure> {
    let (a, _) = filled(ps, n)?;
    let b = MemoryPersistence::new();
    reset_peak();
    let t = Instant::now();
    let (stats, bytes) = counted_sync(&a, &b)?;
    let secs = t.elapsed().as_secs_f64();
    let peak = peak_rss_mb();
    let (ma, mb) = (meta_of(&a), meta_of(&b));
    let verified =
        ma.root() == mb.root() && active_count(&mb) == n as u64 && stats.errors.is_empty();
    let mut extra = Map::new();
    extra.insert("partitions_copied".into(), json!(stats.keys_copied));
    Ok(measure(peak, ("W2", n, ps), secs, n as f64, verified, extra).with_bytes(bytes, 1))
}

fn w3(n: usize, ps: usize) -> CliResult<Measure> {
    let (a, ids) = filled(ps, n)?;
    let b = copy_of(&a);
    {
        let da = DataSync::open(config(ps, n).local(a.clone()))?;
        let users = da.repo("User")?;
        for i in (0..n).step_by(100) {
            let mut e = users.get(&ids[i])?.ok_or("missing entity")?.value();
            e["score"] = json!(e["score"].as_f64().unwrap_or(0.0) + 1.0);
            users.save(&e)?;
        }
        let deletes: Vec<&String> = (50..n).step_by(1000).map(|i| &ids[i]).collect();
        users.delete_many(&deletes)?;
        da.close()?;
    }
    std::thread::sleep(Duration::from_millis(3));
    {
        let db = DataSync::open(config(ps, n).local(b.clone()))?;
        let users = db.repo("User")?;
        for i in (1..n).step_by(100).chain((0..n).step_by(1000)) {
            let mut e = users.get(&ids[i])?.ok_or("missing entity")?.value();
            e["score"] = json!(-1.0);
            e["name"] = json!(format!("B {i}"));
            users.save(&e)?;
        }
        db.close()?;
    }
    reset_peak();
    let t = Instant::now();
    let (stats, bytes) = counted_sync(&a, &b)?;
    let secs = t.elapsed().as_secs_f64();
    let peak = peak_rss_mb();
    let (pa, pb) = (partitions(&a), partitions(&b));
    let mut verified =
        pa == pb && meta_of(&a).root() == meta_of(&b).root() && stats.errors.is_empty();
    let find = |id: &str| pa.values().find_map(|p| p.get("User", id).cloned());
    for i in (0..n).step_by(50) {
        let slot = find(&ids[i]);
        let ok = match (i % 1000, i % 100, slot) {
            (0, _, Some(Slot::Active(e))) => e.value()["name"] == json!(format!("B {i}")),
            (50, _, Some(Slot::Deleted(_))) => true,
            (_, 0, Some(Slot::Active(e))) => {
                e.value()["score"].as_f64() == Some((i * 7919 % 10000) as f64 / 100.0 + 1.0)
            }
            (_, 50, Some(Slot::Active(e))) => e.version() == 1,
            _ => false,
        };
        verified &= ok;
    }
    for i in (1..n).step_by(100) {
        verified &= matches!(find(&ids[i]), Some(Slot::Active(e)) if e.value()["name"] == json!(format!("B {i}")));
    }
    let mut extra = Map::new();
    extra.insert("partitions_merged".into(), json!(stats.keys_merged));
    extra.insert("conflicts".into(), json!(stats.conflicts));
    extra.insert("entities_changed".into(), json!(stats.entities_changed));
    let changed = (n / 100) * 2 + n / 1000 * 2;
    Ok(measure(peak, ("W3", n, ps), secs, changed as f64, verified, extra).with_bytes(bytes, 1))
}

fn w4(n: usize, ps: usize) -> CliResult<Measure> {
    let (a, _) = filled(ps, n)?;
    let b = copy_of(&a);
    sync_tiers(
        Box::new(a.clone()),
        Box::new(b.clone()),
        std::sync::Arc::new(LastWriterWins),
    )?;
    let rounds = 1000;
    reset_peak();
    let mut times = Vec::with_capacity(rounds);
    let mut verified = true;
    let ((ca, na), (cb, nb)) = (Counting::new(a.clone()), Counting::new(b.clone()));
    for _ in 0..rounds {
        let t = Instant::now();
        let stats = sync_tiers(
            Box::new(ca.clone()),
            Box::new(cb.clone()),
            std::sync::Arc::new(LastWriterWins),
        )?;
        times.push(t.elapsed().as_secs_f64());
        verified &= stats == datasync::SyncStats::default();
    }
    let bytes = na.now() + nb.now();
    let peak = peak_rss_mb();
    times.sort_by(f64::total_cmp);
    let median = times[rounds / 2];
    let mut extra = Map::new();
    extra.insert("rounds".into(), json!(rounds));
    extra.insert("median_ms".into(), json!(median * 1e3));
    Ok(measure(peak, ("W4", n, ps), median, 1.0, verified, extra).with_bytes(bytes, rounds as u64))
}

fn w5(n: usize, ps: usize) -> CliResult<Measure> {
    let ds = DataSync::open(config(ps, n))?;
    let users = ds.repo("User")?;
    let rows: Vec<Value> = (0..n).map(entity).collect();
    let ids = users.save_many(&rows)?;
    drop(rows);
    let watched = 1000.min(n);
    let single_calls = Arc::new(AtomicU64::new(0));
    let last_seen: Arc<Mutex<HashMap<String, f64>>> = Arc::default();
    let mut subs = Vec::with_capacity(watched + 1);
    for id in &ids[..watched] {
        let (calls, seen) = (single_calls.clone(), last_seen.clone());
        subs.push(users.observe(id, move |e| {
            calls.fetch_add(1, Ordering::Relaxed);
            if let Some(e) = e {
                let score = e.value()["score"].as_f64().unwrap_or(f64::NAN);
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(e.id().to_string(), score);
            }
        })?);
    }
    // The collection observer takes change sets, as a binding would: it keeps a
    // model keyed by id from the upserts and removals, and counts what it was handed
    // (the bytes are those of the JSON document the C and UniFFI doors deliver).
    let list_calls = Arc::new(AtomicU64::new(0));
    let handed = Arc::new(AtomicU64::new(0));
    let handed_bytes = Arc::new(AtomicU64::new(0));
    let model: Arc<Mutex<(usize, HashMap<String, datasync::Entity>)>> = Arc::default();
    let (calls, upserts, bytes, m) = (
        list_calls.clone(),
        handed.clone(),
        handed_bytes.clone(),
        model.clone(),
    );
    subs.push(users.observe_changes(QueryOptions::default(), move |c| {
        calls.fetch_add(1, Ordering::Relaxed);
        upserts.fetch_add(c.upserted().len() as u64, Ordering::Relaxed);
        bytes.fetch_add(c.to_json().len() as u64, Ordering::Relaxed);
        let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
        for id in c.removed() {
            m.1.remove(id);
        }
        for u in c.upserted() {
            m.1.insert(u.entity.id().to_string(), u.entity.clone());
        }
        m.0 = c.count();
    })?);
    ds.drain_events()?;
    single_calls.store(0, Ordering::Relaxed);
    list_calls.store(0, Ordering::Relaxed);
    handed.store(0, Ordering::Relaxed);
    handed_bytes.store(0, Ordering::Relaxed);
    let updates = 10_000;
    let targets = 2000.min(n);
    reset_peak();
    let t = Instant::now();
    for u in 0..updates {
        let i = u % targets;
        let mut e = json!({"id": ids[i], "score": u as f64});
        e["name"] = json!(format!("User {i}"));
        users.save(&e)?;
    }
    let saves_secs = t.elapsed().as_secs_f64();
    ds.drain_events()?;
    let secs = t.elapsed().as_secs_f64();
    let peak = peak_rss_mb();
    let expected = |i: usize| (updates - targets + i) as f64;
    let seen = last_seen.lock().unwrap_or_else(|p| p.into_inner());
    let mut verified = (0..watched).all(|i| seen.get(&ids[i]) == Some(&expected(i)));
    let model = model.lock().unwrap_or_else(|p| p.into_inner());
    let (count, finals) = (&model.0, &model.1);
    verified &= *count == n && finals.len() == n;
    verified &= (0..targets).step_by(97).all(|i| {
        let score = finals
            .get(ids[i].as_str())
            .map(|e| e.value()["score"].as_f64());
        score == Some(Some(expected(i)))
    });
    let mut extra = Map::new();
    extra.insert("saves_seconds".into(), json!(saves_secs));
    extra.insert(
        "single_callbacks".into(),
        json!(single_calls.load(Ordering::Relaxed)),
    );
    extra.insert(
        "collection_callbacks".into(),
        json!(list_calls.load(Ordering::Relaxed)),
    );
    extra.insert(
        "collection_upserts".into(),
        json!(handed.load(Ordering::Relaxed)),
    );
    extra.insert(
        "collection_bytes".into(),
        json!(handed_bytes.load(Ordering::Relaxed)),
    );
    // The instance has no tier below its in-memory store (and its store sync is not
    // due during the run): no adapter is handed or returns any bytes.
    extra.insert("bytes_note".into(), json!("store tier only"));
    drop(subs);
    Ok(
        measure(peak, ("W5", n, ps), secs, updates as f64, verified, extra)
            .with_bytes(Tally::default(), 1),
    )
}

fn run_one(workload: &str, n: usize, ps: usize) -> CliResult<Measure> {
    match workload {
        "W1" => w1(n, ps),
        "W2" => w2(n, ps),
        "W3" => w3(n, ps),
        "W4" => w4(n, ps),
        "W5" => w5(n, ps),
        "W6" => super::bench_edit::w6(n, ps),
        "W7" => super::bench_edit::w7(n, ps),
        "W8" => super::bench_edit::w8(n, ps),
        "WS" => super::bench_latency::ws(n, ps),
        "W6P" => super::bench_pieces::w6p(n),
        "W7P" => super::bench_pieces::w7p(n),
        "W7S" => super::bench_server::w7s(n, ps),
        "ST" => super::bench_server::st(n, ps),
        other => Err(format!("unknown workload {other:?} (W1..W8, WS, W6P, W7P, W7S, ST)").into()),
    }
}

/// Runs the benchmark; prints one JSON line per workload, N and partitioning.
pub fn run(args: BenchArgs) -> CliResult<()> {
    let workloads: Vec<String> = if args.workloads.is_empty() {
        (1..=8).map(|i| format!("W{i}")).collect()
    } else {
        args.workloads.iter().map(|w| w.to_uppercase()).collect()
    };
    let sizes = if args.n.is_empty() {
        vec![10_000, 100_000]
    } else {
        args.n.clone()
    };
    let partitionings = match args.partition_size {
        Some(k) => vec![k],
        None => vec![0, 1000],
    };
    if let Some((dir, id)) = &args.cold_open {
        let figures = super::bench_edit::cold_open(dir, id, sizes[0], partitionings[0])?;
        println!("{}", serde_json::to_string(&figures)?);
        return Ok(());
    }
    if args.child {
        let m = run_one(&workloads[0], sizes[0], partitionings[0])?;
        println!("{}", serde_json::to_string(&m)?);
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let mut failed = false;
    for n in &sizes {
        for ps in &partitionings {
            for w in &workloads {
                let mut runs = Vec::new();
                for _ in 0..args.runs.max(1) {
                    let out = Command::new(&exe)
                        .args([
                            "bench",
                            "--child",
                            "--workload",
                            w,
                            "--n",
                            &n.to_string(),
                            "--partition-size",
                            &ps.to_string(),
                        ])
                        .output()?;
                    if !out.status.success() {
                        return Err(format!(
                            "{w} n={n} failed: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        )
                        .into());
                    }
                    let line = String::from_utf8_lossy(&out.stdout);
                    runs.push(serde_json::from_str::<Measure>(line.trim())?);
                }
                runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
                let mut m = runs[runs.len() / 2].clone();
                m.peak_rss_mb = runs.iter().map(|r| r.peak_rss_mb).fold(0.0, f64::max);
                m.verified = runs.iter().all(|r| r.verified);
                m.extra.insert("runs".into(), json!(runs.len()));
                m.extra.insert(
                    "all_seconds".into(),
                    json!(runs.iter().map(|r| r.seconds).collect::<Vec<_>>()),
                );
                failed |= !m.verified;
                println!("{}", serde_json::to_string(&m)?);
            }
        }
    }
    if failed {
        return Err("a workload did not verify".into());
    }
    Ok(())
}
