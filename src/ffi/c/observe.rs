//! Observers: host callbacks on the dispatcher thread, and subscription handles.

use std::os::raw::{c_char, c_void};

use super::boundary::{boundary, Failure};
use super::instance::{datasync_instance, instance, repo};
use super::status::datasync_code;
use super::strings::{need_out, str_in, write_out};
use super::vtable::datasync_destroy_fn;
use crate::ffi::shared::list_json;
use crate::observe::Subscription;
use crate::query::QueryOptions;

/// A host observer. `on_change` runs on the instance's dispatcher thread, in order,
/// never while the library holds a lock: it may call any datasync function except
/// the ones that wait for the dispatcher: `datasync_instance_drain_events` and
/// `datasync_instance_close` fail there with `DATASYNC_WOULD_DEADLOCK`, and
/// `datasync_instance_free` must not be called there.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct datasync_observer {
    /// Passed to every callback.
    pub userdata: *mut c_void,
    /// Required. Gets `len` bytes of JSON at `json` (also NUL-terminated at
    /// `json[len]`), valid only during the call: the entity or `null` for
    /// `datasync_entity_observe`, an array for `datasync_entity_observe_all`, a change
    /// set for `datasync_entity_observe_changes`, a status for
    /// `datasync_instance_observe_status`.
    pub on_change:
        Option<unsafe extern "C" fn(userdata: *mut c_void, json: *const c_char, len: usize)>,
    /// Optional. Called exactly once after the last `on_change`: when the
    /// subscription is cancelled or freed, when the instance is freed, or before
    /// `datasync_entity_observe*` returns an error.
    pub destroy: datasync_destroy_fn,
}

/// A live observer. Cancelling or freeing it stops the callbacks: once that
/// returns, `on_change` is not called again (unless it is that very callback
/// cancelling itself, which then simply is not called again).
#[allow(non_camel_case_types)]
pub struct datasync_subscription {
    pub(super) inner: Subscription,
}

pub(super) struct HostObserver {
    vt: datasync_observer,
}

// SAFETY: the dispatcher calls an observer from one thread at a time; the host
// contract allows that thread to differ from the one that subscribed.
unsafe impl Send for HostObserver {}

impl Drop for HostObserver {
    fn drop(&mut self) {
        if let Some(destroy) = self.vt.destroy.take() {
            // SAFETY: the host's destroy, called once with its userdata.
            unsafe { destroy(self.vt.userdata) }
        }
    }
}

impl HostObserver {
    /// # Safety
    /// `vt` is NULL or points to a readable observer.
    pub(super) unsafe fn take(vt: *const datasync_observer) -> Result<HostObserver, Failure> {
        let vt = *vt.as_ref().ok_or(Failure::Null("observer"))?;
        let observer = HostObserver { vt };
        if vt.on_change.is_none() {
            return Err(Failure::Argument("an observer needs on_change".into()));
        }
        Ok(observer)
    }

    pub(super) fn emit(&mut self, mut json: String) {
        let Some(on_change) = self.vt.on_change else {
            return;
        };
        let len = json.len();
        json.push('\0');
        // SAFETY: the host's contract; the text outlives the call.
        unsafe { on_change(self.vt.userdata, json.as_ptr().cast(), len) }
    }
}

/// Observes one entity: `observer` gets its current JSON first (`null` when absent),
/// then every change (`null` on delete). Writes the subscription to `*out` only on success.
///
/// Ownership: `entity_name` and `id` are borrowed; `observer` is copied and owned
/// by the library whatever the outcome (its `destroy` runs exactly once, see
/// `datasync_observer`). The caller owns `*out` and frees it with
/// `datasync_subscription_free`.
/// Threads: any thread, including observer callbacks; callbacks run on the dispatcher.
#[no_mangle]
pub unsafe extern "C" fn datasync_entity_observe(
    instance: *const datasync_instance,
    entity_name: *const c_char,
    id: *const c_char,
    observer: *const datasync_observer,
    out: *mut *mut datasync_subscription,
) -> datasync_code {
    boundary(|| {
        let mut host = HostObserver::take(observer)?;
        let repo = repo(instance, entity_name)?;
        let id = str_in(id, "id")?;
        need_out(out, "out")?;
        let inner = repo.observe(id, move |entity| {
            host.emit(entity.map_or_else(|| "null".to_string(), |e| e.json().to_string()))
        })?;
        write_out(
            out,
            Box::into_raw(Box::new(datasync_subscription { inner })),
        );
        Ok(())
    })
}

