//! The sync worker on its own: writes reach local soon after, local and cloud sync
//! periodically, failures back off and recover. Waits poll with a generous bound;
//! nothing here asserts speed.

mod common;

use std::time::{Duration, Instant};

use common::Probe;
use datasync::{Config, DataSync, MemoryPersistence};
use serde_json::json;

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn writes_reach_local_and_cloud_without_being_asked() {
    let local = MemoryPersistence::new();
    let cloud = MemoryPersistence::new();
    let config = Config::new("app")
        .local(local.clone())
        .cloud(cloud.clone())
        .store_sync_delay(Duration::from_millis(10))
        .cloud_sync_interval(Duration::from_millis(20));
    let ds = DataSync::open(config).unwrap();
    let id = ds.repo("User").unwrap().save(&json!({"n": 1})).unwrap();
    eventually("the write reaches local", || {
        common::holds(&local, "app.User")
    });
    eventually("the write reaches the cloud", || {
        common::partition_text(&cloud, "app.User").contains(&id)
    });
    eventually("status shows a successful sync", || {
        ds.status().last_sync.is_some() && ds.status().pending_keys == 0
    });
}

#[test]
fn cloud_failures_back_off_and_recover_by_themselves() {
    let cloud = Probe::new();
    cloud.fail(true);
    let config = Config::new("app")
        .local(MemoryPersistence::new())
        .cloud(cloud.clone())
        .store_sync_delay(Duration::from_millis(5))
        .cloud_sync_interval(Duration::from_millis(10))
        .retry(Duration::from_millis(10), Duration::from_millis(40));
    let ds = DataSync::open(config).unwrap();
    ds.repo("User").unwrap().save(&json!({"n": 1})).unwrap();
    eventually("several failed attempts", || ds.status().failures >= 3);
    assert!(!ds.status().online);
    cloud.fail(false);
    eventually("back online", || {
        ds.status().online && common::holds(&cloud.inner, "app.User")
    });
    assert_eq!(ds.status().failures, 0);
}

#[test]
fn close_flushes_and_joins() {
    let local = MemoryPersistence::new();
    let config = Config::new("app")
        .local(local.clone())
        .store_sync_delay(Duration::from_secs(3600));
    let ds = DataSync::open(config).unwrap();
    let id = ds.repo("User").unwrap().save(&json!({"n": 1})).unwrap();
    ds.close().unwrap();
    assert!(
        common::partition_text(&local, "app.User").contains(&id),
        "close did not flush"
    );
    assert!(ds.status().closed);
}

#[test]
fn status_observers_see_going_offline_and_coming_back() {
    use std::sync::{Arc, Mutex};
    let cloud = Probe::new();
    let config = Config::new("app")
        .local(MemoryPersistence::new())
        .cloud(cloud.clone())
        .cloud_sync_interval(Duration::from_secs(3600))
        .store_sync_delay(Duration::from_secs(3600))
        .sync_on_open(false);
    let ds = DataSync::open(config).unwrap();
    let seen: Arc<Mutex<Vec<(bool, u32)>>> = Arc::default();
    let sink = seen.clone();
    let sub = ds
        .observe_status(move |s| sink.lock().unwrap().push((s.online, s.failures)))
        .unwrap();
    ds.repo("User").unwrap().save(&json!({"n": 1})).unwrap();
    cloud.fail(true);
    ds.sync_now().unwrap();
    cloud.fail(false);
    ds.sync_now().unwrap();
    ds.drain_events().unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(true, 0), (false, 1), (true, 0)]
    );
    sub.unsubscribe();
    ds.sync_now().unwrap();
    ds.drain_events().unwrap();
    assert_eq!(seen.lock().unwrap().len(), 3, "called after unsubscribe");
}

/// The nice value of a thread, from `/proc/self/task/<tid>/stat` (field 19).
#[cfg(target_os = "linux")]
fn nice_of(stat: &str) -> i32 {
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    fields[16].parse().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn the_sync_worker_runs_below_the_app_threads() {
    let own = nice_of(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
    // The worker is named after the prefix; the kernel keeps 15 bytes of a name.
    let ds = DataSync::open(Config::new("zprio").local(MemoryPersistence::new())).unwrap();
    ds.repo("User").unwrap().save(&json!({"n": 1})).unwrap();
    ds.flush().unwrap();
    let mut workers = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() == "datasync-sync-z" {
            workers.push(nice_of(
                &std::fs::read_to_string(path.join("stat")).unwrap(),
            ));
        }
    }
    assert_eq!(workers, vec![(own + 10).min(19)], "the worker's nice value");
    // The thread that opened the instance keeps its own.
    let after = nice_of(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
    assert_eq!(after, own);
    ds.close().unwrap();
}
