//! Repair of 1:1 messages: resend requests and Olm session resets.
use serde::{Deserialize, Serialize};

/// One request that a sending device re-encrypt a message for one recipient device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResendRequestView {
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
    /// The device whose outbox holds the plaintext.
    pub sender_device_id: String,
    /// The failure code reported for the message on that device, if any.
    pub reason: Option<String>,
    /// `pending`, `resent` or `unavailable`.
    pub status: String,
    /// RFC 3339.
    pub requested_at: String,
    /// The resend, once sent.
    pub resent_message_id: Option<String>,
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
    pub request_id: String,
    /// The message.
    pub message_id: String,
}
