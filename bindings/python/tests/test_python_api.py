"""The Python layer itself: records, errors, instants, numbers, observers, names."""

import json
import math
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest

import datasync


def test_records_show_their_fields(ds):
    ds.repo("User").save({"name": "a"})
    status = ds.status
    assert repr(status).startswith("Status(online=True, last_sync=")
    for field in ("pending_keys=", "failures=0", "closed=False"):
        assert field in repr(status)
    stats = ds.sync_now()
    assert repr(stats).startswith("SyncStats(keys_compared=")
    assert "offline=False" in repr(stats) and "errors=[]" in repr(stats)
    query = datasync.Query(where={"team": "core"}, sort=["name"], limit=2)
    assert repr(query) == "Query(where={'team': 'core'}, sort=('name',), limit=2, offset=None, ids=None, filter=None)"


def test_errors_are_a_hierarchy_of_builtin_kinds(ds):
    users = ds.repo("User")
    cases = [
        (lambda: users.get("nope"), datasync.InvalidId, ValueError),
        (lambda: users.save([1]), datasync.InvalidEntity, ValueError),
        (lambda: users.save({"name": "\udcff"}), datasync.InvalidJson, ValueError),
        (lambda: ds.repo("a.b"), datasync.InvalidName, ValueError),
        (lambda: datasync.open(""), datasync.InvalidConfig, ValueError),
        (lambda: users.query(sort=[("name", "up")]), datasync.InvalidQuery, ValueError),
    ]
    for call, kind, builtin in cases:
        with pytest.raises(kind) as info:
            call()
        e = info.value
        assert isinstance(e, datasync.DataSyncError) and isinstance(e, builtin)
        assert e.reason and str(e)[0].islower() and " " in str(e), f"a sentence: {e}"
    with pytest.raises(datasync.InvalidId) as info:
        users.get("nope")
    assert info.value.id == "nope" and str(info.value).startswith('invalid id "nope": ')
    assert datasync.Error is datasync.DataSyncError and datasync.Error.InvalidId is datasync.InvalidId
    assert issubclass(datasync.Forbidden, PermissionError)
    assert issubclass(datasync.Adapter, OSError) and issubclass(datasync.Corrupt, OSError)
    for kind in (datasync.WouldDeadlock, datasync.Callback, datasync.Internal):
        assert issubclass(kind, RuntimeError)


def test_closed_is_a_runtime_error_with_a_message():
    instance = datasync.open("app")
    users = instance.repo("User")
    instance.close()
    with pytest.raises(RuntimeError) as info:
        users.save({"x": 1})
    assert isinstance(info.value, datasync.Closed)
    assert str(info.value) == "the instance is closed"


def test_adapter_errors_are_os_errors_naming_tier_and_key():
    from conftest import DictPersistence

    local = DictPersistence()
    with datasync.open("app", local=local) as instance:
        instance.repo("User").save({"n": 1})
        local.failing = True
        with pytest.raises(OSError) as info:
            instance.flush()
        local.failing = False
    e = info.value
    assert isinstance(e, datasync.Adapter) and e.tier == "local" and e.key
    assert str(e).startswith("local adapter failed on key ") and "network is down" in str(e)


def test_datetimes_are_stored_as_instants_and_parse_back(ds):
    notes = ds.repo("Note")
    created = datetime(2025, 3, 4, 5, 6, 7, 891234, tzinfo=timezone(timedelta(hours=2)))
    uid = notes.save({"createdAt": created, "due": datetime(2030, 1, 1, tzinfo=timezone.utc)})
    note = notes.get(uid)
    assert note["createdAt"] == "2025-03-04T03:06:07.891Z"
    assert note["due"] == "2030-01-01T00:00:00.000Z"
    back = datasync.parse_instant(note["createdAt"])
    assert back == datetime(2025, 3, 4, 3, 6, 7, 891000, tzinfo=timezone.utc) and back.tzinfo is timezone.utc
    assert datasync.format_instant(back) == note["createdAt"]
    updated = datasync.parse_instant(note["updatedAt"])
    assert abs(updated - datetime.now(timezone.utc)) < timedelta(minutes=1)
    with pytest.raises(ValueError):
        datasync.parse_instant("2025-03-04 03:06:07")


