//! A full disk: with less free space than a partition's size, a small edit still
//! commits as a piece, while a format-1 write of the partition fails; a compaction
//! that cannot write its fold fails cleanly and the partition stays whole. Runs on a
//! small tmpfs mounted for the test (needs the right to mount; prints SKIP otherwise).

#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::Command;

use datasync::clock::format_millis;
use datasync::pieces::{Compaction, PieceTier};
use datasync::{DirPersistence, LastWriterWins, Partition, Persistence};

const KEY: &str = "app.User";
const BASE: i64 = 1_767_225_600_000;

/// A tmpfs of `size`, unmounted on drop.
struct Mounted(std::path::PathBuf);

impl Mounted {
    fn new(at: &Path, size: &str) -> Option<Mounted> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .ok()?
            .success();
        ok.then(|| Mounted(at.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn users(range: std::ops::Range<usize>, tag: &str, at: i64) -> Partition {
    let stamp = format_millis(BASE + at);
    let body: Vec<String> = range
        .map(|i| {
            format!(
                r#""User.{i:016}":{{"id":"User.{i:016}","name":"{tag}","pad":"{}","updatedAt":"{stamp}","version":1}}"#,
                "x".repeat(200)
            )
        })
        .collect();
    Partition::parse(
        format!("{{\"User\":{{{}}}}}", body.join(",")).as_bytes(),
        false,
    )
    .unwrap()
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_small_edit_commits_when_the_partition_is_bigger_than_the_free_space() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mount) = Mounted::new(&tmp.path().join("small"), "3m") else {
        eprintln!("SKIP: cannot mount a small tmpfs here (the disk-full test needs it)");
        return;
    };
    let dir = mount.0.join("tier");
    let mut tier = DirPersistence::open(&dir).unwrap();
    // About 1.9 MB of users in one partition, on a 3 MB filesystem.
    let all = users(0..7_000, "seed", 1);
    let size = all.to_canonical().len() as u64;
    PieceTier::new(&mut tier, false, "local")
        .append(KEY, "w", BASE + 1, all)
        .unwrap();
    let free = free_bytes(&dir);
    assert!(free < size, "{free} bytes free, the partition is {size}");

    // Format 1 would rewrite the partition for an edit: that no longer fits.
    let whole = PieceTier::new(&mut tier, false, "local")
        .read(KEY, &LastWriterWins)
        .unwrap()
        .unwrap();
    assert!(tier
        .store("app.User.format1", &whole.partition.to_canonical())
        .is_err());

    // A piece of the edit does.
    for k in 0..5 {
        let edit = users(k..k + 1, &format!("edit{k}"), 10 + k as i64);
        PieceTier::new(&mut tier, false, "local")
            .append(KEY, "w", BASE + 10 + k as i64, edit)
            .and_then(|_| {
                tier.commit()
                    .map_err(|e| datasync::Error::Internal(e.to_string()))
            })
            .unwrap_or_else(|e| panic!("edit {k} did not commit on a full disk: {e}"));
    }
    // A fold on a full disk: it commits if the journal's last block has room for
    // it, or fails; either way nothing is lost (checked below, after reopening).
    let policy = Compaction {
        bound: 2,
        ..Compaction::default()
    };
    // Fill what is left.
    let _ = std::fs::write(mount.0.join("filler"), vec![0u8; free_bytes(&dir) as usize]);
    let folded = PieceTier::new(&mut tier, false, "local")
        .compact(KEY, &LastWriterWins, policy, BASE + 20, None)
        .map(|_| ())
        .and_then(|()| {
            tier.commit()
                .map_err(|e| datasync::Error::Internal(e.to_string()))
        });
    eprintln!("the fold on a full disk: {folded:?}");
    drop(tier);
    // Space comes back; the tier opens (finishing the recovery the refused format-1
    // write began) and holds everything.
    std::fs::remove_file(mount.0.join("filler")).unwrap();
    let mut tier = DirPersistence::open(&dir).unwrap();
    let p = PieceTier::new(&mut tier, false, "local")
        .read(KEY, &LastWriterWins)
        .unwrap()
        .unwrap()
        .partition;
    assert_eq!(p.names["User"].len(), 7_000);
    for k in 0..5 {
        let name = p
            .get("User", &format!("User.{k:016}"))
            .unwrap()
            .entity()
            .unwrap()
            .value()["name"]
            .clone();
        assert_eq!(name, format!("edit{k}"));
    }
}
