//! Blob tiers in format 2: the metadata is a tree of small documents
//! (`crate::model::summary`). A read descends only into the nodes whose hash
//! changed since this process last read them; a write stores the leaves of the
//! partitions it changed, their nodes, the top and the root. On a shared tier each
//! document is a conditional write of what was last read; when another writer
//! stored one meanwhile, its document is taken and ours merged into it, as the
//! one-document metadata of format 1 is (`super::blob`). The top is stored under
//! the root's key: its hash is the root, so a no-op sync reads it alone.

use std::collections::{BTreeMap, BTreeSet};

use super::{Marks, Tier};
use crate::error::{Error, Result};
use crate::meta::{Meta, MetaEntry, ROOT_KEY};
use crate::summary::{
    all_leaves, children_of, leaf_bytes, leaf_hash, leaf_of, node_key, parse_leaf, Node,
};

/// What this process last read or wrote of a tier's metadata tree.
#[derive(Default)]
pub(super) struct TreeHeld {
    /// Nodes by path ("" the top).
    nodes: BTreeMap<String, Node>,
    /// Leaves by name: hash and entries.
    leaves: BTreeMap<String, (String, BTreeMap<String, MetaEntry>)>,
    /// Shared tier: each document's bytes as last read or written here, by path
    /// (absent: expected absent).
    held: BTreeMap<String, Vec<u8>>,
    /// The top as the root was just read from it.
    peeked: Option<Vec<u8>>,
    /// Every document is to be written (the metadata was rebuilt).
    all: bool,
    /// Nodes whose listing disagreed with their children when read: the next write
    /// lists the children as they are.
    torn: BTreeSet<String>,
}

impl TreeHeld {
    /// Records the bytes the document at `path` was just read as (`None`: absent).
    fn hold(&mut self, path: &str, stored: Option<Vec<u8>>) {
        match stored {
            Some(bytes) => self.held.insert(path.to_string(), bytes),
            None => self.held.remove(path),
        };
    }
}

/// How many times a conditional write of one document is merged and tried again.
const ATTEMPTS: usize = 8;

enum Read {
    Empty,
    Rebuild(String),
    Tree { meta: Meta, tree: TreeHeld },
}

fn hash_of(entries: &BTreeMap<String, MetaEntry>) -> String {
    leaf_hash(entries.iter().map(|(k, e)| (k.as_str(), e.hash.as_str())))
}

impl Tier {
    fn with_tree<R>(&self, f: impl FnOnce(&mut TreeHeld) -> R) -> R {
        let mut state = self.state.lock();
        match &mut state.marks {
            Marks::Blobs(marks) => f(&mut marks.tree),
            Marks::Store(_) => f(&mut TreeHeld::default()),
        }
    }

    /// The root (the hash of the top) as stored, the top re-read when shared.
    /// Format 2 only.
    pub(super) fn tree_root(&self) -> Result<String> {
        if self.meta_is_current() {
            return Ok(self.state.lock().meta.tree_root());
        }
        let stored = self.load(ROOT_KEY)?;
        match stored.as_deref().map(|b| Node::parse("", b)) {
            Some(Ok(top)) => {
                // Kept for the read of the tree that may follow (`Tier::meta_after_root`).
                self.with_tree(|t| t.peeked = stored);
                Ok(top.hash())
            }
            _ => Ok(self.tree_meta_from(false)?.tree_root()),
        }
    }

    /// The metadata as stored, read where it changed since last read; with
    /// `after_root`, from the top the root was just read from. Format 2 only.
    pub(super) fn tree_meta_from(&self, after_root: bool) -> Result<Meta> {
        let peeked = self.with_tree(|t| t.peeked.take()).filter(|_| after_root);
        if self.meta_is_current() {
            return Ok(self.state.lock().meta.clone());
        }
        let (meta, tree, rebuilt) = match self.read_tree(peeked)? {
            Read::Empty => (Meta::default(), TreeHeld::default(), false),
            Read::Rebuild(why) => {
                log::warn!(target: "datasync::tier", "{} metadata is {why}; rebuilding it", self.label);
                let mut tree = TreeHeld {
                    all: true,
                    ..TreeHeld::default()
                };
                self.with_tree(|t| tree.held = std::mem::take(&mut t.held));
                (self.rebuild_meta()?, tree, true)
            }
            Read::Tree { meta, tree } => (meta, tree, false),
        };
        let mut state = self.state.lock();
        state.meta = meta.clone();
        if let Marks::Blobs(marks) = &mut state.marks {
            marks.loaded = true;
            marks.meta_changed = rebuilt || !tree.torn.is_empty();
            marks.touched.clear();
            marks.tree = tree;
        }
        Ok(meta)
    }

