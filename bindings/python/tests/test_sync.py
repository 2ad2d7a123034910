import json

import pytest

import datasync
from conftest import DictPersistence, device, doc, holds_partition, partition, read_back


def test_two_devices_converge_through_a_python_cloud(cloud):
    with device(cloud) as phone, device(cloud) as laptop:
        uid = phone.repo("User").save({"name": "Alice"})
        stats = phone.sync_now()
        assert stats.keys_copied >= 1 and not stats.offline and stats.errors == []
        assert holds_partition(cloud.blobs, "app.User")

        seen = []
        laptop.repo("User").observe(uid, lambda u: seen.append(u and u["name"]))
        laptop.sync_now()
        laptop.drain_events()
        assert laptop.repo("User").get(uid)["name"] == "Alice"
        assert seen[-1] == "Alice", "observers see remote changes"

        assert phone.sync_now().keys_copied == 0
        assert sorted(phone.tier_keys("local")) == sorted(laptop.tier_keys("local")) == ["app.User"]
        assert phone.audit() == [] and laptop.audit() == []


UID = "Doc.abcdefghijklmnop"
# The earlier edit has the greater version and the greater bytes, so only
# last-writer-wins (not the equal-instant tie-break) picks the later one.
EARLIER = doc(UID, "zz from a", "2026-01-01T00:00:01.000Z", 7)
LATER = doc(UID, "from b", "2026-01-01T00:00:02.000Z", 2)


def seeded_tiers():
    """(local, cloud) pairs holding the two edits, each way round."""
    for mine, theirs in ((EARLIER, LATER), (LATER, EARLIER)):
        local, cloud = DictPersistence(), DictPersistence()
        local.blobs["app.Doc"] = partition("Doc", mine)
        cloud.blobs["app.Doc"] = partition("Doc", theirs)
        yield local, cloud


def stored(tier):
    return read_back(tier, "Doc", UID)


def test_later_edit_wins_everywhere():
    for local, cloud in seeded_tiers():
        with datasync.open("app", local=local, cloud=cloud, cloud_sync_interval=3600) as ds:
            ds.sync_now()
            ds.sync_now()
            assert ds.repo("Doc").get(UID) == LATER
            assert ds.audit() == []
        assert stored(local) == stored(cloud) == LATER


def test_delete_after_edit_wins(cloud):
    with device(cloud) as a, device(cloud) as b:
        uid = a.repo("Doc").save({"title": "v1"})
        a.sync_now()
        b.sync_now()
        a.repo("Doc").save({"id": uid, "title": "edited"})
        b.repo("Doc").delete(uid)
        a.sync_now()
        b.sync_now()
        a.sync_now()
        # The delete carries the later (or equal) instant, so it wins on both.
        assert b.repo("Doc").get(uid) is None
        assert a.repo("Doc").get(uid) is None


class MergeTags(datasync.ConflictResolver):
    """Field-level merge: the union of both sides' tags, on the later entity."""

    def __init__(self):
        self.calls = 0

    def resolve(self, entity_name, a, b):
        self.calls += 1
        if isinstance(a, datasync.Deleted) or isinstance(b, datasync.Deleted):
            return a if isinstance(a, datasync.Deleted) else b
        later = max(a, b, key=lambda e: (e["updatedAt"], e["version"], json.dumps(e, sort_keys=True)))
        return {**later, "tags": sorted(set(a.get("tags", [])) | set(b.get("tags", [])))}


def test_custom_resolver_merges_fields(cloud):
    resolver = MergeTags()
    with device(cloud, resolver=resolver) as a, device(cloud, resolver=resolver) as b:
        uid = a.repo("Doc").save({"tags": []})
        a.sync_now()
        b.sync_now()
        a.repo("Doc").save({"id": uid, "tags": ["red"]})
        b.repo("Doc").save({"id": uid, "tags": ["blue"]})
        for _ in range(2):
            a.sync_now()
            b.sync_now()
        assert resolver.calls >= 1
        assert a.repo("Doc").get(uid)["tags"] == ["blue", "red"]
        assert b.repo("Doc").get(uid)["tags"] == ["blue", "red"]


class BrokenResolver(datasync.ConflictResolver):
    def resolve(self, entity_name, a, b):
        raise ValueError("resolver bug")


