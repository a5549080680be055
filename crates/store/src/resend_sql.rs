//! [`crate::ResendStore`] in the SQL both backends share (see `sql.rs`).

/// Implements [`crate::ResendStore`] for a backend struct with `writer` and `reader` pools.
macro_rules! impl_resend_store {
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

        #[async_trait::async_trait]
        impl $crate::ResendStore for $store {
            async fn message_copies(&self, message_id: &str) -> $crate::StoreResult<Vec<$crate::MessageCopy>> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT message_id, recipient_id, recipient_device_id, sender_id, sender_device_id, encryption_algorithm, \
                       msg_type, session_id, resend_of, seq, created_at, delivered_at \
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
        }
    };
}

pub(crate) use impl_resend_store;
