//! datasync: an offline-first, multi-tier, reactive entity store with sync.
//!
//! Entities (JSON objects) live in partitions; partitions move between an in-memory
//! store, a durable local tier and a cloud tier, reconciled by hash-guided,
//! last-writer-wins sync; observers see every change. See README.md and DESIGN.md.

pub mod adapters;
pub mod clock;
pub mod config;
pub mod entity;
pub mod error;
pub mod ffi;
pub mod id;
mod instance;
mod lock;
pub mod meta;
pub mod observe;
pub mod partition;
pub mod persistence;
pub mod query;
mod status;
pub mod strategy;
pub mod sync;
mod tier;

uniffi::setup_scaffolding!();

pub use adapters::{DirOptions, DirPersistence, MemoryPersistence, MemoryStore};
pub use config::Config;
pub use entity::Entity;
pub use error::{Error, ErrorKind, Result};
pub use instance::{DataSync, Repository, Status, TierId};
pub use meta::{Meta, MetaEntry};
pub use observe::{ChangeSet, ListSnapshot, Subscription, Upsert};
pub use partition::{Partition, Slot};
pub use persistence::{AdapterError, AdapterResult, Persistence, Store};
pub use query::{Order, QueryOptions, SortKey};
pub use strategy::{
    Candidates, DateGranularity, DateStrategy, FieldStrategy, GlobalStrategy, KeyStrategy,
};
pub use sync::engine::{sync_tiers, SyncStats};
pub use sync::{ConflictResolver, LastWriterWins};

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
