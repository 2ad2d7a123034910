//! Test support: real server processes, a small blocking client, and PostgreSQL
//! schemas that clean up after themselves.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const TOKENS: &str = r#"# test tokens
{"token": "secret-admin", "device": "admin", "read": ["*"], "write": ["*"]}
{"token": "secret-alice", "device": "alice", "read": ["app.alice*"], "write": ["app.alice*"]}
{"token": "secret-reader", "device": "reader", "read": ["app.*"], "write": []}
{"token": "secret-bob", "device": "bob", "read": ["app.*"], "write": ["app.bob*"]}
"#;

pub const ADMIN: &str = "secret-admin";
pub const ALICE: &str = "secret-alice";
pub const READER: &str = "secret-reader";
pub const BOB: &str = "secret-bob";

/// Where a test server stores.
#[derive(Clone, Debug)]
pub enum Store {
    Dir(PathBuf),
    Pg { url: String, schema: String },
}

/// The PostgreSQL URL for the tests, from `DATASYNC_TEST_POSTGRES`. Without it the
/// test is skipped with a `SKIP:` line, except under CI, where it fails.
pub fn pg_url() -> Option<String> {
    match std::env::var("DATASYNC_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but DATASYNC_TEST_POSTGRES is not set: PostgreSQL is required");
            }
            println!("SKIP: PostgreSQL tests (DATASYNC_TEST_POSTGRES is not set)");
            None
        }
    }
}

/// A schema of its own for one test, dropped (with its tables) when the guard drops.
pub struct PgSchema {
    pub url: String,
    pub name: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl PgSchema {
    pub fn new(url: &str, test: &str) -> PgSchema {
        let name = format!(
            "t_{}_{}_{}",
            test,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        PgSchema {
            url: url.to_string(),
            name,
        }
    }

    pub fn store(&self) -> Store {
        Store::Pg {
            url: self.url.clone(),
            schema: self.name.clone(),
        }
    }

    /// Runs SQL in this database (for checks that bypass the server).
    pub fn query_count(&self, sql: &str) -> i64 {
        let url = self.url.clone();
        let sql = sql.replace("{schema}", &self.name);
        runtime().block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect to PostgreSQL");
            tokio::spawn(conn);
            let row = client.query_one(&sql, &[]).await.expect("query");
            row.get::<_, i64>(0)
        })
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let url = self.url.clone();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let _ = runtime().block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            client.batch_execute(&sql).await
        });
    }
}

/// A running server process, killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub store: Store,
    pub log: PathBuf,
    pub tokens: PathBuf,
    extra: Vec<String>,
}

pub fn write_tokens(dir: &Path) -> PathBuf {
    let path = dir.join("tokens.jsonl");
    std::fs::write(&path, TOKENS).unwrap();
    path
}

impl Server {
    /// Starts a server on 127.0.0.1, port 0, and waits for its `listening on` line.
    pub fn start(store: &Store, work: &Path, extra: &[&str]) -> Server {
        let tokens = write_tokens(work);
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Server::spawn(store, work, &tokens, &extra, "127.0.0.1:0")
    }

