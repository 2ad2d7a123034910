//! Store + cloud with no local tier: the cloud is the tier below the store, so a
//! failing cloud makes the instance offline (not broken), and writes made meanwhile
//! are pushed by the retries once it is back.

mod common;

use std::time::{Duration, Instant};

use common::Probe;
use datasync::{Config, DataSync};
use serde_json::json;

#[test]
fn a_write_made_while_the_cloud_is_down_reaches_it_after_recovery() {
    let cloud = Probe::new();
    let ds = DataSync::open(
        Config::new("app")
            .cloud(cloud.clone())
            .store_sync_delay(Duration::from_millis(20))
            .cloud_sync_interval(Duration::from_secs(3600))
            .retry(Duration::from_millis(50), Duration::from_millis(200)),
    )
    .unwrap();
    let users = ds.repo("User").unwrap();
    users.save(&json!({"name": "before"})).unwrap();
    ds.sync_now().unwrap();

    cloud.fail(true);
    let id = users.save(&json!({"name": "offline"})).unwrap();
    let stats = ds.sync_now().unwrap();
    assert!(
        stats.offline,
        "offline in the stats, not an error: {stats:?}"
    );
    assert!(!stats.errors.is_empty());
    let status = ds.status();
    assert!(!status.online, "{status:?}");
    assert!(status.last_error.is_some(), "{status:?}");
    assert_eq!(status.pending_keys, 1, "{status:?}");
    assert!(
        ds.flush().is_err(),
        "nothing is durable below the store yet"
    );

    cloud.fail(false);
    // No call from the app: the retries alone push the write (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = ds.status();
        // The cloud is audited once the retry says it is done: a snapshot taken
        // while a sync writes may catch a partition ahead of its metadata.
        let done = status.online && status.pending_keys == 0;
        let pushed = done
            && common::audit_blobs(&cloud.inner)
                .values()
                .any(|p| p.get("User", &id).is_some());
        if pushed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still pending 10 s after recovery: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ds.status().last_error.is_none());
    ds.close().unwrap();
}