    /// Reads the tree from the top, loading the nodes and leaves whose hash is not
    /// the one last read here.
    fn read_tree(&self, peeked: Option<Vec<u8>>) -> Result<Read> {
        let (old_nodes, old_leaves, mut held) =
            self.with_tree(|t| (t.nodes.clone(), t.leaves.clone(), t.held.clone()));
        let top_bytes = match peeked {
            Some(bytes) => Some(bytes),
            None => self.load(ROOT_KEY)?,
        };
        let Some(top_bytes) = top_bytes else {
            return Ok(if self.lists_partitions()? {
                Read::Rebuild("missing".into())
            } else {
                Read::Empty
            });
        };
        let top = match Node::parse("", &top_bytes) {
            Ok(top) => top,
            Err(why) => return Ok(Read::Rebuild(format!("damaged ({why})"))),
        };
        if self.shared {
            held.insert(String::new(), top_bytes);
        }
        let mut tree = TreeHeld::default();
        for (path, hash) in &top.children {
            let node = match old_nodes.get(path) {
                Some(node) if node.hash() == *hash => node.clone(),
                _ => {
                    // Children are written before their parent and never removed:
                    // a listed child that is gone was lost.
                    let Some(bytes) = self.load(&node_key(path))? else {
                        return Ok(Read::Rebuild(format!("missing its node {path:?}")));
                    };
                    let node = match Node::parse(path, &bytes) {
                        Ok(node) => node,
                        Err(why) => return Ok(Read::Rebuild(format!("damaged ({why})"))),
                    };
                    if self.shared {
                        held.insert(path.clone(), bytes);
                    }
                    if node.hash() != *hash {
                        tree.torn.insert(String::new());
                    }
                    node
                }
            };
            for (name, hash) in &node.children {
                let leaf = match old_leaves.get(name) {
                    Some(leaf) if leaf.0 == *hash => leaf.clone(),
                    _ => {
                        let Some(bytes) = self.load(&node_key(name))? else {
                            return Ok(Read::Rebuild(format!("missing its leaf {name:?}")));
                        };
                        let entries = match parse_leaf(name, &bytes) {
                            Ok(entries) => entries,
                            Err(why) => return Ok(Read::Rebuild(format!("damaged ({why})"))),
                        };
                        if self.shared {
                            held.insert(name.clone(), bytes);
                        }
                        let found = hash_of(&entries);
                        if found != *hash {
                            tree.torn.insert(path.clone());
                        }
                        (found, entries)
                    }
                };
                tree.leaves.insert(name.clone(), leaf);
            }
            tree.nodes.insert(path.clone(), node);
        }
        let meta = Meta {
            updated_at: top.updated_at.unwrap_or(0),
            entries: tree
                .leaves
                .values()
                .flat_map(|(_, entries)| entries.iter().map(|(k, e)| (k.clone(), e.clone())))
                .collect(),
        };
        tree.nodes.insert(String::new(), top);
        tree.held = held;
        Ok(Read::Tree { meta, tree })
    }

    /// Stores the leaves of the entries changed since the last write, their nodes,
    /// the top and the root. Format 2 only.
    pub(super) fn store_tree(&self) -> Result<()> {
        let (leaves, nodes): (BTreeSet<String>, BTreeSet<String>) = {
            let state = self.state.lock();
            let Marks::Blobs(marks) = &state.marks else {
                return Ok(());
            };
            let leaves: BTreeSet<String> = if marks.tree.all && self.shared {
                // No leaf another writer could merge from may stay behind.
                all_leaves().collect()
            } else if marks.tree.all {
                state.meta.entries.keys().map(|k| leaf_of(k)).collect()
            } else {
                marks.touched.iter().map(|k| leaf_of(k)).collect()
            };
            let mut nodes: BTreeSet<String> = leaves.iter().map(|l| l[..1].to_string()).collect();
            nodes.extend(marks.tree.torn.iter().filter(|p| !p.is_empty()).cloned());
            (leaves, nodes)
        };
        if self.with_tree(|t| t.all) {
            self.regroup_leaves();
        }
        for name in &leaves {
            self.store_leaf(name)?;
        }
        for path in &nodes {
            let wrote: BTreeSet<String> =
                children_of(path).filter(|c| leaves.contains(c)).collect();
            self.store_node(path, &wrote)?;
        }
        self.store_node("", &nodes)?;
        self.with_blob_marks(|m| m.touched.clear());
        self.with_tree(|t| {
            t.all = false;
            t.torn.clear();
        });
        Ok(())
    }

