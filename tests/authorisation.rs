//! DESIGN §11: the key strategy's candidate keys decide what a device may read and
//! write, on every path (get, observe, save, delete, sync), and an id cannot move an
//! entity into another name's partition.

mod common;

use datasync::{
    Candidates, Config, DataSync, ErrorKind, KeyStrategy, MemoryPersistence, QueryOptions, TierId,
};
use serde_json::{json, Map, Value};

/// Partitions by owner (`app.<owner>`); this device may read and write only its own.
struct Owner(&'static str);

impl KeyStrategy for Owner {
    fn logical_key(&self, _name: &str, entity: &Map<String, Value>) -> datasync::Result<String> {
        Ok(entity["owner"].as_str().unwrap_or("nobody").to_string())
    }

    fn candidate_keys(
        &self,
        prefix: &str,
        _name: &str,
        _filter: Option<&Value>,
    ) -> datasync::Result<Candidates> {
        Ok(Candidates::Keys(vec![format!("{prefix}.{}", self.0)]))
    }
}

/// A device of `owner` sharing `cloud`, syncing only when asked.
fn device(owner: &'static str, cloud: &MemoryPersistence) -> DataSync {
    DataSync::open(
        common::manual("app")
            .strategy(Owner(owner))
            .local(MemoryPersistence::new())
            .cloud(cloud.clone()),
    )
    .unwrap()
}

#[test]
fn an_id_cannot_put_an_entity_where_its_names_queries_never_look() {
    let ds = DataSync::open(Config::new("app")).unwrap();
    let todos = ds.repo("Todo").unwrap();
    let err = todos
        .save(&json!({"id": "User.abcdefghijklmnop", "title": "x"}))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidId, "{err}");
    assert!(
        ds.tier_keys(TierId::Store).unwrap().is_empty(),
        "nothing written"
    );
    assert!(todos.query(&QueryOptions::default()).unwrap().is_empty());
    // The date strategy checks the partition's shape too.
    let ds = DataSync::open(Config::new("app").strategy(datasync::DateStrategy::new(
        datasync::DateGranularity::Month,
    )))
    .unwrap();
    let logs = ds.repo("Log").unwrap();
    let id = logs.save(&json!({"text": "ok"})).unwrap();
    assert!(logs.get(&id).unwrap().is_some());
    for bad in [
        "Log.2026.abcdefghijklmnop",
        "Log.x-y.abcdefghijklmnop",
        "User.2026-01.abcdefghijklmnop",
    ] {
        let err = logs.save(&json!({"id": bad})).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidId, "{bad}: {err}");
    }
}

#[test]
fn a_device_can_neither_read_nor_write_outside_its_partitions() {
    let cloud = MemoryPersistence::new();
    let bob = device("bob", &cloud);
    let bob_id = bob
        .repo("Note")
        .unwrap()
        .save(&json!({"owner": "bob", "text": "bob's"}))
        .unwrap();
    bob.sync_now().unwrap();

    let alice = device("alice", &cloud);
    let notes = alice.repo("Note").unwrap();
    let forbidden = |r: datasync::Result<()>| {
        let err = r.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
        assert!(
            err.to_string().contains("app.bob"),
            "names the partition: {err}"
        );
    };
    forbidden(notes.get(&bob_id).map(|_| ()));
    forbidden(notes.observe(&bob_id, |_| {}).map(|_| ()));
    forbidden(
        notes
            .save(&json!({"id": bob_id, "owner": "bob", "text": "hijacked"}))
            .map(|_| ()),
    );
    forbidden(notes.delete(&bob_id).map(|_| ()));
    forbidden(
        notes
            .save(&json!({"owner": "bob", "text": "new in bob's"}))
            .map(|_| ()),
    );
    // Her own partition works.
    let own = notes
        .save(&json!({"owner": "alice", "text": "mine"}))
        .unwrap();
    assert!(notes.get(&own).unwrap().is_some());

    // Partial sync: Bob's partition stays out of Alice's tiers, and is refused in the stats.
    let stats = alice.sync_now().unwrap();
    assert!(!stats.offline, "{stats:?}");
    assert_eq!(stats.keys_refused, 1, "{stats:?}");
    for tier in [TierId::Store, TierId::Local] {
        let keys = alice.tier_keys(tier).unwrap();
        assert_eq!(keys, vec!["app.alice".to_string()], "{tier:?}");
    }
    // Bob's note is intact, and Alice's reached the cloud.
    bob.sync_now().unwrap();
    let note = bob.repo("Note").unwrap().get(&bob_id).unwrap().unwrap();
    assert_eq!(note.value()["text"], "bob's");
    let cloud_keys: Vec<String> = common::partition_keys(&cloud);
    assert_eq!(
        cloud_keys,
        vec!["app.alice".to_string(), "app.bob".to_string()]
    );
    assert!(alice.audit().unwrap().is_empty());
}
