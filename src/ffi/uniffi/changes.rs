//! Change-set observers through UniFFI: one JSON string per emission (one parse in
//! the binding), and a handle that gives the whole list only when asked.

use std::sync::Arc;

use super::error::FfiResult;
use super::objects::{Repository, Subscription};
use super::types::Query;
use crate::query::QueryOptions;

/// Receives the change sets of a query, on the dispatcher thread. `changes_json` is
/// `{"initial":bool,"count":n,"removed":["id",...],"upserted":[{"position":i,"entity":{...}},...]}`.
/// To apply it to the previous list (empty for the first): remove every entity whose
/// id is in `removed` or `upserted`, then insert each upserted entity at its
/// `position`, in the order given (ascending). `changes.list_json()` gives the whole
/// list instead, when wanted.
#[uniffi::export(with_foreign)]
pub trait ChangeObserver: Send + Sync {
    fn on_changes(&self, changes_json: String, changes: Arc<ChangeSetHandle>) -> FfiResult<()>;
}

/// The whole result at one emission, shared with the observer's view: nothing is
/// copied until `list_json` is called. Keeping the handle past the callback makes
/// the next emission copy the view's list of handles once (never the entities).
#[derive(uniffi::Object)]
pub struct ChangeSetHandle {
    list: crate::ListSnapshot,
}

#[uniffi::export]
impl ChangeSetHandle {
    /// How many entities the result has.
    pub fn count(&self) -> u64 {
        self.list.len() as u64
    }

    /// The whole result, as a JSON array.
    pub fn list_json(&self) -> String {
        self.list.to_json()
    }
}

#[uniffi::export]
impl Repository {
    /// Observes a query by change sets: the whole result first (`"initial":true`, as
    /// upserts), then what changed; bursts coalesced.
    pub fn observe_changes(
        &self,
        query: Query,
        observer: Arc<dyn ChangeObserver>,
    ) -> FfiResult<Arc<Subscription>> {
        let options = QueryOptions::try_from(query)?;
        let sub = self.core.observe_changes(options, move |changes| {
            let handle = Arc::new(ChangeSetHandle {
                list: changes.snapshot(),
            });
            if let Err(e) = observer.on_changes(changes.to_json(), handle) {
                log::warn!(target: "datasync::ffi", "change observer failed: {e}");
            }
        })?;
        Ok(Subscription::wrap(sub))
    }
}
