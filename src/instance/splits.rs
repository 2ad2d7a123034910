//! How deep an instance splits each base partition for the entities it creates
//! ([`crate::split`]): an estimate, per base, of how many entities of its name it
//! holds.
//!
//! The estimate is the larger of the count the tier below records (refreshed every
//! [`RECOUNT_EVERY`] new entities or [`RECOUNT_AFTER`]) and what this instance has
//! seen plus what it created since. It never goes down, so deletes do not send new
//! entities back into full partitions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::lock::Mutex;
use crate::split::depth_for;

/// New entities of one base between two recounts.
const RECOUNT_EVERY: u32 = 64;
/// The longest an estimate goes without a recount while entities are created.
const RECOUNT_AFTER: Duration = Duration::from_secs(1);

struct Estimate {
    /// The most this instance has known under the base, plus what it created since.
    floor: u64,
    /// New entities since the last recount.
    since: u32,
    at: Instant,
}

pub(crate) struct Splits {
    bound: u64,
    bases: Mutex<HashMap<String, Estimate>>,
}

impl Splits {
    pub fn new(bound: u64) -> Splits {
        Splits {
            bound: bound.max(1),
            bases: Mutex::new(HashMap::new()),
        }
    }

    /// The depth of one new entity under `base`. `recount` gives the count the tier
    /// below records; it is called without any lock of this map held.
    pub fn depth_of_new(&self, base: &str, recount: impl FnOnce() -> u64) -> u32 {
        let now = Instant::now();
        let stale =
            self.bases.lock().get(base).is_none_or(|e| {
                e.since >= RECOUNT_EVERY || now.duration_since(e.at) > RECOUNT_AFTER
            });
        let recorded = stale.then(recount);
        let mut bases = self.bases.lock();
        let estimate = match bases.get_mut(base) {
            Some(e) => e,
            None => bases.entry(base.to_string()).or_insert(Estimate {
                floor: 0,
                since: 0,
                at: now,
            }),
        };
        if let Some(recorded) = recorded {
            estimate.floor = estimate.floor.max(recorded);
            estimate.since = 0;
            estimate.at = now;
        }
        let total = estimate.floor;
        estimate.floor += 1;
        estimate.since += 1;
        depth_for(total, self.bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_counts_what_it_creates_and_never_goes_down() {
        let splits = Splits::new(10);
        let depths: Vec<u32> = (0..40).map(|_| splits.depth_of_new("k", || 0)).collect();
        assert_eq!(&depths[..10], &[0; 10]);
        assert_eq!(&depths[10..30], &[1; 20]);
        assert_eq!(&depths[30..], &[2; 10]);
        // A recount that finds fewer (deletes) does not lower the depth; one that
        // finds more (entities from elsewhere) raises it.
        let fresh = Splits::new(10);
        assert_eq!(fresh.depth_of_new("k", || 75), 3);
        assert_eq!(fresh.depth_of_new("other", || 0), 0);
    }
}
