//! Building a configuration: prefix, strategy, resolver, tiers and timings.

use std::os::raw::c_char;
use std::sync::Arc;
use std::time::Duration;

use super::boundary::{boundary, Failure};
use super::status::datasync_code;
use super::strings::{need_out, str_in, write_out};
use super::vtable::{
    datasync_persistence_vtable, datasync_resolver_vtable, datasync_strategy_vtable,
    HostPersistence, HostResolver, HostStrategy,
};
use crate::adapters::{
    DirOptions, DirPersistence, HttpOptions, HttpPersistence, MemoryPersistence,
};
use crate::config::Config;
use crate::instance::TierId;
use crate::persistence::Persistence;
use crate::strategy::{DateGranularity, DateStrategy, FieldStrategy, GlobalStrategy};

/// The in-memory store tier (always the built-in store; only read, e.g. by
/// `datasync_instance_tier_keys`).
pub const DATASYNC_TIER_STORE: u32 = 0;
/// The durable tier on the device.
pub const DATASYNC_TIER_LOCAL: u32 = 1;
/// The remote tier, possibly shared with other instances.
pub const DATASYNC_TIER_CLOUD: u32 = 2;

/// Date strategy: one partition per year of `createdAt`.
pub const DATASYNC_DATE_YEAR: u32 = 1;
/// Date strategy: one partition per month of `createdAt`.
pub const DATASYNC_DATE_MONTH: u32 = 2;
/// Date strategy: one partition per day of `createdAt`.
pub const DATASYNC_DATE_DAY: u32 = 3;

/// A configuration being built; consumed by `datasync_instance_open`.
///
/// Defaults: global strategy, last writer wins, the built-in memory store, no local
/// and no cloud tier, store synced 50 ms after writes, cloud every 30 s, retries from
/// 1 s up to 300 s, clock skew bound 300 s, sync on open.
#[allow(non_camel_case_types)]
pub struct datasync_config {
    pub(crate) config: Config,
}

/// A blob map in memory that several instances can share as a tier (a cloud
/// stand-in for tests and demos).
#[allow(non_camel_case_types)]
pub struct datasync_memory {
    memory: MemoryPersistence,
}

/// # Safety
/// `config` is NULL or a live configuration not used by another thread meanwhile.
unsafe fn config_mut<'a>(config: *mut datasync_config) -> Result<&'a mut Config, Failure> {
    config
        .as_mut()
        .map(|c| &mut c.config)
        .ok_or(Failure::Null("config"))
}

/// The tier a `DATASYNC_TIER_*` number names.
pub(crate) fn tier_id(tier: u32) -> Result<TierId, Failure> {
    match tier {
        DATASYNC_TIER_STORE => Ok(TierId::Store),
        DATASYNC_TIER_LOCAL => Ok(TierId::Local),
        DATASYNC_TIER_CLOUD => Ok(TierId::Cloud),
        other => Err(Failure::Argument(format!(
            "{other} is not a DATASYNC_TIER_* number"
        ))),
    }
}

fn set_tier(config: &mut Config, tier: u32, adapter: Box<dyn Persistence>) -> Result<(), Failure> {
    match tier {
        DATASYNC_TIER_LOCAL => config.local = Some(adapter),
        DATASYNC_TIER_CLOUD => config.cloud = Some(adapter),
        other => {
            return Err(Failure::Argument(format!(
                "{other} is not DATASYNC_TIER_LOCAL or DATASYNC_TIER_CLOUD"
            )))
        }
    }
    Ok(())
}

/// Creates a configuration for instances whose partition keys start with `prefix`
/// (1-128 characters, no control characters, not starting with `!`; checked by
/// `datasync_instance_open`). Writes it to `*out` only on success.
///
/// Ownership: `prefix` is copied. The caller owns `*out` and passes it to
/// `datasync_instance_open` (which consumes it) or frees it with `datasync_config_free`.
/// Threads: any thread; a configuration is used by one thread at a time.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_new(
    prefix: *const c_char,
    out: *mut *mut datasync_config,
) -> datasync_code {
    boundary(|| {
        let prefix = str_in(prefix, "prefix")?;
        need_out(out, "out")?;
        write_out(
            out,
            Box::into_raw(Box::new(datasync_config {
                config: Config::new(prefix),
            })),
        );
        Ok(())
    })
}

