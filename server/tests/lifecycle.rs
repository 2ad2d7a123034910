//! Processes coming and going: two servers over one database racing conditional
//! writes, SIGKILL and restart, graceful shutdown, HTTPS.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;

/// Two server processes over one PostgreSQL schema, started at the same moment (so
/// their migrations race too), then racing conditional writes: in every round exactly
/// one of two writers wins.
#[test]
fn two_servers_over_one_database_race() {
    let Some(url) = pg_url() else { return };
    let work = tempfile::tempdir().unwrap();
    let schema = PgSchema::new(&url, "race");
    let store = schema.store();
    let servers: Vec<Server> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| Server::start(&store, work.path(), &[])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let rounds = 60;
    let barrier = Arc::new(Barrier::new(2));
    let outcomes: Vec<Vec<(u16, u16)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let server = &servers[i];
                let barrier = barrier.clone();
                s.spawn(move || {
                    let c = Client::new(server, ADMIN);
                    let mut out = Vec::new();
                    for r in 0..rounds {
                        let key = format!("app.race.{r}");
                        barrier.wait();
                        let first = c
                            .put_if_absent(&key, format!("first-{i}").as_bytes())
                            .status;
                        barrier.wait();
                        // Both read the winner, then both try to replace it.
                        let current = c.get(&key);
                        assert_eq!(current.status, 200);
                        barrier.wait();
                        let second = c
                            .put_if_match(
                                &key,
                                format!("second-{i}").as_bytes(),
                                &hash(&current.body),
                            )
                            .status;
                        out.push((first, second));
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let c0 = Client::new(&servers[0], ADMIN);
    let c1 = Client::new(&servers[1], ADMIN);
    for (r, (&a, &b)) in outcomes[0].iter().zip(outcomes[1].iter()).enumerate() {
        let mut firsts = [a.0, b.0];
        firsts.sort();
        assert_eq!(firsts, [204, 412], "round {r}: if-absent");
        let mut seconds = [a.1, b.1];
        seconds.sort();
        assert_eq!(seconds, [204, 412], "round {r}: if-match");
        let key = format!("app.race.{r}");
        let winner = if a.1 == 204 { 0 } else { 1 };
        let v0 = c0.get(&key).body;
        assert_eq!(v0, format!("second-{winner}").as_bytes(), "round {r}");
        assert_eq!(c1.get(&key).body, v0, "round {r}: both servers agree");
    }
    assert_eq!(c1.key_list(Some("app.race.")).len(), rounds);
    let conflicts: u64 = servers
        .iter()
        .map(|s| {
            let m = Client::anonymous(s).get_raw("/metrics").text();
            metric(&m, "datasync_conflicts_total")
        })
        .sum();
    assert_eq!(conflicts, 2 * rounds as u64);
}

/// Every write acknowledged before a SIGKILL is there after a restart.
#[test]
fn sigkill_then_restart_loses_nothing_acknowledged() {
    let work = tempfile::tempdir().unwrap();
    for (store, _schema) in backends(work.path(), "kill") {
        let mut server = Server::start(&store, work.path(), &[]);
        let addr = server.addr;
        let writer = std::thread::spawn(move || {
            let agent = agent();
            let mut acked = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            for i in 0..100_000u32 {
                if Instant::now() > deadline {
                    break;
                }
                let key = format!("app.k.{i}");
                let r = agent
                    .put(format!("http://{addr}/v1/blobs/{key}"))
                    .header("Authorization", format!("Bearer {ADMIN}"))
                    .send(format!("value-{i}").as_bytes());
                match r {
                    Ok(resp) if resp.status().as_u16() == 204 => acked.push(i),
                    _ => break,
                }
            }
            acked
        });
        // Let some writes through, then kill mid-stream.
        std::thread::sleep(Duration::from_millis(600));
        server.kill9();
        let acked = writer.join().unwrap();
        assert!(
            acked.len() >= 10,
            "only {} writes before the kill",
            acked.len()
        );
        let server = server.restart(work.path());
        let c = Client::new(&server, ADMIN);
        let r = c.batch(serde_json::Value::Array(
            acked
                .iter()
                .take(1000)
                .map(|i| serde_json::json!({"op": "load", "key": format!("app.k.{i}")}))
                .collect(),
        ));
        let results = r.json()["results"].as_array().unwrap().clone();
        for (i, result) in acked.iter().zip(results.iter()) {
            assert_eq!(result["status"], 200, "app.k.{i} lost");
        }
        for i in acked.iter().rev().take(200) {
            let r = c.get(&format!("app.k.{i}"));
            assert_eq!(r.body, format!("value-{i}").as_bytes(), "app.k.{i}");
        }
        let listed = c.key_list(Some("app.k."));
        assert!(listed.len() >= acked.len());
    }
}

/// SIGTERM: the server stops accepting, finishes the request in flight (whose body
/// is still arriving), closes idle connections and exits 0.
#[test]
fn graceful_shutdown_finishes_in_flight_requests() {
    let work = tempfile::tempdir().unwrap();
    for (store, _schema) in backends(work.path(), "term") {
        let mut server = Server::start(&store, work.path(), &[]);

        // An idle keep-alive connection must not hold the shutdown up.
        let mut idle = TcpStream::connect(server.addr).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_reply(&mut idle).0, 200);

        // A slow upload: headers and half the body now, the rest after the signal.
        let mut slow = TcpStream::connect(server.addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        slow.write_all(
            format!(
                "PUT /v1/blobs/app.slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello"
            )
            .as_bytes(),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let signalled = Instant::now();
        server.signal(libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(500));

        // No new connections once shutting down.
        assert!(
            TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)).is_err(),
            "the server still accepts after SIGTERM"
        );
        // The idle connection was closed.
        let mut buf = [0u8; 16];
        assert_eq!(idle.read(&mut buf).unwrap_or(0), 0);

        slow.write_all(b"world").unwrap();
        let (status, body) = read_reply(&mut slow);
        assert_eq!(status, 204, "{body}");
        let exit = server.wait(Duration::from_secs(10));
        assert!(exit.success(), "exit status {exit:?}");
        assert!(signalled.elapsed() < Duration::from_secs(10));
        assert!(server.log_text().contains("shutting down"));

        let server = server.restart(work.path());
        assert_eq!(
            Client::new(&server, ADMIN).get("app.slow").body,
            b"helloworld"
        );
    }
}

/// With a certificate the server speaks HTTPS (rustls).
#[test]
fn https_with_a_certificate() {
    let have = |tool: &str, arg: &str| {
        std::process::Command::new(tool)
            .arg(arg)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !have("openssl", "version") || !have("curl", "--version") {
        println!("SKIP: HTTPS test (needs the openssl and curl commands)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let cert = work.path().join("cert.pem");
    let key = work.path().join("key.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let store = Store::Dir(work.path().join("store"));
    let server = Server::start(
        &store,
        work.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                cert.to_str().unwrap(),
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let base = format!("https://{}", server.addr);
    assert_eq!(curl(&[&format!("{base}/health")]), "ok");
    let auth = format!("Authorization: Bearer {ADMIN}");
    let status = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "PUT",
        "-H",
        &auth,
        "--data-binary",
        "over tls",
        &format!("{base}/v1/blobs/app.tls"),
    ]);
    assert_eq!(status, "204");
    assert_eq!(
        curl(&["-H", &auth, &format!("{base}/v1/blobs/app.tls")]),
        "over tls"
    );
    // Plain HTTP on the TLS port gets nothing useful.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/1.1 200"));
}

/// A TCP proxy in front of PostgreSQL that can cut every connection and refuse new
/// ones, then heal.
struct CutProxy {
    addr: std::net::SocketAddr,
    state: Arc<std::sync::Mutex<(bool, Vec<TcpStream>)>>,
}

impl CutProxy {
    fn start(upstream: String) -> CutProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<std::sync::Mutex<(bool, Vec<TcpStream>)>> = Arc::default();
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let mut guard = shared.lock().unwrap();
                if guard.0 {
                    continue; // cut: dropped at once
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                guard.1.push(client.try_clone().unwrap());
                guard.1.push(server.try_clone().unwrap());
                drop(guard);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        CutProxy { addr, state }
    }

    fn cut(&self) {
        let mut guard = self.state.lock().unwrap();
        guard.0 = true;
        for s in guard.1.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.state.lock().unwrap().0 = false;
    }
}

/// PostgreSQL going away: health and requests answer 503, nothing half-written, and
/// the server recovers by itself when the database is back.
#[test]
fn postgres_outage_is_503_then_recovers() {
    let Some(url) = pg_url() else { return };
    let (head, tail) = url.split_once('@').expect("a URL with user@host");
    let (hostport, path) = tail.split_once('/').expect("a URL with a database");
    let proxy = CutProxy::start(hostport.to_string());
    let proxied = format!("{head}@{}/{path}", proxy.addr);
    let work = tempfile::tempdir().unwrap();
    let schema = PgSchema::new(&url, "outage");
    let store = Store::Pg {
        url: proxied,
        schema: schema.name.clone(),
    };
    let server = Server::start(&store, work.path(), &[]);
    let c = Client::new(&server, ADMIN);
    assert_eq!(c.put("app.o", b"before").status, 204);

    proxy.cut();
    let h = c.get_raw("/health");
    assert_eq!(h.status, 503, "{}", h.text());
    let r = c.put("app.o", b"during");
    assert_eq!((r.status, r.text().as_str()), (503, "storage unavailable"));
    assert_eq!(c.get("app.o").status, 503);
    let r = c.batch(serde_json::json!([{"op": "load", "key": "app.o"}]));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["results"][0]["status"], 503);

    proxy.heal();
    let deadline = Instant::now() + Duration::from_secs(15);
    while c.get_raw("/health").status != 200 {
        assert!(
            Instant::now() < deadline,
            "no recovery after the database came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.get("app.o").body, b"before");
    assert_eq!(c.put("app.o", b"after").status, 204);
    assert_eq!(c.get("app.o").body, b"after");
}
