//! Observers: current value first, then changes; collections coalesce; callbacks may
//! re-enter; unsubscribing stops calls; a panicking callback does not stop others.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{manual, ticking};
use datasync::{Config, DataSync, MemoryPersistence, QueryOptions, SortKey, Subscription};
use serde_json::{json, Value};

fn names(list: &[datasync::Entity]) -> Vec<String> {
    list.iter()
        .map(|e| e.value()["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn single_observer_gets_current_value_then_every_change() {
    let ds = DataSync::open(Config::new("app")).unwrap();
    let users = ds.repo("User").unwrap();
    let id = users.save(&json!({"name": "v1"})).unwrap();
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let sink = seen.clone();
    let on_dispatcher = Arc::new(Mutex::new(Vec::new()));
    let threads = on_dispatcher.clone();
    let _sub = users
        .observe(&id, move |e| {
            threads
                .lock()
                .unwrap()
                .push(std::thread::current().name().map(str::to_string));
            sink.lock()
                .unwrap()
                .push(e.map(|e| e.value()["name"].as_str().unwrap().to_string()))
        })
        .unwrap();
    users.save(&json!({"id": id, "name": "v2"})).unwrap();
    users.delete(&id).unwrap();
    ds.drain_events().unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Some("v1".into()), Some("v2".into()), None]
    );
    let threads = on_dispatcher.lock().unwrap();
    assert!(threads.iter().all(|t| t
        .as_deref()
        .is_some_and(|n| n.starts_with("datasync-dispatch"))));

    let missing: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let sink = missing.clone();
    let _sub2 = users
        .observe("User.nobody", move |e| {
            sink.lock().unwrap().push(e.map(|e| e.id().to_string()))
        })
        .unwrap();
    ds.drain_events().unwrap();
    assert_eq!(*missing.lock().unwrap(), vec![None]);
}

#[test]
fn collection_observer_coalesces_and_ends_on_the_final_state() {
    let ds = DataSync::open(Config::new("app")).unwrap();
    let users = ds.repo("User").unwrap();
    users.save(&json!({"name": "a", "team": "x"})).unwrap();
    let calls: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let sink = calls.clone();
    let query = QueryOptions::default()
        .where_eq("team", "x")
        .sort_by(SortKey::desc("name"));
    let _sub = users
        .observe_all(query, move |list| sink.lock().unwrap().push(names(list)))
        .unwrap();
    for i in 0..2000 {
        users
            .save(&json!({"name": format!("n{i:04}"), "team": if i % 2 == 0 { "x" } else { "y" }}))
            .unwrap();
    }
    ds.drain_events().unwrap();
    let calls = calls.lock().unwrap();
    assert!(
        calls[0].contains(&"a".to_string()),
        "first call is not the current list"
    );
    assert!(calls.len() < 2000, "not coalesced: {} calls", calls.len());
    let last = calls.last().unwrap();
    assert_eq!(last.len(), 1001);
    assert_eq!(last[0], "n1998");
    assert_eq!(last[1000], "a");
}

#[test]
fn changes_arriving_by_sync_reach_observers() {
    let cloud = MemoryPersistence::new();
    let a = DataSync::open(
        manual("app")
            .local(MemoryPersistence::new())
            .cloud(cloud.clone())
            .clock_source(ticking),
    )
    .unwrap();
    let b = DataSync::open(
        manual("app")
            .local(MemoryPersistence::new())
            .cloud(cloud.clone())
            .clock_source(ticking),
    )
    .unwrap();
    let ua = a.repo("User").unwrap();
    let ub = b.repo("User").unwrap();
    let id = ua.save(&json!({"name": "from A"})).unwrap();
    let single: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let list: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let (s1, s2) = (single.clone(), list.clone());
    let _o1 = ub
        .observe(&id, move |e| {
            s1.lock()
                .unwrap()
                .push(e.map(|e| e.value()["name"].as_str().unwrap().to_string()))
        })
        .unwrap();
    let _o2 = ub
        .observe_all(QueryOptions::default(), move |l| {
            s2.lock().unwrap().push(names(l))
        })
        .unwrap();
    b.drain_events().unwrap();
    a.sync_now().unwrap();
    b.sync_now().unwrap();
    b.drain_events().unwrap();
    ua.save(&json!({"id": id, "name": "edited on A"})).unwrap();
    a.sync_now().unwrap();
    b.sync_now().unwrap();
    b.drain_events().unwrap();
    assert_eq!(
        single.lock().unwrap().last().cloned().flatten().as_deref(),
        Some("edited on A")
    );
    assert!(single.lock().unwrap().contains(&Some("from A".into())));
    assert_eq!(
        list.lock().unwrap().last().unwrap(),
        &vec!["edited on A".to_string()]
    );
}

