//! datasync: an offline-first, multi-tier, reactive entity store with sync.
//!
//! Entities (JSON objects) live in partitions; partitions move between an in-memory
//! store, a durable local tier and a cloud tier, reconciled by hash-guided,
//! last-writer-wins sync; observers see every change. See README.md and DESIGN.md.

pub mod adapters;
pub mod config;
pub mod error;
pub mod ffi;
mod instance;
mod lock;
pub mod model;
pub mod observe;
pub mod persistence;
pub mod pieces;
mod status;
pub mod sync;
mod tier;

// The model's modules keep their short paths (`datasync::partition::Partition`).
pub use model::{clock, entity, id, meta, partition, query, split, strategy, summary};

#[cfg(feature = "uniffi")]
uniffi::setup_scaffolding!();

pub use adapters::{DirOptions, DirPersistence, MemoryPersistence, MemoryStore};
#[cfg(feature = "http")]
pub use adapters::{HttpOptions, HttpPersistence};
pub use config::Config;
pub use entity::Entity;
pub use error::{Error, ErrorKind, Result};
pub use instance::{DataSync, PendingWrite, PendingWrites, Repository, Status, TierId};
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
pub use tier::audit;

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
