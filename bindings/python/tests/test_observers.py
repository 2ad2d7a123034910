import threading

import pytest

import datasync


def test_observe_gets_current_then_changes_then_none(ds):
    users = ds.repo("User")
    uid = users.save({"name": "Alice"})
    seen = []
    threads = set()

    def on_change(user):
        threads.add(threading.current_thread().ident)
        seen.append(None if user is None else user["name"])

    sub = users.observe(uid, on_change)
    users.save({"id": uid, "name": "Alice 2"})
    users.delete(uid)
    ds.drain_events()
    assert seen == ["Alice", "Alice 2", None]
    assert threading.get_ident() not in threads, "callbacks arrive on the dispatcher thread"
    assert len(threads) == 1
    sub.unsubscribe()


def test_observe_absent_entity_starts_with_none(ds):
    seen = []
    ds.repo("User").observe("User.nothinghere12345", seen.append)
    ds.drain_events()
    assert seen == [None]


def test_observe_all_sends_full_list_and_final_state(ds):
    users = ds.repo("User")
    users.save({"name": "Zed", "team": "core"})
    lists = []
    users.observe_all(lambda rows: lists.append([r["name"] for r in rows]), where={"team": "core"}, sort=["name"])
    ds.drain_events()
    assert lists == [["Zed"]]
    for i in range(20):
        users.save({"name": f"u{i:02}", "team": "core" if i % 2 else "web"})
    ds.drain_events()
    assert lists[0] == ["Zed"]
    assert lists[-1] == ["Zed"] + [f"u{i:02}" for i in range(20) if i % 2]
    assert len(lists) <= 21


def test_unsubscribe_stops_calls_and_is_idempotent(ds):
    users = ds.repo("User")
    uid = users.save({"name": "a"})
    seen = []
    sub = users.observe(uid, seen.append)
    ds.drain_events()
    assert sub.active
    sub.unsubscribe()
    sub.unsubscribe()
    assert not sub.active
    users.save({"id": uid, "name": "b"})
    ds.drain_events()
    assert len(seen) == 1


def test_subscription_as_context_manager(ds):
    users = ds.repo("User")
    seen = []
    with users.observe_all(seen.append):
        users.save({"name": "a"})
        ds.drain_events()
    users.save({"name": "b"})
    ds.drain_events()
    assert [len(rows) for rows in seen][-1] == 1


def test_reentrant_observer_reads_and_writes(ds):
    users = ds.repo("User")
    audit = ds.repo("Audit")
    uid = users.save({"name": "a"})
    reads = []

    def on_change(user):
        if user is None:
            return
        reads.append(users.get(user["id"])["name"])
        audit.save({"saw": user["name"]})

    users.observe(uid, on_change)
    ds.drain_events()
    users.save({"id": uid, "name": "b"})
    ds.drain_events()
    assert reads == ["a", "b"]
    assert sorted(a["saw"] for a in audit.all()) == ["a", "b"]


def test_blocking_calls_from_observer_refuse(ds):
    users = ds.repo("User")
    errors = []

    def on_change(rows):
        ds.flush()  # waits on the sync worker, not on this thread: allowed
        try:
            ds.close()
        except datasync.Error.WouldDeadlock as e:
            errors.append(e.call)

    users.observe_all(on_change)
    ds.drain_events()
    assert errors == ["close"]
    assert not ds.closed


def test_failing_observer_does_not_stop_the_dispatcher(ds, caplog):
    users = ds.repo("User")
    good = []

    def bad(rows):
        raise RuntimeError("observer bug")

    users.observe_all(bad)
    users.observe_all(lambda rows: good.append(len(rows)))
    users.save({"name": "a"})
    ds.drain_events()
    assert good[-1] == 1
    assert any("observer bug" in r.exc_text or "observer bug" in str(r.exc_info) for r in caplog.records if r.exc_info)


def test_entity_observers_of_a_burst_cross_the_binding_in_few_calls(ds):
    users = ds.repo("User")
    ids = users.save_many([{"name": f"u{i}", "n": 0} for i in range(200)])
    seen = {uid: [] for uid in ids}
    subs = [users.observe(uid, lambda u, uid=uid: seen[uid].append(u and u["n"])) for uid in ids]
    ds.drain_events()
    batch = ds._entity_batch()
    crossings = []
    handed = batch.on_entities

    def counted(batch_json):
        crossings.append(len(batch_json))
        handed(batch_json)

    batch.on_entities = counted
    for n in range(1, 6):
        users.save_many([{"id": uid, "n": n} for uid in ids])
    ds.drain_events()
    # Every observer saw its value, then each change, in order.
    assert all(seen[uid] == [0, 1, 2, 3, 4, 5] for uid in ids)
    # 1,000 deliveries, a handful of calls across the binding (one per round).
    assert 1 <= len(crossings) <= 10, crossings
    for s in subs:
        s.unsubscribe()


def test_an_observer_unsubscribed_mid_round_is_not_called_again(ds):
    users = ds.repo("User")
    uid = users.save({"name": "a"})
    calls = {"first": 0, "second": 0}
    second = None

    def first(user):
        calls["first"] += 1
        if calls["first"] == 2:
            # Inside the dispatcher: the other observer's delivery of this very
            # change is already gathered in the round; it must not run.
            second.unsubscribe()

    def on_second(user):
        calls["second"] += 1

    users.observe(uid, first)
    second = users.observe(uid, on_second)
    ds.drain_events()
    assert calls == {"first": 1, "second": 1}
    users.save({"id": uid, "name": "b"})
    users.save({"id": uid, "name": "c"})
    ds.drain_events()
    assert calls == {"first": 3, "second": 1}
    assert not second.active


def test_an_observer_unsubscribed_from_another_thread_stops_at_once(ds):
    users = ds.repo("User")
    uid = users.save({"name": "a", "n": 0})
    running = threading.Event()
    release = threading.Event()
    after = []
    stopped = threading.Event()

    def on_change(user):
        if stopped.is_set():
            after.append(user)
        if user and user["n"] == 1:
            running.set()
            release.wait(5)

    sub = users.observe(uid, on_change)
    users.save({"id": uid, "n": 1})
    assert running.wait(5)
    users.save({"id": uid, "n": 2})
    done = threading.Thread(target=lambda: (sub.unsubscribe(), stopped.set()))
    done.start()
    release.set()
    done.join(5)
    ds.drain_events()
    assert stopped.is_set()
    assert after == []
