//! The one place that chooses lock types: parking_lot (no poisoning; a panicking
//! observer cannot wedge the library), wrapped so that debug builds check the lock
//! order on every acquisition.
//!
//! Lock order, outermost first; a thread holding a lock may take only locks of a later
//! level, never two of one level at once:
//! 1. [`Level::Callback`]: a subscription's callback lock, held while the callback
//!    runs (the callback may call back into the library);
//! 2. [`Level::Hydrating`]: the keys being loaded into the store;
//! 3. [`Level::PiecesWriter`]: a format-2 tier's index writes (held across the
//!    read, merge and write of a partition's index, so that two threads of one
//!    instance never write the index of a tier no one else writes over each other);
//! 4. [`Level::TierAdapter`]: a tier's adapter (its serialisation lock, held during
//!    adapter calls);
//! 5. [`Level::AdapterInner`]: a built-in adapter's own state (the directory tier's
//!    dirty handles, a shared memory tier's map, a host vtable's call lock), taken
//!    inside an adapter call;
//! 6. [`Level::TierState`]: a tier's metadata and marks (never held during a call to
//!    host code);
//! 7. [`Level::Leaf`]: taken alone, never while another leaf is held: the registry's
//!    subscriptions and queue, status, the worker's handles.
//!
//! A violation panics in debug builds (tests run them), naming both levels; release
//! builds do not track.

use std::ops::{Deref, DerefMut};

/// Where a lock stands in the order (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Callback,
    Hydrating,
    PiecesWriter,
    TierAdapter,
    AdapterInner,
    TierState,
    Leaf,
}

#[cfg(debug_assertions)]
mod order {
    use super::Level;
    use std::cell::RefCell;

    thread_local! {
        static HELD: RefCell<Vec<Level>> = const { RefCell::new(Vec::new()) };
    }

    pub fn acquire(level: Level) {
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            if let Some(&inner) = held.iter().max() {
                assert!(
                    inner < level,
                    "lock order violated: taking a {level:?} lock while holding a {inner:?} lock"
                );
            }
            held.push(level);
        });
    }

    /// A lock taken without waiting: it cannot deadlock, so it is not checked, but
    /// locks taken while it is held are checked against it.
    pub fn acquire_unchecked(level: Level) {
        HELD.with(|held| held.borrow_mut().push(level));
    }

    pub fn release(level: Level) {
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            if let Some(i) = held.iter().rposition(|l| *l == level) {
                held.remove(i);
            }
        });
    }
}

#[cfg(not(debug_assertions))]
mod order {
    use super::Level;
    #[inline(always)]
    pub fn acquire(_: Level) {}
    #[inline(always)]
    pub fn acquire_unchecked(_: Level) {}
    #[inline(always)]
    pub fn release(_: Level) {}
}

/// A mutex with a place in the lock order.
pub(crate) struct Mutex<T> {
    level: Level,
    inner: parking_lot::Mutex<T>,
}

/// Held while the lock is; releases it (and its place in the order) when dropped.
pub(crate) struct MutexGuard<'a, T> {
    level: Level,
    guard: parking_lot::MutexGuard<'a, T>,
}

impl<T> Mutex<T> {
    /// A leaf lock: taken alone.
    pub const fn new(value: T) -> Mutex<T> {
        Mutex::ordered(Level::Leaf, value)
    }

    /// A lock at `level` of the order.
    pub const fn ordered(level: Level, value: T) -> Mutex<T> {
        Mutex {
            level,
            inner: parking_lot::const_mutex(value),
        }
    }

    /// Takes the lock if it is free. It never waits, so it is not checked against the
    /// order, but locks taken while it is held are.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        let guard = self.inner.try_lock()?;
        order::acquire_unchecked(self.level);
        Some(MutexGuard {
            level: self.level,
            guard,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        order::acquire(self.level);
        MutexGuard {
            level: self.level,
            guard: self.inner.lock(),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.inner.try_lock() {
            Some(value) => f.debug_tuple("Mutex").field(&*value).finish(),
            None => f.write_str("Mutex(<locked>)"),
        }
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        order::release(self.level);
    }
}

/// A condition variable for [`Mutex`]; waiting releases the lock and takes it again.
#[derive(Default)]
pub(crate) struct Condvar(parking_lot::Condvar);

impl Condvar {
    pub const fn new() -> Condvar {
        Condvar(parking_lot::Condvar::new())
    }

    pub fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        self.0.wait(&mut guard.guard);
    }

    pub fn notify_all(&self) {
        self.0.notify_all();
    }
}

/// A read-write lock (readers share); a leaf of the order.
#[cfg(any(feature = "capi", feature = "uniffi"))]
pub(crate) struct RwLock<T>(parking_lot::RwLock<T>);

#[cfg(any(feature = "capi", feature = "uniffi"))]
impl<T> RwLock<T> {
    pub const fn new(value: T) -> RwLock<T> {
        RwLock(parking_lot::const_rwlock(value))
    }

    pub fn read(&self) -> parking_lot::RwLockReadGuard<'_, T> {
        self.0.read()
    }

    pub fn write(&self) -> parking_lot::RwLockWriteGuard<'_, T> {
        self.0.write()
    }
}

/// Message passing between the library's threads (the sync worker's and the
/// dispatcher's mailboxes).
pub(crate) use crossbeam_channel as channel;

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::*;

    #[test]
    fn locks_taken_in_order_pass() {
        let (outer, inner) = (
            Mutex::ordered(Level::Hydrating, ()),
            Mutex::ordered(Level::TierState, ()),
        );
        let _a = outer.lock();
        let _b = inner.lock();
    }

    #[test]
    #[should_panic(expected = "lock order violated")]
    fn a_lock_taken_out_of_order_panics() {
        let (outer, inner) = (
            Mutex::ordered(Level::Hydrating, ()),
            Mutex::ordered(Level::TierState, ()),
        );
        let _b = inner.lock();
        let _a = outer.lock();
    }

    #[test]
    #[should_panic(expected = "lock order violated")]
    fn two_leaves_at_once_panic() {
        let (a, b) = (Mutex::new(()), Mutex::new(()));
        let _a = a.lock();
        let _b = b.lock();
    }

    #[test]
    fn a_released_lock_leaves_the_order() {
        let (outer, inner) = (
            Mutex::ordered(Level::Hydrating, ()),
            Mutex::ordered(Level::TierState, ()),
        );
        drop(inner.lock());
        let _a = outer.lock();
        let _b = inner.lock();
    }
}
