//! The machinery of the convergence test: server processes, the fault proxy, device
//! processes and their logs, and the last-writer-wins order of writes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use datasync::{
    AdapterResult, Config, DataSync, DirPersistence, Entity, HttpOptions, MemoryStore, Partition,
    Persistence, QueryOptions, Slot, Store,
};
use serde_json::{json, Value};

/// The variable that turns the test binary into a device.
pub const DEVICE_ENV: &str = "DATASYNC_SOAK_DEVICE";

/// splitmix64: small, seedable, good enough to pick faults and ids.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------------
// Server processes

/// A `datasync-server` process on PostgreSQL, killed and reaped when dropped.
pub struct ServerProc {
    child: Option<Child>,
    pub addr: SocketAddr,
    log: PathBuf,
    dir: PathBuf,
}

impl ServerProc {
    /// Starts a server on `listen` (a free port when `None`), or panics.
    pub fn start(
        url: &str,
        schema: &str,
        tokens: &Path,
        dir: &Path,
        listen: Option<SocketAddr>,
    ) -> ServerProc {
        match ServerProc::try_start(url, schema, tokens, dir, listen) {
            Ok(s) => s,
            Err(log) => panic!("the server did not start:\n{log}"),
        }
    }

    fn try_start(
        url: &str,
        schema: &str,
        tokens: &Path,
        dir: &Path,
        listen: Option<SocketAddr>,
    ) -> Result<ServerProc, String> {
        std::fs::create_dir_all(dir).unwrap();
        let n = std::fs::read_dir(dir).unwrap().count();
        let log = dir.join(format!("server-{n}.log"));
        let listen = listen
            .map(|a| a.to_string())
            .unwrap_or_else(|| "127.0.0.1:0".into());
        let mut child = Command::new(env!("CARGO_BIN_EXE_datasync-server"))
            .arg("--listen")
            .arg(&listen)
            .arg("--tokens")
            .arg(tokens)
            .arg("--postgres")
            .arg(url)
            .arg("--pg-schema")
            .arg(schema)
            .arg("--pg-pool")
            .arg("4")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
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
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => Ok(ServerProc {
                child: Some(child),
                addr: addr.parse().expect("a socket address"),
                log,
                dir: dir.to_path_buf(),
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::fs::read_to_string(&log).unwrap_or_default())
            }
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A new process on the same database and port (retried while the port is busy).
    pub fn restart_same_port(&self, url: &str, schema: &str, tokens: &Path) -> ServerProc {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match ServerProc::try_start(url, schema, tokens, &self.dir, Some(self.addr)) {
                Ok(s) => return s,
                Err(log) if Instant::now() > deadline => {
                    panic!("the server did not restart on {}:\n{log}", self.addr)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// `datasync_conflicts_total` (412 answers) of this process, 0 if unreachable.
    pub fn conflicts_metric(&self) -> u64 {
        let Ok(reply) = ureq::get(&format!("http://{}/metrics", self.addr)).call() else {
            return 0;
        };
        let text = reply.into_body().read_to_string().unwrap_or_default();
        crate::common::metric(&text, "datasync_conflicts_total")
    }

    pub fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 40)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------
// The fault proxy

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    dropped: AtomicU64,
    delayed: AtomicU64,
    cut: AtomicU64,
}

/// What a proxy did.
#[derive(Debug, Default, Clone, Copy)]
pub struct FaultCounts {
    pub connections: u64,
    pub dropped: u64,
    pub delayed: u64,
    pub cut: u64,
}

impl std::iter::Sum for FaultCounts {
    fn sum<I: Iterator<Item = FaultCounts>>(iter: I) -> FaultCounts {
        iter.fold(FaultCounts::default(), |a, b| FaultCounts {
            connections: a.connections + b.connections,
            dropped: a.dropped + b.dropped,
            delayed: a.delayed + b.delayed,
            cut: a.cut + b.cut,
        })
    }
}

/// A TCP proxy on 127.0.0.1 in front of one server. Until healed, each connection is
/// at random dropped (closed without forwarding), delayed (up to 300 ms before it is
/// connected and before answers), or cut after some bytes in one direction.
pub struct Proxy {
    pub addr: SocketAddr,
    healed: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let healed = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (h, c) = (healed.clone(), counters.clone());
        std::thread::spawn(move || {
            let mut rng = Rng::new(seed);
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let conn_seed = rng.next();
                let (h, c) = (h.clone(), c.clone());
                std::thread::spawn(move || serve(client, upstream, conn_seed, &h, &c));
            }
        });
        Proxy {
            addr,
            healed,
            counters,
        }
    }

    /// From now on everything passes, also on open connections.
    pub fn heal(&self) {
        self.healed.store(true, Ordering::SeqCst);
    }

    pub fn counts(&self) -> FaultCounts {
        let c = &self.counters;
        FaultCounts {
            connections: c.connections.load(Ordering::SeqCst),
            dropped: c.dropped.load(Ordering::SeqCst),
            delayed: c.delayed.load(Ordering::SeqCst),
            cut: c.cut.load(Ordering::SeqCst),
        }
    }
}

fn serve(client: TcpStream, upstream: SocketAddr, seed: u64, healed: &AtomicBool, c: &Counters) {
    c.connections.fetch_add(1, Ordering::SeqCst);
    let mut rng = Rng::new(seed);
    let faulty = !healed.load(Ordering::SeqCst);
    let roll = rng.below(100);
    let (mut delay, mut cut_up, mut cut_down) = (false, None, None);
    if faulty {
        match roll {
            0..=5 => {
                c.dropped.fetch_add(1, Ordering::SeqCst);
                return; // closed at once
            }
            6..=9 => {
                // Read (some of) the request, then close unanswered.
                c.dropped.fetch_add(1, Ordering::SeqCst);
                let mut client = client;
                let _ = client.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let _ = client.read(&mut buf);
                return;
            }
            10..=14 => cut_up = Some(rng.below(600) as usize),
            15..=21 => cut_down = Some(rng.below(1200) as usize),
            22..=45 => {
                delay = true;
                c.delayed.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(rng.below(300)));
            }
            _ => {}
        }
    }
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
        return; // the server is down: the client sees a closed connection
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (c2s_from, c2s_to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let seed_up = rng.next();
    std::thread::scope(|s| {
        s.spawn(|| {
            pump(
                c2s_from,
                c2s_to,
                cut_up,
                false,
                Rng::new(seed_up),
                healed,
                c,
            )
        });
        pump(server, client, cut_down, delay, rng, healed, c);
    });
}

/// Copies `from` to `to` until EOF; with `cut`, closes both ways after that many
/// bytes; with `delay`, sleeps up to 300 ms before some chunks. While not healed,
/// any chunk (a request or an answer, or part of one, on a kept-alive connection)
/// may also be delayed, dropped with the connection, or cut short.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    cut: Option<usize>,
    delay: bool,
    mut rng: Rng,
    healed: &AtomicBool,
    c: &Counters,
) {
    let mut buf = [0u8; 16 * 1024];
    let mut sent = 0usize;
    let close = |from: &TcpStream, to: &TcpStream| {
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    };
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        let live = !healed.load(Ordering::SeqCst);
        if live {
            if delay && rng.below(2) == 0 {
                std::thread::sleep(Duration::from_millis(rng.below(300)));
            }
            if let Some(limit) = cut {
                if sent + n > limit {
                    let _ = to.write_all(&buf[..limit - sent]);
                    c.cut.fetch_add(1, Ordering::SeqCst);
                    close(&from, &to);
                    return;
                }
            }
            match rng.below(100) {
                0..=2 => {
                    c.dropped.fetch_add(1, Ordering::SeqCst);
                    close(&from, &to);
                    return;
                }
                3..=5 => {
                    let keep = rng.below(n as u64) as usize;
                    let _ = to.write_all(&buf[..keep]);
                    c.cut.fetch_add(1, Ordering::SeqCst);
                    close(&from, &to);
                    return;
                }
                6..=15 => {
                    c.delayed.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(rng.below(300)));
                }
                _ => {}
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            close(&from, &to);
            return;
        }
        sent += n;
    }
}

