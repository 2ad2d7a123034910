//! The handle an observer's owner keeps: dropping it stops the observer.

use std::sync::Weak;

use super::registry::Registry;

/// A live observer. Dropping it, or calling [`Subscription::unsubscribe`], stops it:
/// once that returns, the callback is not called again.
pub struct Subscription {
    id: u64,
    registry: Weak<Registry>,
}

impl Subscription {
    pub(super) fn new(id: u64, registry: Weak<Registry>) -> Subscription {
        Subscription { id, registry }
    }

    /// Stops the observer. Idempotent; may be called from inside the callback.
    pub fn unsubscribe(&self) {
        if let Some(registry) = self.registry.upgrade() {
            registry.remove(self.id);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.unsubscribe();
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Subscription({})", self.id)
    }
}
