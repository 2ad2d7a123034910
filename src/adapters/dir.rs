//! The embedded default: a crash-safe directory tier.
//!
//! Layout of a directory:
//!
//! ```text
//! DIR/datasync.lock      held (flock) while a DirPersistence is open on DIR
//! DIR/journal            the writes committed since the files were last synced
//! DIR/blobs/<name>.blob  one file per key, name escaped from the key
//! DIR/corrupt/           files that failed their checksum, moved aside
//! ```
//!
//! Every blob file is `magic, key, payload, BLAKE3 checksum`, so a torn or damaged
//! file is detected on load and names its own key.
//!
//! Writes are batched until the library's next [`Persistence::commit`] (it calls it
//! once the metadata describing what it wrote is stored): until then they live in
//! memory, where loads, listings and conditional writes see them. A commit appends
//! the batch to `DIR/journal` in one write and makes it durable with one fdatasync.
//! The files are written at a checkpoint (a temporary file, synced, renamed over the
//! old one), once the journal passes [`JOURNAL_LIMIT`], when the last handle closes,
//! and on open, which first replays the journal's committed records; until then
//! reads take the committed bytes from memory. So no file is ever ahead of the
//! journal, a crash leaves every committed batch in the journal and none of an
//! uncommitted one, and a document rewritten by every commit reaches its file once
//! per checkpoint. A value over 64 KB goes straight to its file instead, synced.
//!
//! Clones of one directory share the batch. A commit made while another clone has
//! partition writes of its own pending is recorded as incomplete (that clone's
//! metadata comes later); when the last commit of a journal is incomplete, opening
//! rebuilds the metadata from the partition files (format 2: it removes it, and the
//! instance rebuilds it from the indexes). A `recovering` marker left by an older
//! version is honoured the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{ErrorKind as IoKind, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::journal;

use crate::clock::now_millis;
use crate::error::{Error, Result};
use crate::lock::{Level, Mutex};
use crate::meta::{is_reserved, META_KEY, ROOT_KEY};
use crate::persistence::{AdapterError, AdapterResult, Persistence};
use crate::tier::audit::audit;

const MAGIC: &[u8; 5] = b"DSB1\n";

/// Whether a write of `key` changes what the metadata describes (a format-1
/// partition, or a format-2 index): a commit while another handle has such writes
/// pending is incomplete.
fn describes_partition(key: &str) -> bool {
    !is_reserved(key) || key.starts_with("!index:")
}
/// Whether `key` holds a partition's data (format 1's partition, format 2's index
/// or piece): a damaged file of it is an error, not metadata to rebuild.
fn holds_partition_data(key: &str) -> bool {
    describes_partition(key) || key.starts_with("!piece:")
}

const CHECKSUM_LEN: usize = 32;
const HEADER_MIN: usize = MAGIC.len() + 4 + 8;
const LOCK_FILE: &str = "datasync.lock";
const MARKER_FILE: &str = "recovering";
const JOURNAL_FILE: &str = "journal";
/// A commit that leaves the journal longer than this syncs the files and empties it.
pub const JOURNAL_LIMIT: u64 = 1 << 20;
/// A value larger than this is written to its own file at once (synced) instead of
/// into the journal: a large write does not go to disk twice, and one that does not
/// fit fails at once instead of holding up every later commit.
const DIRECT_WRITE: usize = 64 << 10;
const BLOBS_DIR: &str = "blobs";
const CORRUPT_DIR: &str = "corrupt";
const BLOB_EXT: &str = ".blob";
const TMP_EXT: &str = ".tmp";
/// Escaped names longer than this are shortened and completed by a hash of the key.
const MAX_NAME: usize = 180;

/// How a directory tier writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirOptions {
    /// Fsync every written file and the directory (the default). Off, a write is
    /// still atomic against a crash of the process, but not against power loss.
    pub durable: bool,
}

impl Default for DirOptions {
    fn default() -> Self {
        DirOptions { durable: true }
    }
}

