//! Observers: a registry of subscriptions and the dispatcher thread that calls them,
//! in order, never under a library lock.

mod dispatcher;

pub use dispatcher::Subscription;
pub(crate) use dispatcher::{Change, Registry, Source};
