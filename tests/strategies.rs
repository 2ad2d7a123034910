//! Key strategies through the instance: date ranges, field values, a custom strategy
//! acting as the authorisation hook.

mod common;

use datasync::{
    Candidates, Config, DataSync, DateGranularity, DateStrategy, KeyStrategy, QueryOptions, Result,
};
use serde_json::{json, Map, Value};

#[test]
fn date_strategy_partitions_by_month_and_filters_by_range() {
    let ds = DataSync::open(Config::new("app").strategy(DateStrategy::new(DateGranularity::Month)))
        .unwrap();
    let logs = ds.repo("Log").unwrap();
    for (i, day) in ["2026-01-15", "2026-02-03", "2026-02-20", "2026-04-01"]
        .iter()
        .enumerate()
    {
        logs.save(&json!({"i": i, "createdAt": format!("{day}T12:00:00Z")}))
            .unwrap();
    }
    let mut keys = ds.tier_keys(datasync::TierId::Store).unwrap();
    keys.sort();
    assert_eq!(
        keys,
        ["app.Log.2026-01", "app.Log.2026-02", "app.Log.2026-04"]
    );
    let feb = QueryOptions::default()
        .filter(json!({"from": "2026-02-01T00:00:00Z", "to": "2026-03-31T00:00:00Z"}));
    assert_eq!(logs.query(&feb).unwrap().len(), 2);
    assert_eq!(logs.query(&QueryOptions::default()).unwrap().len(), 4);
    let e = logs
        .query(&QueryOptions::default().where_eq("i", 0))
        .unwrap()
        .remove(0);
    assert_eq!(
        e.value()["createdAt"],
        "2026-01-15T12:00:00.000Z",
        "createdAt not normalised"
    );
}

/// Users are partitioned by tenant; this device may read tenant "a" only.
struct Tenants;

impl KeyStrategy for Tenants {
    fn separator(&self) -> char {
        ':'
    }

    fn id_length(&self) -> usize {
        10
    }

    fn logical_key(&self, entity_name: &str, entity: &Map<String, Value>) -> Result<String> {
        let tenant = entity
            .get("tenant")
            .and_then(Value::as_str)
            .unwrap_or("public");
        Ok(format!("{tenant}-{entity_name}"))
    }

    fn candidate_keys(
        &self,
        prefix: &str,
        entity_name: &str,
        _filter: Option<&Value>,
    ) -> Result<Candidates> {
        Ok(Candidates::Keys(vec![format!("{prefix}:a-{entity_name}")]))
    }
}

#[test]
fn a_custom_strategy_decides_ids_keys_and_what_queries_read() {
    let ds = DataSync::open(Config::new("app").strategy(Tenants)).unwrap();
    let users = ds.repo("User").unwrap();
    let a = users.save(&json!({"tenant": "a"})).unwrap();
    assert!(
        a.starts_with("a-User:") && a.len() == "a-User:".len() + 10,
        "{a}"
    );
    // Tenant b's partition is not among the candidate keys: this instance may not
    // write it (DESIGN §11), nor read an id there.
    let err = users.save(&json!({"tenant": "b"})).unwrap_err();
    assert_eq!(err.kind(), datasync::ErrorKind::Forbidden, "{err}");
    let b = "b-User:0123456789";
    assert_eq!(
        users.get(b).unwrap_err().kind(),
        datasync::ErrorKind::Forbidden
    );
    let visible: Vec<String> = users
        .query(&QueryOptions::default())
        .unwrap()
        .iter()
        .map(|e| e.id().to_string())
        .collect();
    assert_eq!(visible, vec![a.clone()]);
    assert!(
        users.get(&a).unwrap().is_some(),
        "get by id reads the id's own partition"
    );
}

#[test]
fn a_strategy_whose_separator_appears_in_ids_is_refused() {
    struct Bad;
    impl KeyStrategy for Bad {
        fn separator(&self) -> char {
            '-'
        }
        fn logical_key(&self, n: &str, _: &Map<String, Value>) -> Result<String> {
            Ok(n.to_string())
        }
        fn candidate_keys(&self, _: &str, _: &str, _: Option<&Value>) -> Result<Candidates> {
            Ok(Candidates::Keys(vec![]))
        }
    }
    let err = DataSync::open(Config::new("app").strategy(Bad))
        .err()
        .unwrap();
    assert_eq!(err.kind(), datasync::ErrorKind::InvalidConfig);
}
