"""The parity scenario through the Python binding (the installed wheel): the same
steps as examples/parity.rs, printing the same lines, which tests/parity/run.sh
compares with tests/parity/expected.txt.

The instance has prefix ``app``, a host key strategy partitioning notes by their
``owner`` (this device may read and write only ``app.alice``), no local tier, and a
cloud that is a host byte map the scenario can switch offline. Every sync is one
the scenario asks for (timers and retries are an hour away).

The cloud is seeded with partitions in canonical form whose instants lie far in
the future (2100): the instance clock never adopts a stamp that far ahead, so an
edit of a seeded entity is stamped exactly at the entity's own ``updatedAt`` (with
its version + 1), and no printed line depends on the wall clock.
"""

import json
import threading
from typing import Dict, List, Optional

import datasync

BASE = "2100-01-01T00:00:00.000Z"
LATER = "2100-01-01T00:00:01.000Z"
EARLIER = "2099-12-31T23:59:59.000Z"


class Cloud(datasync.Persistence):
    """A byte map that can be switched offline (every call then raises)."""

    def __init__(self) -> None:
        self.blobs: Dict[str, bytes] = {}
        self.offline = False
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self.offline:
            raise ConnectionError("the network is down")

    def load(self, key: str) -> Optional[bytes]:
        self._check()
        with self._lock:
            return self.blobs.get(key)

    def store(self, key: str, data: bytes) -> None:
        self._check()
        with self._lock:
            self.blobs[key] = bytes(data)

    def clear(self, key: str) -> None:
        self._check()
        with self._lock:
            self.blobs.pop(key, None)

    def keys(self) -> Optional[List[str]]:
        self._check()
        with self._lock:
            return sorted(self.blobs)

    def seed(self, partitions: Dict[str, str]) -> None:
        """Replaces the cloud's content by these partitions, as another device's
        sync would leave it, without metadata (the library rebuilds it)."""
        with self._lock:
            for key in [k for k in self.blobs if k.startswith("!")]:
                del self.blobs[key]
            for key, text in partitions.items():
                self.blobs[key] = text.encode()

    def partition(self, key: str) -> dict:
        with self._lock:
            return json.loads(self.blobs[key])


class Owner(datasync.KeyStrategy):
    """Partitions notes by owner (``app.<owner>``); this device may use only ``app.alice``."""

    def logical_key(self, entity_name, entity):
        return entity.get("owner", "nobody")

    def candidate_keys(self, prefix, entity_name, filter):
        return [f"{prefix}.alice"]


def note(id: str, owner: str, title: str, at: str, version: int) -> str:
    """One note as a tier stores it (canonical: keys sorted, no whitespace)."""
    return (
        f'"{id}":{{"createdAt":"{BASE}","id":"{id}","owner":"{owner}","title":"{title}",'
        f'"updatedAt":"{at}","version":{version}}}'
    )


def partition(*notes: str) -> str:
    """A canonical partition holding these notes (given in id order)."""
    return '{"Note":{' + ",".join(notes) + "}}"


def outcome(call) -> str:
    """The error kind's name (the class of the error), or ``ok``."""
    try:
        call()
        return "ok"
    except datasync.DataSyncError as e:
        return type(e).__name__


def describe(entity: dict) -> str:
    return f"{entity['title']} v{entity['version']}"


def flag(value: bool) -> str:
    return "true" if value else "false"


def sync(ds) -> str:
    stats = ds.sync_now()
    return (
        f"sync offline={flag(stats.offline)} copied={stats.keys_copied} merged={stats.keys_merged} "
        f"refused={stats.keys_refused} conflicts={stats.conflicts}"
    )


