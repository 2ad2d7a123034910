//! Synchronisation: the pure merge (`merge.rs`), one sync between two tiers
//! (`engine.rs`), the worker's loop over the chain with status and backoff
//! (`chain.rs`), and the worker thread with its mailbox (`worker.rs`) and its
//! scheduling priority (`priority.rs`).

pub(crate) mod chain;
pub mod engine;
pub mod merge;
mod priority;
pub mod worker;

pub use merge::{merge, ConflictResolver, LastWriterWins, Merged};
