//! Storage of 1:1 repair: resend requests, Olm session resets, and the
//! per-device copies of a message that both (and diagnosis) look at.
use crate::StoreResult;
use crate::db::{Backend, read, run};
use atlas_proto::{DeviceId, MessageId, RequestId, UserId};
use time::OffsetDateTime;

/// One recipient device's copy of a 1:1 message.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MessageCopy {
    /// The message.
    #[sqlx(try_from = "String")]
    pub message_id: MessageId,
    /// Recipient user.
    #[sqlx(try_from = "String")]
    pub recipient_id: UserId,
    /// Recipient device.
    #[sqlx(try_from = "String")]
    pub recipient_device_id: DeviceId,
    /// Sender user.
    #[sqlx(try_from = "String")]
    pub sender_id: UserId,
    /// Sender device.
    #[sqlx(try_from = "String")]
    pub sender_device_id: DeviceId,
    /// Algorithm of the ciphertext.
    pub encryption_algorithm: String,
    /// Olm message type (0 pre-key).
    #[sqlx(try_from = "i64")]
    pub msg_type: u8,
    /// The Olm session the sender named.
    pub session_id: Option<String>,
    /// The original, for a resend.
    pub resend_of: Option<String>,
    /// For a pre-key message: the recipient key it was encrypted to.
    pub prekey_key: Option<String>,
    /// Position in the device's queue.
    #[sqlx(try_from = "i64")]
    pub seq: u64,
    /// Acceptance.
    pub created_at: OffsetDateTime,
    /// Acknowledgement by the device.
    pub delivered_at: Option<OffsetDateTime>,
}

/// A request that the sending device re-encrypt a message for one recipient device.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ResendRequestRecord {
    /// Id.
    #[sqlx(try_from = "String")]
    pub request_id: RequestId,
    /// The message to re-encrypt.
    #[sqlx(try_from = "String")]
    pub message_id: MessageId,
    /// Recipient user.
    #[sqlx(try_from = "String")]
    pub recipient_id: UserId,
    /// The device that could not read it.
    #[sqlx(try_from = "String")]
    pub recipient_device_id: DeviceId,
    /// Sender user.
    #[sqlx(try_from = "String")]
    pub sender_id: UserId,
    /// The device that holds the plaintext in its outbox.
    #[sqlx(try_from = "String")]
    pub sender_device_id: DeviceId,
    /// `device:USER/DEVICE` or `operator:TOKEN_ID`.
    pub requested_by: String,
    /// Failure code reported for the message on that device, if any.
    pub reason: Option<String>,
    /// `pending`, `resent` or `unavailable`.
    pub status: String,
    /// When.
    pub requested_at: OffsetDateTime,
    /// When the sender answered.
    pub done_at: Option<OffsetDateTime>,
    /// The resend, once sent.
    pub resent_message_id: Option<String>,
    /// The sender's explanation when unavailable.
    pub detail: Option<String>,
}

/// The two devices of an Olm session, as the messages sent on it name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParties {
    /// One end: `(user, device)` of the first message's sender.
    pub sender: (String, String),
    /// The other end.
    pub recipient: (String, String),
}

/// A session reset as one of its devices learns of it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SessionResetRecord {
    /// The retired session.
    pub session_id: String,
    /// The device told.
    pub user_id: String,
    /// The device told.
    pub device_id: String,
    /// The other end.
    pub peer_user_id: String,
    /// The other end.
    pub peer_device_id: String,
    /// `device:USER/DEVICE` or `operator:TOKEN_ID`.
    pub requested_by: String,
    /// When.
    pub reset_at: OffsetDateTime,
    /// When the device acknowledged it.
    pub seen_at: Option<OffsetDateTime>,
}

