import threading
import time

import pytest

import datasync
from conftest import DictPersistence, device, holds_partition


def test_raising_cloud_means_offline_not_a_crash(cloud):
    with device(cloud, retry_base=3600, retry_max=3600) as instance:
        users = instance.repo("User")
        uid = users.save({"name": "offline"})
        cloud.failing = True
        stats = instance.sync_now()
        assert stats.offline
        assert any("network is down" in e for e in stats.errors)
        status = instance.status
        assert not status.online and status.failures >= 1 and "network is down" in status.last_error
        # Still fully usable offline.
        assert users.get(uid)["name"] == "offline"
        users.save({"name": "more"})
        instance.flush()
        cloud.failing = False
        stats = instance.sync_now()
        assert not stats.offline
        assert instance.status.online
        assert holds_partition(cloud.blobs, "app.User")


def test_raising_local_adapter_is_an_adapter_error():
    local = DictPersistence()
    with datasync.open("app", local=local) as instance:
        users = instance.repo("User")
        users.save({"name": "a"})
        local.failing = True
        with pytest.raises(datasync.Error.Adapter) as info:
            instance.flush()
        assert info.value.tier == "local" and "network is down" in info.value.reason
        local.failing = False
        instance.flush()
        assert holds_partition(local.blobs, "app.User")


def test_adapter_never_called_from_two_threads_at_once():
    active = []
    overlaps = []
    calls = []

    class Watching(DictPersistence):
        def _check(self):
            if active:
                overlaps.append(threading.current_thread().name)
            active.append(1)
            calls.append(1)
            try:
                time.sleep(0.0005)  # widen the window an overlap would need
                super()._check()
            finally:
                active.pop()

    watched = Watching()
    errors = []

    def work(instance, w):
        try:
            for i in range(8):
                instance.repo("N").save({"w": w, "i": i})
                instance.sync_now()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    # Three instances share one cloud adapter; two threads drive each.
    with device(watched) as a, device(watched) as b, device(watched) as c:
        ts = [threading.Thread(target=work, args=(x, w)) for w, x in enumerate((a, a, b, b, c, c))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errors:
            raise errors[0]
        # Syncs that raced into the one cloud (a plain adapter, no conditional
        # write): one more sync of each device brings every device every write.
        for x in (a, b, c):
            x.sync_now()
        for x in (a, b, c):
            assert len(x.repo("N").all()) == 48
    assert len(calls) > 50
    assert overlaps == []


def test_corrupt_cloud_blob_is_reported_with_its_key():
    cloud = datasync.MemoryTier()
    with datasync.open("app", local=datasync.MemoryTier(), cloud=cloud, cloud_sync_interval=3600) as a:
        a.repo("User").save({"name": "a"})
        a.sync_now()
    # Format 2 (the default): the partition's piece is what holds its entities.
    piece = next(k for k in cloud.keys() if k.startswith("!piece:app.User:"))
    cloud.overwrite(piece, b"{not json")
    with datasync.open("app", local=datasync.MemoryTier(), cloud=cloud, cloud_sync_interval=3600) as b:
        stats = b.sync_now()
        assert any("app.User" in e for e in stats.errors)
        # The rest keeps working.
        b.repo("Other").save({"x": 1})
        assert len(b.repo("Other").all()) == 1


def test_logger_receives_records(cloud):
    records = []
    handle = datasync.add_logger(lambda level, target, text: records.append((level, target, text)), level="warn")
    try:
        with device(cloud, retry_base=3600, retry_max=3600) as instance:
            instance.repo("User").save({"name": "a"})
            cloud.failing = True
            instance.sync_now()
    finally:
        handle.remove()
    assert any(level == "warn" and target.startswith("datasync") and "network is down" in text for level, target, text in records)
    count = len(records)
    with device(cloud) as instance:
        instance.sync_now()
    assert len(records) == count, "a removed logger gets nothing"
