//! Emergency revocation of identity keys and the re-keying that follows. A
//! revoked device is `rekey`: its user's identity key is cleared, its prekeys,
//! KeyPackages and refresh tokens die, and the peers of its known Olm sessions
//! are told to reset them, all in one transaction. It becomes `active` again
//! only by publishing new keys certified by a new identity key.
use crate::accounts::{device, revoke_refresh_tokens, user};
use crate::db::{Backend, run};
use crate::records::NewIdentity;
use crate::{StoreError, StoreResult};
use atlas_proto::api::DeviceKeys;
use atlas_proto::{DeviceId, UserId};
use time::OffsetDateTime;

/// A revoked user identity key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedUserIdentity {
    /// The user.
    pub user_id: UserId,
    /// Its identity key before (none if another revocation cleared it already).
    pub identity_key: Option<String>,
}

/// A device whose identity keys were revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedDevice {
    /// The user.
    pub user_id: UserId,
    /// The device.
    pub device_id: DeviceId,
    /// Its Ed25519 key before.
    pub ed25519: String,
    /// Its Curve25519 key before.
    pub curve25519: String,
}

/// What an identity revocation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevokedIdentities {
    /// The users whose identity key was cleared.
    pub users: Vec<RevokedUserIdentity>,
    /// The devices now `rekey`.
    pub devices: Vec<RevokedDevice>,
    /// Refresh tokens revoked.
    pub refresh_tokens: u64,
    /// Session resets queued for the peers of the revoked devices: (peer user,
    /// peer device, session id).
    pub sessions_reset: Vec<(String, String, String)>,
}

/// How a re-keying ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RekeyOutcome {
    /// The device is active with its new keys (and the user's new identity key).
    Done,
    /// The device is not waiting to re-key.
    NotRekeying,
    /// Another device of the user installed a different identity key first.
    IdentityReplaced,
}

/// The identity-revocation part of the store.
#[async_trait::async_trait]
pub trait IdentityStore: Send + Sync {
    /// Revokes the identity keys of `user_id`'s active devices (every user's
    /// with `None`) and the user identity keys that certify them.
    async fn revoke_identities(
        &self,
        user_id: Option<&UserId>,
        requested_by: &str,
        now: OffsetDateTime,
    ) -> StoreResult<RevokedIdentities>;
    /// Installs a `rekey` device's new keys and, unless another device of the
    /// user did first, the user's new identity key.
    async fn rekey_device(
        &self,
        user_id: &UserId,
        keys: &DeviceKeys,
        identity: &NewIdentity<'_>,
        now: OffsetDateTime,
    ) -> StoreResult<RekeyOutcome>;
    /// Devices told to re-key that have not yet.
    async fn devices_awaiting_rekey(&self) -> StoreResult<u64>;
}

/// One user's rows when `$1` names one, every user's when it is NULL: one
/// statement for both, and `COALESCE` types the parameter on PostgreSQL.
const USER_FILTER: &str = "COALESCE($1, user_id) = user_id";