struct Shared {
    dir: PathBuf,
    blobs: PathBuf,
    options: DirOptions,
    /// Keeps the lock for as long as any handle lives.
    _lock: File,
    /// The batch and the journal. Held around each write, so that a conditional
    /// write's compare and write are one step against the other handles of this
    /// process (the directory lock keeps other processes out).
    writes: Mutex<Writes>,
    next_handle: AtomicU64,
    next_tmp: AtomicU64,
}

/// What is written but not yet in the files.
#[derive(Default)]
struct Writes {
    /// Handles with partition writes not yet followed by their own commit (kept
    /// under the same lock as the batch, so that a commit sees a handle's mark
    /// whenever it sees that handle's writes).
    dirty: BTreeSet<u64>,
    /// Journal records of the writes since the last commit.
    batch: Vec<u8>,
    /// Their bytes (`None`: cleared), and those of the commits since the journal
    /// was last emptied: read before the files, written into them (and synced) at
    /// the next checkpoint, so that a document rewritten by every commit reaches its
    /// file once per checkpoint.
    overlay: BTreeMap<String, Option<Vec<u8>>>,
    /// The journal, once opened for appending, and its length.
    journal: Option<File>,
    journal_len: u64,
    /// A large piece was written straight to its file since the last commit: the
    /// directory is synced before the commit record names it.
    dir_unsynced: bool,
    /// The last commit was incomplete: the journal is not emptied (the next open
    /// must still rebuild the metadata) until a complete one.
    incomplete: bool,
}

/// A [`Persistence`] over a directory: one checksummed file per key, atomic and
/// (by default) durable replacement, and a lock so that only one process uses the
/// directory at a time.
///
/// Clones share the directory and its lock: that is how several instances of one
/// process use the same directory (two devices sharing a cloud in a demo or test).
pub struct DirPersistence {
    shared: Arc<Shared>,
    handle: u64,
}

impl std::fmt::Debug for DirPersistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirPersistence")
            .field("dir", &self.shared.dir)
            .field("options", &self.shared.options)
            .finish()
    }
}

impl Clone for DirPersistence {
    fn clone(&self) -> Self {
        DirPersistence {
            shared: self.shared.clone(),
            handle: self.shared.next_handle.fetch_add(1, Ordering::Relaxed),
        }
    }
}

fn open_err(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::InvalidConfig(format!("cannot {what} {}: {e}", path.display()))
}

impl DirPersistence {
    /// Opens (creating it if needed) a durable directory tier.
    pub fn open(path: impl AsRef<Path>) -> Result<DirPersistence> {
        DirPersistence::open_with(path, DirOptions::default())
    }

