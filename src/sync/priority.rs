//! The sync worker runs below the app's threads: when the cores are busy, a save
//! (or a UI thread) is scheduled before a flush, a sync or a compaction, so that a
//! save never waits behind a sync for a core (DESIGN §10, "Saves never wait for a
//! sync"). Android's background threads and Apple's utility QoS make the same
//! choice for work the user is not waiting on.
//!
//! Linux and Android: the worker's nice value is raised by [`WORKER_NICE`]. A thread
//! there has a nice value of its own. Other systems: the worker keeps the priority
//! it was started with.

/// How far the worker's nice value is raised: with a busy app thread at 0, the
/// scheduler gives the worker about a tenth of a shared core, never none.
pub const WORKER_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority (once; a failure is logged and
/// leaves the priority as it was).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn lower_this_thread() {
    // `who` 0 names the calling thread. Raising one's own nice value needs no
    // privilege.
    // SAFETY: setpriority takes no pointers and changes only the scheduling of
    // this thread.
    let current = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let set = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, current + WORKER_NICE) };
    if set != 0 {
        log::debug!(
            target: "datasync::sync",
            "the sync worker keeps its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn lower_this_thread() {}
