//! Users and their devices: registration with the first (certified) device,
//! single-use link tokens, pending devices a user's identity key certifies,
//! and removal. Each device's identity keys are also rows of `user_keys`.
use crate::db::{Backend, Tx, read, run};
use crate::records::{CertificateRecord, Certification, DeviceRecord, NewIdentity};
use crate::{StoreError, StoreResult};
use atlas_proto::api::DeviceKeys;
use atlas_proto::{DeviceId, UserId};
use time::OffsetDateTime;

/// The account part of the store.
#[async_trait::async_trait]
pub trait AccountStore: Send + Sync {
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
}

/// A stored user id, checked again on the way out.
pub(crate) fn user(value: String) -> StoreResult<UserId> {
    UserId::new(value).map_err(|e| StoreError::Corrupt(format!("user id: {e}")))
}

/// A stored device id, checked again on the way out.
pub(crate) fn device(value: String) -> StoreResult<DeviceId> {
    DeviceId::new(value).map_err(|e| StoreError::Corrupt(format!("device id: {e}")))
}

/// Whether a user exists.
pub(crate) async fn user_exists(tx: &mut Tx, user_id: &str) -> StoreResult<bool> {
    let found: Option<(i64,)> = run!(
        tx,
        sqlx::query_as("SELECT CAST(1 AS BIGINT) FROM users WHERE user_id = $1").bind(user_id),
        fetch_optional
    )?;
    Ok(found.is_some())
}

/// Fails with `UnknownDevice` unless the device may publish keys: active, or
/// pending certification (so its keys are there the moment it is certified;
/// nobody claims them before).
pub(crate) async fn registered_device(
    tx: &mut Tx,
    user_id: &str,
    device_id: &str,
) -> StoreResult<()> {
    let found: Option<(i64,)> = run!(
        tx,
        sqlx::query_as(
            "SELECT CAST(1 AS BIGINT) FROM devices WHERE user_id = $1 AND device_id = $2 \
             AND status IN ('active', 'pending')",
        )
        .bind(user_id)
        .bind(device_id),
        fetch_optional
    )?;
    found.map(|_| ()).ok_or(StoreError::UnknownDevice)
}

/// Revokes a device's live refresh tokens.
pub(crate) async fn revoke_refresh_tokens(
    tx: &mut Tx,
    user_id: &str,
    device_id: &str,
    now: OffsetDateTime,
) -> StoreResult<u64> {
    Ok(run!(
        tx,
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 \
             WHERE user_id = $2 AND device_id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .bind(device_id),
        execute
    )?)
}

/// A device row with its key stock.
#[derive(sqlx::FromRow)]
struct DeviceRow {
    user_id: String,
    device_id: String,
    ed25519: String,
    curve25519: String,
    signature: String,
    status: String,
    created_at: OffsetDateTime,
    certificate: Option<String>,
    revocation: Option<String>,
    link_token_hash: Option<Vec<u8>>,
    link_proof: Option<String>,
    tokens_after: Option<i64>,
    otk: i64,
    fb: i64,
}

impl TryFrom<DeviceRow> for DeviceRecord {
    type Error = StoreError;

    fn try_from(r: DeviceRow) -> StoreResult<Self> {
        Ok(Self {
            user_id: user(r.user_id)?,
            keys: DeviceKeys {
                device_id: device(r.device_id)?,
                ed25519: r.ed25519,
                curve25519: r.curve25519,
                signature: r.signature,
            },
            status: atlas_proto::api::DeviceStatus::parse(&r.status)
                .ok_or_else(|| StoreError::Corrupt(format!("device status {}", r.status)))?,
            created_at: r.created_at,
            one_time_keys: r.otk.max(0) as u64,
            fallback_key: r.fb > 0,
            certificate: r.certificate,
            tokens_after: r.tokens_after,
            revocation: r.revocation,
            link_token_hash: r.link_token_hash,
            link_proof: r.link_proof,
        })
    }
}

/// A user's devices (one, if `device_id` is given), oldest first.
const DEVICE_ROWS: &str = "SELECT d.user_id, d.device_id, d.ed25519, d.curve25519, d.signature, \
       d.status, d.created_at, d.certificate, d.revocation, d.link_token_hash, d.link_proof, \
       d.tokens_after, \
       (SELECT COUNT(*) FROM user_keys k WHERE k.user_id = d.user_id AND k.device_id = d.device_id \
          AND k.key_type = 'one_time' AND k.status = 'active') AS otk, \
       (SELECT COUNT(*) FROM user_keys k WHERE k.user_id = d.user_id AND k.device_id = d.device_id \
          AND k.key_type = 'fallback' AND k.status = 'active') AS fb \
     FROM devices d WHERE d.user_id = $1 AND ($2 IS NULL OR d.device_id = $2) \
     ORDER BY d.created_at, d.device_id";

