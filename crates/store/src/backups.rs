//! Storage of key backups: opaque blobs the devices encrypted, with what a
//! restoring device needs to derive its keys and what the server needs to
//! check a download key.
use crate::db::{Backend, read, run};
use crate::e2ee::unix_ms;
use crate::{StoreError, StoreResult};
use atlas_proto::{BackupId, DeviceId, UserId};
use time::OffsetDateTime;

/// Backups kept per user: storing one more deletes the oldest.
pub const BACKUPS_KEPT: u32 = 10;

/// A backup to store.
#[derive(Debug, Clone)]
pub struct NewBackup {
    /// `backup-<user>-<unix-ms>`.
    pub backup_id: BackupId,
    /// Owner.
    pub user_id: UserId,
    /// The device it was made on.
    pub device_id: DeviceId,
    /// Key-derivation parameters (JSON).
    pub kdf: String,
    /// Hex SHA-256 of the download key.
    pub download_verifier: String,
    /// The sealed key state.
    pub blob: String,
    /// When.
    pub created_at: OffsetDateTime,
}

/// What anyone may learn about a backup.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct BackupMeta {
    /// Id.
    #[sqlx(try_from = "String")]
    pub backup_id: BackupId,
    /// Owner.
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    /// Device it was made on.
    #[sqlx(try_from = "String")]
    pub device_id: DeviceId,
    /// 1, 2, 3 … per user.
    #[sqlx(try_from = "i64")]
    pub version: u64,
    /// Key-derivation parameters (JSON).
    pub kdf: String,
    /// Blob length.
    #[sqlx(try_from = "i64")]
    pub size: u64,
    /// When.
    pub created_at: OffsetDateTime,
}

/// The key-backup part of the store.
#[async_trait::async_trait]
pub trait BackupStore: Send + Sync {
    /// Stores a backup as the user's next version.
    async fn store_backup(&self, backup: &NewBackup) -> StoreResult<BackupMeta>;
    /// A user's backups made at or before `until`, newest first.
    async fn backups(
        &self,
        user_id: &str,
        until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<BackupMeta>>;
    /// One backup with its download verifier and blob.
    async fn backup(&self, backup_id: &str) -> StoreResult<Option<(BackupMeta, String, String)>>;
}

/// The columns of [`BackupMeta`].
const META: &str = "backup_id, user_id, device_id, version, kdf, size, created_at";

#[async_trait::async_trait]
impl<T: Backend> BackupStore for T {
    async fn store_backup(&self, b: &NewBackup) -> StoreResult<BackupMeta> {
        let mut tx = self.db().begin().await?;
        let exists: Option<(i64,)> = run!(
            &mut tx,
            sqlx::query_as("SELECT CAST(1 AS BIGINT) FROM key_backups WHERE backup_id = $1")
                .bind(b.backup_id.as_str()),
            fetch_optional
        )?;
        if exists.is_some() {
            return Err(StoreError::BackupExists);
        }
        // The UNIQUE (user_id, version) index makes a concurrent backup fail rather than share a version.
        let (last,): (i64,) = run!(
            &mut tx,
            sqlx::query_as("SELECT COALESCE(MAX(version), 0) FROM key_backups WHERE user_id = $1")
                .bind(b.user_id.as_str()),
            fetch_one
        )?;
        let version = last + 1;
        run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO key_backups (backup_id, user_id, device_id, version, kdf, \
                 download_verifier, blob, size, created_at, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(b.backup_id.as_str())
            .bind(b.user_id.as_str())
            .bind(b.device_id.as_str())
            .bind(version)
            .bind(&b.kdf)
            .bind(&b.download_verifier)
            .bind(&b.blob)
            .bind(i64::try_from(b.blob.len()).unwrap_or(i64::MAX))
            .bind(b.created_at)
            .bind(unix_ms(b.created_at)),
            execute
        )?;
        // A user keeps the newest few backups; older ones go, so storage per user is bounded.
        run!(
            &mut tx,
            sqlx::query("DELETE FROM key_backups WHERE user_id = $1 AND version <= $2")
                .bind(b.user_id.as_str())
                .bind(version - i64::from(BACKUPS_KEPT)),
            execute
        )?;
        tx.commit().await?;
        Ok(BackupMeta {
            backup_id: b.backup_id.clone(),
            user_id: b.user_id.clone(),
            device_id: b.device_id.clone(),
            version: version.max(0) as u64,
            kdf: b.kdf.clone(),
            size: b.blob.len() as u64,
            created_at: b.created_at,
        })
    }

    async fn backups(
        &self,
        user_id: &str,
        until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<BackupMeta>> {
        let sql = format!(
            "SELECT {META} FROM key_backups WHERE user_id = $1 AND created_ms <= $2 \
             ORDER BY created_ms DESC, version DESC LIMIT $3"
        );
        Ok(read!(
            self.db(),
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(user_id)
                .bind(unix_ms(until))
                .bind(i64::from(limit)),
            fetch_all
        )?)
    }

    async fn backup(&self, backup_id: &str) -> StoreResult<Option<(BackupMeta, String, String)>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            meta: BackupMeta,
            download_verifier: String,
            blob: String,
        }
        let sql =
            format!("SELECT {META}, download_verifier, blob FROM key_backups WHERE backup_id = $1");
        let row: Option<Row> = read!(
            self.db(),
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(backup_id),
            fetch_optional
        )?;
        Ok(row.map(|r| (r.meta, r.download_verifier, r.blob)))
    }
}
