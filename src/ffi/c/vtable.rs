//! Host-supplied behaviour through vtables: persistence (a tier), key strategy and
//! conflict resolver. Each vtable is copied when handed over and owned by the
//! library from then on; its `destroy` runs exactly once, when the library drops
//! it, also when the call it was given to fails.

use std::ffi::CString;
use std::os::raw::{c_char, c_void};
use std::ptr::NonNull;

use serde_json::{Map, Value};

use super::boundary::Failure;
use super::sink::datasync_bytes_sink;
use crate::clock::format_millis;
use crate::error::{Error, Result};
use crate::ffi::shared::{active_answer, conflict_id, deleted_answer, resolved_or_last_writer};
use crate::lock::{Level, Mutex};
use crate::partition::Slot;
use crate::persistence::{AdapterError, AdapterResult, Persistence};
use crate::strategy::{Candidates, KeyStrategy};
use crate::sync::ConflictResolver;

/// `destroy(userdata)`: releases the host's state. Called exactly once.
#[allow(non_camel_case_types)]
pub type datasync_destroy_fn = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

/// A tier's storage, supplied by the host: one byte string per key.
///
/// Every callback gets `userdata` first and returns 0 on success, anything else on
/// failure (reported as `DATASYNC_ADAPTER`; for the cloud tier it means offline).
/// Keys are NUL-terminated UTF-8. The library serialises calls to one vtable (never
/// two at once), possibly from different threads, and never calls it while holding
/// another lock of its own that a callback could wait on. Callbacks must not call
/// back into the library (except `datasync_bytes_sink_*`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct datasync_persistence_vtable {
    /// Passed to every callback; the library never looks at it.
    pub userdata: *mut c_void,
    /// Required. Writes the bytes stored under `key` to `sink` with
    /// `datasync_bytes_sink_write`; writes nothing when `key` is absent (not an error).
    pub load: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            key: *const c_char,
            sink: *mut datasync_bytes_sink,
        ) -> i32,
    >,
    /// Required. Replaces the bytes under `key` with `len` bytes at `bytes`, valid
    /// only during the call.
    pub store: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            key: *const c_char,
            bytes: *const u8,
            len: usize,
        ) -> i32,
    >,
    /// Required. Removes `key`; removing an absent key is not an error.
    pub clear: Option<unsafe extern "C" fn(userdata: *mut c_void, key: *const c_char) -> i32>,
    /// Optional (NULL if the host cannot list keys). Writes every stored key to `sink`,
    /// one `datasync_bytes_sink_write` per key. Used to rebuild damaged metadata.
    pub keys:
        Option<unsafe extern "C" fn(userdata: *mut c_void, sink: *mut datasync_bytes_sink) -> i32>,
    /// Optional. Called exactly once when the library no longer needs the vtable.
    pub destroy: datasync_destroy_fn,
    /// Optional (NULL when the medium cannot do it): the conditional write. Stores
    /// `len` bytes at `bytes` under `key` only if the key holds exactly the
    /// `expected_len` bytes at `expected` now, or, when `expected` is NULL, only if
    /// the key is absent, as one atomic step against every other writer; sets
    /// `*stored` to 1 when it stored and 0 when the key held something else (then
    /// nothing is written), and returns 0. A tier shared by several devices should
    /// offer it: without it the library reads the key just before writing it, and
    /// two devices syncing at the same moment can overwrite each other's update
    /// until a later sync repairs it. Zero-initialise the vtable (or use designated
    /// initialisers) so that a host that does not set it leaves it NULL.
    pub store_if: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            key: *const c_char,
            expected: *const u8,
            expected_len: usize,
            bytes: *const u8,
            len: usize,
            stored: *mut i32,
        ) -> i32,
    >,
}

/// Calls `destroy` once when dropped.
struct Owned {
    userdata: *mut c_void,
    destroy: datasync_destroy_fn,
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(destroy) = self.destroy.take() {
            // SAFETY: the host gave us this function and userdata, to be called once.
            unsafe { destroy(self.userdata) }
        }
    }
}

fn key_text(key: &str) -> AdapterResult<CString> {
    CString::new(key).map_err(|_| AdapterError::new(format!("key {key:?} contains a NUL byte")))
}

fn host_failed(op: &str, code: i32) -> AdapterError {
    AdapterError::new(format!("host {op} callback returned {code}"))
}

/// A [`Persistence`] backed by a host vtable.
pub(crate) struct HostPersistence {
    vt: datasync_persistence_vtable,
    _owned: Owned,
}

