//! Change-set observers through the C ABI: one JSON document per emission.

use std::os::raw::c_char;

use super::boundary::boundary;
use super::instance::datasync_instance;
use super::observe::{datasync_observer, datasync_subscription, observe_query};
use super::status::datasync_code;

/// Observes a query (options as for `datasync_entity_query`) by change sets. `on_change`
/// gets one JSON document per emission, `len` bytes (NUL-terminated at `json[len]`),
/// valid only during the call:
/// `{"initial":bool,"count":n,"removed":["id",...],"removedAt":[i,...],"upserted":[{"position":i,"inPlace":bool,"entity":{...}},...]}`.
/// The first has `"initial":true` and the whole result as upserts. To apply one to
/// the previous list (empty for the first), by position: remove the entries at the
/// indexes `removedAt` (indexes into the previous list, ascending; remove from the
/// last), then for each upsert in the order given (ascending `position`) replace
/// the entry at `position` when `inPlace`, else insert the entity there. Or by id,
/// with the same result: remove every entity whose id is in `removed` or
/// `upserted`, then insert each upserted entity at its `position`, in the order
/// given. The list then has `count` entities and equals the query's result. Bursts are coalesced; the last call leaves the list at the final
/// state. Writes the subscription to `*out` only on success.
///
/// Ownership: as `datasync_entity_observe`.
/// Threads: any thread, including observer callbacks; callbacks run on the dispatcher.
#[no_mangle]
pub unsafe extern "C" fn datasync_entity_observe_changes(
    instance: *const datasync_instance,
    entity_name: *const c_char,
    options_json: *const c_char,
    observer: *const datasync_observer,
    out: *mut *mut datasync_subscription,
) -> datasync_code {
    boundary(|| {
        observe_query(
            instance,
            entity_name,
            options_json,
            observer,
            out,
            |repo, options, mut host| {
                repo.observe_changes(options, move |changes| host.emit(changes.to_json()))
            },
        )
    })
}
