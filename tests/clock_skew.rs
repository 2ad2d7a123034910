//! The instance clock and stamps that arrive by sync (DESIGN.md §4): a stamp from
//! another device less than `max_clock_skew` ahead of now is adopted (this device's
//! next save is not stamped before it); a stamp further ahead is not (the next save
//! follows this device's wall clock), yet the far-future entity still wins
//! last-writer-wins.

mod common;

use std::time::Duration;

use common::manual;
use datasync::clock::now_millis;
use datasync::{DataSync, MemoryPersistence};
use serde_json::json;

/// A device whose clock runs one minute fast.
fn one_minute_ahead() -> i64 {
    now_millis() + 60_000
}

/// A device whose clock runs an hour fast.
fn one_hour_ahead() -> i64 {
    now_millis() + 3_600_000
}

fn device(cloud: &MemoryPersistence, clock: fn() -> i64, skew: Duration) -> DataSync {
    let mut config = manual("app")
        .local(MemoryPersistence::new())
        .cloud(cloud.clone())
        .clock_source(clock);
    config.max_clock_skew = skew;
    DataSync::open(config).unwrap()
}

fn sync(ds: &DataSync) {
    let stats = ds.sync_now().unwrap();
    assert!(stats.errors.is_empty(), "{stats:?}");
}

fn updated_at(ds: &DataSync, name: &str, id: &str) -> i64 {
    ds.repo(name)
        .unwrap()
        .get(id)
        .unwrap()
        .unwrap_or_else(|| panic!("{id} is missing"))
        .updated_at()
}

/// Device `fast` saves `User.fast` with its clock and syncs; `slow` (the wall clock)
/// syncs it in, then saves an entity it has not saved before, under `name`. Returns
/// the fast stamp and the new save's stamp, with the wall clock around that save.
/// With `slow_holds_users`, `slow` already holds the User partition (so the sync
/// merges it) rather than copying it fresh.
fn next_save_after_fast_stamp(
    fast_clock: fn() -> i64,
    skew: Duration,
    slow_holds_users: bool,
    name: &str,
) -> (i64, i64, i64, i64) {
    let cloud = MemoryPersistence::new();
    let fast = device(&cloud, fast_clock, skew);
    let slow = device(&cloud, now_millis, skew);
    if slow_holds_users {
        slow.repo("User")
            .unwrap()
            .save(&json!({"id": "User.slow", "n": 0}))
            .unwrap();
        sync(&slow);
    }
    fast.repo("User")
        .unwrap()
        .save(&json!({"id": "User.fast", "n": 1}))
        .unwrap();
    let fast_stamp = updated_at(&fast, "User", "User.fast");
    sync(&fast);
    sync(&slow);
    assert_eq!(
        updated_at(&slow, "User", "User.fast"),
        fast_stamp,
        "the fast entity did not arrive"
    );
    let id = format!("{name}.next");
    let before = now_millis();
    slow.repo(name)
        .unwrap()
        .save(&json!({"id": id, "n": 2}))
        .unwrap();
    let after = now_millis();
    (fast_stamp, updated_at(&slow, name, &id), before, after)
}

#[test]
fn a_stamp_within_the_skew_is_adopted_when_a_sync_merges_it() {
    let (fast, next, before, _) =
        next_save_after_fast_stamp(one_minute_ahead, Duration::from_secs(300), true, "User");
    assert!(fast > before + 50_000, "the fast clock is not ahead");
    assert!(
        next >= fast,
        "the next save ({next}) is stamped before the adopted stamp ({fast})"
    );
}

#[test]
fn a_stamp_within_the_skew_is_adopted_when_a_sync_copies_it() {
    // The slow device has never held the partition: the sync copies it down, and
    // the next save goes to another partition.
    let (fast, next, before, _) =
        next_save_after_fast_stamp(one_minute_ahead, Duration::from_secs(300), false, "Post");
    assert!(fast > before + 50_000, "the fast clock is not ahead");
    assert!(
        next >= fast,
        "the next save ({next}) is stamped before the adopted stamp ({fast})"
    );
}

#[test]
fn a_stamp_beyond_a_configured_skew_is_not_adopted() {
    // The same minute-fast device, but this instance accepts only 10 s of skew.
    let (fast, next, before, after) =
        next_save_after_fast_stamp(one_minute_ahead, Duration::from_secs(10), true, "User");
    assert!(next < fast, "a stamp beyond max_clock_skew was adopted");
    assert!(
        (before..=after).contains(&next),
        "the next save ({next}) does not follow the wall clock ({before}..={after})"
    );
}

#[test]
fn a_far_future_stamp_is_not_adopted_with_the_default_skew() {
    for holds in [true, false] {
        let (fast, next, before, after) = next_save_after_fast_stamp(
            one_hour_ahead,
            default_skew(),
            holds,
            if holds { "User" } else { "Post" },
        );
        assert!(next < fast, "a far-future stamp was adopted");
        assert!(
            (before..=after).contains(&next),
            "the next save ({next}) does not follow the wall clock ({before}..={after})"
        );
    }
}

#[test]
fn a_far_future_entity_still_wins_last_writer_wins() {
    let cloud = MemoryPersistence::new();
    let fast = device(&cloud, one_hour_ahead, default_skew());
    let slow = device(&cloud, now_millis, default_skew());
    let users = |ds: &DataSync| ds.repo("User").unwrap();
    // Both edit the same entity; the slow device's edit is made later in real time.
    users(&fast)
        .save(&json!({"id": "User.x", "by": "fast"}))
        .unwrap();
    users(&slow)
        .save(&json!({"id": "User.x", "by": "slow"}))
        .unwrap();
    for ds in [&fast, &slow, &fast] {
        sync(ds);
    }
    for ds in [&fast, &slow] {
        let x = users(ds).get("User.x").unwrap().unwrap();
        assert_eq!(x.value()["by"], "fast", "the far-future edit lost");
    }
    // The slow device's clock was not dragged forward by the stamp it lost to...
    let before = now_millis();
    users(&slow)
        .save(&json!({"id": "User.y", "by": "slow"}))
        .unwrap();
    let after = now_millis();
    let y = updated_at(&slow, "User", "User.y");
    assert!(
        (before..=after).contains(&y),
        "User.y ({y}) does not follow the wall clock ({before}..={after})"
    );
    // ...yet an edit of the far-future entity itself beats it (its stamp is the floor).
    users(&slow)
        .save(&json!({"id": "User.x", "by": "slow again"}))
        .unwrap();
    let far = updated_at(&fast, "User", "User.x");
    assert!(updated_at(&slow, "User", "User.x") >= far);
    for ds in [&slow, &fast] {
        sync(ds);
    }
    let x = users(&fast).get("User.x").unwrap().unwrap();
    assert_eq!(x.value()["by"], "slow again");
}

/// The skew a default configuration allows.
fn default_skew() -> Duration {
    datasync::Config::new("app").max_clock_skew
}
