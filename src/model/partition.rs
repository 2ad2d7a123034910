//! Partitions (the seed's `EntityKeyData`): every entity and tombstone of one key,
//! with their canonical byte form and its hash.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde_json::value::RawValue;

use crate::clock::{parse_millis, Millis};
use crate::entity::{Entity, TOMBSTONES};

/// The state of one id in a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// The entity exists.
    Active(Entity),
    /// The entity was deleted at this instant.
    Deleted(Millis),
}

impl Slot {
    /// The entity, if active.
    pub fn entity(&self) -> Option<&Entity> {
        match self {
            Slot::Active(e) => Some(e),
            Slot::Deleted(_) => None,
        }
    }

    /// The instant of the last change: `updatedAt` or `deletedAt`.
    pub fn instant(&self) -> Millis {
        match self {
            Slot::Active(e) => e.updated_at(),
            Slot::Deleted(at) => *at,
        }
    }
}

/// Entity and tombstone counts of one entity name in a partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub count: u64,
    #[serde(rename = "deletedCount")]
    pub deleted_count: u64,
}

/// The slots of one entity name, by id: O(1) access for saves, in insertion order;
/// sorted only when the canonical form is written.
pub type Ids = IndexMap<String, Slot>;

/// Every entity and tombstone stored under one partition key, by entity name and id.
/// An id is either active or deleted, never both: the map makes that structural.
/// Equality ignores the order of ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partition {
    pub names: BTreeMap<String, Ids>,
}

/// A collision-resistant hash (BLAKE3, 256 bits) of bytes, as hex.
pub fn hash_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

impl Partition {
    /// Whether the partition holds nothing.
    pub fn is_empty(&self) -> bool {
        self.names.values().all(|ids| ids.is_empty())
    }

    /// The slot of one id.
    pub fn get(&self, name: &str, id: &str) -> Option<&Slot> {
        self.names.get(name)?.get(id)
    }

    /// Sets the slot of one id.
    pub fn put(&mut self, name: &str, id: &str, slot: Slot) {
        match self.names.get_mut(name) {
            Some(ids) => {
                ids.insert(id.to_string(), slot);
            }
            None => {
                self.names
                    .entry(name.to_string())
                    .or_default()
                    .insert(id.to_string(), slot);
            }
        }
    }

    /// Counts per entity name.
    pub fn counts(&self) -> BTreeMap<String, Counts> {
        let mut out = BTreeMap::new();
        for (name, ids) in &self.names {
            let mut c = Counts::default();
            for slot in ids.values() {
                match slot {
                    Slot::Active(_) => c.count += 1,
                    Slot::Deleted(_) => c.deleted_count += 1,
                }
            }
            if c != Counts::default() {
                out.insert(name.clone(), c);
            }
        }
        out
    }

    /// The canonical bytes: keys sorted at every depth, no whitespace, empty maps omitted.
    pub fn to_canonical(&self) -> Vec<u8> {
        let sorted: Vec<(&String, Vec<(&String, &Slot)>)> = self
            .names
            .iter()
            .map(|(name, ids)| {
                let mut ids: Vec<(&String, &Slot)> = ids.iter().collect();
                ids.sort_unstable_by(|a, b| a.0.cmp(b.0));
                (name, ids)
            })
            .collect();
        let size: usize = sorted
            .iter()
            .flat_map(|(_, ids)| ids.iter())
            .map(|(id, slot)| id.len() + 4 + slot.entity().map_or(26, |e| e.json().len()))
            .sum();
        let mut out = Vec::with_capacity(size + 64);
        let active =
            |ids: &[(&String, &Slot)]| ids.iter().any(|(_, s)| matches!(s, Slot::Active(_)));
        let has_tombstones = sorted
            .iter()
            .any(|(_, ids)| ids.iter().any(|(_, s)| matches!(s, Slot::Deleted(_))));
        let mut tombstones_written = !has_tombstones;
        let mut first = true;
        out.push(b'{');
        for (name, ids) in sorted.iter().filter(|(_, ids)| active(ids)) {
            if !tombstones_written && name.as_str() > TOMBSTONES {
                write_tombstones(&sorted, &mut out, &mut first);
                tombstones_written = true;
            }
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            push_json_string(&mut out, name);
            out.extend_from_slice(b":{");
            let mut first_id = true;
            for (id, slot) in ids {
                if let Slot::Active(entity) = slot {
                    if !std::mem::take(&mut first_id) {
                        out.push(b',');
                    }
                    push_json_string(&mut out, id);
                    out.push(b':');
                    out.extend_from_slice(entity.json().as_bytes());
                }
            }
            out.push(b'}');
        }
        if !tombstones_written {
            write_tombstones(&sorted, &mut out, &mut first);
        }
        out.push(b'}');
        out
    }

