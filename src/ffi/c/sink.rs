//! The copying sink through which host callbacks hand bytes to the library.

use std::os::raw::c_char;

use super::boundary::{boundary, Failure};
use super::status::datasync_code;
use super::strings::bytes_in;

/// Where a host callback writes bytes for the library (a loaded blob, a key, JSON).
/// The library copies what is written, so the host's buffer may be reused at once.
/// A sink is only valid during the callback it was passed to.
#[allow(non_camel_case_types)]
pub struct datasync_bytes_sink {
    /// Whether each write is one whole item (`keys`) rather than a piece of one value.
    items_mode: bool,
    written: bool,
    data: Vec<u8>,
    items: Vec<Vec<u8>>,
}

impl datasync_bytes_sink {
    /// A sink collecting one value, possibly written in several pieces.
    pub(crate) fn value() -> Self {
        datasync_bytes_sink {
            items_mode: false,
            written: false,
            data: Vec::new(),
            items: Vec::new(),
        }
    }

    /// A sink where every write is one item.
    pub(crate) fn items() -> Self {
        datasync_bytes_sink {
            items_mode: true,
            ..Self::value()
        }
    }

    /// The value, or `None` when nothing was written (not even zero bytes).
    pub(crate) fn into_value(self) -> Option<Vec<u8>> {
        self.written.then_some(self.data)
    }

    /// The items written, in order.
    pub(crate) fn into_items(self) -> Vec<Vec<u8>> {
        self.items
    }

    /// The value as UTF-8 text, or a message saying what is wrong.
    pub(crate) fn into_text(self, what: &str) -> Result<String, String> {
        match self.into_value() {
            None => Err(format!("{what}: the callback wrote nothing")),
            Some(bytes) => String::from_utf8(bytes)
                .map_err(|_| format!("{what}: the callback wrote invalid UTF-8")),
        }
    }
}

/// Copies `len` bytes from `bytes` into `sink`. In a `load` or JSON callback, the
/// writes add up to one value (writing zero bytes marks an empty, present value);
/// in a `keys` callback every write is one whole key.
///
/// Ownership: `bytes` is borrowed for the call and copied (NULL is allowed when
/// `len` is 0); `sink` is the one the library passed to the running callback.
/// Threads: call it only from inside that callback, on its thread.
#[no_mangle]
pub unsafe extern "C" fn datasync_bytes_sink_write(
    sink: *mut datasync_bytes_sink,
    bytes: *const u8,
    len: usize,
) -> datasync_code {
    boundary(|| write(sink, bytes_in(bytes, len, "bytes")?))
}

/// # Safety
/// `sink` is NULL or a live sink.
unsafe fn write(sink: *mut datasync_bytes_sink, bytes: &[u8]) -> Result<(), Failure> {
    let sink = sink.as_mut().ok_or(Failure::Null("sink"))?;
    if sink.items_mode {
        sink.items.push(bytes.to_vec());
    } else {
        sink.data.extend_from_slice(bytes);
        sink.written = true;
    }
    Ok(())
}

/// Copies the NUL-terminated string `text` into `sink`, like
/// `datasync_bytes_sink_write(sink, text, strlen(text))`.
///
/// Ownership: `text` is borrowed for the call and copied.
/// Threads: call it only from inside the callback the sink was passed to.
#[no_mangle]
pub unsafe extern "C" fn datasync_bytes_sink_write_str(
    sink: *mut datasync_bytes_sink,
    text: *const c_char,
) -> datasync_code {
    boundary(|| {
        if text.is_null() {
            return Err(Failure::Null("text"));
        }
        write(sink, std::ffi::CStr::from_ptr(text).to_bytes())
    })
}
