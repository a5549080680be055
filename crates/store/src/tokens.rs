//! Refresh tokens (hashed, rotated on use, one family per device login) and
//! operator tokens (hashed, scoped, expiring).
use crate::StoreResult;
use crate::accounts::{device, user};
use crate::db::{Backend, read, run};
use crate::records::{OperatorTokenRecord, RefreshTokenRecord, RefreshUse};
use atlas_proto::{DeviceId, UserId};
use time::OffsetDateTime;

/// The refresh-token part of the store.
#[async_trait::async_trait]
pub trait RefreshTokenStore: Send + Sync {
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
}

/// The operator-token part of the store.
#[async_trait::async_trait]
pub trait OperatorTokenStore: Send + Sync {
    /// Stores a new operator token (hashed).
    async fn create_operator_token(&self, token: &OperatorTokenRecord) -> StoreResult<()>;
    /// The unrevoked operator token with this hash.
    async fn operator_token(&self, token_hash: &[u8]) -> StoreResult<Option<OperatorTokenRecord>>;
    /// Revokes an operator token; false if there was no such unrevoked token.
    async fn revoke_operator_token(&self, token_id: &str, now: OffsetDateTime)
    -> StoreResult<bool>;
    /// Operator tokens ever created (revoked and expired ones too: rows stay),
    /// and the newest one's id, label and creation time.
    async fn operator_tokens_created(
        &self,
    ) -> StoreResult<(u64, Option<(String, String, OffsetDateTime)>)>;
}

/// A refresh token row and whether it was spent (used or revoked).
type RefreshRow = (String, String, String, String, OffsetDateTime, bool);

#[async_trait::async_trait]
impl<T: Backend> RefreshTokenStore for T {
    async fn insert_refresh_token(&self, t: &RefreshTokenRecord) -> StoreResult<()> {
        let mut tx = self.db().begin().await?;
        run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, user_id, device_id, jkt, family_id, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&t.token_hash)
            .bind(t.user_id.as_str())
            .bind(t.device_id.as_str())
            .bind(&t.jkt)
            .bind(&t.family_id)
            .bind(t.expires_at),
            execute
        )?;
        tx.commit().await?;
        Ok(())
    }

    async fn use_refresh_token(
        &self,
        token_hash: &[u8],
        now: OffsetDateTime,
    ) -> StoreResult<RefreshUse> {
        let mut tx = self.db().begin().await?;
        let sql = format!(
            "SELECT user_id, device_id, jkt, family_id, expires_at, \
               used_at IS NOT NULL OR revoked_at IS NOT NULL AS spent \
             FROM refresh_tokens WHERE token_hash = $1{}",
            tx.dialect().for_update()
        );
        let row: Option<RefreshRow> = run!(
            &mut tx,
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(token_hash),
            fetch_optional
        )?;
        let Some((user_id, device_id, jkt, family_id, expires_at, spent)) = row else {
            return Ok(RefreshUse::Invalid);
        };
        let record = RefreshTokenRecord {
            token_hash: token_hash.to_vec(),
            user_id: user(user_id)?,
            device_id: device(device_id)?,
            jkt,
            family_id,
            expires_at,
        };
        if spent {
            run!(
                &mut tx,
                sqlx::query(
                    "UPDATE refresh_tokens SET revoked_at = $1 \
                     WHERE family_id = $2 AND family_id <> '' AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(&record.family_id),
                execute
            )?;
            tx.commit().await?;
            return Ok(RefreshUse::Replayed {
                family_id: record.family_id,
                device_id: record.device_id,
            });
        }
        if record.expires_at <= now {
            return Ok(RefreshUse::Invalid);
        }
        run!(
            &mut tx,
            sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2")
                .bind(now)
                .bind(token_hash),
            execute
        )?;
        tx.commit().await?;
        Ok(RefreshUse::Fresh(record))
    }

    async fn revoke_refresh_tokens(
        &self,
        device: Option<(&UserId, &DeviceId)>,
        now: OffsetDateTime,
    ) -> StoreResult<u64> {
        let mut tx = self.db().begin().await?;
        let done = match device {
            Some((user, device)) => run!(
                &mut tx,
                sqlx::query(
                    "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND device_id = $3 \
                     AND used_at IS NULL AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(user.as_str())
                .bind(device.as_str()),
                execute
            )?,
            None => run!(
                &mut tx,
                sqlx::query(
                    "UPDATE refresh_tokens SET revoked_at = $1 \
                     WHERE used_at IS NULL AND revoked_at IS NULL",
                )
                .bind(now),
                execute
            )?,
        };
        tx.commit().await?;
        Ok(done)
    }
}

#[async_trait::async_trait]
impl<T: Backend> OperatorTokenStore for T {
    async fn create_operator_token(&self, t: &OperatorTokenRecord) -> StoreResult<()> {
        let mut tx = self.db().begin().await?;
        run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO operator_tokens (token_id, token_hash, scopes, label, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&t.token_id)
            .bind(&t.token_hash)
            .bind(t.scopes.join(" "))
            .bind(&t.label)
            .bind(t.created_at)
            .bind(t.expires_at),
            execute
        )?;
        tx.commit().await?;
        Ok(())
    }

    async fn operator_token(&self, token_hash: &[u8]) -> StoreResult<Option<OperatorTokenRecord>> {
        let row: Option<(
            String,
            String,
            String,
            OffsetDateTime,
            Option<OffsetDateTime>,
        )> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT token_id, scopes, label, created_at, expires_at FROM operator_tokens \
                 WHERE token_hash = $1 AND revoked_at IS NULL",
            )
            .bind(token_hash),
            fetch_optional
        )?;
        Ok(row.map(
            |(token_id, scopes, label, created_at, expires_at)| OperatorTokenRecord {
                token_id,
                token_hash: token_hash.to_vec(),
                scopes: scopes.split_whitespace().map(str::to_owned).collect(),
                label,
                created_at,
                expires_at,
            },
        ))
    }

    async fn revoke_operator_token(
        &self,
        token_id: &str,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.db().begin().await?;
        let done = run!(
            &mut tx,
            sqlx::query(
                "UPDATE operator_tokens SET revoked_at = $1 WHERE token_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(token_id),
            execute
        )?;
        tx.commit().await?;
        Ok(done > 0)
    }

    async fn operator_tokens_created(
        &self,
    ) -> StoreResult<(u64, Option<(String, String, OffsetDateTime)>)> {
        let (count,): (i64,) = read!(
            self.db(),
            sqlx::query_as("SELECT COUNT(*) FROM operator_tokens"),
            fetch_one
        )?;
        let newest: Option<(String, String, OffsetDateTime)> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT token_id, label, created_at FROM operator_tokens \
                 ORDER BY created_at DESC, token_id DESC LIMIT 1"
            ),
            fetch_optional
        )?;
        Ok((count.max(0) as u64, newest))
    }
}
