//! SQLite backend: the embedded default. WAL with `synchronous = FULL`, so an
//! acknowledged write survives power loss; one writer connection (SQLite
//! serialises writers anyway, and this avoids busy-retries), several readers.
//! Sends are group-committed: concurrent sends share one transaction and one
//! fsync, and each is answered after the commit.
use crate::migrations;
use crate::sql::impl_store;
use crate::{NewMessage, StoreError, StoreResult, StoredSend};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most sends committed together.
const MAX_BATCH: usize = 512;

type Pending = (NewMessage, oneshot::Sender<StoreResult<StoredSend>>);

/// The SQLite store.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    sends: mpsc::Sender<Pending>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH` or a path) and migrates it.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let url = if url.starts_with("sqlite:") {
            url.to_owned()
        } else {
            format!("sqlite://{url}")
        };
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        Self::migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let (sends, queue) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(group_commit(writer.clone(), queue));
        Ok(Self {
            writer,
            reader,
            sends,
        })
    }

    async fn store_message_durably(&self, m: &NewMessage) -> StoreResult<StoredSend> {
        let (answer, answered) = oneshot::channel();
        self.sends
            .send((m.clone(), answer))
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        answered
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?
    }

    async fn migrate(pool: &SqlitePool) -> StoreResult<()> {
        let mut tx = pool.begin().await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        for (version, sql) in migrations::MIGRATIONS {
            let sql = migrations::for_sqlite(sql);
            let done = sqlx::query("SELECT 1 FROM schema_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
            if done.is_some() {
                continue;
            }
            for statement in migrations::statements(&sql) {
                sqlx::query(sqlx::AssertSqlSafe(statement))
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(time::OffsetDateTime::now_utc())
                .execute(&mut *tx)
                .await?;
            tracing::info!(version, "applied SQLite migration");
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Commits whatever sends are queued, together, until the store is dropped.
async fn group_commit(writer: SqlitePool, mut queue: mpsc::Receiver<Pending>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        match commit_batch(&writer, &batch).await {
            Ok(results) => {
                for ((_, answer), result) in batch.into_iter().zip(results) {
                    let _ = answer.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, sends = batch.len(), "group commit failed");
                let reason = e.to_string();
                for (_, answer) in batch {
                    let _ = answer.send(Err(StoreError::Database(sqlx::Error::Protocol(format!(
                        "batch not committed: {reason}"
                    )))));
                }
            }
        }
    }
}

/// One transaction for the whole batch. A send refused for a client reason
/// (device list, idempotency, unknown user) is refused before it writes
/// anything, so it needs no savepoint; a database error fails the batch, and
/// every sender retries (sends are idempotent).
async fn commit_batch(
    writer: &SqlitePool,
    batch: &[Pending],
) -> Result<Vec<StoreResult<StoredSend>>, StoreError> {
    let mut tx = writer.begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    for (message, _) in batch {
        match SqliteStore::store_message_in(&mut tx, message).await {
            Err(e @ (StoreError::Database(_) | StoreError::Corrupt(_))) => return Err(e),
            result => results.push(result),
        }
    }
    tx.commit().await?;
    Ok(results)
}

impl_store!(
    SqliteStore,
    sqlx::Sqlite,
    backend = "sqlite",
    skip_locked = ""
);
