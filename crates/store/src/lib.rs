//! Server storage: the [`Store`] trait, its records and errors, and two
//! backends (SQLite, the embedded default, and PostgreSQL) sharing one schema
//! whose table and column names the operator runbooks query verbatim.
#![forbid(unsafe_code)]

mod backups;
mod db;
mod e2ee;
mod groups;
mod key_checks;
mod key_packages;
mod member_actions;
mod migrations;
mod postgres;
mod records;
mod repair;
mod sql;
mod sqlite;
pub mod testdb;

pub use backups::{BACKUPS_KEPT, BackupMeta, BackupStore, NewBackup};
pub use e2ee::{FailureCaps, NewReport, OutcomeCounts, ReportChange, ReportRecord, ReportStore};
pub use groups::*;
pub use key_checks::{KeyCheckRecord, KeyStore, UserKeyRecord};
pub use key_packages::{ClaimedKeyPackageRecord, KeyPackageCounts, KeyPackageStore, NewKeyPackage};
pub use member_actions::{MemberAction, MemberActionStore};
pub use postgres::PostgresStore;
pub use records::*;
pub use repair::{
    MessageCopy, RepairStore, ResendOutcome, ResendRequestRecord, SessionParties,
    SessionResetRecord,
};
pub use sqlite::{SqliteStore, set_mode, sqlite_path};

use atlas_proto::api::{DeviceKeys, InboxMessage, KeyCounts, KeysUploadRequest};
use atlas_proto::{DeviceId, UserId};
use std::sync::Arc;
use time::OffsetDateTime;

/// Why a storage operation failed: a client's mistake, or the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The user id is taken.
    #[error("user already exists")]
    UserExists,
    /// The device id is taken for that user.
    #[error("device already exists")]
    DeviceExists,
    /// No such user.
    #[error("unknown user")]
    UnknownUser,
    /// No such active device.
    #[error("unknown device")]
    UnknownDevice,
    /// The link token is unknown, used or expired.
    #[error("link token invalid")]
    InvalidLinkToken,
    /// The envelopes do not match the recipient's current devices.
    #[error("device list mismatch")]
    DeviceListMismatch(atlas_proto::api::DeviceListMismatch),
    /// A client message id was reused for different content.
    #[error("client message id reused for a different message")]
    IdempotencyConflict,
    /// The group name is taken.
    #[error("group already exists")]
    GroupExists,
    /// A backup with this id exists.
    #[error("backup already exists")]
    BackupExists,
    /// No such group.
    #[error("unknown group")]
    UnknownGroup,
    /// The member is not (or no longer) in the group.
    #[error("not a member of the group")]
    NotAGroupMember,
    /// A recipient device holds the most unacknowledged messages it may.
    #[error("the queue of device {0} is full")]
    QueueFull(DeviceId),
    /// The request's DPoP proof id was recorded before: a replay.
    #[error("DPoP proof replayed")]
    Replay,
    /// The database failed (our side, not the client's).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored value could not be read back (corruption or a bug).
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

