//! Three in-memory tiers, two devices sharing a cloud: save, observe, sync, print.
//!
//! Run with `cargo run --example quickstart`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use datasync::{Config, DataSync, MemoryPersistence, QueryOptions, SortKey};
use serde_json::json;

fn device(name: &str, cloud: &MemoryPersistence) -> datasync::Result<DataSync> {
    let config = Config::new("app")
        .local(MemoryPersistence::new())
        .cloud(cloud.clone())
        .cloud_sync_interval(Duration::from_secs(3600));
    let _ = name;
    DataSync::open(config)
}

fn main() -> datasync::Result<()> {
    let cloud = MemoryPersistence::new();
    let phone = device("phone", &cloud)?;
    let laptop = device("laptop", &cloud)?;

    let users = phone.repo("User")?;
    let alice = users.save(&json!({"name": "Alice", "team": "core"}))?;
    let bob = users.save(&json!({"name": "Bob", "team": "web"}))?;
    println!("phone saved Alice as {alice} and Bob as {bob}");

    // The laptop watches every User, sorted by name.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let laptop_users = laptop.repo("User")?;
    let _sub = laptop_users.observe_all(
        QueryOptions::default().sort_by(SortKey::asc("name")),
        move |list| {
            let names: Vec<String> = list
                .iter()
                .map(|e| e.value()["name"].as_str().unwrap_or("?").to_string())
                .collect();
            println!("laptop observer: {names:?}");
            sink.lock().unwrap().push(names);
        },
    )?;

    let stats = phone.sync_now()?;
    println!(
        "phone sync: {} partition(s) copied, {} merged",
        stats.keys_copied, stats.keys_merged
    );
    let stats = laptop.sync_now()?;
    println!(
        "laptop sync: {} entity slot(s) changed",
        stats.entities_changed
    );
    laptop.drain_events()?;

    // Both edit Alice; the later edit wins everywhere.
    users.save(&json!({"id": alice, "name": "Alice (phone)", "team": "core"}))?;
    std::thread::sleep(Duration::from_millis(5));
    laptop_users.save(&json!({"id": alice, "name": "Alice (laptop)", "team": "core"}))?;
    laptop_users.delete(&bob)?;
    laptop.sync_now()?;
    phone.sync_now()?;
    laptop.sync_now()?;
    laptop.drain_events()?;

    let on_phone = users.get(&alice)?.map(|e| e.value());
    println!("phone sees Alice as {}", on_phone.unwrap_or_default());
    println!("phone sees Bob: {:?}", users.get(&bob)?);
    let final_names = seen.lock().unwrap().last().cloned().unwrap_or_default();
    println!("laptop observer ended on {final_names:?}");
    phone.close()?;
    laptop.close()?;
    Ok(())
}
