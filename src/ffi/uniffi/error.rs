//! The one error type of the UniFFI door, mapped from [`crate::Error`] variant by
//! variant (no wildcard arm), and back when a host callback reports one of ours.

use crate::error::Error;

/// Everything a call into datasync can fail with. Kotlin sees `DataSyncException`,
/// Swift and Python `DataSyncError`.
///
/// Fields are named `reason` rather than `message`: Kotlin's `Throwable.message`
/// would clash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum DataSyncError {
    #[error("invalid JSON: {reason}")]
    InvalidJson { reason: String },
    #[error("invalid entity: {reason}")]
    InvalidEntity { reason: String },
    #[error("invalid entity name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid id {id:?}: {reason}")]
    InvalidId { id: String, reason: String },
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    /// The strategy does not let this instance read or write that partition.
    #[error("forbidden: {reason}")]
    Forbidden { reason: String },
    #[error("invalid configuration: {reason}")]
    InvalidConfig { reason: String },
    #[error("invalid query: {reason}")]
    InvalidQuery { reason: String },
    /// A persistence adapter (built in or supplied by the host) failed.
    #[error("{tier} adapter failed on key {key:?}: {reason}")]
    Adapter {
        tier: String,
        key: String,
        reason: String,
    },
    /// An adapter returned bytes that are not a valid partition or metadata document.
    #[error("{tier} tier holds corrupt data under key {key:?}: {reason}")]
    Corrupt {
        tier: String,
        key: String,
        reason: String,
    },
    /// The instance was shut down.
    #[error("the instance is closed")]
    Closed,
    /// A blocking call made from the thread it would wait on (e.g. `flush` inside an observer).
    #[error("{call} cannot be called from this thread: it would wait on itself")]
    WouldDeadlock { call: String },
    /// A host callback failed: it raised/threw, or returned something unusable.
    #[error("callback failed: {reason}")]
    Callback { reason: String },
    #[error("internal error: {reason}")]
    Internal { reason: String },
}

impl From<Error> for DataSyncError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidJson(reason) => DataSyncError::InvalidJson { reason },
            Error::InvalidEntity(reason) => DataSyncError::InvalidEntity { reason },
            Error::InvalidName(name, reason) => DataSyncError::InvalidName { name, reason },
            Error::InvalidId(id, reason) => DataSyncError::InvalidId { id, reason },
            Error::InvalidKey(key, reason) => DataSyncError::InvalidKey { key, reason },
            Error::Forbidden(reason) => DataSyncError::Forbidden { reason },
            Error::InvalidConfig(reason) => DataSyncError::InvalidConfig { reason },
            Error::InvalidQuery(reason) => DataSyncError::InvalidQuery { reason },
            Error::Adapter { tier, key, message } => DataSyncError::Adapter {
                tier,
                key,
                reason: message,
            },
            Error::Corrupt { tier, key, message } => DataSyncError::Corrupt {
                tier,
                key,
                reason: message,
            },
            Error::Closed => DataSyncError::Closed,
            Error::WouldDeadlock(call) => DataSyncError::WouldDeadlock { call },
            Error::Callback(reason) => DataSyncError::Callback { reason },
            Error::Internal(reason) => DataSyncError::Internal { reason },
        }
    }
}

impl From<DataSyncError> for Error {
    fn from(e: DataSyncError) -> Self {
        match e {
            DataSyncError::InvalidJson { reason } => Error::InvalidJson(reason),
            DataSyncError::InvalidEntity { reason } => Error::InvalidEntity(reason),
            DataSyncError::InvalidName { name, reason } => Error::InvalidName(name, reason),
            DataSyncError::InvalidId { id, reason } => Error::InvalidId(id, reason),
            DataSyncError::InvalidKey { key, reason } => Error::InvalidKey(key, reason),
            DataSyncError::Forbidden { reason } => Error::Forbidden(reason),
            DataSyncError::InvalidConfig { reason } => Error::InvalidConfig(reason),
            DataSyncError::InvalidQuery { reason } => Error::InvalidQuery(reason),
            DataSyncError::Adapter { tier, key, reason } => Error::Adapter {
                tier,
                key,
                message: reason,
            },
            DataSyncError::Corrupt { tier, key, reason } => Error::Corrupt {
                tier,
                key,
                message: reason,
            },
            DataSyncError::Closed => Error::Closed,
            DataSyncError::WouldDeadlock { call } => Error::WouldDeadlock(call),
            DataSyncError::Callback { reason } => Error::Callback(reason),
            DataSyncError::Internal { reason } => Error::Internal(reason),
        }
    }
}

/// A host callback raised something that is not a `DataSyncError`: it becomes an
/// error value, never a panic.
impl From<uniffi::UnexpectedUniFFICallbackError> for DataSyncError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        DataSyncError::Callback { reason: e.reason }
    }
}

impl From<serde_json::Error> for DataSyncError {
    fn from(e: serde_json::Error) -> Self {
        Error::from(e).into()
    }
}

/// Result of every UniFFI call.
pub type FfiResult<T> = Result<T, DataSyncError>;

impl DataSyncError {
    /// The text a host adapter's failure is reported with (without our prefix for
    /// callback errors, which the core wraps with tier and key itself).
    pub(crate) fn host_reason(&self) -> String {
        match self {
            DataSyncError::Callback { reason } => reason.clone(),
            other => other.to_string(),
        }
    }
}
