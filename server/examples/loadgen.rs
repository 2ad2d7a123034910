//! A small load generator for a running server: N client threads, each on one
//! keep-alive connection, for a number of seconds.
//!
//! `cargo run -p datasync-server --example loadgen -- URL TOKEN THREADS SECONDS MODE`
//! where MODE is `put` (a 256-byte store), `get`, `store_if` (If-Match over the
//! value the thread wrote before) or `batch` (100 stores of 256 bytes).
//! Prints one JSON line: requests per second and latency percentiles.
//!
//! `loadgen URL TOKEN CLIENTS SECONDS replay SCRIPT [SERVER_PID]` replays a device's
//! sync from CLIENTS clients at once, each on its own keep-alive connection and its
//! own keys (`sim.<client>.<name>`). SCRIPT is one sync, comma-separated steps:
//! `get:NAME:SIZE` (a load of a value of SIZE bytes), `put:NAME:SIZE` (a store),
//! `if:NAME:SIZE` (a store with If-Match over the value the client holds for NAME)
//! and `keys` (a listing of the client's keys). Before the clock starts every client
//! stores each NAME at its SIZE. Prints syncs per second, the latency of a sync and,
//! given SERVER_PID, the server's CPU per sync (`/proc/PID/stat`, Linux).

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() >= 6 && args[4] == "replay" {
        replay_main(&args);
        return;
    }
    if args.len() != 5 {
        eprintln!("usage: loadgen URL TOKEN THREADS SECONDS put|get|store_if|batch");
        std::process::exit(2);
    }
    let url = args[0].trim_end_matches('/').to_string();
    let token = args[1].clone();
    let threads: usize = args[2].parse().expect("THREADS");
    let seconds: u64 = args[3].parse().expect("SECONDS");
    let mode = args[4].clone();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (url, token, mode) = (url.clone(), token.clone(), mode.clone());
            std::thread::spawn(move || run(t, &url, &token, &mode, deadline))
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut errors = 0u64;
    for h in handles {
        let (l, e) = h.join().unwrap();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    println!(
        "{{\"mode\":\"{mode}\",\"threads\":{threads},\"requests\":{},\"errors\":{errors},\"per_second\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99)
    );
}

fn run(t: usize, url: &str, token: &str, mode: &str, deadline: Instant) -> (Vec<Duration>, u64) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = format!("Bearer {token}");
    let value = vec![b'v'; 256];
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut last_hash: Option<String> = None;
    let key = format!("app.load.{t}");
    let batch = {
        use base64::Engine;
        let v = base64::engine::general_purpose::STANDARD.encode(&value);
        let ops: Vec<String> = (0..100)
            .map(|i| format!("{{\"op\":\"store\",\"key\":\"app.load.{t}.{i}\",\"value\":\"{v}\"}}"))
            .collect();
        format!("{{\"ops\":[{}]}}", ops.join(","))
    };
    let blob_url = format!("{url}/v1/blobs/{key}");
    // `get` and `store_if` need the key to exist.
    let _ = agent
        .put(&blob_url)
        .header("Authorization", &auth)
        .send(&value[..]);
    let mut n = 0u64;
    while Instant::now() < deadline {
        let started = Instant::now();
        let result = match mode {
            "put" => agent
                .put(&blob_url)
                .header("Authorization", &auth)
                .send(&value[..]),
            "get" => agent.get(&blob_url).header("Authorization", &auth).call(),
            "store_if" => {
                n += 1;
                let next = format!("{n:0>256}");
                let old = last_hash
                    .clone()
                    .unwrap_or_else(|| blake3::hash(&value).to_hex().to_string());
                let r = agent
                    .put(&blob_url)
                    .header("Authorization", &auth)
                    .header("If-Match", format!("\"{old}\""))
                    .send(next.as_bytes());
                last_hash = Some(blake3::hash(next.as_bytes()).to_hex().to_string());
                r
            }
            "batch" => agent
                .post(format!("{url}/v1/batch"))
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(batch.as_bytes()),
            other => panic!("unknown mode {other}"),
        };
        match result {
            Ok(mut r) if r.status().as_u16() < 300 => {
                let _ = r.body_mut().read_to_vec();
                latencies.push(started.elapsed());
            }
            _ => errors += 1,
        }
    }
    (latencies, errors)
}

/// One step of a replayed sync.
#[derive(Clone)]
enum Step {
    Get(String),
    Put(String, usize),
    PutIf(String, usize),
    Keys,
}

fn parse_script(script: &str) -> (Vec<Step>, Vec<(String, usize)>) {
    let mut steps = Vec::new();
    let mut initial: Vec<(String, usize)> = Vec::new();
    for part in script.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let fields: Vec<&str> = part.split(':').collect();
        let step = match fields.as_slice() {
            ["keys"] => Step::Keys,
            [op, name, size] => {
                let size: usize = size.parse().expect("SIZE");
                if !initial.iter().any(|(n, _)| n == name) {
                    initial.push((name.to_string(), size));
                }
                match *op {
                    "get" => Step::Get(name.to_string()),
                    "put" => Step::Put(name.to_string(), size),
                    "if" => Step::PutIf(name.to_string(), size),
                    other => panic!("unknown step {other}"),
                }
            }
            _ => panic!("bad step {part:?}"),
        };
        steps.push(step);
    }
    (steps, initial)
}

