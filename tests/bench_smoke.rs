//! `datasync bench` on a small N: every workload runs and verifies its result, and
//! every line carries its bytes figures (the figures themselves are never asserted).

use std::process::Command;

use serde_json::Value;

/// Runs `datasync bench` with these arguments; one JSON document per output line.
fn bench(args: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_datasync"))
        .arg("bench")
        .args(args)
        .output()
        .expect("the datasync binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect()
}

fn check_common(m: &Value) {
    for field in [
        "workload",
        "n",
        "seconds",
        "ops_per_s",
        "peak_rss_mb",
        "verified",
    ] {
        assert!(m.get(field).is_some(), "{field} missing in {m}");
    }
    assert_eq!(m["verified"], true, "{m}");
    for field in ["bytes_written", "bytes_loaded"] {
        assert!(m[field].is_u64(), "{field} missing in {m}");
    }
}

#[test]
fn every_workload_runs_and_verifies() {
    let mut args = vec!["--n", "3000", "--runs", "1"];
    for w in ["W1", "W2", "W3", "W4", "W5"] {
        args.extend(["--workload", w]);
    }
    let lines = bench(&args);
    assert_eq!(lines.len(), 10, "5 workloads x 2 partitionings: {lines:?}");
    for m in &lines {
        check_common(m);
    }
}

#[test]
fn the_one_edit_workloads_run_and_verify() {
    let mut args = vec!["--n", "2000", "--runs", "1"];
    for w in ["W6", "W7", "W8", "WS"] {
        args.extend(["--workload", w]);
    }
    let lines = bench(&args);
    assert_eq!(lines.len(), 8, "4 workloads x 2 partitionings: {lines:?}");
    for m in &lines {
        check_common(m);
        let e = &m["extra"];
        let fields: &[&str] = match m["workload"].as_str() {
            Some("W6") => &[
                "median_ms",
                "p99_ms",
                "disk_write_bytes_per_edit",
                "adapter_stored_bytes_per_edit",
            ],
            Some("W7") => &[
                "a_cloud_stored_bytes_per_sync",
                "b_cloud_loaded_bytes_per_sync",
                "a_disk_write_bytes_per_sync",
                "b_disk_write_bytes_per_sync",
            ],
            Some("W8") => &["open_ms", "first_get_ms", "query_ms", "disk_read_bytes"],
            Some("WS") => &["save_median_ms", "save_p99_ms", "save_max_ms", "b_edits"],
            other => panic!("unexpected workload {other:?}"),
        };
        for field in fields {
            assert!(e.get(*field).is_some(), "{field} missing in {m}");
        }
        // Something was written (W6, W7, WS) or read (W8) through the adapters.
        let carried =
            m["bytes_written"].as_u64().unwrap_or(0) + m["bytes_loaded"].as_u64().unwrap_or(0);
        assert!(carried > 0, "no bytes counted in {m}");
    }
}

#[test]
fn the_pieces_workloads_run_and_verify() {
    let lines = bench(&[
        "--n",
        "2000",
        "--runs",
        "1",
        "--partition-size",
        "0",
        "--workload",
        "W6P",
        "--workload",
        "W7P",
    ]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for m in &lines {
        check_common(m);
        // One edit costs a few KB whatever N is: far below the 0.5 MB partition.
        let written = m["bytes_written"].as_u64().unwrap();
        assert!(written > 0 && written < 20_000, "{m}");
    }
}
