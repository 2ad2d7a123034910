"""Shared fixtures: a dict-backed Python adapter with fault injection."""

import json
import threading
from typing import Dict, List, Optional

import pytest

import datasync


class DictPersistence(datasync.Persistence):
    """A Persistence over a dict; `failing = True` makes every call raise, and
    `calls` records which thread each call came from."""

    def __init__(self) -> None:
        self.blobs: Dict[str, bytes] = {}
        self.failing = False
        self.threads: List[str] = []
        self._lock = threading.Lock()

    def _check(self) -> None:
        self.threads.append(threading.current_thread().name)
        if self.failing:
            raise ConnectionError("the network is down")

    def load(self, key: str) -> Optional[bytes]:
        self._check()
        with self._lock:
            return self.blobs.get(key)

    def store(self, key: str, data: bytes) -> None:
        self._check()
        assert isinstance(data, bytes)
        with self._lock:
            self.blobs[key] = data

    def clear(self, key: str) -> None:
        self._check()
        with self._lock:
            self.blobs.pop(key, None)

    def keys(self) -> Optional[List[str]]:
        self._check()
        with self._lock:
            return sorted(self.blobs)


@pytest.fixture
def ds():
    with datasync.open("app") as instance:
        yield instance


@pytest.fixture
def cloud():
    return DictPersistence()


def device(cloud, **kwargs):
    """An instance with a local memory tier and the shared cloud; no periodic sync."""
    return datasync.open("app", local=datasync.MemoryTier(), cloud=cloud, cloud_sync_interval=3600, **kwargs)


EPOCH = "2026-01-01T00:00:00.000Z"


def doc(uid, title, updated_at, version):
    """A Doc entity as a tier stores it, with explicit instants."""
    return {"id": uid, "createdAt": EPOCH, "updatedAt": updated_at, "version": version, "title": title}


def holds_partition(keys, key):
    """Whether a tier's keys hold partition `key`, in either format: format 1's
    document under the key, or format 2's index (the default)."""
    return key in keys or f"!index:{key}" in keys


def read_back(tier, name, uid):
    """Entity `uid` as tier `tier` holds it, read through a fresh instance (so in
    either format)."""
    with datasync.open("app", local=tier, sync_on_open=False) as instance:
        return instance.repo(name).get(uid)


def partition(name, *entities):
    """The canonical partition blob holding these entities of one name."""
    return json.dumps({name: {e["id"]: e for e in entities}}, sort_keys=True, separators=(",", ":")).encode()
