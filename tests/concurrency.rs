//! Several threads saving while syncs run: after `flush()` nothing is missing below.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::audit_blobs;
use datasync::{Config, DataSync, MemoryPersistence};
use serde_json::json;

#[test]
fn concurrent_saves_and_syncs_lose_nothing() {
    let local = MemoryPersistence::new();
    let cloud = MemoryPersistence::new();
    let config = Config::new("app")
        .local(local.clone())
        .cloud(cloud.clone())
        .store_sync_delay(Duration::from_millis(1))
        .cloud_sync_interval(Duration::from_millis(5));
    let ds = Arc::new(DataSync::open(config).unwrap());
    let syncing = {
        let ds = ds.clone();
        thread::spawn(move || {
            for _ in 0..30 {
                ds.sync_now().unwrap();
            }
        })
    };
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let ds = ds.clone();
            thread::spawn(move || {
                let repo = ds.repo(if t % 2 == 0 { "User" } else { "Post" }).unwrap();
                let mut written = Vec::new();
                for i in 0..300 {
                    let id = repo.save(&json!({"t": t, "i": i})).unwrap();
                    if i % 3 == 0 {
                        repo.save(&json!({"id": id, "t": t, "i": i, "edited": true}))
                            .unwrap();
                    }
                    written.push((repo.name().to_string(), id, i % 3 == 0));
                }
                written
            })
        })
        .collect();
    let written: Vec<(String, String, bool)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    syncing.join().unwrap();
    ds.flush().unwrap();
    let partitions = audit_blobs(&local);
    for (name, id, edited) in &written {
        let slot = partitions[&format!("app.{name}")].get(name, id);
        let entity = slot
            .and_then(|s| s.entity())
            .unwrap_or_else(|| panic!("{id} missing from local"));
        assert_eq!(entity.version(), if *edited { 2 } else { 1 });
    }
    ds.sync_now().unwrap();
    assert_eq!(audit_blobs(&cloud), audit_blobs(&local));
    assert!(ds.audit().unwrap().is_empty());
}
