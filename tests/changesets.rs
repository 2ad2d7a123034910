//! Change-set observers: applying every change set, in order, to a copy of the first
//! list gives what a fresh query returns, after random bursts of saves, deletes and
//! syncs from another device; and one update in a large collection hands over one
//! entity, not the collection.

mod common;

use std::sync::{Arc, Mutex};

use common::{manual, ticking};
use datasync::{
    ChangeSet, Config, DataSync, Entity, FieldStrategy, MemoryPersistence, QueryOptions,
    Repository, SortKey, Subscription,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// What one change-set observer has seen: its copy of the result, kept only by
/// applying change sets, and whether every emission's own list agreed with it.
#[derive(Default)]
struct Copy {
    list: Vec<Entity>,
    /// The same copy, kept by applying the change sets by id instead of by position.
    by_id: Vec<Entity>,
    emissions: usize,
    initials: usize,
    disagreements: Vec<String>,
}

fn follow(repo: &Repository, query: QueryOptions) -> (Arc<Mutex<Copy>>, Subscription) {
    let copy: Arc<Mutex<Copy>> = Arc::default();
    let sink = copy.clone();
    let sub = repo
        .observe_changes(query, move |changes: &ChangeSet| {
            let mut copy = sink.lock().unwrap();
            copy.emissions += 1;
            if changes.is_initial() {
                copy.initials += 1;
            }
            let positions: Vec<usize> = changes.upserted().iter().map(|u| u.position).collect();
            if positions.windows(2).any(|w| w[0] >= w[1]) {
                copy.disagreements
                    .push(format!("positions not ascending: {positions:?}"));
            }
            changes.apply_to(&mut copy.list);
            apply_by_id(changes, &mut copy.by_id);
            if copy.by_id != copy.list {
                copy.disagreements
                    .push("applying by id and by position differ".into());
            }
            if copy.list.len() != changes.count() || copy.list.as_slice() != changes.list() {
                let msg = format!(
                    "applied copy ({}) differs from the emission's list ({})",
                    copy.list.len(),
                    changes.count()
                );
                copy.disagreements.push(msg);
            }
        })
        .unwrap();
    (copy, sub)
}

/// The change set's rule by id: remove what `removed` and the upserts name, then
/// insert every upsert at its position.
fn apply_by_id(changes: &ChangeSet, list: &mut Vec<Entity>) {
    let gone: std::collections::HashSet<&str> = changes
        .removed()
        .iter()
        .map(String::as_str)
        .chain(changes.upserted().iter().map(|u| u.entity.id()))
        .collect();
    list.retain(|e| !gone.contains(e.id()));
    for u in changes.upserted() {
        list.insert(u.position.min(list.len()), u.entity.clone());
    }
}

fn ids(list: &[Entity]) -> Vec<&str> {
    list.iter().map(Entity::id).collect()
}

fn queries(known: &[String]) -> Vec<QueryOptions> {
    let pick: Vec<String> = known.iter().step_by(3).cloned().collect();
    vec![
        QueryOptions::default(),
        QueryOptions::default().sort_by(SortKey::asc("score")),
        QueryOptions::default()
            .sort_by(SortKey::desc("name"))
            .sort_by(SortKey::asc("score")),
        QueryOptions::default()
            .where_eq("team", "x")
            .sort_by(SortKey::desc("score")),
        QueryOptions::default()
            .sort_by(SortKey::asc("age"))
            .limit(5)
            .offset(3),
        QueryOptions::default()
            .sort_by(SortKey::desc("age"))
            .offset(10),
        QueryOptions::default()
            .where_eq("age", 2)
            .sort_by(SortKey::desc("name"))
            .limit(4),
        QueryOptions::default().ids(pick.clone()),
        QueryOptions::default()
            .ids(pick)
            .sort_by(SortKey::asc("name"))
            .offset(1)
            .limit(3),
        QueryOptions::default().limit(6),
    ]
}

fn random_fields(rng: &mut StdRng, team: &str) -> Value {
    let name = ["ann", "bob", "cy", "dee"][rng.gen_range(0..4)];
    let mut e = json!({
        "team": team,
        "name": name,
        "age": rng.gen_range(0..5),
    });
    // Ties and missing values on the sort fields on purpose.
    if rng.gen_bool(0.8) {
        e["score"] = json!(rng.gen_range(0..8));
    }
    e
}

/// A world of two devices sharing a cloud; entity ids known to the test.
struct World {
    devices: Vec<DataSync>,
    repos: Vec<Repository>,
    ids: Vec<(String, String)>,
}

impl World {
    fn new(config: impl Fn() -> Config) -> World {
        let cloud = MemoryPersistence::new();
        let devices: Vec<DataSync> = (0..2)
            .map(|_| DataSync::open(config().cloud(cloud.clone()).clock_source(ticking)).unwrap())
            .collect();
        let repos = devices.iter().map(|d| d.repo("User").unwrap()).collect();
        World {
            devices,
            repos,
            ids: Vec::new(),
        }
    }

    fn step(&mut self, rng: &mut StdRng) {
        let d = rng.gen_range(0..2);
        let roll = rng.gen_range(0..100);
        if roll < 30 || self.ids.is_empty() {
            let team = ["x", "y", "z"][rng.gen_range(0..3)];
            let id = self.repos[d].save(&random_fields(rng, team)).unwrap();
            self.ids.push((id, team.to_string()));
        } else if roll < 70 {
            let (id, team) = self.ids[rng.gen_range(0..self.ids.len())].clone();
            let mut e = random_fields(rng, &team);
            e["id"] = json!(id);
            self.repos[d].save(&e).unwrap();
        } else if roll < 85 {
            let (id, _) = &self.ids[rng.gen_range(0..self.ids.len())];
            self.repos[d].delete(id).unwrap();
        } else {
            let first = rng.gen_range(0..2);
            self.devices[first].sync_now().unwrap();
            self.devices[1 - first].sync_now().unwrap();
        }
    }
}

/// Random bursts of `burst` steps (after `initial` steps before observing).
struct Shape {
    /// Entities saved at once on the first device and synced to the other.
    bulk: usize,
    initial: usize,
    bursts: usize,
    burst: std::ops::Range<usize>,
}

const SMALL: Shape = Shape {
    bulk: 0,
    initial: 12,
    bursts: 40,
    burst: 1..25,
};

fn check_bursts(seed: u64, config: impl Fn() -> Config, filters: &[Option<Value>], shape: Shape) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut world = World::new(config);
    if shape.bulk > 0 {
        let teams: Vec<&str> = (0..shape.bulk).map(|i| ["x", "y", "z"][i % 3]).collect();
        let rows: Vec<Value> = teams.iter().map(|t| random_fields(&mut rng, t)).collect();
        let ids = world.repos[0].save_many(&rows).unwrap();
        world
            .ids
            .extend(ids.into_iter().zip(teams.iter().map(|t| t.to_string())));
        world.devices[0].sync_now().unwrap();
        world.devices[1].sync_now().unwrap();
    }
    for _ in 0..shape.initial {
        world.step(&mut rng);
    }
    let known: Vec<String> = world.ids.iter().map(|(id, _)| id.clone()).collect();
    let mut observed = Vec::new();
    let mut plain = Vec::new();
    for (d, repo) in world.repos.iter().enumerate() {
        for filter in filters {
            for query in queries(&known) {
                let query = QueryOptions {
                    filter: filter.clone(),
                    ..query
                };
                let (copy, sub) = follow(repo, query.clone());
                observed.push((d, query.clone(), copy, sub));
            }
            let last: Arc<Mutex<Vec<Entity>>> = Arc::default();
            let sink = last.clone();
            let query = QueryOptions {
                filter: filter.clone(),
                ..QueryOptions::default().sort_by(SortKey::asc("score"))
            };
            let sub = repo
                .observe_all(query.clone(), move |l| *sink.lock().unwrap() = l.to_vec())
                .unwrap();
            plain.push((d, query, last, sub));
        }
    }
    for burst in 0..shape.bursts {
        let size = rng.gen_range(shape.burst.clone());
        for _ in 0..size {
            world.step(&mut rng);
        }
        for ds in &world.devices {
            ds.drain_events().unwrap();
        }
        for (d, query, copy, _) in &observed {
            let fresh = world.repos[*d].query(query).unwrap();
            let copy = copy.lock().unwrap();
            assert!(
                copy.disagreements.is_empty(),
                "seed {seed} burst {burst} device {d} {query:?}: {:?}",
                copy.disagreements
            );
            assert_eq!(copy.initials, 1, "one first emission");
            assert_eq!(
                ids(&copy.list),
                ids(&fresh),
                "seed {seed} burst {burst} device {d} {query:?}"
            );
            assert_eq!(copy.list, fresh, "seed {seed} burst {burst}: same content");
        }
        for (d, query, last, _) in &plain {
            let fresh = world.repos[*d].query(query).unwrap();
            assert_eq!(
                *last.lock().unwrap(),
                fresh,
                "plain observer, burst {burst}"
            );
        }
    }
    let emissions: usize = observed.iter().map(|o| o.2.lock().unwrap().emissions).sum();
    assert!(emissions > observed.len(), "change sets were emitted");
}

