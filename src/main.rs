//! The `datasync` command: a demo of two devices syncing through directory tiers,
//! and tools to inspect, verify, sync and edit directory tiers.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "datasync",
    version,
    about = "Offline-first entity store with sync: demo and directory-tier tools"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Two devices, each with its own directory tier, sync through a shared cloud directory.
    Demo {
        /// Where to put the three directories (default: a fresh temporary directory,
        /// removed at the end). Must be new or empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Share the cloud through a sync server (datasync-server, next to this
        /// program) on loopback, with a directory backend, instead of a directory.
        #[arg(long)]
        server: bool,
    },
    /// Partitions, entity counts, tombstones, sizes, hashes and the root of a directory tier.
    Inspect {
        /// The directory tier to inspect (it is not changed).
        dir: PathBuf,
        /// One JSON document (root, partitions, problems) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Recompute every hash and count; exit 1 and list what is wrong if anything is.
    Verify {
        /// The directory tier to verify (it is not changed).
        dir: PathBuf,
    },
    /// Reconcile two directory tiers, or a directory tier and a sync server, with the
    /// library's sync (last writer wins).
    Sync {
        /// A directory tier.
        dir_a: PathBuf,
        /// A second directory, created if it does not exist (a fresh copy of DIR_A),
        /// or the URL of a sync server (http:// or https://, with --token).
        #[arg(value_name = "DIR_B|URL")]
        dir_b: String,
        /// The bearer token for the server at URL.
        #[arg(long, value_name = "T")]
        token: Option<String>,
    },
    /// Run the sync server: `datasync-server`, found next to this program, with these
    /// arguments (e.g. `--listen 127.0.0.1:8080 --dir DIR --tokens FILE`).
    #[command(disable_help_flag = true)]
    Serve {
        /// Passed to datasync-server as they are (`serve --help` shows its options).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Save an entity given as a JSON object; prints its id.
    Put {
        /// The directory tier (created if it does not exist).
        dir: PathBuf,
        /// The entity name, e.g. User.
        entity: String,
        /// The entity as a JSON object; with an "id" it updates that entity.
        json: String,
        #[command(flatten)]
        prefix: cli::ops::PrefixArg,
    },
    /// Print an entity as JSON; exit 1 when it does not exist.
    Get {
        /// The directory tier.
        dir: PathBuf,
        /// The entity name, e.g. User.
        entity: String,
        /// The entity's id, as `put` printed it.
        id: String,
        #[command(flatten)]
        prefix: cli::ops::PrefixArg,
    },
    /// Delete an entity (a tombstone is recorded even for an unknown id).
    Delete {
        /// The directory tier.
        dir: PathBuf,
        /// The entity name, e.g. User.
        entity: String,
        /// The entity's id.
        id: String,
        #[command(flatten)]
        prefix: cli::ops::PrefixArg,
    },
    /// Print the matching entities as a JSON array.
    Query {
        /// The directory tier.
        dir: PathBuf,
        /// The entity name, e.g. User.
        entity: String,
        /// Keep entities whose FIELD equals VALUE (VALUE is JSON, or else a string).
        #[arg(long = "where", value_name = "FIELD=VALUE")]
        where_: Vec<String>,
        /// Sort by FIELD, ascending (`:asc`, the default) or descending (`:desc`);
        /// repeat for more fields.
        #[arg(long, value_name = "FIELD[:asc|:desc]")]
        sort: Vec<String>,
        /// Print at most N entities.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Skip the first N matching entities.
        #[arg(long, value_name = "N")]
        offset: Option<usize>,
        #[command(flatten)]
        prefix: cli::ops::PrefixArg,
    },
    /// Measure the benchmark workloads (W1..W8); one JSON line per workload and N.
    Bench {
        /// Entity counts (repeatable; default 10000 and 100000).
        #[arg(long)]
        n: Vec<usize>,
        /// Workloads to run (repeatable; default all).
        #[arg(long = "workload", value_name = "W1..W8")]
        workloads: Vec<String>,
        /// Entities per partition: 0 = one partition (the global strategy, unbounded),
        /// K = about K per partition by a fixed hash of the email, `bounded` = the
        /// global strategy with the default partition bound; default both 0 and 1000.
        #[arg(long, value_parser = cli::bench::parse_partitioning)]
        partition_size: Option<usize>,
        /// Runs per measurement; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, hide = true)]
        child: bool,
        /// W8's fresh process: open this directory tier cold (with `--cold-id`).
        #[arg(long, hide = true, requires = "cold_id")]
        cold_open: Option<PathBuf>,
        #[arg(long, hide = true)]
        cold_id: Option<String>,
    },
    /// Test helper: writes and flushes in a loop, reporting each flushed write.
    #[command(hide = true)]
    CrashWriter {
        dir: PathBuf,
        #[arg(long)]
        run: u64,
        #[arg(long, default_value_t = 100_000)]
        max_ops: u64,
        /// Append pieces (format 2) to DIR/local, syncing with DIR/cloud and
        /// compacting both, instead of writing through an instance.
        #[arg(long)]
        pieces: bool,
    },
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        if message.contains("Broken pipe") {
            // The reader went away (`datasync inspect DIR | head`): stop quietly, as
            // a program killed by SIGPIPE would.
            std::process::exit(141);
        }
        eprintln!(
            "datasync: internal error: {}",
            message.lines().next().unwrap_or_default()
        );
    }));
    let args = Args::parse();
    let result = match args.command {
        Command::Demo { dir, server } => cli::demo::run(dir, server),
        Command::Serve { args } => cli::serve::run(&args),
        Command::Bench {
            n,
            workloads,
            partition_size,
            runs,
            child,
            cold_open,
            cold_id,
        } => cli::bench::run(cli::bench::BenchArgs {
            n,
            workloads,
            partition_size,
            runs,
            child,
            cold_open: cold_open.zip(cold_id),
        })
        .map(|_| 0),
        Command::Inspect { dir, json } => cli::inspect::inspect(&dir, json),
        Command::Verify { dir } => cli::inspect::verify(&dir),
        Command::Sync {
            dir_a,
            dir_b,
            token,
        } => match (cli::sync::is_url(&dir_b), token) {
            (true, Some(token)) => cli::sync::run_http(&dir_a, &dir_b, &token),
            (true, None) => Err("a sync server needs a token: add --token T".into()),
            (false, Some(_)) => {
                Err("--token is for a server URL (http:// or https://), not a directory".into())
            }
            (false, None) => cli::sync::run(&dir_a, std::path::Path::new(&dir_b)),
        },
        Command::Put {
            dir,
            entity,
            json,
            prefix,
        } => cli::ops::put(&dir, &entity, &json, prefix),
        Command::Get {
            dir,
            entity,
            id,
            prefix,
        } => cli::ops::get(&dir, &entity, &id, prefix),
        Command::Delete {
            dir,
            entity,
            id,
            prefix,
        } => cli::ops::delete(&dir, &entity, &id, prefix),
        Command::Query {
            dir,
            entity,
            where_,
            sort,
            limit,
            offset,
            prefix,
        } => cli::ops::query(
            &dir,
            &entity,
            &cli::ops::QueryArgs {
                wheres: where_,
                sorts: sort,
                limit,
                offset,
            },
            prefix,
        ),
        Command::CrashWriter {
            dir,
            run,
            max_ops,
            pieces: false,
        } => cli::crash::run(&dir, run, max_ops),
        Command::CrashWriter {
            dir,
            run,
            max_ops,
            pieces: true,
        } => cli::crash::run_pieces(&dir, run, max_ops),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let text = e.to_string();
            eprintln!(
                "datasync: error: {}",
                text.lines().collect::<Vec<_>>().join(" ")
            );
            ExitCode::from(2)
        }
    }
}
