//! `demo`: two devices, each with an in-memory store over its own directory tier,
//! share a cloud directory. They write offline, edit the same entities, one deletes
//! what the other edits, they sync, observers fire, conflicts resolve by the
//! documented rules, and every tier is checked to have converged. With `--server`
//! the cloud is a sync server (`datasync-server`) on loopback instead.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datasync::clock::format_millis;
use datasync::meta::ROOT_KEY;
use datasync::{
    AdapterError, AdapterResult, Config, ConflictResolver, DataSync, DirPersistence, Entity,
    HttpPersistence, LastWriterWins, Partition, Persistence, QueryOptions, Slot, SortKey,
    Subscription, SyncStats, TierId,
};
use serde_json::json;

use super::inspect::examine;
use super::serve::LocalServer;
use super::CliResult;

/// The cloud as a device reaches it: the shared directory (or the device's
/// connection to the server) behind a network switch.
struct Link {
    cloud: Box<dyn Persistence>,
    online: Arc<AtomicBool>,
}

impl Link {
    fn check(&self) -> AdapterResult<()> {
        if self.online.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(AdapterError::new("network unreachable"))
        }
    }
}

impl Persistence for Link {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        self.check()?;
        self.cloud.load(key)
    }
    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        self.check()?;
        self.cloud.store(key, bytes)
    }
    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        self.check()?;
        self.cloud.clear(key)
    }
    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        self.check()?;
        self.cloud.keys()
    }
    fn commit(&mut self) -> AdapterResult<()> {
        self.check()?;
        self.cloud.commit()
    }
    fn store_if(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        bytes: &[u8],
    ) -> AdapterResult<Option<bool>> {
        self.check()?;
        self.cloud.store_if(key, expected, bytes)
    }
}

struct Device {
    name: &'static str,
    ds: DataSync,
    online: Arc<AtomicBool>,
    /// A second handle on the device's local directory, to show what is on disk.
    local: DirPersistence,
}

impl Device {
    fn open(name: &'static str, base: &Path, cloud: Box<dyn Persistence>) -> CliResult<Device> {
        let local = DirPersistence::open(base.join(name))?;
        let online = Arc::new(AtomicBool::new(true));
        let config = Config::new("app")
            .local(local.clone())
            .cloud(Link {
                cloud,
                online: online.clone(),
            })
            .cloud_sync_interval(Duration::from_secs(3600))
            .sync_on_open(false);
        Ok(Device {
            name,
            ds: DataSync::open(config)?,
            online,
            local,
        })
    }

    fn set_online(&self, yes: bool) {
        self.online.store(yes, Ordering::Release);
    }

    fn sync(&self) -> CliResult<SyncStats> {
        let stats = self.ds.sync_now()?;
        if stats.offline {
            let why = stats
                .errors
                .first()
                .map(String::as_str)
                .unwrap_or("unreachable");
            say(&format!(
                "{} syncs: offline ({why}); its writes wait safely in its local directory",
                self.name
            ));
        } else {
            say(&format!(
                "{} syncs: {} partition(s) copied, {} merged, {} conflict(s) resolved, {} entity change(s)",
                self.name, stats.keys_copied, stats.keys_merged, stats.conflicts, stats.entities_changed
            ));
        }
        Ok(stats)
    }

    fn get(&self, name: &str, id: &str) -> CliResult<Option<Entity>> {
        Ok(self.ds.repo(name)?.get(id)?)
    }

    fn stamp(&self, name: &str, id: &str) -> CliResult<i64> {
        self.get(name, id)?
            .map(|e| e.updated_at())
            .ok_or_else(|| format!("{id} vanished").into())
    }

