//! A piece: the slots some writes of one partition made, in canonical form, named by
//! its hash. A delta holds one write of one writer; a fold holds many, each slot
//! still filed under the write it came from.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::span::{short_hash, span_holds, Span};
use crate::clock::Millis;
use crate::partition::{Partition, Slot};
use crate::sync::ConflictResolver;

/// One write: its writer and sequence number.
pub type Write = (String, u64);

/// The format version written into every piece and index.
pub const FORMAT: u32 = 2;

/// A piece as held in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Piece {
    /// The writes folded into this piece.
    pub span: Span,
    /// Per writer: the name of the piece that holds its write just before this
    /// piece's first one (empty when that is its first write): the hash chain.
    pub prev: BTreeMap<String, String>,
    /// Per writer, folds only: the name of the delta of its last write here.
    pub tip: BTreeMap<String, String>,
    /// Per writer: its clock when it cut its last write here. Every slot it writes
    /// later carries a later instant.
    pub clock: BTreeMap<String, Millis>,
    /// The slots, filed under the write that made them.
    pub data: BTreeMap<Write, Partition>,
}

#[derive(Deserialize)]
struct Stored<'a> {
    v: u32,
    span: Span,
    #[serde(default)]
    prev: BTreeMap<String, String>,
    #[serde(default)]
    tip: BTreeMap<String, String>,
    #[serde(default)]
    clock: BTreeMap<String, Millis>,
    #[serde(borrow)]
    data: Vec<(String, u64, &'a RawValue)>,
}

impl Piece {
    /// A delta: the slots of write `seq` of `writer`.
    pub fn delta(writer: &str, seq: u64, prev: &str, clock: Millis, slots: Partition) -> Piece {
        Piece {
            span: [(writer.to_string(), (seq, seq))].into(),
            prev: [(writer.to_string(), prev.to_string())].into(),
            tip: BTreeMap::new(),
            clock: [(writer.to_string(), clock)].into(),
            data: [((writer.to_string(), seq), slots)].into(),
        }
    }

    /// Whether this piece is a writer's own write rather than a fold (a fold always
    /// names the last delta of each writer it holds).
    pub fn is_delta(&self) -> bool {
        self.tip.is_empty()
    }

    /// The name of the delta of `writer`'s last write in this piece (`own`: this
    /// piece's name).
    pub fn tip_of(&self, own: &str, writer: &str) -> Option<String> {
        if self.is_delta() {
            return self.span.contains_key(writer).then(|| own.to_string());
        }
        self.tip.get(writer).cloned()
    }

