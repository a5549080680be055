//! Storage behind prekey hygiene: a device's rows in `user_keys` (the table
//! the runbook queries), revocation of keys found corrupted, and the latest
//! key-consistency check of each device.
use crate::StoreResult;
use crate::db::{Backend, read, run};
use atlas_proto::keys::{KeyStatus, KeyType};
use atlas_proto::{DeviceId, UserId};
use time::OffsetDateTime;

/// One row of `user_keys`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct UserKeyRecord {
    /// Owner.
    pub user_id: String,
    /// Owning device.
    pub device_id: String,
    /// Key id (`ed25519:DEVICE`, `curve25519:DEVICE`, or the Olm key id).
    pub key_id: String,
    /// The kind of key.
    #[sqlx(try_from = "String")]
    pub key_type: KeyType,
    /// Public key, base64.
    pub public_key: String,
    /// Where it is in its life.
    #[sqlx(try_from = "String")]
    pub status: KeyStatus,
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
        keys: &[(KeyType, String)],
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

/// The columns of [`UserKeyRecord`].
const KEY_COLUMNS: &str = "user_id, device_id, key_id, key_type, public_key, status, last_rotated, created_at, consumed_at";

#[async_trait::async_trait]
impl<T: Backend> KeyStore for T {
    async fn device_public_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> StoreResult<Vec<UserKeyRecord>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM user_keys WHERE user_id = $1 AND device_id = $2 AND status = 'active' \
             UNION ALL \
             SELECT * FROM (SELECT {KEY_COLUMNS} FROM user_keys \
               WHERE user_id = $1 AND device_id = $2 AND status <> 'active' \
               ORDER BY created_at DESC LIMIT 500) AS older"
        );
        Ok(read!(
            self.db(),
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(user_id.as_str())
                .bind(device_id.as_str()),
            fetch_all
        )?)
    }

    async fn key_by_public(
        &self,
        user_id: &str,
        device_id: &str,
        public_key: &str,
    ) -> StoreResult<Option<UserKeyRecord>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM user_keys WHERE user_id = $1 AND device_id = $2 AND public_key = $3 \
             ORDER BY created_at DESC LIMIT 1"
        );
        Ok(read!(
            self.db(),
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(user_id)
                .bind(device_id)
                .bind(public_key),
            fetch_optional
        )?)
    }

    async fn revoke_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        keys: &[(KeyType, String)],
        now: OffsetDateTime,
    ) -> StoreResult<u64> {
        let mut tx = self.db().begin().await?;
        let mut revoked = 0;
        for (key_type, key_id) in keys {
            revoked += run!(
                &mut tx,
                sqlx::query(
                    "UPDATE user_keys SET status = 'revoked', last_rotated = $4 \
                     WHERE user_id = $1 AND device_id = $2 AND key_id = $3 AND status = 'active' \
                       AND key_type = $5 AND key_type IN ('one_time', 'fallback')",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(key_id)
                .bind(now)
                .bind(key_type.as_str()),
                execute
            )?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    async fn record_key_check(&self, check: &KeyCheckRecord) -> StoreResult<()> {
        let mut tx = self.db().begin().await?;
        run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO key_checks (user_id, device_id, checked_at, checked, mismatched, repaired) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (user_id, device_id) DO UPDATE \
                 SET checked_at = $3, checked = $4, mismatched = $5, repaired = $6",
            )
            .bind(&check.user_id)
            .bind(&check.device_id)
            .bind(check.checked_at)
            .bind(i64::try_from(check.checked).unwrap_or(i64::MAX))
            .bind(check.mismatched.join(" "))
            .bind(i64::try_from(check.repaired).unwrap_or(i64::MAX)),
            execute
        )?;
        tx.commit().await?;
        Ok(())
    }

    async fn key_check(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> StoreResult<Option<KeyCheckRecord>> {
        let row: Option<(OffsetDateTime, i64, String, i64)> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT checked_at, checked, mismatched, repaired FROM key_checks \
                 WHERE user_id = $1 AND device_id = $2",
            )
            .bind(user_id)
            .bind(device_id),
            fetch_optional
        )?;
        Ok(row.map(
            |(checked_at, checked, mismatched, repaired)| KeyCheckRecord {
                user_id: user_id.to_owned(),
                device_id: device_id.to_owned(),
                checked_at,
                checked: checked.max(0) as u64,
                mismatched: mismatched.split_whitespace().map(str::to_owned).collect(),
                repaired: repaired.max(0) as u64,
            },
        ))
    }
}
