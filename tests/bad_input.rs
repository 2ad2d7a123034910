//! Bad input gets a clear error and loses nothing.

mod common;

use common::{manual, Probe};
use datasync::{Config, DataSync, ErrorKind, FieldStrategy, MemoryPersistence, QueryOptions};
use serde_json::json;

#[test]
fn entities_and_names_are_checked() {
    let ds = DataSync::open(Config::new("app")).unwrap();
    for name in ["", "deleted", "a.b", "tab\there"] {
        assert_eq!(
            ds.repo(name).unwrap_err().kind(),
            ErrorKind::InvalidName,
            "{name:?}"
        );
    }
    let users = ds.repo("User").unwrap();
    for bad in [json!(1), json!("x"), json!([1]), json!(null)] {
        assert_eq!(
            users.save(&bad).unwrap_err().kind(),
            ErrorKind::InvalidEntity
        );
    }
    assert_eq!(
        users.save_json("{not json").unwrap_err().kind(),
        ErrorKind::InvalidJson
    );
    assert_eq!(
        users
            .save(&json!({"createdAt": "yesterday"}))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidEntity
    );
    let deep = "[".repeat(200) + &"]".repeat(200);
    assert_eq!(
        users
            .save_json(&format!("{{\"x\":{deep}}}"))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidJson
    );
    assert_eq!(
        QueryOptions::from_json("{\"limit\":\"ten\"}")
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidQuery
    );
    assert!(
        users.query(&QueryOptions::default()).unwrap().is_empty(),
        "a refused save wrote something"
    );
}

#[test]
fn configs_are_checked() {
    for prefix in ["", "!meta", "a.b", "x\n"] {
        let err = DataSync::open(Config::new(prefix))
            .err()
            .expect("bad prefix accepted");
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    }
}

#[test]
fn a_failing_local_adapter_is_an_error_naming_the_key_and_the_rest_works() {
    let local = Probe::new();
    let ds = DataSync::open(manual("app").local(local.clone())).unwrap();
    let users = ds.repo("User").unwrap();
    let posts = ds.repo("Post").unwrap();
    let id = users.save(&json!({"n": 1})).unwrap();
    local.fail(true);
    let err = posts.get("Post.abc").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Adapter);
    assert!(err.to_string().contains("app.Post"), "{err}");
    let err = ds.flush().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Adapter);
    // What the store holds keeps working, and nothing is lost once the adapter heals.
    assert!(users.get(&id).unwrap().is_some());
    users.save(&json!({"id": id, "n": 2})).unwrap();
    local.fail(false);
    ds.flush().unwrap();
    let blob = datasync::Partition::parse(
        common::partition_text(&local.inner, "app.User").as_bytes(),
        false,
    )
    .unwrap();
    assert_eq!(
        blob.get("User", &id).unwrap().entity().unwrap().version(),
        2
    );
}

#[test]
fn corrupt_bytes_from_an_adapter_are_reported_with_their_key() {
    let local = MemoryPersistence::new();
    {
        let ds = DataSync::open(manual("app").local(local.clone())).unwrap();
        ds.repo("User").unwrap().save(&json!({"n": 1})).unwrap();
        ds.repo("Post").unwrap().save(&json!({"n": 1})).unwrap();
        ds.close().unwrap();
    }
    local.poke(&common::data_key("app.User"), b"\xff\xfe garbage");
    let ds = DataSync::open(manual("app").local(local.clone())).unwrap();
    let err = ds
        .repo("User")
        .unwrap()
        .query(&QueryOptions::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(
        err.to_string().contains("app.User") && err.to_string().contains("local"),
        "{err}"
    );
    assert_eq!(
        ds.repo("Post")
            .unwrap()
            .query(&QueryOptions::default())
            .unwrap()
            .len(),
        1
    );
    // Garbage metadata is rebuilt from the partitions.
    drop(ds);
    local.poke(common::meta_key(&local), b"[not metadata]");
    let ds = DataSync::open(manual("app").local(local.clone())).unwrap();
    assert_eq!(
        ds.repo("Post")
            .unwrap()
            .query(&QueryOptions::default())
            .unwrap()
            .len(),
        1
    );
    assert!(ds
        .tier_keys(datasync::TierId::Local)
        .unwrap()
        .contains(&"app.Post".to_string()));
}

#[test]
fn flush_over_a_corrupted_local_partition_fails_with_its_key_and_keeps_the_rest() {
    let local = MemoryPersistence::new();
    let ds = DataSync::open(manual("app").local(local.clone())).unwrap();
    let users = ds.repo("User").unwrap();
    let posts = ds.repo("Post").unwrap();
    users.save(&json!({"n": 1})).unwrap();
    ds.flush().unwrap();
    local.poke(&common::data_key("app.User"), b"{torn");
    users.save(&json!({"n": 2})).unwrap();
    let post = posts.save(&json!({"n": 1})).unwrap();
    let err = ds.flush().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("app.User"), "{err}");
    assert!(
        common::partition_text(&local, "app.Post").contains(&post),
        "the healthy partition was not flushed"
    );
    assert_eq!(
        users.query(&QueryOptions::default()).unwrap().len(),
        2,
        "the store lost a write"
    );
    assert!(
        ds.status().pending_keys >= 1,
        "the failed key is no longer pending"
    );
}

