//! The one place that chooses lock types: parking_lot (no poisoning; a panicking
//! observer cannot wedge the library).

pub(crate) use parking_lot::{Condvar, Mutex};
