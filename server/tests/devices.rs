//! Devices (library instances with the HTTP cloud tier) syncing through a real
//! server process on the directory backend: convergence, conditional writes, a
//! token that excludes a partition, a bad token, and the server going away.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use datasync::{
    AdapterResult, Config, DataSync, HttpOptions, HttpPersistence, MemoryPersistence, Persistence,
    QueryOptions,
};
use serde_json::json;

const TOKENS: &str = r#"# devices of the tests
{"token": "tok-alice", "device": "alice", "read": ["*"], "write": ["*"]}
{"token": "tok-bob", "device": "bob", "read": ["*"], "write": ["*"]}
{"token": "tok-carol", "device": "carol", "read": ["app.Note", "app.Other"], "write": ["app.Note", "app.Other"]}
{"token": "tok-dave", "device": "dave", "read": ["app.*"], "write": ["app.Z*"]}
"#;

/// A server process on 127.0.0.1, killed and reaped when dropped.
struct Server {
    child: Child,
    addr: String,
    dir: PathBuf,
    tokens: PathBuf,
}

impl Server {
    /// A server over `work/cloud`, on a free port.
    fn start(work: &Path) -> Server {
        let tokens = work.join("tokens.jsonl");
        std::fs::write(&tokens, TOKENS).unwrap();
        Server::spawn(&work.join("cloud"), &tokens, "127.0.0.1:0")
    }

    fn spawn(dir: &Path, tokens: &Path, listen: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_datasync-server"))
            .arg("--listen")
            .arg(listen)
            .arg("--dir")
            .arg(dir)
            .arg("--tokens")
            .arg(tokens)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start datasync-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not start on {listen}");
            }
        };
        Server {
            child,
            addr,
            dir: dir.to_path_buf(),
            tokens: tokens.to_path_buf(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the process (SIGKILL) and returns what a restart needs.
    fn kill(mut self) -> (PathBuf, PathBuf, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.dir.clone(), self.tokens.clone(), self.addr.clone())
    }

    /// A counter of the server's Prometheus text.
    fn metric(&self, name: &str) -> u64 {
        let text = ureq::get(&format!("{}/metrics", self.url()))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn quick() -> HttpOptions {
    HttpOptions {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(5),
    }
}

fn device_with(cloud: impl Persistence + 'static) -> DataSync {
    DataSync::open(
        Config::new("app")
            .local(MemoryPersistence::new())
            .cloud(cloud)
            .store_sync_delay(Duration::from_millis(10))
            .cloud_sync_interval(Duration::from_secs(3600))
            .retry(Duration::from_secs(60), Duration::from_secs(60))
            .sync_on_open(false),
    )
    .unwrap()
}

fn device(server_url: &str, token: &str) -> DataSync {
    device_with(HttpPersistence::with_options(server_url, token, quick()).unwrap())
}

fn titles(ds: &DataSync, name: &str) -> Vec<String> {
    let mut titles: Vec<String> = ds
        .repo(name)
        .unwrap()
        .query(&QueryOptions::default())
        .unwrap()
        .iter()
        .map(|e| e.value()["t"].as_str().unwrap_or("").to_string())
        .collect();
    titles.sort();
    titles
}

/// Before the first conditional write over an existing partition, another writer
/// changes it on the server (the same document with a trailing newline): the
/// device's write is refused (412) and it must read, merge and write again.
struct Interloper {
    inner: HttpPersistence,
    other: HttpPersistence,
    done: bool,
}

impl Persistence for Interloper {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        self.inner.load(key)
    }
    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        self.inner.store(key, bytes)
    }
    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        self.inner.clear(key)
    }
    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        self.inner.keys()
    }
    fn store_if(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        bytes: &[u8],
    ) -> AdapterResult<Option<bool>> {
        // A partition's mutable document: format 1's partition, format 2's index.
        let partition = !key.starts_with('!') || key.starts_with("!index:");
        if let (false, true, Some(held)) = (self.done, partition, expected) {
            self.done = true;
            let mut changed = held.to_vec();
            changed.push(b'\n');
            self.other.store(key, &changed)?;
        }
        self.inner.store_if(key, expected, bytes)
    }
}