// ---------------------------------------------------------------------------------
// Writes and their order

/// One write as it was made on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Save {
        id: String,
        updated_at: i64,
        version: u64,
        /// The entity's canonical JSON.
        json: String,
    },
    Delete {
        id: String,
        at: i64,
    },
}

impl Write {
    pub fn id(&self) -> &str {
        match self {
            Write::Save { id, .. } | Write::Delete { id, .. } => id,
        }
    }

    /// The library's last-writer-wins order: the later instant wins; a delete wins
    /// an equal instant; then the greater version; then the greater canonical bytes.
    /// `true` when `self` strictly beats `other`.
    pub fn beats(&self, other: &Write) -> bool {
        use std::cmp::Ordering::*;
        match (self, other) {
            (
                Write::Save {
                    updated_at: a,
                    version: va,
                    json: ja,
                    ..
                },
                Write::Save {
                    updated_at: b,
                    version: vb,
                    json: jb,
                    ..
                },
            ) => {
                a.cmp(b)
                    .then(va.cmp(vb))
                    .then(ja.as_bytes().cmp(jb.as_bytes()))
                    == Greater
            }
            (Write::Save { updated_at, .. }, Write::Delete { at, .. }) => updated_at > at,
            (Write::Delete { at, .. }, Write::Save { updated_at, .. }) => at >= updated_at,
            (Write::Delete { at: a, .. }, Write::Delete { at: b, .. }) => a > b,
        }
    }

