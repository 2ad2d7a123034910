//! "Is it synced?": the writes an instance lists as not yet durable locally or not yet
//! in the cloud, waiting for the cloud, and the status count.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{manual, Probe};
use datasync::{
    AdapterResult, DataSync, ErrorKind, MemoryPersistence, PendingWrite, PendingWrites, Persistence,
};
use serde_json::json;

fn ids(list: &[PendingWrite]) -> Vec<&str> {
    list.iter().map(|w| w.id.as_str()).collect()
}

fn three_tiers(cloud: &Probe) -> DataSync {
    DataSync::open(
        manual("app")
            .local(MemoryPersistence::new())
            .cloud(cloud.clone()),
    )
    .unwrap()
}

#[test]
fn a_save_is_pending_locally_then_for_the_cloud_then_not_at_all() {
    let cloud = Probe::new();
    let ds = three_tiers(&cloud);
    let users = ds.repo("User").unwrap();
    let id = users.save(&json!({"name": "Ada"})).unwrap();

    let pending = ds.pending_writes().unwrap();
    assert_eq!(ids(&pending.local), [id.as_str()]);
    assert!(pending.cloud.is_empty(), "{pending:?}");
    assert_eq!(pending.local[0].name, "User");
    assert!(!pending.local[0].key.is_empty());
    assert_eq!(ds.status().pending_cloud, 0);

    ds.flush().unwrap();
    let pending = ds.pending_writes().unwrap();
    assert!(pending.local.is_empty(), "{pending:?}");
    assert_eq!(ids(&pending.cloud), [id.as_str()]);
    assert_eq!(ds.status().pending_cloud, 1);

    ds.sync_now().unwrap();
    assert_eq!(ds.pending_writes().unwrap(), PendingWrites::default());
    assert_eq!(ds.status().pending_cloud, 0);
    assert!(ds.wait_in_cloud("User", &id, Duration::ZERO).unwrap());
}

#[test]
fn deletes_are_pending_too() {
    let cloud = Probe::new();
    let ds = three_tiers(&cloud);
    let users = ds.repo("User").unwrap();
    let id = users.save(&json!({"name": "Ada"})).unwrap();
    ds.sync_now().unwrap();
    assert_eq!(ds.pending_writes().unwrap(), PendingWrites::default());

    assert!(users.delete(&id).unwrap());
    assert_eq!(ids(&ds.pending_writes().unwrap().local), [id.as_str()]);
    ds.flush().unwrap();
    assert_eq!(ids(&ds.pending_writes().unwrap().cloud), [id.as_str()]);
    ds.sync_now().unwrap();
    assert_eq!(ds.pending_writes().unwrap(), PendingWrites::default());
}

#[test]
fn an_entity_written_twice_is_listed_once_oldest_first() {
    let cloud = Probe::new();
    let ds = three_tiers(&cloud);
    let users = ds.repo("User").unwrap();
    let a = users.save(&json!({"name": "a"})).unwrap();
    let b = users.save(&json!({"name": "b"})).unwrap();
    users.save(&json!({"id": a, "name": "a2"})).unwrap();
    assert_eq!(
        ids(&ds.pending_writes().unwrap().local),
        [b.as_str(), a.as_str()]
    );
}

/// A local tier whose next partition write waits until the test lets it go.
#[derive(Clone)]
struct Gate {
    inner: MemoryPersistence,
    armed: Arc<AtomicBool>,
    entered: Arc<Mutex<Option<mpsc::Sender<()>>>>,
    open: Arc<(Mutex<bool>, Condvar)>,
}

impl Gate {
    fn new() -> (Gate, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        let gate = Gate {
            inner: MemoryPersistence::new(),
            armed: Arc::new(AtomicBool::new(true)),
            entered: Arc::new(Mutex::new(Some(tx))),
            open: Arc::new((Mutex::new(false), Condvar::new())),
        };
        (gate, rx)
    }

    fn release(&self) {
        let (open, cv) = &*self.open;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
}

impl Persistence for Gate {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        self.inner.load(key)
    }

    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        if !key.starts_with("!datasync") && self.armed.swap(false, Ordering::SeqCst) {
            if let Some(tx) = self.entered.lock().unwrap().take() {
                let _ = tx.send(());
            }
            let (open, cv) = &*self.open;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
        }
        self.inner.store(key, bytes)
    }

    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        self.inner.clear(key)
    }

    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        self.inner.keys()
    }
}

