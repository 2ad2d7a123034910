import pytest

import datasync


@pytest.fixture
def people(ds):
    repo = ds.repo("Person")
    rows = [
        {"name": "Cleo", "team": "web", "age": 41},
        {"name": "alice", "team": "core", "age": 30},
        {"name": "Bob", "team": "core", "age": 25},
        {"name": "Dan", "team": "core"},
        {"name": "Eve", "team": "web", "age": 30},
    ]
    ids = repo.save_many(rows)
    return repo, dict(zip([r["name"] for r in rows], ids))


def names(rows):
    return [r["name"] for r in rows]


def test_where_is_shallow_equality(people):
    repo, _ = people
    assert sorted(names(repo.query(where={"team": "core"}))) == ["Bob", "Dan", "alice"]
    assert names(repo.query(where={"team": "core", "age": 25})) == ["Bob"]
    assert repo.query(where={"team": "nobody"}) == []


def test_sort_by_code_point_and_missing_first(people):
    repo, _ = people
    assert names(repo.query(sort=["name"])) == ["Bob", "Cleo", "Dan", "Eve", "alice"]
    assert names(repo.query(sort=[("age", "asc"), ("name", "asc")])) == ["Dan", "Bob", "Eve", "alice", "Cleo"]
    assert names(repo.query(sort=["age:desc", "name"])) == ["Cleo", "Eve", "alice", "Bob", "Dan"]


def test_limit_offset_and_ids(people):
    repo, ids = people
    assert names(repo.query(sort=["name"], limit=2)) == ["Bob", "Cleo"]
    assert names(repo.query(sort=["name"], limit=2, offset=3)) == ["Eve", "alice"]
    assert sorted(names(repo.query(ids=[ids["Eve"], ids["Bob"]]))) == ["Bob", "Eve"]


def test_field_strategy_filter_reads_only_named_partitions():
    with datasync.open("app", strategy=datasync.FieldStrategy("region")) as instance:
        shops = instance.repo("Shop")
        shops.save_many([{"name": "a", "region": "eu"}, {"name": "b", "region": "us"}, {"name": "c", "region": "eu"}])
        assert sorted(names(shops.query(filter={"values": ["eu"]}))) == ["a", "c"]
        assert sorted(instance.tier_keys("store")) == ["app.Shop.eu", "app.Shop.us"]


def test_date_strategy_partitions_by_month():
    with datasync.open("app", strategy=datasync.DateStrategy("month")) as instance:
        log = instance.repo("Log")
        log.save({"createdAt": "2025-01-15T10:00:00.000Z", "n": 1})
        log.save({"createdAt": "2025-03-01T00:00:00.000Z", "n": 2})
        assert sorted(instance.tier_keys("store")) == ["app.Log.2025-01", "app.Log.2025-03"]
        january = log.query(filter={"from": "2025-01-01T00:00:00.000Z", "to": "2025-01-31T23:59:59.999Z"})
        assert [r["n"] for r in january] == [1]
