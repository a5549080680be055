//! Storage of 1:1 repair: resend requests, Olm session resets, and the
//! per-device copies of a message that both (and diagnosis) look at.
use crate::StoreResult;
use atlas_proto::{DeviceId, UserId};
use time::OffsetDateTime;

/// One recipient device's copy of a 1:1 message.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageCopy {
    /// The message.
    pub message_id: String,
    /// Recipient user.
    pub recipient_id: String,
    /// Recipient device.
    pub recipient_device_id: String,
    /// Sender user.
    pub sender_id: String,
    /// Sender device.
    pub sender_device_id: String,
    /// Algorithm of the ciphertext.
    pub encryption_algorithm: String,
    /// Olm message type (0 pre-key).
    pub msg_type: u8,
    /// The Olm session the sender named.
    pub session_id: Option<String>,
    /// The original, for a resend.
    pub resend_of: Option<String>,
    /// For a pre-key message: the recipient key it was encrypted to.
    pub prekey_key: Option<String>,
    /// Position in the device's queue.
    pub seq: u64,
    /// Acceptance.
    pub created_at: OffsetDateTime,
    /// Acknowledgement by the device.
    pub delivered_at: Option<OffsetDateTime>,
}

/// A request that the sending device re-encrypt a message for one recipient device.
#[derive(Debug, Clone, PartialEq)]
pub struct ResendRequestRecord {
    /// Id.
    pub request_id: String,
    /// The message to re-encrypt.
    pub message_id: String,
    /// Recipient user.
    pub recipient_id: String,
    /// The device that could not read it.
    pub recipient_device_id: String,
    /// Sender user.
    pub sender_id: String,
    /// The device that holds the plaintext in its outbox.
    pub sender_device_id: String,
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
#[derive(Debug, Clone, PartialEq)]
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
