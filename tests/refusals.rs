//! A cloud that refuses one partition to a device (a server's 403): the sync leaves
//! that partition out, counts and names it, syncs the others, and stays online.

use std::time::Duration;

use datasync::{AdapterError, AdapterResult, Config, DataSync, MemoryPersistence, Persistence};
use serde_json::json;

/// A shared memory cloud that refuses every key containing `refused` to this device.
struct Refusing {
    inner: MemoryPersistence,
    refused: &'static str,
}

impl Refusing {
    fn check(&self, key: &str) -> AdapterResult<()> {
        if key.contains(self.refused) {
            return Err(AdapterError::refused(format!("{key} is outside the token")));
        }
        Ok(())
    }
}

impl Persistence for Refusing {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        self.check(key)?;
        self.inner.load(key)
    }
    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        self.check(key)?;
        self.inner.store(key, bytes)
    }
    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        self.check(key)?;
        self.inner.clear(key)
    }
    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        self.inner.keys()
    }
}

fn device(cloud: impl Persistence + 'static) -> DataSync {
    DataSync::open(
        Config::new("app")
            .local(MemoryPersistence::new())
            .cloud(cloud)
            .store_sync_delay(Duration::from_millis(10))
            .cloud_sync_interval(Duration::from_secs(3600))
            .sync_on_open(false),
    )
    .unwrap()
}

#[test]
fn a_refused_partition_is_left_out_and_the_others_sync() {
    let cloud = MemoryPersistence::new();
    let alice = device(cloud.clone());
    let note = alice
        .repo("Note")
        .unwrap()
        .save(&json!({"t": "shared"}))
        .unwrap();
    let secret = alice
        .repo("Secret")
        .unwrap()
        .save(&json!({"t": "hidden"}))
        .unwrap();
    let stats = alice.sync_now().unwrap();
    assert_eq!(stats.keys_refused, 0, "{stats:?}");

    let bob = device(Refusing {
        inner: cloud.clone(),
        refused: "Secret",
    });
    bob.repo("Other")
        .unwrap()
        .save(&json!({"t": "bob"}))
        .unwrap();
    let stats = bob.sync_now().unwrap();
    assert!(!stats.offline, "a refusal is not an outage: {stats:?}");
    assert_eq!(stats.keys_refused, 1, "{stats:?}");
    assert!(
        stats
            .errors
            .iter()
            .any(|e| e.contains("Secret") && e.contains("refused")),
        "the error names the refused partition: {stats:?}"
    );
    assert!(bob.status().online, "{:?}", bob.status());
    assert!(bob.repo("Note").unwrap().get(&note).unwrap().is_some());
    assert!(bob.repo("Secret").unwrap().get(&secret).unwrap().is_none());

    // Bob's own partition reached the cloud despite the refusal.
    alice.sync_now().unwrap();
    assert_eq!(
        alice
            .repo("Other")
            .unwrap()
            .query(&Default::default())
            .unwrap()
            .len(),
        1
    );
}