// SAFETY: the host contract (datasync_persistence_vtable's documentation) is that
// its callbacks may be called from any thread, one at a time. `Persistence` takes
// `&mut self`, so Rust guarantees calls through this value never overlap.
unsafe impl Send for HostPersistence {}

impl HostPersistence {
    /// Takes ownership of a host vtable: from here on `destroy` runs exactly once.
    /// Fails (after destroying it) when a required callback is missing.
    ///
    /// # Safety
    /// `vt` is NULL or points to a readable vtable.
    pub(crate) unsafe fn take(
        vt: *const datasync_persistence_vtable,
    ) -> std::result::Result<HostPersistence, Failure> {
        let vt = *vt.as_ref().ok_or(Failure::Null("vtable"))?;
        let owned = HostPersistence {
            vt,
            _owned: Owned {
                userdata: vt.userdata,
                destroy: vt.destroy,
            },
        };
        if vt.load.is_none() || vt.store.is_none() || vt.clear.is_none() {
            return Err(Failure::Argument(
                "a persistence vtable needs load, store and clear".into(),
            ));
        }
        Ok(owned)
    }
}

impl Persistence for HostPersistence {
    fn load(&mut self, key: &str) -> AdapterResult<Option<Vec<u8>>> {
        let key = key_text(key)?;
        let mut sink = datasync_bytes_sink::value();
        let load = self
            .vt
            .load
            .ok_or_else(|| AdapterError::new("no load callback"))?;
        // SAFETY: the host's contract; `key` and `sink` outlive the call.
        let code = unsafe { load(self.vt.userdata, key.as_ptr(), &mut sink) };
        if code != 0 {
            return Err(host_failed("load", code));
        }
        Ok(sink.into_value())
    }

    fn store(&mut self, key: &str, bytes: &[u8]) -> AdapterResult<()> {
        let key = key_text(key)?;
        let store = self
            .vt
            .store
            .ok_or_else(|| AdapterError::new("no store callback"))?;
        // SAFETY: as above; `bytes` outlives the call.
        let code = unsafe { store(self.vt.userdata, key.as_ptr(), bytes.as_ptr(), bytes.len()) };
        if code != 0 {
            return Err(host_failed("store", code));
        }
        Ok(())
    }

    fn clear(&mut self, key: &str) -> AdapterResult<()> {
        let key = key_text(key)?;
        let clear = self
            .vt
            .clear
            .ok_or_else(|| AdapterError::new("no clear callback"))?;
        // SAFETY: as above.
        let code = unsafe { clear(self.vt.userdata, key.as_ptr()) };
        if code != 0 {
            return Err(host_failed("clear", code));
        }
        Ok(())
    }

    fn store_if(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        bytes: &[u8],
    ) -> AdapterResult<Option<bool>> {
        let Some(store_if) = self.vt.store_if else {
            return Ok(None);
        };
        let key = key_text(key)?;
        // An empty expected value still needs a non-NULL pointer: NULL means absent.
        let (expected_ptr, expected_len) = match expected {
            Some([]) => (NonNull::<u8>::dangling().as_ptr() as *const u8, 0),
            Some(e) => (e.as_ptr(), e.len()),
            None => (std::ptr::null(), 0),
        };
        let mut stored: i32 = -1;
        // SAFETY: as above; `expected`, `bytes` and `stored` outlive the call.
        let code = unsafe {
            store_if(
                self.vt.userdata,
                key.as_ptr(),
                expected_ptr,
                expected_len,
                bytes.as_ptr(),
                bytes.len(),
                &mut stored,
            )
        };
        if code != 0 {
            return Err(host_failed("store_if", code));
        }
        match stored {
            0 => Ok(Some(false)),
            1 => Ok(Some(true)),
            other => Err(AdapterError::new(format!(
                "the store_if callback set stored to {other} (0 or 1 expected)"
            ))),
        }
    }

    fn keys(&mut self) -> AdapterResult<Option<Vec<String>>> {
        let Some(keys) = self.vt.keys else {
            return Ok(None);
        };
        let mut sink = datasync_bytes_sink::items();
        // SAFETY: as above.
        let code = unsafe { keys(self.vt.userdata, &mut sink) };
        if code != 0 {
            return Err(host_failed("keys", code));
        }
        let items = sink.into_items();
        let keys = items
            .into_iter()
            .map(|k| {
                String::from_utf8(k).map_err(|_| {
                    AdapterError::new("the keys callback wrote a key that is not UTF-8")
                })
            })
            .collect::<AdapterResult<Vec<_>>>()?;
        Ok(Some(keys))
    }
}

