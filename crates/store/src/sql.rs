//! The SQL both backends share. SQLite and PostgreSQL accept the same `$N`
//! placeholders and, for these statements, the same dialect; the few
//! differences are macro parameters. Timestamps are compared in Rust, not in
//! SQL, because SQLite stores them as RFC 3339 text whose order is not numeric.

use crate::StoreError;
use atlas_proto::{DeviceId, UserId};

pub(crate) fn user(value: String) -> Result<UserId, StoreError> {
    UserId::new(value).map_err(|e| StoreError::Corrupt(format!("user id: {e}")))
}

pub(crate) fn device(value: String) -> Result<DeviceId, StoreError> {
    DeviceId::new(value).map_err(|e| StoreError::Corrupt(format!("device id: {e}")))
}

pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Statement sizes (sends per check, rows per insert). Batches are cut into
/// these sizes so that the database prepares a bounded set of statements once
/// and reuses them, instead of compiling one for every batch length. Every
/// size up to 16 is there, so a typical batch takes one statement per table:
/// under load each round trip to SQLite's worker thread costs more than the work.
pub(crate) const SIZES: [usize; 20] = [
    256, 128, 64, 32, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1,
];

/// Cuts `items` into chunks whose lengths are all in [`SIZES`].
pub(crate) fn chunks_of_known_size<T>(mut items: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    while !items.is_empty() {
        let size = SIZES
            .iter()
            .copied()
            .find(|s| *s <= items.len())
            .unwrap_or(1);
        let (chunk, rest) = items.split_at(size);
        out.push(chunk);
        items = rest;
    }
    out
}