    /// When `id` was deleted, as the device's local directory records it.
    fn deleted_at(&self, name: &str, id: &str) -> CliResult<i64> {
        self.ds.flush()?;
        let logical = id.rsplit_once('.').map(|(l, _)| l).unwrap_or(id);
        let key = format!("app.{logical}");
        let mut local = self.local.clone();
        let partition = if datasync::pieces::is_converted(&mut local, "local")? {
            datasync::pieces::PieceTier::new(&mut local, false, "local")
                .read(&key, &datasync::LastWriterWins)?
                .ok_or("partition missing")?
                .partition
        } else {
            let bytes = self.local.read(&key)?.ok_or("partition missing")?;
            Partition::parse(&bytes, false)?
        };
        match partition.get(name, id) {
            Some(Slot::Deleted(at)) => Ok(*at),
            _ => Err(format!("{id} has no tombstone on the {}", self.name).into()),
        }
    }
}

fn say(line: &str) {
    println!("  {line}");
}

fn step(n: u32, title: &str) {
    println!("\n{n}. {title}");
}

fn title_of(e: &Entity) -> String {
    let v = e.value();
    v.get("title")
        .or_else(|| v.get("name"))
        .and_then(|t| t.as_str())
        .unwrap_or("?")
        .to_string()
}

/// Observer output, collected on the dispatcher thread and printed at story points.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn push(&self, line: String) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(line);
        }
    }

    fn show(&self, device: &Device) -> CliResult<()> {
        device.ds.drain_events()?;
        let lines = self
            .0
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        for line in lines {
            say(&format!("{} observer: {line}", device.name));
        }
        Ok(())
    }
}

fn observe(device: &Device, alice: &str, seen: &Seen) -> CliResult<(Subscription, Subscription)> {
    let sink = seen.clone();
    let user = device.ds.repo("User")?.observe(alice, move |e| match e {
        Some(e) => sink.push(format!(
            "Alice is now {:?} (version {})",
            title_of(e),
            e.version()
        )),
        None => sink.push("Alice was deleted".into()),
    })?;
    let sink = seen.clone();
    let tasks = device.ds.repo("Task")?.observe_all(
        QueryOptions::default().sort_by(SortKey::asc("title")),
        move |list| {
            let titles: Vec<String> = list.iter().map(task_line).collect();
            sink.push(format!("tasks {titles:?}"));
        },
    )?;
    Ok((user, tasks))
}

fn task_line(t: &Entity) -> String {
    format!(
        "{}{}",
        title_of(t),
        if t.value()["done"] == json!(true) {
            " (done)"
        } else {
            ""
        }
    )
}

/// Sleeps past the current millisecond, so the next write is strictly later.
fn tick() {
    std::thread::sleep(Duration::from_millis(3));
}

fn at(ms: i64) -> String {
    format_millis(ms)[11..].to_string()
}

/// The checks the demo makes, printed as they pass or fail.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn expect(&mut self, ok: bool, what: String) {
        let mark = if ok { "ok" } else { "FAILED" };
        say(&format!("[{mark}] {what}"));
        if !ok {
            self.0.push(what);
        }
    }
}

/// The entities the story follows.
struct Ids {
    alice: String,
    milk: String,
    flights: String,
    plants: String,
}

/// When each offline edit and delete happened.
struct Stamps {
    alice_phone: i64,
    alice_laptop: i64,
    milk_edit: i64,
    milk_delete: i64,
    flights_delete: i64,
    flights_edit: i64,
}

/// The demo's directory: the one given (new or empty), or a temporary one removed at
/// the end (kept alive by the returned guard).
fn demo_dir(dir: Option<PathBuf>) -> CliResult<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(dir) => {
            if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
                return Err(format!(
                    "{} is not empty; give a new or empty directory",
                    dir.display()
                )
                .into());
            }
            std::fs::create_dir_all(&dir)?;
            Ok((dir, None))
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("datasync-demo-")
                .tempdir()?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
}

/// The shared cloud: a directory, or a sync server on loopback over a directory.
enum Cloud {
    Dir(DirPersistence),
    Server {
        server: LocalServer,
        tokens: [String; 2],
    },
}