/// A key strategy supplied by the host (DESIGN.md §2): which partition an entity
/// goes to, and which partitions a query reads.
///
/// Callbacks return 0 on success; anything else fails the operation with
/// `DATASYNC_CALLBACK`. The library serialises calls to one strategy (never two at
/// once), possibly from different threads. Callbacks must not call back into the
/// library (except `datasync_bytes_sink_*`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct datasync_strategy_vtable {
    /// Passed to every callback.
    pub userdata: *mut c_void,
    /// The separator of ids and keys, a Unicode scalar value; 0 means `'.'`. Any
    /// other number that is no scalar value (a surrogate such as 0xD800, or above
    /// 0x10FFFF) is refused with `DATASYNC_INVALID_ARGUMENT`.
    pub separator: u32,
    /// Length of the random part of new ids (8 to 64); 0 means 16.
    pub id_length: u32,
    /// Required. Writes the logical key (the partition, without prefix) of an entity
    /// about to be saved to `out_key`. The entity is `entity_len` bytes of JSON at
    /// `entity_json` (also NUL-terminated), with `createdAt` already set. Must be
    /// pure: the same entity always gives the same key.
    pub logical_key: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            entity_name: *const c_char,
            entity_json: *const c_char,
            entity_len: usize,
            out_key: *mut datasync_bytes_sink,
        ) -> i32,
    >,
    /// Required. Writes the partitions a query over `entity_name` reads to `out`, as
    /// JSON: `{"keys": ["<prefix><sep><logical>", ...]}` for exactly these keys, or
    /// `{"prefix": "<text>"}` for every known key starting with the text. `filter_json`
    /// is the query's `filter` (the text `null` when there is none), NUL-terminated.
    /// Return only keys the caller may read: this is the authorisation hook.
    pub candidate_keys: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            prefix: *const c_char,
            entity_name: *const c_char,
            filter_json: *const c_char,
            filter_len: usize,
            out: *mut datasync_bytes_sink,
        ) -> i32,
    >,
    /// Optional. Called exactly once when the library no longer needs the vtable.
    pub destroy: datasync_destroy_fn,
}

/// A [`KeyStrategy`] backed by a host vtable.
pub(crate) struct HostStrategy {
    vt: datasync_strategy_vtable,
    separator: char,
    id_length: usize,
    /// Serialises calls: the host need not be thread-safe.
    calls: Mutex<()>,
    _owned: Owned,
}

// SAFETY: every callback runs under `calls`, so the host sees one call at a time;
// the host contract allows calls from any thread.
unsafe impl Send for HostStrategy {}
// SAFETY: as above.
unsafe impl Sync for HostStrategy {}

fn cstring(text: &str, what: &str) -> Result<CString> {
    CString::new(text).map_err(|_| Error::Callback(format!("{what} contains a NUL byte")))
}

