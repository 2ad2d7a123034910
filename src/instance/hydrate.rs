//! Hydration: reading a partition the store lacks loads it from local, else from the
//! cloud (writing it down to local on the way). One thread loads a key; other readers
//! of that key wait for it.

use super::Inner;
use crate::clock::now_millis;
use crate::error::Result;

impl Inner {
    /// Makes sure the store holds partition `key`, loading it the first time.
    pub(crate) fn ensure_present(&self, key: &str) -> Result<()> {
        {
            let mut hydrating = self.hydrating.lock();
            loop {
                if self.store.holds(key) {
                    return Ok(());
                }
                if !hydrating.contains(key) {
                    hydrating.insert(key.to_string());
                    break;
                }
                self.hydrated.wait(&mut hydrating);
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
        let mut found = None;
        if let Some(local) = &self.local {
            let expected = local.entry(key).map(|e| e.hash);
            found = local.load_partition(key, expected.as_deref())?;
        }
        if found.is_none() {
            if let Some(cloud) = self.cloud.as_ref().filter(|_| self.status.lock().online) {
                match cloud.load_partition(key, None) {
                    Ok(Some(loaded)) => {
                        if let Some(local) = &self.local {
                            local.write_partition(key, &loaded, now_millis(), None)?;
                            local.persist_meta(now_millis())?;
                        }
                        found = Some(loaded);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        log::warn!(target: "datasync::instance", "cannot hydrate {key:?} from the cloud: {e}")
                    }
                }
            }
        }
        if let Some(loaded) = found {
            if !self
                .store
                .write_partition(key, &loaded, now_millis(), Some(guard))?
            {
                // Written meanwhile (a sync brought it up): the store already has it.
                log::debug!(target: "datasync::instance", "{key:?} changed while hydrating; keeping the store's");
            }
        }
        Ok(())
    }
}