def test_naive_datetimes_are_refused(ds):
    notes = ds.repo("Note")
    with pytest.raises(datasync.InvalidJson) as info:
        notes.save({"createdAt": datetime(2025, 1, 1)})
    assert "time zone" in str(info.value) and "createdAt" in str(info.value)
    assert notes.all() == []


def test_the_json_in_use_is_orjson_unless_it_is_missing():
    without = bool(os.environ.get("DATASYNC_TEST_NO_ORJSON"))
    assert (datasync._orjson is None) == without


def test_the_package_works_alike_without_orjson():
    """Without orjson the package falls back to the json module: every other test of
    the suite, run again in a process where orjson cannot be imported."""
    if os.environ.get("DATASYNC_TEST_NO_ORJSON"):
        pytest.skip("this run is the one without orjson")
    code = "import sys; sys.modules['orjson'] = None; import pytest; sys.exit(pytest.main(sys.argv[1:]))"
    env = dict(os.environ, DATASYNC_TEST_NO_ORJSON="1")
    run = subprocess.run(
        [sys.executable, "-c", code, "-q", "-p", "no:cacheprovider", os.path.dirname(os.path.abspath(__file__))],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_integers_past_64_bits_are_refused_never_rounded(ds):
    nums = ds.repo("Num")
    edges = [2**64 - 1, -(2**63), 2**63, 0, -1]
    uid = nums.save({"edges": edges})
    assert nums.get(uid)["edges"] == edges, "the 64-bit edges are kept exactly"
    for bad in (2**64, -(2**63) - 1, 10**30):
        with pytest.raises(datasync.InvalidJson) as info:
            nums.save({"deep": [{"n": bad}]})
        assert str(bad) in str(info.value) and "['deep'][0]['n']" in str(info.value)
    assert nums.save({"text": "1" * 40}), "long digit runs in strings are fine"
    assert len(nums.all()) == 2


def test_nan_and_infinity_are_refused(ds):
    nums = ds.repo("Num")
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(datasync.InvalidJson) as info:
            nums.save({"x": bad})
        assert "JSON cannot hold" in str(info.value)
        with pytest.raises(datasync.InvalidQuery):
            nums.query(where={"x": bad})
    assert nums.all() == []


def test_negative_limit_and_offset_are_value_errors(ds):
    users = ds.repo("User")
    for kwargs in ({"limit": -1}, {"offset": -1}):
        with pytest.raises(ValueError):
            users.query(**kwargs)
        with pytest.raises(datasync.InvalidQuery):
            users.observe_all(lambda rows: None, **kwargs)
    with pytest.raises(TypeError):
        users.query(limit="2")
    with pytest.raises(datasync.InvalidQuery):
        datasync.Query(limit=-1)


def test_non_callable_observer_is_a_type_error_at_subscribe(ds):
    users = ds.repo("User")
    uid = users.save({"n": 1})
    for subscribe in (
        lambda fn: users.observe(uid, fn),
        lambda fn: users.observe_all(fn),
        lambda fn: ds.observe_status(fn),
    ):
        with pytest.raises(TypeError):
            subscribe("not callable")
        with pytest.raises(TypeError):
            subscribe(None)


def test_observers_run_on_the_named_dispatcher_thread(ds):
    users = ds.repo("User")
    names = []

    def observer(_):
        names.append(threading.current_thread().name)
        comm = f"/proc/self/task/{threading.get_native_id()}/comm"
        if os.path.exists(comm):
            with os.fdopen(os.open(comm, os.O_RDONLY)) as f:
                names.append(f.read().strip())

    sub = users.observe_all(observer)
    users.save({"n": 1})
    ds.drain_events()
    sub.unsubscribe()
    assert names and names[0] == datasync.DISPATCHER_THREAD == "datasync-dispatcher"
    if len(names) > 1:
        # Linux keeps 15 bytes of a thread's name.
        assert names[1].startswith("datasync-dispat"), names


def test_status_observer_gets_current_then_each_sync():
    from conftest import DictPersistence, device

    cloud = DictPersistence()
    with device(cloud, retry_base=3600, retry_max=3600, sync_on_open=False) as instance:
        seen = []
        sub = instance.observe_status(seen.append)
        instance.drain_events()
        assert len(seen) == 1 and isinstance(seen[0], datasync.Status) and not seen[0].closed
        instance.repo("User").save({"n": 1})
        cloud.failing = True
        instance.sync_now()
        instance.drain_events()
        assert not seen[-1].online and "network is down" in seen[-1].last_error
        cloud.failing = False
        instance.sync_now()
        instance.drain_events()
        assert seen[-1].online and seen[-1].last_error is None and seen[-1].pending_keys == 0
        count = len(seen)
        sub.unsubscribe()
        instance.sync_now()
        instance.drain_events()
        assert len(seen) == count, "no call after unsubscribe"


def test_star_import_keeps_the_builtin_open():
    namespace = {}
    exec("from datasync import *", namespace)
    assert "open" not in namespace
    assert namespace["DataSyncError"] is datasync.DataSyncError and namespace["Query"] is datasync.Query
    assert set(datasync.__all__) <= set(dir(datasync))


def test_defaults_come_from_the_library():
    defaults = datasync.default_options()
    assert set(defaults) == {"store_sync_delay", "cloud_sync_interval", "retry_base", "retry_max", "max_clock_skew", "sync_on_open", "format", "partition_bound"}
    assert all(v > 0 for k, v in defaults.items() if k != "sync_on_open")
    assert defaults["format"] == 2
    assert defaults["partition_bound"] == 1000
    assert defaults["retry_base"] <= defaults["retry_max"]
    # Every default is a valid option as it is.
    with datasync.open("app", **defaults) as instance:
        assert instance.repo("User").all() == []
    with pytest.raises(datasync.InvalidConfig):
        datasync.open("app", retry_base=-1)


def test_partitions_are_bounded_unless_told_otherwise():
    with datasync.open("app", partition_bound=10) as bounded, datasync.open("app", partition_bound=0) as whole:
        for instance in (bounded, whole):
            instance.repo("User").save_many([{"n": i} for i in range(100)])
        split = [u["id"] for u in bounded.repo("User").all()]
        assert len(split) == 100 and any(".~" in i for i in split)
        assert sorted(u["n"] for u in bounded.repo("User").query(sort=["n"])) == list(range(100))
        assert [u["n"] for u in bounded.repo("User").query(sort=["n"])] == [u["n"] for u in whole.repo("User").query(sort=["n"])]
        assert not any(".~" in u["id"] for u in whole.repo("User").all())
        assert bounded.repo("User").get(split[-1])["id"] == split[-1]
    with pytest.raises(datasync.InvalidConfig):
        datasync.open("app", partition_bound=-1)


def test_custom_strategy_without_separator_or_length_gets_the_library_defaults(ds):
    class ByName(datasync.KeyStrategy):
        def logical_key(self, entity_name, entity):
            return entity_name

        def candidate_keys(self, prefix, entity_name, filter):
            return [f"{prefix}.{entity_name}"]

    builtin_id = ds.repo("User").save({})
    with datasync.open("app", strategy=ByName()) as custom:
        custom_id = custom.repo("User").save({"n": 1})
        assert [p["n"] for p in custom.repo("User").all()] == [1]
    assert custom_id.startswith("User.")
    assert len(custom_id) == len(builtin_id), "the same id shape as the built-in strategies"
    with pytest.raises(datasync.InvalidConfig):
        datasync.open("app", strategy=type("Bad", (ByName,), {"id_length": -3})())
