//! The directory backend: one file per key.
//!
//! A key becomes a file name by escaping every byte outside `[A-Za-z0-9_-]` as `%XX`
//! (so `.`, `/` and `\` never reach the file system as themselves). A long escaped
//! name is cut into chunks of at most [`CHUNK`] bytes: every chunk but the last is a
//! directory ending in `.d`, the last is the file, ending in `.v`. Writes go to a
//! temporary file under `tmp/`, are synced, renamed into place, and the directory is
//! synced. Writes are serialised by one lock in the process: one server process per
//! directory.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{hash_hex, BoxFuture, Result, Storage, StorageError};

/// The longest escaped chunk in one path component (file systems allow 255 bytes).
const CHUNK: usize = 240;

pub struct DirStorage {
    inner: Arc<Inner>,
}

struct Inner {
    data: PathBuf,
    tmp: PathBuf,
    writes: Mutex<()>,
    counter: AtomicU64,
}

fn io_err(what: &str, e: std::io::Error) -> StorageError {
    StorageError(format!("{what}: {e}"))
}

impl DirStorage {
    pub fn open(root: &Path) -> Result<DirStorage> {
        let data = root.join("data");
        let tmp = root.join("tmp");
        fs::create_dir_all(&data).map_err(|e| io_err("cannot create the data directory", e))?;
        fs::create_dir_all(&tmp).map_err(|e| io_err("cannot create the tmp directory", e))?;
        // Leftovers of writes cut short by a crash were never renamed into place.
        if let Ok(entries) = fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(DirStorage {
            inner: Arc::new(Inner {
                data,
                tmp,
                writes: Mutex::new(()),
                counter: AtomicU64::new(0),
            }),
        })
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StorageError(format!("storage task failed: {e}")))?
    }
}

/// Escapes a key into a safe file-name alphabet.
fn escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(name: &str) -> Option<String> {
    crate::keys::decode_segment(name).ok()
}

impl Inner {
    /// The file of a key, relative to the data directory.
    fn rel_path(key: &str) -> PathBuf {
        let escaped = escape(key);
        let mut path = PathBuf::new();
        let bytes = escaped.as_bytes();
        let chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            // The escaped alphabet is ASCII, so any cut is valid UTF-8.
            let part = std::str::from_utf8(chunk).expect("escaped names are ASCII");
            if i + 1 == chunks.len() {
                path.push(format!("{part}.v"));
            } else {
                path.push(format!("{part}.d"));
            }
        }
        path
    }

    fn path(&self, key: &str) -> PathBuf {
        self.data.join(Self::rel_path(key))
    }

    fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match fs::read(self.path(key)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read a blob", e)),
        }
    }

    fn write(&self, key: &str, value: &[u8]) -> Result<()> {
        let target = self.path(key);
        let parent = target
            .parent()
            .expect("a key's file has a parent")
            .to_path_buf();
        fs::create_dir_all(&parent).map_err(|e| io_err("cannot create a directory", e))?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{}-{n}", std::process::id()));
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(value)?;
            f.sync_all()?;
            fs::rename(&tmp, &target)?;
            fs::File::open(&parent)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| io_err("cannot write a blob", e))
    }

    fn remove(&self, key: &str) -> Result<()> {
        let target = self.path(key);
        match fs::remove_file(&target) {
            Ok(()) => {
                let parent = target.parent().expect("a key's file has a parent");
                fs::File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io_err("cannot sync a directory", e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot remove a blob", e)),
        }
    }

    fn walk(&self, dir: &Path, prefix: &mut String, out: &mut Vec<String>) -> Result<()> {
        let entries = fs::read_dir(dir).map_err(|e| io_err("cannot list a directory", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_err("cannot list a directory", e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(part) = name.strip_suffix(".d") {
                let len = prefix.len();
                prefix.push_str(part);
                self.walk(&entry.path(), prefix, out)?;
                prefix.truncate(len);
            } else if let Some(part) = name.strip_suffix(".v") {
                let escaped = format!("{prefix}{part}");
                if let Some(key) = unescape(&escaped) {
                    out.push(key);
                }
            }
        }
        Ok(())
    }
}

impl Storage for DirStorage {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        let key = key.to_string();
        Box::pin(self.blocking(move |inner| inner.read(&key)))
    }

    fn store<'a>(&'a self, key: &'a str, value: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        let key = key.to_string();
        let value = value.to_vec();
        Box::pin(self.blocking(move |inner| {
            let _guard = inner.writes.lock().unwrap_or_else(|p| p.into_inner());
            inner.write(&key, &value)
        }))
    }

    fn store_if<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        expected: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool>> {
        let key = key.to_string();
        let value = value.to_vec();
        let expected = expected.map(str::to_string);
        Box::pin(self.blocking(move |inner| {
            let _guard = inner.writes.lock().unwrap_or_else(|p| p.into_inner());
            let current = inner.read(&key)?;
            let matches = match (&current, &expected) {
                (None, None) => true,
                (Some(bytes), Some(hash)) => hash_hex(bytes) == *hash,
                _ => false,
            };
            if matches {
                inner.write(&key, &value)?;
            }
            Ok(matches)
        }))
    }

    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        let key = key.to_string();
        Box::pin(self.blocking(move |inner| {
            let _guard = inner.writes.lock().unwrap_or_else(|p| p.into_inner());
            inner.remove(&key)
        }))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        let prefix = prefix.to_string();
        Box::pin(self.blocking(move |inner| {
            let mut keys = Vec::new();
            inner.walk(&inner.data, &mut String::new(), &mut keys)?;
            keys.retain(|k| k.starts_with(&prefix));
            keys.sort();
            Ok(keys)
        }))
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.blocking(|inner| {
            fs::metadata(&inner.data)
                .map(|_| ())
                .map_err(|e| io_err("the data directory is gone", e))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_keys_inside() {
        for key in ["..", "../x", "a/b", "a\\b", "é", ".hidden", "x.v", "y.d"] {
            let rel = Inner::rel_path(key);
            assert_eq!(rel.components().count(), 1, "{key}");
            let name = rel.to_str().unwrap();
            assert!(!name.contains('/') && !name.starts_with('.'), "{key}");
            assert_eq!(unescape(name.strip_suffix(".v").unwrap()).unwrap(), key);
        }
        let long = "k".repeat(1024);
        assert_eq!(Inner::rel_path(&long).components().count(), 5);
    }
}