#[async_trait::async_trait]
impl<T: Backend> IdentityStore for T {
    async fn revoke_identities(
        &self,
        user_id: Option<&UserId>,
        requested_by: &str,
        now: OffsetDateTime,
    ) -> StoreResult<RevokedIdentities> {
        let only = user_id.map(UserId::as_str);
        let mut tx = self.db().begin().await?;
        if let Some(one) = only {
            let known: Option<(i64,)> = run!(
                &mut tx,
                sqlx::query_as("SELECT CAST(1 AS BIGINT) FROM users WHERE user_id = $1").bind(one),
                fetch_optional
            )?;
            if known.is_none() {
                return Err(StoreError::UnknownUser);
            }
        }
        let sql = format!(
            "UPDATE devices SET status = 'rekey', tokens_after = $2 \
             WHERE status = 'active' AND {USER_FILTER} \
             RETURNING user_id, device_id, ed25519, curve25519"
        );
        let rows: Vec<(String, String, String, String)> = run!(
            &mut tx,
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(only)
                .bind(now.unix_timestamp()),
            fetch_all
        )?;
        let mut out = RevokedIdentities::default();
        for (u, d, ed25519, curve25519) in rows {
            out.devices.push(RevokedDevice {
                user_id: user(u)?,
                device_id: device(d)?,
                ed25519,
                curve25519,
            });
        }
        out.devices
            .sort_by(|a, b| (&a.user_id, &a.device_id).cmp(&(&b.user_id, &b.device_id)));
        let mut users: Vec<&UserId> = out.devices.iter().map(|d| &d.user_id).collect();
        users.dedup();
        for u in users {
            let (key,): (Option<String>,) = run!(
                &mut tx,
                sqlx::query_as("SELECT identity_key FROM users WHERE user_id = $1")
                    .bind(u.as_str()),
                fetch_one
            )?;
            out.users.push(RevokedUserIdentity {
                user_id: u.clone(),
                identity_key: key,
            });
        }
        // Every user with a revoked device loses its identity key: contacts
        // cannot start sessions until a device installs a new one.
        let rekeying =
            format!("(SELECT user_id FROM devices WHERE status = 'rekey' AND {USER_FILTER})");
        let statements = [
            format!("UPDATE users SET identity_key = NULL WHERE user_id IN {rekeying}"),
            format!(
                "UPDATE user_keys SET status = 'revoked' WHERE status = 'active' AND {USER_FILTER} \
                 AND EXISTS (SELECT 1 FROM devices d WHERE d.user_id = user_keys.user_id \
                   AND d.device_id = user_keys.device_id AND d.status = 'rekey')"
            ),
            format!(
                "UPDATE mls_key_packages SET status = 'revoked' WHERE status = 'active' AND {USER_FILTER} \
                 AND EXISTS (SELECT 1 FROM devices d WHERE d.user_id = mls_key_packages.user_id \
                   AND d.device_id = mls_key_packages.device_id AND d.status = 'rekey')"
            ),
        ];
        for sql in &statements {
            run!(
                &mut tx,
                sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(only),
                execute
            )?;
        }
        let sql = format!(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE revoked_at IS NULL AND {USER_FILTER} \
             AND EXISTS (SELECT 1 FROM devices d WHERE d.user_id = refresh_tokens.user_id \
               AND d.device_id = refresh_tokens.device_id AND d.status = 'rekey')"
        );
        out.refresh_tokens = run!(
            &mut tx,
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(only)
                .bind(now),
            execute
        )?;
        // The other end of every session a revoked device had: its ratchet may
        // be in the attacker's hands, so the peer must not encrypt on it again.
        for (me, peer) in [
            (
                ("recipient_id", "recipient_device_id"),
                ("sender_id", "sender_device_id"),
            ),
            (
                ("sender_id", "sender_device_id"),
                ("recipient_id", "recipient_device_id"),
            ),
        ] {
            let sql = format!(
                "INSERT INTO olm_session_resets (session_id, user_id, device_id, peer_user_id, \
                   peer_device_id, requested_by, reset_at, seen_at) \
                 SELECT s.session_id, s.pu, s.pd, s.mu, s.md, $2, $3, NULL FROM ( \
                   SELECT DISTINCT m.session_id, m.{pu} AS pu, m.{pd} AS pd, m.{mu} AS mu, \
                     m.{md} AS md \
                   FROM messages m JOIN devices d \
                     ON d.user_id = m.{mu} AND d.device_id = m.{md} AND d.status = 'rekey' \
                   WHERE m.session_id IS NOT NULL AND COALESCE($1, d.user_id) = d.user_id) s \
                 WHERE true \
                 ON CONFLICT (session_id, user_id, device_id) \
                 DO UPDATE SET requested_by = excluded.requested_by, reset_at = excluded.reset_at, \
                   seen_at = NULL \
                 RETURNING user_id, device_id, session_id",
                mu = me.0,
                md = me.1,
                pu = peer.0,
                pd = peer.1,
            );
            let reset: Vec<(String, String, String)> = run!(
                &mut tx,
                sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(only)
                    .bind(requested_by)
                    .bind(now),
                fetch_all
            )?;
            out.sessions_reset.extend(reset);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn rekey_device(
        &self,
        user_id: &UserId,
        keys: &DeviceKeys,
        identity: &NewIdentity<'_>,
        now: OffsetDateTime,
    ) -> StoreResult<RekeyOutcome> {
        let (u, d) = (user_id.as_str(), keys.device_id.as_str());
        let mut tx = self.db().begin().await?;
        let sql = format!(
            "SELECT status FROM devices WHERE user_id = $1 AND device_id = $2{}",
            tx.dialect().for_update()
        );
        let status: Option<(String,)> = run!(
            &mut tx,
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(u)
                .bind(d),
            fetch_optional
        )?;
        if status.as_ref().map(|(s,)| s.as_str()) != Some("rekey") {
            return Ok(RekeyOutcome::NotRekeying);
        }
        // The first device to re-key installs the user's new identity key; a
        // second may only present the same one.
        let installed = run!(
            &mut tx,
            sqlx::query(
                "UPDATE users SET identity_key = $1 WHERE user_id = $2 \
                 AND (identity_key IS NULL OR identity_key = $1)"
            )
            .bind(identity.identity_key)
            .bind(u),
            execute
        )?;
        if installed == 0 {
            return Ok(RekeyOutcome::IdentityReplaced);
        }
        run!(
            &mut tx,
            sqlx::query(
                "UPDATE devices SET status = 'active', ed25519 = $1, curve25519 = $2, \
                   signature = $3, certificate = $4, tokens_after = $7 \
                 WHERE user_id = $5 AND device_id = $6",
            )
            .bind(&keys.ed25519)
            .bind(&keys.curve25519)
            .bind(&keys.signature)
            .bind(identity.certificate)
            .bind(u)
            .bind(d)
            // Token times are whole seconds: one granted in this second, before
            // the re-key, must die too. The device signs in from the next.
            .bind(now.unix_timestamp() + 1),
            execute
        )?;
        // Refresh tokens issued while the device waited were granted to a
        // holder of the old key, which may not be this device: they die too.
        revoke_refresh_tokens(&mut tx, u, d, now).await?;
        // The old account's prekeys go: the new account numbers its keys from
        // the start again, and an old row would shadow a new key of its id.
        run!(
            &mut tx,
            sqlx::query(
                "DELETE FROM user_keys WHERE user_id = $1 AND device_id = $2 \
                 AND key_type IN ('one_time', 'fallback')",
            )
            .bind(u)
            .bind(d),
            execute
        )?;
        for (kind, key) in [("ed25519", &keys.ed25519), ("curve25519", &keys.curve25519)] {
            run!(
                &mut tx,
                sqlx::query(
                    "UPDATE user_keys SET public_key = $1, status = 'active', last_rotated = $2 \
                     WHERE user_id = $3 AND device_id = $4 AND key_type = $5",
                )
                .bind(key)
                .bind(now)
                .bind(u)
                .bind(d)
                .bind(kind),
                execute
            )?;
        }
        tx.commit().await?;
        Ok(RekeyOutcome::Done)
    }

    async fn devices_awaiting_rekey(&self) -> StoreResult<u64> {
        let (n,): (i64,) = crate::db::read!(
            self.db(),
            sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM devices WHERE status = 'rekey'"),
            fetch_one
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