    /// A save as a device holds it, from the entity's canonical JSON.
    pub fn from_entity_json(id: &str, json: &str) -> Write {
        let v: Value = serde_json::from_str(json).unwrap();
        Write::Save {
            id: id.to_string(),
            updated_at: v["updatedAt"]
                .as_str()
                .and_then(datasync::clock::parse_millis)
                .unwrap_or_else(|| panic!("no updatedAt in {json}")),
            version: v["version"].as_u64().unwrap(),
            json: json.to_string(),
        }
    }

    fn to_json(&self, n: u64, ok: bool) -> Value {
        match self {
            Write::Save {
                id,
                updated_at,
                version,
                json,
            } => json!({"n": n, "ok": ok, "op": "save", "id": id, "updatedAt": updated_at,
                        "version": version, "json": json}),
            Write::Delete { id, at } => {
                json!({"n": n, "ok": ok, "op": "delete", "id": id, "at": at})
            }
        }
    }

    fn from_json(v: &Value) -> Write {
        let id = v["id"].as_str().unwrap().to_string();
        match v["op"].as_str().unwrap() {
            "save" => Write::Save {
                id,
                updated_at: v["updatedAt"].as_i64().unwrap(),
                version: v["version"].as_u64().unwrap(),
                json: v["json"].as_str().unwrap().to_string(),
            },
            _ => Write::Delete {
                id,
                at: v["at"].as_i64().unwrap(),
            },
        }
    }
}

/// A device's log: every write it made, in order, and how many of the first are
/// acknowledged (made without error, and a later flush succeeded).
pub struct DeviceLog {
    pub writes: Vec<Write>,
    /// Whether each write's save or delete returned Ok.
    pub ok: Vec<bool>,
    pub acked: usize,
    /// How many of the first writes were acknowledged when writing stopped (before
    /// the healing rounds).
    pub acked_while_writing: usize,
}

impl DeviceLog {
    pub fn read(dir: &Path) -> DeviceLog {
        let text = std::fs::read_to_string(dir.join("log.jsonl")).unwrap_or_default();
        let mut log = DeviceLog {
            writes: Vec::new(),
            ok: Vec::new(),
            acked: 0,
            acked_while_writing: 0,
        };
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            if let Some(n) = v.get("acked") {
                log.acked = n.as_u64().unwrap() as usize;
            } else if v.get("stopped").is_some() {
                log.acked_while_writing = log.acked;
            } else {
                assert_eq!(v["n"].as_u64().unwrap() as usize, log.writes.len());
                log.writes.push(Write::from_json(&v));
                log.ok.push(v["ok"].as_bool().unwrap());
            }
        }
        log
    }

    /// Whether write `i` is acknowledged.
    pub fn is_acked(&self, i: usize) -> bool {
        i < self.acked && self.ok[i]
    }
}

/// A device's final state: its entities (id to canonical JSON).
pub struct DeviceState {
    pub entities: BTreeMap<String, String>,
    pub conflicts: u64,
}

