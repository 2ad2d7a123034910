//! The instance handle and every repository operation.

use std::os::raw::c_char;
use std::time::Duration;

use serde_json::Value;

use super::boundary::{boundary, Failure};
use super::config::{datasync_config, tier_id};
use super::status::datasync_code;
use super::strings::{need_out, str_in, string_out, write_out, write_string};
use crate::error::Error;
use crate::ffi::shared::list_json;
use crate::instance::{DataSync, Repository};
use crate::query::QueryOptions;

/// An open instance. Every function taking it may be called from any thread, at
/// the same time, until `datasync_instance_free`.
#[allow(non_camel_case_types)]
pub struct datasync_instance {
    pub(crate) inner: DataSync,
}

/// # Safety
/// `handle` is NULL or a live instance.
pub(crate) unsafe fn instance<'a>(
    handle: *const datasync_instance,
) -> Result<&'a DataSync, Failure> {
    handle
        .as_ref()
        .map(|h| &h.inner)
        .ok_or(Failure::Null("instance"))
}

/// # Safety
/// As [`instance`]; `name` is NULL or a NUL-terminated string.
pub(crate) unsafe fn repo(
    handle: *const datasync_instance,
    name: *const c_char,
) -> Result<Repository, Failure> {
    let ds = instance(handle)?;
    let name = str_in(name, "entity_name")?;
    Ok(ds.repo(name)?)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| Failure::Core(Error::Internal(e.to_string())))
}

/// Opens an instance from `config`: validates it, reads local metadata, starts the
/// sync worker and the observer dispatcher. Writes the handle to `*out` only on success.
///
/// Ownership: consumes `config` whatever the outcome (do not free or reuse it); if
/// opening fails, every host vtable it held is destroyed before this returns. The
/// caller owns `*out` and frees it with `datasync_instance_free`.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn datasync_instance_open(
    config: *mut datasync_config,
    out: *mut *mut datasync_instance,
) -> datasync_code {
    boundary(|| {
        if config.is_null() {
            return Err(Failure::Null("config"));
        }
        let config = Box::from_raw(config).config;
        need_out(out, "out")?;
        let inner = DataSync::open(config)?;
        write_out(out, Box::into_raw(Box::new(datasync_instance { inner })));
        Ok(())
    })
}

/// Closes an instance: flushes the store to the tier below, delivers queued
/// observer calls, stops and joins the library's threads. Idempotent. Afterwards
/// every call but `datasync_instance_close`, `datasync_instance_status` and
/// `datasync_instance_free` fails with `DATASYNC_CLOSED`. Fails with `DATASYNC_WOULD_DEADLOCK` from inside an
/// observer callback.
///
/// Ownership: `instance` is borrowed; it must still be freed with `datasync_instance_free`.
/// Threads: any thread but the dispatcher.
#[no_mangle]
pub unsafe extern "C" fn datasync_instance_close(
    instance: *const datasync_instance,
) -> datasync_code {
    boundary(|| Ok(self::instance(instance)?.close()?))
}

/// Closes (see `datasync_instance_close`) and frees an instance. NULL is ignored. Host
/// vtables of the instance are destroyed once nothing uses them any more.
/// Subscriptions stay valid handles (they no longer fire) until freed.
///
/// Ownership: takes `instance`; no other thread may use it during or after the
/// call. Never call it from inside an observer callback.
/// Threads: any thread but the dispatcher.
#[no_mangle]
pub unsafe extern "C" fn datasync_instance_free(instance: *mut datasync_instance) {
    boundary(|| {
        if !instance.is_null() {
            drop(Box::from_raw(instance));
        }
        Ok(())
    })
}

/// Saves an entity (a JSON object) of type `entity_name` and writes its id to
/// `*out_id`. Generates the id when absent, sets `createdAt` when absent, `updatedAt`
/// from the instance clock and `version` to previous + 1. Nothing is written when it fails.
///
/// Ownership: `entity_name` and `json` are borrowed and copied. `out_id` may be NULL;
/// otherwise the caller owns `*out_id` and frees it with `datasync_string_free`.
/// Threads: any thread, including observer callbacks.
#[no_mangle]
pub unsafe extern "C" fn datasync_entity_save(
    instance: *const datasync_instance,
    entity_name: *const c_char,
    json: *const c_char,
    out_id: *mut *mut c_char,
) -> datasync_code {
    boundary(|| {
        let repo = repo(instance, entity_name)?;
        let json = str_in(json, "json")?;
        let id = repo.save_json(json)?;
        write_string(out_id, id);
        Ok(())
    })
}

