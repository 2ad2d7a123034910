//! A small load generator for a running server: N client threads, each on one
//! keep-alive connection, for a number of seconds.
//!
//! `cargo run -p datasync-server --example loadgen -- URL TOKEN THREADS SECONDS MODE`
//! where MODE is `put` (a 256-byte store), `get`, `store_if` (If-Match over the
//! value the thread wrote before) or `batch` (100 stores of 256 bytes).
//! Prints one JSON line: requests per second and latency percentiles.

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
