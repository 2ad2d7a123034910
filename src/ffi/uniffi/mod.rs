//! The UniFFI door: Python, Kotlin and Swift bindings generated from these proc-macro
//! exports (`uniffi-bindgen` binary, feature `uniffi-cli`). Everything here is a thin
//! wrapper over the core API; entities cross as JSON text.
//!
//! - [`objects`]: `DataSync`, `Repository`, `Subscription`, `MemoryTier`, `OpenOptions`.
//! - [`types`]: records and enums (`Query`, `SyncStats`, `Status`, ...).
//! - [`traits`]: foreign traits for persistence, key strategy, conflict resolver,
//!   observers and logger, with the bridges that make them core adapters.
//! - [`error`]: `DataSyncError`, mapped from [`crate::Error`] without a wildcard arm.

pub mod changes;
pub mod direct;
pub mod error;
pub mod objects;
pub mod traits;
pub mod types;

pub use error::DataSyncError;
pub use objects::{
    default_options, describe_error, DataSync, MemoryTier, OpenOptions, Repository, StrategySpec,
    Subscription, TierSpec,
};
pub use traits::{
    EntityObserver, HostConflictResolver, HostKeyStrategy, HostLogger, HostPersistence,
    QueryObserver, StatusObserver,
};
pub use types::{
    CandidateKeys, DateGranularity, LogLevel, Query, SlotState, SortField, Status, SyncStats,
    TierKind,
};
