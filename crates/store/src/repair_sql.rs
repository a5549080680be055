//! [`crate::RepairStore`] in the SQL both backends share (see `sql.rs`).

/// Implements [`crate::RepairStore`] for a backend struct with `writer` and `reader` pools.
macro_rules! impl_repair_store {
    ($store:ty, $db:ty) => {
        impl $store {
            fn resend_record(row: &<$db as sqlx::Database>::Row) -> $crate::StoreResult<$crate::ResendRequestRecord> {
                use sqlx::Row;
                Ok($crate::ResendRequestRecord {
                    request_id: row.try_get("request_id")?,
                    message_id: row.try_get("message_id")?,
                    recipient_id: row.try_get("recipient_id")?,
                    recipient_device_id: row.try_get("recipient_device_id")?,
                    sender_id: row.try_get("sender_id")?,
                    sender_device_id: row.try_get("sender_device_id")?,
                    requested_by: row.try_get("requested_by")?,
                    reason: row.try_get("reason")?,
                    status: row.try_get("status")?,
                    requested_at: row.try_get("requested_at")?,
                    done_at: row.try_get("done_at")?,
                    resent_message_id: row.try_get("resent_message_id")?,
                    detail: row.try_get("detail")?,
                })
            }
        }

        impl $store {
            fn reset_record(row: &<$db as sqlx::Database>::Row) -> $crate::StoreResult<$crate::SessionResetRecord> {
                use sqlx::Row;
                Ok($crate::SessionResetRecord {
                    session_id: row.try_get("session_id")?,
                    user_id: row.try_get("user_id")?,
                    device_id: row.try_get("device_id")?,
                    peer_user_id: row.try_get("peer_user_id")?,
                    peer_device_id: row.try_get("peer_device_id")?,
                    requested_by: row.try_get("requested_by")?,
                    reset_at: row.try_get("reset_at")?,
                    seen_at: row.try_get("seen_at")?,
                })
            }
        }

        #[async_trait::async_trait]
        impl $crate::RepairStore for $store {
            async fn message_copies(&self, message_id: &str) -> $crate::StoreResult<Vec<$crate::MessageCopy>> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT message_id, recipient_id, recipient_device_id, sender_id, sender_device_id, encryption_algorithm, \
                       msg_type, session_id, resend_of, prekey_key, seq, created_at, delivered_at \
                     FROM messages WHERE message_id = $1 ORDER BY recipient_device_id",
                )
                .bind(message_id)
                .fetch_all(&self.reader)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok($crate::MessageCopy {
                            message_id: row.try_get("message_id")?,
                            recipient_id: row.try_get("recipient_id")?,
                            recipient_device_id: row.try_get("recipient_device_id")?,
                            sender_id: row.try_get("sender_id")?,
                            sender_device_id: row.try_get("sender_device_id")?,
                            encryption_algorithm: row.try_get("encryption_algorithm")?,
                            msg_type: u8::try_from(row.try_get::<i64, _>("msg_type")?).unwrap_or(u8::MAX),
                            session_id: row.try_get("session_id")?,
                            resend_of: row.try_get("resend_of")?,
                            prekey_key: row.try_get("prekey_key")?,
                            seq: row.try_get::<i64, _>("seq")?.max(0) as u64,
                            created_at: row.try_get("created_at")?,
                            delivered_at: row.try_get("delivered_at")?,
                        })
                    })
                    .collect()
            }

            async fn request_resends(&self, requests: &[$crate::ResendRequestRecord]) -> $crate::StoreResult<Vec<$crate::ResendRequestRecord>> {
                let mut tx = self.writer.begin().await?;
                let mut out = Vec::with_capacity(requests.len());
                for r in requests {
                    sqlx::query(
                        "INSERT INTO resend_requests (request_id, message_id, recipient_id, recipient_device_id, sender_id, \
                           sender_device_id, requested_by, reason, status, requested_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9) ON CONFLICT DO NOTHING",
                    )
                    .bind(&r.request_id)
                    .bind(&r.message_id)
                    .bind(&r.recipient_id)
                    .bind(&r.recipient_device_id)
                    .bind(&r.sender_id)
                    .bind(&r.sender_device_id)
                    .bind(&r.requested_by)
                    .bind(r.reason.as_deref())
                    .bind(r.requested_at)
                    .execute(&mut *tx)
                    .await?;
                    let row = sqlx::query(
                        "SELECT * FROM resend_requests WHERE message_id = $1 AND recipient_device_id = $2 AND status = 'pending'",
                    )
                    .bind(&r.message_id)
                    .bind(&r.recipient_device_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    out.push(Self::resend_record(&row)?);
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn pending_resends(&self, sender_id: &atlas_proto::UserId, sender_device_id: &atlas_proto::DeviceId, limit: u32) -> $crate::StoreResult<Vec<$crate::ResendRequestRecord>> {
                let rows = sqlx::query(
                    "SELECT * FROM resend_requests WHERE sender_id = $1 AND sender_device_id = $2 AND status = 'pending' \
                     ORDER BY requested_at, request_id LIMIT $3",
                )
                .bind(sender_id.as_str())
                .bind(sender_device_id.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?;
                rows.iter().map(Self::resend_record).collect()
            }

            async fn complete_resend(
                &self,
                request_id: &str,
                sender: (&atlas_proto::UserId, &atlas_proto::DeviceId),
                outcome: $crate::ResendOutcome<'_>,
                now: time::OffsetDateTime,
            ) -> $crate::StoreResult<bool> {
                let (status, resent, detail) = match outcome {
                    $crate::ResendOutcome::Resent(id) => ("resent", Some(id), None),
                    $crate::ResendOutcome::Unavailable(why) => ("unavailable", None, Some(why)),
                };
                let done = sqlx::query(
                    "UPDATE resend_requests SET status = $4, resent_message_id = $5, detail = $6, done_at = $7 \
                     WHERE request_id = $1 AND sender_id = $2 AND sender_device_id = $3 AND status = 'pending'",
                )
                .bind(request_id)
                .bind(sender.0.as_str())
                .bind(sender.1.as_str())
                .bind(status)
                .bind(resent)
                .bind(detail)
                .bind(now)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn resend_requests(&self, message_id: &str) -> $crate::StoreResult<Vec<$crate::ResendRequestRecord>> {
                let rows = sqlx::query("SELECT * FROM resend_requests WHERE message_id = $1 ORDER BY requested_at DESC, request_id")
                    .bind(message_id)
                    .fetch_all(&self.reader)
                    .await?;
                rows.iter().map(Self::resend_record).collect()
            }

            async fn session_parties(&self, session_id: &str) -> $crate::StoreResult<Option<$crate::SessionParties>> {
                let row: Option<(String, String, String, String)> = sqlx::query_as(
                    "SELECT sender_id, sender_device_id, recipient_id, recipient_device_id FROM messages \
                     WHERE session_id = $1 ORDER BY created_at LIMIT 1",
                )
                .bind(session_id)
                .fetch_optional(&self.reader)
                .await?;
                Ok(row.map(|(su, sd, ru, rd)| $crate::SessionParties { sender: (su, sd), recipient: (ru, rd) }))
            }

            async fn reset_session(&self, resets: &[$crate::SessionResetRecord]) -> $crate::StoreResult<Vec<String>> {
                let mut tx = self.writer.begin().await?;
                for r in resets {
                    sqlx::query(
                        "INSERT INTO olm_session_resets (session_id, user_id, device_id, peer_user_id, peer_device_id, requested_by, reset_at, seen_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL) \
                         ON CONFLICT (session_id, user_id, device_id) DO UPDATE SET requested_by = $6, reset_at = $7, seen_at = NULL",
                    )
                    .bind(&r.session_id)
                    .bind(&r.user_id)
                    .bind(&r.device_id)
                    .bind(&r.peer_user_id)
                    .bind(&r.peer_device_id)
                    .bind(&r.requested_by)
                    .bind(r.reset_at)
                    .execute(&mut *tx)
                    .await?;
                }
                let in_flight: Vec<(String,)> = match resets.first() {
                    Some(r) => sqlx::query_as(
                        "SELECT DISTINCT message_id FROM messages WHERE session_id = $1 AND delivered_at IS NULL ORDER BY message_id",
                    )
                    .bind(&r.session_id)
                    .fetch_all(&mut *tx)
                    .await?,
                    None => Vec::new(),
                };
                tx.commit().await?;
                Ok(in_flight.into_iter().map(|(id,)| id).collect())
            }

            async fn unseen_session_resets(&self, user_id: &atlas_proto::UserId, device_id: &atlas_proto::DeviceId) -> $crate::StoreResult<Vec<$crate::SessionResetRecord>> {
                let rows = sqlx::query(
                    "SELECT * FROM olm_session_resets WHERE user_id = $1 AND device_id = $2 AND seen_at IS NULL ORDER BY reset_at, session_id LIMIT 100",
                )
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .fetch_all(&self.reader)
                .await?;
                rows.iter().map(Self::reset_record).collect()
            }

            async fn ack_session_resets(&self, user_id: &atlas_proto::UserId, device_id: &atlas_proto::DeviceId, session_ids: &[String], now: time::OffsetDateTime) -> $crate::StoreResult<u64> {
                let mut tx = self.writer.begin().await?;
                let mut seen = 0;
                for id in session_ids {
                    seen += sqlx::query(
                        "UPDATE olm_session_resets SET seen_at = $4 WHERE session_id = $1 AND user_id = $2 AND device_id = $3 AND seen_at IS NULL",
                    )
                    .bind(id)
                    .bind(user_id.as_str())
                    .bind(device_id.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
                Ok(seen)
            }

            async fn session_resets(&self, session_id: &str) -> $crate::StoreResult<Vec<$crate::SessionResetRecord>> {
                let rows = sqlx::query("SELECT * FROM olm_session_resets WHERE session_id = $1 ORDER BY user_id, device_id")
                    .bind(session_id)
                    .fetch_all(&self.reader)
                    .await?;
                rows.iter().map(Self::reset_record).collect()
            }
        }
    };
}

pub(crate) use impl_repair_store;