/// Saves a JSON array of entities at once (one lock, one event batch): all are
/// saved or, when one is invalid, none. Writes a JSON array of their ids, in order,
/// to `*out_ids_json`.
///
/// Ownership: `entity_name` and `json_array` are borrowed. `out_ids_json` may be
/// NULL; otherwise the caller owns `*out_ids_json` (free with `datasync_string_free`).
/// Threads: any thread, including observer callbacks.
#[no_mangle]
pub unsafe extern "C" fn datasync_entity_save_many(
    instance: *const datasync_instance,
    entity_name: *const c_char,
    json_array: *const c_char,
    out_ids_json: *mut *mut c_char,
) -> datasync_code {
    boundary(|| {
        let repo = repo(instance, entity_name)?;
        let text = str_in(json_array, "json_array")?;
        let entities = match serde_json::from_str::<Value>(text).map_err(Error::from)? {
            Value::Array(items) => items,
            _ => return Err(Error::InvalidJson("expected a JSON array of entities".into()).into()),
        };
        let ids = repo.save_many(&entities)?;
        write_string(out_ids_json, to_json(&ids)?);
        Ok(())
    })
}

/// Reads one entity. Writes its JSON to `*out_json`, or NULL when there is no such
/// entity (that is not an error).
///
/// Ownership: `entity_name` and `id` are borrowed. The caller owns `*out_json` when
/// it is not NULL and frees it with `datasync_string_free`.
/// Threads: any thread, including observer callbacks.
#[no_mangle]
pub unsafe extern "C" fn datasync_entity_get(
    instance: *const datasync_instance,
    entity_name: *const c_char,
    id: *const c_char,
    out_json: *mut *mut c_char,
) -> datasync_code {
    boundary(|| {
        let repo = repo(instance, entity_name)?;
        let id = str_in(id, "id")?;
        need_out(out_json, "out_json")?;
        let found = repo.get(id)?;
        write_out(
            out_json,
            found.map_or(std::ptr::null_mut(), |e| string_out(e.json())),
        );
        Ok(())
    })
}

/// Deletes an entity: records a tombstone (even for an id unknown here, so the
/// delete reaches other tiers). Writes whether it existed to `*out_existed`.
///
/// Ownership: `entity_name` and `id` are borrowed. `out_existed` may be NULL.
/// Threads: any thread, including observer callbacks.
#[no_mangle]
pub unsafe extern "C" fn datasync_entity_delete(
    instance: *const datasync_instance,
    entity_name: *const c_char,
    id: *const c_char,
    out_existed: *mut bool,
) -> datasync_code {
    boundary(|| {
        let repo = repo(instance, entity_name)?;
        let id = str_in(id, "id")?;
        let existed = repo.delete(id)?;
        write_out(out_existed, existed);
        Ok(())
    })
}

/// Deletes the entities whose ids are in the JSON array `ids_json`, at once.
/// Writes how many existed to `*out_count`.
///
/// Ownership: `entity_name` and `ids_json` are borrowed. `out_count` may be NULL.
/// Threads: any thread, including observer callbacks.
#[no_mangle]
pub unsafe extern "C" fn datasync_entity_delete_many(
    instance: *const datasync_instance,
    entity_name: *const c_char,
    ids_json: *const c_char,
    out_count: *mut usize,
) -> datasync_code {
    boundary(|| {
        let repo = repo(instance, entity_name)?;
        let text = str_in(ids_json, "ids_json")?;
        let ids: Vec<String> = serde_json::from_str(text)
            .map_err(|e| Error::InvalidJson(format!("expected a JSON array of ids: {e}")))?;
        let count = repo.delete_many(&ids)?;
        write_out(out_count, count);
        Ok(())
    })
}