impl Cloud {
    fn open(base: &Path, server: bool) -> CliResult<Cloud> {
        if !server {
            return Ok(Cloud::Dir(DirPersistence::open(base.join("cloud"))?));
        }
        let tokens = [
            format!("phone-{}", nanoid::nanoid!(24)),
            format!("laptop-{}", nanoid::nanoid!(24)),
        ];
        let lines: Vec<String> = tokens
            .iter()
            .zip(["phone", "laptop"])
            .map(|(token, device)| {
                json!({"token": token, "device": device, "read": ["app*"], "write": ["app*"]})
                    .to_string()
            })
            .collect();
        let tokens_file = base.join("tokens.jsonl");
        std::fs::write(&tokens_file, lines.join("\n") + "\n")?;
        let server = LocalServer::start(&[
            "--dir".into(),
            base.join("cloud").into_os_string(),
            "--tokens".into(),
            tokens_file.into_os_string(),
        ])?;
        Ok(Cloud::Server { server, tokens })
    }

    /// How device `n` (0: phone, 1: laptop) reaches the cloud.
    fn link(&self, n: usize) -> CliResult<Box<dyn Persistence>> {
        Ok(match self {
            Cloud::Dir(dir) => Box::new(dir.clone()),
            Cloud::Server { server, tokens } => {
                Box::new(HttpPersistence::new(&server.url, &tokens[n])?)
            }
        })
    }
}

pub fn run(dir: Option<PathBuf>, server: bool) -> CliResult<u8> {
    let started = Instant::now();
    let (base, _temp) = demo_dir(dir)?;
    let cloud = Cloud::open(&base, server)?;
    match &cloud {
        Cloud::Dir(_) => {
            println!(
                "datasync demo: two devices (phone, laptop) share a cloud, all three on disk in {}",
                base.display()
            );
            println!("Each device: an in-memory store over its own directory tier (phone/, laptop/); the cloud is cloud/.");
        }
        Cloud::Server { server, .. } => {
            println!(
                "datasync demo: two devices (phone, laptop) share a cloud through the sync server at {}, all on disk in {}",
                server.url,
                base.display()
            );
            println!("Each device: an in-memory store over its own directory tier (phone/, laptop/); the server stores in cloud/ and knows each device by its token.");
        }
    }
    let phone = Device::open("phone", &base, cloud.link(0)?)?;
    let laptop = Device::open("laptop", &base, cloud.link(1)?)?;
    let mut checks = Checks::default();

    let (mut ids, seen, subs) = online(&phone, &laptop)?;
    let stamps = offline(&phone, &laptop, &mut ids, &seen, &mut checks)?;
    let stats = reconnect(&phone, &laptop, &seen)?;
    conflicts(&phone, &laptop, &ids, &stamps, &mut checks)?;
    final_state(&phone, &laptop, &stats)?;
    converged_in_memory(&phone, &laptop, &mut checks)?;
    drop(subs);
    let (phone_local, laptop_local) = (phone.local.clone(), laptop.local.clone());
    phone.ds.close()?;
    laptop.ds.close()?;
    drop((phone, laptop));
    match cloud {
        Cloud::Dir(cloud) => converged_on_disk(
            &[
                ("phone/", phone_local),
                ("laptop/", laptop_local),
                ("cloud/", cloud),
            ],
            None,
            &mut checks,
        )?,
        Cloud::Server { server, tokens } => {
            let root = HttpPersistence::new(&server.url, &tokens[0])?
                .load(ROOT_KEY)
                .map_err(|e| e.to_string())?
                // Format 2 stores the top of its summary tree there; its hash is the root.
                .map(|b| match datasync::summary::Node::parse("", &b) {
                    Ok(top) => top.hash(),
                    Err(_) => String::from_utf8_lossy(&b).into_owned(),
                });
            converged_on_disk(
                &[("phone/", phone_local), ("laptop/", laptop_local)],
                Some(root.unwrap_or_default()),
                &mut checks,
            )?;
            server.stop();
            say("the sync server stopped");
        }
    }

    println!();
    if checks.0.is_empty() {
        println!(
            "Converged: every tier agrees, every conflict resolved by the rules ({:.1} s).",
            started.elapsed().as_secs_f64()
        );
        Ok(0)
    } else {
        println!("NOT converged: {} check(s) failed:", checks.0.len());
        for f in &checks.0 {
            println!("  {f}");
        }
        Ok(1)
    }
}