    /// The canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes_with(None)
    }

    /// The canonical bytes of a delta whose slots' canonical form is already made
    /// (`canonical`: a partition's canonical bytes), without making it again.
    pub fn delta_bytes(
        writer: &str,
        seq: u64,
        prev: &str,
        clock: Millis,
        canonical: &[u8],
    ) -> Vec<u8> {
        Piece::delta(writer, seq, prev, clock, Partition::default()).bytes_with(Some(canonical))
    }

    /// The canonical bytes; `canonical`, when given, stands for the slots of the one
    /// write this piece holds.
    fn bytes_with(&self, canonical: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            canonical.map_or(0, <[u8]>::len)
                + 128
                + self
                    .data
                    .values()
                    .map(|p| p.names.values().map(|ids| ids.len() * 200).sum::<usize>())
                    .sum::<usize>(),
        );
        out.extend_from_slice(format!("{{\"v\":{FORMAT},\"span\":").as_bytes());
        // Maps of strings and numbers cannot fail to serialise.
        let _ = serde_json::to_writer(&mut out, &self.span);
        out.extend_from_slice(b",\"prev\":");
        let _ = serde_json::to_writer(&mut out, &self.prev);
        out.extend_from_slice(b",\"tip\":");
        let _ = serde_json::to_writer(&mut out, &self.tip);
        out.extend_from_slice(b",\"clock\":");
        let _ = serde_json::to_writer(&mut out, &self.clock);
        out.extend_from_slice(b",\"data\":[");
        for (i, ((writer, seq), slots)) in self.data.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'[');
            let _ = serde_json::to_writer(&mut out, writer);
            out.extend_from_slice(format!(",{seq},").as_bytes());
            match canonical {
                Some(bytes) => out.extend_from_slice(bytes),
                None => out.extend_from_slice(&slots.to_canonical()),
            }
            out.push(b']');
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// The piece's name: the hash of its canonical bytes.
    pub fn name_of(bytes: &[u8]) -> String {
        short_hash(bytes)
    }

    /// Parses stored bytes that were checked against the piece's name (so they are
    /// the library's canonical bytes).
    pub fn parse(bytes: &[u8]) -> Result<Piece, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
        let stored: Stored =
            serde_json::from_str(text).map_err(|e| format!("not a piece document: {e}"))?;
        if stored.v != FORMAT {
            return Err(format!("piece format {} is not {FORMAT}", stored.v));
        }
        if stored.span.is_empty() {
            return Err("a piece that holds no write".into());
        }
        if let Some((w, run)) = stored.span.iter().find(|(_, (a, b))| *a == 0 || a > b) {
            return Err(format!("writer {w:?} has an empty run {run:?}"));
        }
        let mut data = BTreeMap::new();
        for (writer, seq, raw) in stored.data {
            if !span_holds(&stored.span, &writer, seq) {
                return Err(format!(
                    "slots of write {seq} of {writer:?} outside the piece's span"
                ));
            }
            let slots = Partition::parse(raw.get().as_bytes(), true)?;
            if data.insert((writer.clone(), seq), slots).is_some() {
                return Err(format!("write {seq} of {writer:?} listed twice"));
            }
        }
        Ok(Piece {
            span: stored.span,
            prev: stored.prev,
            tip: stored.tip,
            clock: stored.clock,
            data,
        })
    }

    /// The (name, id) of every slot this piece holds, whatever write it came from.
    fn present(&self) -> HashSet<(&str, &str)> {
        self.data
            .values()
            .flat_map(|p| {
                p.names
                    .iter()
                    .flat_map(|(name, ids)| ids.keys().map(move |id| (name.as_str(), id.as_str())))
            })
            .collect()
    }
}

/// When tombstones may be dropped from a fold of every piece of a partition.
#[derive(Debug, Clone, Copy)]
pub struct TombstoneRule {
    /// Now, by the clock of the device folding.
    pub now: Millis,
    /// Tombstones older than this are dropped whoever has seen them.
    pub horizon: Millis,
    /// Every device that reads or writes the tier has completed a sync that began
    /// after this instant (see [`PieceTier::synced_past`](super::PieceTier::synced_past)):
    /// tombstones before it are dropped.
    pub past: Option<Millis>,
}

/// The winning slot of every id of a set of pieces, each with the write it came
/// from.
pub type Winners = BTreeMap<String, BTreeMap<String, (Slot, Write)>>;

