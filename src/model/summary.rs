//! Format 2's tier metadata as a tree of small documents, so that a write records
//! summaries in proportion to the partitions it changed (DESIGN.md §10, "two-level
//! metadata"; `docs/format-2.md`).
//!
//! A partition key belongs to the leaf named by the first two hex digits of its
//! BLAKE3 hash; a leaf belongs to the node named by its first digit; those sixteen
//! nodes belong to the top. Three levels, fixed:
//!
//! ```text
//! !datasync.root        the top: per node "0".."f", the hash of that node
//! !datasync.meta.a      a node: per leaf "a0".."af", the hash of that leaf
//! !datasync.meta.a7     a leaf: the entries of its partitions (hash, counts)
//! ```
//!
//! The root of the tier is the hash of the top, so a no-op sync still reads one
//! small document per side. (Format 1's one metadata document, `!datasync.meta`,
//! is not used.)
//!
//! A hash covers only the `(name, hash)` pairs below it, never instants or counts,
//! so two tiers holding the same partitions have the same root, whichever wrote
//! them. A parent lists only the children that hold a partition. A flush of one
//! partition rewrites its leaf (a few entries at any size), one node of at most
//! sixteen hashes, the top, and the root.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::{format_millis, Millis};
use crate::meta::{instant, Meta, MetaEntry, DAMAGED, META_KEY, ROOT_KEY};
use crate::partition::Counts;

/// The version a node document carries.
const VERSION: u32 = 2;
/// Hex digits of a node hash (80 bits: a hash tells changed from unchanged, and
/// every byte of it is written with each flush).
const HASH_DIGITS: usize = 20;
const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The leaf (two hex digits) partition `key` belongs to.
pub fn leaf_of(key: &str) -> String {
    let byte = blake3::hash(key.as_bytes()).as_bytes()[0];
    let mut name = String::with_capacity(2);
    name.push(DIGITS[(byte >> 4) as usize] as char);
    name.push(DIGITS[(byte & 15) as usize] as char);
    name
}

/// Every leaf name, in order.
pub fn all_leaves() -> impl Iterator<Item = String> {
    (0..=255u8).map(|b| format!("{b:02x}"))
}

/// The children of the node at `path` ("" the top, one digit a node).
pub fn children_of(path: &str) -> impl Iterator<Item = String> + '_ {
    DIGITS.iter().map(move |d| format!("{path}{}", *d as char))
}

/// The key the node at `path` is stored under ("" the top, at [`ROOT_KEY`]).
pub fn node_key(path: &str) -> String {
    if path.is_empty() {
        ROOT_KEY.to_string()
    } else {
        format!("{META_KEY}.{path}")
    }
}

fn short_hash(hasher: blake3::Hasher) -> String {
    let mut hex = hasher.finalize().to_hex().to_string();
    hex.truncate(HASH_DIGITS);
    hex
}

/// The hash of `(name, hash)` pairs (in name order) under a domain tag.
fn pairs_hash<'a>(domain: &[u8], pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(domain);
    for (name, hash) in pairs {
        hasher.update(name.as_bytes());
        hasher.update(&[0]);
        hasher.update(hash.as_bytes());
        hasher.update(b"\n");
    }
    short_hash(hasher)
}

/// The hash of a leaf holding these `(key, entry hash)` pairs (in key order).
pub fn leaf_hash<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs_hash(b"leaf\n", pairs)
}

/// The hash of a node (or the top) listing these children.
pub fn node_hash(children: &BTreeMap<String, String>) -> String {
    pairs_hash(
        b"node\n",
        children.iter().map(|(n, h)| (n.as_str(), h.as_str())),
    )
}

/// The root of an empty tier.
pub fn empty_root() -> String {
    node_hash(&BTreeMap::new())
}

/// A leaf as stored: per partition key, `[hash, updated at (ms), {name: [count,
/// deleted count]}]`. Compact, as a leaf is written with every flush of one of its
/// partitions.
#[derive(Serialize, Deserialize)]
struct LeafDoc {
    leaf: u32,
    #[serde(default)]
    e: BTreeMap<String, StoredEntry>,
}

