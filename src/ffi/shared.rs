//! Door code that the C and UniFFI doors share, so that they cannot drift apart:
//! how a host conflict resolver's answer is checked and what happens when it is
//! unusable, and how an entity list crosses as one JSON array.

use serde_json::{Map, Value};

use crate::clock::parse_millis;
use crate::entity::Entity;
use crate::partition::{Partition, Slot};
use crate::sync::{ConflictResolver, LastWriterWins};

/// Entities as one JSON array: their texts joined, never re-serialised.
pub(crate) fn list_json(entities: &[Entity]) -> String {
    let mut out =
        String::with_capacity(2 + entities.iter().map(|e| e.json().len() + 1).sum::<usize>());
    out.push('[');
    for (i, e) in entities.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(e.json());
    }
    out.push(']');
    out
}

/// The id that a resolver's active answer must keep: that of either side's entity
/// (`None` when both sides are deleted).
pub(crate) fn conflict_id(a: &Slot, b: &Slot) -> Option<String> {
    a.entity().or(b.entity()).map(|e| e.id().to_string())
}

/// A resolver's "active" answer for entity `id` of `entity_name`, checked the way a
/// partition read from a tier is checked. `id` is [`conflict_id`] of the two sides.
pub(crate) fn active_answer(
    entity_name: &str,
    id: Option<&str>,
    entity: Value,
) -> Result<Slot, String> {
    let Some(id) = id else {
        return Err("both sides are deleted, so an active answer has no entity to keep".into());
    };
    if entity.get("id").and_then(Value::as_str) != Some(id) {
        return Err(format!("an active answer must keep the id {id:?}"));
    }
    let mut ids = Map::new();
    ids.insert(id.to_string(), entity);
    let mut names = Map::new();
    names.insert(entity_name.to_string(), Value::Object(ids));
    let bytes = serde_json::to_vec(&Value::Object(names)).map_err(|e| e.to_string())?;
    let partition = Partition::parse(&bytes, false)
        .map_err(|e| format!("the answer is not a valid entity: {e}"))?;
    partition
        .get(entity_name, id)
        .cloned()
        .ok_or_else(|| "the answer holds no entity".to_string())
}

/// A resolver's "deleted" answer: the instant of deletion.
pub(crate) fn deleted_answer(deleted_at: &str) -> Result<Slot, String> {
    parse_millis(deleted_at)
        .map(Slot::Deleted)
        .ok_or_else(|| format!("deletedAt {deleted_at:?} is not an instant"))
}

/// The slot a host resolver chose between `a` and `b`; `answer` is its checked
/// reply. When the host failed or answered something unusable, the failure is logged
/// (at error level: it is a bug in the host) and last-writer-wins decides, so a sync
/// never stops on a broken resolver.
pub(crate) fn resolved_or_last_writer(
    entity_name: &str,
    a: &Slot,
    b: &Slot,
    answer: Result<Slot, String>,
) -> Slot {
    match answer {
        Ok(slot) => slot,
        Err(why) => {
            log::error!(
                target: "datasync::ffi",
                "the conflict resolver failed on a {entity_name} ({why}); last writer wins instead"
            );
            LastWriterWins.resolve(entity_name, a, b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(json: &str) -> Slot {
        let text = format!(r#"{{"User":{{"U.abcdefghijklmnop":{json}}}}}"#);
        Partition::parse(text.as_bytes(), false)
            .unwrap()
            .get("User", "U.abcdefghijklmnop")
            .cloned()
            .unwrap()
    }

    #[test]
    fn lists_join_entity_texts() {
        assert_eq!(list_json(&[]), "[]");
        let a = entity(
            r#"{"id":"U.abcdefghijklmnop","createdAt":"2026-01-01T00:00:00.000Z","updatedAt":"2026-01-01T00:00:00.000Z","version":1}"#,
        );
        let text = list_json(&[a.entity().unwrap().clone(), a.entity().unwrap().clone()]);
        let parsed: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0]["id"], "U.abcdefghijklmnop");
    }

    #[test]
    fn unusable_answers_fall_back_to_the_later_writer() {
        let older = entity(
            r#"{"id":"U.abcdefghijklmnop","createdAt":"2026-01-01T00:00:00.000Z","updatedAt":"2026-01-01T00:00:00.000Z","version":9,"n":"zz"}"#,
        );
        let newer = entity(
            r#"{"id":"U.abcdefghijklmnop","createdAt":"2026-01-01T00:00:00.000Z","updatedAt":"2026-01-01T00:00:01.000Z","version":2,"n":"a"}"#,
        );
        let id = conflict_id(&older, &newer);
        let wrong_id = serde_json::json!({"id": "U.other", "updatedAt": "2026-01-01T00:00:00.000Z", "version": 1});
        for answer in [
            Err("the host raised".to_string()),
            active_answer("User", id.as_deref(), wrong_id),
            active_answer("User", None, serde_json::json!({})),
            deleted_answer("yesterday"),
        ] {
            assert!(answer.is_err());
            for (a, b) in [(&older, &newer), (&newer, &older)] {
                assert_eq!(resolved_or_last_writer("User", a, b, answer.clone()), newer);
            }
        }
        let kept = resolved_or_last_writer("User", &older, &newer, Ok(older.clone()));
        assert_eq!(kept, older, "a usable answer is taken as it is");
        assert_eq!(
            deleted_answer("2026-01-01T00:00:00.000Z").unwrap(),
            Slot::Deleted(parse_millis("2026-01-01T00:00:00.000Z").unwrap())
        );
    }
}
