//! Bounded partitions (DESIGN §10 "Reads and memory", `datasync::split`): the new
//! entities of a growing name spread over sub-partitions of about the bound, an id
//! still names its partition, a first `get` reads one small partition, and queries
//! and collection observers read every sub-partition, sorting and filtering as they
//! would over one partition.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{manual, Meter};
use datasync::query::SortKey;
use datasync::split::{bits_of, split_key};
use datasync::{
    Config, DataSync, DateGranularity, DateStrategy, Entity, FieldStrategy, KeyStrategy,
    MemoryPersistence, QueryOptions, TierId,
};
use serde_json::{json, Value};

/// User i: about 200 bytes of JSON, created in one of three months.
fn user(i: usize) -> Value {
    let month = 1 + i % 3;
    let region = ["eu", "us", "ap"][i % 3];
    json!({
        "name": format!("User {i}"),
        "email": format!("user{i}@example.com"),
        "n": i,
        "group": i % 7,
        "region": region,
        "tags": [format!("tag{}", i % 10), format!("tag{}", i % 4)],
        "createdAt": format!("2026-{month:02}-{:02}T10:00:00.000Z", 1 + i % 28),
    })
}

fn users(range: std::ops::Range<usize>) -> Vec<Value> {
    range.map(user).collect()
}

/// The recorded entries of a tier: key and count of Users.
fn entries(ds: &DataSync, tier: TierId) -> Vec<(String, u64)> {
    ds.tier_meta(tier)
        .unwrap()
        .entries
        .into_iter()
        .map(|(k, e)| (k, e.entities.get("User").map_or(0, |c| c.count)))
        .collect()
}

#[test]
fn new_entities_spread_over_partitions_of_about_the_bound() {
    let local = MemoryPersistence::new();
    let ds = DataSync::open(manual("app").local(local.clone())).unwrap();
    let repo = ds.repo("User").unwrap();
    let mut ids = Vec::new();
    for batch in 0..20 {
        ids.extend(
            repo.save_many(&users(batch * 1000..(batch + 1) * 1000))
                .unwrap(),
        );
    }
    for i in 20_000..20_500 {
        ids.push(repo.save(&user(i)).unwrap());
    }
    ds.flush().unwrap();

    let parts = entries(&ds, TierId::Local);
    // Depths 0 to 4 for 20,500 users at a bound of 1,000: 1 + 2 + 4 + 8 + 16.
    assert!(parts.len() > 16 && parts.len() <= 31, "{parts:?}");
    assert_eq!(parts.iter().map(|(_, c)| c).sum::<u64>(), 20_500);
    for (key, count) in &parts {
        assert!(*count <= 1_200, "{key} holds {count} users");
        let base = split_key(key, '.').map_or(key.as_str(), |(base, _)| base);
        assert_eq!(base, "app.User", "{key}");
    }
    // The first thousand went to the name's own partition, as every id did before.
    assert!(ids[..1000].iter().all(|id| id.matches('.').count() == 1));
    // Each label is the leading bits of its id's random part, so the id names its
    // partition, and a get finds every one.
    for (i, id) in ids.iter().enumerate().step_by(97) {
        let (logical, ident) = id.rsplit_once('.').unwrap();
        if let Some((base, bits)) = split_key(logical, '.') {
            assert_eq!(base, "User");
            assert_eq!(bits_of(ident, bits.len() as u32).as_deref(), Some(bits));
        }
        let got = repo.get(id).unwrap().expect("every user is found");
        assert_eq!(got.value()["n"], json!(i));
    }
    ds.close().unwrap();

    // Reopened, the instance counts what its tier holds and keeps splitting deeper.
    let ds = DataSync::open(manual("app").local(local.clone())).unwrap();
    let id = ds.repo("User").unwrap().save(&user(99_999)).unwrap();
    let (logical, _) = id.rsplit_once('.').unwrap();
    let (_, bits) = split_key(logical, '.').expect("a sub-partition");
    assert_eq!(bits.len(), 4, "{id}");
    ds.close().unwrap();

    // Without a bound, every new user goes to the one partition.
    let ds = DataSync::open(manual("app").unbounded_partitions()).unwrap();
    for batch in 0..3 {
        ds.repo("User")
            .unwrap()
            .save_many(&users(batch * 1000..(batch + 1) * 1000))
            .unwrap();
    }
    assert_eq!(
        ds.tier_keys(TierId::Store).unwrap(),
        vec!["app.User".to_string()]
    );
}