#[test]
fn a_write_made_while_its_partition_syncs_stays_pending() {
    let (gate, entered) = Gate::new();
    let ds =
        Arc::new(DataSync::open(manual("app").local(gate.clone()).cloud(Probe::new())).unwrap());
    let users = ds.repo("User").unwrap();
    let first = users.save(&json!({"name": "first"})).unwrap();
    let flushing = {
        let ds = ds.clone();
        std::thread::spawn(move || ds.flush())
    };
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the flush reaches the local tier");
    // The sync of this partition is half way: this write is not part of it.
    let second = users.save(&json!({"name": "second"})).unwrap();
    let during = ds.pending_writes().unwrap();
    assert_eq!(ids(&during.local), [first.as_str(), second.as_str()]);
    gate.release();
    flushing.join().unwrap().unwrap();

    let after = ds.pending_writes().unwrap();
    assert_eq!(ids(&after.local), [second.as_str()], "{after:?}");
    assert_eq!(ids(&after.cloud), [first.as_str()], "{after:?}");
    ds.flush().unwrap();
    let last = ds.pending_writes().unwrap();
    assert!(last.local.is_empty(), "{last:?}");
    assert_eq!(ids(&last.cloud), [first.as_str(), second.as_str()]);
}

#[test]
fn wait_in_cloud_returns_once_another_thread_syncs() {
    let cloud = Probe::new();
    let ds = Arc::new(three_tiers(&cloud));
    let users = ds.repo("User").unwrap();
    let id = users.save(&json!({"name": "Ada"})).unwrap();
    let syncing = {
        let ds = ds.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            ds.sync_now().unwrap();
        })
    };
    assert!(ds
        .wait_in_cloud("User", &id, Duration::from_secs(20))
        .unwrap());
    assert!(common::audit_blobs(&cloud.inner)
        .values()
        .any(|p| p.get("User", &id).is_some()));
    syncing.join().unwrap();
    // Nothing of it pending: at once.
    assert!(ds.wait_in_cloud("User", &id, Duration::ZERO).unwrap());
    assert!(ds.wait_all_in_cloud(Duration::ZERO).unwrap());
}

#[test]
fn wait_in_cloud_times_out_while_the_cloud_is_offline() {
    let cloud = Probe::new();
    cloud.fail(true);
    let ds = three_tiers(&cloud);
    let users = ds.repo("User").unwrap();
    let id = users.save(&json!({"name": "Ada"})).unwrap();
    let stats = ds.sync_now().unwrap();
    assert!(stats.offline, "{stats:?}");
    let pending = ds.pending_writes().unwrap();
    assert_eq!(
        ids(&pending.cloud),
        [id.as_str()],
        "a failed sync leaves it pending"
    );
    assert_eq!(ds.status().pending_cloud, 1);

    let started = Instant::now();
    assert!(!ds
        .wait_in_cloud("User", &id, Duration::from_millis(150))
        .unwrap());
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(!ds.wait_all_in_cloud(Duration::from_millis(20)).unwrap());

    cloud.fail(false);
    ds.sync_now().unwrap();
    assert!(ds.wait_in_cloud("User", &id, Duration::ZERO).unwrap());
    assert_eq!(ds.status().pending_cloud, 0);
}

#[test]
fn without_a_local_tier_writes_are_pending_for_the_cloud_at_once() {
    let cloud = Probe::new();
    let ds = DataSync::open(manual("app").cloud(cloud.clone())).unwrap();
    let users = ds.repo("User").unwrap();
    let id = users.save(&json!({"name": "Ada"})).unwrap();
    let pending = ds.pending_writes().unwrap();
    assert!(pending.local.is_empty(), "{pending:?}");
    assert_eq!(ids(&pending.cloud), [id.as_str()]);
    assert_eq!(ds.status().pending_cloud, 1);

    cloud.fail(true);
    assert!(ds.flush().is_err());
    assert_eq!(ds.status().pending_cloud, 1);
    cloud.fail(false);
    // The flush is the sync to the cloud here.
    ds.flush().unwrap();
    assert_eq!(ds.pending_writes().unwrap(), PendingWrites::default());
    assert!(ds.wait_in_cloud("User", &id, Duration::ZERO).unwrap());
}

