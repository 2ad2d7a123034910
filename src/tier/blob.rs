//! Blob tiers (local, cloud): the metadata is a document in the adapter, read when
//! needed (always again for a shared tier) and written back once it changed.

use super::{audit, Marks, Tier};
use crate::clock::Millis;
use crate::error::Result;
use crate::meta::{is_reserved, Meta, DAMAGED, META_KEY, ROOT_KEY};

#[derive(Default)]
pub(super) struct BlobMarks {
    /// Whether the metadata was read from the adapter.
    pub loaded: bool,
    /// Entries changed since the metadata was last stored.
    pub meta_changed: bool,
}

impl Tier {
    /// Records that partition `key` exists but cannot be read as recorded (see
    /// [`DAMAGED`]) and stores the metadata so that the next sync, in this process
    /// or another, restores it.
    pub fn mark_damaged(&self, key: &str, now: Millis) {
        {
            let mut state = self.state.lock();
            let Some(entry) = state.meta.entries.get_mut(key) else {
                return;
            };
            if entry.hash == DAMAGED {
                return;
            }
            entry.hash = DAMAGED.to_string();
            state.note_meta_changed();
        }
        log::error!(target: "datasync::tier", "{} partition {key:?} is unreadable; reads of it fail until a sync restores it", self.label);
        if let Err(e) = self.persist_meta(now) {
            log::warn!(target: "datasync::tier", "cannot record that {key:?} is damaged: {e}");
        }
    }

    /// Whether the metadata held in memory is the adapter's (read once for a tier no
    /// one else writes).
    fn meta_is_current(&self) -> bool {
        let state = self.state.lock();
        matches!(&state.marks, Marks::Blobs(m) if m.loaded && !self.shared)
    }

    pub(super) fn blob_root(&self) -> Result<String> {
        if self.meta_is_current() {
            return Ok(self.state.lock().meta.root());
        }
        match self.load(ROOT_KEY)? {
            Some(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            None => Ok(self.blob_meta()?.root()),
        }
    }

    pub(super) fn blob_meta(&self) -> Result<Meta> {
        if self.meta_is_current() {
            return Ok(self.state.lock().meta.clone());
        }
        let (meta, rebuilt) = match self.load(META_KEY)? {
            // No metadata over existing partitions (it was lost or moved aside): rebuild.
            None if self.lists_partitions()? => {
                log::warn!(target: "datasync::tier", "{} metadata is missing; rebuilding it", self.label);
                (self.rebuild_meta()?, true)
            }
            None => (Meta::default(), false),
            Some(bytes) => match Meta::parse(&bytes) {
                // Two devices syncing a shared tier at once can leave one's root beside
                // the other's metadata; a device whose own root matches would then never
                // look again. Rewriting both makes every device compare afresh.
                Ok(meta)
                    if self.shared
                        && self
                            .load(ROOT_KEY)?
                            .is_some_and(|r| r != meta.root().as_bytes()) =>
                {
                    log::warn!(target: "datasync::tier", "{} root and metadata disagree; rewriting both", self.label);
                    (meta, true)
                }
                Ok(meta) => (meta, false),
                Err(why) => {
                    log::warn!(target: "datasync::tier", "{} metadata is damaged ({why}); rebuilding it", self.label);
                    (self.rebuild_meta()?, true)
                }
            },
        };
        let mut state = self.state.lock();
        state.meta = meta.clone();
        if let Marks::Blobs(marks) = &mut state.marks {
            marks.loaded = true;
            // A rebuilt document is not what the adapter holds: store it at the next chance.
            marks.meta_changed = rebuilt;
        }
        Ok(meta)
    }

    /// Whether the adapter lists any partition key (false when it cannot list).
    fn lists_partitions(&self) -> Result<bool> {
        Ok(self
            .list()?
            .is_some_and(|keys| keys.iter().any(|k| !is_reserved(k))))
    }

    /// Rebuilds metadata from the partitions the adapter lists.
    fn rebuild_meta(&self) -> Result<Meta> {
        let listed = self.list()?.unwrap_or_default();
        let found = audit::audit(self.label, Some(listed), None, None, |key| self.load(key));
        for problem in &found.problems {
            log::error!(target: "datasync::tier", "while rebuilding metadata: {problem}");
        }
        Ok(found.rebuilt)
    }

    /// Stores the metadata and its root if they changed, then tells the adapter that
    /// everything written before is described (blob tiers only).
    pub fn persist_meta(&self, now: Millis) -> Result<()> {
        let (bytes, root) = {
            let mut state = self.state.lock();
            let Marks::Blobs(marks) = &mut state.marks else {
                return Ok(());
            };
            if !marks.meta_changed {
                return Ok(());
            }
            marks.meta_changed = false;
            state.meta.updated_at = now;
            (state.meta.to_bytes(), state.meta.root())
        };
        let result = self
            .store(META_KEY, &bytes)
            .and_then(|_| self.store(ROOT_KEY, root.as_bytes()))
            .and_then(|_| {
                self.with_adapter(|a| a.blobs().commit())
                    .map_err(self.adapter_err(META_KEY))
            });
        if result.is_err() {
            self.state.lock().note_meta_changed();
        }
        result
    }
}
