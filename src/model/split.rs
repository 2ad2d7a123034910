//! Bounded partitions: a partition that a strategy gives (its *base*) is split into
//! sub-partitions as its entity name grows, so no partition grows far past a bound
//! (about 1,000 entities by default).
//!
//! A new entity's sub-partition is the first `d` bits of its random identifier,
//! written after the base as `<sep>~<bits>`: the id `User.~0110.Ztq…` lives in the
//! partition `app.User.~0110`. The label is part of the id's logical key, so an id
//! alone still names its partition and `get(id)` never scans; existing ids (depth 0,
//! no label) keep naming the base.
//!
//! The depth `d` grows with the number of entities of the name under the base, as the
//! instance that creates the entity knows it: with bound `B`, depth `d` is used while
//! that count is below `B · (2^(d+1) − 1)`. Depth `d` has `2^d` sub-partitions that
//! share the `B · 2^d` entities created while it is current, about `B` each. Devices
//! that count differently create at different depths, which is harmless: every
//! partition still fills only while its depth is current.

use crate::id::ALPHABET;

/// The character that starts a sub-partition label after the separator.
pub const LABEL_MARK: char = '~';

/// The deepest split (2^24 sub-partitions of one base).
pub const MAX_DEPTH: u32 = 24;

/// The default bound: about this many entities per partition.
pub const DEFAULT_BOUND: u64 = 1000;

/// The depth a new entity takes when `total` entities of its name are already known
/// under its base: the smallest `d` with `total < bound · (2^(d+1) − 1)`.
pub fn depth_for(total: u64, bound: u64) -> u32 {
    let bound = bound.max(1);
    (0..MAX_DEPTH)
        .find(|&d| total < bound.saturating_mul((1u64 << (d + 1)) - 1))
        .unwrap_or(MAX_DEPTH)
}

/// The first `depth` bits of `ident` (six per [`ALPHABET`] character), as `0`s and
/// `1`s; `None` when `ident` is too short or holds a character outside the alphabet.
pub fn bits_of(ident: &str, depth: u32) -> Option<String> {
    let mut out = String::with_capacity(depth as usize);
    let mut chars = ident.bytes();
    while out.len() < depth as usize {
        let c = chars.next()?;
        let value = ALPHABET.iter().position(|&a| a == c)? as u8;
        for bit in (0..6).rev() {
            if out.len() == depth as usize {
                break;
            }
            out.push(if value >> bit & 1 == 1 { '1' } else { '0' });
        }
    }
    Some(out)
}

/// The logical key of a new entity whose strategy gave `logical` and whose random
/// identifier is `ident`, at `depth` (`logical` itself at depth 0).
pub fn labelled(logical: &str, separator: char, ident: &str, depth: u32) -> Option<String> {
    if depth == 0 {
        return Some(logical.to_string());
    }
    let bits = bits_of(ident, depth)?;
    let mut out = String::with_capacity(logical.len() + 2 + bits.len());
    out.push_str(logical);
    out.push(separator);
    out.push(LABEL_MARK);
    out.push_str(&bits);
    Some(out)
}

/// Splits a key (or logical key) that ends with a sub-partition label into its base
/// and the label's bits.
pub fn split_key(key: &str, separator: char) -> Option<(&str, &str)> {
    let digits = key.len() - key.trim_end_matches(['0', '1']).len();
    if digits == 0 || digits > MAX_DEPTH as usize {
        return None;
    }
    let rest = key[..key.len() - digits].strip_suffix(LABEL_MARK)?;
    let base = rest.strip_suffix(separator)?;
    if base.is_empty() {
        return None;
    }
    Some((base, &key[key.len() - digits..]))
}

/// `key` without its sub-partition label, if it has one.
pub fn base_of(key: &str, separator: char) -> &str {
    split_key(key, separator).map_or(key, |(base, _)| base)
}

/// Whether `key` is `base` or one of its sub-partitions.
pub fn within(key: &str, base: &str, separator: char) -> bool {
    key == base || split_key(key, separator).is_some_and(|(b, _)| b == base)
}

/// The text every sub-partition key of `base` starts with.
pub fn sub_prefix(base: &str, separator: char) -> String {
    let mut out = String::with_capacity(base.len() + 2);
    out.push_str(base);
    out.push(separator);
    out.push(LABEL_MARK);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_grows_once_each_level_has_had_its_share() {
        assert_eq!(depth_for(0, 1000), 0);
        assert_eq!(depth_for(999, 1000), 0);
        assert_eq!(depth_for(1000, 1000), 1);
        assert_eq!(depth_for(2999, 1000), 1);
        assert_eq!(depth_for(3000, 1000), 2);
        assert_eq!(depth_for(100_000, 1000), 6);
        assert_eq!(depth_for(1_000_000, 1000), 9);
        assert_eq!(depth_for(u64::MAX, 1000), MAX_DEPTH);
        assert_eq!(depth_for(5, 0), 2);
    }

    #[test]
    fn labels_are_the_identifiers_leading_bits() {
        // 'A' is 0 (000000), 'B' is 1 (000001), '-' is 63 (111111).
        assert_eq!(bits_of("B-xyz", 6).as_deref(), Some("000001"));
        assert_eq!(bits_of("-A", 8).as_deref(), Some("11111100"));
        assert_eq!(bits_of("-", 7), None);
        assert_eq!(bits_of("~", 1), None);
        assert_eq!(labelled("User", '.', "-A", 3).as_deref(), Some("User.~111"));
        assert_eq!(labelled("User", '.', "-A", 0).as_deref(), Some("User"));
    }

    #[test]
    fn keys_split_back_into_base_and_label() {
        assert_eq!(split_key("app.User.~0110", '.'), Some(("app.User", "0110")));
        assert_eq!(split_key("app.User~~01", '~'), Some(("app.User", "01")));
        assert_eq!(split_key("app.User", '.'), None);
        assert_eq!(split_key("app.User.0110", '.'), None);
        assert_eq!(split_key("app.User.~", '.'), None);
        assert_eq!(split_key(".~01", '.'), None);
        assert_eq!(
            split_key("app.Log.2026-01.~1", '.'),
            Some(("app.Log.2026-01", "1"))
        );
        assert!(within("app.User.~1", "app.User", '.'));
        assert!(within("app.User", "app.User", '.'));
        assert!(!within("app.Users.~1", "app.User", '.'));
        assert_eq!(base_of("app.User.~10", '.'), "app.User");
        assert_eq!(sub_prefix("app.User", '.'), "app.User.~");
    }
}