/// Runs a query and writes the matching entities, a JSON array, to `*out_json`.
/// `options_json` is `{"ids": [...], "where": {...}, "sort": ["field", "field:desc",
/// {"field": f, "order": "asc"}], "limit": n, "offset": n, "filter": <strategy filter>}`,
/// every member optional; `{}`, `null` or an empty string select everything.
///
/// Ownership: `entity_name` and `options_json` are borrowed. The caller owns
/// `*out_json` and frees it with `datasync_string_free`.
/// Threads: any thread, including observer callbacks.
#[no_mangle]
pub unsafe extern "C" fn datasync_entity_query(
    instance: *const datasync_instance,
    entity_name: *const c_char,
    options_json: *const c_char,
    out_json: *mut *mut c_char,
) -> datasync_code {
    boundary(|| {
        let repo = repo(instance, entity_name)?;
        let options = QueryOptions::from_json(str_in(options_json, "options_json")?)?;
        need_out(out_json, "out_json")?;
        let found = repo.query(&options)?;
        write_string(out_json, list_json(&found));
        Ok(())
    })
}

/// Runs the whole sync chain now (store, local, cloud, and changes back up) and
/// writes its statistics as JSON to `*out_stats_json`: `{"keys_compared", "keys_copied",
/// "keys_merged", "keys_skipped", "entities_changed", "conflicts", "bytes_written",
/// "offline", "errors"}`. An unreachable cloud shows as `"offline": true`, not as a failure.
///
/// Ownership: `out_stats_json` may be NULL; otherwise the caller owns it (free with
/// `datasync_string_free`).
/// Threads: any thread, including observer callbacks; never from inside a host
/// adapter callback (the sync worker would wait on itself: `DATASYNC_WOULD_DEADLOCK`).
#[no_mangle]
pub unsafe extern "C" fn datasync_instance_sync_now(
    instance: *const datasync_instance,
    out_stats_json: *mut *mut c_char,
) -> datasync_code {
    boundary(|| {
        let stats = self::instance(instance)?.sync_now()?;
        write_string(out_stats_json, to_json(&stats)?);
        Ok(())
    })
}

/// Returns once every write made before the call is durable in the tier below the
/// store.
///
/// Ownership: `instance` is borrowed.
/// Threads: any thread, including observer callbacks; never from inside a host
/// adapter callback (the sync worker would wait on itself: `DATASYNC_WOULD_DEADLOCK`).
#[no_mangle]
pub unsafe extern "C" fn datasync_instance_flush(
    instance: *const datasync_instance,
) -> datasync_code {
    boundary(|| Ok(self::instance(instance)?.flush()?))
}

/// Writes this instance's writes not yet durable locally, and those not yet in the
/// cloud, as JSON to `*out_json`: `{"local": [w...], "cloud": [w...]}`, each `w`
/// `{"name": entity name, "id": id, "key": partition key}`, oldest first. An entity
/// is listed once, by its latest write, under the first tier it has still to reach
/// (`local` is empty without a local tier, `cloud` without a cloud tier). Kept in
/// memory: writes made before the instance was opened are not listed.
///
/// Ownership: the caller owns `*out_json` (free with `datasync_string_free`).
/// Threads: any thread, including observer callbacks.
#[no_mangle]
pub unsafe extern "C" fn datasync_instance_pending_writes(
    instance: *const datasync_instance,
    out_json: *mut *mut c_char,
) -> datasync_code {
    boundary(|| {
        let ds = self::instance(instance)?;
        need_out(out_json, "out_json")?;
        let pending = ds.pending_writes()?;
        write_string(out_json, to_json(&pending)?);
        Ok(())
    })
}

/// Waits up to `timeout_ms` milliseconds until the latest write of entity `id` of
/// `entity_name` made before the call is in the cloud. Returns `DATASYNC_OK` when it
/// is (at once when nothing of it is pending) and `DATASYNC_TIMEOUT` when the time
/// ran out first. It only waits: syncs run on their interval or through
/// `datasync_instance_sync_now`. `DATASYNC_INVALID_CONFIG` without a cloud tier,
/// `DATASYNC_CLOSED` when the instance closes meanwhile.
///
/// Ownership: `entity_name` and `id` are borrowed.
/// Threads: any thread but the dispatcher (`DATASYNC_WOULD_DEADLOCK` from inside an
/// observer or adapter callback, which the syncs it waits for run behind).
#[no_mangle]
pub unsafe extern "C" fn datasync_instance_wait_in_cloud(
    instance: *const datasync_instance,
    entity_name: *const c_char,
    id: *const c_char,
    timeout_ms: u64,
) -> datasync_code {
    boundary(|| {
        let ds = self::instance(instance)?;
        let name = str_in(entity_name, "entity_name")?;
        let id = str_in(id, "id")?;
        match ds.wait_in_cloud(name, id, Duration::from_millis(timeout_ms))? {
            true => Ok(()),
            false => Err(Failure::Timeout(format!(
                "{name} {id:?} to reach the cloud"
            ))),
        }
    })
}

