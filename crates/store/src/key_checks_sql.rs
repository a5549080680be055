//! [`crate::KeyStore`] in the SQL both backends share (see `sql.rs`).

/// Implements [`crate::KeyStore`] for a backend struct with `writer` and `reader` pools.
macro_rules! impl_key_store {
    ($store:ty, $db:ty) => {
        impl $store {
            fn user_key(row: &<$db as sqlx::Database>::Row) -> $crate::StoreResult<$crate::UserKeyRecord> {
                use sqlx::Row;
                Ok($crate::UserKeyRecord {
                    user_id: row.try_get("user_id")?,
                    device_id: row.try_get("device_id")?,
                    key_id: row.try_get("key_id")?,
                    key_type: row.try_get("key_type")?,
                    public_key: row.try_get("public_key")?,
                    status: row.try_get("status")?,
                    last_rotated: row.try_get("last_rotated")?,
                    created_at: row.try_get("created_at")?,
                    consumed_at: row.try_get("consumed_at")?,
                })
            }
        }

        #[async_trait::async_trait]
        impl $crate::KeyStore for $store {
            async fn device_public_keys(&self, user_id: &atlas_proto::UserId, device_id: &atlas_proto::DeviceId) -> $crate::StoreResult<Vec<$crate::UserKeyRecord>> {
                let rows = sqlx::query(
                    "SELECT * FROM user_keys WHERE user_id = $1 AND device_id = $2 AND status = 'active' \
                     UNION ALL \
                     SELECT * FROM (SELECT * FROM user_keys WHERE user_id = $1 AND device_id = $2 AND status <> 'active' \
                       ORDER BY created_at DESC LIMIT 500) AS older",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .fetch_all(&self.reader)
                .await?;
                rows.iter().map(Self::user_key).collect()
            }

            async fn key_by_public(&self, user_id: &str, device_id: &str, public_key: &str) -> $crate::StoreResult<Option<$crate::UserKeyRecord>> {
                let row = sqlx::query(
                    "SELECT * FROM user_keys WHERE user_id = $1 AND device_id = $2 AND public_key = $3 ORDER BY created_at DESC LIMIT 1",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(public_key)
                .fetch_optional(&self.reader)
                .await?;
                row.as_ref().map(Self::user_key).transpose()
            }

            async fn revoke_keys(&self, user_id: &atlas_proto::UserId, device_id: &atlas_proto::DeviceId, keys: &[(String, String)], now: time::OffsetDateTime) -> $crate::StoreResult<u64> {
                let mut tx = self.writer.begin().await?;
                let mut revoked = 0;
                for (key_type, key_id) in keys {
                    revoked += sqlx::query(
                        "UPDATE user_keys SET status = 'revoked', last_rotated = $4 \
                         WHERE user_id = $1 AND device_id = $2 AND key_id = $3 AND status = 'active' AND key_type = $5 \
                           AND key_type IN ('one_time', 'fallback')",
                    )
                    .bind(user_id.as_str())
                    .bind(device_id.as_str())
                    .bind(key_id)
                    .bind(now)
                    .bind(key_type)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
                Ok(revoked)
            }

            async fn record_key_check(&self, check: &$crate::KeyCheckRecord) -> $crate::StoreResult<()> {
                sqlx::query(
                    "INSERT INTO key_checks (user_id, device_id, checked_at, checked, mismatched, repaired) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (user_id, device_id) DO UPDATE SET checked_at = $3, checked = $4, mismatched = $5, repaired = $6",
                )
                .bind(&check.user_id)
                .bind(&check.device_id)
                .bind(check.checked_at)
                .bind(i64::try_from(check.checked).unwrap_or(i64::MAX))
                .bind(check.mismatched.join(" "))
                .bind(i64::try_from(check.repaired).unwrap_or(i64::MAX))
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn key_check(&self, user_id: &str, device_id: &str) -> $crate::StoreResult<Option<$crate::KeyCheckRecord>> {
                let row: Option<(time::OffsetDateTime, i64, String, i64)> = sqlx::query_as(
                    "SELECT checked_at, checked, mismatched, repaired FROM key_checks WHERE user_id = $1 AND device_id = $2",
                )
                .bind(user_id)
                .bind(device_id)
                .fetch_optional(&self.reader)
                .await?;
                Ok(row.map(|(checked_at, checked, mismatched, repaired)| $crate::KeyCheckRecord {
                    user_id: user_id.to_owned(),
                    device_id: device_id.to_owned(),
                    checked_at,
                    checked: checked.max(0) as u64,
                    mismatched: mismatched.split_whitespace().map(str::to_owned).collect(),
                    repaired: repaired.max(0) as u64,
                }))
            }
        }
    };
}

pub(crate) use impl_key_store;
