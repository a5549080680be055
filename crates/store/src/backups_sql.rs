//! [`crate::BackupStore`] in the SQL both backends share (see `sql.rs`).

/// Implements [`crate::BackupStore`] for a backend struct with `writer` and `reader` pools.
macro_rules! impl_backup_store {
    ($store:ty, $db:ty) => {
        impl $store {
            fn backup_meta(row: &<$db as sqlx::Database>::Row) -> $crate::StoreResult<$crate::BackupMeta> {
                use sqlx::Row;
                Ok($crate::BackupMeta {
                    backup_id: row.try_get("backup_id")?,
                    user_id: row.try_get("user_id")?,
                    device_id: row.try_get("device_id")?,
                    version: row.try_get::<i64, _>("version")?.max(0) as u64,
                    kdf: row.try_get("kdf")?,
                    size: row.try_get::<i64, _>("size")?.max(0) as u64,
                    created_at: row.try_get("created_at")?,
                })
            }
        }

        #[async_trait::async_trait]
        impl $crate::BackupStore for $store {
            async fn store_backup(&self, b: &$crate::NewBackup) -> $crate::StoreResult<$crate::BackupMeta> {
                let mut tx = self.writer.begin().await?;
                let exists: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM key_backups WHERE backup_id = $1")
                    .bind(&b.backup_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_some() {
                    return Err($crate::StoreError::BackupExists);
                }
                // The UNIQUE (user_id, version) index makes a concurrent backup fail rather than share a version.
                let (last,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(version), 0) FROM key_backups WHERE user_id = $1")
                    .bind(&b.user_id)
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO key_backups (backup_id, user_id, device_id, version, kdf, download_verifier, blob, size, created_at, created_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&b.backup_id)
                .bind(&b.user_id)
                .bind(&b.device_id)
                .bind(last + 1)
                .bind(&b.kdf)
                .bind(&b.download_verifier)
                .bind(&b.blob)
                .bind(i64::try_from(b.blob.len()).unwrap_or(i64::MAX))
                .bind(b.created_at)
                .bind($crate::e2ee::unix_ms(b.created_at))
                .execute(&mut *tx)
                .await?;
                // A user keeps the newest few backups; older ones go, so storage per user is bounded.
                sqlx::query("DELETE FROM key_backups WHERE user_id = $1 AND version <= $2")
                    .bind(&b.user_id)
                    .bind(last + 1 - i64::from($crate::BACKUPS_KEPT))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok($crate::BackupMeta {
                    backup_id: b.backup_id.clone(),
                    user_id: b.user_id.clone(),
                    device_id: b.device_id.clone(),
                    version: (last + 1).max(0) as u64,
                    kdf: b.kdf.clone(),
                    size: b.blob.len() as u64,
                    created_at: b.created_at,
                })
            }

            async fn backups(&self, user_id: &str, until: time::OffsetDateTime, limit: u32) -> $crate::StoreResult<Vec<$crate::BackupMeta>> {
                let rows = sqlx::query(
                    "SELECT backup_id, user_id, device_id, version, kdf, size, created_at FROM key_backups \
                     WHERE user_id = $1 AND created_ms <= $2 ORDER BY created_ms DESC, version DESC LIMIT $3",
                )
                .bind(user_id)
                .bind($crate::e2ee::unix_ms(until))
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?;
                rows.iter().map(Self::backup_meta).collect()
            }

            async fn backup(&self, backup_id: &str) -> $crate::StoreResult<Option<($crate::BackupMeta, String, String)>> {
                use sqlx::Row;
                let row = sqlx::query("SELECT * FROM key_backups WHERE backup_id = $1")
                    .bind(backup_id)
                    .fetch_optional(&self.reader)
                    .await?;
                row.map(|row| Ok((Self::backup_meta(&row)?, row.try_get("download_verifier")?, row.try_get("blob")?)))
                    .transpose()
            }
        }
    };
}

pub(crate) use impl_backup_store;
