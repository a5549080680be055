//! The two backends behind one handle, so each storage area writes its SQL
//! once as ordinary Rust. A query is built the same way for SQLite and
//! PostgreSQL (`$1` placeholders, types both drivers encode); [`run!`] and
//! [`read!`] only pick the connection to run it on. Where the SQL itself
//! differs, [`Dialect`] says so.
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{Postgres, Sqlite};
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// The right to write to a SQLite database, first come first served.
pub(crate) type WriteGate = Arc<Mutex<()>>;

/// Connection pools of one database.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    /// One writer connection (SQLite serialises writers) and a pool of readers.
    Sqlite {
        /// The writer.
        writer: SqlitePool,
        /// The readers.
        reader: SqlitePool,
        /// Held by whoever writes: this pool's writer or the store's writer
        /// thread (see `sqlite/writer.rs`), so the two never wait on SQLite's lock.
        gate: WriteGate,
    },
    /// One pool for reads and writes.
    Postgres(PgPool),
}

/// An open transaction on either backend; dropped without [`Tx::commit`], it rolls back.
pub(crate) enum Tx {
    /// On the SQLite writer, holding the write gate until it ends.
    Sqlite(sqlx::Transaction<'static, Sqlite>, OwnedMutexGuard<()>),
    /// On a PostgreSQL connection.
    Postgres(sqlx::Transaction<'static, Postgres>),
}

/// Where the two SQL dialects differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// SQLite: one writer at a time, so no row locks.
    Sqlite,
    /// PostgreSQL: concurrent writers lock rows.
    Postgres,
}

impl Dialect {
    /// ` FOR UPDATE` where rows are locked, nothing on SQLite.
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE",
        }
    }

    /// A time column as seconds since the Unix epoch (fractional), so windows
    /// and differences are computed alike (SQLite keeps times as RFC 3339 text).
    pub(crate) fn epoch_seconds(self, column: &str) -> String {
        match self {
            Self::Sqlite => format!("((julianday({column}) - 2440587.5) * 86400.0)"),
            Self::Postgres => format!("CAST(EXTRACT(EPOCH FROM {column}) AS DOUBLE PRECISION)"),
        }
    }

    /// ` FOR UPDATE SKIP LOCKED` where concurrent claimers take different rows.
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

/// A storage backend: its [`Db`], on which every area runs its SQL (each area
/// implements its trait once for every backend), and the hot writes whose
/// durability each backend gets its own way (SQLite by group commit).
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// The database.
    fn db(&self) -> &Db;
    /// `sqlite` or `postgres`.
    fn name(&self) -> &'static str;
    /// Stores a send durably (see [`crate::MessageStore::store_message`]).
    async fn store_message_durably(
        &self,
        message: &crate::NewMessage,
    ) -> crate::StoreResult<crate::StoredSend>;
    /// Records a proof id durably (see [`crate::JtiStore::insert_jti`]).
    async fn insert_jti_durably(&self, jti: &str, expires_at: i64) -> crate::StoreResult<bool>;
    /// Acknowledges a device's messages (see [`crate::MessageStore::ack`]).
    async fn ack_durably(
        &self,
        user_id: &atlas_proto::UserId,
        device_id: &atlas_proto::DeviceId,
        up_to_seq: u64,
        now: time::OffsetDateTime,
        receipt: crate::DeliveredReceipts<'_>,
    ) -> crate::StoreResult<u64> {
        crate::messages::ack_in_transaction(self.db(), user_id, device_id, up_to_seq, now, receipt)
            .await
    }
}

impl Db {
    /// Which dialect the database speaks.
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Self::Sqlite { .. } => Dialect::Sqlite,
            Self::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Starts a write transaction.
    pub(crate) async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Self::Sqlite { writer, gate, .. } => {
                let held = gate.clone().lock_owned().await;
                Tx::Sqlite(writer.begin().await?, held)
            }
            Self::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }
}

impl Tx {
    /// Commits the transaction durably.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(tx, _held) => tx.commit().await,
            Self::Postgres(tx) => tx.commit().await,
        }
    }

    /// The PostgreSQL connection under the transaction.
    pub(crate) fn postgres(&mut self) -> Option<&mut sqlx::PgConnection> {
        match self {
            Self::Sqlite(..) => None,
            Self::Postgres(tx) => Some(&mut **tx),
        }
    }

    /// Which dialect the transaction speaks.
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Self::Sqlite(..) => Dialect::Sqlite,
            Self::Postgres(_) => Dialect::Postgres,
        }
    }
}

/// Runs a query inside a transaction: `run!(tx, sqlx::query(…).bind(…), fetch_one)`.
/// The query expression is written once and compiled for each backend;
/// `execute` gives the number of rows affected.
macro_rules! run {
    ($tx:expr, $query:expr, execute) => {
        match $tx {
            $crate::db::Tx::Sqlite(tx, _) => {
                $query.execute(&mut **tx).await.map(|r| r.rows_affected())
            }
            $crate::db::Tx::Postgres(tx) => {
                $query.execute(&mut **tx).await.map(|r| r.rows_affected())
            }
        }
    };
    ($tx:expr, $query:expr, $method:ident) => {
        match $tx {
            $crate::db::Tx::Sqlite(tx, _) => $query.$method(&mut **tx).await,
            $crate::db::Tx::Postgres(tx) => $query.$method(&mut **tx).await,
        }
    };
}

/// Runs a read-only query on the readers: `read!(db, sqlx::query_as(…), fetch_all)`.
macro_rules! read {
    ($db:expr, $query:expr, $method:ident) => {
        match $db {
            $crate::db::Db::Sqlite { reader, .. } => $query.$method(reader).await,
            $crate::db::Db::Postgres(pool) => $query.$method(pool).await,
        }
    };
}

pub(crate) use {read, run};
