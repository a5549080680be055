//! Repair of 1:1 messages: resend requests and Olm session resets.
use crate::ids::{DeviceId, MessageId, RequestId, SessionId, UserId};
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};

/// One request that a sending device re-encrypt a message for one recipient device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResendRequestView {
    /// Id.
    pub request_id: RequestId,
    /// The message to re-encrypt.
    pub message_id: MessageId,
    /// Recipient user.
    pub recipient_id: UserId,
    /// The device that could not read it.
    pub recipient_device_id: DeviceId,
    /// Sender user.
    pub sender_id: UserId,
    /// The device whose outbox holds the plaintext.
    pub sender_device_id: DeviceId,
    /// The failure code reported for the message on that device, if any.
    pub reason: Option<crate::e2ee::FailureCode>,
    /// `pending`, `resent` or `unavailable`.
    pub status: String,
    /// RFC 3339.
    pub requested_at: Timestamp,
    /// The resend, once sent.
    pub resent_message_id: Option<MessageId>,
    /// Why the sender could not resend.
    pub detail: Option<String>,
}

/// Answer to `POST /messages/{id}/request-resend` and `GET /resend-requests`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResendRequests {
    /// The requests.
    pub requests: Vec<ResendRequestView>,
}

/// `POST /resend-requests/{id}/unavailable` body: the sender cannot resend.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResendUnavailable {
    /// Why (at most 200 characters), e.g. "no longer in the outbox".
    pub detail: String,
}

/// A nudge to a sending device: a resend was asked of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResendNotice {
    /// The request.
    pub request_id: RequestId,
    /// The message.
    pub message_id: MessageId,
}

/// Answer to `POST /sessions/{session_id}/reset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResetResponse {
    /// The retired session (base64url).
    pub session_id: SessionId,
    /// Its two devices, `USER_ID/DEVICE_ID`; each retires it on its next sync.
    pub devices: Vec<String>,
    /// Messages on it not yet delivered: their recipients will ask for resends.
    pub in_flight: Vec<String>,
}

/// One reset a device has to apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResetView {
    /// The retired session (base64url).
    pub session_id: SessionId,
    /// The other end.
    pub peer: String,
    /// Who asked.
    pub requested_by: String,
    /// RFC 3339.
    pub reset_at: Timestamp,
}

/// Answer to `GET /sessions/resets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResets {
    /// Resets not yet acknowledged by this device.
    pub resets: Vec<SessionResetView>,
}

/// `POST /sessions/resets/ack` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionResetsAck {
    /// Sessions this device has retired (at most 100).
    pub session_ids: Vec<SessionId>,
}

/// A nudge: one of this device's sessions was reset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResetNotice {
    /// The session (base64url).
    pub session_id: SessionId,
}