#[test]
fn two_devices_converge_through_the_server_with_conditional_writes() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(work.path());
    let url = server.url();
    let alice = device(&url, "tok-alice");
    let bob = device_with(Interloper {
        inner: HttpPersistence::with_options(&url, "tok-bob", quick()).unwrap(),
        other: HttpPersistence::with_options(&url, "tok-alice", quick()).unwrap(),
        done: false,
    });

    let note = alice
        .repo("Note")
        .unwrap()
        .save(&json!({"t": "a1"}))
        .unwrap();
    alice
        .repo("Task")
        .unwrap()
        .save(&json!({"t": "a2"}))
        .unwrap();
    let stats = alice.sync_now().unwrap();
    assert!(!stats.offline && stats.errors.is_empty(), "{stats:?}");
    let stats = bob.sync_now().unwrap();
    assert!(!stats.offline && stats.errors.is_empty(), "{stats:?}");
    assert_eq!(titles(&bob, "Note"), ["a1"]);

    // Both edit: Bob adds to the partition Alice wrote, and meets another writer.
    bob.repo("Note").unwrap().save(&json!({"t": "b1"})).unwrap();
    alice
        .repo("Note")
        .unwrap()
        .save(&json!({"id": note, "t": "a1 edited"}))
        .unwrap();
    let conflicts_before = server.metric("datasync_conflicts_total");
    let stats = bob.sync_now().unwrap();
    assert!(!stats.offline && stats.errors.is_empty(), "{stats:?}");
    assert!(
        stats.write_races >= 1,
        "the interloper's write was met: {stats:?}"
    );
    assert!(
        server.metric("datasync_conflicts_total") > conflicts_before,
        "the server refused a conditional write (412)"
    );

    // A few rounds settle everything (bounded).
    for _ in 0..3 {
        alice.sync_now().unwrap();
        bob.sync_now().unwrap();
    }
    assert_eq!(titles(&alice, "Note"), ["a1 edited", "b1"]);
    assert_eq!(titles(&bob, "Note"), ["a1 edited", "b1"]);
    assert_eq!(titles(&bob, "Task"), ["a2"]);
    alice.flush().unwrap();
    bob.flush().unwrap();
    let root = |ds: &DataSync, tier| ds.tier_meta(tier).unwrap().root();
    use datasync::TierId::{Cloud, Local};
    assert_eq!(root(&alice, Local), root(&bob, Local));
    assert_eq!(root(&alice, Cloud), root(&alice, Local));
    assert!(alice.audit().unwrap().is_empty());
    assert!(bob.audit().unwrap().is_empty());
    alice.close().unwrap();
    bob.close().unwrap();
}

#[test]
fn a_token_that_excludes_a_partition_syncs_the_rest_and_reports_it() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(work.path());
    let alice = device(&server.url(), "tok-alice");
    alice
        .repo("Note")
        .unwrap()
        .save(&json!({"t": "shared"}))
        .unwrap();
    alice
        .repo("Secret")
        .unwrap()
        .save(&json!({"t": "hidden"}))
        .unwrap();
    alice.sync_now().unwrap();

    let carol = device(&server.url(), "tok-carol");
    carol
        .repo("Other")
        .unwrap()
        .save(&json!({"t": "carol"}))
        .unwrap();
    let stats = carol.sync_now().unwrap();
    assert!(!stats.offline, "a refusal is not an outage: {stats:?}");
    assert_eq!(stats.keys_refused, 1, "{stats:?}");
    assert!(
        stats
            .errors
            .iter()
            .any(|e| e.contains("\"app.Secret\"") && e.contains("refused")),
        "the error names the refused partition: {stats:?}"
    );
    assert!(carol.status().online, "{:?}", carol.status());
    assert_eq!(titles(&carol, "Note"), ["shared"]);
    assert!(titles(&carol, "Secret").is_empty());

    // What Carol may write reached the server.
    alice.sync_now().unwrap();
    assert_eq!(titles(&alice, "Other"), ["carol"]);
    alice.close().unwrap();
    carol.close().unwrap();
}

