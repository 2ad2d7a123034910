//! Status codes: what every fallible export returns. The one list below makes the
//! enum, [`datasync_code::ALL`] and [`datasync_code::name`]; the header gets the enum
//! from the same list (tests/c_abi.rs hands the macro's input to cbindgen, which does
//! not expand macros) and a test checks the header's codes against `ALL`.

use super::boundary::boundary;
use crate::error::ErrorKind;

/// Declares the status enum once and derives from that one declaration the list of
/// every code and each code's name, so the three cannot drift apart.
macro_rules! status_codes {
    (
        $(#[$meta:meta])*
        pub enum $enum:ident {
            $( $(#[$doc:meta])* $code:ident = $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        pub enum $enum {
            $( $(#[$doc])* $code = $value, )+
        }

        impl $enum {
            /// Every code, in declaration order.
            pub const ALL: &'static [$enum] = &[$($enum::$code),+];

            /// The constant's name, NUL-terminated.
            pub fn name(self) -> &'static str {
                match self {
                    $( $enum::$code => concat!(stringify!($code), "\0"), )+
                }
            }
        }
    };
}

status_codes! {
    /// The outcome of a call. 0 is success; the rest are numbered in blocks that are
    /// never renumbered (new codes are only ever added at the end of a block):
    ///
    /// - 1xx: the caller's arguments (pointers, text, JSON, names, ids, options);
    /// - 2xx: tiers and host callbacks;
    /// - 3xx: the instance's lifecycle and threads;
    /// - 9xx: the library itself (bugs, caught panics).
    ///
    /// `datasync_error_message()` describes the failure in words;
    /// `datasync_code_name()` names a code.
    #[allow(non_camel_case_types)]
    #[repr(u32)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum datasync_code {
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
        /// A blocking call was made from a thread it would wait on (e.g.
        /// `datasync_instance_drain_events` from inside an observer callback).
        DATASYNC_WOULD_DEADLOCK = 301,
        /// A wait with a timeout ended before what it waited for happened (e.g.
        /// `datasync_instance_wait_in_cloud`); nothing failed, it can be waited for again.
        DATASYNC_TIMEOUT = 302,
        /// Something the library did not expect: a bug.
        DATASYNC_INTERNAL = 900,
        /// The library panicked; the panic was caught at the boundary. The instance
        /// involved may be in an unexpected state.
        DATASYNC_PANIC = 901,
    }
}

impl datasync_code {
    /// The code of a core error kind. No wildcard arm: a new kind must be mapped here.
    pub fn of_kind(kind: ErrorKind) -> datasync_code {
        match kind {
            ErrorKind::InvalidJson => datasync_code::DATASYNC_INVALID_JSON,
            ErrorKind::InvalidEntity => datasync_code::DATASYNC_INVALID_ENTITY,
            ErrorKind::InvalidName => datasync_code::DATASYNC_INVALID_NAME,
            ErrorKind::InvalidId => datasync_code::DATASYNC_INVALID_ID,
            ErrorKind::InvalidKey => datasync_code::DATASYNC_INVALID_KEY,
            ErrorKind::Forbidden => datasync_code::DATASYNC_FORBIDDEN,
            ErrorKind::InvalidConfig => datasync_code::DATASYNC_INVALID_CONFIG,
            ErrorKind::InvalidQuery => datasync_code::DATASYNC_INVALID_QUERY,
            ErrorKind::Adapter => datasync_code::DATASYNC_ADAPTER,
            ErrorKind::Corrupt => datasync_code::DATASYNC_CORRUPT,
            ErrorKind::Closed => datasync_code::DATASYNC_CLOSED,
            ErrorKind::WouldDeadlock => datasync_code::DATASYNC_WOULD_DEADLOCK,
            ErrorKind::Callback => datasync_code::DATASYNC_CALLBACK,
            ErrorKind::Internal => datasync_code::DATASYNC_INTERNAL,
        }
    }

    /// The code with this number, if there is one.
    pub fn from_u32(value: u32) -> Option<datasync_code> {
        datasync_code::ALL
            .iter()
            .copied()
            .find(|c| *c as u32 == value)
    }
}

/// The name of a status code (`"DATASYNC_INVALID_JSON"`), or `"DATASYNC_UNKNOWN"`
/// for a number that is no code.
///
/// Ownership: the returned string is static; never free it.
/// Threads: any thread.
#[no_mangle]
pub extern "C" fn datasync_code_name(status: u32) -> *const std::os::raw::c_char {
    boundary(|| {
        let name = datasync_code::from_u32(status).map_or("DATASYNC_UNKNOWN\0", |c| c.name());
        Ok(name.as_ptr().cast())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_in_their_blocks_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for &c in datasync_code::ALL {
            assert!(seen.insert(c as u32), "{c:?} is numbered twice");
            let name = c.name();
            assert!(name.starts_with("DATASYNC_") && name.ends_with('\0'));
            assert_eq!(name.trim_end_matches('\0'), format!("{c:?}"));
            assert!(matches!(c as u32, 0 | 100..=199 | 200..=299 | 300..=399 | 900..=999));
            assert_eq!(datasync_code::from_u32(c as u32), Some(c));
        }
        assert_eq!(datasync_code::DATASYNC_OK as u32, 0);
        assert_eq!(datasync_code::DATASYNC_PANIC as u32, 901);
        assert_eq!(datasync_code::from_u32(7), None);
    }
}