/// Frees a configuration that was not opened, destroying the host vtables it holds.
/// NULL is ignored.
///
/// Ownership: takes `config`; do not use it afterwards.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_free(config: *mut datasync_config) {
    boundary(|| {
        if !config.is_null() {
            drop(Box::from_raw(config));
        }
        Ok(())
    })
}

/// Uses the global strategy: one partition per entity name (the default).
///
/// Ownership: `config` is borrowed.
/// Threads: one thread at a time per configuration.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_set_strategy_global(
    config: *mut datasync_config,
) -> datasync_code {
    boundary(|| {
        config_mut(config)?.strategy = Arc::new(GlobalStrategy);
        Ok(())
    })
}

/// Partitions by the year, month or day of `createdAt` (`DATASYNC_DATE_*`). Query
/// filter: `{"from": "<instant>", "to": "<instant>"}`.
///
/// Ownership: `config` is borrowed.
/// Threads: one thread at a time per configuration.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_set_strategy_date(
    config: *mut datasync_config,
    granularity: u32,
) -> datasync_code {
    boundary(|| {
        let config = config_mut(config)?;
        let granularity = match granularity {
            DATASYNC_DATE_YEAR => DateGranularity::Year,
            DATASYNC_DATE_MONTH => DateGranularity::Month,
            DATASYNC_DATE_DAY => DateGranularity::Day,
            other => {
                return Err(Failure::Argument(format!(
                    "{other} is not a DATASYNC_DATE_* granularity"
                )))
            }
        };
        config.strategy = Arc::new(DateStrategy::new(granularity));
        Ok(())
    })
}

/// Partitions by the value of one field (e.g. `"region"`). Query filter:
/// `{"values": [...]}` or `{"value": x}`. An empty `field` is
/// `DATASYNC_INVALID_CONFIG`, and the configuration keeps its strategy.
///
/// Ownership: `config` is borrowed; `field` is copied.
/// Threads: one thread at a time per configuration.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_set_strategy_field(
    config: *mut datasync_config,
    field: *const c_char,
) -> datasync_code {
    boundary(|| {
        let config = config_mut(config)?;
        let field = str_in(field, "field")?;
        config.strategy = Arc::new(FieldStrategy::try_new(field)?);
        Ok(())
    })
}

/// Uses a host key strategy.
///
/// Ownership: `config` is borrowed; `strategy` is copied and owned by the library
/// from this call on, whatever the outcome: its `destroy` runs exactly once (when
/// the configuration or the instance opened from it is freed, when it is replaced,
/// or before this call returns an error).
/// Threads: one thread at a time per configuration.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_set_strategy(
    config: *mut datasync_config,
    strategy: *const datasync_strategy_vtable,
) -> datasync_code {
    boundary(|| {
        let strategy = HostStrategy::take(strategy)?;
        config_mut(config)?.strategy = Arc::new(strategy);
        Ok(())
    })
}

/// Uses a host conflict resolver instead of last writer wins.
///
/// Ownership: `config` is borrowed; `resolver` is copied and owned by the library
/// from this call on, whatever the outcome (see `datasync_config_set_strategy`).
/// Threads: one thread at a time per configuration.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_set_resolver(
    config: *mut datasync_config,
    resolver: *const datasync_resolver_vtable,
) -> datasync_code {
    boundary(|| {
        let resolver = HostResolver::take(resolver)?;
        config_mut(config)?.resolver = Arc::new(resolver);
        Ok(())
    })
}

/// Sets tier `tier` (`DATASYNC_TIER_*`) to a host persistence vtable, replacing
/// what it was.
///
/// Ownership: `config` is borrowed; `persistence` is copied and owned by the
/// library from this call on, whatever the outcome: its `destroy` runs exactly once
/// (when the configuration or the instance opened from it is freed, when the tier
/// is replaced, when `datasync_instance_open` fails, or before this call returns an error).
/// Threads: one thread at a time per configuration.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_set_persistence(
    config: *mut datasync_config,
    tier: u32,
    persistence: *const datasync_persistence_vtable,
) -> datasync_code {
    boundary(|| {
        let adapter = HostPersistence::take(persistence)?;
        set_tier(config_mut(config)?, tier, Box::new(adapter))
    })
}

