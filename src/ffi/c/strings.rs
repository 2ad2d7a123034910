//! Text across the boundary. In: borrowed NUL-terminated UTF-8, checked and copied
//! as needed. Out: caller-owned, NUL-terminated, freed by `datasync_string_free`.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;

use super::boundary::{boundary, Failure};

/// A required string argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn str_in<'a>(
    ptr: *const c_char,
    what: &'static str,
) -> Result<&'a str, Failure> {
    opt_str_in(ptr, what)?.ok_or(Failure::Null(what))
}

/// An optional string argument (NULL = none).
///
/// # Safety
/// As [`str_in`].
pub(crate) unsafe fn opt_str_in<'a>(
    ptr: *const c_char,
    what: &'static str,
) -> Result<Option<&'a str>, Failure> {
    if ptr.is_null() {
        return Ok(None);
    }
    CStr::from_ptr(ptr)
        .to_str()
        .map(Some)
        .map_err(|_| Failure::Utf8(what))
}

/// Borrowed bytes from a pointer and a length (NULL is fine when `len` is 0).
///
/// # Safety
/// `ptr` is NULL or valid for `len` bytes for `'a`.
pub(crate) unsafe fn bytes_in<'a>(
    ptr: *const u8,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::Null(what));
    }
    if len > isize::MAX as usize {
        return Err(Failure::Argument(format!(
            "{what}: length {len} is too large"
        )));
    }
    Ok(std::slice::from_raw_parts(ptr, len))
}

/// Text handed to the caller; freed by `datasync_string_free`.
pub(crate) fn string_out(text: impl Into<Vec<u8>>) -> *mut c_char {
    let mut bytes = text.into();
    // Interior NULs cannot occur in JSON or ids; escape them rather than truncate.
    if bytes.contains(&0) {
        bytes = String::from_utf8_lossy(&bytes)
            .replace('\0', "\\u0000")
            .into_bytes();
    }
    CString::new(bytes).unwrap_or_default().into_raw()
}

/// Checks an out-pointer and writes `value` through it.
///
/// # Safety
/// `out` is NULL or valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) {
    if !out.is_null() {
        out.write(value);
    }
}

/// Hands `text` to the caller through `out`, unless `out` is NULL (then nothing is
/// allocated).
///
/// # Safety
/// As [`write_out`].
pub(crate) unsafe fn write_string(out: *mut *mut c_char, text: impl Into<Vec<u8>>) {
    if !out.is_null() {
        out.write(string_out(text));
    }
}

/// Fails when a required out-pointer is NULL.
pub(crate) fn need_out<T>(out: *mut T, what: &'static str) -> Result<(), Failure> {
    if out.is_null() {
        Err(Failure::Null(what))
    } else {
        Ok(())
    }
}

/// Frees a string the library handed out. NULL is accepted and ignored.
///
/// Ownership: takes `text` back; it must come from a datasync function that says
/// the caller owns its result, and must not be used afterwards.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn datasync_string_free(text: *mut c_char) {
    boundary(|| {
        if !text.is_null() {
            drop(CString::from_raw(text));
        }
        Ok(())
    })
}

/// The library version, e.g. `"0.1.0"`.
///
/// Ownership: the string is static; never free it.
/// Threads: any thread.
#[no_mangle]
pub extern "C" fn datasync_version() -> *const c_char {
    boundary(|| Ok(concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()))
}
