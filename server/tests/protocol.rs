//! Every route of protocol v1 against real server processes, on the directory backend
//! and (when available) on PostgreSQL.

mod common;

use common::*;
use serde_json::json;

#[test]
fn blobs_and_conditional_stores() {
    let work = tempfile::tempdir().unwrap();
    for (store, _schema) in backends(work.path(), "blobs") {
        let server = Server::start(&store, work.path(), &[]);
        let c = Client::new(&server, ADMIN);

        // Absent, then stored, then read back with its ETag.
        assert_eq!(c.get("app.alice").status, 404);
        assert_eq!(c.put("app.alice", b"v1").status, 204);
        let r = c.get("app.alice");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"v1"[..]));
        assert_eq!(
            r.etag.as_deref(),
            Some(format!("\"{}\"", hash(b"v1")).as_str())
        );

        // If-None-Match: * stores only when absent.
        assert_eq!(c.put_if_absent("app.alice", b"x").status, 412);
        assert_eq!(c.put_if_absent("app.new", b"n1").status, 204);
        assert_eq!(c.get("app.new").body, b"n1");

        // If-Match stores only over the matching bytes.
        assert_eq!(
            c.put_if_match("app.alice", b"v2", &hash(b"other")).status,
            412
        );
        assert_eq!(c.get("app.alice").body, b"v1");
        assert_eq!(c.put_if_match("app.alice", b"v2", &hash(b"v1")).status, 204);
        assert_eq!(c.get("app.alice").body, b"v2");
        assert_eq!(c.put_if_match("app.absent", b"v", &hash(b"v1")).status, 412);
        assert_eq!(c.get("app.absent").status, 404);

        // An empty value is a value.
        assert_eq!(c.put("app.empty", b"").status, 204);
        let r = c.get("app.empty");
        assert_eq!((r.status, r.body.len()), (200, 0));
        assert_eq!(c.put_if_match("app.empty", b"e", &hash(b"")).status, 204);

        // Clear, also when absent.
        assert_eq!(c.delete("app.new").status, 204);
        assert_eq!(c.get("app.new").status, 404);
        assert_eq!(c.delete("app.new").status, 204);

        // Keys with encoded slashes, dots, unicode and reserved forms.
        let odd = [
            "app.a/b/c",
            "..",
            "../../escape",
            "app.é",
            "!piece:app.alice:doc:abc123",
            "!index:app.alice",
            "!datasync.summary",
            "app.sp ace+plus%",
        ];
        for key in odd {
            assert_eq!(c.put(key, key.as_bytes()).status, 204, "{key}");
        }
        for key in odd {
            assert_eq!(c.get(key).body, key.as_bytes(), "{key}");
        }

        // Listing: sorted, by prefix.
        let all = c.key_list(None);
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        for key in odd {
            assert!(all.contains(&key.to_string()), "{key} in {all:?}");
        }
        assert_eq!(
            c.key_list(Some("app.a")),
            vec!["app.a/b/c".to_string(), "app.alice".to_string()]
        );
        assert_eq!(c.key_list(Some("app.sp ace+")), vec!["app.sp ace+plus%"]);
        assert_eq!(c.key_list(Some("app.sp_")), Vec::<String>::new());
        assert_eq!(c.key_list(Some("!piece:")).len(), 1);
        assert!(c.key_list(Some("zzz")).is_empty());

        if let Store::Dir(dir) = &store {
            // Nothing left the data directory, whatever the keys said.
            let names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            let mut names = names;
            names.sort();
            assert_eq!(names, vec!["data", "tmp"]);
            assert!(!work.path().join("escape").exists());
        }
    }
}

