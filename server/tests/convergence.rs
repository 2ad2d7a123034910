//! Convergence under faults: device processes make random saves and deletes on a
//! small shared pool of ids through two server processes over one PostgreSQL schema,
//! each behind a TCP proxy that delays, drops and cuts connections; one server is
//! SIGKILLed and restarted mid-run. After healing, every device holds exactly the
//! last-writer-wins outcome of the acknowledged writes, and none of them is lost.
//!
//! The device processes are this test binary run again: `device_main` is a no-op
//! unless `DATASYNC_SOAK_DEVICE` is set.

mod common;
#[path = "convergence/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{pg_url, PgSchema};
use support::*;

/// Ids shared by every device (so their writes conflict).
const POOL: usize = 12;
const DEVICES: usize = 8;
/// A bound on each device's writes, whatever the duration.
const MAX_WRITES_PER_DEVICE: u64 = 600;

#[test]
fn device_main() {
    let Ok(spec) = std::env::var(DEVICE_ENV) else {
        return;
    };
    run_device(&spec);
}

#[test]
fn devices_converge_under_faults() {
    let Some(url) = pg_url() else { return };
    let secs: u64 = std::env::var("DATASYNC_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
        .clamp(5, 600);
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let schema = PgSchema::new(&url, "soak");
    let tokens = common::write_tokens(work);

    // Two servers on one database, each behind its fault proxy.
    let mut servers: Vec<ServerProc> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (url, schema, tokens) = (&url, &schema.name, &tokens);
                s.spawn(move || {
                    ServerProc::start(url, schema, tokens, &work.join(format!("server{i}")), None)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let proxies: Vec<Proxy> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| Proxy::start(s.addr, 0x5eed_0000 + i as u64))
        .collect();

    // The devices, split between the proxies.
    let mut devices: Vec<DeviceProc> = (0..DEVICES)
        .map(|i| {
            let dir = work.join(format!("device{i}"));
            let spec = DeviceSpec {
                index: i,
                dir: dir.clone(),
                control: work.to_path_buf(),
                url: format!("http://{}", proxies[i % proxies.len()].addr),
                token: common::ADMIN.to_string(),
                pool: POOL,
                max_writes: MAX_WRITES_PER_DEVICE,
                seed: 0xdead_beef ^ (i as u64 * 7919),
            };
            DeviceProc::start(&spec)
        })
        .collect();

    // The writing phase, with one server killed and restarted in the middle.
    let write_start = Instant::now();
    let kill_at = Duration::from_secs(secs) * 2 / 5;
    wait_or_fail(&mut devices, write_start + kill_at);
    let victim = 1;
    let killed_at = Instant::now();
    servers[victim].kill9();
    println!(
        "soak: SIGKILLed server {victim} at {:.1}s",
        write_start.elapsed().as_secs_f64()
    );
    wait_or_fail(&mut devices, killed_at + Duration::from_secs(3));
    let restarted = servers[victim].restart_same_port(&url, &schema.name, &tokens);
    servers[victim] = restarted;
    println!(
        "soak: restarted server {victim} on {} at {:.1}s",
        servers[victim].addr,
        write_start.elapsed().as_secs_f64()
    );
    let restarts = 1;
    wait_or_fail(&mut devices, write_start + Duration::from_secs(secs));
    let write_secs = write_start.elapsed().as_secs_f64();

    // Healing: no more faults, writing stops, then rounds of flush and sync.
    for p in &proxies {
        p.heal();
    }
    signal(work, "stop");
    let rounds = 3;
    for round in 1..=rounds {
        signal(work, &format!("round-{round}"));
        let deadline = Instant::now() + Duration::from_secs(40);
        for d in devices.iter_mut() {
            d.wait_file(&format!("done-{round}"), deadline);
        }
    }
    signal(work, "dump");
    for d in devices.iter_mut() {
        d.wait_exit(Instant::now() + Duration::from_secs(20));
    }
    let heal_secs = write_start.elapsed().as_secs_f64() - write_secs;

    // The oracle, from every device's log.
    let logs: Vec<DeviceLog> = devices.iter().map(|d| DeviceLog::read(&d.dir)).collect();
    let mut oracle: BTreeMap<String, (Write, usize)> = BTreeMap::new();
    let (mut writes, mut acked, mut saves, mut deletes) = (0u64, 0u64, 0u64, 0u64);
    let mut acked_while_writing = 0u64;
    for (dev, log) in logs.iter().enumerate() {
        writes += log.writes.len() as u64;
        for w in &log.writes {
            match w {
                Write::Save { .. } => saves += 1,
                Write::Delete { .. } => deletes += 1,
            }
        }
        // Every write that reached a device's store travels; the acknowledged ones
        // are those that reported success before a successful flush.
        for (i, w) in log.writes.iter().enumerate() {
            if log.is_acked(i) {
                acked += 1;
                if i < log.acked_while_writing {
                    acked_while_writing += 1;
                }
            }
            let replace = match oracle.get(w.id()) {
                None => true,
                Some((held, _)) => w.beats(held),
            };
            if replace {
                oracle.insert(w.id().to_string(), (w.clone(), dev));
            }
        }
        assert_eq!(
            log.acked,
            log.writes.len(),
            "device {dev}: its last flush acknowledges every write it made"
        );
    }
    // Ids written by more than one device: their writes raced.
    let mut writers: BTreeMap<&str, std::collections::BTreeSet<usize>> = BTreeMap::new();
    for (dev, log) in logs.iter().enumerate() {
        for w in &log.writes {
            writers.entry(w.id()).or_default().insert(dev);
        }
    }
    let contended = writers.values().filter(|s| s.len() > 1).count();
    let expected: BTreeMap<String, String> = oracle
        .iter()
        .filter_map(|(id, (w, _))| match w {
            Write::Save { json, .. } => Some((id.clone(), json.clone())),
            Write::Delete { .. } => None,
        })
        .collect();

    // Every device against the oracle; every acknowledged write against every device.
    let mut failures = Vec::new();
    let mut lost = 0u64;
    let mut heal_conflicts = 0u64;
    for (dev, d) in devices.iter().enumerate() {
        let state = read_state(&d.dir);
        heal_conflicts += state.conflicts;
        if state.entities != expected {
            failures.push(describe_difference(
                dev,
                &state.entities,
                &expected,
                &oracle,
            ));
        }
        for (wdev, log) in logs.iter().enumerate() {
            for (n, w) in log.writes.iter().enumerate() {
                if !log.is_acked(n) {
                    continue;
                }
                if !held_or_superseded(w, &state.entities, &logs) {
                    lost += 1;
                    if lost <= 10 {
                        failures.push(format!(
                            "device {dev} lost acknowledged write #{n} of device {wdev}: {w:?}"
                        ));
                    }
                }
            }
        }
    }
    let faults: FaultCounts = proxies.iter().map(|p| p.counts()).sum();
    let server_conflicts: u64 = servers.iter().map(|s| s.conflicts_metric()).sum();
    println!(
        "soak: {DEVICES} devices, 2 servers, {POOL} shared ids; writes {writes} ({saves} saves, \
         {deletes} deletes), acknowledged {acked} ({acked_while_writing} before healing), \
         lost {lost}; ids written by several devices {contended}; conflicts merged in healing {heal_conflicts}, 412s on the live servers \
         {server_conflicts}; connections {}, faults {} (dropped {}, delayed {}, cut {}); \
         server restarts {restarts}; writing {write_secs:.1}s, healing {heal_secs:.1}s, \
         total {:.1}s; final entities {}",
        faults.connections,
        faults.dropped + faults.delayed + faults.cut,
        faults.dropped,
        faults.delayed,
        faults.cut,
        started.elapsed().as_secs_f64(),
        expected.len(),
    );
    if !failures.is_empty() {
        for d in &devices {
            eprintln!("--- device {} output:\n{}", d.index, d.output_tail());
        }
        for s in &servers {
            eprintln!("--- server log {}:\n{}", s.addr, s.log_tail());
        }
        panic!(
            "{} failures (a device differs from the oracle or lost a write):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    assert!(acked > 0, "no write was acknowledged");
    assert!(
        faults.dropped + faults.cut > 0,
        "the proxies injected no fault"
    );
}

/// Waits until `until`, failing at once if a device exited early.
fn wait_or_fail(devices: &mut [DeviceProc], until: Instant) {
    while Instant::now() < until {
        for d in devices.iter_mut() {
            d.check_running();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates a control file every device polls.
fn signal(work: &Path, name: &str) {
    std::fs::write(work.join(name), b"").unwrap();
}

/// Whether a device's final entities keep `w`: they hold it, or something that beats
/// it, or the id is absent and some logged delete beats `w` (or is `w`).
fn held_or_superseded(w: &Write, state: &BTreeMap<String, String>, all: &[DeviceLog]) -> bool {
    match state.get(w.id()) {
        Some(json) => {
            let held = Write::from_entity_json(w.id(), json);
            held == *w || held.beats(w)
        }
        None => all.iter().flat_map(|l| &l.writes).any(|d| {
            matches!(d, Write::Delete { .. }) && d.id() == w.id() && (d == w || d.beats(w))
        }),
    }
}

fn describe_difference(
    dev: usize,
    got: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
    oracle: &BTreeMap<String, (Write, usize)>,
) -> String {
    let mut out = format!("device {dev} differs from the oracle:");
    let mut ids: Vec<&String> = got.keys().chain(want.keys()).collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        let (g, w) = (got.get(id), want.get(id));
        if g != w {
            let by = oracle
                .get(id)
                .map(|(w, d)| format!("{w:?} by device {d}"))
                .unwrap_or_else(|| "nothing".into());
            out.push_str(&format!(
                "\n  {id}: holds {g:?}, oracle {w:?} (winner: {by})"
            ));
        }
    }
    out
}
