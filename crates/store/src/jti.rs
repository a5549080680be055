//! The DPoP replay cache (`dpop_jti`): every accepted proof id until its
//! expiry, written durably before the answer and pruned in batches.
use crate::StoreResult;
use crate::db::{Backend, read, run};

/// The replay-cache part of the store.
#[async_trait::async_trait]
pub trait JtiStore: Send + Sync {
    /// Records a DPoP proof id until `expires_at` (Unix seconds), durably before it
    /// returns; false if it was recorded already (a replay), across restarts and
    /// every server process sharing the database.
    async fn insert_jti(&self, jti: &str, expires_at: i64) -> StoreResult<bool>;
    /// Until when a proof id is recorded, if it is.
    async fn jti(&self, jti: &str) -> StoreResult<Option<i64>>;
    /// Deletes up to `limit` proof ids that expired before `now`; how many it deleted.
    async fn prune_jtis(&self, now: i64, limit: u32) -> StoreResult<u64>;
    /// Forgets one `jti` (operator clearing a replay false positive).
    async fn delete_jti(&self, jti: &str) -> StoreResult<bool>;
}

#[async_trait::async_trait]
impl<T: Backend> JtiStore for T {
    async fn insert_jti(&self, jti: &str, expires_at: i64) -> StoreResult<bool> {
        self.insert_jti_durably(jti, expires_at).await
    }

    async fn jti(&self, jti: &str) -> StoreResult<Option<i64>> {
        let row: Option<(i64,)> = read!(
            self.db(),
            sqlx::query_as("SELECT expires_at FROM dpop_jti WHERE jti = $1").bind(jti),
            fetch_optional
        )?;
        Ok(row.map(|(at,)| at))
    }

    async fn prune_jtis(&self, now: i64, limit: u32) -> StoreResult<u64> {
        let mut tx = self.db().begin().await?;
        let done = run!(
            &mut tx,
            sqlx::query(
                "DELETE FROM dpop_jti WHERE jti IN \
                   (SELECT jti FROM dpop_jti WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)",
            )
            .bind(now)
            .bind(i64::from(limit)),
            execute
        )?;
        tx.commit().await?;
        Ok(done)
    }

    async fn delete_jti(&self, jti: &str) -> StoreResult<bool> {
        let mut tx = self.db().begin().await?;
        let done = run!(
            &mut tx,
            sqlx::query("DELETE FROM dpop_jti WHERE jti = $1").bind(jti),
            execute
        )?;
        tx.commit().await?;
        Ok(done > 0)
    }
}
