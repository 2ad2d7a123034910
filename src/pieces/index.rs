//! A partition's index: the pieces that make it, each with the writes it holds.
//! The only mutable document of a partition, written by conditional write where
//! others write the tier too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::piece::FORMAT;
use super::span::{span_covers, spans_meet, Span, Vector};

/// One piece as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The piece's name (the hash of its bytes).
    #[serde(rename = "h")]
    pub name: String,
    /// The writes it holds.
    pub span: Span,
    /// Its size in bytes.
    #[serde(rename = "b")]
    pub bytes: u64,
    /// Folds only: per writer, the name of the delta of its last write here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tip: BTreeMap<String, String>,
    /// How many tombstones the folds that made this piece dropped (0 for a delta):
    /// two tiers that hold the same writes hold the same tombstones only if they
    /// hold the same such folds.
    #[serde(rename = "g", default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Entry {
    /// Of two pieces of the same writes, the one every tier keeps: the one whose
    /// folds dropped more tombstones (so a fold's collection spreads), then the
    /// lower name.
    fn prevails_over(&self, other: &Entry) -> bool {
        (other.dropped, &self.name) < (self.dropped, &other.name)
    }

    /// Whether a tier that lists `entries` would keep this piece if it were added.
    pub fn kept_among(&self, entries: &[Entry]) -> bool {
        !entries.iter().any(|p| {
            p.name != self.name
                && span_covers(&p.span, &self.span)
                && (p.span != self.span || p.prevails_over(self))
        })
    }

    /// A delta lists no tip: it is its own.
    fn is_delta(&self) -> bool {
        self.tip.is_empty()
    }

    /// The name of the delta of `writer`'s last write in this piece.
    pub fn tip_of(&self, writer: &str) -> Option<&str> {
        if self.is_delta() {
            return self.span.contains_key(writer).then_some(self.name.as_str());
        }
        self.tip.get(writer).map(String::as_str)
    }
}

/// The pieces of one partition, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    pub entries: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    v: u32,
    pieces: Vec<Entry>,
}