pub fn read_state(dir: &Path) -> DeviceState {
    let text = std::fs::read_to_string(dir.join("state.json"))
        .unwrap_or_else(|e| panic!("{}: no final state ({e})", dir.display()));
    let v: Value = serde_json::from_str(&text).unwrap();
    DeviceState {
        entities: v["entities"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect(),
        conflicts: v["conflicts"].as_u64().unwrap(),
    }
}

// ---------------------------------------------------------------------------------
// Device processes

/// What a device process is told.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DeviceSpec {
    pub index: usize,
    /// Its own directory: local tier, log, final state, output.
    pub dir: PathBuf,
    /// Where the control files appear (`stop`, `round-N`, `dump`).
    pub control: PathBuf,
    pub url: String,
    pub token: String,
    pub pool: usize,
    pub max_writes: u64,
    pub seed: u64,
}

/// A device process (this test binary in device mode), killed when dropped.
pub struct DeviceProc {
    child: Option<Child>,
    pub index: usize,
    pub dir: PathBuf,
}

impl DeviceProc {
    pub fn start(spec: &DeviceSpec) -> DeviceProc {
        std::fs::create_dir_all(&spec.dir).unwrap();
        let out = File::create(spec.dir.join("output.txt")).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "device_main", "--nocapture", "--test-threads=1"])
            .env(DEVICE_ENV, serde_json::to_string(spec).unwrap())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start a device process");
        DeviceProc {
            child: Some(child),
            index: spec.index,
            dir: spec.dir.clone(),
        }
    }

    pub fn check_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "device {} exited early ({status}):\n{}",
                self.index,
                self.output_tail()
            );
        }
    }

    /// Waits for a file the device creates in its directory.
    pub fn wait_file(&mut self, name: &str, deadline: Instant) {
        while !self.dir.join(name).exists() {
            self.check_running();
            if Instant::now() > deadline {
                panic!(
                    "device {} did not reach {name} in time:\n{}",
                    self.index,
                    self.output_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_exit(&mut self, deadline: Instant) {
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                assert!(
                    status.success(),
                    "device {} failed ({status}):\n{}",
                    self.index,
                    self.output_tail()
                );
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "device {} did not exit in time:\n{}",
                    self.index,
                    self.output_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn output_tail(&self) -> String {
        tail(
            &std::fs::read_to_string(self.dir.join("output.txt")).unwrap_or_default(),
            30,
        )
    }
}

impl Drop for DeviceProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The store tier of a device: a [`MemoryStore`] that also remembers the last slot
/// a save or delete wrote (only the device's own writes go through those calls), so
/// the log holds each write exactly as it was made, tombstone instant included.
struct Recording {
    inner: MemoryStore,
    last: Arc<Mutex<Option<Slot>>>,
}

impl Persistence for Recording {
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
        self.inner.store_if(key, expected, bytes)
    }
    fn commit(&mut self) -> AdapterResult<()> {
        self.inner.commit()
    }
}

impl Store for Recording {
    fn get(&mut self, key: &str, name: &str, id: &str) -> AdapterResult<Option<Slot>> {
        self.inner.get(key, name, id)
    }
    fn get_all(&mut self, key: &str, name: &str) -> AdapterResult<Vec<Entity>> {
        self.inner.get_all(key, name)
    }
    fn save(&mut self, key: &str, name: &str, entity: &Entity) -> AdapterResult<()> {
        self.inner.save(key, name, entity)?;
        *self.last.lock().unwrap() = Some(Slot::Active(entity.clone()));
        Ok(())
    }
    fn delete(
        &mut self,
        key: &str,
        name: &str,
        id: &str,
        deleted_at: datasync::clock::Millis,
    ) -> AdapterResult<()> {
        self.inner.delete(key, name, id, deleted_at)?;
        *self.last.lock().unwrap() = Some(Slot::Deleted(deleted_at));
        Ok(())
    }
    fn load_partition(&mut self, key: &str) -> AdapterResult<Option<Partition>> {
        self.inner.load_partition(key)
    }
    fn store_partition(&mut self, key: &str, partition: &Partition) -> AdapterResult<()> {
        self.inner.store_partition(key, partition)
    }
}

struct LogFile(File);

impl LogFile {
    fn line(&mut self, v: Value) {
        let mut text = v.to_string();
        text.push('\n');
        self.0.write_all(text.as_bytes()).unwrap();
    }
}

/// The device process: writes until told to stop, then heals in rounds, then dumps
/// its entities and exits.
pub fn run_device(spec: &str) {
    let spec: DeviceSpec = serde_json::from_str(spec).unwrap();
    let mut rng = Rng::new(spec.seed);
    let last = Arc::new(Mutex::new(None));
    let ds = DataSync::open(
        Config::new("soak")
            .store(Recording {
                inner: MemoryStore::new(),
                last: last.clone(),
            })
            .local(DirPersistence::open(spec.dir.join("local")).unwrap())
            .cloud_http(
                &spec.url,
                &spec.token,
                HttpOptions {
                    connect_timeout: Duration::from_secs(2),
                    read_timeout: Duration::from_secs(5),
                },
            )
            .unwrap()
            .store_sync_delay(Duration::from_millis(20))
            .cloud_sync_interval(Duration::from_millis(250))
            .retry(Duration::from_millis(100), Duration::from_secs(1))
            .sync_on_open(false),
    )
    .unwrap();
    let repo = ds.repo("Item").unwrap();
    let mut log = LogFile(File::create(spec.dir.join("log.jsonl")).unwrap());
    let control = |name: &str| spec.control.join(name).exists();
    let mut n = 0u64;
    let mut unacked = 0u64;
    let (mut write_errors, mut flush_errors) = (0u64, 0u64);
    while n < spec.max_writes && !control("stop") {
        let id = format!("Item.k{}", rng.below(spec.pool as u64));
        *last.lock().unwrap() = None;
        let result = if rng.below(100) < 25 {
            repo.delete(&id).map(|_| ())
        } else {
            repo.save(&json!({"id": id, "dev": spec.index, "seq": n, "r": rng.below(1000)}))
                .map(|_| ())
        };
        let made = last.lock().unwrap().take();
        if let Err(e) = &result {
            write_errors += 1;
            eprintln!("device {}: write {n} of {id}: {e}", spec.index);
        }
        if let Some(slot) = made {
            // Even a write that reported an error is in the store if it got here,
            // and will travel: the oracle must know it.
            let w = match slot {
                Slot::Active(e) => Write::Save {
                    id: id.clone(),
                    updated_at: e.updated_at(),
                    version: e.version(),
                    json: e.json().to_string(),
                },
                Slot::Deleted(at) => Write::Delete { id: id.clone(), at },
            };
            log.line(w.to_json(n, result.is_ok()));
            n += 1;
            unacked += 1;
        }
        if unacked >= 5 || rng.below(3) == 0 {
            match ds.flush() {
                Ok(()) => {
                    log.line(json!({ "acked": n }));
                    unacked = 0;
                }
                Err(e) => {
                    flush_errors += 1;
                    eprintln!("device {}: flush: {e}", spec.index);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10 + rng.below(50)));
    }
    log.line(json!({ "stopped": n }));
    println!(
        "device {}: {n} writes, {write_errors} write errors, {flush_errors} flush errors, status {:?}",
        spec.index,
        ds.status()
    );

    // Healing rounds: flush and sync until nothing is pending and nothing fails.
    let mut conflicts = 0u64;
    let mut round = 1;
    loop {
        if control("dump") {
            break;
        }
        if !control(&format!("round-{round}")) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let flushed = ds.flush();
            if flushed.is_ok() {
                log.line(json!({ "acked": n }));
            }
            let synced = ds.sync_now();
            let status = ds.status();
            let pending = ds.pending_writes().unwrap();
            let clean = match (&flushed, &synced) {
                (Ok(()), Ok(stats)) => {
                    conflicts += stats.conflicts;
                    !stats.offline
                        && stats.errors.is_empty()
                        && stats.keys_skipped == 0
                        && status.pending_cloud == 0
                        && status.last_error.is_none()
                        && pending.local.is_empty()
                        && pending.cloud.is_empty()
                }
                _ => false,
            };
            if clean {
                break;
            }
            if attempts % 10 == 0 {
                eprintln!(
                    "device {}: round {round}, attempt {attempts}: flush {flushed:?}, \
                     sync {synced:?}, status {status:?}",
                    spec.index
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        File::create(spec.dir.join(format!("done-{round}"))).unwrap();
        round += 1;
    }

    let entities: BTreeMap<String, String> = repo
        .query(&QueryOptions::default())
        .unwrap()
        .iter()
        .map(|e| (e.id().to_string(), e.json().to_string()))
        .collect();
    let state = json!({"entities": entities, "conflicts": conflicts});
    std::fs::write(spec.dir.join("state.json"), state.to_string()).unwrap();
    println!("device {}: healed, {} entities", spec.index, entities.len());
    ds.close().unwrap();
}
