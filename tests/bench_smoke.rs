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
