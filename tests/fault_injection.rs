//! An adapter that fails on the k-th call, for every k over a sync of a few
//! partitions (failing before the call, or after it took effect): once the fault
//! clears and sync runs again, nothing is lost and every tier converges.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datasync::{
    AdapterError, AdapterResult, Config, DataSync, DirOptions, DirPersistence, FieldStrategy,
    MemoryPersistence, Persistence, TierId,
};
use serde_json::{json, Value};

#[derive(Default)]
struct Plan {
    armed: AtomicBool,
    calls: AtomicUsize,
    fail_at: AtomicUsize,
    /// Fail after the call took effect (a write that landed but reported failure).
    after: AtomicBool,
}

struct Faulty<P> {
    inner: P,
    plan: Arc<Plan>,
}

impl<P: Persistence> Faulty<P> {
    fn call<T>(&mut self, op: impl FnOnce(&mut P) -> AdapterResult<T>) -> AdapterResult<T> {
        let plan = &self.plan;
        if !plan.armed.load(Ordering::SeqCst) {
            return op(&mut self.inner);
        }
        let n = plan.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n != plan.fail_at.load(Ordering::SeqCst) {
            return op(&mut self.inner);
        }
        if plan.after.load(Ordering::SeqCst) {
            let _ = op(&mut self.inner);
        }
        Err(AdapterError::new(format!("injected fault on call {n}")))
    }
}

impl<P: Persistence> Persistence for Faulty<P> {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        self.call(|p| p.load(key))
    }
    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        self.call(|p| p.store(key, bytes))
    }
    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        self.call(|p| p.clear(key))
    }
    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        self.call(|p| p.keys())
    }
}

fn config(local: impl Persistence + 'static, cloud: impl Persistence + 'static) -> Config {
    Config::new("app")
        .strategy(FieldStrategy::new("region"))
        .local(local)
        .cloud(cloud)
        .store_sync_delay(Duration::from_secs(3600))
        .cloud_sync_interval(Duration::from_secs(3600))
        .retry(Duration::from_millis(1), Duration::from_millis(2))
        .sync_on_open(false)
}

fn name_of(ds: &DataSync, id: &str) -> Option<Value> {
    ds.repo("User")
        .unwrap()
        .get(id)
        .unwrap()
        .map(|e| e.value()["name"].clone())
}

/// One run with the fault on call `fail_at` (never, for `usize::MAX`); returns how
/// many adapter calls the faulty tiers saw while armed.
fn scenario(fail_at: usize, after: bool) -> usize {
    let tmp = tempfile::tempdir().unwrap();
    let cloud = MemoryPersistence::new();
    let plan = Arc::new(Plan::default());
    plan.fail_at.store(fail_at, Ordering::SeqCst);
    plan.after.store(after, Ordering::SeqCst);

    // Device B (never faulty) seeds the cloud with two partitions.
    let b = DataSync::open(config(MemoryPersistence::new(), cloud.clone())).unwrap();
    let b_users = b.repo("User").unwrap();
    let b1 = b_users
        .save(&json!({"name": "b1", "region": "eu"}))
        .unwrap();
    let b2 = b_users
        .save(&json!({"name": "b2", "region": "us"}))
        .unwrap();
    b.sync_now().unwrap();

    // Device A: its local directory and its cloud link both fail on the k-th call.
    let local =
        DirPersistence::open_with(tmp.path().join("a"), DirOptions { durable: false }).unwrap();
    let a = DataSync::open(config(
        Faulty {
            inner: local,
            plan: plan.clone(),
        },
        Faulty {
            inner: cloud.clone(),
            plan: plan.clone(),
        },
    ))
    .unwrap();
    let a_users = a.repo("User").unwrap();
    plan.armed.store(true, Ordering::SeqCst);
    let mut mine = Vec::new();
    for (name, region) in [("a1", "eu"), ("a2", "us"), ("a3", "asia")] {
        // A save that fails (its partition could not be read) writes nothing.
        if let Ok(id) = a_users.save(&json!({"name": name, "region": region})) {
            mine.push((id, name.to_string()));
        }
    }
    let _ = a.flush();
    let _ = a.sync_now();
    std::thread::sleep(Duration::from_millis(2));
    // A edits B's eu entity (it reads it through from the cloud), then syncs again.
    if a_users
        .save(&json!({"id": b1, "name": "b1 by a", "region": "eu"}))
        .is_ok()
    {
        mine.push((b1.clone(), "b1 by a".to_string()));
    }
    let _ = a.sync_now();
    std::thread::sleep(Duration::from_millis(2));
    b_users
        .save(&json!({"id": b2, "name": "b2 by b", "region": "us"}))
        .unwrap();
    b.sync_now().unwrap();
    plan.armed.store(false, Ordering::SeqCst);
    let calls = plan.calls.load(Ordering::SeqCst);

    // The fault is gone: sync, and everything is everywhere.
    a.flush().unwrap();
    let stats = a.sync_now().unwrap();
    assert!(
        stats.errors.is_empty(),
        "k={fail_at} after={after}: {stats:?}"
    );
    b.sync_now().unwrap();
    a.sync_now().unwrap();
    let context = format!(
        "fault on call {fail_at} ({} the call)",
        if after { "after" } else { "before" }
    );
    let mut expected: Vec<(String, String)> = mine.clone();
    if !mine.iter().any(|(id, _)| *id == b1) {
        expected.push((b1.clone(), "b1".into()));
    }
    expected.push((b2.clone(), "b2 by b".into()));
    for ds in [&a, &b] {
        for (id, name) in &expected {
            assert_eq!(name_of(ds, id), Some(json!(name)), "{context}: {id}");
        }
        assert!(
            ds.audit().unwrap().is_empty(),
            "{context}: {:?}",
            ds.audit()
        );
        assert_eq!(
            ds.tier_meta(TierId::Local).unwrap().root(),
            ds.tier_meta(TierId::Cloud).unwrap().root(),
            "{context}"
        );
    }
    assert_eq!(
        a.tier_meta(TierId::Local).unwrap().root(),
        b.tier_meta(TierId::Local).unwrap().root(),
        "{context}"
    );
    a.close().unwrap();
    b.close().unwrap();

    // What A flushed is in its directory, with no cloud at all.
    let alone = DataSync::open(
        Config::new("app")
            .strategy(FieldStrategy::new("region"))
            .local(DirPersistence::open(tmp.path().join("a")).unwrap()),
    )
    .unwrap();
    for (id, name) in &expected {
        assert_eq!(
            name_of(&alone, id),
            Some(json!(name)),
            "{context}: {id} in A's directory"
        );
    }
    assert!(alone.audit().unwrap().is_empty(), "{context}");
    alone.close().unwrap();
    calls
}

#[test]
fn every_single_fault_heals_after_the_next_sync() {
    let total = scenario(usize::MAX, false);
    assert!(total > 20, "the scenario makes {total} adapter calls");
    eprintln!("injecting a fault at each of {total} adapter calls, before and after the call");
    for k in 1..=total {
        scenario(k, false);
        scenario(k, true);
    }
}
