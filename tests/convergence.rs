//! Property test against a tiny reference model: random saves, deletes, flushes and
//! syncs on two instances (store + local each) sharing a cloud. With a clock where
//! every reading is later than the one before, last-writer-wins means "the last
//! operation on an entity wins", which is the whole model. After the final syncs,
//! every tier equals the model and all roots are equal.

mod common;

use std::collections::BTreeMap;

use common::{audit_blobs, manual, stored_root, ticking};
use datasync::{DataSync, MemoryPersistence, Slot, TierId};
use proptest::prelude::*;
use serde_json::json;

const ENTITIES: [(&str, &str); 5] = [
    ("User", "User.e0"),
    ("User", "User.e1"),
    ("User", "User.e2"),
    ("Post", "Post.e0"),
    ("Post", "Post.e1"),
];

#[derive(Debug, Clone)]
enum Op {
    Save { dev: usize, entity: usize, n: u8 },
    Delete { dev: usize, entity: usize },
    Flush(usize),
    Sync(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 0..ENTITIES.len(), any::<u8>()).prop_map(|(dev, entity, n)| Op::Save { dev, entity, n }),
        2 => (0..2usize, 0..ENTITIES.len()).prop_map(|(dev, entity)| Op::Delete { dev, entity }),
        1 => (0..2usize).prop_map(Op::Flush),
        2 => (0..2usize).prop_map(Op::Sync),
    ]
}

fn run(ops: &[Op]) {
    let cloud = MemoryPersistence::new();
    let locals = [MemoryPersistence::new(), MemoryPersistence::new()];
    let devices: Vec<DataSync> = locals
        .iter()
        .map(|local| {
            DataSync::open(
                manual("app")
                    .local(local.clone())
                    .cloud(cloud.clone())
                    .clock_source(ticking),
            )
            .unwrap()
        })
        .collect();
    let mut model: BTreeMap<usize, Option<u8>> = BTreeMap::new();
    for op in ops {
        match *op {
            Op::Save { dev, entity, n } => {
                let (name, id) = ENTITIES[entity];
                devices[dev]
                    .repo(name)
                    .unwrap()
                    .save(&json!({"id": id, "n": n}))
                    .unwrap();
                model.insert(entity, Some(n));
            }
            Op::Delete { dev, entity } => {
                let (name, id) = ENTITIES[entity];
                devices[dev].repo(name).unwrap().delete(id).unwrap();
                model.insert(entity, None);
            }
            Op::Flush(dev) => devices[dev].flush().unwrap(),
            Op::Sync(dev) => {
                devices[dev].sync_now().unwrap();
            }
        }
    }
    for dev in [0, 1, 0] {
        let stats = devices[dev].sync_now().unwrap();
        assert!(stats.errors.is_empty(), "{stats:?}");
    }
    let partitions = audit_blobs(&cloud);
    for local in &locals {
        assert_eq!(
            audit_blobs(local),
            partitions,
            "a local tier differs from the cloud"
        );
        assert_eq!(stored_root(local), stored_root(&cloud));
    }
    for (entity, expected) in &model {
        let (name, id) = ENTITIES[*entity];
        let key = format!("app.{name}");
        let slot = partitions.get(&key).and_then(|p| p.get(name, id));
        match (expected, slot) {
            (Some(n), Some(Slot::Active(e))) => assert_eq!(e.value()["n"], json!(n), "{id}"),
            (None, Some(Slot::Deleted(_))) => {}
            other => panic!("{id}: model and cloud disagree: {other:?}"),
        }
        for ds in &devices {
            let got = ds
                .repo(name)
                .unwrap()
                .get(id)
                .unwrap()
                .map(|e| e.value()["n"].clone());
            assert_eq!(got, expected.map(|n| json!(n)), "{id} in a store");
        }
    }
    for ds in &devices {
        let store = ds.tier_meta(TierId::Store).unwrap();
        let local = ds.tier_meta(TierId::Local).unwrap();
        for (key, entry) in &store.entries {
            assert_eq!(
                Some(&entry.hash),
                local.entries.get(key).map(|e| &e.hash),
                "store and local differ on {key}"
            );
        }
        assert!(ds.audit().unwrap().is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn tiers_converge_on_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops);
    }
}
