//! Format 2 of a blob tier's partitions (`docs/format-2.md`): a partition is a set
//! of write-once pieces plus a small index, so that a write adds O(its slots) bytes
//! and a sync moves only the pieces the other side lacks.
//!
//! - `span.rs`: which writes a piece holds, and the version vector of a set of them;
//! - `piece.rs`: a piece's bytes, and the merge and fold of pieces;
//! - `index.rs`: a partition's index and the union of two;
//! - `ops.rs`: append, read, sync and compact one partition through an adapter;
//! - `convert.rs`: the conversion of a format-1 tier, in place.
//!
//! An instance opened with format 2 keeps its blob tiers this way through
//! `crate::tier` (`src/tier/pieces.rs`); these operations are also usable on their own.

mod convert;
mod index;
mod ops;
mod piece;
mod span;

pub use convert::{
    convert_format1, is_converted, unconverted, Converted, FORMAT_KEY, UNCONVERTED_KEY,
};

/// The reserved key under which a tier no one else writes keeps the id its device
/// appends under. It names one device: a copy of the tier given to another device
/// must leave it out (that device then takes an id of its own).
pub const WRITER_KEY: &str = "!datasync.writer";
pub use index::{Entry, Index};
pub use ops::{
    index_key, partition_of_index, partitions_listed, piece_key, sync_partition, Compacted,
    Compaction, IndexRead, PieceRead, PieceSide, PieceSync, PieceTier, RawRead, DEVICES_KEY,
};
pub use piece::{content, fold, winners, Piece, TombstoneRule, Winners, Write, FORMAT};
pub use span::{short_hash, span_covers, span_holds, Run, Span, Vector};
