//! Queries: id inclusion, shallow field equality, multi-field sort, limit and offset,
//! in memory over the partitions the strategy names.

use std::cmp::Ordering;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::entity::Entity;
use crate::error::{Error, Result};

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// One sort field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub field: String,
    pub order: Order,
}

impl SortKey {
    pub fn asc(field: impl Into<String>) -> SortKey {
        SortKey {
            field: field.into(),
            order: Order::Asc,
        }
    }

    pub fn desc(field: impl Into<String>) -> SortKey {
        SortKey {
            field: field.into(),
            order: Order::Desc,
        }
    }
}

impl<'de> Deserialize<'de> for SortKey {
    /// `"name"`, `"name:desc"`, or `{"field": "name", "order": "desc"}`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Object {
                field: String,
                #[serde(default)]
                order: Option<String>,
            },
        }
        // In the text form everything after the last ':' is the order; a field
        // whose name holds ':' uses the object form.
        let (field, order) = match Form::deserialize(d)? {
            Form::Text(t) => match t.rsplit_once(':') {
                Some((f, o)) => (f.to_string(), Some(o.to_string())),
                None => (t, None),
            },
            Form::Object { field, order } => (field, order),
        };
        if field.is_empty() {
            return Err(serde::de::Error::custom("a sort field must not be empty"));
        }
        let order = match order.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("asc") | Some("ascending") => Order::Asc,
            Some("desc") | Some("descending") => Order::Desc,
            Some(_) => {
                return Err(serde::de::Error::custom(format!(
                    "unknown sort order {:?} (use asc or desc)",
                    order.unwrap_or_default()
                )))
            }
        };
        Ok(SortKey { field, order })
    }
}

/// What a query selects, as DESIGN.md §7 describes it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryOptions {
    /// Only these ids.
    #[serde(default)]
    pub ids: Option<Vec<String>>,
    /// Shallow field equality; every pair must match.
    #[serde(default, rename = "where")]
    pub where_: Map<String, Value>,
    /// Sort fields, applied in order; the sort is stable.
    #[serde(default)]
    pub sort: Vec<SortKey>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub offset: Option<usize>,
    /// The strategy's filter: which partitions (e.g. a date range).
    #[serde(default)]
    pub filter: Option<Value>,
}

impl QueryOptions {
    /// Parses options from JSON (`null` or empty text means "everything").
    pub fn from_json(text: &str) -> Result<QueryOptions> {
        if text.trim().is_empty() || text.trim() == "null" {
            return Ok(QueryOptions::default());
        }
        serde_json::from_str(text).map_err(|e| Error::InvalidQuery(e.to_string()))
    }

    pub fn where_eq(mut self, field: impl Into<String>, value: impl Into<Value>) -> Self {
        self.where_.insert(field.into(), value.into());
        self
    }

    pub fn sort_by(mut self, key: SortKey) -> Self {
        self.sort.push(key);
        self
    }

    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    pub fn offset(mut self, offset: usize) -> Self {
        self.offset = Some(offset);
        self
    }

    pub fn filter(mut self, filter: Value) -> Self {
        self.filter = Some(filter);
        self
    }

    pub fn ids(mut self, ids: Vec<String>) -> Self {
        self.ids = Some(ids);
        self
    }

    fn needs_fields(&self) -> bool {
        !self.where_.is_empty() || !self.sort.is_empty()
    }

    /// Applies the options to entities (in partition then id order).
    pub fn apply(&self, entities: Vec<Entity>) -> Vec<Entity> {
        let mut entities = entities;
        if let Some(ids) = &self.ids {
            let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
            entities.retain(|e| wanted.contains(e.id()));
        }
        if self.needs_fields() {
            let mut rows: Vec<(Map<String, Value>, Entity)> = entities
                .into_iter()
                .map(|e| (e.object(), e))
                .filter(|(obj, _)| {
                    self.where_
                        .iter()
                        .all(|(f, v)| obj.get(f).is_some_and(|x| json_eq(x, v)))
                })
                .collect();
            if !self.sort.is_empty() {
                rows.sort_by(|(a, _), (b, _)| {
                    self.sort.iter().fold(Ordering::Equal, |acc, key| {
                        acc.then_with(|| {
                            let o = compare_values(a.get(&key.field), b.get(&key.field));
                            if key.order == Order::Desc {
                                o.reverse()
                            } else {
                                o
                            }
                        })
                    })
                });
            }
            entities = rows.into_iter().map(|(_, e)| e).collect();
        }
        let offset = self.offset.unwrap_or(0).min(entities.len());
        let end = self.limit.map_or(entities.len(), |l| {
            offset.saturating_add(l).min(entities.len())
        });
        if offset > 0 || end < entities.len() {
            entities = entities.drain(offset..end).collect();
        }
        entities
    }
}

pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn type_rank(v: Option<&Value>) -> u8 {
    match v {
        None | Some(Value::Null) => 0,
        Some(Value::Bool(_)) => 1,
        Some(Value::Number(_)) => 2,
        Some(Value::String(_)) => 3,
        Some(Value::Array(_)) => 4,
        Some(Value::Object(_)) => 5,
    }
}

/// Ascending order of two field values: missing and null first, then booleans,
/// numbers by value, strings by code point, arrays, objects (by canonical text).
pub fn compare_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let rank = type_rank(a).cmp(&type_rank(b));
    if rank != Ordering::Equal {
        return rank;
    }
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.total_cmp(&y)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn e(id: &str, fields: Value) -> Entity {
        let mut obj = fields.as_object().unwrap().clone();
        obj.insert("id".into(), json!(id));
        obj.insert("updatedAt".into(), json!("2026-01-01T00:00:00.000Z"));
        obj.insert("version".into(), json!(1));
        Entity::from_object(&obj).unwrap()
    }

    #[test]
    fn where_sort_limit_offset() {
        let rows = vec![
            e("U.1", json!({"name": "b", "age": 30, "team": "x"})),
            e("U.2", json!({"name": "a", "age": 30.0, "team": "x"})),
            e("U.3", json!({"name": "c", "team": "y"})),
            e("U.4", json!({"name": "d", "age": 4, "team": "x"})),
        ];
        let q = QueryOptions::from_json(
            r#"{"where":{"team":"x"},"sort":["age:desc","name"],"limit":2}"#,
        )
        .unwrap();
        let ids: Vec<_> = q
            .apply(rows.clone())
            .iter()
            .map(|e| e.id().to_string())
            .collect();
        assert_eq!(ids, ["U.2", "U.1"]);
        let q = QueryOptions::default().sort_by(SortKey::asc("age"));
        let ids: Vec<_> = q
            .apply(rows.clone())
            .iter()
            .map(|e| e.id().to_string())
            .collect();
        assert_eq!(
            ids,
            ["U.3", "U.4", "U.1", "U.2"],
            "missing first, numbers by value, stable"
        );
        let q = QueryOptions::default().where_eq("age", 30).offset(1);
        assert_eq!(q.apply(rows.clone()).len(), 1);
        let q = QueryOptions::default().ids(vec!["U.4".into(), "nope".into()]);
        assert_eq!(q.apply(rows).len(), 1);
        assert!(QueryOptions::from_json(r#"{"sort":[{"field":"a","order":"sideways"}]}"#).is_err());
        assert!(QueryOptions::from_json(r#"{"wher":{}}"#).is_err());
    }
}
