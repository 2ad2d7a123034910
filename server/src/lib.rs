//! The datasync sync server: the blob-tier protocol (v1) over HTTP/1.1, storing in
//! PostgreSQL or in a directory, with bearer tokens that decide which partitions a
//! device may read and write.
//!
//! The binary is `datasync-server`; [`run`] is all of it, for embedding in tests.

pub mod http;
pub mod keys;
pub mod metrics;
pub mod storage;
pub mod tokens;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::storage::{dir::DirStorage, pg::PgStorage, Storage};

/// The default `--max-body`: 32 MiB.
pub const DEFAULT_MAX_BODY: usize = 32 * 1024 * 1024;

/// How long a graceful shutdown waits for in-flight requests before it cuts them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Where the blobs live.
#[derive(Debug, Clone)]
pub enum Backend {
    Postgres {
        url: String,
        schema: String,
        pool_size: usize,
    },
    Dir(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub backend: Backend,
    pub tokens: PathBuf,
    pub max_body: usize,
    /// A certificate chain and its private key (PEM): serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

async fn open_storage(backend: &Backend) -> anyhow::Result<Box<dyn Storage>> {
    Ok(match backend {
        Backend::Postgres {
            url,
            schema,
            pool_size,
        } => Box::new(
            PgStorage::connect(url, schema, *pool_size)
                .await
                .map_err(|e| anyhow!("{e}"))?,
        ),
        Backend::Dir(dir) => Box::new(DirStorage::open(dir).map_err(|e| anyhow!("{e}"))?),
    })
}

/// The shutdown signals, registered when this is called (so a signal arriving any time
/// after it counts); the future resolves when SIGTERM or SIGINT arrives.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Runs the server until SIGTERM or SIGINT, then stops accepting, lets the requests
/// in flight finish (up to [`SHUTDOWN_GRACE`]) and returns.
///
/// Prints `listening on ADDR` on stdout once the socket is bound.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let tokens = tokens::Tokens::load(&config.tokens).map_err(|e| anyhow!("{e}"))?;
    if tokens.is_empty() {
        tracing::warn!("the tokens file has no tokens: every request will get 401");
    }
    let storage = open_storage(&config.backend).await?;
    let app = Arc::new(http::App {
        storage,
        tokens,
        metrics: metrics::Metrics::default(),
        max_body: config.max_body,
    });
    let router = http::router(app);

    let listener = TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;

    let handle = axum_server::Handle::new();
    let on_signal = handle.clone();
    let signalled = shutdown_signal().context("cannot install the signal handlers")?;
    tokio::spawn(async move {
        signalled.await;
        tracing::info!("shutting down: finishing the requests in flight");
        on_signal.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });

    let backend = match &config.backend {
        Backend::Postgres { schema, .. } => format!("postgresql (schema {schema})"),
        Backend::Dir(dir) => format!("directory {}", dir.display()),
    };
    let service = router.into_make_service();
    match &config.tls {
        Some((cert, key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .context("cannot load the TLS certificate or key")?;
            announce(addr, "https", &backend);
            axum_server::from_tcp_rustls(listener, tls)
                .handle(handle)
                .serve(service)
                .await?;
        }
        None => {
            announce(addr, "http", &backend);
            axum_server::from_tcp(listener)
                .handle(handle)
                .serve(service)
                .await?;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

fn announce(addr: SocketAddr, scheme: &str, backend: &str) {
    tracing::info!(%addr, scheme, backend, "listening");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}