/// Result of storage operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Everything the server persists. Every method that returns `Ok` after a
/// write has committed it durably.
#[async_trait::async_trait]
pub trait Store:
    GroupStore
    + KeyPackageStore
    + MemberActionStore
    + ReportStore
    + RepairStore
    + KeyStore
    + BackupStore
    + Send
    + Sync
    + 'static
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// One round trip to the database.
    async fn ping(&self) -> StoreResult<()>;

    /// Creates a user with its identity key and its first device (certified by it).
    async fn create_user(
        &self,
        user_id: &UserId,
        device: &DeviceKeys,
        identity: &NewIdentity<'_>,
        now: OffsetDateTime,
    ) -> StoreResult<()>;
    /// Records a single-use token (hashed) that lets a new device join `user_id`.
    async fn create_link_token(
        &self,
        user_id: &UserId,
        token_hash: &[u8],
        expires_at: OffsetDateTime,
    ) -> StoreResult<()>;
    /// Adds a pending device to an existing user, consuming a link token in the same transaction.
    async fn add_device(
        &self,
        user_id: &UserId,
        device: &DeviceKeys,
        link_token_hash: &[u8],
        link_proof: &str,
        now: OffsetDateTime,
    ) -> StoreResult<()>;
    /// The user's identity key (`UnknownUser` if there is no such user).
    async fn identity_key(&self, user_id: &UserId) -> StoreResult<Option<String>>;
    /// Makes a pending device active with its certificate and the sealed identity
    /// key for it; false if it is not pending.
    async fn certify_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        certificate: &str,
        identity_transfer: &str,
    ) -> StoreResult<bool>;
    /// A device's status and certificate; the sealed identity key is handed out once.
    async fn claim_certificate(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> StoreResult<Option<CertificateRecord>>;
    /// Removes a device (with the identity key's signature, or by an operator): its
    /// prekeys and refresh tokens die with it. False if it was removed already.
    async fn revoke_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        revocation: Option<&str>,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// One device, active or not.
    async fn device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> StoreResult<Option<DeviceRecord>>;
    /// All devices of a user with their key stock; `UnknownUser` if there is no such user.
    async fn devices(&self, user_id: &UserId) -> StoreResult<Vec<DeviceRecord>>;

    /// Publishes one-time keys and optionally a new fallback key (the old one becomes `rotated`).
    async fn upload_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        keys: &KeysUploadRequest,
        now: OffsetDateTime,
    ) -> StoreResult<KeyCounts>;
    /// The device's unclaimed key stock.
    async fn key_counts(&self, user_id: &UserId, device_id: &DeviceId) -> StoreResult<KeyCounts>;
    /// Claims one one-time key (or the fallback key) for each active device of `user_id`
    /// (only those in `devices` unless it is empty). A one-time key is handed out at
    /// most once, also under concurrent claims.
    async fn claim_keys(
        &self,
        user_id: &UserId,
        devices: &[DeviceId],
        kind: ClaimKind,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<ClaimedDeviceRecord>>;

    /// Stores a send durably: one row per recipient device, each with the next
    /// sequence number of that device. Idempotent on the sender's client message id.
    async fn store_message(&self, message: &NewMessage) -> StoreResult<StoredSend>;
    /// Unacknowledged messages of a device with `seq > after`, in order.
    async fn inbox(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<InboxMessage>>;
    /// Marks messages up to `up_to_seq` delivered, drops their ciphertext and
    /// stores the `delivered` receipt `receipt` builds for each, all in one
    /// transaction; returns how many.
    async fn ack(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        up_to_seq: u64,
        now: OffsetDateTime,
        receipt: DeliveredReceipts<'_>,
    ) -> StoreResult<u64>;
    /// The receipts of a message, `accepted` first, then `delivered` by device.
    async fn receipts(&self, message_id: &str) -> StoreResult<Vec<ReceiptRecord>>;
    /// Replaces a receipt's signature after a reissue; false if there is no such receipt.
    async fn update_receipt(
        &self,
        receipt_id: &str,
        kid: &str,
        jws: &str,
        issued_at: OffsetDateTime,
    ) -> StoreResult<bool>;

    /// Stores a refresh token (hashed) bound to a device and DPoP key.
    async fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> StoreResult<()>;
    /// Spends a refresh token. A spent or revoked one presented again revokes its whole family.
    async fn use_refresh_token(
        &self,
        token_hash: &[u8],
        now: OffsetDateTime,
    ) -> StoreResult<RefreshUse>;
    /// Revokes every unspent refresh token (all of them, or one device's); how many.
    async fn revoke_refresh_tokens(
        &self,
        device: Option<(&UserId, &DeviceId)>,
        now: OffsetDateTime,
    ) -> StoreResult<u64>;

    /// The active server key for `purpose`, creating it with `make` if there is none.
    async fn server_key(
        &self,
        purpose: &str,
        make: &(dyn Fn() -> ServerKeyRecord + Send + Sync),
    ) -> StoreResult<ServerKeyRecord>;

    /// Every key for `purpose` with its lifecycle, newest first.
    async fn server_keys(&self, purpose: &str) -> StoreResult<Vec<ServerKeyState>>;
    /// Makes `next` the active key of its purpose; the active one is retired and
    /// stays published until `publish_until`.
    async fn rotate_server_key(
        &self,
        next: &ServerKeyRecord,
        publish_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<()>;
    /// Revokes a key of `purpose`; if it was the active one, `replacement` becomes
    /// active in the same transaction. False if there is no such unrevoked key.
    async fn revoke_server_key(
        &self,
        purpose: &str,
        kid: &str,
        replacement: &ServerKeyRecord,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;

    /// Replaces the stored secret of key `kid` (sealing a legacy plain secret); false if there is no such key.
    async fn replace_server_key_secret(&self, kid: &str, secret: &[u8]) -> StoreResult<bool>;

    /// Stores a new operator token (hashed).
    async fn create_operator_token(&self, token: &OperatorTokenRecord) -> StoreResult<()>;
    /// The unrevoked operator token with this hash.
    async fn operator_token(&self, token_hash: &[u8]) -> StoreResult<Option<OperatorTokenRecord>>;
    /// Revokes an operator token; false if there was no such unrevoked token.
    async fn revoke_operator_token(&self, token_id: &str, now: OffsetDateTime)
    -> StoreResult<bool>;

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

/// Opens the store a database URL names (`sqlite://…` or `postgres://…`) and migrates it.
pub async fn open(database_url: &str) -> StoreResult<Arc<dyn Store>> {
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(database_url).await?))
    } else {
        Ok(Arc::new(SqliteStore::open(database_url).await?))
    }
}