fn is_piece_name(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Index {
    /// Parses stored bytes, refusing anything this library would not have written.
    pub fn parse(bytes: &[u8]) -> Result<Index, String> {
        let stored: Stored =
            serde_json::from_slice(bytes).map_err(|e| format!("not an index document: {e}"))?;
        if stored.v != FORMAT {
            return Err(format!("index format {} is not {FORMAT}", stored.v));
        }
        for entry in &stored.pieces {
            if !is_piece_name(&entry.name) {
                return Err(format!("{:?} is not a piece name", entry.name));
            }
            if entry.span.is_empty() || entry.span.values().any(|(a, b)| *a == 0 || a > b) {
                return Err(format!("piece {} lists no valid write", entry.name));
            }
            let delta = entry.span.len() == 1 && entry.span.values().all(|(a, b)| a == b);
            let tips_match = entry.tip.keys().eq(entry.span.keys());
            if !(entry.tip.is_empty() && delta || tips_match) {
                return Err(format!(
                    "piece {} lists tips for other writers than its own",
                    entry.name
                ));
            }
        }
        Ok(Index::from_entries(stored.pieces))
    }

    /// The canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let stored = Stored {
            v: FORMAT,
            pieces: self.entries.clone(),
        };
        // Strings, numbers and maps of them cannot fail to serialise.
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// The index of these pieces: each listed once, and none that another one listed
    /// holds entirely (it was folded into that one). Of two pieces that hold the same
    /// writes, the one with the smaller name stays. Deterministic: two devices
    /// joining the same indexes write the same bytes.
    pub fn from_entries(entries: impl IntoIterator<Item = Entry>) -> Index {
        let mut all: BTreeMap<String, Entry> = BTreeMap::new();
        for entry in entries {
            all.entry(entry.name.clone()).or_insert(entry);
        }
        let all: Vec<Entry> = all.into_values().collect();
        let kept = all.iter().filter(|q| q.kept_among(&all)).cloned().collect();
        Index { entries: kept }
    }

    /// The union of two indexes.
    pub fn union(&self, other: &Index) -> Index {
        Index::from_entries(self.entries.iter().chain(&other.entries).cloned())
    }

    /// This index with one more piece.
    pub fn with(&self, entry: Entry) -> Index {
        Index::from_entries(self.entries.iter().cloned().chain([entry]))
    }

    /// The writes the listed pieces hold.
    /// Whether a tier listing `self` and one listing `other`, holding the same
    /// writes, also hold the same tombstones: they list the same pieces whose folds
    /// dropped tombstones, and no other piece holds a write of those. (Pieces that
    /// dropped nothing hold, together, the winner of every id among their writes,
    /// however they were folded.)
    pub fn same_tombstones(&self, other: &Index) -> bool {
        let dropping = |index: &Index| -> BTreeMap<String, Span> {
            index
                .entries
                .iter()
                .filter(|e| e.dropped > 0)
                .map(|e| (e.name.clone(), e.span.clone()))
                .collect()
        };
        let folds = dropping(self);
        if folds != dropping(other) {
            return false;
        }
        self.entries
            .iter()
            .chain(&other.entries)
            .filter(|e| e.dropped == 0)
            .all(|e| folds.values().all(|span| !spans_meet(span, &e.span)))
    }

    pub fn vector(&self) -> Vector {
        Vector::of(self.entries.iter().map(|e| &e.span))
    }

    /// The name of the piece holding write `seq` of `writer` as its last one, as the
    /// next write of that writer names it (empty for its first write).
    pub fn tip_for(&self, writer: &str, seq: u64) -> String {
        self.entries
            .iter()
            .filter(|e| e.span.get(writer).is_some_and(|run| run.1 == seq))
            .find_map(|e| e.tip_of(writer))
            .unwrap_or_default()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: char, span: &[(&str, u64, u64)]) -> Entry {
        Entry {
            name: std::iter::repeat_n(name, 32).collect(),
            span: span
                .iter()
                .map(|(w, a, b)| (w.to_string(), (*a, *b)))
                .collect(),
            bytes: 10,
            tip: BTreeMap::new(),
            dropped: 0,
        }
    }

    #[test]
    fn union_drops_what_a_fold_holds_and_is_order_free() {
        let d1 = entry('1', &[("w", 1, 1)]);
        let d2 = entry('2', &[("w", 2, 2)]);
        let d3 = entry('3', &[("v", 1, 1)]);
        let tipped = |mut e: Entry| {
            e.tip = [("w".to_string(), d2.name.clone())].into();
            e
        };
        let fold = tipped(entry('f', &[("w", 1, 2)]));
        let twin = tipped(entry('e', &[("w", 1, 2)]));
        let a = Index::from_entries([d1.clone(), d2.clone(), d3.clone()]);
        let b = Index::from_entries([fold.clone(), d3.clone()]);
        let u = a.union(&b);
        assert_eq!(u, b.union(&a));
        assert_eq!(u.entries, vec![d3.clone(), fold.clone()]);
        // Two folds of the same writes: the smaller name stays, on every device.
        let both = Index::from_entries([fold.clone(), twin.clone(), d3.clone()]);
        assert_eq!(both.entries, vec![d3.clone(), twin.clone()]);
        assert_eq!(Index::parse(&u.to_bytes()).unwrap(), u);
        // Of two folds of the same writes, the one that dropped tombstones stays.
        let collected = Entry {
            dropped: 1,
            ..fold.clone()
        };
        let both = Index::from_entries([twin.clone(), collected.clone(), d3.clone()]);
        assert_eq!(both.entries, vec![d3, collected.clone()]);
        assert!(collected.kept_among(std::slice::from_ref(&twin)));
        assert!(!twin.kept_among(std::slice::from_ref(&collected)));
        let stored = Index::from_entries([collected]);
        assert_eq!(Index::parse(&stored.to_bytes()).unwrap(), stored);
    }

    #[test]
    fn same_tombstones_needs_the_same_dropping_folds_and_nothing_beside_them() {
        let collected = Entry {
            dropped: 2,
            ..entry('c', &[("w", 1, 3)])
        };
        let kept = entry('k', &[("w", 1, 3)]);
        let later = entry('4', &[("w", 4, 4)]);
        let plain = Index::from_entries([kept.clone(), later.clone()]);
        let other = Index::from_entries([entry('p', &[("w", 1, 3)]), later.clone()]);
        // No fold dropped anything: the same writes are the same tombstones.
        assert!(plain.same_tombstones(&other));
        let gc = Index::from_entries([collected.clone(), later.clone()]);
        assert!(!plain.same_tombstones(&gc));
        assert!(gc.same_tombstones(&gc.clone()));
        // A piece that holds a write of the dropping fold may hold its tombstone.
        let overlapping = Index {
            entries: vec![collected, entry('o', &[("w", 3, 4)])],
        };
        assert!(!overlapping.same_tombstones(&gc));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            &b"{"[..],
            br#"{"v":1,"pieces":[]}"#,
            br#"{"v":2,"pieces":[{"h":"zz","span":{"w":[1,1]},"b":1}]}"#,
            br#"{"v":2,"pieces":[{"h":"00000000000000000000000000000000","span":{},"b":1}]}"#,
            br#"{"v":2,"pieces":[{"h":"00000000000000000000000000000000","span":{"w":[2,1]},"b":1}]}"#,
        ] {
            assert!(Index::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