#[test]
fn batch_ops() {
    let work = tempfile::tempdir().unwrap();
    for (store, _schema) in backends(work.path(), "batch") {
        let server = Server::start(&store, work.path(), &[]);
        let c = Client::new(&server, ALICE);
        let b64 = |v: &[u8]| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(v)
        };
        let r = c.batch(json!([
            {"op": "load", "key": "app.alice.1"},
            {"op": "store", "key": "app.alice.1", "value": b64(b"one")},
            {"op": "load", "key": "app.alice.1"},
            {"op": "store_if", "key": "app.alice.2", "value": b64(b"two"), "expected": null},
            {"op": "store_if", "key": "app.alice.2", "value": b64(b"2"), "expected": null},
            {"op": "store_if", "key": "app.alice.1", "value": b64(b"uno"), "expected": hash(b"one")},
            {"op": "store_if", "key": "app.alice.1", "value": b64(b"x"), "expected": hash(b"one")},
            {"op": "store", "key": "app.bob.1", "value": b64(b"no")},
            {"op": "load", "key": "app.bob.1"},
            {"op": "clear", "key": "app.alice.2"},
            {"op": "load", "key": "app.alice.2"},
            {"op": "load", "key": "bad\u{1}key"},
        ]));
        assert_eq!(r.status, 200, "{}", r.text());
        let results = r.json()["results"].as_array().unwrap().clone();
        let statuses: Vec<u64> = results
            .iter()
            .map(|r| r["status"].as_u64().unwrap())
            .collect();
        assert_eq!(
            statuses,
            vec![404, 204, 200, 204, 412, 204, 412, 403, 403, 204, 404, 400]
        );
        assert_eq!(results[2]["value"], b64(b"one"));
        assert!(results[7]["error"].as_str().unwrap().contains("app.bob.1"));
        assert_eq!(c.get("app.alice.1").body, b"uno");
        let admin = Client::new(&server, ADMIN);
        assert_eq!(admin.get("app.bob.1").status, 404);

        // An empty batch is fine.
        let r = c.batch(json!([]));
        assert_eq!((r.status, r.json()), (200, json!({"results": []})));

        // A malformed batch is refused whole: nothing of it is written.
        let store_first = |bad: serde_json::Value| json!([{"op": "store", "key": "app.alice.refused", "value": b64(b"x")}, bad]);
        let bad_ops = [
            json!({"op": "store", "key": "app.alice.3", "value": "not base64!"}),
            json!({"op": "explode", "key": "app.alice.3"}),
            json!({"op": "store", "key": "app.alice.3"}),
            json!({"op": "store_if", "key": "app.alice.3", "value": b64(b"x")}),
            json!({"op": "store_if", "key": "app.alice.3", "value": b64(b"x"), "expected": "nothex"}),
            json!({"key": "app.alice.3"}),
            json!("load"),
        ];
        for bad in bad_ops {
            let r = c.batch(store_first(bad.clone()));
            assert_eq!(r.status, 400, "{bad}: {}", r.text());
            assert!(!r.text().contains('\n'), "{}", r.text());
        }
        for body in [&b"{not json"[..], b"[]", b"{\"ops\": 3}", b"", b"\xff\xfe"] {
            let r = c.batch_raw(body);
            assert_eq!(r.status, 400, "{:?}: {}", body, r.text());
        }
        let many: Vec<_> = (0..1001)
            .map(|i| json!({"op": "load", "key": format!("app.alice.{i}")}))
            .collect();
        assert_eq!(c.batch(json!(many)).status, 413);
        let exactly: Vec<_> = (0..1000)
            .map(|i| json!({"op": "load", "key": format!("app.alice.{i}")}))
            .collect();
        assert_eq!(c.batch(json!(exactly)).status, 200);

        assert_eq!(c.get("app.alice.refused").status, 404);
        assert_eq!(c.get("app.alice.3").status, 404);
        assert_eq!(
            admin.key_list(None),
            vec!["app.alice.1".to_string()],
            "only the first batch wrote"
        );
    }
}

