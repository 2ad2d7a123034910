//! Adapters shipped with the library.

pub mod memory;

pub use memory::{MemoryPersistence, MemoryStore};
