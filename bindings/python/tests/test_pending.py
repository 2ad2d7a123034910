"""Is it synced? Pending writes, waiting for the cloud, and pending_cloud."""

import threading
import time

import pytest

import datasync
from conftest import device, holds_partition


def manual(cloud):
    """A local memory tier and ``cloud``; the store syncs only when flushed, and
    nothing syncs at open (that sync could race the test's first save)."""
    return device(cloud, store_sync_delay=3600, sync_on_open=False)


def ids(writes):
    return [w.id for w in writes]


def test_a_save_is_pending_locally_then_for_the_cloud_then_not_at_all(cloud):
    with manual(cloud) as ds:
        uid = ds.repo("User").save({"name": "Ada"})
        pending = ds.pending_writes()
        assert isinstance(pending, datasync.PendingWrites)
        assert ids(pending.local) == [uid] and pending.cloud == []
        write = pending.local[0]
        assert isinstance(write, datasync.PendingWrite)
        assert write.name == "User" and write.key.startswith("app.User")

        ds.flush()
        pending = ds.pending_writes()
        assert pending.local == [] and ids(pending.cloud) == [uid]
        assert ds.status.pending_cloud == 1

        ds.sync_now()
        assert ds.pending_writes() == datasync.PendingWrites(local=[], cloud=[])
        assert ds.status.pending_cloud == 0
        assert ds.wait_in_cloud("User", uid, 0) is True


def test_a_delete_is_pending_too(cloud):
    with manual(cloud) as ds:
        users = ds.repo("User")
        uid = users.save({"name": "Ada"})
        ds.sync_now()
        users.delete(uid)
        assert ids(ds.pending_writes().local) == [uid]


def test_wait_in_cloud_returns_once_another_thread_syncs(cloud):
    with manual(cloud) as ds:
        uid = ds.repo("User").save({"name": "Ada"})
        syncing = threading.Thread(target=lambda: (time.sleep(0.05), ds.sync_now()))
        syncing.start()
        try:
            assert ds.wait_in_cloud("User", uid, 20) is True
        finally:
            syncing.join()
        assert holds_partition(cloud.blobs, "app.User")
        assert ds.wait_all_in_cloud(0) is True


def test_wait_in_cloud_times_out_while_the_cloud_is_offline(cloud):
    with manual(cloud) as ds:
        uid = ds.repo("User").save({"name": "Ada"})
        cloud.failing = True
        assert ds.sync_now().offline
        started = time.monotonic()
        assert ds.wait_in_cloud("User", uid, 0.1) is False
        assert time.monotonic() - started >= 0.09
        assert ds.wait_all_in_cloud(0.01) is False
        assert ids(ds.pending_writes().cloud) == [uid]
        cloud.failing = False
        ds.sync_now()
        assert ds.wait_in_cloud("User", uid, 0) is True


def test_a_bad_timeout_is_refused(cloud):
    with manual(cloud) as ds:
        uid = ds.repo("User").save({})
        for bad in (-1, float("nan"), "1", True):
            with pytest.raises(ValueError):
                ds.wait_in_cloud("User", uid, bad)
        ds.sync_now()
        assert ds.wait_all_in_cloud(float("inf")) is True


def test_without_a_cloud_waiting_is_a_configuration_error():
    with datasync.open("app", local=datasync.MemoryTier()) as ds:
        uid = ds.repo("User").save({})
        assert ds.pending_writes().cloud == []
        with pytest.raises(datasync.InvalidConfig):
            ds.wait_in_cloud("User", uid, 0)


def test_waiting_inside_an_observer_raises_would_deadlock(cloud):
    with manual(cloud) as ds:
        uid = ds.repo("User").save({})
        seen = []
        ds.observe_status(lambda _s: seen.append(_raised(lambda: ds.wait_in_cloud("User", uid, 30))))
        ds.drain_events()
        assert seen and seen[0] is datasync.WouldDeadlock


def test_status_observers_see_pending_cloud_change(cloud):
    with manual(cloud) as ds:
        seen = []
        ds.observe_status(lambda s: seen.append(s.pending_cloud))
        ds.repo("User").save({})
        ds.flush()
        ds.sync_now()
        ds.drain_events()
        assert seen[0] == 0 and 1 in seen and seen[-1] == 0, seen


def _raised(call):
    try:
        call()
    except datasync.DataSyncError as e:
        return type(e)
    return None
