//! Status codes: what every fallible export returns.

use super::boundary::boundary;
use crate::error::ErrorKind;

/// The outcome of a call. 0 is success; the rest are numbered in blocks that are
/// never renumbered (new codes are only ever added at the end of a block):
///
/// - 1xx: the caller's arguments (pointers, text, JSON, names, ids, options);
/// - 2xx: tiers and host callbacks;
/// - 3xx: the instance's lifecycle and threads;
/// - 9xx: the library itself (bugs, caught panics).
///
/// `datasync_last_error_message()` describes the failure in words.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum datasync_status {
    /// Success.
    DATASYNC_OK = 0,
    /// A required pointer argument was NULL.
    DATASYNC_NULL_ARGUMENT = 100,
    /// A string argument was not valid UTF-8.
    DATASYNC_INVALID_UTF8 = 101,
    /// Text that should be JSON was not, or had the wrong JSON shape.
    DATASYNC_INVALID_JSON = 102,
    /// An entity was not a JSON object, or a reserved field had the wrong type.
    DATASYNC_INVALID_ENTITY = 103,
    /// An entity name was empty, reserved (`deleted`) or otherwise unusable.
    DATASYNC_INVALID_NAME = 104,
    /// An id did not parse as `<logicalKey><sep><identifier>`.
    DATASYNC_INVALID_ID = 105,
    /// A logical or partition key was refused.
    DATASYNC_INVALID_KEY = 106,
    /// A configuration value cannot work.
    DATASYNC_INVALID_CONFIG = 107,
    /// Query options that cannot be applied.
    DATASYNC_INVALID_QUERY = 108,
    /// Any other bad argument: an unknown tier or level number, a vtable without a
    /// required function.
    DATASYNC_INVALID_ARGUMENT = 109,
    /// The key strategy does not let this instance read or write the partition an id
    /// names.
    DATASYNC_FORBIDDEN = 110,
    /// An adapter (built-in or a host vtable) reported a failure.
    DATASYNC_ADAPTER = 200,
    /// A tier holds bytes that are not a valid partition or metadata document.
    DATASYNC_CORRUPT = 201,
    /// A host callback (strategy, resolver) failed.
    DATASYNC_CALLBACK = 202,
    /// The instance is closed.
    DATASYNC_CLOSED = 300,
    /// A blocking call was made from a thread it would wait on (e.g. `datasync_flush`
    /// from inside an observer callback).
    DATASYNC_WOULD_DEADLOCK = 301,
    /// Something the library did not expect: a bug.
    DATASYNC_INTERNAL = 900,
    /// The library panicked; the panic was caught at the boundary. The instance
    /// involved may be in an unexpected state.
    DATASYNC_PANIC = 901,
}

impl datasync_status {
    /// Every status, for lookups by number.
    pub const ALL: [datasync_status; 19] = [
        datasync_status::DATASYNC_OK,
        datasync_status::DATASYNC_NULL_ARGUMENT,
        datasync_status::DATASYNC_INVALID_UTF8,
        datasync_status::DATASYNC_INVALID_JSON,
        datasync_status::DATASYNC_INVALID_ENTITY,
        datasync_status::DATASYNC_INVALID_NAME,
        datasync_status::DATASYNC_INVALID_ID,
        datasync_status::DATASYNC_INVALID_KEY,
        datasync_status::DATASYNC_INVALID_CONFIG,
        datasync_status::DATASYNC_INVALID_QUERY,
        datasync_status::DATASYNC_INVALID_ARGUMENT,
        datasync_status::DATASYNC_FORBIDDEN,
        datasync_status::DATASYNC_ADAPTER,
        datasync_status::DATASYNC_CORRUPT,
        datasync_status::DATASYNC_CALLBACK,
        datasync_status::DATASYNC_CLOSED,
        datasync_status::DATASYNC_WOULD_DEADLOCK,
        datasync_status::DATASYNC_INTERNAL,
        datasync_status::DATASYNC_PANIC,
    ];

