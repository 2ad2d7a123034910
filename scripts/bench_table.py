"""Turns `datasync bench` (and bindings/python/bench.py) JSON lines into the
Markdown table of BENCHMARKS.md:

    cargo run --release -- bench --n 10000 --n 100000 --n 1000000 | python3 scripts/bench_table.py
"""

import json
import sys


def fmt_seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.2f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def detail(m: dict) -> str:
    e = m.get("extra", {})
    w = m["workload"]
    if w == "W1":
        return f"save {fmt_seconds(e.get('save_seconds', 0))}, flush {fmt_seconds(e.get('flush_seconds', 0))}"
    if w == "W2":
        return f"{e.get('partitions_copied', '?')} partitions copied"
    if w == "W3":
        return f"{e.get('partitions_merged', '?')} partitions merged, {e.get('conflicts', '?')} conflicts"
    if w == "W4":
        return f"median of {e.get('rounds', '?')} rounds"
    if w == "W5":
        return f"{e.get('single_callbacks', '?')} single + {e.get('collection_callbacks', '?')} collection callbacks"
    if w == "W6":
        return f"{e.get('edits', '?')} edits, p99 {e.get('p99_ms', 0):.1f} ms, {e.get('adapter_stored_bytes_per_edit', 0) / 1e6:.2f} MB to the adapter per edit"
    if w == "W7":
        return f"A {e.get('a_edit_sync_median_ms', 0):.1f} ms, B {e.get('b_sync_read_median_ms', 0):.1f} ms, {e.get('a_cloud_stored_bytes_per_sync', 0) / 1e6:.2f} MB up, {e.get('b_cloud_loaded_bytes_per_sync', 0) / 1e6:.2f} MB down"
    if w == "W8":
        return f"open {e.get('open_ms', 0):.1f} ms, get {e.get('first_get_ms', 0):.1f} ms, query {e.get('query_ms', 0):.1f} ms"
    return ""


def main() -> None:
    print("| workload | N | partitioning | driver | seconds (median) | ops/s | peak RSS MB | verified | detail |")
    print("|---|---:|---|---|---:|---:|---:|---|---|")
    for line in sys.stdin:
        line = line.strip()
        if not line.startswith("{"):
            continue
        m = json.loads(line)
        print(
            f"| {m['workload']} | {m['n']:,} | {m.get('partitioning', 'global')} | {m.get('driver', 'rust')} "
            f"| {fmt_seconds(m['seconds'])} | {m['ops_per_s']:,.0f} | {m['peak_rss_mb']:.0f} "
            f"| {'yes' if m['verified'] else 'NO'} | {detail(m)} |"
        )


if __name__ == "__main__":
    main()