#[test]
fn token_rules() {
    let work = tempfile::tempdir().unwrap();
    for (store, _schema) in backends(work.path(), "tokens") {
        let server = Server::start(&store, work.path(), &[]);
        let admin = Client::new(&server, ADMIN);
        assert_eq!(admin.put("app.bob.doc", b"bob's").status, 204);
        assert_eq!(admin.put("app.alice.doc", b"alice's").status, 204);
        assert_eq!(admin.put("!piece:app.bob.doc:h1", b"p").status, 204);
        assert_eq!(admin.put("!datasync.summary", b"s").status, 204);

        // No token, a bad token, a malformed header: 401.
        let anon = Client::anonymous(&server);
        assert_eq!(anon.get("app.bob.doc").status, 401);
        assert_eq!(anon.put("app.x", b"x").status, 401);
        assert_eq!(anon.keys(None).status, 401);
        assert_eq!(anon.batch(json!([])).status, 401);
        let bad = Client::new(&server, "secret-admin2");
        assert_eq!(bad.get("app.bob.doc").status, 401);
        assert_eq!(bad.keys(None).status, 401);
        let r = raw_request(
            server.addr,
            b"GET /v1/blobs/app.bob.doc HTTP/1.1\r\nHost: x\r\nAuthorization: Basic c2VjcmV0LWFkbWlu\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.0, 401);

        // A read-only token reads but cannot write or clear.
        let reader = Client::new(&server, READER);
        assert_eq!(reader.get("app.bob.doc").body, b"bob's");
        assert_eq!(reader.put("app.reader", b"x").status, 403);
        assert_eq!(reader.put_if_absent("app.reader", b"x").status, 403);
        assert_eq!(reader.delete("app.bob.doc").status, 403);
        assert_eq!(reader.put("!datasync.summary", b"s2").status, 403);
        assert_eq!(reader.get("!datasync.summary").body, b"s");
        let r = reader.batch(json!([{"op": "clear", "key": "app.bob.doc"}]));
        assert_eq!(r.json()["results"][0]["status"], 403);
        assert_eq!(admin.get("app.bob.doc").body, b"bob's");

        // A token for app.alice* can neither read nor list app.bob.
        let alice = Client::new(&server, ALICE);
        let r = alice.get("app.bob.doc");
        assert_eq!(r.status, 403);
        assert!(r.text().contains("app.bob.doc"), "{}", r.text());
        assert_eq!(alice.get("!piece:app.bob.doc:h1").status, 403);
        assert_eq!(alice.put("app.bob.doc", b"mine").status, 403);
        assert_eq!(alice.delete("app.bob.doc").status, 403);
        let listed = alice.key_list(None);
        assert_eq!(
            listed,
            vec!["!datasync.summary".to_string(), "app.alice.doc".to_string()]
        );
        assert!(alice.key_list(Some("app.bob")).is_empty());
        assert_eq!(alice.get("app.alice.doc").body, b"alice's");
        // Alice writes pieces and the summary (she has a write pattern).
        assert_eq!(alice.put("!piece:app.alice.doc:h2", b"p").status, 204);
        assert_eq!(alice.put("!datasync.summary", b"s3").status, 204);

        // Bob reads app.* but writes only app.bob*.
        let bob = Client::new(&server, BOB);
        assert_eq!(bob.put("app.bob.doc", b"bob2").status, 204);
        assert_eq!(bob.put("app.alice.doc", b"bob2").status, 403);
        assert_eq!(admin.get("app.alice.doc").body, b"alice's");

        // The log names devices, never secrets.
        let log = server.log_text();
        assert!(log.contains("\"device\":\"alice\""), "{log}");
        assert!(!log.contains("secret-"), "a secret reached the log");
    }
}

#[test]
fn bad_requests_write_nothing() {
    let work = tempfile::tempdir().unwrap();
    for (store, _schema) in backends(work.path(), "bad") {
        let server = Server::start(&store, work.path(), &["--max-body", "1024"]);
        let admin = Client::new(&server, ADMIN);
        let auth = "Authorization: Bearer secret-admin\r\n";

        // Malformed keys.
        let long = "k".repeat(1025);
        for path in [
            "/v1/blobs/a%0Ab",
            "/v1/blobs/a%7Fb",
            "/v1/blobs/%FF%FE",
            "/v1/blobs/%zz",
            "/v1/blobs/abc%2",
            "/v1/blobs/!unknown:reserved",
            "/v1/blobs/!piece:nohash",
            "/v1/blobs/",
            &format!("/v1/blobs/{long}"),
        ] {
            for method in ["GET", "PUT", "DELETE"] {
                let req = format!(
                    "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1\r\nConnection: close\r\n\r\nx"
                );
                let (status, body) = raw_request(server.addr, req.as_bytes());
                assert_eq!(status, 400, "{method} {path}: {body}");
                assert!(!body.is_empty() && !body.contains('\n'), "{body:?}");
            }
        }
        // Path tricks: more than one segment is no key at all.
        for path in [
            "/v1/blobs/../../etc/passwd",
            "/v1/blobs/a/b",
            "/v1/blobs/./x",
        ] {
            let req =
                format!("PUT {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1\r\nConnection: close\r\n\r\nx");
            let (status, _) = raw_request(server.addr, req.as_bytes());
            assert!((400..500).contains(&status), "{path}: {status}");
        }

        // Bad conditional headers.
        assert_eq!(
            admin
                .put_with("app.c", b"x", Some(("If-Match", "nohash")))
                .status,
            400
        );
        assert_eq!(
            admin
                .put_with("app.c", b"x", Some(("If-None-Match", "\"abc\"")))
                .status,
            400
        );

        // Oversize bodies: declared, and sent in chunks without a length.
        let (status, body) = raw_request(
            server.addr,
            format!("PUT /v1/blobs/app.big HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1000000000\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(status, 413, "{body}");
        let mut chunked = format!(
            "PUT /v1/blobs/app.big2 HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        for _ in 0..3 {
            chunked.extend_from_slice(b"200\r\n");
            chunked.extend_from_slice(&[b'z'; 0x200]);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(raw_request(server.addr, &chunked).0, 413);
        assert_eq!(admin.put("app.big3", &[7u8; 1025]).status, 413);
        assert_eq!(admin.put("app.fits", &[7u8; 1024]).status, 204);
        let big_batch = format!(
            "{{\"ops\":[{{\"op\":\"store\",\"key\":\"app.big4\",\"value\":\"{}\"}}]}}",
            "A".repeat(2000)
        );
        assert_eq!(admin.batch_raw(big_batch.as_bytes()).status, 413);

        // Garbage that is not HTTP at all.
        let mut s = std::net::TcpStream::connect(server.addr).unwrap();
        use std::io::Write;
        let _ = s.write_all(b"\x00\x01garbage\r\n\r\n");
        drop(s);

        // Unknown routes and methods.
        assert_eq!(admin.get_raw("/v2/blobs/x").status, 404);
        let (status, _) = raw_request(
            server.addr,
            format!("POST /v1/blobs/app.x HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(status, 405);

        // The server still serves, and only the one good write happened.
        let health = admin.get_raw("/health");
        assert_eq!((health.status, health.text().as_str()), (200, "ok"));
        assert_eq!(admin.key_list(None), vec!["app.fits".to_string()]);
        if let Some(schema) = &_schema {
            let n = schema.query_count("SELECT count(*) FROM {schema}.blobs");
            assert_eq!(n, 1);
        }
    }
}

#[test]
fn health_and_metrics() {
    let work = tempfile::tempdir().unwrap();
    for (store, _schema) in backends(work.path(), "metrics") {
        let server = Server::start(&store, work.path(), &[]);
        let c = Client::new(&server, ADMIN);
        let anon = Client::anonymous(&server);
        let h = anon.get_raw("/health");
        assert_eq!((h.status, h.text().as_str()), (200, "ok"));

        let before = anon.get_raw("/metrics").text();
        assert_eq!(c.put("app.m", b"12345").status, 204);
        assert_eq!(c.put_if_absent("app.m", b"x").status, 412);
        assert_eq!(c.get("app.m").status, 200);
        let r = c.batch(json!([{"op": "store_if", "key": "app.m", "value": "", "expected": null}]));
        assert_eq!(r.json()["results"][0]["status"], 412);
        let after = anon.get_raw("/metrics");
        assert_eq!(after.status, 200);
        let after = after.text();

        let puts = "datasync_requests_total{route=\"/v1/blobs/{key}\",method=\"PUT\"";
        assert_eq!(metric(&after, puts) - metric(&before, puts), 2);
        let conflicts = "datasync_conflicts_total";
        assert_eq!(metric(&after, conflicts) - metric(&before, conflicts), 2);
        let bytes_in = "datasync_request_bytes_total{route=\"/v1/blobs/{key}\"}";
        assert_eq!(metric(&after, bytes_in) - metric(&before, bytes_in), 6);
        let bytes_out = "datasync_response_bytes_total{route=\"/v1/blobs/{key}\"}";
        assert!(metric(&after, bytes_out) - metric(&before, bytes_out) >= 5);
        let count = "datasync_request_duration_seconds_count{route=\"/v1/blobs/{key}\"}";
        assert_eq!(metric(&after, count) - metric(&before, count), 3);
        assert!(after.contains("# TYPE datasync_request_duration_seconds histogram"));
        assert!(after.contains("le=\"+Inf\""));
        assert!(after.contains("status=\"412\""));

        // A storage that stops answering is reported.
        if let Store::Dir(dir) = &store {
            std::fs::remove_dir_all(dir).unwrap();
            let h = anon.get_raw("/health");
            assert_eq!(h.status, 503, "{}", h.text());
        }
    }
}
