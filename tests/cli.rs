//! The `datasync` command end to end, on real temporary directories.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use datasync::DirPersistence;
use serde_json::Value;

thread_local! {
    /// The format the commands of this test's thread open tiers in (None: the default).
    static FORMAT: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Runs the rest of this test's commands on `format`.
fn on_format(format: u32) {
    FORMAT.with(|f| f.set(Some(format)));
}

fn datasync(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_datasync"));
    command.args(args);
    if let Some(format) = FORMAT.with(Cell::get) {
        command.env("DATASYNC_DEFAULT_FORMAT", format.to_string());
    }
    command.output().unwrap()
}

/// The file that holds `partition` of a directory tier (format 2: its first piece).
fn partition_file(dir: &Path, partition: &str) -> PathBuf {
    let adapter = DirPersistence::open(dir).unwrap();
    let index = adapter
        .read(&datasync::pieces::index_key(partition))
        .unwrap();
    match index {
        None => adapter.file_of(partition),
        Some(bytes) => {
            let index = datasync::pieces::Index::parse(&bytes).unwrap();
            adapter.file_of(&datasync::pieces::piece_key(
                partition,
                &index.entries[0].name,
            ))
        }
    }
}

/// Flips one bit in the middle of `file`.
fn damage(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(file, bytes).unwrap();
}

fn ok(args: &[&str]) -> String {
    let out = datasync(args);
    assert!(
        out.status.success(),
        "datasync {args:?} failed ({:?}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A failure: the exit code, and stderr, which must be one line without a panic.
fn fails(args: &[&str]) -> (i32, String) {
    let out = datasync(args);
    assert!(!out.status.success(), "datasync {args:?} succeeded");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    (out.status.code().unwrap(), err)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn inspect_json(dir: &Path) -> Value {
    serde_json::from_str(&ok(&["inspect", p(dir), "--json"])).unwrap()
}

#[test]
fn the_demo_converges() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("demo");
    let out = ok(&["demo", "--dir", p(&base)]);
    assert!(out.contains("Converged"), "{out}");
    assert!(!out.contains("FAILED"), "{out}");
    let roots: Vec<Value> = ["phone", "laptop", "cloud"]
        .iter()
        .map(|d| inspect_json(&base.join(d))["root"].clone())
        .collect();
    assert!(roots.iter().all(|r| *r == roots[0]), "{roots:?}");
    ok(&["verify", p(&base.join("cloud"))]);
    // A directory that is not empty is refused.
    let (code, err) = fails(&["demo", "--dir", p(&base)]);
    assert_eq!(code, 2);
    assert!(err.contains("not empty"), "{err}");
    // And the default, a temporary directory.
    assert!(ok(&["demo"]).contains("Converged"));
}

#[test]
fn the_demo_converges_in_either_format() {
    for format in [1, 2] {
        on_format(format);
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("demo");
        let text = ok(&["demo", "--dir", p(&base)]);
        assert!(text.contains("Converged"), "{text}");
        for d in ["phone", "laptop", "cloud"] {
            let has_index = base
                .join(d)
                .join("blobs")
                .read_dir()
                .unwrap()
                .any(|f| f.unwrap().file_name().to_string_lossy().contains("index"));
            assert_eq!(has_index, format == 2, "{d} on format {format}");
            ok(&["verify", p(&base.join(d))]);
        }
    }
}

#[test]
fn put_get_query_delete_inspect_verify() {
    for format in [1, 2] {
        on_format(format);
        put_get_query_delete_inspect_verify_on(format);
    }
}

fn put_get_query_delete_inspect_verify_on(format: u32) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tier");
    let alice = ok(&["put", p(&dir), "User", r#"{"name": "Alice", "age": 31}"#])
        .trim()
        .to_string();
    let bob = ok(&["put", p(&dir), "User", r#"{"name": "Bob", "age": 27}"#])
        .trim()
        .to_string();
    ok(&["put", p(&dir), "Task", r#"{"title": "Buy milk"}"#]);
    assert!(alice.starts_with("User."), "{alice}");

    let got: Value = serde_json::from_str(&ok(&["get", p(&dir), "User", &alice])).unwrap();
    assert_eq!(got["name"], "Alice");
    assert_eq!(got["version"], 1);

    let all: Vec<Value> =
        serde_json::from_str(&ok(&["query", p(&dir), "User", "--sort", "age"])).unwrap();
    assert_eq!(
        all.iter()
            .map(|u| u["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["Bob", "Alice"]
    );
    let desc: Vec<Value> = serde_json::from_str(&ok(&[
        "query",
        p(&dir),
        "User",
        "--sort",
        "age:desc",
        "--limit",
        "1",
    ]))
    .unwrap();
    assert_eq!(desc.len(), 1);
    assert_eq!(desc[0]["name"], "Alice");
    let aged: Vec<Value> =
        serde_json::from_str(&ok(&["query", p(&dir), "User", "--where", "age=27"])).unwrap();
    assert_eq!(aged.len(), 1);
    assert_eq!(aged[0]["id"], bob.as_str());
    let named: Vec<Value> =
        serde_json::from_str(&ok(&["query", p(&dir), "User", "--where", "name=Alice"])).unwrap();
    assert_eq!(named[0]["id"], alice.as_str());

    // An update through put keeps the id and bumps the version.
    ok(&[
        "put",
        p(&dir),
        "User",
        &format!(r#"{{"id": "{alice}", "name": "Alice L.", "age": 32}}"#),
    ]);
    let got: Value = serde_json::from_str(&ok(&["get", p(&dir), "User", &alice])).unwrap();
    assert_eq!(
        (got["name"].as_str(), got["version"].as_u64()),
        (Some("Alice L."), Some(2))
    );

    assert!(ok(&["delete", p(&dir), "User", &bob]).contains("deleted"));
    let (code, err) = fails(&["get", p(&dir), "User", &bob]);
    assert_eq!(code, 1);
    assert!(err.contains(&bob), "{err}");

    let report = inspect_json(&dir);
    // Format 2's root is the hash of the summary tree's top (80 bits).
    let root_len = if format == 1 { 64 } else { 20 };
    assert_eq!(report["root"].as_str().unwrap().len(), root_len);
    assert_eq!(report["root"], report["recordedRoot"]);
    let parts = report["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    let users = parts.iter().find(|p| p["key"] == "app.User").unwrap();
    assert_eq!(users["entities"]["User"]["count"], 1);
    assert_eq!(users["entities"]["User"]["deletedCount"], 1);
    assert_eq!(users["hash"].as_str().unwrap().len(), 64);
    assert!(report["problems"].as_array().unwrap().is_empty());
    let text = ok(&["inspect", p(&dir)]);
    assert!(
        text.contains("app.User") && text.contains("User: 1 (+1 deleted)"),
        "{text}"
    );
    assert!(ok(&["verify", p(&dir)]).starts_with("ok: 2 partition(s)"));
}

#[test]
fn verify_lists_what_is_wrong() {
    for format in [1, 2] {
        on_format(format);
        verify_lists_what_is_wrong_on();
    }
}

fn verify_lists_what_is_wrong_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tier");
    ok(&["put", p(&dir), "User", r#"{"name": "Alice"}"#]);
    ok(&["put", p(&dir), "Task", r#"{"title": "Buy milk"}"#]);
    let file = partition_file(&dir, "app.Task");
    damage(&file);

    let out = datasync(&["verify", p(&dir)]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("app.Task") && text.contains("damaged") && text.contains(p(&file)),
        "{text}"
    );
    // Verify moves nothing; the instance moves the file aside on load and carries on.
    assert!(file.exists());
    let (code, err) = fails(&["query", p(&dir), "Task"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("app.Task") && err.contains("moved aside"),
        "{err}"
    );
    assert!(!file.exists());
    assert_eq!(ok(&["query", p(&dir), "User"]).matches("Alice").count(), 1);
}

#[test]
fn sync_reconciles_two_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let alice = ok(&["put", p(&a), "User", r#"{"name": "Alice"}"#])
        .trim()
        .to_string();
    ok(&["put", p(&b), "User", r#"{"name": "Bob"}"#]);
    ok(&["put", p(&b), "Task", r#"{"title": "Buy milk"}"#]);
    ok(&[
        "put",
        p(&b),
        "User",
        &format!(r#"{{"id": "{alice}", "name": "Alice (b)"}}"#),
    ]);

    let out = ok(&["sync", p(&a), p(&b)]);
    assert!(out.contains("in sync"), "{out}");
    assert!(
        out.contains("1 merged") && out.contains("1 copied"),
        "{out}"
    );
    assert!(out.contains("app.Task"), "{out}");
    assert_eq!(inspect_json(&a)["root"], inspect_json(&b)["root"]);
    let got: Value = serde_json::from_str(&ok(&["get", p(&a), "User", &alice])).unwrap();
    assert_eq!(got["name"], "Alice (b)");
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&ok(&["query", p(&a), "User"]))
            .unwrap()
            .len(),
        2
    );
    ok(&["verify", p(&a)]);
    ok(&["verify", p(&b)]);
    // Again: nothing moves.
    let out = ok(&["sync", p(&a), p(&b)]);
    assert!(out.contains("0 copied, 0 merged"), "{out}");
    // Into a new directory: a copy.
    let c = tmp.path().join("c");
    ok(&["sync", p(&a), p(&c)]);
    assert_eq!(inspect_json(&a)["root"], inspect_json(&c)["root"]);
}

#[test]
fn errors_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    for args in [
        vec!["inspect", p(&missing)],
        vec!["verify", p(&missing)],
        vec!["get", p(&missing), "User", "User.abc"],
        vec!["query", p(&missing), "User"],
        vec!["sync", p(&missing), p(tmp.path())],
    ] {
        let (code, err) = fails(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains("no such directory"), "{err}");
    }
    assert!(!missing.exists());
    let dir = tmp.path().join("tier");
    let (_, err) = fails(&["put", p(&dir), "User", "{not json"]);
    assert!(err.contains("invalid JSON"), "{err}");
    let (_, err) = fails(&["put", p(&dir), "User", "[1, 2]"]);
    assert!(err.contains("object"), "{err}");
    let (_, err) = fails(&["get", p(&dir), "User", "no-separator"]);
    assert!(err.contains("invalid id"), "{err}");
    let (_, err) = fails(&["query", p(&dir), "User", "--where", "novalue"]);
    assert!(err.contains("FIELD=VALUE"), "{err}");
    // A directory held by another instance.
    let held = DirPersistence::open(&dir).unwrap();
    let (_, err) = fails(&["inspect", p(&dir)]);
    assert!(err.contains("another instance holds"), "{err}");
    drop(held);
    ok(&["inspect", p(&dir)]);
    // A path under a regular file.
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let (_, err) = fails(&["put", p(&file.join("sub")), "User", "{}"]);
    assert!(err.contains("cannot create directory"), "{err}");
}

#[test]
fn sync_with_a_server_url_needs_a_token_and_reports_an_unreachable_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tier");
    ok(&["put", p(&dir), "User", r#"{"name": "Ann"}"#]);
    let (code, err) = fails(&["sync", p(&dir), "http://127.0.0.1:1"]);
    assert_eq!(code, 2);
    assert!(err.contains("--token"), "{err}");
    let (_, err) = fails(&["sync", p(&dir), p(tmp.path()), "--token", "t"]);
    assert!(err.contains("not a directory"), "{err}");
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (code, err) = fails(&["sync", p(&dir), &url, "--token", "s3cret-token"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot reach") && err.contains(&url), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

#[test]
fn sync_of_many_partitions() {
    use datasync::{Config, DataSync};
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for (dir, side) in [(&a, "a"), (&b, "b")] {
        let ds =
            DataSync::open(Config::new("app").local(DirPersistence::open(dir).unwrap())).unwrap();
        // One partition per entity name: 60 on each side, 30 of them shared.
        let offset = if side == "a" { 0 } else { 30 };
        for n in offset..offset + 60 {
            ds.repo(&format!("Kind{n}"))
                .unwrap()
                .save(&serde_json::json!({"side": side}))
                .unwrap();
        }
        ds.close().unwrap();
    }
    let out = ok(&["sync", p(&a), p(&b)]);
    assert!(
        out.contains("90 partition(s) compared, 60 copied, 30 merged"),
        "{out}"
    );
    assert!(out.contains("in sync: both hold 90 partition(s)"), "{out}");
    assert_eq!(inspect_json(&a)["root"], inspect_json(&b)["root"]);
    ok(&["verify", p(&a)]);
    ok(&["verify", p(&b)]);
}

#[test]
fn query_reads_every_partition_of_a_date_partitioned_tier() {
    use datasync::{Config, DataSync, DateGranularity, DateStrategy};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tier");
    let ds = DataSync::open(
        Config::new("app")
            .strategy(DateStrategy::new(DateGranularity::Month))
            .local(DirPersistence::open(&dir).unwrap()),
    )
    .unwrap();
    let logs = ds.repo("Log").unwrap();
    let mut ids = Vec::new();
    for (i, at) in ["2026-01-05T00:00:00.000Z", "2026-03-09T00:00:00.000Z"]
        .iter()
        .enumerate()
    {
        ids.push(
            logs.save(&serde_json::json!({"n": i, "createdAt": at}))
                .unwrap(),
        );
    }
    ds.flush().unwrap();
    ds.close().unwrap();
    let found: Vec<Value> =
        serde_json::from_str(&ok(&["query", p(&dir), "Log", "--sort", "n:desc"])).unwrap();
    let seen: Vec<&str> = found.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(seen, vec![ids[1].as_str(), ids[0].as_str()]);
    let got: Value = serde_json::from_str(&ok(&["get", p(&dir), "Log", &ids[0]])).unwrap();
    assert_eq!(got["n"], 0);
    let page: Vec<Value> = serde_json::from_str(&ok(&[
        "query",
        p(&dir),
        "Log",
        "--sort",
        "n",
        "--offset",
        "1",
        "--limit",
        "5",
    ]))
    .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["n"], 1);
}

#[test]
fn sort_orders_are_checked_and_a_field_no_entity_has_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tier");
    ok(&["put", p(&dir), "User", r#"{"name":"b"}"#]);
    ok(&["put", p(&dir), "User", r#"{"name":"a"}"#]);
    let (code, err) = fails(&["query", p(&dir), "User", "--sort", "name:up"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown sort order"), "{err}");
    let out = ok(&["query", p(&dir), "User", "--sort", "name:DESC"]);
    let names: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(names[0]["name"], "b");
    let out = datasync(&["query", p(&dir), "User", "--sort", "nmae"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nmae"),
        "the misspelt field is reported: {err}"
    );
}

#[test]
fn inspect_and_verify_leave_a_directory_that_is_no_tier_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("photos");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::write(plain.join("cat.jpg"), b"not a tier").unwrap();
    for args in [
        vec!["inspect", p(&plain)],
        vec!["verify", p(&plain)],
        vec!["query", p(&plain), "User"],
        vec!["get", p(&plain), "User", "User.abcdefghijklmnop"],
    ] {
        let (code, err) = fails(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains("not a datasync tier"), "{args:?}: {err}");
    }
    let mut names: Vec<String> = std::fs::read_dir(&plain)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["cat.jpg".to_string()], "nothing was created");
}

#[test]
fn sync_restores_a_partition_moved_aside_as_corrupt() {
    for format in [1, 2] {
        on_format(format);
        sync_restores_a_partition_moved_aside_as_corrupt_on();
    }
}

fn sync_restores_a_partition_moved_aside_as_corrupt_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let id = ok(&["put", p(&a), "User", r#"{"name":"Ann"}"#]);
    let id = id.trim();
    ok(&["sync", p(&a), p(&b)]);
    // Damage a's partition; a read moves it aside and fails, and so does the next.
    damage(&partition_file(&a, "app.User"));
    fails(&["get", p(&a), "User", id]);
    let (code, err) = fails(&["get", p(&a), "User", id]);
    assert_eq!(code, 2, "an unreadable partition is an error, not absent");
    assert!(err.contains("app.User"), "{err}");
    let out = datasync(&["verify", p(&a)]);
    assert!(!out.status.success());
    // The sync brings it back from b.
    ok(&["sync", p(&a), p(&b)]);
    ok(&["verify", p(&a)]);
    let got: Value = serde_json::from_str(&ok(&["get", p(&a), "User", id])).unwrap();
    assert_eq!(got["name"], "Ann");
}

#[test]
fn every_argument_has_help() {
    for command in ["inspect", "verify", "sync", "put", "get", "delete", "query"] {
        let help = ok(&[command, "--help"]);
        for line in help.lines().filter(|l| l.trim_start().starts_with('<')) {
            let described = line.trim().split_once("  ").map(|(_, d)| d.trim());
            assert!(
                described.is_some_and(|d| !d.is_empty()),
                "{command}: argument without help: {line:?}"
            );
        }
        if command == "query" {
            for flag in ["--limit", "--offset", "--sort", "--where"] {
                let line = help.lines().find(|l| l.contains(flag)).unwrap();
                assert!(line.trim().split_once("  ").is_some(), "{flag}: {line:?}");
            }
        }
    }
}

#[test]
fn inspect_reads_a_directory_in_format_2_and_names_what_disagrees() {
    use datasync::{Config, DataSync, FieldStrategy, Persistence};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("f2");
    let ds = DataSync::open(
        Config::new("app")
            .format(2)
            .strategy(FieldStrategy::new("team"))
            .local(DirPersistence::open(&dir).unwrap()),
    )
    .unwrap();
    let users: Vec<Value> = (0..30)
        .map(|i| serde_json::json!({"team": format!("t{}", i % 3), "n": i}))
        .collect();
    ds.repo("User").unwrap().save_many(&users).unwrap();
    ds.close().unwrap();

    let report = inspect_json(&dir);
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    assert_eq!(report["root"], report["recordedRoot"]);
    let partitions = report["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    for p in partitions {
        assert_eq!(p["entities"]["User"]["count"], 10, "{p}");
        assert!(p["bytes"].as_u64().unwrap() > 0);
    }
    assert!(ok(&["inspect", p(&dir)]).contains("3 partition(s)"));
    assert!(ok(&["verify", p(&dir)]).contains("ok: 3 partition(s)"));

    // An entry that no longer records what its partition holds is named.
    let mut adapter = DirPersistence::open(&dir).unwrap();
    let mut meta = datasync::Meta::read_stored(|k| adapter.read(k).unwrap())
        .unwrap()
        .unwrap();
    let key = meta.entries.keys().next().unwrap().clone();
    meta.entries.get_mut(&key).unwrap().hash = "0".repeat(64);
    for (k, bytes) in datasync::summary::Tree::of(&meta).documents() {
        adapter.store(&k, &bytes).unwrap();
    }
    adapter.commit().unwrap();
    drop(adapter);
    let report = inspect_json(&dir);
    let problems = report["problems"].to_string();
    assert!(problems.contains(&key), "{problems}");
    assert_ne!(report["root"], report["recordedRoot"]);
}
