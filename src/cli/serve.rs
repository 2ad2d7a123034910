//! `serve ...`: runs the sync server, `datasync-server`, installed next to this
//! program (the server is its own binary, so that its dependencies never enter the
//! library).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use super::CliResult;

/// The server's file name on this platform.
const SERVER: &str = if cfg!(windows) {
    "datasync-server.exe"
} else {
    "datasync-server"
};

/// `datasync-server` next to the running program, or a one-line error telling how
/// to build it.
pub fn server_binary() -> CliResult<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or("cannot tell where this program is")?;
    // Test and example binaries live one level down (`target/debug/deps`).
    let candidates = [dir.join(SERVER), dir.join("..").join(SERVER)];
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "{SERVER} is not next to this program ({}); build it with `cargo build --release -p datasync-server`",
            dir.display()
        )
        .into()
    })
}

/// Runs the server with `args`, in the place of this process where the platform
/// allows (so signals reach it directly), and returns its exit code.
pub fn run(args: &[OsString]) -> CliResult<u8> {
    let server = server_binary()?;
    let mut command = Command::new(&server);
    command.args(args);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let e = command.exec();
        Err(format!("cannot run {}: {e}", server.display()).into())
    }
    #[cfg(not(unix))]
    {
        let status = command
            .status()
            .map_err(|e| format!("cannot run {}: {e}", server.display()))?;
        Ok(status.code().map_or(1, |c| c.clamp(0, 255) as u8))
    }
}

/// A `datasync-server` this program started on loopback; stopped when dropped.
pub struct LocalServer {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl LocalServer {
    /// Starts the server on a free loopback port with `args` after `--listen`, and
    /// waits (up to 20 s) until it says where it listens.
    pub fn start(args: &[OsString]) -> CliResult<LocalServer> {
        use std::io::BufRead;
        use std::process::Stdio;
        use std::time::Duration;

        let server = server_binary()?;
        let mut child = Command::new(&server)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", server.display()))?;
        let stdout = child.stdout.take().ok_or("the server has no stdout")?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            // Keep reading, so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut started = LocalServer {
            child,
            url: String::new(),
        };
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(line)) => line,
            _ => {
                return Err("the sync server did not start (no `listening on` line in 20 s)".into())
            }
        };
        let addr = line
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line from the server: {line:?}"))?;
        started.url = format!("http://{}", addr.trim());
        Ok(started)
    }

    /// Asks the server to stop (SIGTERM: it finishes its requests), then waits for it,
    /// killing it after 10 s.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        use std::time::{Duration, Instant};
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        #[cfg(unix)]
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signals a child this process started and has not reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}
