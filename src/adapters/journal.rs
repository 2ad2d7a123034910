//! The directory tier's journal: the writes of a commit, appended to one file and
//! made durable with one fdatasync, before any of them reaches its own file.
//!
//! A record is `kind (1) | key length (4) | key | payload length (4) | payload |
//! checksum (16)`, lengths little-endian, the checksum the first 16 bytes of BLAKE3
//! over everything before it. A store carries the bytes, a clear none, a direct
//! write none (the key's file was written and synced outside the journal: earlier
//! records of the key must not be replayed over it), and a commit one byte: whether
//! no other handle of the directory had writes of its own pending (an incomplete
//! commit may have written partitions whose metadata comes later).
//! Reading stops at the first record that is cut short or fails its checksum: that
//! is the tail of a batch no commit record closed, which was never acknowledged.

use std::collections::BTreeMap;

/// The first bytes of a journal file.
pub(super) const MAGIC: &[u8; 5] = b"DSJ1\n";
const CHECKSUM: usize = 16;

const STORE: u8 = 1;
const CLEAR: u8 = 2;
const COMMIT: u8 = 3;
const DIRECT: u8 = 4;

/// Appends a store of `bytes` under `key` to `out`.
pub(super) fn store(out: &mut Vec<u8>, key: &str, bytes: &[u8]) {
    record(out, STORE, key, bytes);
}

/// Appends a clear of `key` to `out`.
pub(super) fn clear(out: &mut Vec<u8>, key: &str) {
    record(out, CLEAR, key, &[]);
}

/// Appends to `out` that `key`'s file was written outside the journal.
pub(super) fn direct(out: &mut Vec<u8>, key: &str) {
    record(out, DIRECT, key, &[]);
}

/// Appends a commit record to `out`.
pub(super) fn commit(out: &mut Vec<u8>, complete: bool) {
    record(out, COMMIT, "", &[u8::from(complete)]);
}

fn record(out: &mut Vec<u8>, kind: u8, key: &str, payload: &[u8]) {
    let start = out.len();
    out.push(kind);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let sum = blake3::hash(&out[start..]);
    out.extend_from_slice(&sum.as_bytes()[..CHECKSUM]);
}

/// What a journal's committed batches leave: each key's last write (`None`: cleared),
/// and whether the last commit was complete (true when there was none).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Replay {
    pub writes: BTreeMap<String, Option<Vec<u8>>>,
    pub complete: bool,
    /// Bytes after the last commit record (an interrupted batch), left out.
    pub dropped: usize,
}

/// Reads a journal (after its magic): the writes of every committed batch.
pub(super) fn replay(mut bytes: &[u8]) -> Replay {
    let mut out = Replay {
        complete: true,
        ..Replay::default()
    };
    // A write (`Some`: its bytes, or `None` for a clear), or `None`: the file was
    // written outside the journal, so no earlier record of the key is replayed.
    let mut batch: Vec<(String, Option<Option<Vec<u8>>>)> = Vec::new();
    let total = bytes.len();
    let mut committed_at = 0;
    while let Some((kind, key, payload, rest)) = next(bytes) {
        bytes = rest;
        match kind {
            STORE => batch.push((key, Some(Some(payload.to_vec())))),
            CLEAR => batch.push((key, Some(None))),
            DIRECT => batch.push((key, None)),
            COMMIT => {
                for (key, write) in batch.drain(..) {
                    match write {
                        Some(value) => out.writes.insert(key, value),
                        None => out.writes.remove(&key),
                    };
                }
                out.complete = payload.first() == Some(&1);
                committed_at = total - bytes.len();
            }
            _ => break,
        }
    }
    out.dropped = total - committed_at;
    out
}

/// The first `n` bytes and the rest, if there are `n`.
fn take(b: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (b.len() >= n).then(|| b.split_at(n))
}

/// One record and what follows it, if it is whole and checks.
fn next(bytes: &[u8]) -> Option<(u8, String, &[u8], &[u8])> {
    let (kind, rest) = take(bytes, 1)?;
    let (len, rest) = take(rest, 4)?;
    let (key, rest) = take(rest, u32::from_le_bytes(len.try_into().ok()?) as usize)?;
    let (len, rest) = take(rest, 4)?;
    let (payload, rest) = take(rest, u32::from_le_bytes(len.try_into().ok()?) as usize)?;
    let body = bytes.len() - rest.len();
    let (sum, rest) = take(rest, CHECKSUM)?;
    if blake3::hash(&bytes[..body]).as_bytes()[..CHECKSUM] != *sum {
        return None;
    }
    let key = String::from_utf8(key.to_vec()).ok()?;
    Some((kind[0], key, payload, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_batches_replay_and_an_open_tail_does_not() {
        let mut j = Vec::new();
        store(&mut j, "a", b"1");
        store(&mut j, "b", b"2");
        commit(&mut j, true);
        store(&mut j, "a", b"3");
        clear(&mut j, "b");
        commit(&mut j, false);
        let whole = j.len();
        store(&mut j, "c", b"never committed");
        let got = replay(&j);
        assert_eq!(got.writes.get("a"), Some(&Some(b"3".to_vec())));
        assert_eq!(got.writes.get("b"), Some(&None));
        assert!(!got.writes.contains_key("c"));
        assert!(!got.complete);
        assert_eq!(got.dropped, j.len() - whole);
    }

    #[test]
    fn a_direct_write_hides_the_earlier_records_of_its_key() {
        let mut j = Vec::new();
        store(&mut j, "a", b"small");
        commit(&mut j, true);
        direct(&mut j, "a");
        commit(&mut j, true);
        assert!(!replay(&j).writes.contains_key("a"));
        store(&mut j, "a", b"small again");
        commit(&mut j, true);
        assert_eq!(
            replay(&j).writes.get("a"),
            Some(&Some(b"small again".to_vec()))
        );
    }

    #[test]
    fn a_torn_or_damaged_record_ends_the_journal() {
        let mut j = Vec::new();
        store(&mut j, "a", b"1");
        commit(&mut j, true);
        let first = j.len();
        store(&mut j, "a", b"2");
        commit(&mut j, true);
        // Cut inside the second batch's commit record.
        let cut = replay(&j[..j.len() - 3]);
        assert_eq!(cut.writes.get("a"), Some(&Some(b"1".to_vec())));
        assert_eq!(cut.dropped, j.len() - 3 - first);
        // A flipped byte in the second store.
        let mut bad = j.clone();
        bad[first + 7] ^= 1;
        assert_eq!(replay(&bad).writes.get("a"), Some(&Some(b"1".to_vec())));
        assert!(replay(&[]).writes.is_empty());
    }
}
