//! `sync DIR_A DIR_B`: reconcile two directory tiers with the library's sync.

use std::collections::BTreeMap;
use std::path::Path;

use datasync::meta::is_reserved;
use datasync::meta::META_KEY;
use datasync::{sync_tiers, AdapterResult, DirPersistence, LastWriterWins, Meta, Persistence};
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
    let meta = dir
        .read(META_KEY)
        .ok()
        .flatten()
        .and_then(|b| Meta::parse(&b).ok())
        .unwrap_or_default();
    meta.entries.into_iter().map(|(k, e)| (k, e.hash)).collect()
}

fn received(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    after
        .iter()
        .filter(|(k, h)| before.get(*k) != Some(*h))
        .map(|(k, _)| k.clone())
        .collect()
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
    let differing = before_a
        .keys()
        .chain(before_b.keys())
        .filter(|k| before_a.get(*k) != before_b.get(*k))
        .count();
    let bar = if differing >= PROGRESS_FROM {
        let bar = ProgressBar::new(differing as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} syncing {pos}/{len} partitions [{bar:30}] {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let side_a = Progress {
        inner: a.clone(),
        bar: bar.clone(),
    };
    let stats = sync_tiers(Box::new(side_a), Box::new(b.clone()), &LastWriterWins);
    bar.finish_and_clear();
    let stats = stats?;
    let (after_a, after_b) = (hashes(&a), hashes(&b));
    let (to_a, to_b) = (received(&before_a, &after_a), received(&before_b, &after_b));
    for (keys, arrow) in [(&to_b, "->"), (&to_a, "<-")] {
        for key in keys.iter().take(MAX_LISTED) {
            println!("  {} {arrow} {}  {key}", path_a.display(), path_b.display());
        }
        if keys.len() > MAX_LISTED {
            println!(
                "  {} {arrow} {}  ... and {} more",
                path_a.display(),
                path_b.display(),
                keys.len() - MAX_LISTED
            );
        }
    }
    println!(
        "{} partition(s) compared, {} copied, {} merged; {} conflict(s) resolved (last writer wins, delete wins ties); {} entity change(s), {} bytes written",
        stats.keys_compared, stats.keys_copied, stats.keys_merged, stats.conflicts, stats.entities_changed, stats.bytes_written
    );
    for e in &stats.errors {
        println!("  error: {e}");
    }
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
