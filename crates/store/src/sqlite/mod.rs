//! SQLite backend: the embedded default. WAL with `synchronous = FULL`, so an
//! acknowledged write survives power loss. The hot writes (sends, proof ids,
//! acknowledgements) are group-committed by a writer thread with a connection
//! of its own ([`writer`]); the rest go through one sqlx writer connection;
//! reads through a pool of readers.
mod batch;
mod writer;

use crate::db::{Backend, Db};
use crate::messages::{AckedRow, acked, acked_rows_sql};
use crate::migrations;
use crate::{DeliveredReceipts, NewMessage, StoreError, StoreResult, StoredSend};
use atlas_proto::{DeviceId, UserId};
use batch::AckJob;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use writer::Writer;

/// Times an acknowledgement is prepared again when its device's queue changed
/// between the read and the write (a message arrived); then it is refused.
const ACK_ATTEMPTS: usize = 8;

/// The SQLite store.
pub struct SqliteStore {
    writer: Writer,
    db: Db,
}

#[async_trait::async_trait]
impl Backend for SqliteStore {
    fn db(&self) -> &Db {
        &self.db
    }

    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn store_message_durably(&self, m: &NewMessage) -> StoreResult<StoredSend> {
        self.writer.send(m.clone()).await
    }

    /// Joins the next group commit, so recording a proof id costs a share of one fsync.
    async fn insert_jti_durably(&self, jti: &str, expires_at: i64) -> StoreResult<bool> {
        self.writer.jti(jti.to_owned(), expires_at).await
    }

    /// Reads the messages and signs their receipts here, then joins the next
    /// group commit, which applies them only if the queue is unchanged.
    async fn ack_durably(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        up_to_seq: u64,
        now: OffsetDateTime,
        receipt: DeliveredReceipts<'_>,
    ) -> StoreResult<u64> {
        let Db::Sqlite { reader, .. } = &self.db else {
            return Err(StoreError::Corrupt(
                "a SQLite store on another backend".into(),
            ));
        };
        let up_to = i64::try_from(up_to_seq).unwrap_or(i64::MAX);
        let sql = acked_rows_sql("");
        for _ in 0..ACK_ATTEMPTS {
            let rows: Vec<AckedRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(up_to)
                .fetch_all(reader)
                .await?;
            let messages = rows
                .into_iter()
                .map(acked)
                .collect::<StoreResult<Vec<_>>>()?;
            let job = AckJob {
                user_id: user_id.clone(),
                device_id: device_id.clone(),
                up_to,
                now,
                receipts: messages.iter().map(receipt).collect(),
                expected: messages.into_iter().map(|m| m.message_id).collect(),
            };
            if let Some(count) = self.writer.ack(job).await? {
                return Ok(count);
            }
        }
        Err(StoreError::Database(sqlx::Error::Protocol(
            "the device's queue kept changing during its acknowledgement".into(),
        )))
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH` or a path) and migrates it.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let path = sqlite_path(url).ok_or_else(|| {
            StoreError::Database(sqlx::Error::Configuration(
                "SQLite needs a database file (in-memory databases are not supported)".into(),
            ))
        })?;
        owner_only(&path).map_err(sqlx::Error::Io)?;
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
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let db = Db::Sqlite {
            writer,
            reader,
            gate: gate.clone(),
        };
        migrations::run_migrations(&db).await?;
        // SQLite gives its -wal and -shm files the database file's mode; make sure of it.
        for suffix in ["-wal", "-shm"] {
            let mut side = path.clone().into_os_string();
            side.push(suffix);
            let side = PathBuf::from(side);
            if side.exists() {
                set_mode(&side, 0o600).map_err(sqlx::Error::Io)?;
            }
        }
        Ok(Self {
            writer: Writer::start(&path, gate)?,
            db,
        })
    }
}

/// The file a SQLite database URL names (`sqlite://PATH[?…]`, `sqlite:PATH` or a
/// bare path); `None` for PostgreSQL and in-memory databases.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return None;
    }
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split('?').next()?;
    (!path.is_empty() && !path.contains(":memory:")).then(|| PathBuf::from(path))
}

/// Creates the database file readable by its owner only, or makes an existing one so:
/// it holds every user's metadata and the server's (sealed) keys.
fn owner_only(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => set_mode(path, 0o600),
        Err(e) => Err(e),
    }
}

/// Sets a file's or directory's Unix permission bits (nothing elsewhere).
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}