    fn spawn(store: &Store, work: &Path, tokens: &Path, extra: &[String], listen: &str) -> Server {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let log = work.join(format!("server-{n}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_datasync-server"));
        cmd.arg("--listen").arg(listen).arg("--tokens").arg(tokens);
        match store {
            Store::Dir(dir) => {
                cmd.arg("--dir").arg(dir);
            }
            Store::Pg { url, schema } => {
                cmd.arg("--postgres")
                    .arg(url)
                    .arg("--pg-schema")
                    .arg(schema)
                    .arg("--pg-pool")
                    .arg("4");
            }
        }
        cmd.args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().expect("start datasync-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().expect("a socket address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server did not start:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        Server {
            child: Some(child),
            addr,
            store: store.clone(),
            log,
            tokens: tokens.to_path_buf(),
            extra: extra.to_vec(),
        }
    }

    /// A new process on the same storage (and the same port if it is free).
    pub fn restart(&self, work: &Path) -> Server {
        Server::spawn(&self.store, work, &self.tokens, &self.extra, "127.0.0.1:0")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for the process to exit (at most `limit`).
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                panic!("the server did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A blocking client that never turns a status into an error.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// A response reduced to what the tests look at.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub etag: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

fn reply(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut r = r.expect("the request reached the server");
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string());
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_vec().unwrap();
    Reply { status, etag, body }
}

/// Percent-encodes a key as one path segment (unreserved characters stay).
pub fn enc(key: &str) -> String {
    let mut out = String::new();
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// The client calls of the protocol, with a token (or none).
pub struct Client<'a> {
    pub server: &'a Server,
    pub token: Option<&'a str>,
    pub agent: ureq::Agent,
}

impl<'a> Client<'a> {
    pub fn new(server: &'a Server, token: &'a str) -> Client<'a> {
        Client {
            server,
            token: Some(token),
            agent: agent(),
        }
    }

    pub fn anonymous(server: &'a Server) -> Client<'a> {
        Client {
            server,
            token: None,
            agent: agent(),
        }
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    pub fn get(&self, key: &str) -> Reply {
        self.get_raw(&format!("/v1/blobs/{}", enc(key)))
    }

    pub fn get_raw(&self, path: &str) -> Reply {
        reply(self.auth(self.agent.get(self.server.url(path))).call())
    }

    pub fn put(&self, key: &str, value: &[u8]) -> Reply {
        self.put_with(key, value, None)
    }

    /// `cond`: ("If-None-Match", "*") or ("If-Match", "\"hash\"").
    pub fn put_with(&self, key: &str, value: &[u8], cond: Option<(&str, &str)>) -> Reply {
        let mut req = self.auth(
            self.agent
                .put(self.server.url(&format!("/v1/blobs/{}", enc(key)))),
        );
        if let Some((name, value)) = cond {
            req = req.header(name, value);
        }
        reply(req.send(value))
    }

    pub fn put_if_absent(&self, key: &str, value: &[u8]) -> Reply {
        self.put_with(key, value, Some(("If-None-Match", "*")))
    }

    pub fn put_if_match(&self, key: &str, value: &[u8], old: &str) -> Reply {
        self.put_with(key, value, Some(("If-Match", &format!("\"{old}\""))))
    }

    pub fn delete(&self, key: &str) -> Reply {
        reply(
            self.auth(
                self.agent
                    .delete(self.server.url(&format!("/v1/blobs/{}", enc(key)))),
            )
            .call(),
        )
    }

    pub fn keys(&self, prefix: Option<&str>) -> Reply {
        let path = match prefix {
            Some(p) => format!("/v1/keys?prefix={}", enc(p)),
            None => "/v1/keys".to_string(),
        };
        self.get_raw(&path)
    }

    pub fn key_list(&self, prefix: Option<&str>) -> Vec<String> {
        let r = self.keys(prefix);
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }

    pub fn batch_raw(&self, body: &[u8]) -> Reply {
        reply(
            self.auth(self.agent.post(self.server.url("/v1/batch")))
                .header("Content-Type", "application/json")
                .send(body),
        )
    }

    pub fn batch(&self, ops: serde_json::Value) -> Reply {
        self.batch_raw(serde_json::json!({ "ops": ops }).to_string().as_bytes())
    }
}

/// Sends raw bytes on a new connection and returns the status and body of the reply.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    read_reply(&mut s)
}

/// Reads one HTTP reply (status line, headers, body by Content-Length).
pub fn read_reply(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "the connection closed before a reply");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < header_end + len {
        let n = s.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[header_end..]).to_string();
    (status, body)
}

/// Every backend a test should run on: a directory always, PostgreSQL when available.
pub fn backends(work: &Path, test: &str) -> Vec<(Store, Option<PgSchema>)> {
    let dir = work.join("store");
    let mut out = vec![(Store::Dir(dir), None)];
    if let Some(url) = pg_url() {
        let schema = PgSchema::new(&url, test);
        out.push((schema.store(), Some(schema)));
    }
    out
}

/// Reads one value of the metrics text (the sum over matching lines).
pub fn metric(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
