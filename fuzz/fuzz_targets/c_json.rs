//! The C entry points that take JSON (and ids) as C strings, called with arbitrary
//! bytes on one instance opened through the C API with a memory local tier. Every
//! call returns a status; a failure is a caller-error status with a message (never
//! a caught panic or an internal error) and loses nothing: entities the input names
//! read back as before. A success gives well-formed output that reads back.
//!
//! Input: byte 0 picks the call, byte 1 the entity name, the rest (up to the first
//! NUL, as C would see it) is the text argument.
#![no_main]

use std::ffi::{c_char, CStr, CString};
use std::ptr;
use std::sync::OnceLock;

use ::datasync::ffi::c::boundary::datasync_error_message;
use ::datasync::ffi::c::config::{
    datasync_config, datasync_config_new, datasync_config_set_memory,
    datasync_config_set_store_sync_delay, datasync_config_set_sync_on_open, DATASYNC_TIER_LOCAL,
};
use ::datasync::ffi::c::instance::{
    datasync_entity_delete, datasync_entity_delete_many, datasync_entity_get,
    datasync_entity_query, datasync_entity_save, datasync_entity_save_many,
    datasync_instance as Handle, datasync_instance_audit, datasync_instance_flush,
    datasync_instance_open,
};
use ::datasync::ffi::c::status::datasync_code;
use ::datasync::ffi::c::strings::datasync_string_free;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use datasync_code::*;

/// The instance every input runs against (opening one per input would measure
/// thread start-up, not the JSON paths).
struct Instance(*mut Handle);

// The C API documents an instance as usable from any thread at the same time.
unsafe impl Send for Instance {}
unsafe impl Sync for Instance {}

fn instance() -> *const Handle {
    static INSTANCE: OnceLock<Instance> = OnceLock::new();
    INSTANCE
        .get_or_init(|| unsafe {
            let mut config: *mut datasync_config = ptr::null_mut();
            ok(datasync_config_new(c"fuzz".as_ptr(), &mut config));
            ok(datasync_config_set_memory(
                config,
                DATASYNC_TIER_LOCAL,
                ptr::null(),
            ));
            ok(datasync_config_set_sync_on_open(config, false));
            // No background sync: the store reaches local only through the flush
            // before each audit, so inputs replay the same way (and the audit does not
            // race the worker; see fuzz/artifacts/c_json/crash-audit-race.md).
            ok(datasync_config_set_store_sync_delay(config, 3_600_000));
            let mut handle: *mut Handle = ptr::null_mut();
            ok(datasync_instance_open(config, &mut handle));
            Instance(handle)
        })
        .0
}

