//! The workloads through the sync server: W7S (W7's two devices, their shared cloud
//! the HTTP tier to a `datasync-server` on loopback) and ST (sync throughput: 1, 8 and
//! 32 devices, each on its own instance and keys, syncing one edit per round).
//!
//! The server binary is `datasync-server` next to this executable, or the one
//! `DATASYNC_SERVER_BIN` names. Its storage is a fresh directory, or PostgreSQL when
//! `DATASYNC_BENCH_POSTGRES` holds a URL (a fresh schema per run, dropped after with
//! `psql` when it is installed).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use datasync::{DataSync, DirPersistence, HttpPersistence, MemoryPersistence, Repository, TierId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use super::bench::{
    active_count, config, entity, measure, peak_rss_mb, reset_peak, Counting, Counts, Measure,
    Tally,
};
use super::CliResult;

const W7_ROUNDS: usize = 20;
/// Seconds each thread count of ST runs for.
const ST_SECONDS: u64 = 10;
const ST_THREADS: [usize; 3] = [1, 8, 32];
const TOKEN: &str = "bench-token";

/// A `datasync-server` child process on loopback, killed on drop.
struct Server {
    child: Child,
    url: String,
    backend: &'static str,
    /// PostgreSQL URL and schema, to drop the schema after.
    schema: Option<(String, String)>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn server_bin() -> CliResult<PathBuf> {
    if let Some(bin) = std::env::var_os("DATASYNC_SERVER_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("datasync-server");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "no {} (cargo build --release -p datasync-server, or set DATASYNC_SERVER_BIN)",
            bin.display()
        )
        .into())
    }
}

