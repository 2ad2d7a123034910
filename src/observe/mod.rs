//! Observers: a registry of subscriptions, the dispatcher thread that calls them in
//! order, never under a library lock, and the handles their owners keep.

mod dispatcher;
mod registry;
mod subscription;

pub(crate) use registry::{Change, Registry, Source};
pub use subscription::Subscription;
