//! A persistence callback that calls back into the library gets `WouldDeadlock`,
//! never a hang: the call it is inside holds the lock the re-entry would wait on.

mod common;

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use datasync::{AdapterResult, DataSync, ErrorKind, MemoryPersistence, Persistence};
use serde_json::json;

type Calls = Arc<Mutex<Vec<(String, Option<ErrorKind>)>>>;

/// A local tier that, inside every `load` and `store`, tries the library's calls.
struct Reentrant {
    inner: MemoryPersistence,
    ds: Arc<OnceLock<Weak<DataSync>>>,
    calls: Calls,
}

impl Reentrant {
    fn reenter(&self, during: &str) {
        let Some(ds) = self.ds.get().and_then(Weak::upgrade) else {
            return;
        };
        let users = ds.repo("User");
        let mut calls = self.calls.lock().unwrap();
        let mut note = |what: &str, r: datasync::Result<()>| {
            calls.push((format!("{what} during {during}"), r.err().map(|e| e.kind())));
        };
        note("flush", ds.flush());
        note("sync_now", ds.sync_now().map(|_| ()));
        note("close", ds.close());
        if let Ok(users) = users {
            note("save", users.save(&json!({"name": "inside"})).map(|_| ()));
            note("get", users.get("User.abcdefghijklmnop").map(|_| ()));
            note("query", users.query(&Default::default()).map(|_| ()));
        }
    }
}

impl Persistence for Reentrant {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        if !key.starts_with("!datasync") {
            self.reenter("load");
        }
        self.inner.load(key)
    }
    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        if !key.starts_with("!datasync") {
            self.reenter("store");
        }
        self.inner.store(key, bytes)
    }
    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        self.inner.clear(key)
    }
}

#[test]
fn calls_from_inside_a_persistence_callback_return_would_deadlock() {
    // A hang is the failure this test exists for: give up loudly instead.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(60));
        eprintln!("re-entry from a persistence callback hung");
        std::process::exit(1);
    });
    let slot = Arc::new(OnceLock::new());
    let calls: Calls = Arc::default();
    let local = MemoryPersistence::new();
    let ds = Arc::new(
        DataSync::open(common::manual("app").local(Reentrant {
            inner: local.clone(),
            ds: slot.clone(),
            calls: calls.clone(),
        }))
        .unwrap(),
    );
    slot.set(Arc::downgrade(&ds)).unwrap();
    let users = ds.repo("User").unwrap();
    // Hydration on this thread loads from local (its `load` re-enters), the flush on
    // the worker stores (its `store` re-enters).
    let id = users.save(&json!({"name": "outside"})).unwrap();
    ds.flush().unwrap();
    let seen = std::mem::take(&mut *calls.lock().unwrap());
    assert!(
        seen.iter().any(|(what, _)| what.ends_with("during load")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|(what, _)| what.ends_with("during store")),
        "{seen:?}"
    );
    for (what, result) in &seen {
        assert_eq!(*result, Some(ErrorKind::WouldDeadlock), "{what}");
    }
    // Nothing the callbacks tried took effect, and the instance works on.
    assert!(users.get(&id).unwrap().is_some());
    assert_eq!(users.query(&Default::default()).unwrap().len(), 1);
    ds.close().unwrap();
}