impl Server {
    fn start() -> CliResult<Server> {
        let dir = tempfile::tempdir()?;
        let tokens = dir.path().join("tokens.jsonl");
        let mut lines = String::new();
        for device in ["device-a", "device-b", "bench"] {
            let token = if device == "bench" {
                TOKEN.to_string()
            } else {
                format!("{TOKEN}-{device}")
            };
            lines.push_str(
                &json!({"token": token, "device": device, "read": ["*"], "write": ["*"]})
                    .to_string(),
            );
            lines.push('\n');
        }
        std::fs::write(&tokens, lines)?;
        let log = dir.path().join("server.log");
        let mut cmd = Command::new(server_bin()?);
        cmd.args(["--listen", "127.0.0.1:0", "--tokens"])
            .arg(&tokens);
        let (backend, schema) = match std::env::var("DATASYNC_BENCH_POSTGRES") {
            Ok(url) if !url.is_empty() => {
                let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
                let schema = format!("bench_{}_{}", std::process::id(), stamp % 1_000_000_000);
                cmd.args(["--postgres", &url, "--pg-schema", &schema]);
                ("postgres", Some((url, schema)))
            }
            _ => {
                let cloud = dir.path().join("cloud");
                std::fs::create_dir_all(&cloud)?;
                cmd.arg("--dir").arg(&cloud);
                ("directory", None)
            }
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no server stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut url = None;
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 {
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                url = Some(format!("http://{addr}"));
                break;
            }
            line.clear();
        }
        // Keeps reading so that the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        let mut server = Server {
            child,
            url: String::new(),
            backend,
            schema,
            log,
            _dir: dir,
        };
        server.url = url.ok_or_else(|| {
            let text = std::fs::read_to_string(&server.log).unwrap_or_default();
            format!("the server did not start: {}", text.trim())
        })?;
        Ok(server)
    }

    fn cpu(&self) -> Option<f64> {
        cpu_of(self.child.id())
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// The requests the server logged from byte `from` of its log on, for `device`.
    fn requests_since(&self, from: u64, device: &str) -> Vec<Value> {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let tail = text.get(from as usize..).unwrap_or_default();
        String::from_utf8_lossy(tail)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| v.get("fields").cloned().unwrap_or(v))
            .filter(|f| f["message"] == json!("request") && f["device"] == json!(device))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some((url, schema)) = &self.schema {
            let _ = Command::new("psql")
                .args([url.as_str(), "-q", "-c"])
                .arg(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU seconds (user + system) of process `pid`, from `/proc/<pid>/stat`.
fn cpu_of(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / ticks())
}

/// CPU seconds of every `postgres` process on the machine (the cluster's backends and
/// helpers; other clients of the same cluster count too).
fn postgres_cpu() -> Option<f64> {
    let mut sum = 0.0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() == "postgres" {
            sum += cpu_of(pid).unwrap_or(0.0);
        }
    }
    Some(sum)
}

/// Server (and, on PostgreSQL, database) CPU seconds now.
fn cpu_now(server: &Server) -> (Option<f64>, Option<f64>) {
    let pg = if server.backend == "postgres" {
        postgres_cpu()
    } else {
        None
    };
    (server.cpu(), pg)
}

fn cpu_ms_per(before: Option<f64>, after: Option<f64>, count: usize) -> Value {
    match (before, after) {
        (Some(b), Some(a)) => json!((a - b) * 1e3 / count.max(1) as f64),
        _ => Value::Null,
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(0.0)
}

fn per(total: u64, count: usize) -> f64 {
    total as f64 / count.max(1) as f64
}

fn save_all(users: &Repository, n: usize, first: usize) -> CliResult<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    for start in (0..n).step_by(10_000) {
        let rows: Vec<Value> = (start..n.min(start + 10_000))
            .map(|i| entity(first + i))
            .collect();
        ids.extend(users.save_many(&rows)?);
    }
    Ok(ids)
}

fn edited(users: &Repository, id: &str, name: &str) -> CliResult<Value> {
    let mut e = users.get(id)?.ok_or("missing entity")?.value();
    e["name"] = json!(name);
    Ok(e)
}

/// A device of W7S: a durable directory tier and the server, each behind a counting
/// adapter. (Fields drop in order: the instance before its directory.)
struct Device {
    ds: DataSync,
    local: Arc<Counts>,
    cloud: Arc<Counts>,
    _dir: tempfile::TempDir,
}

fn device(server: &Server, name: &str, n: usize, ps: usize) -> CliResult<Device> {
    let dir = tempfile::tempdir()?;
    let (local, local_counts) = Counting::new(DirPersistence::open(dir.path())?);
    let http = HttpPersistence::new(&server.url, &format!("{TOKEN}-{name}"))?;
    let (cloud, cloud_counts) = Counting::new(http);
    let ds = DataSync::open(config(ps, n).local(local).cloud(cloud))?;
    Ok(Device {
        ds,
        local: local_counts,
        cloud: cloud_counts,
        _dir: dir,
    })
}

/// One line per request: `METHOD route status in=BYTES out=BYTES`.
fn describe(requests: &[Value]) -> Vec<String> {
    requests
        .iter()
        .map(|r| {
            format!(
                "{} {} {} in={} out={}",
                r["method"].as_str().unwrap_or("?"),
                r["route"].as_str().unwrap_or("?"),
                r["status"],
                r["bytes_in"],
                r["bytes_out"]
            )
        })
        .collect()
}

/// W7S: W7 with the devices' shared cloud a `datasync-server` on loopback.
pub fn w7s(n: usize, ps: usize) -> CliResult<Measure> {
    let server = Server::start()?;
    let (a, b) = (
        device(&server, "device-a", n, ps)?,
        device(&server, "device-b", n, ps)?,
    );
    let ids = save_all(&a.ds.repo("User")?, n, 0)?;
    let t = Instant::now();
    let mut verified = a.ds.sync_now()?.errors.is_empty();
    let a_settle = t.elapsed().as_secs_f64();
    let t = Instant::now();
    verified &= b.ds.sync_now()?.errors.is_empty();
    let b_settle = t.elapsed().as_secs_f64();
    verified &= active_count(&b.ds.tier_meta(TierId::Local)?) == n as u64;
    let (ua, ub) = (a.ds.repo("User")?, b.ds.repo("User")?);
    let mut rng = StdRng::seed_from_u64(7);
    let (mut rounds, mut a_times, mut b_times) = (Vec::new(), Vec::new(), Vec::new());
    let zero = Tally::default();
    let (mut a_cloud, mut b_cloud, mut a_local, mut b_local) = (zero, zero, zero, zero);
    let (mut a_requests, mut b_requests) = (Vec::new(), Vec::new());
    let cpu0 = cpu_now(&server);
    reset_peak();
    for r in 0..W7_ROUNDS {
        let i = rng.gen_range(0..n);
        let name = format!("edit {r}");
        let e = edited(&ua, &ids[i], &name)?;
        let last = r + 1 == W7_ROUNDS;
        let log0 = if last { server.log_len() } else { 0 };
        let (ac0, al0) = (a.cloud.now(), a.local.now());
        let t = Instant::now();
        ua.save(&e)?;
        let sa = a.ds.sync_now()?;
        a_times.push(t.elapsed().as_secs_f64());
        let (ac1, al1) = (a.cloud.now(), a.local.now());
        let (bc0, bl0) = (b.cloud.now(), b.local.now());
        let t = Instant::now();
        let sb = b.ds.sync_now()?;
        let got = ub.get(&ids[i])?;
        b_times.push(t.elapsed().as_secs_f64());
        let (bc1, bl1) = (b.cloud.now(), b.local.now());
        if last {
            // The server writes its log line after answering: let it catch up.
            std::thread::sleep(Duration::from_millis(200));
            a_requests = server.requests_since(log0, "device-a");
            b_requests = server.requests_since(log0, "device-b");
        }
        rounds.push(a_times[r] + b_times[r]);
        a_cloud = a_cloud + (ac1 - ac0);
        a_local = a_local + (al1 - al0);
        b_cloud = b_cloud + (bc1 - bc0);
        b_local = b_local + (bl1 - bl0);
        verified &= sa.errors.is_empty() && sb.errors.is_empty();
        verified &= got.is_some_and(|g| g.value()["name"] == json!(name));
    }
    let cpu1 = cpu_now(&server);
    let peak = peak_rss_mb();
    for times in [&mut rounds, &mut a_times, &mut b_times] {
        times.sort_by(f64::total_cmp);
    }
    verified &= a.ds.tier_meta(TierId::Cloud)?.root() == b.ds.tier_meta(TierId::Cloud)?.root();
    let partitions = a.ds.tier_meta(TierId::Local)?.entries.len();
    let k = W7_ROUNDS;
    let mut extra = Map::new();
    extra.insert("backend".into(), json!(server.backend));
    extra.insert("rounds".into(), json!(k));
    extra.insert("a_settle_ms".into(), json!(a_settle * 1e3));
    extra.insert("b_settle_ms".into(), json!(b_settle * 1e3));
    extra.insert(
        "a_edit_sync_median_ms".into(),
        json!(quantile(&a_times, 0.5) * 1e3),
    );
    extra.insert(
        "b_sync_read_median_ms".into(),
        json!(quantile(&b_times, 0.5) * 1e3),
    );
    extra.insert("round_p99_ms".into(), json!(quantile(&rounds, 0.99) * 1e3));
    for (key, v) in [
        ("a_cloud_stored_bytes_per_sync", a_cloud.stored_bytes),
        ("a_cloud_loaded_bytes_per_sync", a_cloud.loaded_bytes),
        ("b_cloud_loaded_bytes_per_sync", b_cloud.loaded_bytes),
        ("b_cloud_stored_bytes_per_sync", b_cloud.stored_bytes),
        ("a_local_stored_bytes_per_sync", a_local.stored_bytes),
        ("b_local_stored_bytes_per_sync", b_local.stored_bytes),
    ] {
        extra.insert(key.into(), json!(per(v, k)));
    }
    extra.insert(
        "server_cpu_ms_per_round".into(),
        cpu_ms_per(cpu0.0, cpu1.0, k),
    );
    extra.insert(
        "postgres_cpu_ms_per_round".into(),
        cpu_ms_per(cpu0.1, cpu1.1, k),
    );
    extra.insert("a_requests_last_round".into(), json!(describe(&a_requests)));
    extra.insert("b_requests_last_round".into(), json!(describe(&b_requests)));
    extra.insert("partitions".into(), json!(partitions));
    let all = a_cloud + b_cloud + a_local + b_local;
    Ok(measure(
        peak,
        ("W7S", n, ps),
        quantile(&rounds, 0.5),
        1.0,
        verified,
        extra,
    )
    .with_bytes(all, k as u64))
}

/// One device of ST: its own prefix (so its own keys), an in-memory local tier and
/// the server; N users settled in the cloud.
fn st_device(server: &Server, t: usize, n: usize) -> CliResult<(DataSync, Vec<String>)> {
    let http = HttpPersistence::new(&server.url, TOKEN)?;
    // One partition per device (the global strategy): ST runs at small N.
    let cfg = datasync::Config::new(format!("dev{t}"))
        .store_sync_delay(Duration::from_secs(3600))
        .cloud_sync_interval(Duration::from_secs(3600))
        .sync_on_open(false);
    let ds = DataSync::open(cfg.local(MemoryPersistence::new()).cloud(http))?;
    let ids = save_all(&ds.repo("User")?, n, t * n)?;
    if !ds.sync_now()?.errors.is_empty() {
        return Err(format!("device {t} could not settle").into());
    }
    Ok((ds, ids))
}

/// Runs `threads` devices for `ST_SECONDS` after they settled; returns syncs, seconds,
/// errors, server and PostgreSQL CPU seconds.
fn st_run(server: &Server, threads: usize, n: usize) -> CliResult<Map<String, Value>> {
    let ready = Arc::new(Barrier::new(threads + 1));
    let go = Arc::new(Barrier::new(threads + 1));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (ready, go, stop) = (ready.clone(), go.clone(), stop.clone());
            let dev = st_device(server, t + threads * 1000, n).ok();
            std::thread::spawn(move || -> (usize, usize, Vec<f64>, Option<String>) {
                let Some((ds, ids)) = dev else {
                    ready.wait();
                    go.wait();
                    return (0, 1, Vec::new(), Some("the device did not settle".into()));
                };
                ready.wait();
                go.wait();
                let users = match ds.repo("User") {
                    Ok(u) => u,
                    Err(e) => return (0, 1, Vec::new(), Some(e.to_string())),
                };
                let mut rng = StdRng::seed_from_u64(t as u64);
                let (mut syncs, mut errors, mut times) = (0, 0, Vec::new());
                let mut first_error: Option<String> = None;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let i = rng.gen_range(0..ids.len());
                    let Ok(e) = edited(&users, &ids[i], &format!("edit {syncs}")) else {
                        errors += 1;
                        continue;
                    };
                    let t0 = Instant::now();
                    let result = users.save(&e).map_err(|e| e.to_string()).and_then(|_| {
                        match ds.sync_now() {
                            Ok(s) if s.errors.is_empty() => Ok(()),
                            Ok(s) => Err(format!("{:?}", s.errors)),
                            Err(e) => Err(e.to_string()),
                        }
                    });
                    times.push(t0.elapsed().as_secs_f64());
                    match result {
                        Ok(()) => syncs += 1,
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                let _ = ds.close();
                (syncs, errors, times, first_error)
            })
        })
        .collect();
    ready.wait();
    let cpu0 = cpu_now(server);
    let start = Instant::now();
    go.wait();
    std::thread::sleep(Duration::from_secs(ST_SECONDS));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut syncs, mut errors, mut times, mut first_error) = (0, 0, Vec::new(), None);
    for h in handles {
        let (s, e, t, f) = h.join().map_err(|_| "a device thread panicked")?;
        syncs += s;
        errors += e;
        times.extend(t);
        first_error = first_error.or(f);
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu1 = cpu_now(server);
    times.sort_by(f64::total_cmp);
    let mut m = Map::new();
    m.insert("threads".into(), json!(threads));
    m.insert("syncs".into(), json!(syncs));
    m.insert("errors".into(), json!(errors));
    m.insert("first_error".into(), json!(first_error));
    m.insert("seconds".into(), json!(seconds));
    m.insert("syncs_per_second".into(), json!(syncs as f64 / seconds));
    m.insert("sync_median_ms".into(), json!(quantile(&times, 0.5) * 1e3));
    m.insert("sync_p99_ms".into(), json!(quantile(&times, 0.99) * 1e3));
    m.insert(
        "server_cpu_ms_per_sync".into(),
        cpu_ms_per(cpu0.0, cpu1.0, syncs),
    );
    m.insert(
        "postgres_cpu_ms_per_sync".into(),
        cpu_ms_per(cpu0.1, cpu1.1, syncs),
    );
    Ok(m)
}

/// ST: sync throughput through one server with 1, 8 and 32 devices, each its own
/// instance with N users under its own prefix (one partition), syncing one edit per
/// round. The partitioning option is ignored.
pub fn st(n: usize, _ps: usize) -> CliResult<Measure> {
    let server = Server::start()?;
    reset_peak();
    let mut extra = Map::new();
    extra.insert("backend".into(), json!(server.backend));
    extra.insert("seconds_per_thread_count".into(), json!(ST_SECONDS));
    let mut verified = true;
    let mut best = 0.0f64;
    let mut one = f64::NAN;
    for threads in ST_THREADS {
        let m = st_run(&server, threads, n)?;
        verified &= m["errors"] == json!(0) && m["syncs"].as_u64().unwrap_or(0) > 0;
        let rate = m["syncs_per_second"].as_f64().unwrap_or(0.0);
        best = best.max(rate);
        if threads == 1 {
            one = m["sync_median_ms"].as_f64().unwrap_or(f64::NAN) / 1e3;
        }
        extra.insert(format!("threads_{threads}"), Value::Object(m));
    }
    let peak = peak_rss_mb();
    Ok(measure(peak, ("ST", n, 0), one, best, verified, extra))
}