/// Waits up to `timeout_ms` milliseconds until every write made before the call is
/// in the cloud; as `datasync_instance_wait_in_cloud` otherwise.
///
/// Ownership: `instance` is borrowed.
/// Threads: any thread but the dispatcher (`DATASYNC_WOULD_DEADLOCK` from inside an
/// observer or adapter callback).
#[no_mangle]
pub unsafe extern "C" fn datasync_instance_wait_all_in_cloud(
    instance: *const datasync_instance,
    timeout_ms: u64,
) -> datasync_code {
    boundary(|| {
        let ds = self::instance(instance)?;
        match ds.wait_all_in_cloud(Duration::from_millis(timeout_ms))? {
            true => Ok(()),
            false => Err(Failure::Timeout("every write to reach the cloud".into())),
        }
    })
}

/// Blocks until observers have been called for every change made before the call.
/// Fails with `DATASYNC_WOULD_DEADLOCK` from inside an observer callback.
///
/// Ownership: `instance` is borrowed.
/// Threads: any thread but the dispatcher.
#[no_mangle]
pub unsafe extern "C" fn datasync_instance_drain_events(
    instance: *const datasync_instance,
) -> datasync_code {
    boundary(|| Ok(self::instance(instance)?.drain_events()?))
}

/// Writes the sync status as JSON to `*out_json`: `{"online": bool, "last_sync":
/// instant|null, "last_error": text|null, "pending_keys": n, "pending_cloud": n,
/// "failures": n, "closed": bool}` (`pending_cloud`: writes not yet in the cloud, see
/// `datasync_instance_pending_writes`). Works on a closed instance too.
///
/// Ownership: the caller owns `*out_json` (free with `datasync_string_free`).
/// Threads: any thread, including observer callbacks.
#[no_mangle]
pub unsafe extern "C" fn datasync_instance_status(
    instance: *const datasync_instance,
    out_json: *mut *mut c_char,
) -> datasync_code {
    boundary(|| {
        let ds = self::instance(instance)?;
        need_out(out_json, "out_json")?;
        write_string(out_json, to_json(&ds.status())?);
        Ok(())
    })
}

/// Recomputes every hash and count of every tier from its partitions and writes
/// the disagreements with the metadata, a JSON array of messages, to `*out_json`
/// (`[]` when the metadata is true).
///
/// Ownership: the caller owns `*out_json` (free with `datasync_string_free`).
/// Threads: any thread but the sync worker.
#[no_mangle]
pub unsafe extern "C" fn datasync_instance_audit(
    instance: *const datasync_instance,
    out_json: *mut *mut c_char,
) -> datasync_code {
    boundary(|| {
        let ds = self::instance(instance)?;
        need_out(out_json, "out_json")?;
        let problems = ds.audit()?;
        write_string(out_json, to_json(&problems)?);
        Ok(())
    })
}

/// Writes the partition keys that tier `tier` (`DATASYNC_TIER_STORE`, `_LOCAL` or
/// `_CLOUD`) holds according to its metadata, a sorted JSON array of strings, to
/// `*out_json`. A tier this instance does not have is `DATASYNC_INVALID_CONFIG`.
///
/// Ownership: the caller owns `*out_json` (free with `datasync_string_free`).
/// Threads: any thread, including observer callbacks.
#[no_mangle]
pub unsafe extern "C" fn datasync_instance_tier_keys(
    instance: *const datasync_instance,
    tier: u32,
    out_json: *mut *mut c_char,
) -> datasync_code {
    boundary(|| {
        let ds = self::instance(instance)?;
        let tier = tier_id(tier)?;
        need_out(out_json, "out_json")?;
        let keys = ds.tier_keys(tier)?;
        write_string(out_json, to_json(&keys)?);
        Ok(())
    })
}
