"""Change-set observers: applying every change set to a copy gives the query's
result, and one update costs one entity across the binding."""

import random
import threading

import datasync
from conftest import device


class Copy:
    """A list kept by applying change sets; also what crossed the binding."""

    def __init__(self) -> None:
        self.rows = []
        self.by_id = []
        self.emissions = []
        self._lock = threading.Lock()

    def __call__(self, changes: datasync.Changes) -> None:
        with self._lock:
            changes.apply(self.rows)
            apply_by_id(changes, self.by_id)
            assert len(self.rows) == changes.count
            assert self.by_id == self.rows, "applying by id and by position differ"
            self.emissions.append(changes)


def apply_by_id(changes: datasync.Changes, rows: list) -> None:
    """The rule by id: remove what `removed` and the upserts name, insert every upsert."""
    gone = set(changes.removed) | {e["id"] for _, e in changes.upserted}
    rows[:] = [e for e in rows if e["id"] not in gone]
    for position, entity in changes.upserted:
        rows.insert(position, entity)


def test_first_emission_is_the_whole_list_then_only_changes(ds):
    users = ds.repo("User")
    ids = users.save_many([{"name": f"u{i}"} for i in range(5)])
    copy = Copy()
    users.observe_changes(copy, sort=["name"])
    ds.drain_events()
    first = copy.emissions[0]
    assert first.initial and first.count == 5 and first.removed == []
    assert [pos for pos, _ in first.upserted] == list(range(5))
    assert [e["name"] for e in first.list()] == [f"u{i}" for i in range(5)]

    users.save({"id": ids[2], "name": "u2 again"})
    users.delete(ids[0])
    ds.drain_events()
    later = copy.emissions[1:]
    assert later and not any(c.initial for c in later)
    assert copy.rows == users.query(sort=["name"])
    assert copy.emissions[-1].list() == copy.rows
    assert copy.emissions[-1].list() is copy.emissions[-1].list(), "parsed once"


def test_random_bursts_from_two_devices_match_a_fresh_query(cloud):
    rng = random.Random(14)
    queries = [
        {},
        {"sort": [("rank", "desc"), "name"]},
        {"where": {"team": "core"}, "sort": ["rank"], "limit": 7},
        {"sort": ["name"], "limit": 5, "offset": 3},
    ]
    with device(cloud) as here, device(cloud) as there:
        mine, theirs = here.repo("Task"), there.repo("Task")
        copies = [Copy() for _ in queries]
        for copy, q in zip(copies, queries):
            mine.observe_changes(copy, **q)
        known = []
        for burst in range(25):
            for _ in range(rng.randint(1, 12)):
                who = mine if rng.random() < 0.7 else theirs
                roll = rng.random()
                entity = {"name": f"n{rng.randint(0, 40)}", "rank": rng.randint(0, 9), "team": rng.choice(["core", "web"])}
                if roll < 0.5 or not known:
                    known.append(who.save(entity))
                elif roll < 0.8:
                    who.save({"id": rng.choice(known), **entity})
                else:
                    who.delete(rng.choice(known))
            if rng.random() < 0.5:
                there.sync_now()
                here.sync_now()
            here.drain_events()
            for copy, q in zip(copies, queries):
                assert copy.rows == mine.query(**q), f"burst {burst}, query {q}"
        assert all(len(c.emissions) > 1 for c in copies)


def test_one_update_in_100k_carries_one_entity(ds):
    items = ds.repo("Item")
    ids = items.save_many([{"n": i, "label": f"item {i}"} for i in range(100_000)])
    sizes = []
    counts = []

    class Counting(datasync._native.ChangeObserver):
        # The door's callback itself: measures the JSON text handed across.
        def on_changes(self, changes_json, changes):
            sizes.append(len(changes_json.encode()))
            counts.append(changes.count())

    sub = items._native.observe_changes(datasync.Query()._native(), Counting())
    ds.drain_events()
    assert counts == [100_000] and sizes[0] > 1_000_000
    items.save({"id": ids[50_000], "n": -1, "label": "changed"})
    ds.drain_events()
    assert counts[1:] == [100_000]
    assert sizes[1] < 1024, f"one update handed {sizes[1]} bytes to the callback"
    sub.unsubscribe()

    seen = []
    with items.observe_changes(seen.append):
        ds.drain_events()
        items.save({"id": ids[7], "n": -2})
        ds.drain_events()
    assert len(seen[-1].upserted) == 1 and seen[-1].removed == [] and seen[-1].count == 100_000


def test_batch_writes_cross_the_binding_once(ds, monkeypatch):
    notes = ds.repo("Note")
    calls = []

    def counted(name, fn):
        def call(*args):
            calls.append(name)
            return fn(*args)

        return call

    # save_many is one direct call (datasync_direct_save_many), delete_many one
    # generated method.
    monkeypatch.setattr(datasync, "_direct_save_many", counted("direct_save_many", datasync._direct_save_many))

    class Counting:
        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            calls.append(name)
            return getattr(self._inner, name)

    notes._native = Counting(notes._native)
    ids = notes.save_many({"n": i} for i in range(1000))
    assert notes.delete_many(ids) == 1000
    assert calls == ["direct_save_many", "delete_many"]
