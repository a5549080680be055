//! Consistent copies of the database for disaster-recovery backups, and the
//! checks a trial restore runs on one.
use crate::db::{Backend, Db, read};
use crate::{StoreError, StoreResult};
use std::path::Path;

/// The snapshot part of the store.
#[async_trait::async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Writes a consistent copy of the whole database to the new file `dest`
    /// while the server keeps serving (SQLite: `VACUUM INTO`, one read
    /// transaction; PostgreSQL: not by this call).
    async fn snapshot_to(&self, dest: &Path) -> StoreResult<()>;
    /// Copies every table into the empty directory `dir` as one consistent
    /// snapshot while the server keeps serving (PostgreSQL; see
    /// [`crate::pg_snapshot`]); what it holds, with which of `sample` it lacks.
    async fn dump_to(&self, dir: &Path, sample: &[String]) -> StoreResult<SnapshotFacts>;
    /// Problems the database finds in itself (SQLite `PRAGMA integrity_check`); empty when sound.
    async fn integrity_problems(&self) -> StoreResult<Vec<String>>;
    /// The highest migration applied.
    async fn schema_version(&self) -> StoreResult<i64>;
    /// Up to `limit` message ids picked at random, to look for after a restore.
    async fn message_sample(&self, limit: u32) -> StoreResult<Vec<String>>;
    /// Which of `ids` no stored message has.
    async fn missing_messages(&self, ids: &[String]) -> StoreResult<Vec<String>>;
    /// Moves everything in SQLite's write-ahead log into the database file and
    /// empties the log, so the file alone is the whole database (before it is
    /// moved); a no-op on PostgreSQL.
    async fn flush_to_file(&self) -> StoreResult<()>;
}

#[async_trait::async_trait]
impl<T: Backend> SnapshotStore for T {
    async fn snapshot_to(&self, dest: &Path) -> StoreResult<()> {
        let Db::Sqlite { reader, .. } = self.db() else {
            return Err(StoreError::Unsupported("VACUUM INTO is SQLite's"));
        };
        let dest = dest
            .to_str()
            .ok_or(StoreError::Unsupported("a snapshot path that is not UTF-8"))?;
        sqlx::query("VACUUM INTO $1")
            .bind(dest)
            .execute(reader)
            .await?;
        Ok(())
    }

    async fn dump_to(&self, dir: &Path, sample: &[String]) -> StoreResult<SnapshotFacts> {
        let Db::Postgres(pool) = self.db() else {
            return Err(StoreError::Unsupported("COPY dumps are PostgreSQL's"));
        };
        crate::pg_snapshot::dump(pool, dir, sample).await
    }

    async fn integrity_problems(&self) -> StoreResult<Vec<String>> {
        let Db::Sqlite { reader, .. } = self.db() else {
            // PostgreSQL checks pages as it reads them; the row counts are the check.
            return Ok(Vec::new());
        };
        let rows: Vec<(String,)> = sqlx::query_as("PRAGMA integrity_check")
            .fetch_all(reader)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(line,)| line)
            .filter(|line| line != "ok")
            .collect())
    }

    async fn schema_version(&self) -> StoreResult<i64> {
        let (version,): (Option<i64>,) = read!(
            self.db(),
            sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations WHERE success"),
            fetch_one
        )?;
        Ok(version.unwrap_or(0))
    }

    async fn flush_to_file(&self) -> StoreResult<()> {
        if let Db::Sqlite { writer, .. } = self.db() {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(writer)
                .await?;
        }
        Ok(())
    }

    async fn missing_messages(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        let mut missing = Vec::new();
        for id in ids {
            let found: Option<(i64,)> = read!(
                self.db(),
                sqlx::query_as(
                    "SELECT CAST(1 AS BIGINT) FROM messages WHERE message_id = $1 LIMIT 1"
                )
                .bind(id),
                fetch_optional
            )?;
            if found.is_none() {
                missing.push(id.clone());
            }
        }
        Ok(missing)
    }

    async fn message_sample(&self, limit: u32) -> StoreResult<Vec<String>> {
        let rows: Vec<(String,)> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT message_id FROM (SELECT DISTINCT message_id FROM messages) m \
                 ORDER BY RANDOM() LIMIT $1"
            )
            .bind(i64::from(limit)),
            fetch_all
        )?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }
}

/// What a snapshot file holds, read without changing a byte of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFacts {
    /// Rows per table of [`crate::COUNTED_TABLES`] (a table the snapshot lacks is absent).
    pub row_counts: std::collections::BTreeMap<String, i64>,
    /// The highest migration applied.
    pub schema_version: i64,
    /// Problems `PRAGMA integrity_check` found; empty when sound.
    pub integrity_problems: Vec<String>,
    /// Whether each of the given message ids is there.
    pub missing_messages: Vec<String>,
}

