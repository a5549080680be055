//! The disaster-recovery backups a database knows of (`atlas dr backup` and
//! recorded `atlas dr verify` runs), for the metrics of the last backup and
//! the last verified one.
use crate::StoreResult;
use crate::db::{Backend, read, run};

/// What the metrics show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrSummary {
    /// Backups recorded.
    pub backups: i64,
    /// Unix milliseconds of the newest backup.
    pub last_backup_ms: Option<i64>,
    /// Unix milliseconds of the newest backup whose last verification passed.
    pub last_verified_backup_ms: Option<i64>,
}

/// The disaster-recovery part of the store.
#[async_trait::async_trait]
pub trait DrRecordStore: Send + Sync {
    /// Records a backup taken (`created_ms`: when its snapshot was).
    async fn record_backup(
        &self,
        location: &str,
        name: &str,
        created_ms: i64,
        messages: i64,
        size: i64,
    ) -> StoreResult<()>;
    /// Records a verification of a backup (one this database did not record is added).
    async fn record_verification(
        &self,
        location: &str,
        name: &str,
        created_ms: i64,
        verified_ms: i64,
        passed: bool,
    ) -> StoreResult<()>;
    /// The newest backup and the newest verified one.
    async fn dr_summary(&self) -> StoreResult<DrSummary>;
}

#[async_trait::async_trait]
impl<T: Backend> DrRecordStore for T {
    async fn record_backup(
        &self,
        location: &str,
        name: &str,
        created_ms: i64,
        messages: i64,
        size: i64,
    ) -> StoreResult<()> {
        let mut tx = self.db().begin().await?;
        run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO dr_backups (location, name, created_ms, messages, size) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (location, name) DO UPDATE SET created_ms = $3, messages = $4, \
                   size = $5, verified_ms = NULL, verified_ok = NULL",
            )
            .bind(location)
            .bind(name)
            .bind(created_ms)
            .bind(messages)
            .bind(size),
            execute
        )?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_verification(
        &self,
        location: &str,
        name: &str,
        created_ms: i64,
        verified_ms: i64,
        passed: bool,
    ) -> StoreResult<()> {
        let mut tx = self.db().begin().await?;
        run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO dr_backups (location, name, created_ms, messages, size, verified_ms, \
                   verified_ok) VALUES ($1, $2, $3, 0, 0, $4, $5) \
                 ON CONFLICT (location, name) DO UPDATE SET verified_ms = $4, verified_ok = $5",
            )
            .bind(location)
            .bind(name)
            .bind(created_ms)
            .bind(verified_ms)
            .bind(i64::from(passed)),
            execute
        )?;
        tx.commit().await?;
        Ok(())
    }

    async fn dr_summary(&self) -> StoreResult<DrSummary> {
        let (backups, last_backup_ms, last_verified_backup_ms): (i64, Option<i64>, Option<i64>) = read!(
            self.db(),
            sqlx::query_as(
                "SELECT CAST(COUNT(*) AS BIGINT), MAX(created_ms), \
                       MAX(CASE WHEN verified_ok = 1 THEN created_ms END) FROM dr_backups"
            ),
            fetch_one
        )?;
        Ok(DrSummary {
            backups,
            last_backup_ms,
            last_verified_backup_ms,
        })
    }
}
