//! Observers: a registry of subscriptions, the dispatcher thread that calls them in
//! order, never under a library lock, the views that keep collection observers up
//! to date from what changed, and the handles their owners keep.

mod changeset;
mod dispatcher;
mod registry;
mod subscription;
mod view;

pub use changeset::{ChangeSet, ListSnapshot, Upsert};
pub(crate) use registry::{Change, Registry, Source};
pub use subscription::Subscription;
