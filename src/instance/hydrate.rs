//! Hydration: reading a partition the store lacks loads it from local, else from the
//! cloud (writing it down to local on the way). One thread loads a key; other readers
//! of that key wait for it.

use super::Inner;
use crate::clock::now_millis;
use crate::error::{Error, ErrorKind, Result};
use crate::tier::{Loaded, Tier};

impl Inner {
    /// Makes sure the store holds partition `key`, loading it the first time.
    pub(crate) fn ensure_present(&self, key: &str) -> Result<()> {
        {
            let mut hydrating = self.hydrating.lock();
            loop {
                // The store holds the partition as soon as the hydration wrote it,
                // but what it reflects of the tier below is recorded after that: a
                // write before then would not be tracked for the next flush.
                if hydrating.contains(key) {
                    self.hydrated.wait(&mut hydrating);
                    continue;
                }
                if self.store.holds(key) {
                    return Ok(());
                }
                hydrating.insert(key.to_string());
                break;
            }
        }
        let result = self.hydrate(key);
        let mut hydrating = self.hydrating.lock();
        hydrating.remove(key);
        if result.is_ok() {
            self.store.mark_present(key);
        }
        drop(hydrating);
        self.hydrated.notify_all();
        result
    }

    fn hydrate(&self, key: &str) -> Result<()> {
        let guard = self.store.generation(key);
        let (mut found, damaged) = match &self.local {
            Some(local) => self.load_local(local, key)?,
            None => (None, None),
        };
        if found.is_none() {
            found = self.load_from_cloud(key)?;
        }
        match (found, damaged) {
            (Some(loaded), _) => {
                if !self
                    .store
                    .write_partition(key, &loaded, now_millis(), Some(guard), None)?
                {
                    // Written meanwhile (a sync brought it up): the store already has it.
                    log::debug!(target: "datasync::instance", "{key:?} changed while hydrating; keeping the store's");
                } else if let Some(local) = self.local.as_ref().filter(|l| l.is_pieces()) {
                    // The store holds what local holds: a flush appends what is
                    // written from now on.
                    if let (Some(entry), Some(vector)) = (
                        local.entry(key).filter(|e| e.hash == loaded.entry_hash()),
                        loaded.vector.clone(),
                    ) {
                        self.store.set_reflects(key, &entry.hash, vector);
                    }
                }
                Ok(())
            }
            // Known to exist, unreadable here, and no other tier restored it: reading
            // it as absent would be a wrong answer.
            (None, Some(why)) => Err(Error::corrupt(
                "local",
                key,
                format!(
                    "{why}; reads of it fail until a sync with a tier that holds it restores it"
                ),
            )),
            (None, None) => Ok(()),
        }
    }

    /// Reads a partition from the local tier and checks it against the local
    /// metadata. A partition the metadata records that is missing, damaged, or not
    /// the recorded one (an older copy put back) is marked damaged and comes back as
    /// the reason, so that the cloud can restore it.
    fn load_local(&self, local: &Tier, key: &str) -> Result<(Option<Loaded>, Option<String>)> {
        let expected = local.entry(key).map(|e| e.hash);
        let why = match local.load_partition(key, expected.as_deref()) {
            Ok(Some(loaded)) => match &expected {
                Some(hash) if hash != loaded.entry_hash() => format!(
                    "partition {key:?} is not the one its metadata records (an older copy, or changed outside datasync)"
                ),
                _ => return Ok((Some(loaded), None)),
            },
            Ok(None) if expected.is_some() => format!(
                "partition {key:?} is recorded in the metadata but missing (moved aside as corrupt?)"
            ),
            Ok(None) => return Ok((None, None)),
            Err(e) if e.kind() == ErrorKind::Corrupt => e.to_string(),
            Err(e) => return Err(e),
        };
        local.mark_damaged(key, now_millis());
        Ok((None, Some(why)))
    }

    /// Reads a partition from the cloud (when online), writing it down to local.
    fn load_from_cloud(&self, key: &str) -> Result<Option<Loaded>> {
        let Some(cloud) = self.cloud.as_ref().filter(|_| self.status.lock().online) else {
            return Ok(None);
        };
        if let Some(local) = self.local.as_ref().filter(|l| l.is_pieces()) {
            // Pieces are copied as they are, then read from local.
            return match cloud
                .ensure_format()
                .and_then(|_| local.sync_pieces(cloud, key, now_millis(), None))
            {
                Ok(_) => {
                    local.persist_meta(now_millis())?;
                    local.load_partition(key, None)
                }
                Err(e) if e.kind() == ErrorKind::Corrupt => Err(e),
                Err(e) => {
                    log::warn!(target: "datasync::instance", "cannot hydrate {key:?} from the cloud: {e}");
                    Ok(None)
                }
            };
        }
        match cloud.load_partition(key, None) {
            Ok(Some(loaded)) => {
                if let Some(local) = &self.local {
                    local.write_partition(key, &loaded, now_millis(), None, None)?;
                    local.persist_meta(now_millis())?;
                }
                Ok(Some(loaded))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                log::warn!(target: "datasync::instance", "cannot hydrate {key:?} from the cloud: {e}");
                Ok(None)
            }
        }
    }
}