/// One entry of a leaf: hash, instant, and per entity name `(count, deleted count)`.
type StoredEntry = (String, Millis, BTreeMap<String, (u64, u64)>);

/// The stored form of a leaf holding `entries`.
pub fn leaf_bytes<'a>(entries: impl IntoIterator<Item = (&'a String, &'a MetaEntry)>) -> Vec<u8> {
    let doc = LeafDoc {
        leaf: VERSION,
        e: entries
            .into_iter()
            .map(|(k, e)| {
                let counts = e
                    .entities
                    .iter()
                    .map(|(name, c)| (name.clone(), (c.count, c.deleted_count)))
                    .collect();
                (k.clone(), (e.hash.clone(), e.updated_at, counts))
            })
            .collect(),
    };
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// Parses leaf `name`, refusing entries of keys that do not belong to it.
pub fn parse_leaf(name: &str, bytes: &[u8]) -> Result<BTreeMap<String, MetaEntry>, String> {
    let doc: LeafDoc = serde_json::from_slice(bytes)
        .map_err(|e| format!("metadata leaf {name} is not a leaf document: {e}"))?;
    if doc.leaf != VERSION {
        return Err(format!("metadata leaf {name} has version {}", doc.leaf));
    }
    let mut entries = BTreeMap::new();
    for (key, (hash, updated_at, counts)) in doc.e {
        if leaf_of(&key) != name {
            return Err(format!(
                "metadata leaf {name} lists {key:?}, not one of its keys"
            ));
        }
        let hex = hash.len() == 64 && hash.bytes().all(|b| DIGITS.contains(&b));
        if !hex && hash != DAMAGED {
            return Err(format!("entry {key:?} has a malformed hash"));
        }
        let entities = counts
            .into_iter()
            .map(|(n, (count, deleted_count))| {
                let counts = Counts {
                    count,
                    deleted_count,
                };
                (n, counts)
            })
            .collect();
        entries.insert(
            key,
            MetaEntry {
                hash,
                updated_at,
                entities,
            },
        );
    }
    Ok(entries)
}

/// A node as stored: the hashes of its sixteen children by last digit, `""` for a
/// child that holds no partition; the top also carries an instant.
#[derive(Serialize, Deserialize)]
struct NodeDoc {
    node: u32,
    #[serde(rename = "at", default, skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
    c: Vec<String>,
}

/// A node (or the top) as stored: its children's hashes, and (the top) an instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub children: BTreeMap<String, String>,
    pub updated_at: Option<Millis>,
}

impl Node {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut c = vec![String::new(); DIGITS.len()];
        for (name, hash) in &self.children {
            if let Some(at) = name
                .bytes()
                .last()
                .and_then(|d| DIGITS.iter().position(|x| *x == d))
            {
                c[at].clone_from(hash);
            }
        }
        let doc = NodeDoc {
            node: VERSION,
            updated_at: self.updated_at.map(format_millis),
            c,
        };
        serde_json::to_vec(&doc).unwrap_or_default()
    }

    /// Parses the node at `path`, refusing children that are not its own.
    pub fn parse(path: &str, bytes: &[u8]) -> Result<Node, String> {
        let doc: NodeDoc = serde_json::from_slice(bytes)
            .map_err(|e| format!("metadata node {path:?} is not a node document: {e}"))?;
        if doc.node != VERSION {
            return Err(format!("metadata node {path:?} has version {}", doc.node));
        }
        if doc.c.len() != DIGITS.len() || path.len() > 1 {
            return Err(format!(
                "metadata node {path:?} lists {} children, not {}",
                doc.c.len(),
                DIGITS.len()
            ));
        }
        let mut children = BTreeMap::new();
        for (digit, hash) in DIGITS.iter().zip(doc.c) {
            if hash.is_empty() {
                continue;
            }
            if hash.len() != HASH_DIGITS || !hash.bytes().all(|b| DIGITS.contains(&b)) {
                return Err(format!(
                    "metadata node {path:?} lists a malformed hash {hash:?}"
                ));
            }
            children.insert(format!("{path}{}", *digit as char), hash);
        }
        Ok(Node {
            children,
            updated_at: doc.updated_at.as_deref().map(instant).transpose()?,
        })
    }

    pub fn hash(&self) -> String {
        node_hash(&self.children)
    }
}