    /// Opens (creating it if needed) a directory tier with these options. Fails if
    /// another handle, in this process or another, holds the directory. Recovers from
    /// an interrupted writer: leftover temporary files are removed, the journal's
    /// commits are written into the files, and, if its last commit was incomplete,
    /// the metadata is rebuilt.
    pub fn open_with(path: impl AsRef<Path>, options: DirOptions) -> Result<DirPersistence> {
        let dir = path.as_ref().to_path_buf();
        if dir.exists() && !dir.is_dir() {
            return Err(Error::InvalidConfig(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        fs::create_dir_all(&dir).map_err(|e| open_err("create directory", &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| open_err("create lock file", &lock_path, e))?;
        match lock_briefly(&lock) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::InvalidConfig(format!(
                    "directory {} is in use: another instance holds its lock ({})",
                    dir.display(),
                    lock_path.display()
                )))
            }
            Err(TryLockError::Error(e)) => return Err(open_err("lock", &lock_path, e)),
        }
        let blobs = dir.join(BLOBS_DIR);
        fs::create_dir_all(&blobs).map_err(|e| open_err("create directory", &blobs, e))?;
        let shared = Arc::new(Shared {
            dir,
            blobs,
            options,
            _lock: lock,
            writes: Mutex::ordered(Level::AdapterInner, Writes::default()),
            next_handle: AtomicU64::new(1),
            next_tmp: AtomicU64::new(0),
        });
        let mut this = DirPersistence { shared, handle: 0 };
        this.remove_temporaries()
            .map_err(|e| open_err("clean", &this.shared.blobs, e))?;
        let complete = this.replay_journal()?;
        if !complete || this.shared.dir.join(MARKER_FILE).exists() {
            this.recover()?;
            // The metadata describes the partitions again: the journal may forget.
            let mut writes = this.shared.writes.lock();
            writes.incomplete = false;
            this.shared
                .checkpoint(&mut writes)
                .map_err(|e| open_err("recover", &this.shared.dir, e))?;
        }
        Ok(this)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.shared.dir
    }

    /// The file that holds `key`.
    pub fn file_of(&self, key: &str) -> PathBuf {
        self.shared.file_of(key)
    }

    /// Reads `key` and checks its file, without moving a damaged file aside
    /// (inspection). A damaged file is an [`Error::Corrupt`] naming key and file.
    pub fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        if let Some(pending) = self.shared.writes.lock().overlay.get(key) {
            return Ok(pending.clone());
        }
        let path = self.file_of(key);
        match read_blob(&path, Some(key)) {
            Ok(found) => Ok(found.map(|(_, payload)| payload)),
            Err(Damage::Io(e)) => Err(Error::adapter(
                "dir",
                key,
                format!("cannot read {}: {e}", path.display()),
            )),
            Err(Damage::Corrupt(why)) => Err(Error::corrupt(
                "dir",
                key,
                format!("file {} is damaged: {why}", path.display()),
            )),
        }
    }

