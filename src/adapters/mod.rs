//! Adapters shipped with the library.

pub mod dir;
#[cfg(feature = "http")]
pub mod http;
mod journal;
pub mod memory;

pub use dir::{DirOptions, DirPersistence};
#[cfg(feature = "http")]
pub use http::{HttpOptions, HttpPersistence};
pub use memory::{MemoryPersistence, MemoryStore};
