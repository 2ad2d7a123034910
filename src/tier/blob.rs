//! Blob tiers (local, cloud): the metadata is a document in the adapter, read when
//! needed (always again for a shared tier) and written back once it changed.

use std::collections::BTreeSet;

use super::{audit, Marks, Tier};
use crate::clock::{now_millis, Millis};
use crate::error::Result;
use crate::meta::{is_reserved, Meta, DAMAGED, META_KEY, ROOT_KEY};

#[derive(Default)]
pub(super) struct BlobMarks {
    /// Whether the metadata was read from the adapter.
    pub loaded: bool,
    /// Entries changed since the metadata was last stored.
    pub meta_changed: bool,
    /// Keys whose entries this process changed since the metadata was last stored:
    /// ours to keep when another writer stored the metadata meanwhile.
    pub touched: BTreeSet<String>,
    /// The metadata document and root as last read or written here (`None`:
    /// absent): what a conditional write of a shared tier expects to replace.
    pub meta_held: Option<Vec<u8>>,
    pub root_held: Option<Vec<u8>>,
    /// Format 2: the metadata tree as last read or written.
    pub tree: super::summary::TreeHeld,
}

/// How many times a write of a shared tier's metadata is merged and tried again
/// when another writer stored it meanwhile.
const META_ATTEMPTS: usize = 8;

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
            state.note_touched(key);
        }
        log::error!(target: "datasync::tier", "{} partition {key:?} is unreadable; reads of it fail until a sync restores it", self.label);
        if let Err(e) = self.persist_meta(now) {
            log::warn!(target: "datasync::tier", "cannot record that {key:?} is damaged: {e}");
        }
    }

    /// Whether the metadata held in memory is the adapter's (read once for a tier no
    /// one else writes).
    pub(super) fn meta_is_current(&self) -> bool {
        let state = self.state.lock();
        matches!(&state.marks, Marks::Blobs(m) if m.loaded && !self.shared)
    }

    pub(super) fn blob_root(&self) -> Result<String> {
        if self.is_pieces() {
            return self.tree_root();
        }
        if self.meta_is_current() {
            return Ok(self.state.lock().meta.root());
        }
        let stored = self.load(ROOT_KEY)?;
        if let Marks::Blobs(marks) = &mut self.state.lock().marks {
            marks.root_held.clone_from(&stored);
        }
        match stored {
            Some(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            None => Ok(self.blob_meta()?.root()),
        }
    }

    pub(super) fn blob_meta(&self) -> Result<Meta> {
        if self.is_pieces() {
            return self.tree_meta_from(false);
        }
        if self.meta_is_current() {
            return Ok(self.state.lock().meta.clone());
        }
        let stored = self.load(META_KEY)?;
        let (meta, rebuilt) = match stored.as_deref() {
            // No metadata over existing partitions (it was lost or moved aside): rebuild.
            None if self.lists_partitions()? => {
                log::warn!(target: "datasync::tier", "{} metadata is missing; rebuilding it", self.label);
                (self.rebuild_meta()?, true)
            }
            None => (Meta::default(), false),
            Some(bytes) => match Meta::parse(bytes) {
                // Two devices syncing a shared tier at once can leave one's root beside
                // the other's metadata; a device whose own root matches would then never
                // look again. Rewriting both makes every device compare afresh.
                Ok(meta) if self.shared && self.root_disagrees(&meta)? => {
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
            marks.touched.clear();
            // Only a shared tier's writes are conditional: no need to keep the bytes else.
            marks.meta_held = if self.shared { stored } else { None };
        }
        Ok(meta)
    }

    /// Whether the stored root is not the root of `meta` (read to compare; the root
    /// read is what a conditional write of the root then expects).
    fn root_disagrees(&self, meta: &Meta) -> Result<bool> {
        let root = self.load(ROOT_KEY)?;
        let disagrees = root.as_deref().is_some_and(|r| r != meta.root().as_bytes());
        if let Marks::Blobs(marks) = &mut self.state.lock().marks {
            marks.root_held = root;
        }
        Ok(disagrees)
    }

    /// Whether the adapter lists any partition key (false when it cannot list); in
    /// format 2, an index or the list of partitions a conversion could not convert.
    pub(super) fn lists_partitions(&self) -> Result<bool> {
        let pieces = self.is_pieces();
        Ok(self.list()?.is_some_and(|keys| {
            keys.iter().any(|k| {
                if pieces {
                    k.starts_with("!index:") || k == crate::pieces::UNCONVERTED_KEY
                } else {
                    !is_reserved(k)
                }
            })
        }))
    }

    /// Rebuilds metadata from the partitions the adapter lists.
    pub(super) fn rebuild_meta(&self) -> Result<Meta> {
        if self.is_pieces() {
            return self.rebuild_pieces_meta();
        }
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
        {
            let mut state = self.state.lock();
            let Marks::Blobs(marks) = &mut state.marks else {
                return Ok(());
            };
            if !marks.meta_changed {
                return Ok(());
            }
            marks.meta_changed = false;
            state.meta.updated_at = now;
        }
        let stored = if self.is_pieces() {
            self.store_tree()
        } else {
            self.store_meta_and_root()
        };
        let result = stored.and_then(|_| {
            self.with_adapter(|a| a.blobs().commit())
                .map_err(self.adapter_err(META_KEY))
        });
        if result.is_err() {
            self.state.lock().note_meta_changed();
        }
        result
    }

    /// Stores the metadata, then its root. On a shared tier each is a conditional
    /// write of what was last read: when another writer stored the metadata
    /// meanwhile, its document is taken and the entries this process changed are put
    /// into it (theirs are kept), and the root written is the root of the document
    /// that is stored, so a root never describes a document another writer replaced.
    fn store_meta_and_root(&self) -> Result<()> {
        for _ in 0..META_ATTEMPTS {
            let (bytes, held) = self.meta_to_store();
            if self.put_if(META_KEY, held.as_deref(), &bytes)? {
                let held = self.shared.then_some(bytes);
                self.with_blob_marks(|m| {
                    m.meta_held = held;
                    m.touched.clear();
                });
                return self.store_root();
            }
            self.adopt_stored_meta()?;
        }
        Err(crate::Error::adapter(
            self.label,
            META_KEY,
            "the metadata kept changing while it was written (too many writers at once); the next sync writes it",
        ))
    }

    fn meta_to_store(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let state = self.state.lock();
        let held = match &state.marks {
            Marks::Blobs(m) => m.meta_held.clone(),
            Marks::Store(_) => None,
        };
        (state.meta.to_bytes(), held)
    }

    pub(super) fn with_blob_marks<R>(&self, f: impl FnOnce(&mut BlobMarks) -> R) -> Option<R> {
        match &mut self.state.lock().marks {
            Marks::Blobs(marks) => Some(f(marks)),
            Marks::Store(_) => None,
        }
    }

    /// Another writer stored the metadata since it was read here: takes its document
    /// and puts into it the entries this process changed. Where the other writer
    /// recorded a different entry for one of those partitions, neither entry can be
    /// trusted to be the later one (partition writes are ordered by the tier, entry
    /// writes by whoever stores the metadata last): the partition is read again and
    /// the entry describes what the tier holds.
    fn adopt_stored_meta(&self) -> Result<()> {
        let stored = self.load(META_KEY)?;
        let theirs = stored.as_deref().map(Meta::parse);
        let disputed: Vec<String> = match &theirs {
            Some(Ok(theirs)) => {
                let state = self.state.lock();
                match &state.marks {
                    Marks::Blobs(marks) => marks
                        .touched
                        .iter()
                        .filter(|key| {
                            let ours = state.meta.entries.get(*key).map(|e| &e.hash);
                            let other = theirs.entries.get(*key).map(|e| &e.hash);
                            other.is_some() && ours != other
                        })
                        .cloned()
                        .collect(),
                    Marks::Store(_) => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        // Adapter calls outside the state lock.
        let reread = self.entries_as_held(disputed)?;
        let mut state = self.state.lock();
        let state = &mut *state;
        let Marks::Blobs(marks) = &mut state.marks else {
            return Ok(());
        };
        if let Some(Ok(mut theirs)) = theirs {
            for key in &marks.touched {
                match state.meta.entries.get(key) {
                    Some(entry) => {
                        theirs.entries.insert(key.clone(), entry.clone());
                    }
                    None => {
                        theirs.entries.remove(key);
                    }
                }
            }
            for (key, entry) in reread {
                match entry {
                    Some(entry) => {
                        theirs.entries.insert(key, entry);
                    }
                    None => {
                        theirs.entries.remove(&key);
                    }
                }
            }
            theirs.updated_at = state.meta.updated_at;
            state.meta = theirs;
        }
        // A damaged or vanished document is replaced by ours as it is.
        marks.meta_held = stored;
        Ok(())
    }

    /// The entry of each key as the tier holds the partition now (`None`: absent),
    /// for entries two writers disputed. Called without the state lock.
    pub(super) fn entries_as_held(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<crate::meta::MetaEntry>)>> {
        let mut reread = Vec::with_capacity(keys.len());
        for key in keys {
            let entry = match self.load_raw(&key)? {
                Some(raw) => Some(raw.finish(self.label, &key, None)?.entry(now_millis())),
                None => None,
            };
            reread.push((key, entry));
        }
        Ok(reread)
    }

    /// Stores the root of the metadata just stored. When another writer stored a
    /// root meanwhile, the root written is that of the metadata the tier holds now.
    fn store_root(&self) -> Result<()> {
        let mut root = self.state.lock().meta.root();
        for _ in 0..META_ATTEMPTS {
            let held = self.with_blob_marks(|m| m.root_held.clone()).flatten();
            if self.put_if(ROOT_KEY, held.as_deref(), root.as_bytes())? {
                self.with_blob_marks(|m| m.root_held = Some(root.into_bytes()));
                return Ok(());
            }
            let stored_root = self.load(ROOT_KEY)?;
            if let Some(Ok(meta)) = self.load(META_KEY)?.as_deref().map(Meta::parse) {
                root = meta.root();
            }
            self.with_blob_marks(|m| m.root_held = stored_root);
        }
        Err(crate::Error::adapter(
            self.label,
            ROOT_KEY,
            "the root kept changing while it was written (too many writers at once); the next sync writes it",
        ))
    }
}