    fn remove_temporaries(&self) -> std::io::Result<()> {
        for entry in fs::read_dir(&self.shared.blobs)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(TMP_EXT) {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Writes the committed batches a journal holds into the files, syncs them and
    /// empties the journal. Returns whether its last commit was complete (a journal
    /// that is not one is moved aside, and the metadata rebuilt).
    fn replay_journal(&mut self) -> Result<bool> {
        let path = self.shared.dir.join(JOURNAL_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == IoKind::NotFound => return Ok(true),
            Err(e) => return Err(open_err("read", &path, e)),
        };
        let err = |e: AdapterError| open_err("replay", &path, e);
        let Some(records) = bytes.strip_prefix(journal::MAGIC.as_slice()) else {
            let moved = self
                .quarantine(&path)
                .map_err(|e| open_err("move aside", &path, e))?;
            log::error!(target: "datasync::dir", "{} is not a journal; moved aside to {}, and the metadata is rebuilt", path.display(), moved.display());
            return Ok(false);
        };
        let replay = journal::replay(records);
        if replay.dropped > 0 {
            log::info!(target: "datasync::dir", "{}: {} bytes of an uncommitted batch left out", path.display(), replay.dropped);
        }
        let mut writes = self.shared.writes.lock();
        writes.overlay = replay.writes;
        writes.incomplete = !replay.complete;
        self.shared.checkpoint(&mut writes).map_err(err)?;
        Ok(replay.complete)
    }

    /// Rebuilds the metadata from the partition files after an interrupted write.
    /// In format 2 (pieces) the metadata is removed instead: the instance rebuilds it
    /// from the partitions' indexes when it opens the tier.
    fn recover(&mut self) -> Result<()> {
        let dir = self.shared.dir.clone();
        let err = |e: AdapterError| {
            Error::adapter(
                "dir",
                META_KEY,
                format!("while recovering {}: {e}", dir.display()),
            )
        };
        let shared = self.shared.clone();
        if self.file_of(crate::pieces::FORMAT_KEY).exists() {
            log::warn!(target: "datasync::dir", "{}: the last writer stopped before its metadata was written; it is rebuilt from the indexes", dir.display());
            for key in [META_KEY, ROOT_KEY] {
                shared.apply(key, None).map_err(err)?;
            }
            shared.sync_dir(&shared.blobs).map_err(err)?;
            return self.remove_marker().map_err(err);
        }
        let keys = self.file_keys().map_err(err)?;
        let found = audit(&dir.display().to_string(), Some(keys), None, None, |key| {
            self.load(key).map_err(|e| Error::adapter("dir", key, e))
        });
        for problem in &found.problems {
            log::error!(target: "datasync::dir", "{problem}; left out of the rebuilt metadata");
        }
        let meta = found.rebuilt;
        log::warn!(
            target: "datasync::dir",
            "{}: the last writer stopped before its metadata was written; rebuilt it from {} partition(s)",
            dir.display(),
            meta.entries.len()
        );
        shared
            .write_file(META_KEY, &meta.to_bytes(), true)
            .map_err(err)?;
        shared
            .write_file(ROOT_KEY, meta.root().as_bytes(), true)
            .map_err(err)?;
        shared.sync_dir(&shared.blobs).map_err(err)?;
        self.remove_marker().map_err(err)
    }

    /// Removes the `recovering` marker an older version of this tier left.
    fn remove_marker(&self) -> AdapterResult<()> {
        let path = self.shared.dir.join(MARKER_FILE);
        match fs::remove_file(&path) {
            Ok(()) => self.shared.sync_dir(&self.shared.dir),
            Err(e) if e.kind() == IoKind::NotFound => Ok(()),
            Err(e) => Err(AdapterError::new(format!(
                "cannot remove {}: {e}",
                path.display()
            ))),
        }
    }

    /// Adds a write to the batch; a partition write marks the handle dirty until
    /// its own commit (a commit of another handle meanwhile is incomplete).
    fn put(&self, writes: &mut Writes, key: &str, bytes: Option<&[u8]>) {
        if describes_partition(key) {
            writes.dirty.insert(self.handle);
        }
        match bytes {
            Some(bytes) => journal::store(&mut writes.batch, key, bytes),
            None => journal::clear(&mut writes.batch, key),
        }
        writes
            .overlay
            .insert(key.to_string(), bytes.map(<[u8]>::to_vec));
    }

    /// Moves a damaged file to `corrupt/`, returning where it went.
    fn quarantine(&self, path: &Path) -> std::io::Result<PathBuf> {
        let dir = self.shared.dir.join(CORRUPT_DIR);
        fs::create_dir_all(&dir)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut dest = dir.join(format!("{name}.{}", now_millis()));
        let mut i = 1;
        while dest.exists() {
            dest = dir.join(format!("{name}.{}-{i}", now_millis()));
            i += 1;
        }
        fs::rename(path, &dest)?;
        let _ = self.shared.sync_dir(&self.shared.blobs);
        let _ = self.shared.sync_dir(&dir);
        Ok(dest)
    }

    /// The keys of the files in `blobs/`.
    fn file_keys(&self) -> AdapterResult<Vec<String>> {
        let blobs = &self.shared.blobs;
        let entries = fs::read_dir(blobs)
            .map_err(|e| AdapterError::new(format!("cannot list {}: {e}", blobs.display())))?;
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|e| AdapterError::new(format!("cannot list {}: {e}", blobs.display())))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(stem) = name.strip_suffix(BLOB_EXT) else {
                continue;
            };
            if stem.contains('~') {
                // A shortened name: the key is in the file.
                match read_blob(&entry.path(), None) {
                    Ok(Some((key, _))) => keys.push(key),
                    Ok(None) => {}
                    Err(Damage::Io(e)) => {
                        return Err(AdapterError::new(format!(
                            "cannot read {}: {e}",
                            entry.path().display()
                        )))
                    }
                    Err(Damage::Corrupt(why)) => {
                        log::error!(target: "datasync::dir", "file {} is damaged ({why}); its key is unknown", entry.path().display())
                    }
                }
            } else if let Some(key) = decode_name(stem).filter(|key| file_name(key) == name) {
                // (A name this adapter would not have made, e.g. copied in by hand, is
                // not a key: its file could never be loaded.)
                keys.push(key);
            }
        }
        keys.sort();
        Ok(keys)
    }
}

