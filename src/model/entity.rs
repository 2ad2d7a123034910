//! Entities: JSON objects held in canonical form, with their reserved fields parsed.

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::clock::{format_millis, parse_millis, Millis};
use crate::error::{Error, Result};

/// The name of the tombstone section of a partition blob; no entity may use it.
pub const TOMBSTONES: &str = "deleted";

/// Largest entity, in bytes of canonical JSON, that `save` accepts.
pub const MAX_ENTITY_BYTES: usize = 16 * 1024 * 1024;

/// A stored entity: an immutable JSON object in canonical form (keys sorted, no
/// whitespace), cheap to clone, with `id`, `updatedAt` and `version` at hand.
#[derive(Clone)]
pub struct Entity(Arc<Inner>);

struct Inner {
    id: Box<str>,
    json: Box<str>,
    /// The reserved fields, read from `json` when first needed (entities loaded from
    /// trusted bytes are not parsed until a merge, a save over them or a caller asks).
    stamps: OnceLock<Stamps>,
}

/// `createdAt` (None when absent or not an instant), `updatedAt` and `version`.
#[derive(Clone, Copy)]
struct Stamps {
    created: Option<Millis>,
    updated: Millis,
    version: u64,
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(rename = "createdAt", borrow)]
    created_at: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "updatedAt", borrow)]
    updated_at: Option<std::borrow::Cow<'a, str>>,
    version: Option<Value>,
}

impl Entity {
    /// Builds an entity from an object that already carries valid reserved fields.
    pub(crate) fn from_object(object: &Map<String, Value>) -> Result<Entity> {
        let json = serde_json::to_string(object)?;
        Entity::from_canonical(json)
    }

    /// Wraps canonical JSON text known to be valid (its hash matched what this library
    /// wrote); the reserved fields are read lazily.
    pub(crate) fn from_trusted(id: String, json: String) -> Entity {
        Entity(Arc::new(Inner {
            id: id.into_boxed_str(),
            json: json.into_boxed_str(),
            stamps: OnceLock::new(),
        }))
    }

    fn stamps(&self) -> Stamps {
        *self.0.stamps.get_or_init(|| match Entity::read_stamps(&self.0.json) {
            Ok((_, stamps)) => stamps,
            Err(e) => {
                log::error!(target: "datasync::entity", "entity {:?} lost its reserved fields: {e}", self.0.id);
                Stamps {
                    created: None,
                    updated: Millis::MIN,
                    version: 0,
                }
            }
        })
    }

    fn read_stamps(json: &str) -> Result<(String, Stamps)> {
        let header: Header = serde_json::from_str(json)
            .map_err(|e| Error::InvalidEntity(format!("not a JSON object: {e}")))?;
        let id = match header.id {
            Some(id) if !id.is_empty() => id.into_owned(),
            _ => return Err(Error::InvalidEntity("missing or empty \"id\"".into())),
        };
        let updated_at = header
            .updated_at
            .as_deref()
            .and_then(parse_millis)
            .ok_or_else(|| {
                Error::InvalidEntity(format!("entity {id:?} has no valid \"updatedAt\""))
            })?;
        let version = match header.version {
            Some(Value::Number(n)) => n.as_u64().filter(|v| *v >= 1),
            _ => None,
        }
        .ok_or_else(|| Error::InvalidEntity(format!("entity {id:?} has no valid \"version\"")))?;
        let created = header.created_at.as_deref().and_then(parse_millis);
        Ok((
            id,
            Stamps {
                created,
                updated: updated_at,
                version,
            },
        ))
    }

    /// Wraps canonical JSON text after checking its reserved fields. Text that is not
    /// canonical must go through [`Entity::parse`].
    pub(crate) fn from_canonical(json: String) -> Result<Entity> {
        let (id, stamps) = Entity::read_stamps(&json)?;
        let stamps = OnceLock::from(stamps);
        Ok(Entity(Arc::new(Inner {
            id: id.into_boxed_str(),
            json: json.into_boxed_str(),
            stamps,
        })))
    }

