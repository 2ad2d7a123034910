//! The sync status an app can read or observe.

/// What an app can see of the instance's sync state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// Whether the last attempt to reach the cloud succeeded (true without a cloud).
    pub online: bool,
    /// When the chain last synced without error.
    pub last_sync: Option<String>,
    /// The last sync error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Partitions written in the store and not yet synced below.
    pub pending_keys: usize,
    /// Writes pending for the cloud: durable locally (or, without a local tier,
    /// made) but not yet in the cloud (0 without a cloud; see
    /// [`crate::DataSync::pending_writes`]).
    pub pending_cloud: usize,
    /// Consecutive failed cloud attempts.
    pub failures: u32,
    pub closed: bool,
}