#[test]
fn an_observer_may_write_back_and_read() {
    let ds = Arc::new(DataSync::open(Config::new("app")).unwrap());
    let users = ds.repo("User").unwrap();
    let logs = ds.repo("Log").unwrap();
    let id = users.save(&json!({"name": "Ann"})).unwrap();
    let writer = logs.clone();
    let reader = users.clone();
    let _sub = users
        .observe(&id, move |e| {
            if let Some(e) = e {
                assert!(
                    reader.get(e.id()).unwrap().is_some(),
                    "read inside a callback failed"
                );
                writer.save(&json!({"saw": e.value()["name"]})).unwrap();
            }
        })
        .unwrap();
    users.save(&json!({"id": id, "name": "Ann 2"})).unwrap();
    ds.drain_events().unwrap();
    let mut seen: Vec<Value> = logs
        .query(&QueryOptions::default())
        .unwrap()
        .iter()
        .map(|e| e.value()["saw"].clone())
        .collect();
    seen.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    assert_eq!(seen, vec![json!("Ann"), json!("Ann 2")]);
}

#[test]
fn unsubscribe_inside_the_callback_and_after_return_stops_calls() {
    let ds = DataSync::open(Config::new("app")).unwrap();
    let users = ds.repo("User").unwrap();
    let id = users.save(&json!({"n": 0})).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let slot: Arc<Mutex<Option<Subscription>>> = Arc::default();
    let (c, s) = (calls.clone(), slot.clone());
    let sub = users
        .observe(&id, move |_| {
            if c.fetch_add(1, Ordering::SeqCst) == 1 {
                if let Some(sub) = s.lock().unwrap().as_ref() {
                    sub.unsubscribe();
                    sub.unsubscribe();
                }
            }
        })
        .unwrap();
    *slot.lock().unwrap() = Some(sub);
    for n in 1..10 {
        users.save(&json!({"id": id, "n": n})).unwrap();
    }
    ds.drain_events().unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "calls after unsubscribing inside the callback"
    );

    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let sub = users
        .observe_all(QueryOptions::default(), move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    ds.drain_events().unwrap();
    for n in 0..100 {
        users.save(&json!({"n": n})).unwrap();
    }
    drop(sub);
    let after = count.load(Ordering::SeqCst);
    for n in 0..100 {
        users.save(&json!({"n": n})).unwrap();
    }
    ds.drain_events().unwrap();
    assert_eq!(
        count.load(Ordering::SeqCst),
        after,
        "called after the subscription was dropped"
    );
}

