//! Direct calls for a binding's hot paths: `save`, `save_many`, `get` and `delete`
//! of one repository as plain C functions over bytes, for the Python and Kotlin
//! wrappers to call through ctypes and JNA's direct mapping.
//!
//! A generated UniFFI method costs several foreign calls (clone the object handle,
//! allocate the argument's buffer, the method, free the returned buffer), and those
//! dominate a small save: tens of microseconds against the core's few. A direct call
//! is one foreign call with a borrowed pointer and a caller-owned answer buffer.
//!
//! The protocol:
//! - [`Repository::direct_handle`] hands out a handle (a boxed clone of the core
//!   repository); the wrapper frees it once with `datasync_direct_release`.
//! - Each call returns [`DIRECT_OK`] with its answer in the caller's buffer (`out`,
//!   `cap` bytes; its length in `*out_len`), [`DIRECT_ERROR`], or
//!   [`DIRECT_WAITING`] when the answer did not fit: it then waits in a per-thread
//!   slot, `*out_len` bytes long, for `datasync_direct_take` (nothing is done twice).
//! - After [`DIRECT_ERROR`] the error waits in a per-thread slot;
//!   [`direct_error`] (a UniFFI function) raises it as the door's `DataSyncError`, so
//!   the wrapper's error handling is the generated one.
//! - A call refused for its arguments (no handle, a null pointer, bytes that are not
//!   UTF-8) does nothing.
//! - Bytes in are JSON text or ids (UTF-8, checked). JSON integers past 64 bits are
//!   refused: the core would read them as floats, and a binding's caller handed an
//!   exact integer.
//!
//! These symbols are not part of the C ABI (`include/datasync.h`): their handles
//! come from the UniFFI door.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::slice;

use serde_json::Value;

use super::error::DataSyncError;
use super::objects::Repository;
use crate::error::{Error, Result};

/// The call succeeded.
pub const DIRECT_OK: i32 = 0;
/// The call failed; [`direct_error`] raises why.
pub const DIRECT_ERROR: i32 = 1;
/// The call succeeded, but its answer (`*out_len` bytes) did not fit `cap`: it
/// waits for `datasync_direct_take`.
pub const DIRECT_WAITING: i32 = 2;
/// `get` found no entity with that id.
pub const DIRECT_ABSENT: i32 = 3;

thread_local! {
    static LAST: RefCell<Option<DataSyncError>> = const { RefCell::new(None) };
    static WAITING: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

#[uniffi::export]
impl Repository {
    /// A handle for the direct calls (`datasync_direct_*`) on this repository, to
    /// be released once with `datasync_direct_release`.
    pub fn direct_handle(&self) -> u64 {
        Box::into_raw(Box::new(self.core.clone())) as u64
    }
}

/// Raises the error the last failed direct call on this thread recorded (and
/// forgets it).
#[uniffi::export]
pub fn direct_error() -> std::result::Result<(), DataSyncError> {
    match LAST.with(|slot| slot.borrow_mut().take()) {
        Some(e) => Err(e),
        None => Err(DataSyncError::Internal {
            reason: "no direct call failed on this thread".into(),
        }),
    }
}

/// Runs `f`, turning an error or a panic into [`DIRECT_ERROR`] with the error kept
/// for [`direct_error`].
fn call(f: impl FnOnce() -> Result<i32>) -> i32 {
    let outcome = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(Error::Internal(format!("panicked: {what}")))
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            LAST.with(|slot| *slot.borrow_mut() = Some(e.into()));
            DIRECT_ERROR
        }
    }
}

/// The repository behind a handle.
///
/// # Safety
/// `handle` is 0 or came from [`Repository::direct_handle`] and is not released.
unsafe fn repo<'a>(handle: u64) -> Result<&'a crate::Repository> {
    (handle as *const crate::Repository)
        .as_ref()
        .ok_or_else(|| Error::Internal("a direct call without a handle".into()))
}

/// `len` bytes at `ptr` as UTF-8.
///
/// # Safety
/// `ptr` is null or valid for `len` bytes during the call.
unsafe fn text<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(Error::Internal(format!("a direct call without {what}")));
    }
    std::str::from_utf8(slice::from_raw_parts(ptr, len))
        .map_err(|e| Error::InvalidJson(format!("{what} is not UTF-8: {e}")))
}