/// Step 1: online, the phone creates data, both sync, the laptop starts observing.
fn online(phone: &Device, laptop: &Device) -> CliResult<(Ids, Seen, (Subscription, Subscription))> {
    step(
        1,
        "Online. The phone creates a user and two tasks; both devices sync.",
    );
    let (users, tasks) = (phone.ds.repo("User")?, phone.ds.repo("Task")?);
    let alice = users.save(&json!({"name": "Alice", "email": "alice@example.com"}))?;
    let milk = tasks.save(&json!({"title": "Buy milk", "done": false}))?;
    let flights = tasks.save(&json!({"title": "Book flights", "done": false}))?;
    say(&format!("phone saves User Alice ({alice}), Task \"Buy milk\" ({milk}), Task \"Book flights\" ({flights})"));
    phone.sync()?;
    laptop.sync()?;
    let seen = Seen::default();
    let subs = observe(laptop, &alice, &seen)?;
    say("laptop starts observing Alice and the task list; observers get the current value first");
    seen.show(laptop)?;
    let ids = Ids {
        alice,
        milk,
        flights,
        plants: String::new(),
    };
    Ok((ids, seen, subs))
}

/// Step 2: both offline, conflicting edits and deletes.
fn offline(
    phone: &Device,
    laptop: &Device,
    ids: &mut Ids,
    seen: &Seen,
    checks: &mut Checks,
) -> CliResult<Stamps> {
    step(2, "Both go offline and keep working.");
    phone.set_online(false);
    laptop.set_online(false);
    let (users, tasks) = (phone.ds.repo("User")?, phone.ds.repo("Task")?);
    let (l_users, l_tasks) = (laptop.ds.repo("User")?, laptop.ds.repo("Task")?);
    let Ids {
        alice,
        milk,
        flights,
        ..
    } = &*ids;
    users.save(&json!({"id": alice, "name": "Alice (phone)", "email": "alice@example.com"}))?;
    let alice_phone = phone.stamp("User", alice)?;
    say(&format!(
        "phone renames Alice to \"Alice (phone)\" at {}",
        at(alice_phone)
    ));
    tick();
    l_users.save(&json!({"id": alice, "name": "Alice Liddell", "email": "alice@example.com"}))?;
    let alice_laptop = laptop.stamp("User", alice)?;
    say(&format!(
        "laptop renames Alice to \"Alice Liddell\" at {}",
        at(alice_laptop)
    ));
    tick();
    l_tasks.save(&json!({"id": milk, "title": "Buy milk", "done": true}))?;
    let milk_edit = laptop.stamp("Task", milk)?;
    say(&format!(
        "laptop marks \"Buy milk\" done at {}",
        at(milk_edit)
    ));
    tick();
    tasks.delete(milk)?;
    let milk_delete = phone.deleted_at("Task", milk)?;
    say(&format!(
        "phone deletes \"Buy milk\" at {}",
        at(milk_delete)
    ));
    tasks.delete(flights)?;
    let flights_delete = phone.deleted_at("Task", flights)?;
    say(&format!(
        "phone deletes \"Book flights\" at {}",
        at(flights_delete)
    ));
    tick();
    l_tasks.save(&json!({"id": flights, "title": "Book flights", "done": true}))?;
    let flights_edit = laptop.stamp("Task", flights)?;
    say(&format!(
        "laptop, not knowing, marks \"Book flights\" done at {}",
        at(flights_edit)
    ));
    ids.plants = l_tasks.save(&json!({"title": "Water plants", "done": false}))?;
    say(&format!(
        "laptop adds Task \"Water plants\" ({})",
        ids.plants
    ));
    seen.show(laptop)?;
    let stats = phone.sync()?;
    checks.expect(
        stats.offline,
        "an offline sync reports offline and loses nothing".into(),
    );
    Ok(Stamps {
        alice_phone,
        alice_laptop,
        milk_edit,
        milk_delete,
        flights_delete,
        flights_edit,
    })
}

