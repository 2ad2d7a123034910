//! Ids: format, uniqueness, caller ids, bad ids.

mod common;

use std::collections::HashSet;

use datasync::{id, Config, DataSync, ErrorKind, FieldStrategy};
use serde_json::json;

#[test]
fn a_million_generated_ids_are_unique_and_well_formed() {
    let mut seen = HashSet::with_capacity(1_000_000);
    for _ in 0..1_000_000 {
        let id = id::generate("User", '.', 16);
        assert_eq!(id.len(), 21);
        assert!(id.starts_with("User."));
        assert!(id[5..].bytes().all(|b| id::ALPHABET.contains(&b)), "{id}");
        assert!(seen.insert(id), "duplicate id");
    }
}

#[test]
fn saved_ids_name_their_partition() {
    let ds = DataSync::open(Config::new("app").strategy(FieldStrategy::new("region"))).unwrap();
    let users = ds.repo("User").unwrap();
    let id = users.save(&json!({"name": "Ann", "region": "eu"})).unwrap();
    let (logical, ident) = id::parse(&id, '.').unwrap();
    assert_eq!(logical, "User.eu");
    assert_eq!(ident.len(), 16);
    assert_eq!(
        ds.tier_keys(datasync::TierId::Store).unwrap(),
        vec!["app.User.eu".to_string()]
    );
    let e = users.get(&id).unwrap().unwrap();
    assert_eq!(e.id(), id);
    assert_eq!(e.value()["id"], json!(id));
}

#[test]
fn caller_ids_are_kept_and_parsed() {
    let ds = DataSync::open(Config::new("app")).unwrap();
    let users = ds.repo("User").unwrap();
    let id = users
        .save(&json!({"id": "User.alice", "name": "Alice"}))
        .unwrap();
    assert_eq!(id, "User.alice");
    assert_eq!(
        users.get("User.alice").unwrap().unwrap().value()["name"],
        "Alice"
    );
    // A caller id may not name a partition the strategy never gives this name (its
    // queries would never look there): refused, and nothing is written.
    let err = users
        .save(&json!({"id": "Archive.bob", "name": "Bob"}))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidId, "{err}");
    assert_eq!(
        users.get("Archive.bob").unwrap_err().kind(),
        ErrorKind::InvalidId
    );
    assert_eq!(
        users.delete("Archive.bob").unwrap_err().kind(),
        ErrorKind::InvalidId
    );
    let keys = ds.tier_keys(datasync::TierId::Store).unwrap();
    assert_eq!(keys, vec!["app.User".to_string()]);
}

#[test]
fn bad_ids_are_refused_and_nothing_is_written() {
    let ds = DataSync::open(Config::new("app")).unwrap();
    let users = ds.repo("User").unwrap();
    for bad in ["", "noseparator", ".x", "User.", "a\nb.c"] {
        let err = users.save(&json!({"id": bad, "name": "x"})).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidId, "{bad:?}: {err}");
        assert_eq!(users.get(bad).unwrap_err().kind(), ErrorKind::InvalidId);
        assert_eq!(users.delete(bad).unwrap_err().kind(), ErrorKind::InvalidId);
    }
    assert_eq!(
        users.save(&json!({"id": 42})).unwrap_err().kind(),
        ErrorKind::InvalidId
    );
    assert!(
        ds.tier_keys(datasync::TierId::Store).unwrap().is_empty(),
        "a refused write left a partition"
    );
}