/// Parses JSON text a binding handed over, refusing integers past 64 bits.
fn parse(json: &str) -> Result<Value> {
    if let Some(literal) = long_integer(json) {
        return Err(Error::InvalidJson(format!(
            "{literal} is outside the 64-bit range JSON numbers keep exactly here (pass it as a string)"
        )));
    }
    Ok(serde_json::from_str(json)?)
}

/// The first integer literal in `json` (outside strings) that neither `i64` nor
/// `u64` holds. Cheap: only runs of 19 digits or more are parsed.
fn long_integer(json: &str) -> Option<&str> {
    let b = json.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'0'..=b'9' => {
                let start = if i > 0 && b[i - 1] == b'-' { i - 1 } else { i };
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                let fraction = i < b.len() && matches!(b[i], b'.' | b'e' | b'E');
                let literal = &json[start..i];
                if !fraction
                    && i - start >= 19
                    && literal.parse::<i64>().is_err()
                    && literal.parse::<u64>().is_err()
                {
                    return Some(literal);
                }
                // The rest of a number (fraction, exponent) holds no integer literal.
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The caller's answer buffer: `out`, `cap` bytes, and where the answer's length goes.
struct Reply {
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
}

impl Reply {
    /// Refuses a buffer that cannot be written, before the call does anything.
    fn new(out: *mut u8, cap: usize, out_len: *mut usize) -> Result<Reply> {
        if out_len.is_null() || (out.is_null() && cap > 0) {
            return Err(Error::Internal(
                "a direct call without its answer buffer".into(),
            ));
        }
        Ok(Reply { out, cap, out_len })
    }

    /// Copies an answer into the buffer; one that does not fit waits in this
    /// thread's slot for [`datasync_direct_take`].
    ///
    /// # Safety
    /// The buffer is valid for `cap` bytes and `out_len` for one write.
    unsafe fn send(&self, bytes: &[u8]) -> Result<i32> {
        *self.out_len = bytes.len();
        if bytes.len() > self.cap {
            WAITING.with(|slot| *slot.borrow_mut() = Some(bytes.to_vec()));
            return Ok(DIRECT_WAITING);
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.out, bytes.len());
        Ok(DIRECT_OK)
    }
}

/// What save, save_many and get share: the repository, the answer buffer checked
/// and the input read as UTF-8 before `f` does anything.
///
/// # Safety
/// As [`datasync_direct_save`].
unsafe fn serve(
    handle: u64,
    input: *const u8,
    len: usize,
    what: &str,
    reply: Result<Reply>,
    f: impl FnOnce(&crate::Repository, &str, &Reply) -> Result<i32>,
) -> i32 {
    call(|| {
        let repo = repo(handle)?;
        let reply = reply?;
        f(repo, text(input, len, what)?, &reply)
    })
}

/// Copies the answer waiting after [`DIRECT_WAITING`] into `out` (`cap` bytes, at
/// least the `*out_len` that call gave) and forgets it.
///
/// # Safety
/// `out` valid for `cap` bytes and `out_len` for one write.
#[no_mangle]
pub unsafe extern "C" fn datasync_direct_take(
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> i32 {
    call(|| {
        let reply = Reply::new(out, cap, out_len)?;
        let bytes = WAITING
            .with(|slot| slot.borrow_mut().take())
            .ok_or_else(|| Error::Internal("no direct answer waits on this thread".into()))?;
        if bytes.len() > cap {
            let needed = bytes.len();
            WAITING.with(|slot| *slot.borrow_mut() = Some(bytes));
            return Err(Error::Internal(format!(
                "the waiting answer takes {needed} bytes, not {cap}"
            )));
        }
        reply.send(&bytes)
    })
}

/// Saves the entity in `json` (`len` bytes of UTF-8 JSON text) and answers its id.
///
/// # Safety
/// `handle` from `direct_handle`, not released; `json` valid for `len` bytes, `out`
/// for `cap` bytes and `out_len` for one write, during the call.
#[no_mangle]
pub unsafe extern "C" fn datasync_direct_save(
    handle: u64,
    json: *const u8,
    len: usize,
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> i32 {
    let reply = Reply::new(out, cap, out_len);
    serve(
        handle,
        json,
        len,
        "the entity",
        reply,
        |repo, json, reply| {
            let id = repo.save(&parse(json)?)?;
            reply.send(id.as_bytes())
        },
    )
}

/// Saves the JSON array of entities in `json` at once (all or none) and answers
/// the JSON array of their ids.
///
/// # Safety
/// As [`datasync_direct_save`].
#[no_mangle]
pub unsafe extern "C" fn datasync_direct_save_many(
    handle: u64,
    json: *const u8,
    len: usize,
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> i32 {
    let reply = Reply::new(out, cap, out_len);
    serve(
        handle,
        json,
        len,
        "the entities",
        reply,
        |repo, json, reply| {
            let Value::Array(entities) = parse(json)? else {
                return Err(Error::InvalidJson(
                    "expected a JSON array of entities".into(),
                ));
            };
            let ids = repo.save_many(&entities)?;
            reply.send(Value::from(ids).to_string().as_bytes())
        },
    )
}

/// Answers the entity with id `id` (`len` bytes of UTF-8) as JSON text, or
/// [`DIRECT_ABSENT`] when there is none.
///
/// # Safety
/// As [`datasync_direct_save`].
#[no_mangle]
pub unsafe extern "C" fn datasync_direct_get(
    handle: u64,
    id: *const u8,
    len: usize,
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> i32 {
    let reply = Reply::new(out, cap, out_len);
    serve(
        handle,
        id,
        len,
        "the id",
        reply,
        |repo, id, reply| match repo.get(id)? {
            Some(entity) => reply.send(entity.json().as_bytes()),
            None => Ok(DIRECT_ABSENT),
        },
    )
}

/// Deletes the entity with id `id` (`len` bytes of UTF-8); writes 1 to `*existed`
/// when it existed, else 0.
///
/// # Safety
/// As [`datasync_direct_save`]; `existed` valid for one write.
#[no_mangle]
pub unsafe extern "C" fn datasync_direct_delete(
    handle: u64,
    id: *const u8,
    len: usize,
    existed: *mut u8,
) -> i32 {
    call(|| {
        let repo = repo(handle)?;
        let id = text(id, len, "the id")?;
        if existed.is_null() {
            return Err(Error::Internal("a direct call without its answer".into()));
        }
        *existed = u8::from(repo.delete(id)?);
        Ok(DIRECT_OK)
    })
}

/// Releases a handle from `direct_handle`; 0 is ignored.
///
/// # Safety
/// `handle` is 0 or from `direct_handle`, released at most once.
#[no_mangle]
pub unsafe extern "C" fn datasync_direct_release(handle: u64) {
    if handle != 0 {
        drop(Box::from_raw(handle as *mut crate::Repository));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> (crate::DataSync, u64) {
        let ds = crate::DataSync::open(crate::Config::new("t")).unwrap();
        let repo = ds.repo("Note").unwrap();
        (ds, Box::into_raw(Box::new(repo)) as u64)
    }

    fn error() -> DataSyncError {
        direct_error().unwrap_err()
    }

    #[test]
    fn bad_pointers_and_bytes_are_errors_not_crashes() {
        let (ds, h) = handle();
        let mut out = [0u8; 64];
        let mut len = 0usize;
        let json = br#"{"n":1}"#;
        unsafe {
            let code =
                datasync_direct_save(0, json.as_ptr(), json.len(), out.as_mut_ptr(), 64, &mut len);
            assert_eq!(code, DIRECT_ERROR);
            assert!(matches!(error(), DataSyncError::Internal { .. }));
            let code = datasync_direct_save(h, std::ptr::null(), 3, out.as_mut_ptr(), 64, &mut len);
            assert_eq!(code, DIRECT_ERROR);
            assert!(matches!(error(), DataSyncError::Internal { .. }));
            let bad = b"{\"n\":\"\xff\"}";
            let code =
                datasync_direct_save(h, bad.as_ptr(), bad.len(), out.as_mut_ptr(), 64, &mut len);
            assert_eq!(code, DIRECT_ERROR);
            assert!(matches!(error(), DataSyncError::InvalidJson { .. }));
            let code = datasync_direct_save(
                h,
                json.as_ptr(),
                json.len(),
                out.as_mut_ptr(),
                64,
                std::ptr::null_mut(),
            );
            assert_eq!(code, DIRECT_ERROR);
            assert!(matches!(error(), DataSyncError::Internal { .. }));
            let id = b"Note";
            let mut existed = 7u8;
            let code = datasync_direct_delete(h, id.as_ptr(), id.len(), &mut existed);
            assert_eq!(code, DIRECT_ERROR);
            assert!(matches!(error(), DataSyncError::InvalidId { .. }));
            assert_eq!(existed, 7, "nothing written on failure");
            let code = datasync_direct_take(out.as_mut_ptr(), 64, &mut len);
            assert_eq!(code, DIRECT_ERROR, "no answer waits");
            let big = br#"{"n":123456789012345678901234567890}"#;
            let code =
                datasync_direct_save(h, big.as_ptr(), big.len(), out.as_mut_ptr(), 64, &mut len);
            assert_eq!(code, DIRECT_ERROR);
            assert!(
                matches!(error(), DataSyncError::InvalidJson { reason } if reason.contains("64-bit"))
            );
            assert!(
                matches!(direct_error(), Err(DataSyncError::Internal { .. })),
                "an error is raised once"
            );
            datasync_direct_release(h);
            datasync_direct_release(0);
        }
        assert!(ds
            .repo("Note")
            .unwrap()
            .query(&Default::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn an_answer_too_long_for_the_buffer_waits_for_take() {
        let (_ds, h) = handle();
        let body = "x".repeat(500);
        let json = format!(r#"{{"body":"{body}"}}"#);
        let (mut out, mut len) = ([0u8; 2048], 0usize);
        unsafe {
            let code = datasync_direct_save(
                h,
                json.as_ptr(),
                json.len(),
                out.as_mut_ptr(),
                2048,
                &mut len,
            );
            assert_eq!(code, DIRECT_OK);
            let id = std::str::from_utf8(&out[..len]).unwrap().to_string();
            let mut small = [0u8; 16];
            let code =
                datasync_direct_get(h, id.as_ptr(), id.len(), small.as_mut_ptr(), 16, &mut len);
            assert_eq!(code, DIRECT_WAITING);
            let needed = len;
            assert!(needed > 500);
            let code = datasync_direct_take(small.as_mut_ptr(), 16, &mut len);
            assert_eq!(code, DIRECT_ERROR, "a buffer still too small");
            let _ = direct_error();
            let mut whole = vec![0u8; needed];
            let code = datasync_direct_take(whole.as_mut_ptr(), needed, &mut len);
            assert_eq!(code, DIRECT_OK);
            let got: Value = serde_json::from_slice(&whole[..len]).unwrap();
            assert_eq!(got["body"], Value::from(body));
            let absent = b"Note.nothere";
            let code = datasync_direct_get(
                h,
                absent.as_ptr(),
                absent.len(),
                out.as_mut_ptr(),
                2048,
                &mut len,
            );
            assert_eq!(code, DIRECT_ABSENT);
            datasync_direct_release(h);
        }
    }

    #[test]
    fn integers_past_64_bits_are_found_outside_strings() {
        assert_eq!(
            long_integer(r#"{"a":18446744073709551616}"#),
            Some("18446744073709551616")
        );
        assert_eq!(
            long_integer(r#"{"a":-9223372036854775809}"#),
            Some("-9223372036854775809")
        );
        assert_eq!(
            long_integer(r#"[18446744073709551615,-9223372036854775808]"#),
            None
        );
        assert_eq!(
            long_integer(r#"{"a":"123456789012345678901234567890"}"#),
            None
        );
        assert_eq!(
            long_integer(r#"{"a\"":"x\\","b":1.0e123456789012345678901}"#),
            None
        );
        assert_eq!(long_integer(r#"{"a":123456789012345678901.5}"#), None);
        assert_eq!(long_integer(r#"[1,2,3]"#), None);
    }
}