impl HostStrategy {
    /// Takes ownership of a host strategy vtable (see [`HostPersistence::take`]).
    ///
    /// # Safety
    /// `vt` is NULL or points to a readable vtable.
    pub(crate) unsafe fn take(
        vt: *const datasync_strategy_vtable,
    ) -> std::result::Result<HostStrategy, Failure> {
        let vt = *vt.as_ref().ok_or(Failure::Null("vtable"))?;
        let owned = Owned {
            userdata: vt.userdata,
            destroy: vt.destroy,
        };
        // `owned` destroys the vtable if this returns early.
        // 0 leaves the core's defaults (those of the built-in strategies).
        let defaults = crate::strategy::GlobalStrategy;
        let separator = match vt.separator {
            0 => defaults.separator(),
            n => char::from_u32(n).ok_or_else(|| {
                Failure::Argument(format!("separator {n:#x} is not a Unicode scalar value"))
            })?,
        };
        let strategy = HostStrategy {
            vt,
            separator,
            id_length: if vt.id_length == 0 {
                defaults.id_length()
            } else {
                vt.id_length as usize
            },
            calls: Mutex::ordered(Level::AdapterInner, ()),
            _owned: owned,
        };
        if vt.logical_key.is_none() || vt.candidate_keys.is_none() {
            return Err(Failure::Argument(
                "a strategy vtable needs logical_key and candidate_keys".into(),
            ));
        }
        Ok(strategy)
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidatesJson {
    keys: Option<Vec<String>>,
    prefix: Option<String>,
}

impl KeyStrategy for HostStrategy {
    fn separator(&self) -> char {
        self.separator
    }

    fn id_length(&self) -> usize {
        self.id_length
    }

    fn logical_key(&self, entity_name: &str, entity: &Map<String, Value>) -> Result<String> {
        let name = cstring(entity_name, "the entity name")?;
        let json = serde_json::to_string(entity)?;
        let len = json.len();
        let json = cstring(&json, "the entity")?;
        let mut sink = datasync_bytes_sink::value();
        let f = self
            .vt
            .logical_key
            .ok_or_else(|| Error::Callback("no logical_key callback".into()))?;
        let code = {
            let _one_at_a_time = self.calls.lock();
            // SAFETY: the host's contract; every pointer outlives the call.
            unsafe {
                f(
                    self.vt.userdata,
                    name.as_ptr(),
                    json.as_ptr(),
                    len,
                    &mut sink,
                )
            }
        };
        if code != 0 {
            return Err(Error::Callback(format!(
                "host logical_key callback returned {code}"
            )));
        }
        sink.into_text("logical_key").map_err(Error::Callback)
    }

    fn candidate_keys(
        &self,
        prefix: &str,
        entity_name: &str,
        filter: Option<&Value>,
    ) -> Result<Candidates> {
        let prefix_c = cstring(prefix, "the prefix")?;
        let name = cstring(entity_name, "the entity name")?;
        let filter = serde_json::to_string(filter.unwrap_or(&Value::Null))?;
        let len = filter.len();
        let filter = cstring(&filter, "the filter")?;
        let mut sink = datasync_bytes_sink::value();
        let f = self
            .vt
            .candidate_keys
            .ok_or_else(|| Error::Callback("no candidate_keys callback".into()))?;
        let code = {
            let _one_at_a_time = self.calls.lock();
            // SAFETY: the host's contract; every pointer outlives the call.
            unsafe {
                f(
                    self.vt.userdata,
                    prefix_c.as_ptr(),
                    name.as_ptr(),
                    filter.as_ptr(),
                    len,
                    &mut sink,
                )
            }
        };
        if code != 0 {
            return Err(Error::Callback(format!(
                "host candidate_keys callback returned {code}"
            )));
        }
        let text = sink.into_text("candidate_keys").map_err(Error::Callback)?;
        let parsed: CandidatesJson = serde_json::from_str(&text)
            .map_err(|e| Error::Callback(format!("candidate_keys wrote {text:?}, not {{\"keys\":[...]}} or {{\"prefix\":\"...\"}}: {e}")))?;
        match parsed {
            CandidatesJson {
                keys: Some(keys),
                prefix: None,
            } => Ok(Candidates::Keys(keys)),
            CandidatesJson {
                keys: None,
                prefix: Some(p),
            } => Ok(Candidates::Prefix(p)),
            _ => Err(Error::Callback(format!(
                "candidate_keys wrote {text:?}: give exactly one of \"keys\" and \"prefix\""
            ))),
        }
    }
}

/// A conflict resolver supplied by the host (DESIGN.md §5): picks or merges two
/// different versions of one entity during sync.
///
/// Versions are JSON: `{"state":"active","entity":{...}}` or
/// `{"state":"deleted","deletedAt":"<instant>"}`. The callback must be deterministic
/// and symmetric (the same winner for (a, b) and (b, a)), or tiers diverge. When it
/// fails (non-zero) or writes something that is not a version of this entity, the
/// default rule (last writer wins, deletes win ties) decides and an error is logged.
/// Calls are serialised and may come from any thread; callbacks must not call back
/// into the library (except `datasync_bytes_sink_*`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct datasync_resolver_vtable {
    /// Passed to every callback.
    pub userdata: *mut c_void,
    /// Required. Writes the winning (or merged) version to `out`. `a_json` and
    /// `b_json` are `a_len` and `b_len` bytes (also NUL-terminated), valid during the call.
    pub resolve: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            entity_name: *const c_char,
            a_json: *const c_char,
            a_len: usize,
            b_json: *const c_char,
            b_len: usize,
            out: *mut datasync_bytes_sink,
        ) -> i32,
    >,
    /// Optional. Called exactly once when the library no longer needs the vtable.
    pub destroy: datasync_destroy_fn,
}

/// A [`ConflictResolver`] backed by a host vtable.
pub(crate) struct HostResolver {
    vt: datasync_resolver_vtable,
    calls: Mutex<()>,
    _owned: Owned,
}

// SAFETY: calls are serialised by `calls`; the host contract allows any thread.
unsafe impl Send for HostResolver {}
// SAFETY: as above.
unsafe impl Sync for HostResolver {}

