//! PostgreSQL backend, for several server processes sharing one database.
//! Concurrent claims and sends are made safe by row locks (`FOR UPDATE SKIP
//! LOCKED` on key claims, the device row on sequence numbers).
use crate::StoreResult;
use crate::migrations;
use crate::sql::impl_store;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// The PostgreSQL store.
pub struct PostgresStore {
    writer: PgPool,
    reader: PgPool,
}

/// Advisory lock id held while migrating, so replicas starting together migrate once.
const MIGRATION_LOCK: i64 = 0x0041_544c_4153;

impl PostgresStore {
    /// Connects to `url` and migrates the database.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await?;
        Self::migrate(&pool).await?;
        Ok(Self {
            writer: pool.clone(),
            reader: pool,
        })
    }

    /// One transaction per send; row locks order concurrent sends to a device.
    async fn store_message_durably(&self, m: &crate::NewMessage) -> StoreResult<crate::StoredSend> {
        let mut tx = self.writer.begin().await?;
        let stored = Self::store_message_in(&mut tx, m).await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn migrate(pool: &PgPool) -> StoreResult<()> {
        let mut conn = pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await?;
        let result = async {
            sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)")
                .execute(&mut *conn)
                .await?;
            for (version, sql) in migrations::MIGRATIONS {
                let done = sqlx::query("SELECT 1 FROM schema_migrations WHERE version = $1").bind(version).fetch_optional(&mut *conn).await?;
                if done.is_some() {
                    continue;
                }
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                for statement in migrations::statements(sql) {
                    sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut *tx).await?;
                }
                sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, NOW())").bind(version).execute(&mut *tx).await?;
                tx.commit().await?;
                tracing::info!(version, "applied PostgreSQL migration");
            }
            Ok::<_, sqlx::Error>(())
        }
        .await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await?;
        Ok(result?)
    }
}

impl_store!(
    PostgresStore,
    sqlx::Postgres,
    backend = "postgres",
    skip_locked = " FOR UPDATE SKIP LOCKED"
);