    /// After a rebuild: the leaves as the entries group them.
    fn regroup_leaves(&self) {
        let mut state = self.state.lock();
        let state = &mut *state;
        let Marks::Blobs(marks) = &mut state.marks else {
            return;
        };
        let mut leaves: BTreeMap<String, BTreeMap<String, MetaEntry>> = BTreeMap::new();
        for (key, entry) in &state.meta.entries {
            leaves
                .entry(leaf_of(key))
                .or_default()
                .insert(key.clone(), entry.clone());
        }
        marks.tree.leaves = leaves
            .into_iter()
            .map(|(name, entries)| (name, (hash_of(&entries), entries)))
            .collect();
        marks.tree.nodes.clear();
        // What the tier holds wins over any leaf another writer stores meanwhile.
        marks.touched = state.meta.entries.keys().cloned().collect();
    }

    /// The entries leaf `name` holds here: as last read or written, with this
    /// process's changes since.
    fn leaf_here(&self, name: &str) -> BTreeMap<String, MetaEntry> {
        let state = self.state.lock();
        let Marks::Blobs(marks) = &state.marks else {
            return BTreeMap::new();
        };
        let mut entries = marks
            .tree
            .leaves
            .get(name)
            .map(|(_, e)| e.clone())
            .unwrap_or_default();
        for key in marks.touched.iter().filter(|k| leaf_of(k) == name) {
            match state.meta.entries.get(key) {
                Some(entry) => entries.insert(key.clone(), entry.clone()),
                None => entries.remove(key),
            };
        }
        entries
    }

    fn held(&self, path: &str) -> Option<Vec<u8>> {
        self.with_tree(|t| t.held.get(path).cloned())
    }

    fn note_stored(&self, path: &str, bytes: Vec<u8>) {
        let shared = self.shared;
        self.with_tree(|t| {
            if shared {
                t.held.insert(path.to_string(), bytes);
            }
        });
    }

    /// Stores leaf `name` (an empty leaf too, so that no stale one stays behind).
    fn store_leaf(&self, name: &str) -> Result<()> {
        let key = node_key(name);
        for _ in 0..ATTEMPTS {
            let entries = self.leaf_here(name);
            let bytes = leaf_bytes(&entries);
            if self.put_if(&key, self.held(name).as_deref(), &bytes)? {
                self.note_stored(name, bytes);
                self.with_tree(|t| {
                    t.leaves
                        .insert(name.to_string(), (hash_of(&entries), entries))
                });
                return Ok(());
            }
            self.adopt_leaf(name)?;
        }
        Err(too_busy(self.label, &key))
    }

    /// Another writer stored leaf `name` since it was read here: its entries are
    /// taken, with this process's changes put into them. Where both changed one
    /// entry, the partition is read again and the entry describes what it holds.
    fn adopt_leaf(&self, name: &str) -> Result<()> {
        let stored = self.load(&node_key(name))?;
        let theirs = match stored.as_deref().map(|b| parse_leaf(name, b)) {
            Some(Ok(theirs)) => theirs,
            Some(Err(why)) => {
                log::warn!(target: "datasync::tier", "{} {why}; replacing it", self.label);
                BTreeMap::new()
            }
            None => BTreeMap::new(),
        };
        // Each disputed key, with this process's entry for it.
        let disputed: Vec<(String, Option<MetaEntry>)> = {
            let state = self.state.lock();
            let Marks::Blobs(marks) = &state.marks else {
                return Ok(());
            };
            let before = marks.tree.leaves.get(name).map(|(_, e)| e);
            marks
                .touched
                .iter()
                .filter(|k| leaf_of(k) == name)
                .filter(|k| {
                    let was = before.and_then(|e| e.get(*k)).map(|e| &e.hash);
                    let other = theirs.get(*k).map(|e| &e.hash);
                    let ours = state.meta.entries.get(*k).map(|e| &e.hash);
                    other.is_some() && other != was && other != ours
                })
                .map(|k| (k.clone(), state.meta.entries.get(k).cloned()))
                .collect()
        };
        // An entry that describes what the partition's index holds now is taken as
        // it is; the others are read.
        let mut reread = Vec::with_capacity(disputed.len());
        let mut unknown = Vec::new();
        for (key, ours) in disputed {
            let candidates: Vec<&MetaEntry> = ours.iter().chain(theirs.get(&key)).collect();
            match self.entry_from_index(&key, &candidates)? {
                Some(entry) => reread.push((key, Some(entry))),
                None => unknown.push(key),
            }
        }
        reread.extend(self.entries_as_held(unknown)?);
        let mut state = self.state.lock();
        let state = &mut *state;
        let Marks::Blobs(marks) = &mut state.marks else {
            return Ok(());
        };
        // Entries of this leaf that this process did not change are theirs.
        let ours: BTreeSet<String> = marks
            .touched
            .iter()
            .filter(|k| leaf_of(k) == name)
            .cloned()
            .collect();
        if let Some((_, before)) = marks.tree.leaves.get(name) {
            for key in before.keys().filter(|k| !ours.contains(*k)) {
                state.meta.entries.remove(key);
            }
        }
        for (key, entry) in theirs.iter().filter(|(k, _)| !ours.contains(*k)) {
            state.meta.entries.insert(key.clone(), entry.clone());
        }
        for (key, entry) in reread {
            match entry {
                Some(entry) => state.meta.entries.insert(key, entry),
                None => state.meta.entries.remove(&key),
            };
        }
        marks
            .tree
            .leaves
            .insert(name.to_string(), (hash_of(&theirs), theirs));
        marks.tree.hold(name, stored);
        Ok(())
    }

