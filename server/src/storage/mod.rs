//! Where the server keeps the blobs: one trait, two backends.
//!
//! - [`pg::PgStorage`]: PostgreSQL, the real backend. Stateless: several server
//!   processes may serve one database, because every conditional write is one atomic
//!   statement in the database.
//! - [`dir::DirStorage`]: a directory, the embedded default for a laptop or a test.
//!   Its conditional writes are serialised by a lock inside the process, so a
//!   directory is served by ONE server process.

pub mod dir;
pub mod pg;

use std::future::Future;
use std::pin::Pin;

/// A boxed future, so the trait can be used as `dyn Storage`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A storage failure: the request gets a 503 and the reason is logged.
#[derive(Debug)]
pub struct StorageError(pub String);

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StorageError {}

pub type Result<T> = std::result::Result<T, StorageError>;

/// The hash a conditional write compares: blake3 of the bytes, lowercase hex.
pub fn hash_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// The blob-tier operations. Keys reaching a backend are already checked
/// ([`crate::keys::classify`]); a backend still never trusts them as paths.
pub trait Storage: Send + Sync + 'static {
    /// The stored bytes of a key, if any.
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>>;
    /// Stores unconditionally.
    fn store<'a>(&'a self, key: &'a str, value: &'a [u8]) -> BoxFuture<'a, Result<()>>;
    /// Stores only if the key is absent (`expected` = None) or its stored bytes hash to
    /// `expected`. Returns whether it stored.
    fn store_if<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        expected: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool>>;
    /// Removes a key (no error when absent).
    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Every key starting with `prefix`, sorted by bytes.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>>;
    /// Whether the storage answers (for `GET /health`).
    fn ping(&self) -> BoxFuture<'_, Result<()>>;
}
