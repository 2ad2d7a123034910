"""W1 (a `save` loop and `save_many`), W2, W5 (full-list and change-set collection
observers) and W7 (one edit between two devices) of the benchmark definitions, driven from Python through the
bindings, so the cost of crossing the binding shows next to `datasync bench`.

Run after installing the package (bindings/python/run-tests.sh builds it into
bindings/python/.venv):

    bindings/python/.venv/bin/python bindings/python/bench.py --n 100000

Prints one JSON line per workload with the median of --runs runs (each run in a
fresh child process, so peak RSS is per run).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time

import datasync

BASE_MS = 1_767_225_600_000


def instant(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def entity(i: int) -> dict:
    at = instant(BASE_MS + i)
    return {
        "name": f"User {i}",
        "email": f"user{i}@example.com",
        "age": 18 + i % 60,
        "score": (i * 7919 % 10000) / 100,
        "tags": [f"tag{i % 10}", f"tag{i % 7}", f"tag{i % 3}"],
        "createdAt": at,
        "updatedAt": at,
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def quiet(prefix: str, **tiers) -> datasync.DataSync:
    return datasync.open(prefix, store_sync_delay=3600, cloud_sync_interval=3600, sync_on_open=False, **tiers)


def w1(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        with quiet("bench", local=datasync.DirectoryTier(tmp)) as ds:
            users = ds.repo("User")
            save = 0.0
            for start in range(0, n, 10_000):
                rows = [entity(i) for i in range(start, min(n, start + 10_000))]
                t = time.perf_counter()
                for row in rows:
                    users.save(row)
                save += time.perf_counter() - t
            t = time.perf_counter()
            ds.flush()
            flush = time.perf_counter() - t
            verified = len(users.query(limit=n + 1)) == n and ds.audit() == []
    return {"seconds": save, "ops": n, "verified": verified, "extra": {"save_seconds": save, "flush_seconds": flush}}


def w1_many(n: int) -> dict:
    """W1 with `save_many` in batches of 10,000: one crossing per batch."""
    with tempfile.TemporaryDirectory() as tmp:
        with quiet("bench", local=datasync.DirectoryTier(tmp)) as ds:
            users = ds.repo("User")
            save = 0.0
            for start in range(0, n, 10_000):
                rows = [entity(i) for i in range(start, min(n, start + 10_000))]
                t = time.perf_counter()
                users.save_many(rows)
                save += time.perf_counter() - t
            t = time.perf_counter()
            ds.flush()
            flush = time.perf_counter() - t
            verified = len(users.query(limit=n + 1)) == n and ds.audit() == []
    return {"seconds": save, "ops": n, "verified": verified, "extra": {"save_seconds": save, "flush_seconds": flush}}


def save_parts(n: int) -> dict:
    """Where one `save` goes: encoding (the wrapper's json encoding to bytes), the
    direct call (`datasync_direct_save` through ctypes: the Rust save and the id
    answered), the generated UniFFI method for comparison, and the wrapper around
    the direct call; perf_counter_ns around each part over n saves into a memory
    instance."""
    from datasync import _ANSWER, _answers, _direct_save, _encode_direct

    with quiet("bench") as ds:
        users = ds.repo("User")
        native, handle = users._native, users._direct
        rows = [entity(i) for i in range(n)]
        a = _answers
        clock = time.perf_counter_ns
        t0 = clock()
        data = [_encode_direct(r, "the entity") for r in rows]
        t1 = clock()
        for d in data:
            _direct_save(handle, d, len(d), a.buf, _ANSWER, a.len_p)
        t2 = clock()
        for r in rows:
            users.save(r)
        t3 = clock()
        texts = [d.decode() for d in data]
        t4 = clock()
        for text in texts:
            native.save(text)
        t5 = clock()
        verified = len(users.query(limit=3 * n + 1)) == 3 * n
    encode, call, whole = (t1 - t0) / n, (t2 - t1) / n, (t3 - t2) / n
    return {
        "seconds": (t3 - t2) / 1e9,
        "ops": n,
        "verified": verified,
        "extra": {
            "ns_encode": encode,
            "ns_direct_call": call,
            "ns_generated_method_call": (t5 - t4) / n,
            "ns_wrapper_save": whole,
            "ns_wrapper_rest": whole - encode - call,
        },
    }


def w2(n: int) -> dict:
    a, b = datasync.MemoryTier(), datasync.MemoryTier()
    with quiet("bench", local=a) as ds:
        ds.repo("User").save_many(entity(i) for i in range(n))
    with quiet("bench", local=a, cloud=b) as ds:
        t = time.perf_counter()
        stats = ds.sync_now()
        secs = time.perf_counter() - t
    # Partitions byte for byte; the metadata documents differ only in their own timestamps.
    parts = [k for k in a.keys() if not k.startswith("!")]
    verified = parts == [k for k in b.keys() if not k.startswith("!")] and all(a.read(k) == b.read(k) for k in parts)
    verified = verified and len(parts) > 0 and not stats.errors
    return {"seconds": secs, "ops": n, "verified": verified, "extra": {"partitions_copied": stats.keys_copied}}


def w5(n: int, change_sets: bool = False) -> dict:
    with quiet("bench") as ds:
        users = ds.repo("User")
        ids = users.save_many(entity(i) for i in range(n))
        watched = min(1000, n)
        lock = threading.Lock()
        last_seen: dict = {}
        calls = {"single": 0, "list": 0}
        final_list: list = []

        def single(e):
            with lock:
                calls["single"] += 1
                if e is not None:
                    last_seen[e["id"]] = e["score"]

        def collection(entities):
            with lock:
                calls["list"] += 1
                final_list[:] = entities

        copy: list = []

        def changes(c):
            with lock:
                calls["list"] += 1
                c.apply(copy)

        subs = [users.observe(ids[i], single) for i in range(watched)]
        subs.append(users.observe_changes(changes) if change_sets else users.observe_all(collection))
        ds.drain_events()
        calls["single"] = calls["list"] = 0
        updates, targets = 10_000, min(2000, n)
        t = time.perf_counter()
        for u in range(updates):
            i = u % targets
            users.save({"id": ids[i], "name": f"User {i}", "score": float(u)})
        ds.drain_events()
        secs = time.perf_counter() - t
        expected = {ids[i]: float(updates - targets + i) for i in range(targets)}
        verified = all(last_seen.get(ids[i]) == expected[ids[i]] for i in range(watched))
        if change_sets:
            final_list = copy
        finals = {e["id"]: e["score"] for e in final_list}
        verified = verified and len(final_list) == n and all(finals[k] == v for k, v in expected.items())
        for s in subs:
            s.unsubscribe()
    return {
        "seconds": secs,
        "ops": updates,
        "verified": verified,
        "extra": {"single_callbacks": calls["single"], "collection_callbacks": calls["list"]},
    }


def w5_changes(n: int) -> dict:
    """W5 with the collection observer taking change sets (`observe_changes`)."""
    return w5(n, change_sets=True)


class CountingCloud(datasync.Persistence):
    """A dict cloud that counts the bytes stored into it and loaded from it."""

    def __init__(self) -> None:
        self.blobs: dict = {}
        self.stored = 0
        self.loaded = 0

    def load(self, key):
        data = self.blobs.get(key)
        self.loaded += len(data or b"")
        return data

    def store(self, key, data):
        self.stored += len(data)
        self.blobs[key] = data

    def clear(self, key):
        self.blobs.pop(key, None)

    def keys(self):
        return sorted(self.blobs)


def w7(n: int) -> dict:
    """One edit across two devices sharing a byte-counting cloud, 20 rounds: A edits
    and syncs (bytes up), B syncs and reads it (bytes down)."""
    cloud = CountingCloud()
    rounds = 20
    with quiet("bench", local=datasync.MemoryTier(), cloud=cloud) as a, quiet(
        "bench", local=datasync.MemoryTier(), cloud=cloud
    ) as b:
        ids = a.repo("User").save_many(entity(i) for i in range(n))
        a.sync_now()
        b.sync_now()
        up = down = 0
        latency = 0.0
        verified = True
        for r in range(rounds):
            s0 = cloud.stored
            t = time.perf_counter()
            a.repo("User").save({"id": ids[r], "name": f"edit {r}"})
            a.sync_now()
            up += cloud.stored - s0
            l0 = cloud.loaded
            b.sync_now()
            got = b.repo("User").get(ids[r])
            latency += time.perf_counter() - t
            down += cloud.loaded - l0
            verified = verified and got is not None and got["name"] == f"edit {r}"
    return {
        "seconds": latency / rounds,
        "ops": 1,
        "verified": verified,
        "extra": {"bytes_up_per_edit": up / rounds, "bytes_down_per_edit": down / rounds},
    }


WORKLOADS = {
    "W1": w1,
    "W1many": w1_many,
    "W2": w2,
    "W5": w5,
    "W5changes": w5_changes,
    "W7": w7,
    "saveparts": save_parts,
}


def child(workload: str, n: int) -> None:
    result = WORKLOADS[workload](n)
    secs = result["seconds"]
    print(json.dumps({
        "workload": workload,
        "n": n,
        "driver": "python",
        "seconds": secs,
        "ops_per_s": result["ops"] / secs if secs else 0.0,
        "peak_rss_mb": peak_rss_mb(),
        "verified": result["verified"],
        "extra": result["extra"],
    }))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="entity counts (default 10000 and 100000)")
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS), help="default: all")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = args.n or [10_000, 100_000]
    workloads = args.workload or sorted(WORKLOADS)
    if args.child:
        child(workloads[0], sizes[0])
        return 0
    ok = True
    for n in sizes:
        for w in workloads:
            runs = []
            for _ in range(max(1, args.runs)):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", "--workload", w, "--n", str(n)],
                    capture_output=True, text=True, check=False,
                )
                if out.returncode != 0:
                    print(f"{w} n={n} failed: {out.stderr.strip()}", file=sys.stderr)
                    return 1
                runs.append(json.loads(out.stdout))
            runs.sort(key=lambda r: r["seconds"])
            m = runs[len(runs) // 2]
            m["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
            m["verified"] = all(r["verified"] for r in runs)
            m["extra"]["all_seconds"] = [r["seconds"] for r in runs]
            ok &= m["verified"]
            print(json.dumps(m), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