/// The whole tree of a set of entries: every leaf, node and the top.
pub struct Tree {
    /// Leaf name → its entries.
    pub leaves: BTreeMap<String, BTreeMap<String, MetaEntry>>,
    /// Node path ("" the top) → the node.
    pub nodes: BTreeMap<String, Node>,
}

impl Tree {
    pub fn of(meta: &Meta) -> Tree {
        let mut leaves: BTreeMap<String, BTreeMap<String, MetaEntry>> = BTreeMap::new();
        for (key, entry) in &meta.entries {
            leaves
                .entry(leaf_of(key))
                .or_default()
                .insert(key.clone(), entry.clone());
        }
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        nodes.insert(
            String::new(),
            Node {
                updated_at: Some(meta.updated_at),
                ..Node::default()
            },
        );
        for (name, entries) in &leaves {
            let hash = leaf_hash(entries.iter().map(|(k, e)| (k.as_str(), e.hash.as_str())));
            nodes
                .entry(name[..1].to_string())
                .or_default()
                .children
                .insert(name.clone(), hash);
        }
        let tops: Vec<(String, String)> = nodes
            .iter()
            .filter(|(path, _)| !path.is_empty())
            .map(|(path, node)| (path.clone(), node.hash()))
            .collect();
        if let Some(top) = nodes.get_mut("") {
            top.children.extend(tops);
        }
        Tree { leaves, nodes }
    }

    pub fn root(&self) -> String {
        self.nodes
            .get("")
            .map(Node::hash)
            .unwrap_or_else(empty_root)
    }

    /// Every document of the tree with its key (empty leaves and nodes are not
    /// stored).
    pub fn documents(&self) -> Vec<(String, Vec<u8>)> {
        let mut docs: Vec<(String, Vec<u8>)> = self
            .nodes
            .iter()
            .map(|(path, node)| (node_key(path), node.to_bytes()))
            .collect();
        docs.extend(
            self.leaves
                .iter()
                .map(|(name, entries)| (node_key(name), leaf_bytes(entries))),
        );
        docs
    }
}

impl Meta {
    /// The root of these entries as format 2 stores it (see [`Tree`]), from their
    /// hashes alone.
    pub fn tree_root(&self) -> String {
        let mut leaves: BTreeMap<String, Vec<(&str, &str)>> = BTreeMap::new();
        for (key, entry) in &self.entries {
            leaves
                .entry(leaf_of(key))
                .or_default()
                .push((key.as_str(), entry.hash.as_str()));
        }
        let mut nodes: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (name, pairs) in leaves {
            let hash = leaf_hash(pairs);
            nodes
                .entry(name[..1].to_string())
                .or_default()
                .insert(name, hash);
        }
        let top: BTreeMap<String, String> = nodes
            .iter()
            .map(|(path, children)| (path.clone(), node_hash(children)))
            .collect();
        node_hash(&top)
    }

    /// Reads a whole format-2 metadata tree through `get` (which answers a key's
    /// stored bytes). `Ok(None)` when the tier holds no top. Every node is checked
    /// against the hash its parent lists.
    pub fn read_tree(mut get: impl FnMut(&str) -> Option<Vec<u8>>) -> Result<Option<Meta>, String> {
        let Some(top) = get(ROOT_KEY) else {
            return Ok(None);
        };
        let top = Node::parse("", &top)?;
        let mut meta = Meta {
            updated_at: top.updated_at.unwrap_or(0),
            entries: BTreeMap::new(),
        };
        for (path, hash) in &top.children {
            let bytes = get(&node_key(path)).ok_or_else(|| format!("node {path:?} is missing"))?;
            let node = Node::parse(path, &bytes)?;
            if node.hash() != *hash {
                return Err(format!("node {path:?} is not the one the top lists"));
            }
            for (name, hash) in &node.children {
                let bytes =
                    get(&node_key(name)).ok_or_else(|| format!("leaf {name:?} is missing"))?;
                let entries = parse_leaf(name, &bytes)?;
                let found = leaf_hash(entries.iter().map(|(k, e)| (k.as_str(), e.hash.as_str())));
                if found != *hash {
                    return Err(format!("leaf {name:?} is not the one its node lists"));
                }
                meta.entries.extend(entries);
            }
        }
        Ok(Some(meta))
    }
}