    /// The status of a core error kind. No wildcard arm: a new kind must be mapped here.
    pub fn of_kind(kind: ErrorKind) -> datasync_status {
        match kind {
            ErrorKind::InvalidJson => datasync_status::DATASYNC_INVALID_JSON,
            ErrorKind::InvalidEntity => datasync_status::DATASYNC_INVALID_ENTITY,
            ErrorKind::InvalidName => datasync_status::DATASYNC_INVALID_NAME,
            ErrorKind::InvalidId => datasync_status::DATASYNC_INVALID_ID,
            ErrorKind::InvalidKey => datasync_status::DATASYNC_INVALID_KEY,
            ErrorKind::Forbidden => datasync_status::DATASYNC_FORBIDDEN,
            ErrorKind::InvalidConfig => datasync_status::DATASYNC_INVALID_CONFIG,
            ErrorKind::InvalidQuery => datasync_status::DATASYNC_INVALID_QUERY,
            ErrorKind::Adapter => datasync_status::DATASYNC_ADAPTER,
            ErrorKind::Corrupt => datasync_status::DATASYNC_CORRUPT,
            ErrorKind::Closed => datasync_status::DATASYNC_CLOSED,
            ErrorKind::WouldDeadlock => datasync_status::DATASYNC_WOULD_DEADLOCK,
            ErrorKind::Callback => datasync_status::DATASYNC_CALLBACK,
            ErrorKind::Internal => datasync_status::DATASYNC_INTERNAL,
        }
    }

    /// The constant's name, NUL-terminated.
    pub fn name(self) -> &'static str {
        match self {
            datasync_status::DATASYNC_OK => "DATASYNC_OK\0",
            datasync_status::DATASYNC_NULL_ARGUMENT => "DATASYNC_NULL_ARGUMENT\0",
            datasync_status::DATASYNC_INVALID_UTF8 => "DATASYNC_INVALID_UTF8\0",
            datasync_status::DATASYNC_INVALID_JSON => "DATASYNC_INVALID_JSON\0",
            datasync_status::DATASYNC_INVALID_ENTITY => "DATASYNC_INVALID_ENTITY\0",
            datasync_status::DATASYNC_INVALID_NAME => "DATASYNC_INVALID_NAME\0",
            datasync_status::DATASYNC_INVALID_ID => "DATASYNC_INVALID_ID\0",
            datasync_status::DATASYNC_INVALID_KEY => "DATASYNC_INVALID_KEY\0",
            datasync_status::DATASYNC_INVALID_CONFIG => "DATASYNC_INVALID_CONFIG\0",
            datasync_status::DATASYNC_INVALID_QUERY => "DATASYNC_INVALID_QUERY\0",
            datasync_status::DATASYNC_INVALID_ARGUMENT => "DATASYNC_INVALID_ARGUMENT\0",
            datasync_status::DATASYNC_FORBIDDEN => "DATASYNC_FORBIDDEN\0",
            datasync_status::DATASYNC_ADAPTER => "DATASYNC_ADAPTER\0",
            datasync_status::DATASYNC_CORRUPT => "DATASYNC_CORRUPT\0",
            datasync_status::DATASYNC_CALLBACK => "DATASYNC_CALLBACK\0",
            datasync_status::DATASYNC_CLOSED => "DATASYNC_CLOSED\0",
            datasync_status::DATASYNC_WOULD_DEADLOCK => "DATASYNC_WOULD_DEADLOCK\0",
            datasync_status::DATASYNC_INTERNAL => "DATASYNC_INTERNAL\0",
            datasync_status::DATASYNC_PANIC => "DATASYNC_PANIC\0",
        }
    }
}

/// The name of a status code (`"DATASYNC_INVALID_JSON"`), or `"DATASYNC_UNKNOWN"`
/// for a number that is no status.
///
/// Ownership: the returned string is static; never free it.
/// Threads: any thread.
#[no_mangle]
pub extern "C" fn datasync_status_name(status: u32) -> *const std::os::raw::c_char {
    boundary(|| {
        let name = datasync_status::ALL
            .iter()
            .find(|s| **s as u32 == status)
            .map_or("DATASYNC_UNKNOWN\0", |s| s.name());
        Ok(name.as_ptr().cast())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_in_their_blocks_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for s in datasync_status::ALL {
            assert!(seen.insert(s as u32));
            let name = s.name();
            assert!(name.starts_with("DATASYNC_") && name.ends_with('\0'));
        }
        assert_eq!(datasync_status::DATASYNC_OK as u32, 0);
        assert_eq!(datasync_status::DATASYNC_PANIC as u32, 901);
    }
}
