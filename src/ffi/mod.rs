//! The doors into the core: the C ABI and the UniFFI layer. Only this module tree
//! knows about foreign code.

#[cfg(feature = "capi")]
pub mod c;
#[cfg(any(feature = "capi", feature = "uniffi"))]
pub mod log_bridge;
#[cfg(any(feature = "capi", feature = "uniffi"))]
pub(crate) mod shared;
#[cfg(feature = "uniffi")]
pub mod uniffi;
