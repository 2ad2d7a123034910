//! Records and enums that cross the UniFFI boundary, with their conversions to and
//! from the core's types. Entities cross as JSON text; each language's wrapper turns
//! them into its natural type.

use serde_json::{Map, Value};

use super::error::{DataSyncError, FfiResult};
use crate::error::Error;
use crate::query::{Order, QueryOptions, SortKey};

/// One sort field of a query.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SortField {
    pub field: String,
    #[uniffi(default = false)]
    pub descending: bool,
}

/// What a query selects (DESIGN.md §7). Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct Query {
    /// Only these ids.
    #[uniffi(default = None)]
    pub ids: Option<Vec<String>>,
    /// Shallow field equality, as a JSON object (`{"team": "core"}`).
    #[uniffi(default = None)]
    pub where_json: Option<String>,
    /// Sort fields, applied in order; the sort is stable.
    #[uniffi(default = [])]
    pub sort: Vec<SortField>,
    #[uniffi(default = None)]
    pub limit: Option<u64>,
    #[uniffi(default = None)]
    pub offset: Option<u64>,
    /// The key strategy's filter as JSON (e.g. a date range `{"from": ..., "to": ...}`).
    #[uniffi(default = None)]
    pub filter_json: Option<String>,
}

impl TryFrom<Query> for QueryOptions {
    type Error = DataSyncError;

    fn try_from(q: Query) -> FfiResult<QueryOptions> {
        let where_ = match q.where_json.as_deref().map(str::trim) {
            None | Some("") | Some("null") => Map::new(),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    return Err(
                        Error::InvalidQuery("\"where\" must be a JSON object".into()).into(),
                    )
                }
                Err(e) => {
                    return Err(Error::InvalidQuery(format!("\"where\" is not JSON: {e}")).into())
                }
            },
        };
        let filter = match q.filter_json.as_deref().map(str::trim) {
            None | Some("") | Some("null") => None,
            Some(text) => Some(
                serde_json::from_str::<Value>(text)
                    .map_err(|e| Error::InvalidQuery(format!("the filter is not JSON: {e}")))?,
            ),
        };
        let size = |v: Option<u64>, what: &str| -> FfiResult<Option<usize>> {
            v.map(|n| {
                usize::try_from(n)
                    .map_err(|_| Error::InvalidQuery(format!("{what} {n} is too large")).into())
            })
            .transpose()
        };
        Ok(QueryOptions {
            ids: q.ids,
            where_,
            sort: q
                .sort
                .into_iter()
                .map(|s| SortKey {
                    field: s.field,
                    order: if s.descending {
                        Order::Desc
                    } else {
                        Order::Asc
                    },
                })
                .collect(),
            limit: size(q.limit, "limit")?,
            offset: size(q.offset, "offset")?,
            filter,
        })
    }
}

/// What a sync did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncStats {
    /// Partition keys examined.
    pub keys_compared: u64,
    /// Partitions copied whole to the side that lacked them.
    pub keys_copied: u64,
    /// Partitions present on both sides with different hashes, merged.
    pub keys_merged: u64,
    /// Partitions skipped because they changed during the sync (taken next time).
    pub keys_skipped: u64,
    /// Entity slots written (on either side).
    pub entities_changed: u64,
    /// Ids present on both sides with different content.
    pub conflicts: u64,
    /// Partition bytes written.
    pub bytes_written: u64,
    /// Partitions left out: the key strategy does not let this instance read them.
    pub keys_refused: u64,
    /// Writes into a shared tier that found another device's update there first
    /// (merged again with it and written, or left for the next sync).
    pub write_races: u64,
    /// Whether a tier could not be reached (the rest kept working).
    pub offline: bool,
    /// Errors met, each naming its tier and key.
    pub errors: Vec<String>,
}

