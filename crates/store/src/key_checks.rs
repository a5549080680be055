//! Storage behind prekey hygiene: a device's rows in `user_keys` (the table
//! the runbook queries), revocation of keys found corrupted, and the latest
//! key-consistency check of each device.
use crate::StoreResult;
use atlas_proto::{DeviceId, UserId};
use time::OffsetDateTime;

/// One row of `user_keys`.
#[derive(Debug, Clone, PartialEq)]
pub struct UserKeyRecord {
    /// Owner.
    pub user_id: String,
    /// Owning device.
    pub device_id: String,
    /// Key id (`ed25519:DEVICE`, `curve25519:DEVICE`, or the Olm key id).
    pub key_id: String,
    /// `ed25519`, `curve25519`, `one_time` or `fallback`.
    pub key_type: String,
    /// Public key, base64.
    pub public_key: String,
    /// `active`, `rotated`, `revoked` or `consumed`.
    pub status: String,
    /// Last rotation (identity and fallback keys).
    pub last_rotated: Option<OffsetDateTime>,
    /// Publication.
    pub created_at: OffsetDateTime,
    /// Hand-out to a sender (one-time keys).
    pub consumed_at: Option<OffsetDateTime>,
}

/// A device's latest key-consistency check.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyCheckRecord {
    /// The device.
    pub user_id: String,
    /// The device.
    pub device_id: String,
    /// When.
    pub checked_at: OffsetDateTime,
    /// Keys compared.
    pub checked: u64,
    /// Ids of stored keys the device did not publish as stored.
    pub mismatched: Vec<String>,
    /// How many of them were revoked.
    pub repaired: u64,
}

/// The prekey-hygiene part of the store.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync {
    /// A device's keys: every active one and the 500 newest others, newest first.
    async fn device_public_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> StoreResult<Vec<UserKeyRecord>>;
    /// The row of a device's key with this public value (which key a pre-key message used).
    async fn key_by_public(
        &self,
        user_id: &str,
        device_id: &str,
        public_key: &str,
    ) -> StoreResult<Option<UserKeyRecord>>;
    /// Marks active one-time and fallback keys `revoked`, so no sender gets
    /// them again; `keys` are `(key_type, key_id)` (the two kinds number their ids apart).
    async fn revoke_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        keys: &[(String, String)],
        now: OffsetDateTime,
    ) -> StoreResult<u64>;
    /// Replaces a device's latest check.
    async fn record_key_check(&self, check: &KeyCheckRecord) -> StoreResult<()>;
    /// A device's latest check.
    async fn key_check(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> StoreResult<Option<KeyCheckRecord>>;
}