#[test]
fn a_panicking_callback_does_not_stop_the_dispatcher() {
    let ds = DataSync::open(Config::new("app")).unwrap();
    let users = ds.repo("User").unwrap();
    let id = users.save(&json!({"n": 0})).unwrap();
    let _bad = users.observe(&id, |_| panic!("observer bug")).unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let _good = users
        .observe(&id, move |_| {
            s.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    users.save(&json!({"id": id, "n": 1})).unwrap();
    ds.drain_events().unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[test]
fn close_delivers_pending_notifications_and_refuses_later_calls() {
    let ds = DataSync::open(Config::new("app")).unwrap();
    let users = ds.repo("User").unwrap();
    let last = Arc::new(Mutex::new(None));
    let l = last.clone();
    let _sub = users
        .observe_all(QueryOptions::default(), move |list| {
            *l.lock().unwrap() = Some(list.len())
        })
        .unwrap();
    for n in 0..500 {
        users.save(&json!({"n": n})).unwrap();
    }
    ds.close().unwrap();
    ds.close().unwrap();
    assert_eq!(*last.lock().unwrap(), Some(500));
    assert_eq!(
        users.save(&json!({"n": 1})).unwrap_err().kind(),
        datasync::ErrorKind::Closed
    );
    assert_eq!(
        ds.sync_now().unwrap_err().kind(),
        datasync::ErrorKind::Closed
    );
}

#[test]
fn close_from_an_observer_is_refused_not_deadlocked() {
    let ds = Arc::new(DataSync::open(Config::new("app")).unwrap());
    let users = ds.repo("User").unwrap();
    let result = Arc::new(Mutex::new(None));
    let (r, handle) = (result.clone(), Arc::downgrade(&ds));
    let _sub = users
        .observe("User.x", move |_| {
            if let Some(ds) = handle.upgrade() {
                *r.lock().unwrap() = Some(ds.close().map_err(|e| e.kind()));
                let _ = ds.flush();
            }
        })
        .unwrap();
    ds.drain_events().unwrap();
    assert_eq!(
        *result.lock().unwrap(),
        Some(Err(datasync::ErrorKind::WouldDeadlock))
    );
}

#[test]
fn a_partition_arriving_by_sync_reaches_collection_observers() {
    // The partition reaches B's local tier only (B's store does not hold it yet); a
    // query over every team reads it, so the observers must see it too.
    let cloud = MemoryPersistence::new();
    let open = || {
        DataSync::open(
            manual("app")
                .strategy(datasync::FieldStrategy::new("team"))
                .local(MemoryPersistence::new())
                .cloud(cloud.clone())
                .clock_source(ticking),
        )
        .unwrap()
    };
    let (a, b) = (open(), open());
    let ub = b.repo("User").unwrap();
    ub.save(&json!({"team": "x", "name": "on B"})).unwrap();
    let list: Arc<Mutex<Vec<String>>> = Arc::default();
    let changed: Arc<Mutex<Vec<String>>> = Arc::default();
    let (l, c) = (list.clone(), changed.clone());
    let _all = ub
        .observe_all(QueryOptions::default(), move |x| {
            *l.lock().unwrap() = names(x)
        })
        .unwrap();
    let _changes = ub
        .observe_changes(QueryOptions::default(), move |x| {
            *c.lock().unwrap() = names(x.list())
        })
        .unwrap();
    b.drain_events().unwrap();
    a.repo("User")
        .unwrap()
        .save(&json!({"team": "q", "name": "on A"}))
        .unwrap();
    a.sync_now().unwrap();
    b.sync_now().unwrap();
    b.drain_events().unwrap();
    let fresh = names(&ub.query(&QueryOptions::default()).unwrap());
    assert_eq!(fresh.len(), 2, "the query reads the new partition");
    assert_eq!(*list.lock().unwrap(), fresh);
    assert_eq!(*changed.lock().unwrap(), fresh);
}

#[test]
fn a_round_observer_runs_after_the_rounds_entity_deliveries_and_before_its_emissions() {
    let ds = DataSync::open(Config::new("app")).unwrap();
    let users = ds.repo("User").unwrap();
    let ids: Vec<String> = (0..3)
        .map(|i| users.save(&json!({"name": format!("u{i}")})).unwrap())
        .collect();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut subs: Vec<Subscription> = Vec::new();
    for id in &ids {
        let log = log.clone();
        subs.push(
            users
                .observe(id, move |_| log.lock().unwrap().push("entity".into()))
                .unwrap(),
        );
    }
    let sink = log.clone();
    let rounds = ds
        .observe_rounds(move || sink.lock().unwrap().push("round".into()))
        .unwrap();
    let sink = log.clone();
    subs.push(
        users
            .observe_all(QueryOptions::default(), move |list| {
                sink.lock().unwrap().push(format!("list {}", list.len()))
            })
            .unwrap(),
    );
    ds.drain_events().unwrap();
    log.lock().unwrap().clear();
    users
        .save_many(
            &ids.iter()
                .map(|id| json!({"id": id, "n": 1}))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    ds.drain_events().unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["entity", "entity", "entity", "round", "list 3"],
        "one save_many is one round"
    );
    // Unsubscribed, it is not called again.
    drop(rounds);
    log.lock().unwrap().clear();
    users.save(&json!({"id": ids[0], "n": 2})).unwrap();
    ds.drain_events().unwrap();
    assert_eq!(*log.lock().unwrap(), ["entity", "list 3"]);
}

#[test]
fn a_burst_of_saves_gives_a_collection_observer_few_emissions() {
    let ds = DataSync::open(Config::new("app")).unwrap();
    let users = ds.repo("User").unwrap();
    let id = users.save(&json!({"n": 0})).unwrap();
    let emissions = Arc::new(AtomicUsize::new(0));
    let count = emissions.clone();
    let last: Arc<Mutex<Option<Value>>> = Arc::default();
    let seen = last.clone();
    let _sub = users
        .observe_all(QueryOptions::default(), move |list| {
            count.fetch_add(1, Ordering::SeqCst);
            *seen.lock().unwrap() = list.first().map(|e| e.value()["n"].clone());
        })
        .unwrap();
    ds.drain_events().unwrap();
    emissions.store(0, Ordering::SeqCst);
    let saves = 2_000;
    let began = std::time::Instant::now();
    for n in 1..=saves {
        users.save(&json!({"id": id, "n": n})).unwrap();
    }
    ds.drain_events().unwrap();
    let took = began.elapsed();
    let got = emissions.load(Ordering::SeqCst);
    assert_eq!(*last.lock().unwrap(), Some(json!(saves)));
    // Rounds end at most once per 2 ms while events keep coming (and once more for
    // the barrier of `drain_events`): the count follows the time, not the saves.
    let most = (took.as_micros() / 2_000) as usize + 2;
    assert!(
        got >= 1 && got <= most,
        "{got} emissions for {saves} saves in {took:?}"
    );
}