/// How a sending device answered a resend request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResendOutcome<'a> {
    /// Re-encrypted and sent as this message.
    Resent(&'a str),
    /// The plaintext is gone; why.
    Unavailable(&'a str),
}

/// The resend part of the store.
#[async_trait::async_trait]
pub trait RepairStore: Send + Sync {
    /// Every recipient device's copy of a message.
    async fn message_copies(&self, message_id: &str) -> StoreResult<Vec<MessageCopy>>;
    /// Stores requests; where one is already pending for the same message and
    /// device, that one is returned instead of a new one.
    async fn request_resends(
        &self,
        requests: &[ResendRequestRecord],
    ) -> StoreResult<Vec<ResendRequestRecord>>;
    /// Pending requests addressed to a sending device, oldest first.
    async fn pending_resends(
        &self,
        sender_id: &UserId,
        sender_device_id: &DeviceId,
        limit: u32,
    ) -> StoreResult<Vec<ResendRequestRecord>>;
    /// Closes a pending request of this sending device; false if there is none.
    async fn complete_resend(
        &self,
        request_id: &str,
        sender: (&UserId, &DeviceId),
        outcome: ResendOutcome<'_>,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Every request about a message, newest first.
    async fn resend_requests(&self, message_id: &str) -> StoreResult<Vec<ResendRequestRecord>>;

    /// The devices of a session, from a message sent on it.
    async fn session_parties(&self, session_id: &str) -> StoreResult<Option<SessionParties>>;
    /// Retires a session for both ends (`resets` holds one row per end); returns
    /// the ids of messages on it not yet delivered.
    async fn reset_session(&self, resets: &[SessionResetRecord]) -> StoreResult<Vec<String>>;
    /// Resets a device has not acknowledged.
    async fn unseen_session_resets(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> StoreResult<Vec<SessionResetRecord>>;
    /// Acknowledges resets; returns how many were unseen.
    async fn ack_session_resets(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        session_ids: &[String],
        now: OffsetDateTime,
    ) -> StoreResult<u64>;
    /// Every reset of a session (empty if it was never reset).
    async fn session_resets(&self, session_id: &str) -> StoreResult<Vec<SessionResetRecord>>;
}

#[async_trait::async_trait]
impl<T: Backend> RepairStore for T {
    async fn message_copies(&self, message_id: &str) -> StoreResult<Vec<MessageCopy>> {
        Ok(read!(
            self.db(),
            sqlx::query_as(
                "SELECT message_id, recipient_id, recipient_device_id, sender_id, sender_device_id, \
                   encryption_algorithm, msg_type, session_id, resend_of, prekey_key, seq, created_at, \
                   delivered_at \
                 FROM messages WHERE message_id = $1 ORDER BY recipient_device_id",
            )
            .bind(message_id),
            fetch_all
        )?)
    }

    async fn request_resends(
        &self,
        requests: &[ResendRequestRecord],
    ) -> StoreResult<Vec<ResendRequestRecord>> {
        let mut tx = self.db().begin().await?;
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            run!(
                &mut tx,
                sqlx::query(
                    "INSERT INTO resend_requests (request_id, message_id, recipient_id, \
                       recipient_device_id, sender_id, sender_device_id, requested_by, reason, status, \
                       requested_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9) ON CONFLICT DO NOTHING",
                )
                .bind(r.request_id.as_str())
                .bind(r.message_id.as_str())
                .bind(r.recipient_id.as_str())
                .bind(r.recipient_device_id.as_str())
                .bind(r.sender_id.as_str())
                .bind(r.sender_device_id.as_str())
                .bind(&r.requested_by)
                .bind(r.reason.as_deref())
                .bind(r.requested_at),
                execute
            )?;
            // The pending request of that copy: this one, or one made before.
            let pending: ResendRequestRecord = run!(
                &mut tx,
                sqlx::query_as(
                    "SELECT * FROM resend_requests \
                     WHERE message_id = $1 AND recipient_device_id = $2 AND status = 'pending'",
                )
                .bind(r.message_id.as_str())
                .bind(r.recipient_device_id.as_str()),
                fetch_one
            )?;
            out.push(pending);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn pending_resends(
        &self,
        sender_id: &UserId,
        sender_device_id: &DeviceId,
        limit: u32,
    ) -> StoreResult<Vec<ResendRequestRecord>> {
        Ok(read!(
            self.db(),
            sqlx::query_as(
                "SELECT * FROM resend_requests \
                 WHERE sender_id = $1 AND sender_device_id = $2 AND status = 'pending' \
                 ORDER BY requested_at, request_id LIMIT $3",
            )
            .bind(sender_id.as_str())
            .bind(sender_device_id.as_str())
            .bind(i64::from(limit)),
            fetch_all
        )?)
    }

    async fn complete_resend(
        &self,
        request_id: &str,
        sender: (&UserId, &DeviceId),
        outcome: ResendOutcome<'_>,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let (status, resent, detail) = match outcome {
            ResendOutcome::Resent(id) => ("resent", Some(id), None),
            ResendOutcome::Unavailable(why) => ("unavailable", None, Some(why)),
        };
        let mut tx = self.db().begin().await?;
        let done = run!(
            &mut tx,
            sqlx::query(
                "UPDATE resend_requests SET status = $4, resent_message_id = $5, detail = $6, done_at = $7 \
                 WHERE request_id = $1 AND sender_id = $2 AND sender_device_id = $3 AND status = 'pending'",
            )
            .bind(request_id)
            .bind(sender.0.as_str())
            .bind(sender.1.as_str())
            .bind(status)
            .bind(resent)
            .bind(detail)
            .bind(now),
            execute
        )?;
        tx.commit().await?;
        Ok(done == 1)
    }

    async fn resend_requests(&self, message_id: &str) -> StoreResult<Vec<ResendRequestRecord>> {
        Ok(read!(
            self.db(),
            sqlx::query_as(
                "SELECT * FROM resend_requests WHERE message_id = $1 \
                 ORDER BY requested_at DESC, request_id",
            )
            .bind(message_id),
            fetch_all
        )?)
    }

    async fn session_parties(&self, session_id: &str) -> StoreResult<Option<SessionParties>> {
        let row: Option<(String, String, String, String)> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT sender_id, sender_device_id, recipient_id, recipient_device_id FROM messages \
                 WHERE session_id = $1 ORDER BY created_at LIMIT 1",
            )
            .bind(session_id),
            fetch_optional
        )?;
        Ok(row.map(|(su, sd, ru, rd)| SessionParties {
            sender: (su, sd),
            recipient: (ru, rd),
        }))
    }

    async fn reset_session(&self, resets: &[SessionResetRecord]) -> StoreResult<Vec<String>> {
        let mut tx = self.db().begin().await?;
        for r in resets {
            run!(
                &mut tx,
                sqlx::query(
                    "INSERT INTO olm_session_resets (session_id, user_id, device_id, peer_user_id, \
                       peer_device_id, requested_by, reset_at, seen_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, NULL) \
                     ON CONFLICT (session_id, user_id, device_id) \
                     DO UPDATE SET requested_by = $6, reset_at = $7, seen_at = NULL",
                )
                .bind(&r.session_id)
                .bind(&r.user_id)
                .bind(&r.device_id)
                .bind(&r.peer_user_id)
                .bind(&r.peer_device_id)
                .bind(&r.requested_by)
                .bind(r.reset_at),
                execute
            )?;
        }
        let in_flight: Vec<(String,)> = match resets.first() {
            Some(r) => run!(
                &mut tx,
                sqlx::query_as(
                    "SELECT DISTINCT message_id FROM messages \
                     WHERE session_id = $1 AND delivered_at IS NULL ORDER BY message_id",
                )
                .bind(&r.session_id),
                fetch_all
            )?,
            None => Vec::new(),
        };
        tx.commit().await?;
        Ok(in_flight.into_iter().map(|(id,)| id).collect())
    }

    async fn unseen_session_resets(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> StoreResult<Vec<SessionResetRecord>> {
        Ok(read!(
            self.db(),
            sqlx::query_as(
                "SELECT * FROM olm_session_resets \
                 WHERE user_id = $1 AND device_id = $2 AND seen_at IS NULL \
                 ORDER BY reset_at, session_id LIMIT 100",
            )
            .bind(user_id.as_str())
            .bind(device_id.as_str()),
            fetch_all
        )?)
    }

    async fn ack_session_resets(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        session_ids: &[String],
        now: OffsetDateTime,
    ) -> StoreResult<u64> {
        let mut tx = self.db().begin().await?;
        let mut seen = 0;
        for id in session_ids {
            seen += run!(
                &mut tx,
                sqlx::query(
                    "UPDATE olm_session_resets SET seen_at = $4 \
                     WHERE session_id = $1 AND user_id = $2 AND device_id = $3 AND seen_at IS NULL",
                )
                .bind(id)
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .bind(now),
                execute
            )?;
        }
        tx.commit().await?;
        Ok(seen)
    }

    async fn session_resets(&self, session_id: &str) -> StoreResult<Vec<SessionResetRecord>> {
        Ok(read!(
            self.db(),
            sqlx::query_as(
                "SELECT * FROM olm_session_resets WHERE session_id = $1 ORDER BY user_id, device_id",
            )
            .bind(session_id),
            fetch_all
        )?)
    }
}