#[test]
fn without_a_cloud_nothing_is_pending_for_it() {
    let ds = DataSync::open(manual("app").local(MemoryPersistence::new())).unwrap();
    let users = ds.repo("User").unwrap();
    let id = users.save(&json!({"name": "Ada"})).unwrap();
    assert_eq!(ids(&ds.pending_writes().unwrap().local), [id.as_str()]);
    ds.flush().unwrap();
    assert_eq!(ds.pending_writes().unwrap(), PendingWrites::default());
    assert_eq!(ds.status().pending_cloud, 0);
    let err = ds.wait_in_cloud("User", &id, Duration::ZERO).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
}

#[test]
fn status_observers_see_pending_cloud_change() {
    let cloud = Probe::new();
    let ds = three_tiers(&cloud);
    let (tx, rx) = mpsc::channel();
    let _sub = ds
        .observe_status(move |s| {
            let _ = tx.send(s.pending_cloud);
        })
        .unwrap();
    let users = ds.repo("User").unwrap();
    users.save(&json!({"name": "Ada"})).unwrap();
    ds.flush().unwrap();
    ds.sync_now().unwrap();
    ds.drain_events().unwrap();
    let seen: Vec<usize> = rx.try_iter().collect();
    assert_eq!(seen.first(), Some(&0), "{seen:?}");
    assert!(seen.contains(&1), "{seen:?}");
    assert_eq!(seen.last(), Some(&0), "{seen:?}");
}

#[test]
fn waiting_from_an_observer_callback_fails_instead_of_hanging() {
    let cloud = Probe::new();
    let ds = Arc::new(three_tiers(&cloud));
    let users = ds.repo("User").unwrap();
    let id = users.save(&json!({"name": "Ada"})).unwrap();
    let (tx, rx) = mpsc::channel();
    let weak = Arc::downgrade(&ds);
    let sub = ds
        .observe_status(move |_| {
            if let Some(ds) = weak.upgrade() {
                let _ = tx.send(ds.wait_in_cloud("User", &id, Duration::from_secs(30)));
            }
        })
        .unwrap();
    let answer = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(answer.unwrap_err().kind(), ErrorKind::WouldDeadlock);
    sub.unsubscribe();
}

#[test]
fn a_wait_ends_when_the_instance_closes() {
    let cloud = Probe::new();
    cloud.fail(true);
    let ds = Arc::new(three_tiers(&cloud));
    let id = ds.repo("User").unwrap().save(&json!({})).unwrap();
    let waiting = {
        let ds = ds.clone();
        std::thread::spawn(move || ds.wait_in_cloud("User", &id, Duration::from_secs(60)))
    };
    std::thread::sleep(Duration::from_millis(50));
    ds.close().unwrap();
    let err = waiting.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
}

/// The tracker is kept in memory: after a restart, writes an earlier run made are not
/// listed, though the next cloud sync still takes them along.
#[test]
fn after_a_restart_earlier_writes_are_not_listed() {
    let local = MemoryPersistence::new();
    let cloud = Probe::new();
    cloud.fail(true);
    let ds = DataSync::open(manual("app").local(local.clone()).cloud(cloud.clone())).unwrap();
    let id = ds.repo("User").unwrap().save(&json!({})).unwrap();
    ds.flush().unwrap();
    assert_eq!(ids(&ds.pending_writes().unwrap().cloud), [id.as_str()]);
    ds.close().unwrap();
    drop(ds);

    cloud.fail(false);
    let ds = DataSync::open(manual("app").local(local).cloud(cloud.clone())).unwrap();
    assert_eq!(ds.pending_writes().unwrap(), PendingWrites::default());
    assert_eq!(ds.status().pending_cloud, 0);
    assert!(ds.wait_in_cloud("User", &id, Duration::ZERO).unwrap());
    ds.sync_now().unwrap();
    assert!(common::audit_blobs(&cloud.inner)
        .values()
        .any(|p| p.get("User", &id).is_some()));
}

#[test]
fn a_closed_instance_refuses() {
    let ds = three_tiers(&Probe::new());
    ds.close().unwrap();
    assert_eq!(ds.pending_writes().unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(
        ds.wait_all_in_cloud(Duration::ZERO).unwrap_err().kind(),
        ErrorKind::Closed
    );
}
