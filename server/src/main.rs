//! `datasync-server --listen ADDR (--postgres URL | --dir DIR) --tokens FILE
//! [--max-body BYTES] [--tls-cert PEM --tls-key PEM]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Parser};
use datasync_server::{Backend, Config, DEFAULT_MAX_BODY};

/// The datasync sync server: the blob-tier protocol over HTTP/1.1.
#[derive(Parser)]
#[command(name = "datasync-server", version)]
#[command(group(ArgGroup::new("storage").required(true).args(["postgres", "dir"])))]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long)]
    listen: SocketAddr,
    /// PostgreSQL URL, e.g. postgres://user:pass@host:5432/db.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// The PostgreSQL schema holding the tables (created if absent).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "public",
        requires = "postgres"
    )]
    pg_schema: String,
    /// Connections in the PostgreSQL pool.
    #[arg(long, value_name = "N", default_value_t = 16, requires = "postgres")]
    pg_pool: usize,
    /// A directory to store in (one server process per directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The tokens file: one JSON object per line.
    #[arg(long, value_name = "FILE")]
    tokens: PathBuf,
    /// The largest request body accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BODY)]
    max_body: usize,
    /// Serve HTTPS with this certificate chain (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();

    let backend = match (args.postgres, args.dir) {
        (Some(url), None) => Backend::Postgres {
            url,
            schema: args.pg_schema,
            pool_size: args.pg_pool.max(1),
        },
        (None, Some(dir)) => Backend::Dir(dir),
        _ => unreachable!("clap requires exactly one of --postgres and --dir"),
    };
    let config = Config {
        listen: args.listen,
        backend,
        tokens: args.tokens,
        max_body: args.max_body,
        tls: args.tls_cert.zip(args.tls_key),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("datasync-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(datasync_server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot serve");
            eprintln!("datasync-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}