#[test]
fn a_first_get_in_a_tier_of_100k_entities_loads_at_most_300_kb() {
    let local = Meter::default();
    let ds = DataSync::open(manual("app").format(2).local(local.clone())).unwrap();
    let repo = ds.repo("User").unwrap();
    let mut ids = Vec::new();
    for batch in 0..10 {
        ids.extend(
            repo.save_many(&users(batch * 10_000..(batch + 1) * 10_000))
                .unwrap(),
        );
    }
    ds.close().unwrap();

    let ds = DataSync::open(manual("app").format(2).local(local.clone())).unwrap();
    local.reset();
    let got = ds.repo("User").unwrap().get(&ids[54_321]).unwrap();
    assert_eq!(got.unwrap().value()["n"], json!(54_321));
    assert!(
        local.loaded() <= 300_000,
        "a first get loaded {} bytes",
        local.loaded()
    );
    let all = ds
        .repo("User")
        .unwrap()
        .query(&QueryOptions::default())
        .unwrap();
    assert_eq!(all.len(), 100_000);
    ds.close().unwrap();
}

#[test]
fn one_edit_in_a_tier_of_1000_bounded_partitions_stores_at_most_2_kb() {
    let local = Meter::default();
    let ds = DataSync::open(
        manual("app")
            .format(2)
            .partition_bound(10)
            .local(local.clone()),
    )
    .unwrap();
    let repo = ds.repo("User").unwrap();
    let ids = repo.save_many(&users(0..7_000)).unwrap();
    ds.flush().unwrap();
    let parts = ds.tier_keys(TierId::Local).unwrap().len();
    assert!(parts >= 900, "{parts} partitions");

    local.reset();
    let mut edited = user(7);
    edited["id"] = json!(ids[7]);
    edited["n"] = json!(-1);
    repo.save(&edited).unwrap();
    ds.flush().unwrap();
    // The piece (the 230-byte user and its header), the partition's index, one
    // summary leaf, one node and the root.
    assert!(
        local.stored() <= 2 * 1024,
        "a flush stored {} bytes",
        local.stored()
    );
    assert!(ds.audit().unwrap().is_empty());
}

