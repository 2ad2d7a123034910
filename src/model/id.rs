//! Entity ids: `<logicalKey><sep><identifier>`, with a random nanoid identifier.

use crate::error::{Error, Result};

/// The alphabet identifiers are drawn from (64 URL-safe characters).
pub const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// [`ALPHABET`] as the characters `nanoid` draws from.
const ALPHABET_CHARS: [char; 64] = {
    let mut chars = ['\0'; 64];
    let mut i = 0;
    while i < 64 {
        chars[i] = ALPHABET[i] as char;
        i += 1;
    }
    chars
};

/// Longest id or key accepted.
pub const MAX_ID_LEN: usize = 1024;

/// Appends a random identifier of `len` characters to `out`.
pub fn push_identifier(out: &mut String, len: usize) {
    out.push_str(&nanoid::format(random_bytes, &ALPHABET_CHARS, len));
}

/// nanoid's random source: the thread's cryptographically secure generator, seeded
/// once per thread (nanoid's own default seeds a new generator from the OS for every
/// id, a system call per save).
fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::Rng::fill(&mut rand::thread_rng(), &mut bytes[..]);
    bytes
}

/// Generates a new id for an entity in `logical_key`.
pub fn generate(logical_key: &str, separator: char, len: usize) -> String {
    let mut id = String::with_capacity(logical_key.len() + 1 + len);
    id.push_str(logical_key);
    id.push(separator);
    push_identifier(&mut id, len);
    id
}

/// A new random identifier of `len` characters.
pub fn identifier(len: usize) -> String {
    let mut out = String::with_capacity(len);
    push_identifier(&mut out, len);
    out
}

/// The id `<logical_key><separator><identifier>`.
pub fn join(logical_key: &str, separator: char, identifier: &str) -> String {
    let mut id = String::with_capacity(logical_key.len() + 1 + identifier.len());
    id.push_str(logical_key);
    id.push(separator);
    id.push_str(identifier);
    id
}

/// Splits an id into its logical key and identifier, refusing ids that do not parse.
pub fn parse(id: &str, separator: char) -> Result<(&str, &str)> {
    let refuse = |why: &str| Err(Error::InvalidId(id.to_string(), why.to_string()));
    if id.is_empty() {
        return refuse("ids must not be empty");
    }
    if id.len() > MAX_ID_LEN {
        return refuse("longer than 1024 bytes");
    }
    if id.chars().any(|c| c.is_control()) {
        return refuse("contains a control character");
    }
    match id.rsplit_once(separator) {
        Some((logical, ident)) if !logical.is_empty() && !ident.is_empty() => {
            validate_logical_key(logical, separator).map_err(|_| {
                Error::InvalidId(
                    id.to_string(),
                    format!("logical key {logical:?} is not valid"),
                )
            })?;
            Ok((logical, ident))
        }
        _ => refuse(&format!(
            "expected <logicalKey>{separator}<identifier> with both parts non-empty"
        )),
    }
}

/// Checks a logical key a strategy produced.
pub fn validate_logical_key(logical: &str, separator: char) -> Result<()> {
    let refuse = |why: &str| Err(Error::InvalidKey(logical.to_string(), why.to_string()));
    if logical.is_empty() {
        return refuse("logical keys must not be empty");
    }
    if logical.len() > MAX_ID_LEN / 2 {
        return refuse("longer than 512 bytes");
    }
    if logical.chars().any(|c| c.is_control()) {
        return refuse("contains a control character");
    }
    if logical.starts_with(separator) || logical.ends_with(separator) {
        return refuse("starts or ends with the separator");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let id = generate("User", '.', 16);
        assert_eq!(id.len(), 4 + 1 + 16);
        let (logical, ident) = parse(&id, '.').unwrap();
        assert_eq!(logical, "User");
        assert!(ident.bytes().all(|b| ALPHABET.contains(&b)));
    }

    #[test]
    fn logical_keys_may_hold_the_separator() {
        let (logical, ident) = parse("User.2026-01.abc", '.').unwrap();
        assert_eq!((logical, ident), ("User.2026-01", "abc"));
    }

    #[test]
    fn bad_ids_are_refused() {
        for bad in [
            "",
            "nosep",
            ".abc",
            "User.",
            "a\u{0}b.c",
            ".",
            "User..x.",
            &"x".repeat(2000),
        ] {
            assert!(parse(bad, '.').is_err(), "{bad:?} parsed");
        }
    }
}
