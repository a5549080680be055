//! Storage of key backups: opaque blobs the devices encrypted, with what a
//! restoring device needs to derive its keys and what the server needs to
//! check a download key.
use crate::StoreResult;
use time::OffsetDateTime;

/// Backups kept per user: storing one more deletes the oldest.
pub const BACKUPS_KEPT: u32 = 10;

/// A backup to store.
#[derive(Debug, Clone)]
pub struct NewBackup {
    /// `backup-<user>-<unix-ms>`.
    pub backup_id: String,
    /// Owner.
    pub user_id: String,
    /// The device it was made on.
    pub device_id: String,
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
#[derive(Debug, Clone, PartialEq)]
pub struct BackupMeta {
    /// Id.
    pub backup_id: String,
    /// Owner.
    pub user_id: String,
    /// Device it was made on.
    pub device_id: String,
    /// 1, 2, 3 … per user.
    pub version: u64,
    /// Key-derivation parameters (JSON).
    pub kdf: String,
    /// Blob length.
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
