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

/// A session id as it travels in URLs and JSON: vodozemac's standard base64
/// with `+` and `/` replaced (base64url), so it fits in a path segment.
pub fn url_session_id(session_id: &str) -> String {
    session_id.replace('+', "-").replace('/', "_")
}

/// The standard-base64 form a device stores, from [`url_session_id`]'s form.
pub fn std_session_id(session_id: &str) -> String {
    session_id.replace('-', "+").replace('_', "/")
}

/// Answer to `POST /sessions/{session_id}/reset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResetResponse {
    /// The retired session (base64url).
    pub session_id: String,
    /// Its two devices, `USER_ID/DEVICE_ID`; each retires it on its next sync.
    pub devices: Vec<String>,
    /// Messages on it not yet delivered: their recipients will ask for resends.
    pub in_flight: Vec<String>,
}

/// One reset a device has to apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResetView {
    /// The retired session (base64url).
    pub session_id: String,
    /// The other end.
    pub peer: String,
    /// Who asked.
    pub requested_by: String,
    /// RFC 3339.
    pub reset_at: String,
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
    pub session_ids: Vec<String>,
}

/// A nudge: one of this device's sessions was reset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResetNotice {
    /// The session (base64url).
    pub session_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_survive_the_url_form() {
        let id = "ab+c/d3";
        assert_eq!(url_session_id(id), "ab-c_d3");
        assert_eq!(std_session_id(&url_session_id(id)), id);
    }
}
