//! `sync DIR_A DIR_B`: reconcile two directory tiers with the library's sync;
//! `sync DIR URL --token T`: reconcile a directory tier with a sync server.

use std::collections::BTreeMap;
use std::path::Path;

use datasync::meta::is_reserved;
use datasync::{
    sync_tiers, AdapterResult, DirPersistence, HttpPersistence, LastWriterWins, Meta, Persistence,
    SyncStats,
};
use indicatif::{ProgressBar, ProgressStyle};

use super::{existing_tier, CliResult};

/// Below this many differing partitions the sync is quick and shows no progress bar.
const PROGRESS_FROM: usize = 50;
/// Partitions listed per direction; the rest are counted.
const MAX_LISTED: usize = 20;

/// Counts partition loads on one side: the sync loads each differing key once per side.
struct Progress {
    inner: DirPersistence,
    bar: ProgressBar,
}

impl Persistence for Progress {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        let found = self.inner.load(key);
        if !is_reserved(key) {
            self.bar.inc(1);
        }
        found
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
    fn commit(&mut self) -> AdapterResult<()> {
        self.inner.commit()
    }
}

/// Partition hashes as the tier's metadata records them (empty if it has none).
fn hashes(dir: &DirPersistence) -> BTreeMap<String, String> {
    hashes_of(|k| dir.read(k).ok().flatten())
}

/// Partition hashes as the metadata read through `get` records them, in either
/// format (empty if it has none).
fn hashes_of(get: impl FnMut(&str) -> Option<Vec<u8>>) -> BTreeMap<String, String> {
    let meta = Meta::read_stored(get).ok().flatten().unwrap_or_default();
    meta.entries.into_iter().map(|(k, e)| (k, e.hash)).collect()
}

/// The server tier's partition hashes; a failed read is an error, not an empty tier.
fn server_hashes(server: &mut HttpPersistence) -> CliResult<BTreeMap<String, String>> {
    let mut failed = None;
    let hashes = hashes_of(|k| match server.load(k) {
        Ok(found) => found,
        Err(e) => {
            failed.get_or_insert(e.to_string());
            None
        }
    });
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(hashes),
    }
}

/// Whether `target` names a sync server rather than a directory.
pub fn is_url(target: &str) -> bool {
    target.starts_with("http://") || target.starts_with("https://")
}

fn received(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    after
        .iter()
        .filter(|(k, h)| before.get(*k) != Some(*h))
        .map(|(k, _)| k.clone())
        .collect()
}

/// A progress bar over `differing` partitions, hidden when they are few.
fn progress_bar(differing: usize) -> ProgressBar {
    if differing < PROGRESS_FROM {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(differing as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} syncing {pos}/{len} partitions [{bar:30}] {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

fn differing(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> usize {
    a.keys()
        .chain(b.keys().filter(|k| !a.contains_key(*k)))
        .filter(|k| a.get(*k) != b.get(*k))
        .count()
}

/// Lists what went each way, at most [`MAX_LISTED`] keys per direction.
fn list_moves(a: &str, b: &str, to_b: &[String], to_a: &[String]) {
    for (keys, arrow) in [(to_b, "->"), (to_a, "<-")] {
        for key in keys.iter().take(MAX_LISTED) {
            println!("  {a} {arrow} {b}  {key}");
        }
        if keys.len() > MAX_LISTED {
            println!(
                "  {a} {arrow} {b}  ... and {} more",
                keys.len() - MAX_LISTED
            );
        }
    }
}

fn print_stats(stats: &SyncStats) {
    println!(
        "{} partition(s) compared, {} copied, {} merged; {} conflict(s) resolved (last writer wins, delete wins ties); {} entity change(s), {} bytes written",
        stats.keys_compared, stats.keys_copied, stats.keys_merged, stats.conflicts, stats.entities_changed, stats.bytes_written
    );
    if stats.keys_refused > 0 {
        println!(
            "{} partition(s) refused by the server (outside the token) and left out",
            stats.keys_refused
        );
    }
    for e in &stats.errors {
        println!("  error: {e}");
    }
}

/// `sync DIR URL --token T`: the directory tier and the server's tier, synced as two
/// directories are. Partitions the token may not read or write are left out and
/// reported; they do not count against convergence.
pub fn run_http(path: &Path, url: &str, token: &str) -> CliResult<u8> {
    existing_tier(path)?;
    let dir = DirPersistence::open(path)?;
    let mut server = HttpPersistence::new(url, token)?;
    let before_dir = hashes(&dir);
    let before_server = server_hashes(&mut server)?;
    let bar = progress_bar(differing(&before_dir, &before_server));
    let side = Progress {
        inner: dir.clone(),
        bar: bar.clone(),
    };
    let stats = sync_tiers(
        Box::new(side),
        Box::new(server),
        std::sync::Arc::new(LastWriterWins),
    );
    bar.finish_and_clear();
    let stats = stats?;
    let mut server = HttpPersistence::new(url, token)?;
    let after_dir = hashes(&dir);
    let after_server = server_hashes(&mut server)?;
    let (to_dir, to_server) = (
        received(&before_dir, &after_dir),
        received(&before_server, &after_server),
    );
    list_moves(&path.display().to_string(), url, &to_server, &to_dir);
    print_stats(&stats);
    let left = differing(&after_dir, &after_server) as u64;
    if left <= stats.keys_refused && stats.errors.len() as u64 == stats.keys_refused {
        if stats.keys_refused == 0 {
            println!("in sync: both hold {} partition(s)", after_dir.len());
        } else {
            println!(
                "in sync but for the {} refused partition(s): {} partition(s) here",
                stats.keys_refused,
                after_dir.len()
            );
        }
        Ok(0)
    } else {
        println!("not in sync: {left} partition(s) still differ (run again)");
        Ok(1)
    }
}

pub fn run(path_a: &Path, path_b: &Path) -> CliResult<u8> {
    existing_tier(path_a)?;
    if path_a.canonicalize()?
        == path_b
            .canonicalize()
            .unwrap_or_else(|_| path_b.to_path_buf())
    {
        return Err("DIR_A and DIR_B are the same directory".into());
    }
    let a = DirPersistence::open(path_a)?;
    let b = DirPersistence::open(path_b)?;
    let (before_a, before_b) = (hashes(&a), hashes(&b));
    let bar = progress_bar(differing(&before_a, &before_b));
    let side_a = Progress {
        inner: a.clone(),
        bar: bar.clone(),
    };
    let stats = sync_tiers(
        Box::new(side_a),
        Box::new(b.clone()),
        std::sync::Arc::new(LastWriterWins),
    );
    bar.finish_and_clear();
    let stats = stats?;
    let (after_a, after_b) = (hashes(&a), hashes(&b));
    let (to_a, to_b) = (received(&before_a, &after_a), received(&before_b, &after_b));
    let (name_a, name_b) = (path_a.display().to_string(), path_b.display().to_string());
    list_moves(&name_a, &name_b, &to_b, &to_a);
    print_stats(&stats);
    let converged = after_a == after_b;
    if converged {
        println!("in sync: both hold {} partition(s)", after_a.len());
    } else {
        println!(
            "not in sync: {} partition(s) still differ (run again)",
            after_a
                .keys()
                .chain(after_b.keys())
                .filter(|k| after_a.get(*k) != after_b.get(*k))
                .count()
        );
    }
    Ok(if converged && stats.errors.is_empty() {
        0
    } else {
        1
    })
}