fn ok(status: datasync_code) {
    assert_eq!(status, DATASYNC_OK, "{}", last_error());
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(datasync_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// Takes a string the library handed out, and frees it.
unsafe fn take(text: *mut c_char) -> Option<String> {
    if text.is_null() {
        return None;
    }
    let owned = CStr::from_ptr(text).to_str().map(str::to_owned);
    datasync_string_free(text);
    Some(owned.expect("the library hands out UTF-8"))
}

/// A failure must be the caller's fault, described in words.
fn assert_refused(status: datasync_code, call: &str) {
    assert!(
        !matches!(
            status,
            DATASYNC_PANIC | DATASYNC_INTERNAL | DATASYNC_CORRUPT
        ),
        "{call}: {status:?}: {}",
        last_error()
    );
    assert!(
        !last_error().is_empty(),
        "{call}: {status:?} without a message"
    );
}

fn get(name: &CStr, id: &str) -> Option<Value> {
    let id = CString::new(id).ok()?;
    let mut out = ptr::null_mut();
    let status = unsafe { datasync_entity_get(instance(), name.as_ptr(), id.as_ptr(), &mut out) };
    if status != DATASYNC_OK {
        // An id that does not parse, or names a partition this name cannot have.
        assert_refused(status, "get");
        return None;
    }
    unsafe { take(out) }.map(|json| serde_json::from_str(&json).expect("get gives JSON"))
}

/// The ids a JSON text names: its `id`, or those of the objects in its array.
fn named_ids(text: &str) -> Vec<String> {
    let id_of = |v: &Value| v.get("id").and_then(Value::as_str).map(str::to_owned);
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => items.iter().filter_map(id_of).take(16).collect(),
        Ok(v) => id_of(&v).into_iter().collect(),
        Err(_) => Vec::new(),
    }
}

fn audit() {
    ok(unsafe { datasync_instance_flush(instance()) });
    let mut out = ptr::null_mut();
    ok(unsafe { datasync_instance_audit(instance(), &mut out) });
    let problems = unsafe { take(out) }.expect("audit gives JSON");
    assert_eq!(problems, "[]", "metadata disagrees with the blobs");
}

fuzz_target!(|data: &[u8]| {
    let [call, name, rest @ ..] = data else {
        return;
    };
    let text_bytes = rest.split(|b| *b == 0).next().unwrap_or_default();
    let text = CString::new(text_bytes).expect("no NUL before the split");
    let utf8 = std::str::from_utf8(text_bytes).ok();
    let name: &CStr = match name % 5 {
        0 | 1 => c"User",
        2 => c"Post",
        3 => c"deleted",
        _ => c"",
    };
    let ds = instance();
    let before: Vec<(String, Option<Value>)> = utf8
        .map(named_ids)
        .unwrap_or_default()
        .into_iter()
        .map(|id| {
            let found = get(name, &id);
            (id, found)
        })
        .collect();
    let unchanged = |call: &str| {
        for (id, was) in &before {
            assert_eq!(&get(name, id), was, "{call} failed but changed {id:?}");
        }
    };
    unsafe {
        match call % 6 {
            0 => {
                let mut id = ptr::null_mut();
                let status = datasync_entity_save(ds, name.as_ptr(), text.as_ptr(), &mut id);
                if status == DATASYNC_OK {
                    let id = take(id).expect("save gives the id");
                    let saved = get(name, &id).expect("a saved entity reads back");
                    assert_eq!(saved["id"], Value::from(id.as_str()));
                    assert!(saved["version"].as_u64().is_some_and(|v| v >= 1));
                } else {
                    assert!(id.is_null(), "save failed but wrote an id");
                    assert_refused(status, "save");
                    unchanged("save");
                }
            }
            1 => {
                let mut ids = ptr::null_mut();
                let status = datasync_entity_save_many(ds, name.as_ptr(), text.as_ptr(), &mut ids);
                if status == DATASYNC_OK {
                    let ids: Vec<String> =
                        serde_json::from_str(&take(ids).expect("save_many gives ids"))
                            .expect("save_many gives a JSON array of ids");
                    let given = serde_json::from_str::<Value>(utf8.expect("saved text is UTF-8"))
                        .expect("saved text is JSON");
                    assert_eq!(Some(ids.len()), given.as_array().map(Vec::len));
                    for id in ids.iter().take(16) {
                        assert!(get(name, id).is_some(), "{id} was saved but is missing");
                    }
                } else {
                    assert_refused(status, "save_many");
                    unchanged("save_many");
                }
            }
            2 => {
                let mut out = ptr::null_mut();
                let status = datasync_entity_query(ds, name.as_ptr(), text.as_ptr(), &mut out);
                if status == DATASYNC_OK {
                    let found: Value = serde_json::from_str(&take(out).expect("query gives JSON"))
                        .expect("query gives JSON");
                    assert!(found.is_array(), "query gives an array");
                } else {
                    assert_refused(status, "query");
                }
            }
            3 => {
                let mut count = 0usize;
                let status = datasync_entity_delete_many(ds, name.as_ptr(), text.as_ptr(), &mut count);
                if status == DATASYNC_OK {
                    let ids: Vec<String> = serde_json::from_str(utf8.expect("UTF-8"))
                        .expect("deleted ids were a JSON array");
                    assert!(count <= ids.len());
                    for id in ids.iter().take(16) {
                        assert!(get(name, id).is_none(), "{id} was deleted but reads back");
                    }
                } else {
                    assert_refused(status, "delete_many");
                }
            }
            4 => {
                let mut out = ptr::null_mut();
                let status = datasync_entity_get(ds, name.as_ptr(), text.as_ptr(), &mut out);
                if status == DATASYNC_OK {
                    if let Some(json) = take(out) {
                        let found: Value = serde_json::from_str(&json).expect("get gives JSON");
                        assert_eq!(found["id"].as_str(), utf8, "get gives another id");
                    }
                } else {
                    assert_refused(status, "get");
                }
            }
            _ => {
                let mut existed = false;
                let status = datasync_entity_delete(ds, name.as_ptr(), text.as_ptr(), &mut existed);
                if status == DATASYNC_OK {
                    let id = utf8.expect("a deleted id is UTF-8");
                    assert!(get(name, id).is_none(), "{id} was deleted but reads back");
                } else {
                    assert_refused(status, "delete");
                }
            }
        }
    }
    if call % 64 == 63 {
        audit();
    }
});