    /// Parses partition bytes. `trusted` bytes are known to be canonical (their hash
    /// matched the one recorded when this library wrote them), so entity texts are
    /// kept as they are; other bytes are re-serialised into canonical form.
    pub fn parse(bytes: &[u8], trusted: bool) -> Result<Partition, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
        if trusted {
            // This library wrote these bytes (their hash says so): split them without
            // validating every value; fall back to the full parse if they surprise us.
            if let Some(partition) = split_canonical(text) {
                return Ok(partition);
            }
        }
        let top: BTreeMap<String, &RawValue> =
            serde_json::from_str(text).map_err(|e| format!("not a partition document: {e}"))?;
        let mut partition = Partition::default();
        for (name, raw) in &top {
            if name == TOMBSTONES {
                continue;
            }
            let ids: IndexMap<String, &RawValue> = serde_json::from_str(raw.get())
                .map_err(|e| format!("section {name:?} is not an object of entities: {e}"))?;
            let mut slots = Ids::with_capacity(ids.len());
            for (id, raw) in ids {
                let entity = if trusted {
                    Entity::from_trusted(id.clone(), raw.get().to_string())
                } else {
                    let entity =
                        Entity::parse(raw.get()).map_err(|e| format!("{name} {id:?}: {e}"))?;
                    if entity.id() != id {
                        return Err(format!(
                            "{name} {id:?}: stored under another id than its own {:?}",
                            entity.id()
                        ));
                    }
                    entity
                };
                slots.insert(id, Slot::Active(entity));
            }
            partition.names.insert(name.clone(), slots);
        }
        if let Some(raw) = top.get(TOMBSTONES) {
            let deleted: BTreeMap<String, BTreeMap<String, String>> =
                serde_json::from_str(raw.get())
                    .map_err(|e| format!("tombstone section is malformed: {e}"))?;
            for (name, ids) in deleted {
                let slots = partition.names.entry(name.clone()).or_default();
                for (id, at) in ids {
                    let at = parse_millis(&at).ok_or_else(|| {
                        format!("tombstone {name} {id:?}: {at:?} is not an instant")
                    })?;
                    if slots.insert(id.clone(), Slot::Deleted(at)).is_some() {
                        return Err(format!("{name} {id:?} is both active and deleted"));
                    }
                }
            }
        }
        partition.names.retain(|_, ids| !ids.is_empty());
        Ok(partition)
    }
}

/// A cursor over canonical JSON text (compact, as this library writes it).
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// A string, unescaped.
    fn string(&mut self) -> Option<String> {
        let start = self.at;
        self.skip_string()?;
        let quoted = &self.text[start..self.at];
        if quoted.contains('\\') {
            serde_json::from_str(quoted).ok()
        } else {
            Some(quoted[1..quoted.len() - 1].to_string())
        }
    }

    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        let bytes = self.text.as_bytes();
        loop {
            match *bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                b'\\' => self.at += 2,
                _ => self.at += 1,
            }
        }
    }

    /// Skips one value and returns its text.
    fn value(&mut self) -> Option<&'a str> {
        let start = self.at;
        let bytes = self.text.as_bytes();
        match self.peek()? {
            b'"' => self.skip_string()?,
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match *bytes.get(self.at)? {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.at += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    self.at += 1;
                }
            }
            _ => {
                while !matches!(self.peek()?, b',' | b'}' | b']') {
                    self.at += 1;
                }
            }
        }
        Some(&self.text[start..self.at])
    }

    /// `{"key":value,...}`, calling `each` per member.
    fn members(&mut self, mut each: impl FnMut(&mut Self, String) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            each(self, key)?;
            if self.eat(b',').is_none() {
                return self.eat(b'}');
            }
        }
    }
}

/// Splits canonical partition bytes into entities without parsing the entities.
fn split_canonical(text: &str) -> Option<Partition> {
    let mut partition = Partition::default();
    let mut cursor = Cursor { text, at: 0 };
    cursor.members(|c, name| {
        if name == TOMBSTONES {
            let deleted: BTreeMap<String, BTreeMap<String, String>> =
                serde_json::from_str(c.value()?).ok()?;
            for (name, ids) in deleted {
                let slots = partition.names.entry(name).or_default();
                for (id, at) in ids {
                    if slots
                        .insert(id, Slot::Deleted(parse_millis(&at)?))
                        .is_some()
                    {
                        return None;
                    }
                }
            }
            return Some(());
        }
        // Names sorting after "deleted" may already hold tombstones.
        let slots = partition.names.entry(name).or_default();
        c.members(|c, id| {
            let json = c.value()?.to_string();
            match slots.insert(id.clone(), Slot::Active(Entity::from_trusted(id, json))) {
                None => Some(()),
                Some(_) => None,
            }
        })
    })?;
    (cursor.at == text.len()).then_some(partition)
}

