//! Key backups on the wire: the device uploads an opaque blob it encrypted
//! (`backup-<user>-<unix-ms>`), anyone may list a user's backups' public
//! parameters, and the blob goes to whoever shows the download key that the
//! passphrase yields.
use crate::ids::{BackupId, DeviceId, UserId};
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};

/// Largest sealed key state accepted, bytes of base64url.
pub const MAX_BACKUP_BYTES: usize = 8 * 1024 * 1024;

/// Argon2id cost and salt, stored in the clear with the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupKdf {
    /// Always `argon2id`.
    pub alg: String,
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
    /// 16 random bytes, base64url.
    pub salt: String,
}

/// `POST /backups` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupUpload {
    /// `backup-<user>-<unix-ms>`.
    pub backup_id: BackupId,
    /// How the keys were derived.
    pub kdf: BackupKdf,
    /// Hex SHA-256 of the download key.
    pub download_verifier: String,
    /// The sealed key state, base64url.
    pub blob: String,
}

/// A backup's public description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// Id.
    pub backup_id: BackupId,
    /// Owner.
    pub user_id: UserId,
    /// The device it was made on.
    pub device_id: DeviceId,
    /// 1, 2, 3 … per user.
    pub version: u64,
    /// How to derive its keys.
    pub kdf: BackupKdf,
    /// Blob size, bytes.
    pub size: u64,
    /// RFC 3339.
    pub created_at: Timestamp,
}

/// Answer to `GET /backups/{user_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupList {
    /// Newest first.
    pub backups: Vec<BackupInfo>,
}

/// Answer to `GET /backups/{user_id}/{backup_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupDownload {
    /// The backup.
    pub info: BackupInfo,
    /// The sealed key state.
    pub blob: String,
}