/// Sets tier `tier` (`DATASYNC_TIER_*`) to memory: `shared` (which several
/// instances may use at once), or a private map when `shared` is NULL.
///
/// Ownership: `config` and `shared` are borrowed; the tier keeps its own reference
/// to the map, so `shared` may be freed at any time.
/// Threads: one thread at a time per configuration.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_set_memory(
    config: *mut datasync_config,
    tier: u32,
    shared: *const datasync_memory,
) -> datasync_code {
    boundary(|| {
        let config = config_mut(config)?;
        let memory = shared
            .as_ref()
            .map_or_else(MemoryPersistence::new, |m| m.memory.clone());
        set_tier(config, tier, Box::new(memory))
    })
}

/// Sets tier `tier` (`DATASYNC_TIER_*`) to the crash-safe directory store at `path`
/// (created if missing). With `durable`, every write is synced to the disk (fsync);
/// without, writes are still atomic against a crash of the process, but not against
/// power loss. One directory serves one instance at a time.
///
/// Ownership: `config` is borrowed; `path` is copied.
/// Threads: one thread at a time per configuration.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_set_directory(
    config: *mut datasync_config,
    tier: u32,
    path: *const c_char,
    durable: bool,
) -> datasync_code {
    boundary(|| {
        let config = config_mut(config)?;
        let path = str_in(path, "path")?;
        if tier != DATASYNC_TIER_LOCAL && tier != DATASYNC_TIER_CLOUD {
            return Err(Failure::Argument(format!(
                "{tier} is not DATASYNC_TIER_LOCAL or DATASYNC_TIER_CLOUD"
            )));
        }
        let dir = DirPersistence::open_with(path, DirOptions { durable })?;
        set_tier(config, tier, Box::new(dir))
    })
}

/// Sets the cloud tier to the sync server at `url` (`http://` or `https://`),
/// authenticated by the bearer `token`, with timeouts of 5 s to connect and 30 s
/// per read (see `datasync_config_set_cloud_http_timeouts`). A bad URL or token is
/// `DATASYNC_INVALID_CONFIG`, and the configuration keeps its cloud tier.
///
/// Ownership: `config` is borrowed; `url` and `token` are copied.
/// Threads: one thread at a time per configuration.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_set_cloud_http(
    config: *mut datasync_config,
    url: *const c_char,
    token: *const c_char,
) -> datasync_code {
    boundary(|| {
        let config = config_mut(config)?;
        let (url, token) = (str_in(url, "url")?, str_in(token, "token")?);
        let http = HttpPersistence::new(url, token)?;
        config.cloud = Some(Box::new(http));
        Ok(())
    })
}

/// Sets the cloud tier to the sync server at `url` as
/// `datasync_config_set_cloud_http` does, with these timeouts in milliseconds
/// (each > 0): to connect, and for each read or write on the connection.
///
/// Ownership: `config` is borrowed; `url` and `token` are copied.
/// Threads: one thread at a time per configuration.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_set_cloud_http_timeouts(
    config: *mut datasync_config,
    url: *const c_char,
    token: *const c_char,
    connect_millis: u64,
    read_millis: u64,
) -> datasync_code {
    boundary(|| {
        let config = config_mut(config)?;
        let (url, token) = (str_in(url, "url")?, str_in(token, "token")?);
        let options = HttpOptions {
            connect_timeout: Duration::from_millis(connect_millis),
            read_timeout: Duration::from_millis(read_millis),
        };
        let http = HttpPersistence::with_options(url, token, options)?;
        config.cloud = Some(Box::new(http));
        Ok(())
    })
}

/// Sets the delay between a write and the store's sync to the tier below (writes
/// within it are coalesced), in milliseconds.
///
/// Ownership: `config` is borrowed.
/// Threads: one thread at a time per configuration.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_set_store_sync_delay(
    config: *mut datasync_config,
    millis: u64,
) -> datasync_code {
    boundary(|| {
        config_mut(config)?.store_sync_delay = Duration::from_millis(millis);
        Ok(())
    })
}

