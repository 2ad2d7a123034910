import gc

import pytest

import datasync


def test_save_get_delete(ds):
    users = ds.repo("User")
    alice = {"name": "Alice", "tags": ["a", "b"], "age": 30}
    uid = users.save(alice)
    assert "id" not in alice, "the caller's dict must not change"
    got = users.get(uid)
    assert got["name"] == "Alice" and got["tags"] == ["a", "b"] and got["age"] == 30
    assert got["id"] == uid and got["version"] == 1
    assert got["createdAt"] == got["updatedAt"] and got["createdAt"].endswith("Z")

    users.save({**got, "name": "Alice B."})
    again = users.get(uid)
    assert again["version"] == 2 and again["name"] == "Alice B."
    assert again["createdAt"] == got["createdAt"] and again["updatedAt"] >= got["updatedAt"]

    assert users.delete(uid) is True
    assert users.get(uid) is None
    assert users.delete(uid) is False


def test_ids_name_their_partition(ds):
    uid = ds.repo("User").save({"name": "x"})
    assert uid.startswith("User.")
    assert ds.tier_keys("store") == ["app.User"]


def test_save_many_and_delete_many(ds):
    notes = ds.repo("Note")
    ids = notes.save_many([{"n": i} for i in range(5)])
    assert len(set(ids)) == 5
    assert sorted(n["n"] for n in notes.all()) == [0, 1, 2, 3, 4]
    assert notes.delete_many(ids[:3] + ["Note.missingmissing1"]) == 3
    assert sorted(n["n"] for n in notes.all()) == [3, 4]


def test_save_many_is_all_or_nothing(ds):
    notes = ds.repo("Note")
    with pytest.raises(datasync.Error.InvalidEntity):
        notes.save_many([{"n": 1}, [1, 2]])
    assert notes.all() == []


def test_repositories_are_separate(ds):
    ds.repo("A").save({"x": 1})
    assert ds.repo("B").all() == []
    assert ds.repo("A").name == "A"


def test_with_closes_and_later_calls_fail():
    with datasync.open("app") as instance:
        users = instance.repo("User")
        users.save({"name": "x"})
    assert instance.closed
    with pytest.raises(datasync.Error.Closed):
        users.save({"name": "y"})
    with pytest.raises(datasync.Error.Closed):
        instance.repo("User")
    instance.close()  # idempotent


def test_flush_and_status_with_local_tier():
    local = datasync.MemoryTier()
    with datasync.open("app", local=local) as instance:
        instance.repo("User").save({"name": "x"})
        instance.flush()
        assert instance.status.pending_keys == 0
        assert "!index:app.User" in local.keys()  # format 2, the default
        assert instance.tier_keys("local") == ["app.User"]
        assert instance.audit() == []


def test_directory_tier_persists(tmp_path):
    path = str(tmp_path / "data")

    def first_run():
        with datasync.open("app", local=datasync.DirectoryTier(path, durable=False)) as instance:
            return instance.repo("User").save({"name": "kept"})

    uid = first_run()
    gc.collect()  # the directory's lock goes with the last handle of the instance
    with datasync.open("app", local=datasync.DirectoryTier(path)) as instance:
        assert instance.repo("User").get(uid)["name"] == "kept"
        assert instance.audit() == []