/// Merges pieces slot by slot with the resolver.
///
/// A slot is left out when another piece holds the write it came from but has no
/// slot for that id any more: that piece folded the slot, and then a later delete,
/// and dropped the tombstone. The slot is stale, and merging it would bring back
/// an entity deleted elsewhere.
pub fn winners(pieces: &[(&str, &Piece)], resolver: &dyn ConflictResolver) -> Winners {
    let present: Vec<HashSet<(&str, &str)>> = pieces.iter().map(|(_, p)| p.present()).collect();
    let mut out: Winners = BTreeMap::new();
    for (i, (_, piece)) in pieces.iter().enumerate() {
        for ((writer, seq), slots) in &piece.data {
            let holders: Vec<usize> = (0..pieces.len())
                .filter(|&j| j != i && span_holds(&pieces[j].1.span, writer, *seq))
                .collect();
            for (name, ids) in &slots.names {
                let held = out.entry(name.clone()).or_default();
                for (id, slot) in ids {
                    let stale = holders
                        .iter()
                        .any(|&j| !present[j].contains(&(name.as_str(), id.as_str())));
                    if stale {
                        continue;
                    }
                    let origin = (writer.clone(), *seq);
                    match held.get_mut(id) {
                        None => {
                            held.insert(id.clone(), (slot.clone(), origin));
                        }
                        Some(current) => {
                            if current.0 == *slot {
                                if origin < current.1 {
                                    current.1 = origin;
                                }
                                continue;
                            }
                            let won = resolver.resolve(name, &current.0, slot);
                            let origin = if won == current.0 {
                                current.1.clone()
                            } else if won == *slot {
                                origin
                            } else {
                                origin.max(current.1.clone())
                            };
                            *current = (won, origin);
                        }
                    }
                }
            }
        }
    }
    out.retain(|_, ids| !ids.is_empty());
    out
}

/// The partition the winners make.
pub fn content(winners: &Winners) -> Partition {
    let mut partition = Partition::default();
    for (name, ids) in winners {
        let slots = partition.names.entry(name.clone()).or_default();
        for (id, (slot, _)) in ids {
            slots.insert(id.clone(), slot.clone());
        }
    }
    partition
}

/// Folds pieces into one. With a `rule` (a fold of every piece of the partition),
/// a tombstone is dropped when every device of the tier has synced past it, or when
/// it is older than the horizon. Returns the piece and how many tombstones it
/// dropped.
pub fn fold(
    pieces: &[(&str, &Piece)],
    resolver: &dyn ConflictResolver,
    rule: Option<TombstoneRule>,
) -> (Piece, u64) {
    let mut span: Span = BTreeMap::new();
    let mut clock: BTreeMap<String, Millis> = BTreeMap::new();
    // Per writer: (first, prev of the first, last, tip of the last).
    let mut ends: BTreeMap<String, (u64, String, u64, String)> = BTreeMap::new();
    for (name, piece) in pieces {
        for (writer, &(first, last)) in &piece.span {
            let run = span.entry(writer.clone()).or_insert((first, last));
            run.0 = run.0.min(first);
            run.1 = run.1.max(last);
            let prev = piece.prev.get(writer).cloned().unwrap_or_default();
            let tip = piece.tip_of(name, writer).unwrap_or_default();
            let end =
                ends.entry(writer.clone())
                    .or_insert((first, prev.clone(), last, tip.clone()));
            if first < end.0 {
                (end.0, end.1) = (first, prev);
            }
            if last > end.2 {
                (end.2, end.3) = (last, tip);
            }
        }
        for (writer, &at) in &piece.clock {
            let c = clock.entry(writer.clone()).or_insert(at);
            *c = (*c).max(at);
        }
    }
    let mut held = winners(pieces, resolver);
    let mut dropped = 0;
    if let Some(rule) = rule {
        let cut = rule
            .past
            .unwrap_or(Millis::MIN)
            .max(rule.now.saturating_sub(rule.horizon));
        for ids in held.values_mut() {
            let before = ids.len();
            ids.retain(|_, (slot, _)| match slot {
                Slot::Active(_) => true,
                Slot::Deleted(at) => *at >= cut,
            });
            dropped += (before - ids.len()) as u64;
        }
        held.retain(|_, ids| !ids.is_empty());
    }
    let mut data: BTreeMap<Write, Partition> = BTreeMap::new();
    for (name, ids) in held {
        for (id, (slot, origin)) in ids {
            data.entry(origin).or_default().put(&name, &id, slot);
        }
    }
    let piece = Piece {
        span,
        prev: ends.iter().map(|(w, e)| (w.clone(), e.1.clone())).collect(),
        tip: ends.iter().map(|(w, e)| (w.clone(), e.3.clone())).collect(),
        clock,
        data,
    };
    (piece, dropped)
}
