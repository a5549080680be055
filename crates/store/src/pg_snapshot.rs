//! Disaster-recovery snapshots of PostgreSQL without outside tools: every
//! table copied out (`COPY … TO STDOUT`, PostgreSQL's text format) inside one
//! `REPEATABLE READ READ ONLY` transaction, so the copy is one consistent
//! instant while the server keeps writing; and the way back — a new database
//! migrated to the snapshot's schema, the tables copied in parent-first, the
//! sequences set, then the remaining migrations.
//!
//! Why not `pg_dump`: it must match the server's major version and be
//! installed beside `atlas` (the server image, the backup job); COPY needs
//! only the connection Atlas already has, and the restore goes through our
//! own migrations, so the schema is exactly the one this binary knows.
use crate::snapshot::SnapshotFacts;
use crate::{StoreError, StoreResult};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor};
use std::collections::BTreeMap;
use std::path::Path;
use tokio::io::AsyncWriteExt;

/// The index of a dump directory: what was copied and the schema it fits.
pub const PG_INDEX: &str = "atlas-pg.json";

/// The dump's index file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgIndex {
    /// The highest migration applied.
    pub schema_version: i64,
    /// Every table and its rows, parents before children.
    pub tables: Vec<(String, i64)>,
    /// Every sequence's last value.
    pub sequences: Vec<(String, i64)>,
}

/// Connection options for `url`, without sqlx's slow-statement warnings:
/// creating a database or copying a table is slow by nature.
fn options(url: &str) -> StoreResult<PgConnectOptions> {
    use std::str::FromStr;
    Ok(PgConnectOptions::from_str(url)?.disable_statement_logging())
}

/// A local file's failure, as the store reports failures.
fn io(e: std::io::Error) -> StoreError {
    StoreError::Database(sqlx::Error::Io(e))
}

/// The file of a table's rows.
pub fn table_file(table: &str) -> String {
    format!("{table}.copy")
}

/// Quotes an identifier (names come from the catalogue, still quoted).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Tables of the current schema but the migrator's, parents before children.
async fn tables_in_order(conn: &mut PgConnection) -> StoreResult<Vec<String>> {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() \
         AND tablename <> '_sqlx_migrations' ORDER BY tablename",
    )
    .fetch_all(&mut *conn)
    .await?;
    let edges: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, p.relname::text FROM pg_constraint k \
         JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class p ON p.oid = k.confrelid \
         WHERE k.contype = 'f' AND k.connamespace = current_schema()::regnamespace",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut left: Vec<String> = tables.into_iter().map(|(t,)| t).collect();
    let mut ordered = Vec::with_capacity(left.len());
    while !left.is_empty() {
        // A table is ready once every parent (other than itself) is placed.
        let ready = left.iter().position(|t| {
            edges
                .iter()
                .filter(|(child, parent)| child == t && parent != t)
                .all(|(_, parent)| ordered.contains(parent) || !left.contains(parent))
        });
        // A cycle cannot be ordered; it cannot be created by our migrations either.
        let next = left.remove(ready.ok_or_else(|| {
            StoreError::Corrupt(format!("foreign keys form a cycle among {left:?}"))
        })?);
        ordered.push(next);
    }
    Ok(ordered)
}

/// Rows of [`crate::COUNTED_TABLES`], the schema version and which of `messages` are absent.
async fn facts(conn: &mut PgConnection, messages: &[String]) -> StoreResult<SnapshotFacts> {
    let mut facts = SnapshotFacts {
        row_counts: BTreeMap::new(),
        schema_version: 0,
        integrity_problems: Vec::new(),
        missing_messages: Vec::new(),
    };
    let present: Vec<(String,)> =
        sqlx::query_as("SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()")
            .fetch_all(&mut *conn)
            .await?;
    for table in crate::COUNTED_TABLES {
        if !present.iter().any(|(t,)| t == table) {
            continue;
        }
        // The names are our own constants, never input.
        let sql = format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}");
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .fetch_one(&mut *conn)
            .await?;
        facts.row_counts.insert((*table).to_owned(), n);
    }
    let (version,): (Option<i64>,) =
        sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await?;
    facts.schema_version = version.unwrap_or(0);
    let found: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT message_id FROM messages WHERE message_id = ANY($1)")
            .bind(messages)
            .fetch_all(&mut *conn)
            .await?;
    facts.missing_messages = messages
        .iter()
        .filter(|m| !found.iter().any(|(f,)| f == *m))
        .cloned()
        .collect();
    Ok(facts)
}

/// Copies every table of `pool`'s database into `dir` (which exists and is
/// empty) as one consistent snapshot, with [`PG_INDEX`]; what it holds.
pub(crate) async fn dump(
    pool: &PgPool,
    dir: &Path,
    sample: &[String],
) -> StoreResult<SnapshotFacts> {
    let mut conn = pool.acquire().await?;
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let result = dump_in(&mut conn, dir, sample).await;
    // Read only: nothing to keep either way.
    let _ = conn.execute("ROLLBACK").await;
    result
}

