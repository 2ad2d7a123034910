//! One process-wide `log` logger that forwards records to host callbacks (C log
//! vtables, UniFFI loggers). Sinks are called outside any lock.

use std::sync::{Arc, OnceLock};

use crate::lock::RwLock;

/// A host log sink: (level, target, message).
pub type Sink = Arc<dyn Fn(log::Level, &str, &str) + Send + Sync>;

struct Bridge {
    sinks: RwLock<Vec<(u64, Sink)>>,
    next: std::sync::atomic::AtomicU64,
}

static BRIDGE: OnceLock<Bridge> = OnceLock::new();

struct Forwarder;

impl log::Log for Forwarder {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target().starts_with("datasync")
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Some(bridge) = BRIDGE.get() else { return };
        let sinks: Vec<Sink> = bridge.sinks.read().iter().map(|(_, s)| s.clone()).collect();
        if sinks.is_empty() {
            return;
        }
        let message = record.args().to_string();
        for sink in sinks {
            sink(record.level(), record.target(), &message);
        }
    }

    fn flush(&self) {}
}

fn bridge() -> &'static Bridge {
    BRIDGE.get_or_init(|| {
        // Another logger may already be installed by the host app; then sinks get nothing
        // and the host's logger sees our records instead.
        if log::set_logger(&Forwarder).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
        Bridge {
            sinks: RwLock::new(Vec::new()),
            next: std::sync::atomic::AtomicU64::new(1),
        }
    })
}

/// Adds a sink; returns its handle for [`remove_sink`].
pub fn add_sink(sink: Sink, max_level: log::LevelFilter) -> u64 {
    let bridge = bridge();
    let id = bridge
        .next
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    bridge.sinks.write().push((id, sink));
    if max_level > log::max_level() {
        log::set_max_level(max_level);
    }
    id
}

/// Removes a sink. Removing an unknown handle does nothing.
pub fn remove_sink(id: u64) {
    if let Some(bridge) = BRIDGE.get() {
        bridge.sinks.write().retain(|(i, _)| *i != id);
    }
}
