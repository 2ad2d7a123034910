//! `datasync bench` on a small N: every workload runs and verifies its result (the
//! figures themselves are never asserted).

use std::process::Command;

#[test]
fn every_workload_runs_and_verifies() {
    let out = Command::new(env!("CARGO_BIN_EXE_datasync"))
        .args(["bench", "--n", "3000", "--runs", "1"])
        .output()
        .expect("the datasync binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    assert_eq!(lines.len(), 10, "5 workloads x 2 partitionings: {stdout}");
    for m in &lines {
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
    }
}
