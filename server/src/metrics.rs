//! Counters and latency histograms, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    /// Counts per bucket (not cumulative; rendering sums them).
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    bytes_in: BTreeMap<String, u64>,
    bytes_out: BTreeMap<String, u64>,
    latency: BTreeMap<String, Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    conflicts: AtomicU64,
}

/// One finished request, as the metrics see it.
pub struct Observation<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub latency: Duration,
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn observe(&self, o: &Observation<'_>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner
            .requests
            .entry((o.route.to_string(), o.method.to_string(), o.status))
            .or_default() += 1;
        *inner.bytes_in.entry(o.route.to_string()).or_default() += o.bytes_in;
        *inner.bytes_out.entry(o.route.to_string()).or_default() += o.bytes_out;
        let h = inner.latency.entry(o.route.to_string()).or_default();
        let secs = o.latency.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            h.counts[i] += 1;
        }
        h.sum += secs;
        h.count += 1;
    }

    /// Counts conditional writes refused with 412 (PUT and batch `store_if`).
    pub fn conflict(&self) {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str(
            "# HELP datasync_requests_total Requests answered, by route, method and status.\n",
        );
        out.push_str("# TYPE datasync_requests_total counter\n");
        for ((route, method, status), n) in &inner.requests {
            let _ = writeln!(
                out,
                "datasync_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape_label(route),
                escape_label(method)
            );
        }
        out.push_str(
            "# HELP datasync_request_bytes_total Request body bytes received, by route.\n",
        );
        out.push_str("# TYPE datasync_request_bytes_total counter\n");
        for (route, n) in &inner.bytes_in {
            let _ = writeln!(
                out,
                "datasync_request_bytes_total{{route=\"{}\"}} {n}",
                escape_label(route)
            );
        }
        out.push_str("# HELP datasync_response_bytes_total Response body bytes sent, by route.\n");
        out.push_str("# TYPE datasync_response_bytes_total counter\n");
        for (route, n) in &inner.bytes_out {
            let _ = writeln!(
                out,
                "datasync_response_bytes_total{{route=\"{}\"}} {n}",
                escape_label(route)
            );
        }
        out.push_str("# HELP datasync_conflicts_total Conditional writes refused (412).\n");
        out.push_str("# TYPE datasync_conflicts_total counter\n");
        let _ = writeln!(
            out,
            "datasync_conflicts_total {}",
            self.conflicts.load(Ordering::Relaxed)
        );
        out.push_str("# HELP datasync_request_duration_seconds Request latency, by route.\n");
        out.push_str("# TYPE datasync_request_duration_seconds histogram\n");
        for (route, h) in &inner.latency {
            let route = escape_label(route);
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(h.counts.iter()) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "datasync_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "datasync_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "datasync_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "datasync_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        out
    }
}