#[test]
fn a_partition_the_token_may_read_but_not_write_is_refused_and_the_rest_syncs() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(work.path());
    let alice = device(&server.url(), "tok-alice");
    alice
        .repo("Note")
        .unwrap()
        .save(&json!({"t": "alice"}))
        .unwrap();
    alice.sync_now().unwrap();

    // Dave reads everything but writes only app.Z*: each sync, his Note edits are
    // refused (a 403 on a PUT) while his Zebra partition syncs.
    let dave = device(&server.url(), "tok-dave");
    dave.sync_now().unwrap();
    for round in 0..5 {
        dave.repo("Note")
            .unwrap()
            .save(&json!({"t": format!("dave {round}")}))
            .unwrap();
        dave.repo("Zebra")
            .unwrap()
            .save(&json!({"t": format!("z {round}")}))
            .unwrap();
        let stats = dave.sync_now().unwrap();
        assert!(!stats.offline, "round {round}: {stats:?}");
        assert!(stats.keys_refused >= 1, "round {round}: {stats:?}");
        assert!(
            stats.errors.iter().all(|e| e.contains("\"app.Note\"")),
            "round {round}: only the Note partition is refused: {stats:?}"
        );
        assert!(dave.status().online);
    }
    alice.sync_now().unwrap();
    assert_eq!(titles(&alice, "Note"), ["alice"]);
    assert_eq!(titles(&alice, "Zebra").len(), 5);
    alice.close().unwrap();
    dave.close().unwrap();
}

#[test]
fn a_bad_token_is_a_clear_error_and_offline() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(work.path());
    let mallory = device(&server.url(), "tok-nobody");
    mallory
        .repo("Note")
        .unwrap()
        .save(&json!({"t": "x"}))
        .unwrap();
    let stats = mallory.sync_now().unwrap();
    assert!(stats.offline, "{stats:?}");
    assert!(
        stats
            .errors
            .iter()
            .any(|e| e.contains("the server rejected the token")),
        "{stats:?}"
    );
    assert!(
        stats.errors.iter().all(|e| !e.contains("tok-nobody")),
        "{stats:?}"
    );
    let status = mallory.status();
    assert!(!status.online, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("the server rejected the token")),
        "{status:?}"
    );
    mallory.close().unwrap();
}

#[test]
fn the_server_going_away_is_offline_and_coming_back_recovers() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(work.path());
    let url = server.url();
    let alice = device(&url, "tok-alice");
    alice
        .repo("Note")
        .unwrap()
        .save(&json!({"t": "before"}))
        .unwrap();
    assert!(!alice.sync_now().unwrap().offline);

    let (dir, tokens, addr) = server.kill();
    let id = alice
        .repo("Note")
        .unwrap()
        .save(&json!({"t": "while down"}))
        .unwrap();
    let stats = alice.sync_now().unwrap();
    assert!(stats.offline, "{stats:?}");
    assert!(
        stats.errors.iter().any(|e| e.contains(&addr)),
        "the error names the server: {stats:?}"
    );
    assert!(!alice.status().online);

    // Back on the same address and storage: the next syncs go through (bounded).
    let server = Server::spawn(&dir, &tokens, &addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = alice.sync_now().unwrap();
        if !stats.offline && alice.status().online {
            break;
        }
        assert!(Instant::now() < deadline, "still offline: {stats:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let bob = device(&server.url(), "tok-bob");
    bob.sync_now().unwrap();
    assert!(bob.repo("Note").unwrap().get(&id).unwrap().is_some());
    assert_eq!(titles(&bob, "Note"), ["before", "while down"]);
    alice.close().unwrap();
    bob.close().unwrap();
}
