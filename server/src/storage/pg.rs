//! The PostgreSQL backend.
//!
//! One table, `blobs (key text COLLATE "C" PRIMARY KEY, value bytea, hash text,
//! updated_at timestamptz)`, in the configured schema (default `public`). The server
//! creates and migrates it at start, inside a transaction holding an advisory lock,
//! so two processes starting at once do not race. Every operation is ONE statement:
//! - store: `INSERT .. ON CONFLICT (key) DO UPDATE`;
//! - store if absent: `INSERT .. ON CONFLICT DO NOTHING` (0 rows: the key exists);
//! - store if the hash matches: `UPDATE .. WHERE key = $1 AND hash = $2` (0 rows:
//!   absent or different). Under READ COMMITTED a concurrent update of the same row
//!   makes the second statement re-check `hash` against the new row, so of two
//!   racing writers with the same expected hash exactly one stores.
//!
//! Nothing is kept in the process between requests: several server processes may
//! serve one database.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::{hash_hex, BoxFuture, Result, Storage, StorageError};

/// The schema versions this server knows, each applied once, in order.
const MIGRATIONS: &[&str] = &[
    // 1: the blobs.
    "CREATE TABLE IF NOT EXISTS blobs (
        key text COLLATE \"C\" PRIMARY KEY,
        value bytea NOT NULL,
        hash text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    )",
];

/// The advisory lock key that serialises migrations across processes ("dsync").
const MIGRATION_LOCK: i64 = 0x0064_7379_6e63;

pub struct PgStorage {
    pool: Pool,
}

fn pg_err(e: impl std::fmt::Display) -> StorageError {
    StorageError(format!("postgresql: {e}"))
}

/// Whether a schema name is a plain lowercase identifier (it is put into SQL text).
pub fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

impl PgStorage {
    /// Connects (a pool of `pool_size` connections), then creates or migrates the
    /// schema.
    pub async fn connect(url: &str, schema: &str, pool_size: usize) -> Result<PgStorage> {
        if !valid_schema_name(schema) {
            return Err(StorageError(format!(
                "bad schema name {schema:?}: lowercase letters, digits and `_` only"
            )));
        }
        let mut config: tokio_postgres::Config = url.parse().map_err(pg_err)?;
        config.options(format!("-c search_path={schema}"));
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("datasync-server");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(pg_err)?;
        let storage = PgStorage { pool };
        storage.migrate(schema).await?;
        Ok(storage)
    }

    async fn migrate(&self, schema: &str) -> Result<()> {
        let mut client = self.pool.get().await.map_err(pg_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg_err)?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.schema_version (version integer NOT NULL);"
        ))
        .await
        .map_err(pg_err)?;
        let row = tx
            .query_opt(
                &format!("SELECT max(version) FROM {schema}.schema_version"),
                &[],
            )
            .await
            .map_err(pg_err)?;
        let current: i32 = row.and_then(|r| r.get::<_, Option<i32>>(0)).unwrap_or(0);
        if current as usize > MIGRATIONS.len() {
            return Err(StorageError(format!(
                "the database schema is version {current}, newer than this server ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.batch_execute(sql).await.map_err(pg_err)?;
            let version = (i + 1) as i32;
            tx.execute(
                &format!("INSERT INTO {schema}.schema_version (version) VALUES ($1)"),
                &[&version],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Client> {
        self.pool.get().await.map_err(pg_err)
    }
}

/// Escapes `%`, `_` and `\` for a `LIKE .. ESCAPE '\'` prefix pattern.
fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl Storage for PgStorage {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached("SELECT value FROM blobs WHERE key = $1")
                .await
                .map_err(pg_err)?;
            let row = client.query_opt(&stmt, &[&key]).await.map_err(pg_err)?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }

    fn store<'a>(&'a self, key: &'a str, value: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "INSERT INTO blobs (key, value, hash) VALUES ($1, $2, $3)
                     ON CONFLICT (key) DO UPDATE
                     SET value = excluded.value, hash = excluded.hash, updated_at = now()",
                )
                .await
                .map_err(pg_err)?;
            let hash = hash_hex(value);
            client
                .execute(&stmt, &[&key, &value, &hash])
                .await
                .map_err(pg_err)?;
            Ok(())
        })
    }

    fn store_if<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        expected: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let client = self.client().await?;
            let hash = hash_hex(value);
            let rows = match expected {
                None => {
                    let stmt = client
                        .prepare_cached(
                            "INSERT INTO blobs (key, value, hash) VALUES ($1, $2, $3)
                             ON CONFLICT (key) DO NOTHING",
                        )
                        .await
                        .map_err(pg_err)?;
                    client.execute(&stmt, &[&key, &value, &hash]).await
                }
                Some(old) => {
                    let stmt = client
                        .prepare_cached(
                            "UPDATE blobs SET value = $2, hash = $3, updated_at = now()
                             WHERE key = $1 AND hash = $4",
                        )
                        .await
                        .map_err(pg_err)?;
                    client.execute(&stmt, &[&key, &value, &hash, &old]).await
                }
            }
            .map_err(pg_err)?;
            Ok(rows == 1)
        })
    }

    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached("DELETE FROM blobs WHERE key = $1")
                .await
                .map_err(pg_err)?;
            client.execute(&stmt, &[&key]).await.map_err(pg_err)?;
            Ok(())
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached("SELECT key FROM blobs WHERE key LIKE $1 ESCAPE '\\' ORDER BY key")
                .await
                .map_err(pg_err)?;
            let pattern = like_prefix(prefix);
            let rows = client.query(&stmt, &[&pattern]).await.map_err(pg_err)?;
            Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let client = self.client().await?;
            client.simple_query("SELECT 1").await.map_err(pg_err)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_patterns() {
        assert!(valid_schema_name("public"));
        assert!(valid_schema_name("t_123"));
        assert!(!valid_schema_name("1x"));
        assert!(!valid_schema_name("a;drop"));
        assert!(!valid_schema_name("A"));
        assert_eq!(like_prefix("a_b%c\\"), "a\\_b\\%c\\\\%");
    }
}