/// Observes a query (options as for `datasync_entity_query`): `observer` gets the full
/// matching list first, then the new list after changes that may affect it. Bursts
/// are coalesced; the last call always carries the final state. Writes the
/// subscription to `*out` only on success.
///
/// Ownership: as `datasync_entity_observe`.
/// Threads: any thread, including observer callbacks; callbacks run on the dispatcher.
#[no_mangle]
pub unsafe extern "C" fn datasync_entity_observe_all(
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
                repo.observe_all(options, move |list| host.emit(list_json(list)))
            },
        )
    })
}

/// What the query observers share: take the host observer, parse the options,
/// subscribe with `subscribe`, and hand out the subscription.
///
/// # Safety
/// The pointers are as the calling export documents them.
pub(super) unsafe fn observe_query(
    instance: *const datasync_instance,
    entity_name: *const c_char,
    options_json: *const c_char,
    observer: *const datasync_observer,
    out: *mut *mut datasync_subscription,
    subscribe: impl FnOnce(
        &crate::Repository,
        QueryOptions,
        HostObserver,
    ) -> crate::Result<Subscription>,
) -> Result<(), Failure> {
    let host = HostObserver::take(observer)?;
    let repo = repo(instance, entity_name)?;
    let options = QueryOptions::from_json(str_in(options_json, "options_json")?)?;
    need_out(out, "out")?;
    let inner = subscribe(&repo, options, host)?;
    write_out(
        out,
        Box::into_raw(Box::new(datasync_subscription { inner })),
    );
    Ok(())
}

/// Observes the sync status: `observer` gets the current status first, then the new
/// one after every chain sync (success or failure), as JSON shaped like
/// `datasync_instance_status`'s. Writes the subscription to `*out` only on success.
///
/// Ownership: `observer` is copied and owned by the library whatever the outcome (its
/// `destroy` runs exactly once, see `datasync_observer`). The caller owns `*out` and
/// frees it with `datasync_subscription_free`.
/// Threads: any thread, including observer callbacks; callbacks run on the dispatcher.
#[no_mangle]
pub unsafe extern "C" fn datasync_instance_observe_status(
    instance: *const datasync_instance,
    observer: *const datasync_observer,
    out: *mut *mut datasync_subscription,
) -> datasync_code {
    boundary(|| {
        let mut host = HostObserver::take(observer)?;
        let ds = self::instance(instance)?;
        need_out(out, "out")?;
        let inner = ds.observe_status(move |status| {
            // A struct of plain fields always serialises; "null" only if that changes.
            host.emit(serde_json::to_string(status).unwrap_or_else(|_| "null".into()))
        })?;
        write_out(
            out,
            Box::into_raw(Box::new(datasync_subscription { inner })),
        );
        Ok(())
    })
}

/// Stops an observer without freeing the handle. Idempotent; may be called from
/// inside the observer's own callback. Once it returns, no further call is made
/// (from another thread: it waits for a running call to end).
///
/// Ownership: `subscription` is borrowed.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn datasync_subscription_cancel(
    subscription: *const datasync_subscription,
) -> datasync_code {
    boundary(|| {
        subscription
            .as_ref()
            .ok_or(Failure::Null("subscription"))?
            .inner
            .unsubscribe();
        Ok(())
    })
}

/// Cancels (see `datasync_subscription_cancel`) and frees a subscription. NULL is
/// ignored. May be called from inside the observer's own callback, and after the
/// instance was freed.
///
/// Ownership: takes `subscription`; do not use it afterwards.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn datasync_subscription_free(subscription: *mut datasync_subscription) {
    boundary(|| {
        if !subscription.is_null() {
            drop(Box::from_raw(subscription));
        }
        Ok(())
    })
}