/// Bounded partitions: new entities go to sub-partitions of about `entities` each
/// (the default is 1,000); 0 keeps every partition the strategy gives whole
/// (README, "Bounded partitions").
///
/// Ownership: `config` is borrowed.
/// Threads: one thread at a time per configuration.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_set_partition_bound(
    config: *mut datasync_config,
    entities: u64,
) -> datasync_code {
    boundary(|| {
        config_mut(config)?.partition_bound = (entities > 0).then_some(entities);
        Ok(())
    })
}

/// Sets how often local and cloud are synced, in milliseconds (> 0).
///
/// Ownership: `config` is borrowed.
/// Threads: one thread at a time per configuration.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_set_cloud_sync_interval(
    config: *mut datasync_config,
    millis: u64,
) -> datasync_code {
    boundary(|| {
        config_mut(config)?.cloud_sync_interval = Duration::from_millis(millis);
        Ok(())
    })
}

/// Sets the first retry delay after a cloud failure and its cap, in milliseconds
/// (0 < base <= max).
///
/// Ownership: `config` is borrowed.
/// Threads: one thread at a time per configuration.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_set_retry(
    config: *mut datasync_config,
    base_millis: u64,
    max_millis: u64,
) -> datasync_code {
    boundary(|| {
        let config = config_mut(config)?;
        config.retry_base = Duration::from_millis(base_millis);
        config.retry_max = Duration::from_millis(max_millis);
        Ok(())
    })
}

/// Sets how far ahead of now a stamp from another tier may be and still be adopted
/// into the instance clock, in milliseconds.
///
/// Ownership: `config` is borrowed.
/// Threads: one thread at a time per configuration.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_set_max_clock_skew(
    config: *mut datasync_config,
    millis: u64,
) -> datasync_code {
    boundary(|| {
        config_mut(config)?.max_clock_skew = Duration::from_millis(millis);
        Ok(())
    })
}

/// Whether to sync local and cloud as soon as the instance opens (default true).
///
/// Ownership: `config` is borrowed.
/// Threads: one thread at a time per configuration.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_set_sync_on_open(
    config: *mut datasync_config,
    yes: bool,
) -> datasync_code {
    boundary(|| {
        config_mut(config)?.sync_on_open = yes;
        Ok(())
    })
}

/// How the blob tiers keep partitions: 2 (the default), write-once pieces and a
/// small index per partition; 1, one document per partition, for a cloud shared
/// with devices that do not read format 2 yet. Another value is refused when the
/// instance opens (`DATASYNC_INVALID_CONFIG`).
///
/// Ownership: `config` is borrowed.
/// Threads: one thread at a time per configuration.
#[no_mangle]
pub unsafe extern "C" fn datasync_config_set_format(
    config: *mut datasync_config,
    format: u32,
) -> datasync_code {
    boundary(|| {
        config_mut(config)?.format = format;
        Ok(())
    })
}

/// Creates an empty shared memory map for `datasync_config_set_memory`; writes it to
/// `*out`.
///
/// Ownership: the caller owns `*out` and frees it with `datasync_memory_free`; tiers
/// using it keep the data alive on their own.
/// Threads: any thread; the map is thread-safe.
#[no_mangle]
pub unsafe extern "C" fn datasync_memory_new(out: *mut *mut datasync_memory) -> datasync_code {
    boundary(|| {
        need_out(out, "out")?;
        write_out(
            out,
            Box::into_raw(Box::new(datasync_memory {
                memory: MemoryPersistence::new(),
            })),
        );
        Ok(())
    })
}

/// Releases the caller's reference to a shared memory map. NULL is ignored.
///
/// Ownership: takes `memory`; do not use it afterwards.
/// Threads: any thread.
#[no_mangle]
pub unsafe extern "C" fn datasync_memory_free(memory: *mut datasync_memory) {
    boundary(|| {
        if !memory.is_null() {
            drop(Box::from_raw(memory));
        }
        Ok(())
    })
}