/// Implements [`crate::Store`] for a backend struct with `writer` and `reader` pools.
macro_rules! impl_store {
    ($store:ty, $db:ty, backend = $backend:literal, skip_locked = $skip_locked:literal, lock_rows = $lock_rows:literal) => {
        type Conn = <$db as sqlx::Database>::Connection;

        impl $store {
            async fn insert_device(
                conn: &mut Conn,
                user_id: &atlas_proto::UserId,
                keys: &atlas_proto::api::DeviceKeys,
                certification: &$crate::Certification<'_>,
                now: time::OffsetDateTime,
            ) -> $crate::StoreResult<()> {
                let (status, certificate, link_hash, link_proof) = match certification {
                    $crate::Certification::Certified(c) => ("active", Some(*c), None, None),
                    $crate::Certification::Linked { token_hash, proof } => ("pending", None, Some(*token_hash), Some(*proof)),
                };
                let inserted = sqlx::query(
                    "INSERT INTO devices (user_id, device_id, ed25519, curve25519, signature, status, created_at, next_seq, \
                       certificate, link_token_hash, link_proof) \
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
                .bind(link_proof)
                .execute(&mut *conn)
                .await?;
                if inserted.rows_affected() == 0 {
                    return Err($crate::StoreError::DeviceExists);
                }
                for (kind, key) in [("ed25519", &keys.ed25519), ("curve25519", &keys.curve25519)] {
                    sqlx::query(
                        "INSERT INTO user_keys (user_id, device_id, key_id, key_type, public_key, status, last_rotated, created_at) \
                         VALUES ($1, $2, $3, $4, $5, 'active', $6, $6)",
                    )
                    .bind(user_id.as_str())
                    .bind(keys.device_id.as_str())
                    .bind(format!("{kind}:{}", keys.device_id))
                    .bind(kind)
                    .bind(key)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            }

            async fn counts(conn: &mut Conn, user_id: &str, device_id: &str) -> $crate::StoreResult<atlas_proto::api::KeyCounts> {
                use sqlx::Row;
                let row = sqlx::query(
                    "SELECT \
                       (SELECT COUNT(*) FROM user_keys WHERE user_id = $1 AND device_id = $2 AND key_type = 'one_time' AND status = 'active') AS otk, \
                       (SELECT COUNT(*) FROM user_keys WHERE user_id = $1 AND device_id = $2 AND key_type = 'fallback' AND status = 'active') AS fb",
                )
                .bind(user_id)
                .bind(device_id)
                .fetch_one(&mut *conn)
                .await?;
                Ok(atlas_proto::api::KeyCounts {
                    one_time_keys: row.try_get::<i64, _>("otk")?.max(0) as u64,
                    fallback_key: row.try_get::<i64, _>("fb")? > 0,
                })
            }

            async fn user_exists(conn: &mut Conn, user_id: &str) -> $crate::StoreResult<bool> {
                Ok(sqlx::query("SELECT 1 FROM users WHERE user_id = $1").bind(user_id).fetch_optional(&mut *conn).await?.is_some())
            }

            /// A device that may publish keys: active, or pending certification (so its
            /// keys are there the moment it is certified; nobody claims them before).
            async fn registered_device(conn: &mut Conn, user_id: &str, device_id: &str) -> $crate::StoreResult<()> {
                let found = sqlx::query("SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2 AND status IN ('active', 'pending')")
                    .bind(user_id)
                    .bind(device_id)
                    .fetch_optional(&mut *conn)
                    .await?;
                found.map(|_| ()).ok_or($crate::StoreError::UnknownDevice)
            }

            async fn device_rows(
                conn: &mut Conn,
                user_id: &str,
                device_id: Option<&str>,
            ) -> $crate::StoreResult<Vec<$crate::DeviceRecord>> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT d.user_id, d.device_id, d.ed25519, d.curve25519, d.signature, d.status, d.created_at, \
                       d.certificate, d.revocation, d.link_token_hash, d.link_proof, \
                       (SELECT COUNT(*) FROM user_keys k WHERE k.user_id = d.user_id AND k.device_id = d.device_id \
                          AND k.key_type = 'one_time' AND k.status = 'active') AS otk, \
                       (SELECT COUNT(*) FROM user_keys k WHERE k.user_id = d.user_id AND k.device_id = d.device_id \
                          AND k.key_type = 'fallback' AND k.status = 'active') AS fb \
                     FROM devices d WHERE d.user_id = $1 AND ($2 IS NULL OR d.device_id = $2) ORDER BY d.created_at, d.device_id",
                )
                .bind(user_id)
                .bind(device_id)
                .fetch_all(&mut *conn)
                .await?;
                rows.into_iter()
                    .map(|row| {
                        Ok($crate::DeviceRecord {
                            user_id: $crate::sql::user(row.try_get("user_id")?)?,
                            keys: atlas_proto::api::DeviceKeys {
                                device_id: $crate::sql::device(row.try_get("device_id")?)?,
                                ed25519: row.try_get("ed25519")?,
                                curve25519: row.try_get("curve25519")?,
                                signature: row.try_get("signature")?,
                            },
                            status: row.try_get("status")?,
                            created_at: row.try_get("created_at")?,
                            one_time_keys: row.try_get::<i64, _>("otk")?.max(0) as u64,
                            fallback_key: row.try_get::<i64, _>("fb")? > 0,
                            certificate: row.try_get("certificate")?,
                            revocation: row.try_get("revocation")?,
                            link_token_hash: row.try_get("link_token_hash")?,
                            link_proof: row.try_get("link_proof")?,
                        })
                    })
                    .collect()
            }

            async fn deliveries_of(conn: &mut Conn, message_id: &str) -> $crate::StoreResult<(time::OffsetDateTime, Vec<(atlas_proto::DeviceId, u64)>)> {
                use sqlx::Row;
                let rows = sqlx::query("SELECT recipient_device_id, seq, created_at FROM messages WHERE message_id = $1 ORDER BY recipient_device_id")
                    .bind(message_id)
                    .fetch_all(&mut *conn)
                    .await?;
                let mut accepted = time::OffsetDateTime::UNIX_EPOCH;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    accepted = row.try_get("created_at")?;
                    out.push(($crate::sql::device(row.try_get("recipient_device_id")?)?, row.try_get::<i64, _>("seq")? as u64));
                }
                Ok((accepted, out))
            }
        }

        impl $store {
            /// Inserts receipts in a few multi-row statements.
            async fn insert_receipts(conn: &mut Conn, receipts: &[&$crate::ReceiptRecord]) -> $crate::StoreResult<()> {
                for chunk in $crate::sql::chunks_of_known_size(receipts) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO receipts (receipt_id, message_id, receipt_type, device_id, sender_id, recipient_id, \
                         kid, jws, issued_at, expires_at, created_at) ",
                    );
                    insert.push_values(chunk, |mut row, r| {
                        row.push_bind(r.receipt_id.as_str())
                            .push_bind(r.message_id.as_str())
                            .push_bind(r.receipt_type.as_str())
                            .push_bind(r.device_id.as_ref().map_or("", |d| d.as_str()))
                            .push_bind(r.sender_id.as_str())
                            .push_bind(r.recipient_id.as_str())
                            .push_bind(r.kid.as_str())
                            .push_bind(r.jws.as_str())
                            .push_bind(r.issued_at)
                            .push_bind(r.expires_at)
                            .push_bind(r.issued_at);
                    });
                    insert.push(" ON CONFLICT DO NOTHING");
                    insert.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            fn key_state(row: &<$db as sqlx::Database>::Row) -> $crate::StoreResult<$crate::ServerKeyState> {
                use sqlx::Row;
                Ok($crate::ServerKeyState {
                    key: $crate::ServerKeyRecord {
                        kid: row.try_get("kid")?,
                        purpose: row.try_get("purpose")?,
                        alg: row.try_get("alg")?,
                        secret: row.try_get("secret")?,
                        created_at: row.try_get("created_at")?,
                    },
                    status: row.try_get("status")?,
                    retired_at: row.try_get("retired_at")?,
                    publish_until: row.try_get("publish_until")?,
                    revoked_at: row.try_get("revoked_at")?,
                })
            }

            async fn insert_server_key(conn: &mut Conn, key: &$crate::ServerKeyRecord) -> $crate::StoreResult<()> {
                sqlx::query(
                    "INSERT INTO server_keys (kid, purpose, alg, secret, status, created_at) VALUES ($1, $2, $3, $4, 'active', $5) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&key.kid)
                .bind(&key.purpose)
                .bind(&key.alg)
                .bind(&key.secret)
                .bind(key.created_at)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            /// The verdict on a send from its check rows; queries only in the rare cases
            /// (a retry needs the original's deliveries, no devices needs the user checked).
            async fn judge(tx: &mut Conn, m: &$crate::NewMessage, rows: Vec<$crate::records::CheckRow>) -> $crate::StoreResult<$crate::records::SendCheck> {
                let mut current = Vec::with_capacity(rows.len());
                let mut full = Vec::new();
                for (kind, value, hash, next_seq, queued) in rows {
                    if kind == "d" {
                        let device = $crate::sql::device(value)?;
                        if u64::try_from(queued).unwrap_or(0) >= m.queue_limit {
                            full.push(device.clone());
                        }
                        current.push((device, next_seq));
                        continue;
                    }
                    if hash.as_deref() != Some(m.request_hash.as_slice()) {
                        return Err($crate::StoreError::IdempotencyConflict);
                    }
                    let (accepted_at, deliveries) = Self::deliveries_of(tx, &value).await?;
                    return Ok($crate::records::SendCheck::Duplicate($crate::StoredSend { message_id: value, accepted_at, deliveries, duplicate: true }));
                }
                if current.is_empty() && !Self::user_exists(tx, m.recipient_id.as_str()).await? {
                    return Err($crate::StoreError::UnknownUser);
                }
                current.sort();
                let ids: Vec<atlas_proto::DeviceId> = current.iter().map(|(d, _)| d.clone()).collect();
                // Devices the sender does not trust (not certified by the recipient's identity key) get no copy.
                let required: Vec<atlas_proto::DeviceId> = ids.iter().filter(|d| !m.untrusted_devices.contains(d)).cloned().collect();
                if let Some(mismatch) = $crate::records::device_list_mismatch(&required, &m.envelopes).map(|mm| atlas_proto::api::DeviceListMismatch { current: ids.clone(), ..mm })
                    // A resend goes only to the devices that asked for it.
                    && !(m.resend_of.is_some() && mismatch.extra.is_empty())
                {
                    return Err($crate::StoreError::DeviceListMismatch(mismatch));
                }
                if let Some(device) = full.into_iter().find(|d| m.envelopes.iter().any(|e| e.device_id == *d)) {
                    return Err($crate::StoreError::QueueFull(device));
                }
                Ok($crate::records::SendCheck::Accept(current))
            }


        }

        #[async_trait::async_trait]
        impl $crate::Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> $crate::StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.reader).await?;
                Ok(())
            }

            async fn create_user(&self, user_id: &atlas_proto::UserId, device: &atlas_proto::api::DeviceKeys, identity: &$crate::NewIdentity<'_>, now: time::OffsetDateTime) -> $crate::StoreResult<()> {
                let mut tx = self.writer.begin().await?;
                let inserted = sqlx::query("INSERT INTO users (user_id, created_at, identity_key) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(user_id.as_str())
                    .bind(now)
                    .bind(identity.identity_key)
                    .execute(&mut *tx)
                    .await?;
                if inserted.rows_affected() == 0 {
                    return Err($crate::StoreError::UserExists);
                }
                Self::insert_device(&mut tx, user_id, device, &$crate::Certification::Certified(identity.certificate), now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn create_link_token(&self, user_id: &atlas_proto::UserId, token_hash: &[u8], expires_at: time::OffsetDateTime) -> $crate::StoreResult<()> {
                sqlx::query("INSERT INTO link_tokens (token_hash, user_id, expires_at) VALUES ($1, $2, $3)")
                    .bind(token_hash)
                    .bind(user_id.as_str())
                    .bind(expires_at)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn add_device(&self, user_id: &atlas_proto::UserId, device: &atlas_proto::api::DeviceKeys, link_token_hash: &[u8], link_proof: &str, now: time::OffsetDateTime) -> $crate::StoreResult<()> {
                use sqlx::Row;
                let mut tx = self.writer.begin().await?;
                let row = sqlx::query(
                    "UPDATE link_tokens SET used_at = $1 WHERE token_hash = $2 AND user_id = $3 AND used_at IS NULL RETURNING expires_at",
                )
                .bind(now)
                .bind(link_token_hash)
                .bind(user_id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                let expires_at: time::OffsetDateTime = match row {
                    Some(row) => row.try_get("expires_at")?,
                    None => return Err($crate::StoreError::InvalidLinkToken),
                };
                if expires_at <= now {
                    return Err($crate::StoreError::InvalidLinkToken);
                }
                let linked = $crate::Certification::Linked { token_hash: link_token_hash, proof: link_proof };
                Self::insert_device(&mut tx, user_id, device, &linked, now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn device(&self, user_id: &atlas_proto::UserId, device_id: &atlas_proto::DeviceId) -> $crate::StoreResult<Option<$crate::DeviceRecord>> {
                let mut conn = self.reader.acquire().await?;
                Ok(Self::device_rows(&mut conn, user_id.as_str(), Some(device_id.as_str())).await?.pop())
            }

            async fn devices(&self, user_id: &atlas_proto::UserId) -> $crate::StoreResult<Vec<$crate::DeviceRecord>> {
                let mut conn = self.reader.acquire().await?;
                let rows = Self::device_rows(&mut conn, user_id.as_str(), None).await?;
                if rows.is_empty() && !Self::user_exists(&mut conn, user_id.as_str()).await? {
                    return Err($crate::StoreError::UnknownUser);
                }
                Ok(rows)
            }

            async fn identity_key(&self, user_id: &atlas_proto::UserId) -> $crate::StoreResult<Option<String>> {
                let key: Option<Option<String>> = sqlx::query_scalar("SELECT identity_key FROM users WHERE user_id = $1")
                    .bind(user_id.as_str())
                    .fetch_optional(&self.reader)
                    .await?;
                key.ok_or($crate::StoreError::UnknownUser)
            }

            async fn certify_device(&self, user_id: &atlas_proto::UserId, device_id: &atlas_proto::DeviceId, certificate: &str, identity_transfer: &str) -> $crate::StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE devices SET status = 'active', certificate = $1, identity_transfer = $2, link_proof = NULL \
                     WHERE user_id = $3 AND device_id = $4 AND status = 'pending'",
                )
                .bind(certificate)
                .bind(identity_transfer)
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn claim_certificate(&self, user_id: &atlas_proto::UserId, device_id: &atlas_proto::DeviceId) -> $crate::StoreResult<Option<$crate::CertificateRecord>> {
                use sqlx::Row;
                let mut tx = self.writer.begin().await?;
                let row = sqlx::query(concat!(
                    "SELECT status, certificate, identity_transfer FROM devices WHERE user_id = $1 AND device_id = $2",
                    $lock_rows
                ))
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let record = $crate::CertificateRecord {
                    status: row.try_get("status")?,
                    certificate: row.try_get("certificate")?,
                    identity_transfer: row.try_get("identity_transfer")?,
                };
                if record.identity_transfer.is_some() {
                    // Handed out once: the sealed identity key does not stay on the server.
                    sqlx::query("UPDATE devices SET identity_transfer = NULL WHERE user_id = $1 AND device_id = $2")
                        .bind(user_id.as_str())
                        .bind(device_id.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(Some(record))
            }

            async fn revoke_device(&self, user_id: &atlas_proto::UserId, device_id: &atlas_proto::DeviceId, revocation: Option<&str>, now: time::OffsetDateTime) -> $crate::StoreResult<bool> {
                let mut tx = self.writer.begin().await?;
                let done = sqlx::query(
                    "UPDATE devices SET status = 'revoked', revocation = $1, revoked_at = $2, identity_transfer = NULL, link_proof = NULL \
                     WHERE user_id = $3 AND device_id = $4 AND status <> 'revoked'",
                )
                .bind(revocation)
                .bind(now)
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                // Its prekeys are no longer handed out, its refresh tokens no longer accepted.
                sqlx::query("UPDATE user_keys SET status = 'revoked' WHERE user_id = $1 AND device_id = $2 AND status = 'active' AND key_type IN ('one_time', 'fallback')")
                    .bind(user_id.as_str())
                    .bind(device_id.as_str())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND device_id = $3 AND revoked_at IS NULL")
                    .bind(now)
                    .bind(user_id.as_str())
                    .bind(device_id.as_str())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn upload_keys(
                &self,
                user_id: &atlas_proto::UserId,
                device_id: &atlas_proto::DeviceId,
                keys: &atlas_proto::api::KeysUploadRequest,
                now: time::OffsetDateTime,
            ) -> $crate::StoreResult<atlas_proto::api::KeyCounts> {
                let mut tx = self.writer.begin().await?;
                Self::registered_device(&mut tx, user_id.as_str(), device_id.as_str()).await?;
                for key in &keys.one_time_keys {
                    sqlx::query(
                        "INSERT INTO user_keys (user_id, device_id, key_id, key_type, public_key, status, created_at) \
                         VALUES ($1, $2, $3, 'one_time', $4, 'active', $5) ON CONFLICT DO NOTHING",
                    )
                    .bind(user_id.as_str())
                    .bind(device_id.as_str())
                    .bind(&key.key_id)
                    .bind(&key.key)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(fallback) = &keys.fallback_key {
                    sqlx::query(
                        "UPDATE user_keys SET status = 'rotated', last_rotated = $1 \
                         WHERE user_id = $2 AND device_id = $3 AND key_type = 'fallback' AND status = 'active' AND key_id <> $4",
                    )
                    .bind(now)
                    .bind(user_id.as_str())
                    .bind(device_id.as_str())
                    .bind(&fallback.key_id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO user_keys (user_id, device_id, key_id, key_type, public_key, status, last_rotated, created_at) \
                         VALUES ($1, $2, $3, 'fallback', $4, 'active', $5, $5) ON CONFLICT DO NOTHING",
                    )
                    .bind(user_id.as_str())
                    .bind(device_id.as_str())
                    .bind(&fallback.key_id)
                    .bind(&fallback.key)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                let counts = Self::counts(&mut tx, user_id.as_str(), device_id.as_str()).await?;
                tx.commit().await?;
                Ok(counts)
            }

            async fn key_counts(&self, user_id: &atlas_proto::UserId, device_id: &atlas_proto::DeviceId) -> $crate::StoreResult<atlas_proto::api::KeyCounts> {
                let mut conn = self.reader.acquire().await?;
                Self::counts(&mut conn, user_id.as_str(), device_id.as_str()).await
            }

            async fn claim_keys(&self, user_id: &atlas_proto::UserId, only: &[atlas_proto::DeviceId], kind: $crate::ClaimKind, now: time::OffsetDateTime) -> $crate::StoreResult<Vec<$crate::ClaimedDeviceRecord>> {
                use sqlx::Row;
                let mut tx = self.writer.begin().await?;
                let devices = Self::device_rows(&mut tx, user_id.as_str(), None).await?;
                if devices.is_empty() && !Self::user_exists(&mut tx, user_id.as_str()).await? {
                    return Err($crate::StoreError::UnknownUser);
                }
                let mut out = Vec::new();
                for device in devices.into_iter().filter(|d| d.status == "active" && (only.is_empty() || only.contains(&d.keys.device_id))) {
                    let did = device.keys.device_id.as_str();
                    let one_time = if kind == $crate::ClaimKind::FallbackOnly { None } else { sqlx::query(concat!(
                        "UPDATE user_keys SET status = 'consumed', consumed_at = $1 \
                         WHERE user_id = $2 AND device_id = $3 AND status = 'active' AND key_type = 'one_time' AND key_id = ( \
                           SELECT key_id FROM user_keys WHERE user_id = $2 AND device_id = $3 AND key_type = 'one_time' \
                           AND status = 'active' ORDER BY created_at, key_id LIMIT 1",
                        $skip_locked,
                        ") RETURNING key_id, public_key"
                    ))
                    .bind(now)
                    .bind(user_id.as_str())
                    .bind(did)
                    .fetch_optional(&mut *tx)
                    .await? };
                    let key = match one_time {
                        Some(row) => Some(atlas_proto::api::ClaimedKey { key_id: row.try_get("key_id")?, key: row.try_get("public_key")?, fallback: false }),
                        None => sqlx::query(
                            "SELECT key_id, public_key FROM user_keys WHERE user_id = $1 AND device_id = $2 \
                             AND key_type = 'fallback' AND status = 'active' ORDER BY created_at DESC LIMIT 1",
                        )
                        .bind(user_id.as_str())
                        .bind(did)
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(|row| -> $crate::StoreResult<_> {
                            Ok(atlas_proto::api::ClaimedKey { key_id: row.try_get("key_id")?, key: row.try_get("public_key")?, fallback: true })
                        })
                        .transpose()?,
                    };
                    out.push($crate::ClaimedDeviceRecord { keys: device.keys, key });
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn store_message(&self, m: &$crate::NewMessage) -> $crate::StoreResult<$crate::StoredSend> {
                self.store_message_durably(m).await
            }

            async fn insert_jti(&self, jti: &str, expires_at: i64) -> $crate::StoreResult<bool> {
                self.insert_jti_durably(jti, expires_at).await
            }

            async fn inbox(&self, user_id: &atlas_proto::UserId, device_id: &atlas_proto::DeviceId, after: u64, limit: u32) -> $crate::StoreResult<Vec<atlas_proto::api::InboxMessage>> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT seq, message_id, sender_id, sender_device_id, encryption_algorithm, msg_type, body, created_at, session_id, resend_of FROM messages \
                     WHERE recipient_id = $1 AND recipient_device_id = $2 AND seq > $3 AND delivered_at IS NULL ORDER BY seq LIMIT $4",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(i64::try_from(after).unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?;
                rows.into_iter()
                    .map(|row| {
                        Ok(atlas_proto::api::InboxMessage {
                            seq: row.try_get::<i64, _>("seq")? as u64,
                            message_id: row.try_get("message_id")?,
                            sender_id: $crate::sql::user(row.try_get("sender_id")?)?,
                            sender_device_id: $crate::sql::device(row.try_get("sender_device_id")?)?,
                            encryption_algorithm: row.try_get("encryption_algorithm")?,
                            msg_type: u8::try_from(row.try_get::<i64, _>("msg_type")?).unwrap_or(u8::MAX),
                            body: row.try_get("body")?,
                            created_at: $crate::sql::rfc3339(row.try_get("created_at")?),
                            session_id: row.try_get("session_id")?,
                            resend_of: row.try_get("resend_of")?,
                        })
                    })
                    .collect()
            }

            async fn ack(
                &self,
                user_id: &atlas_proto::UserId,
                device_id: &atlas_proto::DeviceId,
                up_to_seq: u64,
                now: time::OffsetDateTime,
                receipt: $crate::DeliveredReceipts<'_>,
            ) -> $crate::StoreResult<u64> {
                use sqlx::Row;
                let up_to = i64::try_from(up_to_seq).unwrap_or(i64::MAX);
                let mut tx = self.writer.begin().await?;
                let rows = sqlx::query(concat!(
                    "SELECT message_id, sender_id, sender_device_id, body, created_at FROM messages \
                     WHERE recipient_id = $1 AND recipient_device_id = $2 AND seq <= $3 AND delivered_at IS NULL ORDER BY seq",
                    $lock_rows
                ))
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(up_to)
                .fetch_all(&mut *tx)
                .await?;
                let mut receipts = Vec::with_capacity(rows.len());
                for row in &rows {
                    receipts.push(receipt(&$crate::AckedMessage {
                        message_id: row.try_get("message_id")?,
                        sender_id: $crate::sql::user(row.try_get("sender_id")?)?,
                        sender_device_id: $crate::sql::device(row.try_get("sender_device_id")?)?,
                        body: row.try_get("body")?,
                        accepted_at: row.try_get("created_at")?,
                    }));
                }
                sqlx::query(
                    "UPDATE messages SET delivered_at = $1, body = '' \
                     WHERE recipient_id = $2 AND recipient_device_id = $3 AND seq <= $4 AND delivered_at IS NULL",
                )
                .bind(now)
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(up_to)
                .execute(&mut *tx)
                .await?;
                let refs: Vec<&$crate::ReceiptRecord> = receipts.iter().collect();
                Self::insert_receipts(&mut tx, &refs).await?;
                sqlx::query(
                    "UPDATE devices SET acked_seq = CASE WHEN $3 < next_seq THEN $3 ELSE next_seq END \
                     WHERE user_id = $1 AND device_id = $2 AND acked_seq < $3",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(up_to)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(rows.len() as u64)
            }

            async fn receipts(&self, message_id: &str) -> $crate::StoreResult<Vec<$crate::ReceiptRecord>> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT receipt_id, message_id, receipt_type, device_id, sender_id, recipient_id, kid, jws, issued_at, expires_at \
                     FROM receipts WHERE message_id = $1 ORDER BY receipt_type, device_id",
                )
                .bind(message_id)
                .fetch_all(&self.reader)
                .await?;
                rows.into_iter()
                    .map(|row| {
                        let kind: String = row.try_get("receipt_type")?;
                        let device: String = row.try_get("device_id")?;
                        Ok($crate::ReceiptRecord {
                            receipt_id: row.try_get("receipt_id")?,
                            message_id: row.try_get("message_id")?,
                            receipt_type: atlas_proto::receipt::ReceiptType::parse(&kind)
                                .ok_or_else(|| $crate::StoreError::Corrupt(format!("receipt type {kind}")))?,
                            device_id: if device.is_empty() { None } else { Some($crate::sql::device(device)?) },
                            sender_id: $crate::sql::user(row.try_get("sender_id")?)?,
                            recipient_id: $crate::sql::user(row.try_get("recipient_id")?)?,
                            kid: row.try_get("kid")?,
                            jws: row.try_get("jws")?,
                            issued_at: row.try_get("issued_at")?,
                            expires_at: row.try_get("expires_at")?,
                        })
                    })
                    .collect()
            }

            async fn update_receipt(&self, receipt_id: &str, kid: &str, jws: &str, issued_at: time::OffsetDateTime) -> $crate::StoreResult<bool> {
                let done = sqlx::query("UPDATE receipts SET kid = $1, jws = $2, issued_at = $3 WHERE receipt_id = $4")
                    .bind(kid)
                    .bind(jws)
                    .bind(issued_at)
                    .bind(receipt_id)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn insert_refresh_token(&self, t: &$crate::RefreshTokenRecord) -> $crate::StoreResult<()> {
                sqlx::query("INSERT INTO refresh_tokens (token_hash, user_id, device_id, jkt, family_id, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(&t.token_hash)
                    .bind(t.user_id.as_str())
                    .bind(t.device_id.as_str())
                    .bind(&t.jkt)
                    .bind(&t.family_id)
                    .bind(t.expires_at)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn use_refresh_token(&self, token_hash: &[u8], now: time::OffsetDateTime) -> $crate::StoreResult<$crate::RefreshUse> {
                use sqlx::Row;
                let mut tx = self.writer.begin().await?;
                let row = sqlx::query(concat!(
                    "SELECT user_id, device_id, jkt, family_id, expires_at, used_at IS NOT NULL OR revoked_at IS NOT NULL AS spent \
                     FROM refresh_tokens WHERE token_hash = $1",
                    $lock_rows
                ))
                .bind(token_hash)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else { return Ok($crate::RefreshUse::Invalid) };
                let record = $crate::RefreshTokenRecord {
                    token_hash: token_hash.to_vec(),
                    user_id: $crate::sql::user(row.try_get("user_id")?)?,
                    device_id: $crate::sql::device(row.try_get("device_id")?)?,
                    jkt: row.try_get("jkt")?,
                    family_id: row.try_get("family_id")?,
                    expires_at: row.try_get("expires_at")?,
                };
                if row.try_get::<bool, _>("spent")? {
                    sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND family_id <> '' AND revoked_at IS NULL")
                        .bind(now)
                        .bind(&record.family_id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    return Ok($crate::RefreshUse::Replayed { family_id: record.family_id, device_id: record.device_id });
                }
                if record.expires_at <= now {
                    return Ok($crate::RefreshUse::Invalid);
                }
                sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2")
                    .bind(now)
                    .bind(token_hash)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok($crate::RefreshUse::Fresh(record))
            }

            async fn revoke_refresh_tokens(
                &self,
                device: Option<(&atlas_proto::UserId, &atlas_proto::DeviceId)>,
                now: time::OffsetDateTime,
            ) -> $crate::StoreResult<u64> {
                let done = match device {
                    Some((user, device)) => sqlx::query(
                        "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND device_id = $3 AND used_at IS NULL AND revoked_at IS NULL",
                    )
                    .bind(now)
                    .bind(user.as_str())
                    .bind(device.as_str())
                    .execute(&self.writer)
                    .await?,
                    None => sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE used_at IS NULL AND revoked_at IS NULL")
                        .bind(now)
                        .execute(&self.writer)
                        .await?,
                };
                Ok(done.rows_affected())
            }

            async fn server_key(&self, purpose: &str, make: &(dyn Fn() -> $crate::ServerKeyRecord + Send + Sync)) -> $crate::StoreResult<$crate::ServerKeyRecord> {
                use sqlx::Row;
                // The oldest active key wins, so replicas racing to create one converge on the same key.
                const SELECT: &str = "SELECT kid, purpose, alg, secret, created_at FROM server_keys \
                                      WHERE purpose = $1 AND status = 'active' ORDER BY created_at, kid LIMIT 1";
                let existing = sqlx::query(SELECT).bind(purpose).fetch_optional(&self.writer).await?;
                let row = match existing {
                    Some(row) => row,
                    None => {
                        let key = make();
                        let mut conn = self.writer.acquire().await?;
                        Self::insert_server_key(&mut conn, &key).await?;
                        sqlx::query(SELECT).bind(purpose).fetch_one(&mut *conn).await?
                    }
                };
                Ok($crate::ServerKeyRecord {
                    kid: row.try_get("kid")?,
                    purpose: row.try_get("purpose")?,
                    alg: row.try_get("alg")?,
                    secret: row.try_get("secret")?,
                    created_at: row.try_get("created_at")?,
                })
            }

            async fn server_keys(&self, purpose: &str) -> $crate::StoreResult<Vec<$crate::ServerKeyState>> {
                let rows = sqlx::query(
                    "SELECT kid, purpose, alg, secret, status, created_at, retired_at, publish_until, revoked_at \
                     FROM server_keys WHERE purpose = $1 ORDER BY created_at DESC, kid",
                )
                .bind(purpose)
                .fetch_all(&self.reader)
                .await?;
                rows.iter().map(Self::key_state).collect()
            }

            async fn rotate_server_key(&self, next: &$crate::ServerKeyRecord, publish_until: time::OffsetDateTime, now: time::OffsetDateTime) -> $crate::StoreResult<()> {
                let mut tx = self.writer.begin().await?;
                sqlx::query(
                    "UPDATE server_keys SET status = 'retired', retired_at = $1, publish_until = $2 WHERE purpose = $3 AND status = 'active'",
                )
                .bind(now)
                .bind(publish_until)
                .bind(&next.purpose)
                .execute(&mut *tx)
                .await?;
                Self::insert_server_key(&mut tx, next).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn replace_server_key_secret(&self, kid: &str, secret: &[u8]) -> $crate::StoreResult<bool> {
                let done = sqlx::query("UPDATE server_keys SET secret = $1 WHERE kid = $2")
                    .bind(secret)
                    .bind(kid)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn revoke_server_key(&self, purpose: &str, kid: &str, replacement: &$crate::ServerKeyRecord, now: time::OffsetDateTime) -> $crate::StoreResult<bool> {
                let mut tx = self.writer.begin().await?;
                let status: Option<String> = sqlx::query_scalar(concat!(
                    "SELECT status FROM server_keys WHERE purpose = $1 AND kid = $2 AND status <> 'revoked'",
                    $lock_rows
                ))
                .bind(purpose)
                .bind(kid)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(status) = status else { return Ok(false) };
                sqlx::query("UPDATE server_keys SET status = 'revoked', revoked_at = $1 WHERE purpose = $2 AND kid = $3")
                    .bind(now)
                    .bind(purpose)
                    .bind(kid)
                    .execute(&mut *tx)
                    .await?;
                if status == "active" {
                    Self::insert_server_key(&mut tx, replacement).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn create_operator_token(&self, t: &$crate::OperatorTokenRecord) -> $crate::StoreResult<()> {
                sqlx::query("INSERT INTO operator_tokens (token_id, token_hash, scopes, label, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(&t.token_id)
                    .bind(&t.token_hash)
                    .bind(t.scopes.join(" "))
                    .bind(&t.label)
                    .bind(t.created_at)
                    .bind(t.expires_at)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn operator_token(&self, token_hash: &[u8]) -> $crate::StoreResult<Option<$crate::OperatorTokenRecord>> {
                use sqlx::Row;
                let row = sqlx::query(
                    "SELECT token_id, scopes, label, created_at, expires_at FROM operator_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
                )
                .bind(token_hash)
                .fetch_optional(&self.reader)
                .await?;
                row.map(|row| {
                    Ok($crate::OperatorTokenRecord {
                        token_id: row.try_get("token_id")?,
                        token_hash: token_hash.to_vec(),
                        scopes: row.try_get::<String, _>("scopes")?.split_whitespace().map(str::to_owned).collect(),
                        label: row.try_get("label")?,
                        created_at: row.try_get("created_at")?,
                        expires_at: row.try_get("expires_at")?,
                    })
                })
                .transpose()
            }

            async fn revoke_operator_token(&self, token_id: &str, now: time::OffsetDateTime) -> $crate::StoreResult<bool> {
                let done = sqlx::query("UPDATE operator_tokens SET revoked_at = $1 WHERE token_id = $2 AND revoked_at IS NULL")
                    .bind(now)
                    .bind(token_id)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn jti(&self, jti: &str) -> $crate::StoreResult<Option<i64>> {
                Ok(sqlx::query_scalar("SELECT expires_at FROM dpop_jti WHERE jti = $1").bind(jti).fetch_optional(&self.reader).await?)
            }

            async fn prune_jtis(&self, now: i64, limit: u32) -> $crate::StoreResult<u64> {
                let done = sqlx::query(
                    "DELETE FROM dpop_jti WHERE jti IN (SELECT jti FROM dpop_jti WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)",
                )
                .bind(now)
                .bind(i64::from(limit))
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected())
            }

            async fn delete_jti(&self, jti: &str) -> $crate::StoreResult<bool> {
                let done = sqlx::query("DELETE FROM dpop_jti WHERE jti = $1").bind(jti).execute(&self.writer).await?;
                Ok(done.rows_affected() > 0)
            }
        }
    };
}

pub(crate) use impl_store;