async fn dump_in(
    conn: &mut PgConnection,
    dir: &Path,
    sample: &[String],
) -> StoreResult<SnapshotFacts> {
    let facts = facts(conn, sample).await?;
    let mut index = PgIndex {
        schema_version: facts.schema_version,
        tables: Vec::new(),
        sequences: Vec::new(),
    };
    for table in tables_in_order(conn).await? {
        // PostgreSQL sends a message per row: buffered, each is not a write.
        let mut file = tokio::io::BufWriter::with_capacity(
            1 << 20,
            tokio::fs::File::create(dir.join(table_file(&table)))
                .await
                .map_err(io)?,
        );
        let mut rows = 0i64;
        {
            let mut stream = conn
                .copy_out_raw(&format!("COPY {} TO STDOUT", ident(&table)))
                .await?;
            while let Some(chunk) = stream.try_next().await? {
                rows += bytecount(&chunk);
                file.write_all(&chunk).await.map_err(io)?;
            }
        }
        file.flush().await.map_err(io)?;
        file.get_ref().sync_all().await.map_err(io)?;
        index.tables.push((table, rows));
    }
    let sequences: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT sequencename::text, last_value FROM pg_sequences WHERE schemaname = current_schema()",
    )
    .fetch_all(&mut *conn)
    .await?;
    index.sequences = sequences
        .into_iter()
        .filter_map(|(name, last)| Some((name, last?)))
        .collect();
    let json = serde_json::to_vec_pretty(&index).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tokio::fs::write(dir.join(PG_INDEX), json)
        .await
        .map_err(io)?;
    Ok(facts)
}

/// Rows in a chunk of COPY text output: one line each (a newline inside a
/// value is written escaped, `\n`).
fn bytecount(chunk: &[u8]) -> i64 {
    chunk.iter().filter(|b| **b == b'\n').count() as i64
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> StoreResult<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .ok_or_else(|| StoreError::Unsupported("a PostgreSQL URL without a database name"))?;
    Ok(format!("{}/{name}{query}", &base[..path_start]))
}

/// The database name in `url`.
pub fn database_name(url: &str) -> Option<String> {
    let base = url.split('?').next()?;
    let rest = &base[base.find("://")? + 3..];
    let name = &rest[rest.find('/')? + 1..];
    (!name.is_empty()).then(|| name.to_owned())
}

/// Runs `sql` (database-level DDL) on the server of `url`, connected to its
/// maintenance database `postgres`.
async fn on_server(url: &str, sql: &str) -> StoreResult<()> {
    let mut conn = options(&with_database(url, "postgres")?)?.connect().await?;
    conn.execute(sqlx::AssertSqlSafe(sql)).await?;
    conn.close().await?;
    Ok(())
}

/// Creates the empty database `name` on the server of `url`.
pub async fn create_database(url: &str, name: &str) -> StoreResult<()> {
    on_server(url, &format!("CREATE DATABASE {}", ident(name))).await
}

/// Drops the database `name` on the server of `url`, if it exists.
pub async fn drop_database(url: &str, name: &str) -> StoreResult<()> {
    on_server(
        url,
        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name)),
    )
    .await
}

/// Whether the database `name` exists on the server of `url`.
pub async fn database_exists(url: &str, name: &str) -> StoreResult<bool> {
    let mut conn = options(&with_database(url, "postgres")?)?.connect().await?;
    let found: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await?;
    conn.close().await?;
    Ok(found.is_some())
}

/// The bytes the database `url` takes on disk (`pg_database_size`).
pub async fn database_size(url: &str) -> StoreResult<u64> {
    let mut conn = options(url)?.connect().await?;
    let (bytes,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(u64::try_from(bytes).unwrap_or(0))
}

/// Renames database `from` to `to` (no one may be connected to it: PostgreSQL
/// waits five seconds for sessions to end, so a pool just dropped is no
/// obstacle, and a server still using it is refused).
pub async fn rename_database(url: &str, from: &str, to: &str) -> StoreResult<()> {
    on_server(
        url,
        &format!("ALTER DATABASE {} RENAME TO {}", ident(from), ident(to)),
    )
    .await
}

/// Loads the dump in `dir` into the new, empty database `url`: migrated to
/// the dump's schema, every table copied in, sequences set. What it then
/// holds (checked against `sample`); the caller migrates it further by opening it.
pub async fn load(dir: &Path, url: &str, sample: &[String]) -> StoreResult<SnapshotFacts> {
    let index: PgIndex =
        serde_json::from_slice(&tokio::fs::read(dir.join(PG_INDEX)).await.map_err(io)?)
            .map_err(|e| StoreError::Corrupt(format!("{PG_INDEX}: {e}")))?;
    if index.schema_version > crate::latest_schema_version() {
        return Err(StoreError::Unsupported(
            "a dump from a newer schema than this binary serves",
        ));
    }
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options(url)?)
        .await?;
    crate::migrations::migrator_upto(false, index.schema_version)
        .run(&pool)
        .await
        .map_err(|e| StoreError::Database(sqlx::Error::Migrate(Box::new(e))))?;
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    // Rows the migrations seeded make way for the dump's.
    let all: Vec<String> = index.tables.iter().map(|(t, _)| ident(t)).collect();
    if !all.is_empty() {
        tx.execute(sqlx::AssertSqlSafe(format!(
            "TRUNCATE {} CASCADE",
            all.join(", ")
        )))
        .await?;
    }
    for (table, _) in &index.tables {
        let file = tokio::fs::File::open(dir.join(table_file(table)))
            .await
            .map_err(io)?;
        let mut copy = tx
            .copy_in_raw(&format!("COPY {} FROM STDIN", ident(table)))
            .await?;
        copy.read_from(file).await?;
        copy.finish().await?;
    }
    for (sequence, last) in &index.sequences {
        sqlx::query("SELECT setval($1::regclass, $2)")
            .bind(ident(sequence))
            .bind(last)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let facts = facts(&mut conn, sample).await?;
    drop(conn);
    pool.close().await;
    Ok(facts)
}