impl From<crate::SyncStats> for SyncStats {
    fn from(s: crate::SyncStats) -> Self {
        SyncStats {
            keys_compared: s.keys_compared,
            keys_copied: s.keys_copied,
            keys_merged: s.keys_merged,
            keys_skipped: s.keys_skipped,
            entities_changed: s.entities_changed,
            conflicts: s.conflicts,
            bytes_written: s.bytes_written,
            keys_refused: s.keys_refused,
            write_races: s.write_races,
            offline: s.offline,
            errors: s.errors,
        }
    }
}

/// The instance's sync state.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Status {
    /// Whether the last attempt to reach the cloud succeeded (true without a cloud).
    pub online: bool,
    /// When the chain last synced without error.
    pub last_sync: Option<String>,
    /// The last sync error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Partitions written in the store and not yet synced below.
    pub pending_keys: u64,
    /// Writes durable locally (or made, without a local tier) but not yet in the cloud.
    pub pending_cloud: u64,
    /// Consecutive failed cloud attempts.
    pub failures: u32,
    pub closed: bool,
}

impl From<crate::Status> for Status {
    fn from(s: crate::Status) -> Self {
        Status {
            online: s.online,
            last_sync: s.last_sync,
            last_error: s.last_error,
            pending_keys: s.pending_keys as u64,
            pending_cloud: s.pending_cloud as u64,
            failures: s.failures,
            closed: s.closed,
        }
    }
}

/// One write not yet where it is going: the entity it saved or deleted, and its
/// partition key.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PendingWrite {
    /// The entity name.
    pub name: String,
    pub id: String,
    pub key: String,
}

impl From<crate::PendingWrite> for PendingWrite {
    fn from(w: crate::PendingWrite) -> Self {
        PendingWrite {
            name: w.name,
            id: w.id,
            key: w.key,
        }
    }
}

/// The writes not yet durable locally, and those durable locally but not yet in the
/// cloud, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PendingWrites {
    pub local: Vec<PendingWrite>,
    pub cloud: Vec<PendingWrite>,
}

impl From<crate::PendingWrites> for PendingWrites {
    fn from(p: crate::PendingWrites) -> Self {
        PendingWrites {
            local: p.local.into_iter().map(Into::into).collect(),
            cloud: p.cloud.into_iter().map(Into::into).collect(),
        }
    }
}

/// Which tier of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum TierKind {
    Store,
    Local,
    Cloud,
}

impl From<TierKind> for crate::TierId {
    fn from(t: TierKind) -> Self {
        match t {
            TierKind::Store => crate::TierId::Store,
            TierKind::Local => crate::TierId::Local,
            TierKind::Cloud => crate::TierId::Cloud,
        }
    }
}

/// How finely the date strategy splits time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DateGranularity {
    Year,
    Month,
    Day,
}

impl From<DateGranularity> for crate::DateGranularity {
    fn from(g: DateGranularity) -> Self {
        match g {
            DateGranularity::Year => crate::DateGranularity::Year,
            DateGranularity::Month => crate::DateGranularity::Month,
            DateGranularity::Day => crate::DateGranularity::Day,
        }
    }
}

/// The partitions a query covers, as a host key strategy reports them.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum CandidateKeys {
    /// Exactly these partition keys.
    Keys { keys: Vec<String> },
    /// Every known partition key that starts with this text.
    Prefix { prefix: String },
}

impl From<CandidateKeys> for crate::Candidates {
    fn from(c: CandidateKeys) -> Self {
        match c {
            CandidateKeys::Keys { keys } => crate::Candidates::Keys(keys),
            CandidateKeys::Prefix { prefix } => crate::Candidates::Prefix(prefix),
        }
    }
}

/// One entity's state as a conflict resolver sees it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum SlotState {
    /// The entity exists: its JSON text.
    Active { entity_json: String },
    /// The entity was deleted at this instant (`YYYY-MM-DDTHH:MM:SS.sssZ`).
    Deleted { deleted_at: String },
}

/// Log levels, most verbose first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, uniffi::Enum)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl From<log::Level> for LogLevel {
    fn from(l: log::Level) -> Self {
        match l {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        }
    }
}

impl From<LogLevel> for log::LevelFilter {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Trace => log::LevelFilter::Trace,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Error => log::LevelFilter::Error,
        }
    }
}
