//! Key strategies: how entities are grouped into partitions, and which partitions a
//! query reads.

use serde_json::{Map, Value};

use crate::clock::{civil_date, parse_millis, Millis};
use crate::error::{Error, Result};
use crate::id::ALPHABET;
use crate::split;

/// The partitions a query or collection observer covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidates {
    /// Exactly these partition keys.
    Keys(Vec<String>),
    /// Every known partition key that starts with this text.
    Prefix(String),
    /// Exactly these partition keys and their sub-partitions (bounded partitions,
    /// [`crate::split`]); the instance reads a splitting strategy's `Keys` so.
    Split { keys: Vec<String>, separator: char },
}

impl Candidates {
    /// Whether `key` is covered.
    pub fn covers(&self, key: &str) -> bool {
        match self {
            Candidates::Keys(keys) => keys.iter().any(|k| k == key),
            Candidates::Prefix(prefix) => key.starts_with(prefix.as_str()),
            Candidates::Split { keys, separator } => {
                keys.iter().any(|k| split::within(key, k, *separator))
            }
        }
    }
}

/// Maps entities to logical keys and queries to partition keys.
///
/// `logical_key` must be pure: the same entity always gives the same key.
/// `candidate_keys` returns only keys the caller may read; it is the authorisation hook.
pub trait KeyStrategy: Send + Sync {
    /// The separator between the parts of ids and keys. Must not be one of
    /// [`ALPHABET`]'s characters.
    fn separator(&self) -> char {
        '.'
    }

    /// Length of the random identifier in new ids.
    fn id_length(&self) -> usize {
        16
    }

    /// Whether the instance may split this strategy's partitions into bounded
    /// sub-partitions ([`crate::split`], `Config::partition_bound`). The built-in
    /// strategies do; a custom one opts in by returning `true`, and must then accept
    /// that an instance reads its `Candidates::Keys` with their sub-partitions and that
    /// the keys it gives never end like a label (`<sep>~` and binary digits).
    fn splits(&self) -> bool {
        false
    }

    /// Checks the strategy's own settings (called when an instance opens); the
    /// separator and id length are checked by [`validate_strategy`] itself.
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// Whether [`KeyStrategy::logical_key`] reads `createdAt`. When it does (the
    /// default), a new entity saved without one is handed to it with the
    /// `createdAt` it is given; a strategy that never reads it says `false` and
    /// saves the copy of the entity that takes.
    fn reads_created_at(&self) -> bool {
        true
    }

    /// The logical key (partition, without prefix) of an entity about to be saved.
    /// `entity` has its `createdAt` unless [`KeyStrategy::reads_created_at`] is false.
    fn logical_key(&self, entity_name: &str, entity: &Map<String, Value>) -> Result<String>;

    /// The partitions a query over `entity_name` with the strategy `filter` reads.
    /// Without a filter: every partition of `entity_name` this instance may read and
    /// write, which `get`, `observe`, `save`, `delete` and sync also respect (DESIGN
    /// §11).
    fn candidate_keys(
        &self,
        prefix: &str,
        entity_name: &str,
        filter: Option<&Value>,
    ) -> Result<Candidates>;

    /// Whether partition `key` has the shape of one this strategy gives entities of
    /// `entity_name`, whoever may read it. A caller-supplied id must name such a
    /// partition, or the call fails with `InvalidId`: an id cannot move an entity into
    /// another name's partition. The default accepts every key; the built-in
    /// strategies check the name and the key's shape.
    fn could_hold(&self, prefix: &str, entity_name: &str, key: &str) -> bool {
        let _ = (prefix, entity_name, key);
        true
    }
}

/// The rest of `key` after `<prefix><sep><entity_name><sep>`, if it starts so.
fn key_suffix<'k>(key: &'k str, prefix: &str, sep: char, entity_name: &str) -> Option<&'k str> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(sep)?;
    rest.strip_prefix(entity_name)?.strip_prefix(sep)
}

/// Builds the partition key `<prefix><sep><logical>`.
pub fn partition_key(prefix: &str, separator: char, logical: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + 1 + logical.len());
    key.push_str(prefix);
    key.push(separator);
    key.push_str(logical);
    key
}

/// Checks that a strategy's separator and id length can work.
pub fn validate_strategy(strategy: &dyn KeyStrategy) -> Result<()> {
    let sep = strategy.separator();
    if sep.is_control() || (sep.is_ascii() && ALPHABET.contains(&(sep as u8))) {
        return Err(Error::InvalidConfig(format!(
            "separator {sep:?} is a control character or appears in generated identifiers"
        )));
    }
    let len = strategy.id_length();
    if !(8..=64).contains(&len) {
        return Err(Error::InvalidConfig(format!(
            "id length {len} is outside 8..=64"
        )));
    }
    strategy.validate()
}

/// One partition per entity name: `<prefix>.<Name>`.
#[derive(Debug, Clone, Default)]
pub struct GlobalStrategy;

