import pytest

import datasync


def test_non_object_entity(ds):
    users = ds.repo("User")
    for bad in ([1, 2], "text", 3, None):
        with pytest.raises(datasync.Error.InvalidEntity):
            users.save(bad)
    assert users.all() == []


def test_unserialisable_entity_is_a_type_error(ds):
    with pytest.raises(TypeError):
        ds.repo("User").save({"when": object()})


def test_bad_ids(ds):
    users = ds.repo("User")
    for bad in ("", "noseparator", ".x", "x."):
        with pytest.raises(datasync.Error.InvalidId) as info:
            users.get(bad)
        assert info.value.id == bad
    with pytest.raises(datasync.Error.InvalidId):
        users.save({"id": 42})
    with pytest.raises(datasync.Error.InvalidId):
        users.save({"id": "nope"})
    assert users.all() == []


def test_bad_names(ds):
    for bad in ("", "deleted", "a.b"):
        with pytest.raises(datasync.Error.InvalidName):
            ds.repo(bad)


def test_bad_reserved_fields(ds):
    with pytest.raises(datasync.Error.InvalidEntity):
        ds.repo("User").save({"createdAt": "yesterday"})


def test_bad_config():
    with pytest.raises(datasync.Error.InvalidConfig):
        datasync.open("")
    with pytest.raises(datasync.Error.InvalidConfig):
        datasync.open("a.b")
    with pytest.raises(datasync.Error.InvalidConfig):
        datasync.open("app", cloud_sync_interval=0)

    class BadSeparator(datasync.KeyStrategy):
        separator = "ab"

        def logical_key(self, entity_name, entity):
            return entity_name

        def candidate_keys(self, prefix, entity_name, filter):
            return []

    with pytest.raises(datasync.Error.InvalidConfig):
        datasync.open("app", strategy=BadSeparator())
    with pytest.raises(TypeError):
        datasync.open("app", local="not a tier")


def test_bad_queries(ds):
    users = ds.repo("User")
    with pytest.raises(ValueError):
        users.query(sort=[("name", "sideways")])
    with datasync.open("app", strategy=datasync.DateStrategy("day")) as dated:
        with pytest.raises(datasync.Error.InvalidQuery):
            dated.repo("Log").query(filter={"from": "soon", "to": "later"})


def test_lone_surrogate_is_invalid_json(ds):
    with pytest.raises(datasync.Error.InvalidJson):
        ds.repo("User").save({"name": "\udcff"})
