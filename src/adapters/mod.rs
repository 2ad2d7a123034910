//! Adapters shipped with the library.

pub mod dir;
pub mod memory;

pub use dir::{DirOptions, DirPersistence};
pub use memory::{MemoryPersistence, MemoryStore};