/// Step 3: back online, the three syncs that settle everything; their stats summed.
fn reconnect(phone: &Device, laptop: &Device, seen: &Seen) -> CliResult<SyncStats> {
    step(
        3,
        "Back online: phone syncs, laptop syncs, phone syncs again.",
    );
    phone.set_online(true);
    laptop.set_online(true);
    let mut stats = phone.sync()?;
    let laptop_stats = laptop.sync()?;
    seen.show(laptop)?;
    let again = phone.sync()?;
    for s in [laptop_stats, again] {
        stats.keys_copied += s.keys_copied;
        stats.keys_merged += s.keys_merged;
        stats.conflicts += s.conflicts;
        stats.entities_changed += s.entities_changed;
        stats.bytes_written += s.bytes_written;
    }
    Ok(stats)
}

/// Step 4: every conflict checked against the documented rules.
fn conflicts(
    phone: &Device,
    laptop: &Device,
    ids: &Ids,
    t: &Stamps,
    checks: &mut Checks,
) -> CliResult<()> {
    step(4, "Conflicts, resolved by the documented rules (later updatedAt wins; equal instants: delete wins).");
    let alice_winner = if t.alice_laptop > t.alice_phone {
        "Alice Liddell"
    } else {
        "Alice (phone)"
    };
    let milk_deleted = t.milk_delete >= t.milk_edit;
    let flights_kept = t.flights_edit > t.flights_delete;
    for d in [phone, laptop] {
        let alice = d.get("User", &ids.alice)?.map(|e| title_of(&e));
        checks.expect(
            alice.as_deref() == Some(alice_winner),
            format!(
                "Alice on the {}: both renamed her, the later rename wins: {alice_winner:?}",
                d.name
            ),
        );
    }
    for d in [phone, laptop] {
        checks.expect(
            d.get("Task", &ids.milk)?.is_none() == milk_deleted,
            format!(
                "\"Buy milk\" on the {}: edited at {}, deleted at {} -> {}",
                d.name,
                at(t.milk_edit),
                at(t.milk_delete),
                if milk_deleted {
                    "the delete wins"
                } else {
                    "the edit wins"
                }
            ),
        );
    }
    for d in [phone, laptop] {
        checks.expect(
            d.get("Task", &ids.flights)?.is_some() == flights_kept,
            format!(
                "\"Book flights\" on the {}: deleted at {}, edited at {} -> {}",
                d.name,
                at(t.flights_delete),
                at(t.flights_edit),
                if flights_kept {
                    "the later edit wins: it is back"
                } else {
                    "the delete wins"
                }
            ),
        );
    }
    let edit = laptop
        .get("Task", &ids.plants)?
        .ok_or("Water plants is missing")?;
    let tie = LastWriterWins.resolve(
        "Task",
        &Slot::Active(edit.clone()),
        &Slot::Deleted(edit.updated_at()),
    );
    checks.expect(
        matches!(tie, Slot::Deleted(_)),
        "an edit and a delete at the same instant: the delete wins (the default resolver, asked directly)".into(),
    );
    Ok(())
}

