//! Olm prekeys: one-time keys handed out at most once (also under concurrent
//! claims), and the fallback key, whose rotation keeps the old one as
//! `rotated` for in-flight messages.
use crate::accounts::{device_rows, registered_device, user_exists};
use crate::db::{Backend, Tx, run};
use crate::records::{ClaimKind, ClaimedDeviceRecord};
use crate::{StoreError, StoreResult};
use atlas_proto::api::{ClaimedKey, KeyCounts, KeysUploadRequest};
use atlas_proto::{DeviceId, UserId};
use time::OffsetDateTime;

/// The prekey part of the store.
#[async_trait::async_trait]
pub trait PrekeyStore: Send + Sync {
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
}

/// Counts a device's active one-time keys and fallback keys.
const STOCK: &str = "SELECT \
    (SELECT COUNT(*) FROM user_keys WHERE user_id = $1 AND device_id = $2 \
       AND key_type = 'one_time' AND status = 'active'), \
    (SELECT COUNT(*) FROM user_keys WHERE user_id = $1 AND device_id = $2 \
       AND key_type = 'fallback' AND status = 'active')";

fn counts((one_time, fallback): (i64, i64)) -> KeyCounts {
    KeyCounts {
        one_time_keys: one_time.max(0) as u64,
        fallback_key: fallback > 0,
    }
}

/// Hands out the device's oldest unclaimed one-time key, if it has one.
async fn claim_one_time(
    tx: &mut Tx,
    user: &str,
    device: &str,
    now: OffsetDateTime,
) -> StoreResult<Option<ClaimedKey>> {
    // Concurrent claimers on PostgreSQL skip a row another holds and take the next.
    let sql = format!(
        "UPDATE user_keys SET status = 'consumed', consumed_at = $1 \
         WHERE user_id = $2 AND device_id = $3 AND status = 'active' AND key_type = 'one_time' \
           AND key_id = ( \
             SELECT key_id FROM user_keys WHERE user_id = $2 AND device_id = $3 \
               AND key_type = 'one_time' AND status = 'active' \
             ORDER BY created_at, key_id LIMIT 1{}) \
         RETURNING key_id, public_key",
        tx.dialect().skip_locked()
    );
    let row: Option<(String, String)> = run!(
        tx,
        sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(now)
            .bind(user)
            .bind(device),
        fetch_optional
    )?;
    Ok(row.map(|(key_id, key)| ClaimedKey {
        key_id,
        key,
        fallback: false,
    }))
}

/// The device's newest active fallback key.
async fn fallback(tx: &mut Tx, user: &str, device: &str) -> StoreResult<Option<ClaimedKey>> {
    let row: Option<(String, String)> = run!(
        tx,
        sqlx::query_as(
            "SELECT key_id, public_key FROM user_keys WHERE user_id = $1 AND device_id = $2 \
             AND key_type = 'fallback' AND status = 'active' ORDER BY created_at DESC LIMIT 1",
        )
        .bind(user)
        .bind(device),
        fetch_optional
    )?;
    Ok(row.map(|(key_id, key)| ClaimedKey {
        key_id,
        key,
        fallback: true,
    }))
}

#[async_trait::async_trait]
impl<T: Backend> PrekeyStore for T {
    async fn upload_keys(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        keys: &KeysUploadRequest,
        now: OffsetDateTime,
    ) -> StoreResult<KeyCounts> {
        let (user, device) = (user_id.as_str(), device_id.as_str());
        let mut tx = self.db().begin().await?;
        registered_device(&mut tx, user, device).await?;
        for key in &keys.one_time_keys {
            run!(
                &mut tx,
                sqlx::query(
                    "INSERT INTO user_keys (user_id, device_id, key_id, key_type, public_key, status, \
                       created_at) \
                     VALUES ($1, $2, $3, 'one_time', $4, 'active', $5) ON CONFLICT DO NOTHING",
                )
                .bind(user)
                .bind(device)
                .bind(&key.key_id)
                .bind(&key.key)
                .bind(now),
                execute
            )?;
        }
        if let Some(fallback) = &keys.fallback_key {
            run!(
                &mut tx,
                sqlx::query(
                    "UPDATE user_keys SET status = 'rotated', last_rotated = $1 \
                     WHERE user_id = $2 AND device_id = $3 AND key_type = 'fallback' \
                       AND status = 'active' AND key_id <> $4",
                )
                .bind(now)
                .bind(user)
                .bind(device)
                .bind(&fallback.key_id),
                execute
            )?;
            run!(
                &mut tx,
                sqlx::query(
                    "INSERT INTO user_keys (user_id, device_id, key_id, key_type, public_key, status, \
                       last_rotated, created_at) \
                     VALUES ($1, $2, $3, 'fallback', $4, 'active', $5, $5) ON CONFLICT DO NOTHING",
                )
                .bind(user)
                .bind(device)
                .bind(&fallback.key_id)
                .bind(&fallback.key)
                .bind(now),
                execute
            )?;
        }
        let stock = run!(
            &mut tx,
            sqlx::query_as(STOCK).bind(user).bind(device),
            fetch_one
        )?;
        tx.commit().await?;
        Ok(counts(stock))
    }

    async fn key_counts(&self, user_id: &UserId, device_id: &DeviceId) -> StoreResult<KeyCounts> {
        let stock = crate::db::read!(
            self.db(),
            sqlx::query_as(STOCK)
                .bind(user_id.as_str())
                .bind(device_id.as_str()),
            fetch_one
        )?;
        Ok(counts(stock))
    }

    async fn claim_keys(
        &self,
        user_id: &UserId,
        only: &[DeviceId],
        kind: ClaimKind,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<ClaimedDeviceRecord>> {
        let user = user_id.as_str();
        let mut tx = self.db().begin().await?;
        let devices = device_rows(&mut tx, user, None).await?;
        if devices.is_empty() && !user_exists(&mut tx, user).await? {
            return Err(StoreError::UnknownUser);
        }
        let mut out = Vec::new();
        for d in devices {
            if d.status != atlas_proto::api::DeviceStatus::Active
                || !(only.is_empty() || only.contains(&d.keys.device_id))
            {
                continue;
            }
            let device = d.keys.device_id.as_str();
            let one_time = match kind {
                ClaimKind::FallbackOnly => None,
                ClaimKind::OneTimeFirst => claim_one_time(&mut tx, user, device, now).await?,
            };
            let key = match one_time {
                Some(key) => Some(key),
                None => fallback(&mut tx, user, device).await?,
            };
            out.push(ClaimedDeviceRecord { keys: d.keys, key });
        }
        tx.commit().await?;
        Ok(out)
    }
}
