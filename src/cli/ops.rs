//! `put`, `get`, `delete`, `query`: one operation on a directory tier through an
//! instance whose local tier is the directory (its store tier in memory).

use std::path::Path;

use clap::Args;
use datasync::{
    Candidates, Config, DataSync, DirPersistence, KeyStrategy, Persistence, QueryOptions, SortKey,
};
use serde_json::{Map, Value};

use super::{existing_dir, existing_tier, CliResult};

/// The key prefix option shared by the entity commands.
#[derive(Args, Debug, Clone, Default)]
pub struct PrefixArg {
    /// Partition key prefix (default: the one the directory already uses, else `app`).
    #[arg(long)]
    pub prefix: Option<String>,
}

/// The prefix of the partitions a directory holds, if they agree on one.
fn detect_prefix(dir: &mut DirPersistence) -> CliResult<Option<String>> {
    let keys = datasync::pieces::partitions_listed(&dir.keys()?.unwrap_or_default());
    let prefixes: std::collections::BTreeSet<&str> = keys
        .iter()
        .filter_map(|k| k.split_once('.').map(|(p, _)| p))
        .collect();
    Ok(match prefixes.len() {
        1 => prefixes.into_iter().next().map(str::to_string),
        _ => None,
    })
}

/// The command's key strategy. It cannot know the strategy a directory was written
/// with, so it reads every partition of an entity name the directory holds
/// (`<prefix>.<Name>` and `<prefix>.<Name>.<anything>`: global, date and field
/// partitions alike), accepts ids in any of them, and puts new entities in
/// `<prefix>.<Name>`.
struct DirectoryStrategy {
    /// The directory's partition keys.
    keys: Vec<String>,
}

impl KeyStrategy for DirectoryStrategy {
    fn reads_created_at(&self) -> bool {
        false
    }

    fn logical_key(
        &self,
        entity_name: &str,
        _entity: &Map<String, Value>,
    ) -> datasync::Result<String> {
        Ok(entity_name.to_string())
    }

    fn candidate_keys(
        &self,
        prefix: &str,
        entity_name: &str,
        _filter: Option<&Value>,
    ) -> datasync::Result<Candidates> {
        let own = format!("{prefix}.{entity_name}");
        let mut keys: Vec<String> = self
            .keys
            .iter()
            .filter(|k| self.could_hold(prefix, entity_name, k) && **k != own)
            .cloned()
            .collect();
        keys.push(own);
        Ok(Candidates::Keys(keys))
    }

    fn could_hold(&self, prefix: &str, entity_name: &str, key: &str) -> bool {
        key.strip_prefix(prefix)
            .and_then(|k| k.strip_prefix('.'))
            .and_then(|k| k.strip_prefix(entity_name))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    }
}

/// Runs `f` on an instance over `path`, then flushes and closes it.
fn with_instance<T>(
    path: &Path,
    create: bool,
    prefix: PrefixArg,
    f: impl FnOnce(&DataSync) -> CliResult<T>,
) -> CliResult<T> {
    if create {
        if path.exists() {
            existing_dir(path)?;
        }
    } else {
        existing_tier(path)?;
    }
    let mut dir = DirPersistence::open(path)?;
    let prefix = match prefix.prefix {
        Some(p) => p,
        None => detect_prefix(&mut dir)?.unwrap_or_else(|| "app".to_string()),
    };
    let strategy = DirectoryStrategy {
        keys: datasync::pieces::partitions_listed(&dir.keys()?.unwrap_or_default()),
    };
    let instance = DataSync::open(Config::new(prefix).strategy(strategy).local(dir))?;
    let result = f(&instance);
    let flushed = instance.flush();
    instance.close()?;
    let value = result?;
    flushed?;
    Ok(value)
}

pub fn put(path: &Path, entity: &str, json: &str, prefix: PrefixArg) -> CliResult<u8> {
    let value: Value = serde_json::from_str(json).map_err(|e| format!("invalid JSON: {e}"))?;
    let id = with_instance(path, true, prefix, |ds| {
        Ok(ds.repo(entity)?.save(&value)?)
    })?;
    println!("{id}");
    Ok(0)
}

pub fn get(path: &Path, entity: &str, id: &str, prefix: PrefixArg) -> CliResult<u8> {
    match with_instance(path, false, prefix, |ds| Ok(ds.repo(entity)?.get(id)?))? {
        Some(found) => {
            println!("{}", found.json());
            Ok(0)
        }
        None => {
            eprintln!("datasync: no {entity} with id {id:?}");
            Ok(1)
        }
    }
}

pub fn delete(path: &Path, entity: &str, id: &str, prefix: PrefixArg) -> CliResult<u8> {
    let existed = with_instance(path, false, prefix, |ds| Ok(ds.repo(entity)?.delete(id)?))?;
    if existed {
        println!("deleted {id}");
    } else {
        println!("{id} was not present; a tombstone was recorded");
    }
    Ok(0)
}

/// What `query` selects.
pub struct QueryArgs {
    /// `FIELD=VALUE` clauses.
    pub wheres: Vec<String>,
    /// `FIELD`, `FIELD:asc` or `FIELD:desc`.
    pub sorts: Vec<String>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

pub fn query(path: &Path, entity: &str, args: &QueryArgs, prefix: PrefixArg) -> CliResult<u8> {
    let mut options = QueryOptions::default();
    for clause in &args.wheres {
        let (field, value) = clause
            .split_once('=')
            .ok_or_else(|| format!("--where {clause:?}: expected FIELD=VALUE"))?;
        let value =
            serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        options = options.where_eq(field, value);
    }
    for sort in &args.sorts {
        // The library's own reading of "FIELD[:asc|:desc]": an unknown order is an error.
        let key: SortKey = serde_json::from_value(Value::String(sort.clone()))
            .map_err(|e| format!("--sort {sort:?}: {e}"))?;
        options = options.sort_by(key);
    }
    if let Some(limit) = args.limit {
        options = options.limit(limit);
    }
    if let Some(offset) = args.offset {
        options = options.offset(offset);
    }
    let found = with_instance(path, false, prefix, |ds| {
        let repo = ds.repo(entity)?;
        let found = repo.query(&options)?;
        // A sort field that no matching entity has sorts everything as missing: say so.
        if !args.sorts.is_empty() {
            let all = repo.query(&QueryOptions {
                where_: options.where_.clone(),
                ..QueryOptions::default()
            })?;
            for key in &options.sort {
                if !all.is_empty() && all.iter().all(|e| e.value().get(&key.field).is_none()) {
                    eprintln!(
                        "datasync: no matching {entity} has the field {:?}; the sort on it did nothing",
                        key.field
                    );
                }
            }
        }
        Ok(found)
    })?;
    let texts: Vec<&str> = found.iter().map(|e| e.json()).collect();
    println!("[{}]", texts.join(","));
    Ok(0)
}