impl HostResolver {
    /// Takes ownership of a host resolver vtable (see [`HostPersistence::take`]).
    ///
    /// # Safety
    /// `vt` is NULL or points to a readable vtable.
    pub(crate) unsafe fn take(
        vt: *const datasync_resolver_vtable,
    ) -> std::result::Result<HostResolver, Failure> {
        let vt = *vt.as_ref().ok_or(Failure::Null("vtable"))?;
        let resolver = HostResolver {
            vt,
            calls: Mutex::ordered(Level::AdapterInner, ()),
            _owned: Owned {
                userdata: vt.userdata,
                destroy: vt.destroy,
            },
        };
        if vt.resolve.is_none() {
            return Err(Failure::Argument("a resolver vtable needs resolve".into()));
        }
        Ok(resolver)
    }

    fn call(&self, entity_name: &str, a: &Slot, b: &Slot) -> std::result::Result<Slot, String> {
        let name = CString::new(entity_name).map_err(|_| "entity name contains NUL".to_string())?;
        let (a_text, b_text) = (slot_json(a), slot_json(b));
        let (a_len, b_len) = (a_text.len(), b_text.len());
        let a_c = CString::new(a_text).map_err(|_| "version contains NUL".to_string())?;
        let b_c = CString::new(b_text).map_err(|_| "version contains NUL".to_string())?;
        let mut sink = datasync_bytes_sink::value();
        let f = self.vt.resolve.ok_or("no resolve callback")?;
        let code = {
            let _one_at_a_time = self.calls.lock();
            // SAFETY: the host's contract; every pointer outlives the call.
            unsafe {
                f(
                    self.vt.userdata,
                    name.as_ptr(),
                    a_c.as_ptr(),
                    a_len,
                    b_c.as_ptr(),
                    b_len,
                    &mut sink,
                )
            }
        };
        if code != 0 {
            return Err(format!("host resolve callback returned {code}"));
        }
        let text = sink.into_text("resolve")?;
        parse_slot(entity_name, conflict_id(a, b).as_deref(), &text)
    }
}

/// A slot as the resolver sees it.
pub(crate) fn slot_json(slot: &Slot) -> String {
    match slot {
        Slot::Active(e) => format!(r#"{{"entity":{},"state":"active"}}"#, e.json()),
        Slot::Deleted(at) => format!(
            r#"{{"deletedAt":"{}","state":"deleted"}}"#,
            format_millis(*at)
        ),
    }
}

/// Reads a slot written by a resolver; an active one must keep the entity's `id`
/// (`None` when both sides are deleted, so no active answer is usable).
pub(crate) fn parse_slot(
    entity_name: &str,
    id: Option<&str>,
    text: &str,
) -> std::result::Result<Slot, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("resolve wrote invalid JSON: {e}"))?;
    match (value.get("state").and_then(Value::as_str), value.get("entity"), value.get("deletedAt")) {
        (Some("active"), Some(entity), None) => active_answer(entity_name, id, entity.clone()),
        (Some("deleted"), None, Some(Value::String(at))) => deleted_answer(at),
        _ => Err(format!("resolve wrote {text:?}, not {{\"state\":\"active\",\"entity\":...}} or {{\"state\":\"deleted\",\"deletedAt\":...}}")),
    }
}

impl ConflictResolver for HostResolver {
    fn resolve(&self, entity_name: &str, a: &Slot, b: &Slot) -> Slot {
        resolved_or_last_writer(entity_name, a, b, self.call(entity_name, a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_through_resolver_json() {
        let text = r#"{"state":"active","entity":{"id":"U.abc","updatedAt":"2026-01-01T00:00:00.000Z","version":2,"n":1}}"#;
        let slot = parse_slot("User", Some("U.abc"), text).unwrap();
        assert_eq!(slot.entity().unwrap().version(), 2);
        assert_eq!(
            parse_slot("User", Some("U.abc"), &slot_json(&slot)).unwrap(),
            slot
        );
        let deleted = parse_slot(
            "User",
            Some("U.abc"),
            r#"{"state":"deleted","deletedAt":"2026-01-01T00:00:00.000Z"}"#,
        )
        .unwrap();
        assert!(matches!(deleted, Slot::Deleted(_)));
        assert!(
            parse_slot("User", Some("U.other"), text).is_err(),
            "the id must be kept"
        );
        assert!(parse_slot("User", Some("U.abc"), r#"{"state":"gone"}"#).is_err());
    }
}
