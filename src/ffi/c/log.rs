//! Host log callbacks, through the process-wide log bridge.

use std::ffi::CString;
use std::os::raw::{c_char, c_void};
use std::sync::Arc;

use super::boundary::{boundary, Failure};
use super::status::datasync_code;
use super::strings::write_out;
use super::vtable::datasync_destroy_fn;
use crate::ffi::log_bridge;

/// Log level: errors only.
pub const DATASYNC_LOG_ERROR: u32 = 1;
/// Log level: warnings and above.
pub const DATASYNC_LOG_WARN: u32 = 2;
/// Log level: information and above.
pub const DATASYNC_LOG_INFO: u32 = 3;
/// Log level: debugging detail and above.
pub const DATASYNC_LOG_DEBUG: u32 = 4;
/// Log level: everything.
pub const DATASYNC_LOG_TRACE: u32 = 5;

/// A host log sink. `log` gets the level (`DATASYNC_LOG_*`), the component
/// (`"datasync::sync"`, ...) and the message, both NUL-terminated and valid during
/// the call. It may be called from any thread, several at once: it must be
/// thread-safe. It may call into the library.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct datasync_logger_vtable {
    /// Passed to every callback.
    pub userdata: *mut c_void,
    /// Required. Receives one record.
    pub log: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            level: u32,
            target: *const c_char,
            message: *const c_char,
        ),
    >,
    /// Optional. Called exactly once, after the logger is removed and its last call
    /// has returned.
    pub destroy: datasync_destroy_fn,
}

struct HostLogger {
    vt: datasync_logger_vtable,
}

// SAFETY: the host contract (datasync_logger_vtable) requires a thread-safe logger.
unsafe impl Send for HostLogger {}
// SAFETY: as above.
unsafe impl Sync for HostLogger {}

impl Drop for HostLogger {
    fn drop(&mut self) {
        if let Some(destroy) = self.vt.destroy.take() {
            // SAFETY: the host's destroy, called once with its userdata.
            unsafe { destroy(self.vt.userdata) }
        }
    }
}

impl HostLogger {
    fn emit(&self, level: log::Level, target: &str, message: &str) {
        let Some(log) = self.vt.log else { return };
        let level = match level {
            log::Level::Error => DATASYNC_LOG_ERROR,
            log::Level::Warn => DATASYNC_LOG_WARN,
            log::Level::Info => DATASYNC_LOG_INFO,
            log::Level::Debug => DATASYNC_LOG_DEBUG,
            log::Level::Trace => DATASYNC_LOG_TRACE,
        };
        let target = CString::new(target.replace('\0', "?")).unwrap_or_default();
        let message = CString::new(message.replace('\0', "?")).unwrap_or_default();
        // SAFETY: the host's contract; both strings outlive the call.
        unsafe { log(self.vt.userdata, level, target.as_ptr(), message.as_ptr()) }
    }
}

fn level_filter(level: u32) -> Option<log::LevelFilter> {
    Some(match level {
        DATASYNC_LOG_ERROR => log::LevelFilter::Error,
        DATASYNC_LOG_WARN => log::LevelFilter::Warn,
        DATASYNC_LOG_INFO => log::LevelFilter::Info,
        DATASYNC_LOG_DEBUG => log::LevelFilter::Debug,
        DATASYNC_LOG_TRACE => log::LevelFilter::Trace,
        _ => return None,
    })
}

/// Adds a process-wide log sink receiving records up to `max_level`
/// (`DATASYNC_LOG_*`), from every instance, and writes its handle to `out_handle`
/// (may be NULL). If the host process already installed another Rust logger,
/// records go there instead.
///
/// Ownership: `logger` is copied; the library owns it from this call on, and calls
/// `destroy` exactly once: after `datasync_logger_remove`, or at once if this call fails.
/// Threads: any thread; the sink is called from any thread.
#[no_mangle]
pub unsafe extern "C" fn datasync_logger_add(
    logger: *const datasync_logger_vtable,
    max_level: u32,
    out_handle: *mut u64,
) -> datasync_code {
    boundary(|| {
        let vt = *logger.as_ref().ok_or(Failure::Null("logger"))?;
        let host = HostLogger { vt };
        if vt.log.is_none() {
            return Err(Failure::Argument("a logger vtable needs log".into()));
        }
        let filter = level_filter(max_level).ok_or_else(|| {
            Failure::Argument(format!("{max_level} is not a DATASYNC_LOG_* level"))
        })?;
        let host = Arc::new(host);
        let handle = log_bridge::add_sink(
            Arc::new(move |level, target: &str, message: &str| {
                if level <= filter {
                    host.emit(level, target, message);
                }
            }),
            filter,
        );
        write_out(out_handle, handle);
        Ok(())
    })
}

/// Removes a log sink added by `datasync_logger_add`. An unknown handle is ignored.
/// A call already running on another thread may still finish after this returns;
/// `destroy` runs after it.
///
/// Ownership: nothing is passed.
/// Threads: any thread.
#[no_mangle]
pub extern "C" fn datasync_logger_remove(handle: u64) -> datasync_code {
    boundary(|| {
        log_bridge::remove_sink(handle);
        Ok(())
    })
}
