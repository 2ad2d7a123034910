//! The one place that chooses lock types: parking_lot (no poisoning; a panicking
//! observer cannot wedge the library).
//!
//! Lock order, outermost first; a thread holding one may take only those after it:
//! 1. `Inner::hydrating` (keys being loaded into the store);
//! 2. a tier's `io` (its adapter's serialisation lock, held during adapter calls);
//! 3. a tier's `state` (metadata and marks; never held during a call to host code);
//! 4. leaves, taken alone: the worker's control, the registry's subscriptions and
//!    queue, a subscription's callback lock (held while the callback runs), status.

pub(crate) use parking_lot::{Condvar, Mutex};