impl KeyStrategy for GlobalStrategy {
    fn splits(&self) -> bool {
        true
    }

    fn reads_created_at(&self) -> bool {
        false
    }

    fn logical_key(&self, entity_name: &str, _entity: &Map<String, Value>) -> Result<String> {
        Ok(entity_name.to_string())
    }

    fn candidate_keys(
        &self,
        prefix: &str,
        entity_name: &str,
        _filter: Option<&Value>,
    ) -> Result<Candidates> {
        Ok(Candidates::Keys(vec![partition_key(
            prefix,
            self.separator(),
            entity_name,
        )]))
    }

    fn could_hold(&self, prefix: &str, entity_name: &str, key: &str) -> bool {
        key.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix(self.separator()))
            == Some(entity_name)
    }
}

/// How finely [`DateStrategy`] splits time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateGranularity {
    Year,
    Month,
    Day,
}

/// Partitions by the year, month or day of `createdAt`: `<prefix>.<Name>.2026-01`.
///
/// Filter: `{"from": "<instant>", "to": "<instant>"}` (both optional, inclusive)
/// limits a query to the partitions of that range; no filter reads every partition
/// of the entity name.
#[derive(Debug, Clone)]
pub struct DateStrategy {
    pub granularity: DateGranularity,
}

/// Most partitions a date-range filter may expand to.
const MAX_RANGE_PARTITIONS: usize = 100_000;

impl DateStrategy {
    pub fn new(granularity: DateGranularity) -> DateStrategy {
        DateStrategy { granularity }
    }

    fn period(&self, ms: Millis) -> String {
        let (y, m, d) = civil_date(ms);
        match self.granularity {
            DateGranularity::Year => format!("{y:04}"),
            DateGranularity::Month => format!("{y:04}-{m:02}"),
            DateGranularity::Day => format!("{y:04}-{m:02}-{d:02}"),
        }
    }

    fn next_period_start(&self, ms: Millis) -> Millis {
        let (y, m, d) = civil_date(ms);
        let (ny, nm, nd) = match self.granularity {
            DateGranularity::Year => (y + 1, 1, 1),
            DateGranularity::Month if m == 12 => (y + 1, 1, 1),
            DateGranularity::Month => (y, m + 1, 1),
            DateGranularity::Day => return (ms.div_euclid(86_400_000) + 1) * 86_400_000,
        };
        let _ = d;
        let text = format!("{ny:04}-{nm:02}-{nd:02}T00:00:00.000Z");
        parse_millis(&text).unwrap_or(Millis::MAX)
    }
}

fn instant_field(filter: &Value, field: &str) -> Result<Option<Millis>> {
    match filter.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_millis(s)
            .map(Some)
            .ok_or_else(|| Error::InvalidQuery(format!("filter.{field}: {s:?} is not an instant"))),
        Some(other) => Err(Error::InvalidQuery(format!(
            "filter.{field}: expected an instant, got {other}"
        ))),
    }
}

impl KeyStrategy for DateStrategy {
    fn splits(&self) -> bool {
        true
    }

    fn logical_key(&self, entity_name: &str, entity: &Map<String, Value>) -> Result<String> {
        let created = entity
            .get("createdAt")
            .and_then(Value::as_str)
            .and_then(parse_millis)
            .ok_or_else(|| {
                Error::InvalidEntity("date strategy needs a valid \"createdAt\"".into())
            })?;
        Ok(format!(
            "{entity_name}{}{}",
            self.separator(),
            self.period(created)
        ))
    }

    fn candidate_keys(
        &self,
        prefix: &str,
        entity_name: &str,
        filter: Option<&Value>,
    ) -> Result<Candidates> {
        let sep = self.separator();
        let base = format!("{prefix}{sep}{entity_name}{sep}");
        let Some(filter) = filter.filter(|f| !f.is_null()) else {
            return Ok(Candidates::Prefix(base));
        };
        let (from, to) = (instant_field(filter, "from")?, instant_field(filter, "to")?);
        let (Some(from), Some(to)) = (from, to) else {
            return Ok(Candidates::Prefix(base));
        };
        if from > to {
            return Ok(Candidates::Keys(Vec::new()));
        }
        let mut keys = Vec::new();
        let mut at = from;
        while at <= to {
            if keys.len() >= MAX_RANGE_PARTITIONS {
                return Err(Error::InvalidQuery(
                    "date range spans too many partitions".into(),
                ));
            }
            keys.push(format!("{base}{}", self.period(at)));
            at = self.next_period_start(at);
        }
        Ok(Candidates::Keys(keys))
    }

    fn could_hold(&self, prefix: &str, entity_name: &str, key: &str) -> bool {
        let Some(period) = key_suffix(key, prefix, self.separator(), entity_name) else {
            return false;
        };
        let shape: &[u8] = match self.granularity {
            DateGranularity::Year => b"dddd",
            DateGranularity::Month => b"dddd-dd",
            DateGranularity::Day => b"dddd-dd-dd",
        };
        period.len() == shape.len()
            && period.bytes().zip(shape).all(|(c, s)| match s {
                b'd' => c.is_ascii_digit(),
                _ => c == *s,
            })
    }
}

