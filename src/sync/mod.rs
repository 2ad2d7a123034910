//! Synchronisation: the pure merge, one sync between two tiers, and the worker thread.

pub mod engine;
pub mod merge;
pub mod worker;

pub use merge::{merge, ConflictResolver, LastWriterWins, Merged};
