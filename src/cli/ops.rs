//! `put`, `get`, `delete`, `query`: one operation on a directory tier through an
//! instance whose local tier is the directory (its store tier in memory).

use std::path::Path;

use clap::Args;
use datasync::meta::is_reserved;
use datasync::{Config, DataSync, DirPersistence, Persistence, QueryOptions, SortKey};
use serde_json::Value;

use super::{existing_dir, CliResult};

/// The key prefix option shared by the entity commands.
#[derive(Args, Debug, Clone, Default)]
pub struct PrefixArg {
    /// Partition key prefix (default: the one the directory already uses, else `app`).
    #[arg(long)]
    pub prefix: Option<String>,
}

/// The prefix of the partitions a directory holds, if they agree on one.
fn detect_prefix(dir: &mut DirPersistence) -> CliResult<Option<String>> {
    let keys = dir.keys()?.unwrap_or_default();
    let prefixes: std::collections::BTreeSet<&str> = keys
        .iter()
        .filter(|k| !is_reserved(k))
        .filter_map(|k| k.split_once('.').map(|(p, _)| p))
        .collect();
    Ok(match prefixes.len() {
        1 => prefixes.into_iter().next().map(str::to_string),
        _ => None,
    })
}

/// Runs `f` on an instance over `path`, then flushes and closes it.
fn with_instance<T>(
    path: &Path,
    create: bool,
    prefix: PrefixArg,
    f: impl FnOnce(&DataSync) -> CliResult<T>,
) -> CliResult<T> {
    if !create {
        existing_dir(path)?;
    }
    let mut dir = DirPersistence::open(path)?;
    let prefix = match prefix.prefix {
        Some(p) => p,
        None => detect_prefix(&mut dir)?.unwrap_or_else(|| "app".to_string()),
    };
    let instance = DataSync::open(Config::new(prefix).local(dir))?;
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

pub fn query(
    path: &Path,
    entity: &str,
    wheres: &[String],
    sorts: &[String],
    limit: Option<usize>,
    prefix: PrefixArg,
) -> CliResult<u8> {
    let mut options = QueryOptions::default();
    for clause in wheres {
        let (field, value) = clause
            .split_once('=')
            .ok_or_else(|| format!("--where {clause:?}: expected FIELD=VALUE"))?;
        let value =
            serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        options = options.where_eq(field, value);
    }
    for sort in sorts {
        options = options.sort_by(match sort.rsplit_once(':') {
            Some((field, "desc")) => SortKey::desc(field),
            Some((field, "asc")) => SortKey::asc(field),
            _ => SortKey::asc(sort.as_str()),
        });
    }
    if let Some(limit) = limit {
        options = options.limit(limit);
    }
    let found = with_instance(path, false, prefix, |ds| {
        Ok(ds.repo(entity)?.query(&options)?)
    })?;
    let texts: Vec<&str> = found.iter().map(|e| e.json()).collect();
    println!("[{}]", texts.join(","));
    Ok(0)
}
