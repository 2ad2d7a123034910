//! The tokens file: each bearer token names a device and the partition-key patterns
//! it may read and write.
//!
//! One JSON object per line; blank lines and lines starting with `#` are ignored:
//! `{"token": "...", "device": "...", "read": ["app.*"], "write": ["app.alice*"]}`.
//! In a pattern `*` matches any run of characters (including none); every other
//! character matches itself.

use std::path::Path;

use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::keys::KeyClass;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    token: String,
    device: String,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
}

/// What one token grants. The secret itself is kept only as a digest.
#[derive(Debug, Clone)]
pub struct Grant {
    pub device: String,
    pub read: Vec<String>,
    pub write: Vec<String>,
}

/// The kind of access a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Grant {
    /// Whether this token may read (or list) / write a key of this class.
    pub fn allows(&self, class: &KeyClass, access: Access) -> bool {
        match (class, access) {
            (KeyClass::Summary, Access::Read) => true,
            (KeyClass::Summary, Access::Write) => !self.write.is_empty(),
            (KeyClass::Partition(p), Access::Read) => self.read.iter().any(|pat| glob(pat, p)),
            (KeyClass::Partition(p), Access::Write) => self.write.iter().any(|pat| glob(pat, p)),
        }
    }
}

/// Every token of the file. Lookups hash the presented token and compare the digest
/// with every entry in constant time, so neither the position of the match nor the
/// length of a common prefix shows in the timing.
pub struct Tokens {
    entries: Vec<([u8; 32], Grant)>,
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the tokens file {}: {e}", path.display()))?;
        Tokens::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries: Vec<([u8; 32], Grant)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The error names the line, never its content: the line holds a secret.
            let parsed: Line = serde_json::from_str(line).map_err(|e| {
                format!(
                    "tokens file line {}: not a token object ({})",
                    n + 1,
                    e.classify_name()
                )
            })?;
            if parsed.token.is_empty() {
                return Err(format!("tokens file line {}: empty token", n + 1));
            }
            let digest = *blake3::hash(parsed.token.as_bytes()).as_bytes();
            if entries.iter().any(|(d, _)| *d == digest) {
                return Err(format!("tokens file line {}: duplicate token", n + 1));
            }
            entries.push((
                digest,
                Grant {
                    device: parsed.device,
                    read: parsed.read,
                    write: parsed.write,
                },
            ));
        }
        Ok(Tokens { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The grant of a presented token, if it is one of the file's.
    pub fn lookup(&self, presented: &str) -> Option<&Grant> {
        let digest = blake3::hash(presented.as_bytes());
        let mut found = None;
        for (d, grant) in &self.entries {
            // No early exit: every entry is compared.
            if bool::from(d.ct_eq(digest.as_bytes())) {
                found = Some(grant);
            }
        }
        found
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io error",
            serde_json::error::Category::Syntax => "bad JSON",
            serde_json::error::Category::Data => "missing or mistyped field",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// `*` matches any run of characters (including none); the rest literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen and the text position it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("app.*", "app.alice"));
        assert!(glob("app.*", "app."));
        assert!(!glob("app.*", "app"));
        assert!(glob("app.alice*", "app.alice.notes"));
        assert!(!glob("app.alice*", "app.bob"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(glob("*.x", "a.b.x"));
    }

    #[test]
    fn lookups() {
        let t = Tokens::parse(
            "# comment\n\n{\"token\":\"s1\",\"device\":\"a\",\"read\":[\"app.*\"],\"write\":[]}\n\
             {\"token\":\"s2\",\"device\":\"b\",\"read\":[],\"write\":[\"app.b*\"]}\n",
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup("s1").unwrap().device, "a");
        assert_eq!(t.lookup("s2").unwrap().device, "b");
        assert!(t.lookup("s3").is_none());
        assert!(t.lookup("").is_none());
        let a = t.lookup("s1").unwrap();
        let p = KeyClass::Partition("app.x".into());
        assert!(a.allows(&p, Access::Read));
        assert!(!a.allows(&p, Access::Write));
        assert!(!a.allows(&KeyClass::Summary, Access::Write));
        assert!(t
            .lookup("s2")
            .unwrap()
            .allows(&KeyClass::Summary, Access::Write));
        assert!(Tokens::parse("{\"token\":\"x\"}").is_err());
        assert!(Tokens::parse("not json").is_err());
    }
}