/// CPU seconds (user + system) of `pid`, assuming 100 clock ticks per second.
fn cpu_of(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// A value of `size` bytes that differs with `n`.
fn value(size: usize, n: u64) -> Vec<u8> {
    let mut v = vec![b'x'; size];
    let stamp = format!("{n:020}");
    let len = stamp.len().min(size);
    v[..len].copy_from_slice(&stamp.as_bytes()[..len]);
    v
}

fn replay_main(args: &[String]) {
    let url = args[0].trim_end_matches('/').to_string();
    let token = args[1].clone();
    let clients: usize = args[2].parse().expect("CLIENTS");
    let seconds: u64 = args[3].parse().expect("SECONDS");
    let (steps, initial) = parse_script(&args[5]);
    let pid = args.get(6).cloned();
    let ready = std::sync::Arc::new(std::sync::Barrier::new(clients + 1));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (url, token, steps, initial) =
                (url.clone(), token.clone(), steps.clone(), initial.clone());
            let (ready, stop) = (ready.clone(), stop.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || replay(c, &url, &token, &steps, &initial, &ready, &stop))
                .expect("a client thread")
        })
        .collect();
    ready.wait();
    let cpu0 = pid.as_deref().and_then(cpu_of);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut latencies: Vec<Duration> = Vec::new();
    let (mut errors, mut setup_errors) = (0u64, 0u64);
    for h in handles {
        let (l, e, s) = h.join().unwrap();
        latencies.extend(l);
        errors += e;
        setup_errors += s;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu1 = pid.as_deref().and_then(cpu_of);
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let syncs = latencies.len();
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) if syncs > 0 => format!("{:.3}", (b - a) * 1000.0 / syncs as f64),
        _ => "null".to_string(),
    };
    println!(
        "{{\"mode\":\"replay\",\"clients\":{clients},\"steps_per_sync\":{},\"syncs\":{syncs},\"errors\":{errors},\"setup_errors\":{setup_errors},\"seconds\":{elapsed:.1},\"syncs_per_second\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"server_cpu_ms_per_sync\":{cpu}}}",
        steps.len(),
        syncs as f64 / elapsed,
        pct(0.5),
        pct(0.99)
    );
}

/// One simulated client: stores its initial values, waits for the others, then
/// replays the sync until told to stop. Returns sync latencies, failed syncs and
/// failed setup stores.
fn replay(
    c: usize,
    url: &str,
    token: &str,
    steps: &[Step],
    initial: &[(String, usize)],
    ready: &std::sync::Barrier,
    stop: &std::sync::atomic::AtomicBool,
) -> (Vec<Duration>, u64, u64) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let auth = format!("Bearer {token}");
    let key_url = |name: &str| format!("{url}/v1/blobs/sim.{c}.{name}");
    let mut held: std::collections::HashMap<String, Vec<u8>> = Default::default();
    let mut setup_errors = 0;
    for (name, size) in initial {
        let v = value(*size, 0);
        let ok = agent
            .put(key_url(name))
            .header("Authorization", &auth)
            .send(&v[..])
            .is_ok_and(|r| r.status().as_u16() < 300);
        setup_errors += u64::from(!ok);
        held.insert(name.clone(), v);
    }
    ready.wait();
    let (mut latencies, mut errors, mut n) = (Vec::new(), 0u64, 0u64);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let started = Instant::now();
        let mut ok = true;
        for step in steps {
            n += 1;
            let result = match step {
                Step::Get(name) => agent
                    .get(key_url(name))
                    .header("Authorization", &auth)
                    .call(),
                Step::Put(name, size) => {
                    let v = value(*size, n);
                    let r = agent
                        .put(key_url(name))
                        .header("Authorization", &auth)
                        .send(&v[..]);
                    held.insert(name.clone(), v);
                    r
                }
                Step::PutIf(name, size) => {
                    let v = value(*size, n);
                    let request = agent.put(key_url(name)).header("Authorization", &auth);
                    let request = match held.get(name) {
                        Some(old) => request
                            .header("If-Match", format!("\"{}\"", blake3::hash(old).to_hex())),
                        None => request.header("If-None-Match", "*"),
                    };
                    let r = request.send(&v[..]);
                    if r.as_ref().is_ok_and(|r| r.status().as_u16() < 300) {
                        held.insert(name.clone(), v);
                    }
                    r
                }
                Step::Keys => agent
                    .get(format!("{url}/v1/keys?prefix=sim.{c}."))
                    .header("Authorization", &auth)
                    .call(),
            };
            match result {
                Ok(mut r) if r.status().as_u16() < 300 => {
                    let _ = r.body_mut().with_config().limit(64 << 20).read_to_vec();
                }
                _ => ok = false,
            }
        }
        if ok {
            latencies.push(started.elapsed());
        } else {
            errors += 1;
        }
    }
    (latencies, errors, setup_errors)
}
