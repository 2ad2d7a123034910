//! One error type for the whole core. The doors (C ABI, UniFFI) map it without a
//! wildcard arm, so a new variant fails to compile until every door handles it.

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in datasync.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Text that should be JSON is not, or a value has the wrong JSON shape.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// An entity that is not a JSON object, or has reserved fields of the wrong type.
    #[error("invalid entity: {0}")]
    InvalidEntity(String),
    /// An entity name that is empty, reserved (`deleted`) or otherwise unusable.
    #[error("invalid entity name {0:?}: {1}")]
    InvalidName(String, String),
    /// An id that does not parse as `<logicalKey><sep><identifier>`.
    #[error("invalid id {0:?}: {1}")]
    InvalidId(String, String),
    /// A logical or partition key the strategy or the library refuses.
    #[error("invalid key {0:?}: {1}")]
    InvalidKey(String, String),
    /// The strategy does not let this instance read or write the partition
    /// (DESIGN §11: `candidate_keys` is the authorisation hook), or a tier refused
    /// the key to this device (a server's 403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A configuration value that cannot work.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A query option that cannot be applied.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// An adapter (persistence or store) reported a failure.
    #[error("{tier} adapter failed on key {key:?}: {message}")]
    Adapter {
        /// Which tier: `store`, `local` or `cloud`.
        tier: String,
        /// The partition or metadata key of the failed call.
        key: String,
        /// What the adapter said.
        message: String,
    },
    /// An adapter returned bytes that are not a valid partition or metadata document.
    #[error("{tier} tier holds corrupt data under key {key:?}: {message}")]
    Corrupt {
        /// Which tier.
        tier: String,
        /// The key whose bytes are corrupt.
        key: String,
        /// What is wrong with them.
        message: String,
    },
    /// The instance was closed; nothing more can be done with it.
    #[error("the instance is closed")]
    Closed,
    /// A blocking call made from a thread it would wait on (e.g. `close` from an observer).
    #[error("{0} cannot be called from this thread: it would wait on itself")]
    WouldDeadlock(String),
    /// A host callback failed or panicked.
    #[error("callback failed: {0}")]
    Callback(String),
    /// Something the library did not expect; a bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The fieldless twin of [`Error`], for status codes and matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidJson,
    InvalidEntity,
    InvalidName,
    InvalidId,
    InvalidKey,
    Forbidden,
    InvalidConfig,
    InvalidQuery,
    Adapter,
    Corrupt,
    Closed,
    WouldDeadlock,
    Callback,
    Internal,
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidJson(_) => ErrorKind::InvalidJson,
            Error::InvalidEntity(_) => ErrorKind::InvalidEntity,
            Error::InvalidName(..) => ErrorKind::InvalidName,
            Error::InvalidId(..) => ErrorKind::InvalidId,
            Error::InvalidKey(..) => ErrorKind::InvalidKey,
            Error::Forbidden(_) => ErrorKind::Forbidden,
            Error::InvalidConfig(_) => ErrorKind::InvalidConfig,
            Error::InvalidQuery(_) => ErrorKind::InvalidQuery,
            Error::Adapter { .. } => ErrorKind::Adapter,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Closed => ErrorKind::Closed,
            Error::WouldDeadlock(_) => ErrorKind::WouldDeadlock,
            Error::Callback(_) => ErrorKind::Callback,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    pub(crate) fn adapter(tier: &str, key: &str, message: impl std::fmt::Display) -> Error {
        Error::Adapter {
            tier: tier.to_string(),
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    /// An adapter's failure on `key`: a refusal of the key is `Forbidden`, naming the
    /// tier and the key; anything else is `Adapter`.
    pub(crate) fn from_adapter(
        tier: &str,
        key: &str,
        e: crate::persistence::AdapterError,
    ) -> Error {
        if e.is_refused() {
            // Format 2 keeps a partition under its index and pieces: name the partition.
            let partition = key.strip_prefix("!index:").or_else(|| {
                key.strip_prefix("!piece:")
                    .and_then(|k| k.rsplit_once(':'))
                    .map(|(p, _)| p)
            });
            Error::Forbidden(match partition {
                Some(partition) => {
                    format!("the {tier} tier refused partition {partition:?} (key {key:?}): {e}")
                }
                None => format!("the {tier} tier refused key {key:?}: {e}"),
            })
        } else {
            Error::adapter(tier, key, e)
        }
    }

    pub(crate) fn corrupt(tier: &str, key: &str, message: impl std::fmt::Display) -> Error {
        Error::Corrupt {
            tier: tier.to_string(),
            key: key.to_string(),
            message: message.to_string(),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::InvalidJson(e.to_string())
    }
}
