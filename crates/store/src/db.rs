//! The two backends behind one handle, so each storage area writes its SQL
//! once as ordinary Rust. A query is built the same way for SQLite and
//! PostgreSQL (`$1` placeholders, types both drivers encode); [`run!`] and
//! [`read!`] only pick the connection to run it on. Where the SQL itself
//! differs, [`Dialect`] says so.
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{Postgres, Sqlite};

/// Connection pools of one database.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    /// One writer connection (SQLite serialises writers) and a pool of readers.
    Sqlite {
        /// The writer.
        writer: SqlitePool,
        /// The readers.
        reader: SqlitePool,
    },
    /// One pool for reads and writes.
    Postgres(PgPool),
}

/// An open transaction on either backend; dropped without [`Tx::commit`], it rolls back.
pub(crate) enum Tx {
    /// On the SQLite writer.
    Sqlite(sqlx::Transaction<'static, Sqlite>),
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

    /// ` FOR UPDATE SKIP LOCKED` where concurrent claimers take different rows.
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

/// A storage backend: its [`Db`], on which every area runs its SQL (each area
/// implements its trait once for every backend), and the two writes whose
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
}

impl Db {
    /// Starts a write transaction.
    pub(crate) async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Self::Sqlite { writer, .. } => Tx::Sqlite(writer.begin().await?),
            Self::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }
}

impl Tx {
    /// Commits the transaction durably.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(tx) => tx.commit().await,
            Self::Postgres(tx) => tx.commit().await,
        }
    }

    /// The SQLite connection under the transaction, for SQLite's own batch statements.
    pub(crate) fn sqlite(&mut self) -> Option<&mut sqlx::SqliteConnection> {
        match self {
            Self::Sqlite(tx) => Some(&mut **tx),
            Self::Postgres(_) => None,
        }
    }

    /// The PostgreSQL connection under the transaction.
    pub(crate) fn postgres(&mut self) -> Option<&mut sqlx::PgConnection> {
        match self {
            Self::Sqlite(_) => None,
            Self::Postgres(tx) => Some(&mut **tx),
        }
    }

    /// Which dialect the transaction speaks.
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Self::Sqlite(_) => Dialect::Sqlite,
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
            $crate::db::Tx::Sqlite(tx) => {
                $query.execute(&mut **tx).await.map(|r| r.rows_affected())
            }
            $crate::db::Tx::Postgres(tx) => {
                $query.execute(&mut **tx).await.map(|r| r.rows_affected())
            }
        }
    };
    ($tx:expr, $query:expr, $method:ident) => {
        match $tx {
            $crate::db::Tx::Sqlite(tx) => $query.$method(&mut **tx).await,
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
