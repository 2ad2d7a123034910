//! Saves and deletes: reserved fields, versions, the clock, tombstones, batches.

mod common;

use datasync::{Config, DataSync, ErrorKind, Slot, TierId};
use serde_json::json;

#[test]
fn save_maintains_reserved_fields_and_never_mutates_the_caller() {
    let ds = DataSync::open(Config::new("app")).unwrap();
    let users = ds.repo("User").unwrap();
    let input = json!({"name": "Ann", "updatedAt": "1999-01-01T00:00:00.000Z", "version": 77});
    let before = input.clone();
    let id = users.save(&input).unwrap();
    assert_eq!(input, before, "caller's value changed");
    let first = users.get(&id).unwrap().unwrap();
    let v = first.value();
    assert_eq!(v["version"], 1);
    assert_eq!(v["createdAt"], v["updatedAt"]);
    assert_ne!(v["updatedAt"], "1999-01-01T00:00:00.000Z");
    let text = v["updatedAt"].as_str().unwrap();
    assert_eq!(text.len(), 24, "{text}");
    assert!(text.ends_with('Z'));

    let mut edit = v.clone();
    edit["name"] = json!("Ann B");
    edit.as_object_mut().unwrap().remove("createdAt");
    users.save(&edit).unwrap();
    let second = users.get(&id).unwrap().unwrap();
    assert_eq!(second.version(), 2);
    assert!(
        second.updated_at() >= first.updated_at(),
        "clock went backwards"
    );
    assert_eq!(
        second.value()["createdAt"],
        v["createdAt"],
        "createdAt not kept"
    );
}

#[test]
fn many_writes_in_one_millisecond_are_ordered_by_version() {
    let ds = DataSync::open(Config::new("app")).unwrap();
    let users = ds.repo("User").unwrap();
    let id = users.save(&json!({"n": 0})).unwrap();
    let mut last = users.get(&id).unwrap().unwrap();
    for n in 1..200 {
        users.save(&json!({"id": id, "n": n})).unwrap();
        let now = users.get(&id).unwrap().unwrap();
        assert!(now.updated_at() >= last.updated_at());
        assert_eq!(now.version(), last.version() + 1);
        last = now;
    }
}

#[test]
fn deletes_leave_tombstones_even_for_unknown_ids() {
    let ds = DataSync::open(Config::new("app")).unwrap();
    let users = ds.repo("User").unwrap();
    let id = users.save(&json!({"name": "Ann"})).unwrap();
    assert!(users.delete(&id).unwrap());
    assert!(users.get(&id).unwrap().is_none());
    assert!(
        !users.delete("User.neverseen").unwrap(),
        "unknown id reported as existing"
    );
    let meta = ds.tier_meta(TierId::Store).unwrap();
    let counts = &meta.entries["app.User"].entities["User"];
    assert_eq!((counts.count, counts.deleted_count), (0, 2));
    // Re-creating a deleted id starts a new life that beats the tombstone.
    users.save(&json!({"id": id, "name": "Ann again"})).unwrap();
    let back = users.get(&id).unwrap().unwrap();
    assert_eq!(back.version(), 1);
    assert!(ds.audit().unwrap().is_empty());
}

#[test]
fn save_many_and_delete_many_are_all_or_nothing_on_bad_input() {
    let ds = DataSync::open(Config::new("app")).unwrap();
    let users = ds.repo("User").unwrap();
    let ids = users
        .save_many(&[json!({"n": 1}), json!({"n": 2}), json!({"n": 3})])
        .unwrap();
    assert_eq!(ids.len(), 3);
    let err = users
        .save_many(&[json!({"n": 4}), json!("not an object")])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidEntity);
    assert_eq!(
        users.query(&Default::default()).unwrap().len(),
        3,
        "a refused batch wrote something"
    );
    assert_eq!(users.delete_many(&ids[..2]).unwrap(), 2);
    assert_eq!(users.query(&Default::default()).unwrap().len(), 1);
    let slot = ds.tier_meta(TierId::Store).unwrap();
    assert_eq!(slot.entries["app.User"].entities["User"].deleted_count, 2);
    let _ = Slot::Deleted(0);
}