#[test]
fn change_sets_replay_to_the_query_result_in_one_partition() {
    for seed in 0..2 {
        check_bursts(seed, || manual("app"), &[None], SMALL);
    }
}

#[test]
fn few_changes_in_a_larger_collection_move_entries_one_by_one() {
    // Few changes against hundreds of entities take the view's one-by-one path
    // (the small worlds above mostly take its merge path).
    let shape = Shape {
        bulk: 300,
        initial: 0,
        bursts: 15,
        burst: 1..4,
    };
    check_bursts(20, || manual("app"), &[None], shape);
}

#[test]
fn change_sets_replay_to_the_query_result_across_partitions() {
    let config = || {
        manual("app")
            .strategy(FieldStrategy::new("team"))
            .local(MemoryPersistence::new())
    };
    // Prefix candidates (every team), and keys in a given order (z before x).
    let filters = [None, Some(json!({"values": ["z", "x"]}))];
    for seed in 10..11 {
        check_bursts(seed, config, &filters, SMALL);
    }
}

/// (first, upserted, removed, JSON bytes) of one emission.
type Emission = (bool, usize, usize, usize);

#[test]
fn one_update_in_a_large_collection_hands_over_one_entity() {
    // 100,000 in release. In a debug build the set-up alone (saving 100,000 and the
    // first emission) takes ~18 s, so it uses 20,000: what is counted does not
    // depend on N.
    let n = if cfg!(debug_assertions) {
        20_000
    } else {
        100_000
    };
    let ds = DataSync::open(Config::new("app")).unwrap();
    let users = ds.repo("User").unwrap();
    let rows: Vec<Value> = (0..n).map(|i| json!({"n": i, "score": i % 100})).collect();
    let ids = users.save_many(&rows).unwrap();
    for query in [
        QueryOptions::default(),
        QueryOptions::default().sort_by(SortKey::desc("score")),
    ] {
        let seen: Arc<Mutex<Vec<Emission>>> = Arc::default();
        let sink = seen.clone();
        let _sub = users
            .observe_changes(query, move |c| {
                let bytes = c.to_json().len();
                sink.lock().unwrap().push((
                    c.is_initial(),
                    c.upserted().len(),
                    c.removed().len(),
                    bytes,
                ))
            })
            .unwrap();
        ds.drain_events().unwrap();
        users
            .save(&json!({"id": ids[n / 2], "n": -1, "score": 1000}))
            .unwrap();
        ds.drain_events().unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen[0].0);
        assert_eq!(seen[0].1, n, "the first emission is the whole list");
        let (initial, upserted, removed, bytes) = seen[1];
        assert!(!initial);
        assert_eq!((upserted, removed), (1, 0), "one entity, not {n}");
        assert!(bytes < 300, "the change set is {bytes} bytes");
    }
}