/// A device with a small bound (many sub-partitions) and one without a bound, given
/// the same users, the same deletes and edits: every query answers alike, and a
/// collection observer on the split device ends equal to its query.
fn queries_alike(strategy: impl Fn() -> Box<dyn KeyStrategy>, filters: &[Value]) {
    let open = |mut config: Config| {
        config.strategy = Arc::from(strategy());
        DataSync::open(config.local(MemoryPersistence::new())).unwrap()
    };
    let split = open(manual("app").partition_bound(8));
    let whole = open(manual("app").unbounded_partitions());

    let sorted = QueryOptions::default()
        .sort_by(SortKey::desc("group"))
        .sort_by(SortKey::asc("n"));
    let seen: Arc<Mutex<Vec<Entity>>> = Arc::default();
    let sink = seen.clone();
    let _sub = split
        .repo("User")
        .unwrap()
        .observe_all(sorted.clone(), move |list| {
            *sink.lock().unwrap() = list.to_vec();
        })
        .unwrap();

    let mut ids = (Vec::new(), Vec::new());
    for chunk in 0..6 {
        let batch = users(chunk * 100..(chunk + 1) * 100);
        ids.0
            .extend(split.repo("User").unwrap().save_many(&batch).unwrap());
        ids.1
            .extend(whole.repo("User").unwrap().save_many(&batch).unwrap());
    }
    for i in (0..600).step_by(9) {
        assert!(split.repo("User").unwrap().delete(&ids.0[i]).unwrap());
        assert!(whole.repo("User").unwrap().delete(&ids.1[i]).unwrap());
    }
    for i in (1..600).step_by(13) {
        for (ds, ids) in [(&split, &ids.0), (&whole, &ids.1)] {
            let mut edited = user(i);
            edited["id"] = json!(ids[i]);
            edited["group"] = json!(100 + i % 3);
            ds.repo("User").unwrap().save(&edited).unwrap();
        }
    }
    split.flush().unwrap();
    whole.flush().unwrap();
    let keys = |ds: &DataSync| ds.tier_keys(TierId::Local).unwrap().len();
    assert!(
        keys(&split) >= 3 * keys(&whole),
        "{} partitions split, {} whole",
        keys(&split),
        keys(&whole)
    );

    let project =
        |list: Vec<Entity>| -> Vec<Value> { list.iter().map(|e| e.value()["n"].clone()).collect() };
    let sorted_by_n = |mut list: Vec<Value>| {
        list.sort_by_key(|v| v.as_i64());
        list
    };
    let mut queries = vec![
        (sorted.clone(), true),
        (QueryOptions::default().sort_by(SortKey::asc("name")), true),
        (
            QueryOptions::default()
                .where_eq("group", 3)
                .sort_by(SortKey::desc("n")),
            true,
        ),
        (
            QueryOptions::default()
                .sort_by(SortKey::asc("n"))
                .offset(50)
                .limit(75),
            true,
        ),
        (QueryOptions::default(), false),
        (QueryOptions::default().where_eq("region", "eu"), false),
    ];
    for filter in filters {
        queries.push((
            QueryOptions::default()
                .filter(filter.clone())
                .sort_by(SortKey::asc("n")),
            true,
        ));
        queries.push((QueryOptions::default().filter(filter.clone()), false));
    }
    for (query, ordered) in queries {
        let a = project(split.repo("User").unwrap().query(&query).unwrap());
        let b = project(whole.repo("User").unwrap().query(&query).unwrap());
        assert!(!b.is_empty(), "{query:?} matched nothing");
        if ordered {
            assert_eq!(a, b, "{query:?}");
        } else {
            // Without a sort the order follows the partitions; the set is the same.
            assert_eq!(sorted_by_n(a), sorted_by_n(b), "{query:?}");
        }
    }

    let expected = project(split.repo("User").unwrap().query(&sorted).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while project(seen.lock().unwrap().clone()) != expected {
        assert!(
            Instant::now() < deadline,
            "the observer's list never became the query's"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn global_queries_sort_and_filter_alike_across_sub_partitions() {
    queries_alike(|| Box::new(datasync::GlobalStrategy), &[]);
}

#[test]
fn date_queries_sort_and_filter_alike_across_sub_partitions() {
    queries_alike(
        || Box::new(DateStrategy::new(DateGranularity::Month)),
        &[
            json!({"from": "2026-02-01T00:00:00Z", "to": "2026-03-31T00:00:00Z"}),
            json!({"from": "2026-01-10T00:00:00Z", "to": "2026-01-20T00:00:00Z"}),
        ],
    );
}

#[test]
fn field_queries_sort_and_filter_alike_across_sub_partitions() {
    queries_alike(
        || Box::new(FieldStrategy::new("region")),
        &[json!({"value": "eu"}), json!({"values": ["us", "ap"]})],
    );
}

#[test]
fn a_strategy_value_that_reads_as_a_label_is_refused_and_labelled_ids_are_accepted() {
    let ds = DataSync::open(manual("app").strategy(FieldStrategy::new("region"))).unwrap();
    let repo = ds.repo("User").unwrap();
    let err = repo.save(&json!({"region": "eu.~01"})).unwrap_err();
    assert_eq!(err.kind(), datasync::ErrorKind::InvalidKey, "{err}");
    assert!(repo.query(&QueryOptions::default()).unwrap().is_empty());
    // A caller-supplied id in a sub-partition (as another device creates) is taken.
    let id = repo
        .save(&json!({"id": "User.eu.~01.abcdefgh", "region": "eu"}))
        .unwrap();
    let found = repo
        .query(&QueryOptions::default().filter(json!({"value": "eu"})))
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id(), id);

    // The global strategy takes labelled ids even where this device does not split.
    let ds = DataSync::open(manual("app").unbounded_partitions()).unwrap();
    let repo = ds.repo("User").unwrap();
    repo.save(&json!({"id": "User.~1.abcdefgh"})).unwrap();
    assert_eq!(repo.query(&QueryOptions::default()).unwrap().len(), 1);
    let err = repo.save(&json!({"id": "Users.~1.abcdefgh"})).unwrap_err();
    assert_eq!(err.kind(), datasync::ErrorKind::InvalidId, "{err}");
}

#[test]
fn a_tier_written_without_bounds_keeps_its_ids_and_grows_sub_partitions() {
    let local = MemoryPersistence::new();
    let ds = DataSync::open(manual("app").unbounded_partitions().local(local.clone())).unwrap();
    let old = ds
        .repo("User")
        .unwrap()
        .save_many(&users(0..3_000))
        .unwrap();
    ds.close().unwrap();
    assert!(old.iter().all(|id| !id.contains(".~")));

    let ds = DataSync::open(manual("app").local(local.clone())).unwrap();
    let repo = ds.repo("User").unwrap();
    for (i, id) in old.iter().enumerate().step_by(101) {
        assert_eq!(repo.get(id).unwrap().unwrap().value()["n"], json!(i));
    }
    // 3,000 known under the base: new users go two levels down.
    let new = repo.save(&user(3_000)).unwrap();
    let (logical, _) = new.rsplit_once('.').unwrap();
    assert_eq!(
        split_key(logical, '.').map(|(_, bits)| bits.len()),
        Some(2),
        "{new}"
    );
    let all = repo
        .query(&QueryOptions::default().sort_by(SortKey::asc("n")))
        .unwrap();
    assert_eq!(all.len(), 3_001);
    assert_eq!(all[3_000].id(), new);
    ds.flush().unwrap();
    assert_eq!(entries(&ds, TierId::Local).len(), 2);
    assert!(ds.audit().unwrap().is_empty());
}
