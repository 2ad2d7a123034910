//! The C ABI: a handle API over the core, described by the generated
//! `include/datasync.h`.
//!
//! Conventions (the header repeats them): functions return a `datasync_code`
//! (0 = OK) and describe failures in a per-thread message; `*_new`/`datasync_instance_open`
//! write their out-handle only on success; `*_free` accept NULL; strings in are
//! borrowed NUL-terminated UTF-8; strings out are owned by the caller and freed by
//! `datasync_string_free`; host vtables carry `userdata` and a `destroy` that runs
//! exactly once. Every export goes through [`boundary::boundary`], so no panic
//! crosses into C. Each export documents its contract under "Ownership" and
//! "Threads"; a pointer argument must be NULL or valid as that text says.
#![allow(clippy::missing_safety_doc)]

pub mod boundary;
pub mod changes;
pub mod config;
pub mod instance;
pub mod log;
pub mod observe;
pub mod sink;
pub mod status;
pub mod strings;
pub mod vtable;