impl Shared {
    fn file_of(&self, key: &str) -> PathBuf {
        self.blobs.join(file_name(key))
    }

    /// Makes a rename or removal in `dir` durable (a no-op where directories cannot
    /// be opened, as on Windows, whose renames are durable without it).
    fn sync_dir(&self, dir: &Path) -> AdapterResult<()> {
        if self.options.durable && cfg!(unix) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| {
                AdapterError::new(format!("cannot sync directory {}: {e}", dir.display()))
            })?;
        }
        Ok(())
    }

    /// Atomically replaces the file of `key`: a temporary file (fsynced with
    /// `sync`), renamed over it.
    fn write_file(&self, key: &str, payload: &[u8], sync: bool) -> AdapterResult<()> {
        let path = self.file_of(key);
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .blobs
            .join(format!(".{}-{n}{TMP_EXT}", std::process::id()));
        let io = |what: &str, p: &Path, e: std::io::Error| {
            AdapterError::new(format!("cannot {what} {}: {e}", p.display()))
        };
        let result = (|| {
            let mut file = File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
            file.write_all(&encode_blob(key, payload))
                .map_err(|e| io("write", &tmp, e))?;
            if sync && self.options.durable {
                file.sync_all().map_err(|e| io("sync", &tmp, e))?;
            }
            drop(file);
            fs::rename(&tmp, &path).map_err(|e| io("replace", &path, e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Writes (or, with `None`, removes) the file of `key`, not synced.
    fn apply(&self, key: &str, value: Option<&[u8]>) -> AdapterResult<()> {
        match value {
            Some(bytes) => self.write_file(key, bytes, false),
            None => match fs::remove_file(self.file_of(key)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == IoKind::NotFound => Ok(()),
                Err(e) => Err(AdapterError::new(format!(
                    "cannot remove {}: {e}",
                    self.file_of(key).display()
                ))),
            },
        }
    }

    /// Appends the batch and a commit record to the journal and makes it durable;
    /// the files follow at the next checkpoint. A failed append leaves the journal
    /// as it was and the batch pending.
    fn commit(&self, writes: &mut Writes, complete: bool) -> AdapterResult<()> {
        let settled = !(complete && writes.incomplete);
        if writes.batch.is_empty() && settled {
            if writes.dir_unsynced {
                self.sync_dir(&self.blobs)?;
                writes.dir_unsynced = false;
            }
            return Ok(());
        }
        self.append(writes, complete)?;
        if writes.journal_len > JOURNAL_LIMIT {
            self.checkpoint(writes)?;
        }
        Ok(())
    }

    /// Appends the batch and a commit record (`complete` or not) to the journal and
    /// makes them durable, after the directory entries of files written straight.
    fn append(&self, writes: &mut Writes, complete: bool) -> AdapterResult<()> {
        let path = self.dir.join(JOURNAL_FILE);
        let io = |what: &str, e: std::io::Error| {
            AdapterError::new(format!("cannot {what} {}: {e}", path.display()))
        };
        if writes.journal.is_none() {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| io("open", e))?;
            let len = file
                .seek(std::io::SeekFrom::End(0))
                .map_err(|e| io("read", e))?;
            if len < journal::MAGIC.len() as u64 {
                file.set_len(0).map_err(|e| io("write", e))?;
                file.write_all(journal::MAGIC).map_err(|e| io("write", e))?;
                if self.options.durable {
                    file.sync_all().map_err(|e| io("sync", e))?;
                }
                self.sync_dir(&self.dir)?;
            }
            writes.journal_len = file.stream_position().map_err(|e| io("read", e))?;
            writes.journal = Some(file);
        }
        if writes.dir_unsynced {
            self.sync_dir(&self.blobs)?;
            writes.dir_unsynced = false;
        }
        // An open journal whose file is gone (the directory removed) would take
        // appends that reach no file.
        fs::metadata(&path).map_err(|e| io("append to", e))?;
        let before = writes.batch.len();
        journal::commit(&mut writes.batch, complete);
        let at = writes.journal_len;
        let file = writes.journal.as_mut().expect("opened above");
        let appended = file.write_all(&writes.batch).and_then(|()| {
            if self.options.durable {
                file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = appended {
            // Cut what was appended, so that a later commit's records follow the
            // last whole one.
            let _ = file.set_len(at);
            let _ = file.seek(std::io::SeekFrom::Start(at));
            writes.batch.truncate(before);
            return Err(io("append to", e));
        }
        writes.journal_len += writes.batch.len() as u64;
        writes.batch.clear();
        writes.incomplete = !complete;
        Ok(())
    }

    /// Syncs the files written since the journal was last emptied, then empties it
    /// (unless its last commit is incomplete).
    fn checkpoint(&self, writes: &mut Writes) -> AdapterResult<()> {
        debug_assert!(writes.batch.is_empty(), "a checkpoint follows a commit");
        let written = !writes.overlay.is_empty();
        while let Some((key, value)) = writes.overlay.pop_first() {
            let done = match &value {
                Some(bytes) => self.write_file(&key, bytes, true),
                None => self.apply(&key, None),
            };
            if let Err(e) = done {
                // Still in the journal, and loads keep reading the bytes here.
                writes.overlay.insert(key, value);
                return Err(e);
            }
        }
        if written {
            self.sync_dir(&self.blobs)?;
        }
        let path = self.dir.join(JOURNAL_FILE);
        let io =
            |e: std::io::Error| AdapterError::new(format!("cannot empty {}: {e}", path.display()));
        if writes.incomplete {
            // Its last commit still has to rebuild the metadata if the writer stops:
            // the journal stays until a complete commit.
            return Ok(());
        }
        match writes.journal.as_mut() {
            Some(file) => {
                file.set_len(journal::MAGIC.len() as u64).map_err(io)?;
                file.seek(std::io::SeekFrom::End(0)).map_err(io)?;
                if self.options.durable {
                    file.sync_data().map_err(io)?;
                }
                writes.journal_len = journal::MAGIC.len() as u64;
            }
            None => match fs::remove_file(&path) {
                Ok(()) => self.sync_dir(&self.dir)?,
                Err(e) if e.kind() == IoKind::NotFound => {}
                Err(e) => return Err(io(e)),
            },
        }
        Ok(())
    }
}

impl Drop for Shared {
    /// The last handle goes: what is pending is committed (incomplete if a handle
    /// had partition writes it did not commit), and the files synced.
    fn drop(&mut self) {
        let mut writes = std::mem::take(&mut *self.writes.lock());
        let complete = writes.dirty.is_empty();
        let done = self
            .commit(&mut writes, complete)
            .and_then(|()| self.checkpoint(&mut writes));
        if let Err(e) = done {
            log::error!(target: "datasync::dir", "{}: closing: {e}", self.dir.display());
        }
    }
}

impl Persistence for DirPersistence {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        if let Some(pending) = self.shared.writes.lock().overlay.get(key) {
            return Ok(pending.clone());
        }
        let path = self.file_of(key);
        match read_blob(&path, Some(key)) {
            Ok(found) => Ok(found.map(|(_, payload)| payload)),
            Err(Damage::Io(e)) => Err(AdapterError::new(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
            Err(Damage::Corrupt(why)) => {
                let moved = match self.quarantine(&path) {
                    Ok(dest) => format!("moved aside to {}", dest.display()),
                    Err(e) => format!("could not move it aside: {e}"),
                };
                let message = format!(
                    "corrupt file {} for key {key:?} ({why}); {moved}",
                    path.display()
                );
                if is_reserved(key) && !holds_partition_data(key) {
                    // The library's own metadata: it is rebuilt from the partitions.
                    log::error!(target: "datasync::dir", "{message}; the metadata will be rebuilt");
                    Ok(None)
                } else {
                    log::error!(target: "datasync::dir", "{message}");
                    Err(AdapterError::new(message))
                }
            }
        }
    }

    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        let describes = describes_partition(key);
        let mut writes = self.shared.writes.lock();
        if bytes.len() > DIRECT_WRITE && !writes.overlay.contains_key(key) {
            // Straight to its file, synced. A format-2 piece is written once under
            // its hash and nothing names it until an index in the batch does; any
            // other partition write is ahead of the metadata until the commit, so
            // the journal first records an incomplete commit (a crash before the
            // commit then rebuilds the metadata from the files).
            // The journal's earlier records of the key (committed, when it was
            // small) must not be replayed over this file once it is committed.
            journal::direct(&mut writes.batch, key);
            if describes {
                writes.dirty.insert(self.handle);
                if !writes.incomplete {
                    self.shared.append(&mut writes, false)?;
                }
            }
            self.shared.write_file(key, bytes, true)?;
            writes.dir_unsynced = true;
            return Ok(());
        }
        self.put(&mut writes, key, Some(bytes));
        Ok(())
    }

    fn store_if(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        bytes: &[u8],
    ) -> AdapterResult<Option<bool>> {
        let mut writes = self.shared.writes.lock();
        let held = match writes.overlay.get(key) {
            Some(pending) => pending.clone(),
            None => {
                let path = self.file_of(key);
                match read_blob(&path, Some(key)) {
                    Ok(found) => found.map(|(_, payload)| payload),
                    Err(Damage::Io(e)) => {
                        return Err(AdapterError::new(format!(
                            "cannot read {}: {e}",
                            path.display()
                        )))
                    }
                    // A damaged file equals no expected bytes; the caller's next load
                    // moves it aside.
                    Err(Damage::Corrupt(_)) => return Ok(Some(false)),
                }
            }
        };
        if held.as_deref() != expected {
            return Ok(Some(false));
        }
        self.put(&mut writes, key, Some(bytes));
        Ok(Some(true))
    }

    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        let mut writes = self.shared.writes.lock();
        self.put(&mut writes, key, None);
        Ok(())
    }

    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        let mut keys: BTreeSet<String> = self.file_keys()?.into_iter().collect();
        for (key, value) in &self.shared.writes.lock().overlay {
            match value {
                Some(_) => keys.insert(key.clone()),
                None => keys.remove(key),
            };
        }
        Ok(Some(keys.into_iter().collect()))
    }

    fn commit(&mut self) -> AdapterResult<()> {
        let mut writes = self.shared.writes.lock();
        writes.dirty.remove(&self.handle);
        let complete = writes.dirty.is_empty();
        self.shared.commit(&mut writes, complete)
    }
}

/// How long opening waits for a lock held by someone else before saying the
/// directory is in use. A process that spawns a child holds a copy of every open
/// file, the lock's included, from the fork until the child's exec closes it: a
/// directory closed by one instance and reopened right away can look locked for
/// that moment, most of all on a loaded machine.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(250);

fn lock_briefly(lock: &File) -> std::result::Result<(), TryLockError> {
    let started = std::time::Instant::now();
    loop {
        match lock.try_lock() {
            Err(TryLockError::WouldBlock) if started.elapsed() < LOCK_PATIENCE => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

enum Damage {
    Io(std::io::Error),
    Corrupt(String),
}

fn encode_blob(key: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_MIN + key.len() + payload.len() + CHECKSUM_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// Reads and checks one blob file: `(key, payload)`, `None` if there is no file.
fn read_blob(
    path: &Path,
    expected_key: Option<&str>,
) -> std::result::Result<Option<(String, Vec<u8>)>, Damage> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == IoKind::NotFound => return Ok(None),
        Err(e) => return Err(Damage::Io(e)),
    };
    decode_blob(bytes, expected_key)
        .map(Some)
        .map_err(Damage::Corrupt)
}

fn decode_blob(
    mut bytes: Vec<u8>,
    expected_key: Option<&str>,
) -> std::result::Result<(String, Vec<u8>), String> {
    let total = bytes.len();
    if total < HEADER_MIN + CHECKSUM_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err(format!("not a datasync blob ({total} bytes, bad header)"));
    }
    let body = total - CHECKSUM_LEN;
    if blake3::hash(&bytes[..body]).as_bytes() != &bytes[body..] {
        return Err("checksum mismatch (torn or damaged file)".into());
    }
    let mut at = MAGIC.len();
    let key_len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
    at += 4;
    if at + key_len + 8 > body {
        return Err("key length out of range".into());
    }
    let key = std::str::from_utf8(&bytes[at..at + key_len])
        .map_err(|_| "key is not UTF-8".to_string())?
        .to_string();
    at += key_len;
    let payload_len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    at += 8;
    if payload_len != (body - at) as u64 {
        return Err("payload length does not match the file size".into());
    }
    if let Some(expected) = expected_key {
        if key != expected {
            return Err(format!("the file holds key {key:?}"));
        }
    }
    bytes.truncate(body);
    bytes.drain(..at);
    Ok((key, bytes))
}

/// The file name of a key: injective, valid on every common file system, and unique
/// even where names are compared without case. Lowercase letters, digits, `-`, `_`
/// and `.` stay; an uppercase letter becomes `^` and its lowercase; every other byte
/// becomes `%xx`; a leading `.` is escaped too. Long names are shortened and end in
/// `~` and a hash of the key (the file itself then says which key it holds).
fn file_name(key: &str) -> String {
    let mut name = String::with_capacity(key.len() + 8);
    for (i, b) in key.bytes().enumerate() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => name.push(b as char),
            b'.' if i > 0 => name.push('.'),
            b'A'..=b'Z' => {
                name.push('^');
                name.push(b.to_ascii_lowercase() as char);
            }
            _ => {
                name.push('%');
                name.push_str(&format!("{b:02x}"));
            }
        }
    }
    if name.len() > MAX_NAME {
        let hash = blake3::hash(key.as_bytes()).to_hex();
        name.truncate(MAX_NAME - 34);
        name.push('~');
        name.push_str(&hash[..32]);
    }
    name.push_str(BLOB_EXT);
    name
}

/// The key of an unshortened file name, `None` for names this adapter did not make.
fn decode_name(stem: &str) -> Option<String> {
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'^' => {
                let c = *bytes.get(i + 1)?;
                if !c.is_ascii_lowercase() {
                    return None;
                }
                out.push(c.to_ascii_uppercase());
                i += 2;
            }
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_differ_by_case() {
        let long = "k".repeat(500);
        for key in [
            "app.User",
            "!datasync.meta",
            "a/b:c",
            ".hidden",
            "..",
            "Ünï cödé/✓",
            "x~y%z^w",
            "app.user",
            long.as_str(),
        ] {
            let name = file_name(key);
            assert!(name.len() <= MAX_NAME + BLOB_EXT.len(), "{name}");
            assert!(!name.starts_with('.'), "{name}");
            assert!(
                name.bytes().all(|b| b.is_ascii_graphic()
                    && !b.is_ascii_uppercase()
                    && b != b'/'
                    && b != b'\\'),
                "{name}"
            );
            let stem = name.strip_suffix(BLOB_EXT).unwrap();
            if !stem.contains('~') {
                assert_eq!(decode_name(stem).as_deref(), Some(key));
            }
        }
        assert_ne!(file_name("app.User"), file_name("app.user"));
    }

    #[test]
    fn blobs_check_their_bytes() {
        let blob = encode_blob("k", b"{}");
        assert_eq!(
            decode_blob(blob.clone(), Some("k")).unwrap(),
            ("k".to_string(), b"{}".to_vec())
        );
        assert!(decode_blob(blob.clone(), Some("other")).is_err());
        for cut in 0..blob.len() {
            assert!(
                decode_blob(blob[..cut].to_vec(), Some("k")).is_err(),
                "truncated at {cut}"
            );
        }
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x40;
            assert!(decode_blob(bad, Some("k")).is_err(), "flipped byte {i}");
        }
    }
}