def test_raising_resolver_falls_back_to_last_writer_wins():
    calls = []

    class Counting(BrokenResolver):
        def resolve(self, entity_name, a, b):
            calls.append(entity_name)
            return super().resolve(entity_name, a, b)

    for local, cloud in seeded_tiers():
        with datasync.open("app", local=local, cloud=cloud, cloud_sync_interval=3600, resolver=Counting()) as ds:
            ds.sync_now()
            assert ds.repo("Doc").get(UID) == LATER, "the later edit, not the tie-break's pick"
        assert stored(local) == stored(cloud) == LATER
    assert calls and set(calls) == {"Doc"}, "the resolver was asked before the fallback"


class TeamStrategy(datasync.KeyStrategy):
    """Partitions by team. This device may touch the core and web teams (the
    candidate keys without a filter); a filter narrows a query to some of them."""

    separator = "/"
    id_length = 10
    allowed = ["core", "web"]

    def logical_key(self, entity_name, entity):
        return f"{entity_name}-{entity['team']}"

    def candidate_keys(self, prefix, entity_name, filter):
        teams = (filter or {}).get("teams", self.allowed)
        return [f"{prefix}/{entity_name}-{t}" for t in teams if t in self.allowed]


def test_python_key_strategy():
    with datasync.open("app", strategy=TeamStrategy()) as instance:
        people = instance.repo("Person")
        uid = people.save({"name": "a", "team": "core"})
        people.save({"name": "b", "team": "web"})
        assert uid.startswith("Person-core/") and len(uid.split("/")[1]) == 10
        assert sorted(instance.tier_keys("store")) == ["app/Person-core", "app/Person-web"]
        assert [p["name"] for p in people.query(filter={"teams": ["core"]})] == ["a"]
        assert sorted(p["name"] for p in people.query()) == ["a", "b"]
        assert people.get(uid)["name"] == "a"
        # A team outside the candidate keys: neither written nor read.
        with pytest.raises(datasync.Forbidden):
            people.save({"name": "c", "team": "ops"})
        with pytest.raises(datasync.Forbidden):
            people.get("Person-ops/0123456789")
        assert sorted(instance.tier_keys("store")) == ["app/Person-core", "app/Person-web"]


class RaisingStrategy(TeamStrategy):
    def logical_key(self, entity_name, entity):
        raise KeyError("team")


def test_raising_strategy_is_an_error_and_writes_nothing():
    with datasync.open("app", strategy=RaisingStrategy()) as instance:
        with pytest.raises(datasync.Error.Callback):
            instance.repo("Person").save({"name": "x"})
        assert instance.tier_keys("store") == []


class ConditionalPersistence(DictPersistence):
    """A DictPersistence that offers the conditional write; `refuse_next` refuses
    that many as if another writer had come first."""

    def __init__(self) -> None:
        super().__init__()
        self.conditional_writes = 0
        self.plain_writes = 0
        self.refuse_next = 0

    def store(self, key: str, data: bytes) -> None:
        # Format 2's pieces are write-once under their hash, and its format marker
        # is the same bytes from every writer: neither needs the conditional write.
        if not key.startswith("!piece:") and key != "!datasync.format":
            self.plain_writes += 1
        super().store(key, data)

    def store_if(self, key, expected, data):
        self._check()
        self.conditional_writes += 1
        with self._lock:
            if self.blobs.get(key) != expected:
                return False
            if self.refuse_next > 0:
                self.refuse_next -= 1
                return False
            self.blobs[key] = data
            return True


def test_a_cloud_with_the_conditional_write_is_written_only_through_it():
    cloud = ConditionalPersistence()
    with device(cloud) as phone, device(cloud) as laptop:
        a = phone.repo("User").save({"name": "from phone"})
        phone.sync_now()
        b = laptop.repo("User").save({"name": "from laptop"})
        cloud.refuse_next = 2  # another writer came first: read again, merge, write
        stats = laptop.sync_now()
        assert stats.errors == [] and not stats.offline
        phone.sync_now()
        assert phone.repo("User").get(b)["name"] == "from laptop"
        assert laptop.repo("User").get(a)["name"] == "from phone"
        assert cloud.conditional_writes > 0 and cloud.plain_writes == 0
        assert phone.audit() == [] and laptop.audit() == []


def test_a_store_if_that_returns_garbage_is_an_error_not_a_crash():
    class Garbage(DictPersistence):
        def store_if(self, key, expected, data):
            return "yes"

    cloud = Garbage()
    with device(cloud) as phone:
        phone.repo("User").save({"name": "x"})
        stats = phone.sync_now()
        assert stats.offline and stats.errors, stats
        assert len(phone.repo("User").all()) == 1
