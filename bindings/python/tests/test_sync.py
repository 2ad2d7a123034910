import json

import pytest

import datasync
from conftest import DictPersistence, device


def test_two_devices_converge_through_a_python_cloud(cloud):
    with device(cloud) as phone, device(cloud) as laptop:
        uid = phone.repo("User").save({"name": "Alice"})
        stats = phone.sync_now()
        assert stats.keys_copied >= 1 and not stats.offline and stats.errors == []
        assert any(k.startswith("app.User") for k in cloud.blobs)

        seen = []
        laptop.repo("User").observe(uid, lambda u: seen.append(u and u["name"]))
        laptop.sync_now()
        laptop.drain_events()
        assert laptop.repo("User").get(uid)["name"] == "Alice"
        assert seen[-1] == "Alice", "observers see remote changes"

        assert phone.sync_now().keys_copied == 0
        assert sorted(phone.tier_keys("local")) == sorted(laptop.tier_keys("local")) == ["app.User"]
        assert phone.audit() == [] and laptop.audit() == []


def test_later_edit_wins_everywhere(cloud):
    with device(cloud) as a, device(cloud) as b:
        uid = a.repo("Doc").save({"title": "v1"})
        a.sync_now()
        b.sync_now()
        a.repo("Doc").save({"id": uid, "title": "from a"})
        first = a.repo("Doc").get(uid)["updatedAt"]
        b.repo("Doc").save({"id": uid, "title": "from b"})
        assert b.repo("Doc").get(uid)["updatedAt"] >= first
        for _ in range(2):
            a.sync_now()
            b.sync_now()
        # b wrote last (or in the same millisecond, where the greater bytes win).
        assert a.repo("Doc").get(uid)["title"] == b.repo("Doc").get(uid)["title"] == "from b"
        winner = b.repo("Doc").get(uid)
        assert winner["version"] == 2


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


def test_raising_resolver_falls_back_to_last_writer_wins(cloud):
    with device(cloud, resolver=BrokenResolver()) as a, device(cloud, resolver=BrokenResolver()) as b:
        uid = a.repo("Doc").save({"t": 0})
        a.sync_now()
        b.sync_now()
        a.repo("Doc").save({"id": uid, "t": "a"})
        b.repo("Doc").save({"id": uid, "t": "b"})
        for _ in range(2):
            a.sync_now()
            b.sync_now()
        assert a.repo("Doc").get(uid) == b.repo("Doc").get(uid)


class TeamStrategy(datasync.KeyStrategy):
    """Partitions by team; a query may only read the teams in its filter."""

    separator = "/"
    id_length = 10

    def logical_key(self, entity_name, entity):
        return f"{entity_name}-{entity['team']}"

    def candidate_keys(self, prefix, entity_name, filter):
        teams = (filter or {}).get("teams", [])
        return [f"{prefix}/{entity_name}-{t}" for t in teams]


def test_python_key_strategy():
    with datasync.open("app", strategy=TeamStrategy()) as instance:
        people = instance.repo("Person")
        uid = people.save({"name": "a", "team": "core"})
        people.save({"name": "b", "team": "web"})
        assert uid.startswith("Person-core/") and len(uid.split("/")[1]) == 10
        assert sorted(instance.tier_keys("store")) == ["app/Person-core", "app/Person-web"]
        assert [p["name"] for p in people.query(filter={"teams": ["core"]})] == ["a"]
        assert people.query() == []
        assert people.get(uid)["name"] == "a"


class RaisingStrategy(TeamStrategy):
    def logical_key(self, entity_name, entity):
        raise KeyError("team")


def test_raising_strategy_is_an_error_and_writes_nothing():
    with datasync.open("app", strategy=RaisingStrategy()) as instance:
        with pytest.raises(datasync.Error.Callback):
            instance.repo("Person").save({"name": "x"})
        assert instance.tier_keys("store") == []