    /// Builds a saved entity from the caller's object and the reserved fields, writing
    /// canonical JSON directly (the object is neither copied nor changed).
    pub(crate) fn build(
        object: &Map<String, Value>,
        id: &str,
        created: Millis,
        updated: Millis,
        version: u64,
    ) -> Result<Entity> {
        const RESERVED: [&str; 4] = ["createdAt", "id", "updatedAt", "version"];
        let mut out: Vec<u8> = Vec::with_capacity(256);
        let mut reserved = RESERVED.iter().copied().peekable();
        let write_reserved = |out: &mut Vec<u8>, name: &str| {
            push_str(out, name);
            out.push(b':');
            match name {
                "createdAt" => push_stamp(out, created),
                "id" => push_str(out, id),
                "updatedAt" => push_stamp(out, updated),
                _ => out.extend_from_slice(version.to_string().as_bytes()),
            }
        };
        out.push(b'{');
        let mut first = true;
        for (key, value) in object {
            if RESERVED.contains(&key.as_str()) {
                continue;
            }
            while let Some(name) = reserved.next_if(|name| *name < key.as_str()) {
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                write_reserved(&mut out, name);
            }
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            push_str(&mut out, key);
            out.push(b':');
            serde_json::to_writer(&mut out, value)?;
        }
        for name in reserved {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            write_reserved(&mut out, name);
        }
        out.push(b'}');
        if out.len() > MAX_ENTITY_BYTES {
            return Err(Error::InvalidEntity(format!(
                "{id:?} is {} bytes; the limit is {MAX_ENTITY_BYTES}",
                out.len()
            )));
        }
        // Only valid UTF-8 was written: keys and strings come from `String`s.
        let json = String::from_utf8(out).map_err(|e| Error::Internal(e.to_string()))?;
        let stamps = OnceLock::from(Stamps {
            created: Some(created),
            updated,
            version,
        });
        Ok(Entity(Arc::new(Inner {
            id: id.into(),
            json: json.into_boxed_str(),
            stamps,
        })))
    }

    /// `createdAt` (read with the other reserved fields, once).
    pub(crate) fn created_at(&self) -> Option<Millis> {
        self.stamps().created
    }

    /// Parses JSON text of any layout into canonical form.
    pub(crate) fn parse(text: &str) -> Result<Entity> {
        match serde_json::from_str::<Value>(text)? {
            Value::Object(map) => Entity::from_object(&map),
            _ => Err(Error::InvalidEntity(
                "an entity must be a JSON object".into(),
            )),
        }
    }

    /// The entity's id.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The canonical JSON text of the entity.
    pub fn json(&self) -> &str {
        &self.0.json
    }

    /// `updatedAt` in milliseconds since the epoch.
    pub fn updated_at(&self) -> Millis {
        self.stamps().updated
    }

    /// `updatedAt` as written in the entity.
    pub fn updated_at_text(&self) -> String {
        format_millis(self.updated_at())
    }

    /// The entity's version (1 for a new entity, +1 for every save).
    pub fn version(&self) -> u64 {
        self.stamps().version
    }

    /// The entity as a JSON value (parsed on each call).
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.0.json).unwrap_or(Value::Null)
    }

    /// The entity as a JSON object (parsed on each call).
    pub fn object(&self) -> Map<String, Value> {
        match self.value() {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    /// Deserialises the entity into an app type.
    pub fn to_typed<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_str(&self.0.json)?)
    }

    /// Whether two handles hold the same bytes.
    pub fn same_content(&self, other: &Entity) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.json == other.0.json
    }
}

impl PartialEq for Entity {
    fn eq(&self, other: &Self) -> bool {
        self.same_content(other)
    }
}

impl Eq for Entity {}

impl fmt::Debug for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.json)
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.json)
    }
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing a str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn push_stamp(out: &mut Vec<u8>, ms: Millis) {
    out.push(b'"');
    crate::clock::write_millis(out, ms);
    out.push(b'"');
}

/// Checks an entity name: non-empty, not `deleted`, no control characters, no separator.
pub fn validate_name(name: &str, separator: char) -> Result<()> {
    let refuse = |why: &str| Err(Error::InvalidName(name.to_string(), why.to_string()));
    if name.is_empty() {
        return refuse("entity names must not be empty");
    }
    if name == TOMBSTONES {
        return refuse("\"deleted\" is reserved for tombstones");
    }
    if name.len() > 256 {
        return refuse("longer than 256 bytes");
    }
    if name.chars().any(|c| c.is_control()) {
        return refuse("contains a control character");
    }
    if name.contains(separator) {
        return refuse(&format!("contains the key separator {separator:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn built_entities_are_canonical() {
        for input in [
            json!({}),
            json!({"zeta": 1, "alpha": [3, {"b": 1, "a": "x\"y"}], "id": "ignored", "version": 9}),
            json!({"createdAt": "junk", "identity": true, "idx": null, "updatedAt": 1, "vv": "é", "a\nb": 0.5}),
        ] {
            let object = input.as_object().unwrap();
            let e = Entity::build(object, "U.1", 1000, 2000, 3).unwrap();
            let mut expected = object.clone();
            expected.insert("id".into(), json!("U.1"));
            expected.insert("createdAt".into(), json!(format_millis(1000)));
            expected.insert("updatedAt".into(), json!(format_millis(2000)));
            expected.insert("version".into(), json!(3));
            assert_eq!(e.json(), serde_json::to_string(&expected).unwrap());
            assert_eq!(e.created_at(), Some(1000));
            assert_eq!((e.updated_at(), e.version(), e.id()), (2000, 3, "U.1"));
        }
    }
}