impl Meta {
    /// The metadata a blob tier stores, in either format: format 2's tree when the
    /// root key holds a top, else format 1's one document. `Ok(None)`: none stored.
    pub fn read_stored(
        mut get: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Result<Option<Meta>, String> {
        let top = get(ROOT_KEY);
        if top.as_deref().is_some_and(|t| Node::parse("", t).is_ok()) {
            let mut top = top;
            return Meta::read_tree(|k| if k == ROOT_KEY { top.take() } else { get(k) });
        }
        get(META_KEY).map(|b| Meta::parse(&b)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(hash: char, at: Millis) -> MetaEntry {
        MetaEntry {
            hash: hash.to_string().repeat(64),
            updated_at: at,
            entities: BTreeMap::new(),
        }
    }

    fn meta(n: usize) -> Meta {
        Meta {
            updated_at: 5,
            entries: (0..n)
                .map(|i| (format!("User:global:{i}"), entry('a', i as Millis)))
                .collect(),
        }
    }

    #[test]
    fn a_tree_reads_back_as_its_entries() {
        let m = meta(1000);
        let tree = Tree::of(&m);
        let docs: BTreeMap<String, Vec<u8>> = tree.documents().into_iter().collect();
        let read = Meta::read_tree(|k| docs.get(k).cloned()).unwrap().unwrap();
        assert_eq!(read, m);
        assert_eq!(tree.root(), m.tree_root());
    }

    #[test]
    fn the_root_covers_hashes_only() {
        let mut a = meta(50);
        let b = meta(50);
        for e in a.entries.values_mut() {
            e.updated_at += 1000;
        }
        a.updated_at = 99;
        assert_eq!(a.tree_root(), b.tree_root());
        a.entries.get_mut("User:global:7").unwrap().hash = "b".repeat(64);
        assert_ne!(a.tree_root(), b.tree_root());
        assert_eq!(Meta::default().tree_root(), empty_root());
    }

    #[test]
    fn one_change_touches_one_leaf_and_one_node() {
        let a = Tree::of(&meta(1000));
        let mut m = meta(1000);
        m.entries.get_mut("User:global:7").unwrap().hash = "b".repeat(64);
        let b = Tree::of(&m);
        let da: BTreeMap<_, _> = a.documents().into_iter().collect();
        let changed: Vec<String> = b
            .documents()
            .into_iter()
            .filter(|(k, v)| da.get(k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        let leaf = leaf_of("User:global:7");
        assert_eq!(
            changed,
            vec![ROOT_KEY.to_string(), node_key(&leaf[..1]), node_key(&leaf)]
        );
        let bytes: usize = b
            .documents()
            .iter()
            .filter(|(k, _)| changed.contains(k))
            .map(|(_, v)| v.len())
            .sum();
        assert!(
            bytes < 2000,
            "{bytes} bytes for one change in 1000 partitions"
        );
    }

    #[test]
    fn foreign_or_mismatched_documents_are_refused() {
        let m = meta(20);
        let tree = Tree::of(&m);
        let mut docs: BTreeMap<String, Vec<u8>> = tree.documents().into_iter().collect();
        let (name, _) = tree.leaves.iter().next().unwrap();
        let other = all_leaves().find(|l| l != name).unwrap();
        assert!(parse_leaf(&other, &docs[&node_key(name)]).is_err());
        assert!(Node::parse("a", br#"{"node":2,"c":["00"]}"#).is_err());
        assert!(Node::parse("ab", br#"{"node":2,"c":[]}"#).is_err());
        assert!(Node::parse("", b"[1]").is_err());
        docs.insert(node_key(name), leaf_bytes(std::iter::empty()));
        assert!(Meta::read_tree(|k| docs.get(k).cloned()).is_err());
    }
}