/// Reads a SQLite snapshot file read-only (`immutable`: no journal, no WAL
/// file, nothing written), checking its integrity, counting its rows and
/// looking for `messages` by id.
pub async fn inspect_sqlite_file(path: &Path, messages: &[String]) -> StoreResult<SnapshotFacts> {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .immutable(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let problems: Vec<(String,)> = sqlx::query_as("PRAGMA integrity_check")
        .fetch_all(&pool)
        .await?;
    let mut facts = SnapshotFacts {
        row_counts: Default::default(),
        schema_version: 0,
        integrity_problems: problems
            .into_iter()
            .map(|(line,)| line)
            .filter(|line| line != "ok")
            .collect(),
        missing_messages: Vec::new(),
    };
    if !facts.integrity_problems.is_empty() {
        pool.close().await;
        return Ok(facts);
    }
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&pool)
            .await?;
    for table in crate::COUNTED_TABLES {
        if !tables.iter().any(|(t,)| t == table) {
            continue;
        }
        // The names are our own constants, never input.
        let sql = format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}");
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .fetch_one(&pool)
            .await?;
        facts.row_counts.insert((*table).to_owned(), n);
    }
    let (version,): (Option<i64>,) =
        sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await?;
    facts.schema_version = version.unwrap_or(0);
    for id in messages {
        let found: Option<(i64,)> =
            sqlx::query_as("SELECT CAST(1 AS BIGINT) FROM messages WHERE message_id = $1 LIMIT 1")
                .bind(id)
                .fetch_optional(&pool)
                .await?;
        if found.is_none() {
            facts.missing_messages.push(id.clone());
        }
    }
    pool.close().await;
    Ok(facts)
}

/// Adds `count` synthetic 1:1 messages from `sender` to `recipient`'s device
/// `device` to a SQLite database, each with its `accepted` receipt and bodies
/// of a typical size (random, 450 characters; receipts 800): the data of
/// `atlas bench dr`, which measures backups and restores of a large store.
/// Not for a server's own database.
pub async fn fill_synthetic_messages(
    path: &Path,
    (sender, recipient, device): (&str, &str, &str),
    count: u64,
) -> StoreResult<()> {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let options = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    const BATCH: u64 = 100_000;
    let mut done = 0u64;
    while done < count {
        let n = BATCH.min(count - done);
        let mut tx = pool.begin().await?;
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM n WHERE i < $2) \
             INSERT INTO messages (message_id, recipient_device_id, recipient_id, sender_id, \
               sender_device_id, encryption_algorithm, msg_type, body, seq, created_at) \
             SELECT printf('synthetic-%010d', i), $3, $4, $5, $3, \
               'm.olm.v1.curve25519-aes-sha2', 1, hex(randomblob(225)), i, \
               '2026-01-01 00:00:00+00:00' FROM n",
        )
        .bind(i64::try_from(done + 1).unwrap_or(i64::MAX))
        .bind(i64::try_from(done + n).unwrap_or(i64::MAX))
        .bind(device)
        .bind(recipient)
        .bind(sender)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM n WHERE i < $2) \
             INSERT INTO receipts (receipt_id, message_id, receipt_type, device_id, sender_id, \
               recipient_id, kid, jws, issued_at, expires_at, created_at) \
             SELECT printf('synthetic-r%010d', i), printf('synthetic-%010d', i), 'accepted', '', \
               $4, $3, 'synthetic', hex(randomblob(400)), '2026-01-01 00:00:00+00:00', \
               '2026-02-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00' FROM n",
        )
        .bind(i64::try_from(done + 1).unwrap_or(i64::MAX))
        .bind(i64::try_from(done + n).unwrap_or(i64::MAX))
        .bind(recipient)
        .bind(sender)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        done += n;
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(())
}

/// [`fill_synthetic_messages`] for a PostgreSQL database `url` (bodies of
/// random hex from `md5(random())`, as long as SQLite's).
pub async fn fill_synthetic_messages_postgres(
    url: &str,
    (sender, recipient, device): (&str, &str, &str),
    count: u64,
) -> StoreResult<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    let random_hex = |chars: usize| {
        let parts = vec!["md5(random()::text)"; chars.div_ceil(32)].join(" || ");
        format!("substr({parts}, 1, {chars})")
    };
    let messages = format!(
        "INSERT INTO messages (message_id, recipient_device_id, recipient_id, sender_id, \
           sender_device_id, encryption_algorithm, msg_type, body, seq, created_at) \
         SELECT 'synthetic-' || lpad(i::text, 10, '0'), $3, $4, $5, $3, \
           'm.olm.v1.curve25519-aes-sha2', 1, {}, i, '2026-01-01 00:00:00+00:00' \
         FROM generate_series($1::bigint, $2::bigint) AS i",
        random_hex(450)
    );
    let receipts = format!(
        "INSERT INTO receipts (receipt_id, message_id, receipt_type, device_id, sender_id, \
           recipient_id, kid, jws, issued_at, expires_at, created_at) \
         SELECT 'synthetic-r' || lpad(i::text, 10, '0'), 'synthetic-' || lpad(i::text, 10, '0'), \
           'accepted', '', $4, $3, 'synthetic', {}, '2026-01-01 00:00:00+00:00', \
           '2026-02-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00' \
         FROM generate_series($1::bigint, $2::bigint) AS i",
        random_hex(800)
    );
    const BATCH: u64 = 100_000;
    let mut done = 0u64;
    while done < count {
        let n = BATCH.min(count - done);
        let (first, last) = (
            i64::try_from(done + 1).unwrap_or(i64::MAX),
            i64::try_from(done + n).unwrap_or(i64::MAX),
        );
        let mut tx = pool.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(messages.as_str()))
            .bind(first)
            .bind(last)
            .bind(device)
            .bind(recipient)
            .bind(sender)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(receipts.as_str()))
            .bind(first)
            .bind(last)
            .bind(recipient)
            .bind(sender)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        done += n;
    }
    pool.close().await;
    Ok(())
}
