//! The one way into the library from C: [`boundary`] runs an export's body, catches
//! any panic, maps errors to a status and records the per-thread error message.
//! Every `extern "C" fn` in this module tree goes through it (a test checks).

use std::any::Any;
use std::cell::RefCell;
use std::ffi::CString;
use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::status::datasync_code;
use crate::error::Error;

/// Why an export failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The core said no.
    Core(Error),
    /// A required pointer was NULL; names the argument.
    Null(&'static str),
    /// A string argument was not UTF-8; names the argument.
    Utf8(&'static str),
    /// Any other bad argument.
    Argument(String),
    /// A wait ran out of time; says what was waited for.
    Timeout(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Core(e)
    }
}

impl Failure {
    fn status(&self) -> datasync_code {
        match self {
            Failure::Core(e) => datasync_code::of_kind(e.kind()),
            Failure::Null(_) => datasync_code::DATASYNC_NULL_ARGUMENT,
            Failure::Utf8(_) => datasync_code::DATASYNC_INVALID_UTF8,
            Failure::Argument(_) => datasync_code::DATASYNC_INVALID_ARGUMENT,
            Failure::Timeout(_) => datasync_code::DATASYNC_TIMEOUT,
        }
    }

    fn message(&self) -> String {
        match self {
            Failure::Core(e) => e.to_string(),
            Failure::Null(what) => format!("{what} must not be NULL"),
            Failure::Utf8(what) => format!("{what} is not valid UTF-8"),
            Failure::Argument(why) => why.clone(),
            Failure::Timeout(what) => format!("timed out waiting for {what}"),
        }
    }
}

/// What an export returns, and what it returns when it fails.
pub(crate) trait Exit {
    /// What the body produces on success.
    type Value;
    /// Whether this export reports a status (and so sets or clears the message).
    const REPORTS: bool;
    fn success(value: Self::Value) -> Self;
    fn failure(status: datasync_code) -> Self;
}

impl Exit for datasync_code {
    type Value = ();
    const REPORTS: bool = true;
    fn success(_: ()) -> Self {
        datasync_code::DATASYNC_OK
    }
    fn failure(status: datasync_code) -> Self {
        status
    }
}

impl Exit for *const c_char {
    type Value = *const c_char;
    const REPORTS: bool = false;
    fn success(value: *const c_char) -> Self {
        value
    }
    fn failure(_: datasync_code) -> Self {
        std::ptr::null()
    }
}

impl Exit for () {
    type Value = ();
    const REPORTS: bool = false;
    fn success(_: ()) -> Self {}
    fn failure(_: datasync_code) -> Self {}
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(message: Option<String>) {
    let message = message.map(|m| CString::new(m.replace('\0', "\\0")).unwrap_or_default());
    // A thread being torn down has no message slot left; nothing to record then.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = message);
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}

/// Runs the body of an export: no panic escapes, a failure becomes a status (or
/// NULL / nothing for exports that return no status) and the thread's last-error
/// message. A status-returning export that succeeds clears the message.
pub(crate) fn boundary<R: Exit>(body: impl FnOnce() -> Result<R::Value, Failure>) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => {
            if R::REPORTS {
                set_last_error(None);
            }
            R::success(value)
        }
        Ok(Err(failure)) => {
            let status = failure.status();
            if R::REPORTS {
                set_last_error(Some(failure.message()));
            }
            R::failure(status)
        }
        Err(payload) => {
            let text = panic_text(payload.as_ref());
            // Dropping a payload can itself panic; keep it from unwinding into C.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            set_last_error(Some(format!("the library panicked: {text}")));
            R::failure(datasync_code::DATASYNC_PANIC)
        }
    }
}

/// The message of the last status-returning call on this thread that failed, or
/// an empty string when the most recent such call succeeded (or none was made).
///
/// Ownership: the string belongs to the library; it stays valid until the next
/// datasync call on this thread. Do not free it.
/// Threads: per thread; each thread sees its own last error.
#[no_mangle]
pub extern "C" fn datasync_error_message() -> *const c_char {
    boundary(|| {
        let ptr = LAST_ERROR
            .try_with(|slot| slot.borrow().as_ref().map(|m| m.as_ptr()))
            .ok()
            .flatten();
        Ok(ptr.unwrap_or(c"".as_ptr()))
    })
}

/// Panics inside the library on purpose and returns what the boundary made of it:
/// always `DATASYNC_PANIC`, with `message` in the last-error message. It lets a host
/// check that no panic crosses into its code. `message` may be NULL. Only in builds
/// with the cargo feature `debug-panic` (the tests'); the header declares it when
/// `DATASYNC_DEBUG_PANIC` is defined.
///
/// Ownership: `message` is borrowed for the call.
/// Threads: any thread.
#[cfg(feature = "debug-panic")]
#[no_mangle]
pub unsafe extern "C" fn datasync_debug_panic(message: *const c_char) -> datasync_code {
    boundary(|| {
        let text =
            super::strings::opt_str_in(message, "message")?.unwrap_or("datasync_debug_panic");
        panic!("{text}");
    })
}