def main() -> None:
    cloud = Cloud()
    cloud.seed({
        "app.alice": partition(
            note("alice.c1", "alice", "c1 base", BASE, 1),
            note("alice.c2", "alice", "c2 base", BASE, 1),
            note("alice.t1", "alice", "t1 base", BASE, 1),
            note("alice.t2", "alice", "t2 base", BASE, 4),
        ),
        "app.bob": partition(note("bob.n9", "bob", "bob's", BASE, 1)),
    })
    hour = 3600
    ds = datasync.open(
        "app",
        strategy=Owner(),
        cloud=cloud,
        store_sync_delay=hour,
        cloud_sync_interval=hour,
        retry_base=hour,
        retry_max=hour,
        sync_on_open=False,
        format=1,  # the scenario reads the cloud's partition documents back
    )
    notes = ds.repo("Note")

    def save(entity: dict) -> None:
        uid = notes.save(entity)
        print(f"save {uid} v{notes.get(uid)['version']}", flush=True)

    def delete(uid: str) -> None:
        print(f"delete {uid} existed={flag(notes.delete(uid))}", flush=True)

    # Saves with caller-supplied ids, and deletes.
    save({"id": "alice.n1", "owner": "alice", "title": "n1 first"})
    save({"id": "alice.n1", "owner": "alice", "title": "n1 second"})
    save({"id": "alice.n2", "owner": "alice", "title": "n2"})
    delete("alice.n2")
    gone = notes.get("alice.n2")
    print(f"get alice.n2 -> {'none' if gone is None else describe(gone)}")
    delete("alice.n2")
    # An id the strategy chooses: its partition, not its random part, is printed.
    fresh = notes.save({"owner": "alice", "title": "fresh"})
    logical, _, ident = fresh.rpartition(".")
    print(f"save new {logical}.<{len(ident)}> v{notes.get(fresh)['version']}")
    print(f"delete new existed={flag(notes.delete(fresh))}")

    # Local edits of the seeded notes.
    save({"id": "alice.c1", "owner": "alice", "title": "c1 local"})
    save({"id": "alice.c2", "owner": "alice", "title": "c2 local"})
    delete("alice.t1")
    save({"id": "alice.t2", "owner": "alice", "title": "t2 local"})

    # Meanwhile another device's edits reached the cloud: c1 newer, c2 older (with a
    # greater version), t1 edited at the instant of the local delete, t2 edited at
    # the instant of the local edit with a smaller version (and greater bytes).
    cloud.seed({
        "app.alice": partition(
            note("alice.c1", "alice", "c1 remote", LATER, 2),
            note("alice.c2", "alice", "c2 remote", EARLIER, 9),
            note("alice.t1", "alice", "t1 remote", BASE, 7),
            note("alice.t2", "alice", "t2 remote", BASE, 3),
        ),
    })
    print(sync(ds))

    def winner(uid: str, local: str, remote: str) -> str:
        entity = notes.get(uid)
        if entity is None:
            return "deleted"
        side = {local: "local", remote: "remote"}.get(entity.get("title"), "neither")
        return f"{side}: {describe(entity)}"

    print(f"conflict alice.c1 newer remote -> {winner('alice.c1', 'c1 local', 'c1 remote')}")
    print(f"conflict alice.c2 older remote -> {winner('alice.c2', 'c2 local', 'c2 remote')}")
    print(f"tie alice.t1 delete vs edit -> {winner('alice.t1', 't1 local', 't1 remote')}")
    print(f"tiebreak alice.t2 equal instant -> {winner('alice.t2', 't2 local', 't2 remote')}")
    # The merge reached the cloud too.
    stored = cloud.partition("app.alice")
    for uid in ["alice.c1", "alice.c2", "alice.n1", "alice.t1", "alice.t2"]:
        if uid in stored.get("Note", {}):
            line = describe(stored["Note"][uid])
        elif uid in stored.get("deleted", {}).get("Note", {}):
            line = "deleted"
        else:
            line = "absent"
        print(f"cloud {uid} -> {line}")

    # A sorted query, one line per note.
    for entity in notes.query(sort=[("title", "desc")]):
        print(f"query title:desc {entity['id']} {describe(entity)}")

    # Bob's partition is not this device's: every path refuses it.
    print(f"get bob.n9 -> {outcome(lambda: notes.get('bob.n9'))}")
    print(f"save bob.n9 -> {outcome(lambda: notes.save({'id': 'bob.n9', 'owner': 'bob', 'title': 'taken'}))}")
    print(f"delete bob.n9 -> {outcome(lambda: notes.delete('bob.n9'))}")

    # Offline: the write waits in the store, the sync says so, and goes through later.
    cloud.offline = True
    save({"id": "alice.n3", "owner": "alice", "title": "n3 offline"})
    print(f"sync offline={flag(ds.sync_now().offline)}")
    status = ds.status
    print(f"status online={flag(status.online)} pending={status.pending_keys}")
    cloud.offline = False
    print(sync(ds))
    status = ds.status
    print(f"status online={flag(status.online)} pending={status.pending_keys}")
    stored = cloud.partition("app.alice")
    n3 = stored.get("Note", {}).get("alice.n3")
    print(f"cloud alice.n3 -> {'absent' if n3 is None else describe(n3)}")
    ds.close()


if __name__ == "__main__":
    main()