/// [`DEVICE_ROWS`] inside a transaction.
pub(crate) async fn device_rows(
    tx: &mut Tx,
    user_id: &str,
    device_id: Option<&str>,
) -> StoreResult<Vec<DeviceRecord>> {
    let rows: Vec<DeviceRow> = run!(
        tx,
        sqlx::query_as(DEVICE_ROWS).bind(user_id).bind(device_id),
        fetch_all
    )?;
    rows.into_iter().map(DeviceRecord::try_from).collect()
}

/// Inserts a device and its identity keys; `DeviceExists` if the id is taken.
async fn insert_device(
    tx: &mut Tx,
    user_id: &UserId,
    keys: &DeviceKeys,
    certification: &Certification<'_>,
    now: OffsetDateTime,
) -> StoreResult<()> {
    let (status, certificate, link_hash, link_proof) = match certification {
        Certification::Certified(c) => ("active", Some(*c), None, None),
        Certification::Linked { token_hash, proof } => {
            ("pending", None, Some(*token_hash), Some(*proof))
        }
    };
    let inserted = run!(
        tx,
        sqlx::query(
            "INSERT INTO devices (user_id, device_id, ed25519, curve25519, signature, status, \
               created_at, next_seq, certificate, link_token_hash, link_proof) \
             VALUES ($1, $2, $3, $4, $5, $7, $6, 0, $8, $9, $10) ON CONFLICT DO NOTHING",
        )
        .bind(user_id.as_str())
        .bind(keys.device_id.as_str())
        .bind(&keys.ed25519)
        .bind(&keys.curve25519)
        .bind(&keys.signature)
        .bind(now)
        .bind(status)
        .bind(certificate)
        .bind(link_hash)
        .bind(link_proof),
        execute
    )?;
    if inserted == 0 {
        return Err(StoreError::DeviceExists);
    }
    for (kind, key) in [("ed25519", &keys.ed25519), ("curve25519", &keys.curve25519)] {
        run!(
            tx,
            sqlx::query(
                "INSERT INTO user_keys (user_id, device_id, key_id, key_type, public_key, status, \
                   last_rotated, created_at) \
                 VALUES ($1, $2, $3, $4, $5, 'active', $6, $6)",
            )
            .bind(user_id.as_str())
            .bind(keys.device_id.as_str())
            .bind(format!("{kind}:{}", keys.device_id))
            .bind(kind)
            .bind(key)
            .bind(now),
            execute
        )?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl<T: Backend> AccountStore for T {
    async fn create_user(
        &self,
        user_id: &UserId,
        device: &DeviceKeys,
        identity: &NewIdentity<'_>,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let mut tx = self.db().begin().await?;
        let inserted = run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO users (user_id, created_at, identity_key) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(user_id.as_str())
            .bind(now)
            .bind(identity.identity_key),
            execute
        )?;
        if inserted == 0 {
            return Err(StoreError::UserExists);
        }
        let certified = Certification::Certified(identity.certificate);
        insert_device(&mut tx, user_id, device, &certified, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_link_token(
        &self,
        user_id: &UserId,
        token_hash: &[u8],
        expires_at: OffsetDateTime,
    ) -> StoreResult<()> {
        let mut tx = self.db().begin().await?;
        run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO link_tokens (token_hash, user_id, expires_at) VALUES ($1, $2, $3)"
            )
            .bind(token_hash)
            .bind(user_id.as_str())
            .bind(expires_at),
            execute
        )?;
        tx.commit().await?;
        Ok(())
    }

    async fn add_device(
        &self,
        user_id: &UserId,
        device: &DeviceKeys,
        link_token_hash: &[u8],
        link_proof: &str,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let mut tx = self.db().begin().await?;
        let used: Option<(OffsetDateTime,)> = run!(
            &mut tx,
            sqlx::query_as(
                "UPDATE link_tokens SET used_at = $1 \
                 WHERE token_hash = $2 AND user_id = $3 AND used_at IS NULL RETURNING expires_at",
            )
            .bind(now)
            .bind(link_token_hash)
            .bind(user_id.as_str()),
            fetch_optional
        )?;
        match used {
            Some((expires_at,)) if expires_at > now => {}
            _ => return Err(StoreError::InvalidLinkToken),
        }
        let linked = Certification::Linked {
            token_hash: link_token_hash,
            proof: link_proof,
        };
        insert_device(&mut tx, user_id, device, &linked, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn identity_key(&self, user_id: &UserId) -> StoreResult<Option<String>> {
        let key: Option<(Option<String>,)> = read!(
            self.db(),
            sqlx::query_as("SELECT identity_key FROM users WHERE user_id = $1")
                .bind(user_id.as_str()),
            fetch_optional
        )?;
        key.map(|(k,)| k).ok_or(StoreError::UnknownUser)
    }

    async fn certify_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        certificate: &str,
        identity_transfer: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.db().begin().await?;
        let done = run!(
            &mut tx,
            sqlx::query(
                "UPDATE devices SET status = 'active', certificate = $1, identity_transfer = $2, \
                   link_proof = NULL \
                 WHERE user_id = $3 AND device_id = $4 AND status = 'pending'",
            )
            .bind(certificate)
            .bind(identity_transfer)
            .bind(user_id.as_str())
            .bind(device_id.as_str()),
            execute
        )?;
        tx.commit().await?;
        Ok(done > 0)
    }

    async fn claim_certificate(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> StoreResult<Option<CertificateRecord>> {
        let mut tx = self.db().begin().await?;
        let sql = format!(
            "SELECT status, certificate, identity_transfer FROM devices \
             WHERE user_id = $1 AND device_id = $2{}",
            tx.dialect().for_update()
        );
        let row: Option<(String, Option<String>, Option<String>)> = run!(
            &mut tx,
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(user_id.as_str())
                .bind(device_id.as_str()),
            fetch_optional
        )?;
        let Some((status, certificate, identity_transfer)) = row else {
            return Ok(None);
        };
        if identity_transfer.is_some() {
            // Handed out once: the sealed identity key does not stay on the server.
            run!(
                &mut tx,
                sqlx::query(
                    "UPDATE devices SET identity_transfer = NULL WHERE user_id = $1 AND device_id = $2",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str()),
                execute
            )?;
        }
        tx.commit().await?;
        Ok(Some(CertificateRecord {
            status,
            certificate,
            identity_transfer,
        }))
    }

    async fn revoke_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        revocation: Option<&str>,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let (user, device) = (user_id.as_str(), device_id.as_str());
        let mut tx = self.db().begin().await?;
        let done = run!(
            &mut tx,
            sqlx::query(
                "UPDATE devices SET status = 'revoked', revocation = $1, revoked_at = $2, \
                   identity_transfer = NULL, link_proof = NULL \
                 WHERE user_id = $3 AND device_id = $4 AND status <> 'revoked'",
            )
            .bind(revocation)
            .bind(now)
            .bind(user)
            .bind(device),
            execute
        )?;
        if done == 0 {
            return Ok(false);
        }
        // Its prekeys are no longer handed out, its refresh tokens no longer accepted.
        run!(
            &mut tx,
            sqlx::query(
                "UPDATE user_keys SET status = 'revoked' WHERE user_id = $1 AND device_id = $2 \
                 AND status = 'active' AND key_type IN ('one_time', 'fallback')",
            )
            .bind(user)
            .bind(device),
            execute
        )?;
        revoke_refresh_tokens(&mut tx, user, device, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> StoreResult<Option<DeviceRecord>> {
        let rows: Vec<DeviceRow> = read!(
            self.db(),
            sqlx::query_as(DEVICE_ROWS)
                .bind(user_id.as_str())
                .bind(Some(device_id.as_str())),
            fetch_all
        )?;
        rows.into_iter()
            .next()
            .map(DeviceRecord::try_from)
            .transpose()
    }

    async fn devices(&self, user_id: &UserId) -> StoreResult<Vec<DeviceRecord>> {
        let rows: Vec<DeviceRow> = read!(
            self.db(),
            sqlx::query_as(DEVICE_ROWS)
                .bind(user_id.as_str())
                .bind(None::<&str>),
            fetch_all
        )?;
        if rows.is_empty() {
            let known: Option<(i64,)> = read!(
                self.db(),
                sqlx::query_as("SELECT CAST(1 AS BIGINT) FROM users WHERE user_id = $1")
                    .bind(user_id.as_str()),
                fetch_optional
            )?;
            if known.is_none() {
                return Err(StoreError::UnknownUser);
            }
        }
        rows.into_iter().map(DeviceRecord::try_from).collect()
    }
}
