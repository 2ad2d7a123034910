//! Entities: JSON objects held in canonical form, with their reserved fields parsed.

use std::fmt;
use std::sync::Arc;

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
    updated_at: Millis,
    version: u64,
}

#[derive(Deserialize)]
struct Header<'a> {
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

    /// Wraps canonical JSON text (as produced by this library) after reading its
    /// reserved fields. Text that is not canonical must go through [`Entity::parse`].
    pub(crate) fn from_canonical(json: String) -> Result<Entity> {
        let header: Header = serde_json::from_str(&json)
            .map_err(|e| Error::InvalidEntity(format!("not a JSON object: {e}")))?;
        let id = match header.id {
            Some(id) if !id.is_empty() => id.into_owned(),
            _ => return Err(Error::InvalidEntity("missing or empty \"id\"".into())),
        };
        let updated_at = header
            .updated_at
            .as_deref()
            .and_then(parse_millis)
            .ok_or_else(|| Error::InvalidEntity(format!("entity {id:?} has no valid \"updatedAt\"")))?;
        let version = match header.version {
            Some(Value::Number(n)) => n.as_u64().filter(|v| *v >= 1),
            _ => None,
        }
        .ok_or_else(|| Error::InvalidEntity(format!("entity {id:?} has no valid \"version\"")))?;
        Ok(Entity(Arc::new(Inner {
            id: id.into_boxed_str(),
            json: json.into_boxed_str(),
            updated_at,
            version,
        })))
    }

    /// Wraps canonical JSON text whose reserved fields the caller already knows.
    pub(crate) fn from_parts(id: &str, json: String, updated_at: Millis, version: u64) -> Result<Entity> {
        Ok(Entity(Arc::new(Inner { id: id.into(), json: json.into_boxed_str(), updated_at, version })))
    }

    /// Parses JSON text of any layout into canonical form.
    pub(crate) fn parse(text: &str) -> Result<Entity> {
        match serde_json::from_str::<Value>(text)? {
            Value::Object(map) => Entity::from_object(&map),
            _ => Err(Error::InvalidEntity("an entity must be a JSON object".into())),
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
        self.0.updated_at
    }

    /// `updatedAt` as written in the entity.
    pub fn updated_at_text(&self) -> String {
        format_millis(self.0.updated_at)
    }

    /// The entity's version (1 for a new entity, +1 for every save).
    pub fn version(&self) -> u64 {
        self.0.version
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
