//! Which writes a piece holds: per writer, one run of sequence numbers; and the
//! version vector of a set of pieces (per writer, the runs they cover together).

use std::collections::BTreeMap;

/// The sequence numbers of one writer a piece holds, `first..=last` (from 1).
pub type Run = (u64, u64);

/// Per writer, the run of its pieces folded into one piece (a delta: one number).
pub type Span = BTreeMap<String, Run>;

/// Whether `outer` holds every write `inner` holds.
pub fn span_covers(outer: &Span, inner: &Span) -> bool {
    inner.iter().all(|(writer, &(first, last))| {
        outer
            .get(writer)
            .is_some_and(|&(of, ol)| of <= first && last <= ol)
    })
}

/// Whether two spans hold a write in common.
pub fn spans_meet(a: &Span, b: &Span) -> bool {
    a.iter().any(|(writer, &(first, last))| {
        b.get(writer)
            .is_some_and(|&(bf, bl)| first <= bl && bf <= last)
    })
}

/// Whether `span` holds write `seq` of `writer`.
pub fn span_holds(span: &Span, writer: &str, seq: u64) -> bool {
    span.get(writer)
        .is_some_and(|&(first, last)| first <= seq && seq <= last)
}

/// The writes a set of pieces holds: per writer, sorted disjoint runs. Two tiers
/// with the same vector hold the same writes, however they folded them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vector {
    pub runs: BTreeMap<String, Vec<Run>>,
}

impl Vector {
    /// The vector of the given spans.
    pub fn of<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Vector {
        let mut runs: BTreeMap<String, Vec<Run>> = BTreeMap::new();
        for span in spans {
            for (writer, run) in span {
                runs.entry(writer.clone()).or_default().push(*run);
            }
        }
        for list in runs.values_mut() {
            list.sort_unstable();
            let mut merged: Vec<Run> = Vec::with_capacity(list.len());
            for &(first, last) in list.iter() {
                match merged.last_mut() {
                    Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
                    _ => merged.push((first, last)),
                }
            }
            *list = merged;
        }
        Vector { runs }
    }

    /// Whether every write of `span` is in this vector.
    pub fn covers(&self, span: &Span) -> bool {
        span.iter().all(|(writer, &(first, last))| {
            self.runs
                .get(writer)
                .is_some_and(|runs| runs.iter().any(|&(rf, rl)| rf <= first && last <= rl))
        })
    }

    /// The highest sequence number of `writer` (0: none).
    pub fn last(&self, writer: &str) -> u64 {
        self.runs
            .get(writer)
            .and_then(|runs| runs.last())
            .map_or(0, |run| run.1)
    }

    /// The writes that are missing: a writer whose runs do not form one run from 1
    /// (a piece listed nowhere, or an index rolled back past a later piece).
    pub fn gaps(&self) -> Vec<(String, Run)> {
        let mut gaps = Vec::new();
        for (writer, runs) in &self.runs {
            let mut next = 1;
            for &(first, last) in runs {
                if first > next {
                    gaps.push((writer.clone(), (next, first - 1)));
                }
                next = last + 1;
            }
        }
        gaps
    }

    /// The hash a tier's metadata entry records for a partition holding these
    /// writes (64 hex digits, like a format-1 content hash).
    pub fn summary(&self) -> String {
        crate::partition::hash_bytes(self.identity().as_bytes())
    }

    /// A short identity of the vector (32 hex digits): equal for equal vectors.
    pub fn identity(&self) -> String {
        let mut text = String::new();
        for (writer, runs) in &self.runs {
            text.push_str(writer);
            for (first, last) in runs {
                text.push_str(&format!(":{first}-{last}"));
            }
            text.push('\n');
        }
        short_hash(text.as_bytes())
    }
}

/// The 128-bit BLAKE3 hash of `bytes`, as 32 hex digits: the name of a piece.
pub fn short_hash(bytes: &[u8]) -> String {
    let hash = blake3::hash(bytes);
    let mut out = String::with_capacity(32);
    for b in &hash.as_bytes()[..16] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(items: &[(&str, u64, u64)]) -> Span {
        items
            .iter()
            .map(|(w, a, b)| (w.to_string(), (*a, *b)))
            .collect()
    }

    #[test]
    fn vectors_join_adjacent_runs_and_find_gaps() {
        let a = span(&[("w1", 1, 3)]);
        let b = span(&[("w1", 4, 4), ("w2", 1, 1)]);
        let c = span(&[("w2", 3, 5)]);
        let v = Vector::of([&a, &b, &c]);
        assert_eq!(v.runs["w1"], vec![(1, 4)]);
        assert_eq!(v.runs["w2"], vec![(1, 1), (3, 5)]);
        assert_eq!(v.gaps(), vec![("w2".to_string(), (2, 2))]);
        assert!(v.covers(&span(&[("w1", 2, 4)])));
        assert!(!v.covers(&span(&[("w2", 1, 3)])));
        assert_eq!(v.last("w2"), 5);
        assert_eq!(v.identity(), Vector::of([&c, &b, &a]).identity());
        assert_ne!(v.identity(), Vector::of([&a, &b]).identity());
    }

    #[test]
    fn spans_cover_what_they_fold() {
        let big = span(&[("w1", 1, 9), ("w2", 1, 2)]);
        assert!(span_covers(&big, &span(&[("w1", 3, 3)])));
        assert!(span_covers(&big, &big));
        assert!(!span_covers(&big, &span(&[("w3", 1, 1)])));
        assert!(!span_covers(&span(&[("w1", 3, 3)]), &big));
        assert!(span_holds(&big, "w2", 2) && !span_holds(&big, "w2", 3));
    }
}