#[test]
fn reserved_fields_of_the_wrong_type_are_refused_and_nothing_is_written() {
    let ds = DataSync::open(Config::new("app")).unwrap();
    let users = ds.repo("User").unwrap();
    let id = users.save(&json!({"name": "Ann"})).unwrap();
    for bad in [
        json!({"version": "one"}),
        json!({"version": -5}),
        json!({"version": 1.5}),
        json!({"version": 0}),
        json!({"updatedAt": [1]}),
        json!({"updatedAt": "yesterday"}),
        json!({"createdAt": 7}),
    ] {
        let mut entity = bad.as_object().unwrap().clone();
        entity.insert("name".into(), json!("changed"));
        let err = users.save(&json!(entity)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidEntity, "{bad}: {err}");
        // The same with an existing id: the stored entity is untouched.
        entity.insert("id".into(), json!(id));
        let err = users.save(&json!(entity)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidEntity, "{bad}: {err}");
    }
    let all = users.query(&QueryOptions::default()).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].value()["name"], "Ann");
    assert_eq!(all[0].version(), 1);
    // Values of the right type are accepted (and replaced by the library's own).
    users
        .save(&json!({"id": id, "name": "Ann", "version": 7, "updatedAt": "2020-01-01T00:00:00.000Z"}))
        .unwrap();
    assert_eq!(users.get(&id).unwrap().unwrap().version(), 2);
}

#[test]
fn an_unknown_sort_order_is_an_error() {
    for bad in [
        r#"{"sort":["a:up"]}"#,
        r#"{"sort":["name:sideways"]}"#,
        r#"{"sort":[":desc"]}"#,
        r#"{"sort":[{"field":"a","order":"down"}]}"#,
    ] {
        let err = QueryOptions::from_json(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidQuery, "{bad}: {err}");
    }
    let q = QueryOptions::from_json(r#"{"sort":["name:DESC","age:asc","plain"]}"#).unwrap();
    let orders: Vec<_> = q.sort.iter().map(|k| (k.field.as_str(), k.order)).collect();
    assert_eq!(
        orders,
        vec![
            ("name", datasync::Order::Desc),
            ("age", datasync::Order::Asc),
            ("plain", datasync::Order::Asc)
        ]
    );
}

#[test]
fn an_empty_strategy_field_is_refused() {
    assert_eq!(
        FieldStrategy::try_new("").unwrap_err().kind(),
        ErrorKind::InvalidConfig
    );
    assert_eq!(FieldStrategy::try_new("region").unwrap().field, "region");
    let err = DataSync::open(Config::new("app").strategy(FieldStrategy::new("")))
        .err()
        .expect("an empty field cannot open");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.to_string().contains("field"), "{err}");
    let ds = DataSync::open(Config::new("app").strategy(FieldStrategy::new("region"))).unwrap();
    let id = ds
        .repo("Shop")
        .unwrap()
        .save(&json!({"region": "eu"}))
        .unwrap();
    assert!(id.starts_with("Shop.eu."), "{id}");
}
