//! Keys: how a request's path segment becomes a key, and which partition a key
//! belongs to (the one function every token check goes through).

/// The longest key the server accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// What a key is, for the token checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClass {
    /// A reserved summary document (`!datasync.*`): any valid token may read it, any
    /// token with at least one write pattern may write or clear it.
    Summary,
    /// A key that belongs to the partition named here.
    Partition(String),
}

/// Decodes one percent-encoded path segment into a key. The result is checked with
/// [`classify`] by the caller; here only the encoding is checked.
pub fn decode_segment(segment: &str) -> Result<String, String> {
    let raw = segment.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let hex = raw
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "malformed key: bad percent-encoding".to_string())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "malformed key: not valid UTF-8".to_string())
}

/// Checks a key and names its partition. Every refusal is a one-line reason for a 400.
pub fn classify(key: &str) -> Result<KeyClass, String> {
    if key.is_empty() {
        return Err("malformed key: empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("malformed key: longer than {MAX_KEY_BYTES} bytes"));
    }
    if key.chars().any(|c| (c as u32) < 0x20 || c == '\u{7f}') {
        return Err("malformed key: control character".into());
    }
    if key.starts_with("!datasync.") {
        return Ok(KeyClass::Summary);
    }
    if let Some(rest) = key.strip_prefix("!piece:") {
        return match rest.rfind(':') {
            Some(at) => Ok(KeyClass::Partition(rest[..at].to_string())),
            None => Err("malformed key: a piece key needs `:<hash>`".into()),
        };
    }
    if let Some(rest) = key.strip_prefix("!index:") {
        return Ok(KeyClass::Partition(rest.to_string()));
    }
    if key.starts_with('!') {
        return Err("malformed key: unknown reserved key".into());
    }
    Ok(KeyClass::Partition(key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions() {
        assert_eq!(
            classify("app.alice"),
            Ok(KeyClass::Partition("app.alice".into()))
        );
        assert_eq!(
            classify("!piece:app.alice:x:abc"),
            Ok(KeyClass::Partition("app.alice:x".into()))
        );
        assert_eq!(
            classify("!index:app.bob"),
            Ok(KeyClass::Partition("app.bob".into()))
        );
        assert_eq!(classify("!datasync.summary"), Ok(KeyClass::Summary));
        assert!(classify("!other").is_err());
        assert!(classify("!piece:nohash").is_err());
        assert!(classify("").is_err());
        assert!(classify("a\nb").is_err());
        assert!(classify("a\u{7f}").is_err());
        assert!(classify(&"k".repeat(1025)).is_err());
        assert!(classify(&"k".repeat(1024)).is_ok());
    }

    #[test]
    fn decoding() {
        assert_eq!(decode_segment("a%2Fb").unwrap(), "a/b");
        assert_eq!(decode_segment("%2e%2E").unwrap(), "..");
        assert!(decode_segment("%zz").is_err());
        assert!(decode_segment("%4").is_err());
        assert!(decode_segment("%ff").is_err());
        assert_eq!(decode_segment("%C3%A9").unwrap(), "é");
    }
}