/// Partitions by the value of one field: `<prefix>.<Name>.<value>`.
///
/// Filter: `{"values": [...]}` or `{"value": x}` limits a query to those values.
#[derive(Debug, Clone)]
pub struct FieldStrategy {
    pub field: String,
}

impl FieldStrategy {
    /// A strategy on `field`; an empty field is refused when the instance opens.
    pub fn new(field: impl Into<String>) -> FieldStrategy {
        FieldStrategy {
            field: field.into(),
        }
    }

    /// As [`FieldStrategy::new`], refusing an empty field at once.
    pub fn try_new(field: impl Into<String>) -> Result<FieldStrategy> {
        let strategy = FieldStrategy::new(field);
        strategy.validate()?;
        Ok(strategy)
    }
}

fn field_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl KeyStrategy for FieldStrategy {
    fn splits(&self) -> bool {
        true
    }

    fn reads_created_at(&self) -> bool {
        self.field == "createdAt"
    }

    fn validate(&self) -> Result<()> {
        if self.field.is_empty() {
            return Err(Error::InvalidConfig(
                "the field strategy needs a field name, not an empty one".into(),
            ));
        }
        Ok(())
    }

    fn logical_key(&self, entity_name: &str, entity: &Map<String, Value>) -> Result<String> {
        let value = entity
            .get(&self.field)
            .and_then(field_text)
            .ok_or_else(|| {
                Error::InvalidEntity(format!(
                    "field strategy needs {:?} to be a non-empty string, a number or a boolean",
                    self.field
                ))
            })?;
        Ok(format!("{entity_name}{}{value}", self.separator()))
    }

    fn candidate_keys(
        &self,
        prefix: &str,
        entity_name: &str,
        filter: Option<&Value>,
    ) -> Result<Candidates> {
        let sep = self.separator();
        let base = format!("{prefix}{sep}{entity_name}{sep}");
        let values: Vec<&Value> = match filter {
            None | Some(Value::Null) => return Ok(Candidates::Prefix(base)),
            Some(f) => match (f.get("values"), f.get("value")) {
                (Some(Value::Array(vs)), _) => vs.iter().collect(),
                (_, Some(v)) => vec![v],
                _ => {
                    return Err(Error::InvalidQuery(
                        "field filter needs \"values\" or \"value\"".into(),
                    ))
                }
            },
        };
        let mut keys = Vec::with_capacity(values.len());
        for v in values {
            let text = field_text(v).ok_or_else(|| {
                Error::InvalidQuery(format!("filter value {v} cannot name a partition"))
            })?;
            keys.push(format!("{base}{text}"));
        }
        Ok(Candidates::Keys(keys))
    }

    fn could_hold(&self, prefix: &str, entity_name: &str, key: &str) -> bool {
        key_suffix(key, prefix, self.separator(), entity_name).is_some_and(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn date_strategy_keys_and_ranges() {
        let s = DateStrategy::new(DateGranularity::Month);
        let e = obj(json!({"createdAt": "2026-03-15T10:00:00.000Z"}));
        assert_eq!(s.logical_key("Log", &e).unwrap(), "Log.2026-03");
        let range = json!({"from": "2025-11-20T00:00:00Z", "to": "2026-02-01T00:00:00Z"});
        assert_eq!(
            s.candidate_keys("app", "Log", Some(&range)).unwrap(),
            Candidates::Keys(vec![
                "app.Log.2025-11".into(),
                "app.Log.2025-12".into(),
                "app.Log.2026-01".into(),
                "app.Log.2026-02".into()
            ])
        );
        let day = DateStrategy::new(DateGranularity::Day);
        let range = json!({"from": "2026-02-27T23:00:00Z", "to": "2026-03-01T00:00:00Z"});
        assert_eq!(
            day.candidate_keys("a", "L", Some(&range)).unwrap(),
            Candidates::Keys(vec![
                "a.L.2026-02-27".into(),
                "a.L.2026-02-28".into(),
                "a.L.2026-03-01".into()
            ])
        );
        assert!(s.logical_key("Log", &obj(json!({}))).is_err());
    }

    #[test]
    fn field_strategy_keys() {
        let s = FieldStrategy::new("region");
        assert_eq!(
            s.logical_key("User", &obj(json!({"region": "eu"})))
                .unwrap(),
            "User.eu"
        );
        assert!(s
            .logical_key("User", &obj(json!({"region": null})))
            .is_err());
        assert_eq!(
            s.candidate_keys("app", "User", Some(&json!({"values": ["eu", 7]})))
                .unwrap(),
            Candidates::Keys(vec!["app.User.eu".into(), "app.User.7".into()])
        );
        assert!(s
            .candidate_keys("app", "User", None)
            .unwrap()
            .covers("app.User.us"));
    }
}