    /// The node at `path` as this process would store it: its children as last
    /// read, those in `wrote` (just stored here) and all of a torn node as held here.
    fn node_here(&self, path: &str, wrote: &BTreeSet<String>) -> Node {
        let state = self.state.lock();
        let Marks::Blobs(marks) = &state.marks else {
            return Node::default();
        };
        let tree = &marks.tree;
        let mut node = tree.nodes.get(path).cloned().unwrap_or_default();
        let whole = tree.torn.contains(path) || tree.all;
        for child in children_of(path) {
            if !whole && !wrote.contains(&child) {
                continue;
            }
            let hash = if path.is_empty() {
                tree.nodes
                    .get(&child)
                    .filter(|n| !n.children.is_empty())
                    .map(Node::hash)
            } else {
                tree.leaves
                    .get(&child)
                    .filter(|(_, e)| !e.is_empty())
                    .map(|(h, _)| h.clone())
            };
            match hash {
                Some(hash) => node.children.insert(child, hash),
                None => node.children.remove(&child),
            };
        }
        node.updated_at = path.is_empty().then_some(state.meta.updated_at);
        node
    }

    /// Stores the node at `path` (the top at ""). When another writer stored it
    /// meanwhile, its listing is taken, and each child this process wrote is read
    /// again so that the node lists it as the tier holds it now.
    fn store_node(&self, path: &str, wrote: &BTreeSet<String>) -> Result<()> {
        let key = node_key(path);
        for _ in 0..ATTEMPTS {
            let node = self.node_here(path, wrote);
            let bytes = node.to_bytes();
            if self.put_if(&key, self.held(path).as_deref(), &bytes)? {
                self.note_stored(path, bytes);
                self.with_tree(|t| t.nodes.insert(path.to_string(), node));
                return Ok(());
            }
            let stored = self.load(&key)?;
            let theirs = stored
                .as_deref()
                .and_then(|b| Node::parse(path, b).ok())
                .unwrap_or_default();
            for child in wrote {
                self.reread_child(child)?;
            }
            self.with_tree(|t| {
                t.nodes.insert(path.to_string(), theirs);
                t.hold(path, stored);
            });
        }
        Err(too_busy(self.label, &key))
    }

    /// Reads child `path` (a node or a leaf) as the tier holds it now.
    fn reread_child(&self, path: &str) -> Result<()> {
        let stored = self.load(&node_key(path))?;
        let mut state = self.state.lock();
        let state = &mut *state;
        let Marks::Blobs(marks) = &mut state.marks else {
            return Ok(());
        };
        if path.len() == 1 {
            let node = stored
                .as_deref()
                .and_then(|b| Node::parse(path, b).ok())
                .unwrap_or_default();
            marks.tree.nodes.insert(path.to_string(), node);
        } else {
            let entries = stored
                .as_deref()
                .and_then(|b| parse_leaf(path, b).ok())
                .unwrap_or_default();
            if let Some((_, before)) = marks.tree.leaves.get(path) {
                for key in before.keys() {
                    state.meta.entries.remove(key);
                }
            }
            state
                .meta
                .entries
                .extend(entries.iter().map(|(k, e)| (k.clone(), e.clone())));
            marks
                .tree
                .leaves
                .insert(path.to_string(), (hash_of(&entries), entries));
        }
        marks.tree.hold(path, stored);
        Ok(())
    }
}

fn too_busy(label: &str, key: &str) -> Error {
    Error::adapter(
        label,
        key,
        "the metadata kept changing while it was written (too many writers at once); the next sync writes it",
    )
}
