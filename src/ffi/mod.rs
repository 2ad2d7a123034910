//! The doors into the core: the C ABI and the UniFFI layer. Only this module tree
//! knows about foreign code.

pub mod c;
pub mod log_bridge;
pub(crate) mod shared;
pub mod uniffi;