fn write_tombstones(
    sorted: &[(&String, Vec<(&String, &Slot)>)],
    out: &mut Vec<u8>,
    first: &mut bool,
) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    push_json_string(out, TOMBSTONES);
    out.extend_from_slice(b":{");
    let mut first_name = true;
    for (name, ids) in sorted {
        let mut deleted = ids.iter().filter_map(|(id, s)| match s {
            Slot::Deleted(at) => Some((*id, *at)),
            Slot::Active(_) => None,
        });
        let Some(head) = deleted.next() else { continue };
        if !std::mem::take(&mut first_name) {
            out.push(b',');
        }
        push_json_string(out, name);
        out.extend_from_slice(b":{");
        for (i, (id, at)) in std::iter::once(head).chain(deleted).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_json_string(out, id);
            out.extend_from_slice(b":\"");
            crate::clock::write_millis(out, at);
            out.push(b'"');
        }
        out.push(b'}');
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(id: &str, at: &str, version: u64) -> Entity {
        Entity::parse(&format!(
            r#"{{ "version": {version}, "updatedAt": "{at}", "id": "{id}", "b": [1, 2] }}"#
        ))
        .unwrap()
    }

    #[test]
    fn canonical_form_sorts_and_round_trips() {
        let mut p = Partition::default();
        p.put(
            "Zed",
            "Z.1",
            Slot::Active(entity("Z.1", "2026-01-01T00:00:00.000Z", 1)),
        );
        p.put("Apple", "A.2", Slot::Deleted(5));
        p.put(
            "Apple",
            "A.1",
            Slot::Active(entity("A.1", "2026-01-01T00:00:00.000Z", 2)),
        );
        p.put("Empty", "E.1", Slot::Deleted(7));
        let mut late = p.clone();
        late.put(
            "zoo",
            "z.1",
            Slot::Active(entity("z.1", "2026-01-01T00:00:00.000Z", 1)),
        );
        late.put("zoo", "z.2", Slot::Deleted(9));
        let late_bytes = late.to_canonical();
        assert_eq!(Partition::parse(&late_bytes, true).unwrap(), late);
        assert_eq!(Partition::parse(&late_bytes, false).unwrap(), late);
        let bytes = p.to_canonical();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            r#"{"Apple":{"A.1":{"b":[1,2],"id":"A.1","updatedAt":"2026-01-01T00:00:00.000Z","version":2}},"Zed":{"Z.1":{"b":[1,2],"id":"Z.1","updatedAt":"2026-01-01T00:00:00.000Z","version":1}},"deleted":{"Apple":{"A.2":"1970-01-01T00:00:00.005Z"},"Empty":{"E.1":"1970-01-01T00:00:00.007Z"}}}"#
        );
        let back = Partition::parse(&bytes, true).unwrap();
        assert_eq!(back, p);
        assert_eq!(
            split_canonical(std::str::from_utf8(&bytes).unwrap()).unwrap(),
            p
        );
        assert_eq!(
            Partition::parse(&bytes, false).unwrap().to_canonical(),
            bytes
        );
        let pretty = serde_json::to_string_pretty(
            &serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
        )
        .unwrap();
        assert_eq!(
            Partition::parse(pretty.as_bytes(), false)
                .unwrap()
                .to_canonical(),
            bytes
        );
        assert_eq!(Partition::default().to_canonical(), b"{}");
    }

    #[test]
    fn corrupt_partitions_are_refused() {
        for bad in [
            &b"not json"[..],
            b"[1,2]",
            b"{\"User\":[1]}",
            b"{\"User\":{\"x.1\":{\"id\":\"x.2\",\"updatedAt\":\"2026-01-01T00:00:00Z\",\"version\":1}}}",
            b"{\"User\":{\"x.1\":{\"id\":\"x.1\",\"version\":1}}}",
            b"{\"deleted\":{\"User\":{\"x.1\":\"later\"}}}",
            b"\xff\xfe",
        ] {
            assert!(Partition::parse(bad, false).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let both = br#"{"User":{"x.1":{"id":"x.1","updatedAt":"2026-01-01T00:00:00.000Z","version":1}},"deleted":{"User":{"x.1":"2026-01-01T00:00:00.000Z"}}}"#;
        assert!(Partition::parse(both, false).is_err());
    }
}
