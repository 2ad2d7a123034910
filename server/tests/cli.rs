//! The `datasync` command with a server: `demo --server`, `serve` and
//! `sync DIR URL --token`. The command is the workspace's `datasync` binary, built
//! next to this crate's `datasync-server` by `cargo build` (or `cargo test`) at the
//! workspace root.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn datasync_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_datasync-server")).with_file_name("datasync");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build --bin datasync` at the workspace root",
        path.display()
    );
    path
}

fn run(args: &[&str]) -> Output {
    Command::new(datasync_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_demo_converges_through_a_server() {
    let out = run(&["demo", "--server"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("through the sync server at http://127.0.0.1:"),
        "{all}"
    );
    assert!(all.contains("the server records the same root"), "{all}");
    assert!(all.contains("Converged"), "{all}");
    assert!(!all.contains("FAILED"), "{all}");
}

/// `datasync serve` on a free port, killed (and reaped) when dropped.
struct Served(std::process::Child, String);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &std::path::Path, tokens: &std::path::Path) -> Served {
    let mut child = Command::new(datasync_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .arg("--tokens")
        .arg(tokens)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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
        Ok(addr) => Served(child, format!("http://{addr}")),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`datasync serve` did not start the server");
        }
    }
}

#[test]
fn sync_a_directory_with_a_server_reports_refusals() {
    let work = tempfile::tempdir().unwrap();
    let tokens = work.path().join("tokens.jsonl");
    std::fs::write(
        &tokens,
        concat!(
            r#"{"token": "tok-all", "device": "all", "read": ["*"], "write": ["*"]}"#,
            "\n",
            r#"{"token": "tok-user", "device": "user", "read": ["app.User"], "write": ["app.User"]}"#,
            "\n"
        ),
    )
    .unwrap();
    let server = serve(&work.path().join("cloud"), &tokens);
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    for (dir, entity, json) in [
        (a, "User", r#"{"name": "Ann"}"#),
        (a, "Task", r#"{"t": "one"}"#),
        (b, "User", r#"{"name": "Bea"}"#),
    ] {
        assert!(run(&["put", dir, entity, json]).status.success());
    }

    let out = run(&["sync", a, &server.1, "--token", "tok-all"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("in sync: both hold 2 partition(s)"),
        "{}",
        text(&out)
    );

    let out = run(&["sync", b, &server.1, "--token", "tok-user"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("1 partition(s) refused"), "{all}");
    assert!(all.contains("\"app.Task\""), "{all}");
    let users = run(&["query", b, "User"]);
    let users = String::from_utf8_lossy(&users.stdout);
    assert!(users.contains("Ann") && users.contains("Bea"), "{users}");

    let out = run(&["sync", b, &server.1, "--token", "tok-wrong"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("the server rejected the token"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("tok-wrong"));
    drop(server);
}