/// Step 5: what each device now holds, and the sync totals.
fn final_state(phone: &Device, laptop: &Device, stats: &SyncStats) -> CliResult<()> {
    step(5, "Final state.");
    for d in [phone, laptop] {
        let everyone: Vec<String> =
            d.ds.repo("User")?
                .query(&QueryOptions::default())?
                .iter()
                .map(title_of)
                .collect();
        let all_tasks =
            d.ds.repo("Task")?
                .query(&QueryOptions::default().sort_by(SortKey::asc("title")))?;
        let tasks: Vec<String> = all_tasks.iter().map(task_line).collect();
        say(&format!(
            "{:<6} users {everyone:?}, tasks {tasks:?}",
            d.name
        ));
    }
    say(&format!(
        "sync totals: {} partition(s) copied, {} merged, {} conflict(s) resolved, {} entity change(s), {} bytes written",
        stats.keys_copied, stats.keys_merged, stats.conflicts, stats.entities_changed, stats.bytes_written
    ));
    say("(a conflict here is any id whose two copies differed in a tier pair: store/local or local/cloud)");
    Ok(())
}

/// Step 6, first half: the devices' tiers agree, as the instances see them.
fn converged_in_memory(phone: &Device, laptop: &Device, checks: &mut Checks) -> CliResult<()> {
    step(
        6,
        "Convergence: every tier of both devices and the cloud hold the same data.",
    );
    phone.ds.flush()?;
    laptop.ds.flush()?;
    let roots = [
        ("phone local", phone.ds.tier_meta(TierId::Local)?.root()),
        ("phone cloud", phone.ds.tier_meta(TierId::Cloud)?.root()),
        ("laptop local", laptop.ds.tier_meta(TierId::Local)?.root()),
        ("laptop cloud", laptop.ds.tier_meta(TierId::Cloud)?.root()),
    ];
    for (what, root) in &roots {
        say(&format!("{what:<12} root {}", &root[..16]));
    }
    checks.expect(
        roots.iter().all(|(_, r)| *r == roots[0].1),
        "all tiers report the same root".into(),
    );
    // Partitions compared whole: in format 2 a local entry's hash is of the writes
    // it holds, not of its content, so entries alone cannot be compared.
    let store_in_local = |d: &Device| -> CliResult<bool> {
        for key in d.ds.tier_keys(TierId::Store)? {
            let store = d.ds.tier_partition(TierId::Store, &key)?;
            if store.is_some() && store != d.ds.tier_partition(TierId::Local, &key)? {
                return Ok(false);
            }
        }
        Ok(true)
    };
    for d in [phone, laptop] {
        checks.expect(
            store_in_local(d)?,
            format!(
                "every partition in the {}'s store equals its local copy",
                d.name
            ),
        );
        let audit = d.ds.audit()?;
        checks.expect(
            audit.is_empty(),
            format!(
                "audit of the {}'s tiers (hashes and counts recomputed): {} problem(s)",
                d.name,
                audit.len()
            ),
        );
        for problem in audit {
            say(&format!("    {problem}"));
        }
    }
    Ok(())
}

/// Step 6, second half: the directories, verified on disk once closed, and the root
/// the server records (`server_root`, when the cloud is a server).
fn converged_on_disk(
    dirs: &[(&str, DirPersistence)],
    server_root: Option<String>,
    checks: &mut Checks,
) -> CliResult<()> {
    let mut disk_roots = Vec::new();
    for (what, dir) in dirs {
        let mut dir = dir.clone();
        let report = examine(&mut dir)?;
        checks.expect(
            report.problems.is_empty()
                && report.recorded_root.as_deref() == Some(report.root.as_str()),
            format!(
                "{what:<8} on disk: {} partition(s), root {}, verified",
                report.partitions.len(),
                &report.root[..16]
            ),
        );
        for problem in &report.problems {
            say(&format!("    {problem}"));
        }
        disk_roots.push(report.root);
    }
    match server_root {
        None => checks.expect(
            disk_roots.iter().all(|r| *r == disk_roots[0]),
            "the three directories hold identical partitions".into(),
        ),
        Some(root) => {
            checks.expect(
                disk_roots.iter().all(|r| *r == disk_roots[0]),
                "both devices' directories hold identical partitions".into(),
            );
            checks.expect(
                root == disk_roots[0],
                format!(
                    "the server records the same root ({})",
                    &root[..root.len().min(16)]
                ),
            );
        }
    }
    Ok(())
}
