//! Request and response bodies of the HTTP API.
use crate::ids::{ClientMessageId, DeviceId, GroupId, MessageId, SessionId, UserId};
use crate::keys::{KeyType, MismatchProblem};
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};

/// Default `encryption_algorithm` of 1:1 messages.
pub const OLM_ALGORITHM: &str = "m.olm.v1.curve25519-aes-sha2";

/// A device's public identity keys, self-signed with its Ed25519 key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceKeys {
    /// The device's id.
    pub device_id: DeviceId,
    /// Ed25519 signing key, unpadded standard base64 (vodozemac's encoding).
    pub ed25519: String,
    /// Curve25519 identity key, unpadded standard base64.
    pub curve25519: String,
    /// Ed25519 signature over [`DeviceKeys::signing_payload`].
    pub signature: String,
}

impl DeviceKeys {
    /// The bytes the device signs to bind its keys to its user and device id.
    pub fn signing_payload(&self, user_id: &UserId) -> String {
        format!(
            "atlas-device-keys-v1\n{}\n{}\n{}\n{}",
            user_id, self.device_id, self.ed25519, self.curve25519
        )
    }
}

/// `POST /users`: register a user with a first device, or (with a link token) add a device.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The user to create, or to add a device to.
    pub user_id: UserId,
    /// The new device's keys.
    pub device: DeviceKeys,
    /// A token from `POST /devices/link-tokens`; required to add a device to an existing user.
    #[serde(default)]
    pub link_token: Option<String>,
    /// A new user's identity key (Ed25519, unpadded standard base64); required without `link_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_key: Option<String>,
    /// The identity key's certificate of this first device; required without `link_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// A server's registration token, when it registers new users only with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_token: Option<String>,
    /// With `link_token`: the new device's proof that it holds the link code
    /// (checked by the existing device that certifies it, not by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_proof: Option<String>,
}

/// `POST /devices/rekey`: a device whose identity keys an operator revoked
/// publishes new ones, certified by a new user identity key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RekeyRequest {
    /// The device's new keys (same device id), self-signed.
    pub device: DeviceKeys,
    /// The user's new identity key: it replaces the revoked one, or, if another
    /// device of the user re-keyed first, must equal the one it published.
    pub identity_key: String,
    /// The new identity key's certificate of the new device keys.
    pub certificate: String,
}

/// A linked device waiting for an existing device of its user to certify it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingDevice {
    /// The new device's keys.
    #[serde(flatten)]
    pub keys: DeviceKeys,
    /// SHA-256 of the link token it used, base64url (names the link code).
    pub link_token_hash: String,
    /// Its proof of holding the link code.
    pub link_proof: String,
    /// RFC 3339 registration time.
    pub created_at: Timestamp,
}

/// Answer to `GET /devices/pending`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingDevicesResponse {
    /// Devices of the caller's user waiting for a certificate.
    pub devices: Vec<PendingDevice>,
}

/// `POST /devices/{device_id}/certificate`: an existing device certifies a linked one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertifyRequest {
    /// The identity key's certificate of the device.
    pub certificate: String,
    /// The identity key sealed under the link secret, for the new device.
    pub identity_transfer: String,
}

/// Answer to `POST /devices/certificate/claim`: the calling device's certification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateClaim {
    /// `pending`, `active` or `revoked`.
    pub status: String,
    /// Its certificate, once certified.
    pub certificate: Option<String>,
    /// The sealed identity key (handed out once).
    pub identity_transfer: Option<String>,
}

/// `POST /devices/{device_id}/revoke`: a device of the user removes one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeDeviceRequest {
    /// The identity key's signature of the removal.
    pub signature: String,
}

/// Answer to a registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The user.
    pub user_id: UserId,
    /// The registered device.
    pub device_id: DeviceId,
}

/// Answer to `POST /devices/link-tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkTokenResponse {
    /// Single-use token that lets a new device join this user.
    pub link_token: String,
    /// RFC 3339 expiry.
    pub expires_at: Timestamp,
}

/// One device as listed by `GET /users/{user_id}/devices`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// The device's keys.
    #[serde(flatten)]
    pub keys: DeviceKeys,
    /// `pending` (linked, not yet certified), `active`, `rekey` (keys revoked, not yet replaced) or `revoked`.
    pub status: DeviceStatus,
    /// RFC 3339 registration time.
    pub created_at: Timestamp,
    /// One-time keys still unclaimed.
    pub one_time_keys_available: u64,
    /// Whether an active fallback key is published.
    pub fallback_key: bool,
    /// The user identity key's certificate of this device (none while pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// For a removed device: the identity key's signature of the removal (none when an operator removed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<String>,
}

/// Answer to `GET /users/{user_id}/devices`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceListResponse {
    /// The user.
    pub user_id: UserId,
    /// The user's identity key, which certifies each device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_key: Option<String>,
    /// Every device, active or not.
    pub devices: Vec<DeviceInfo>,
}

/// `POST /token` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "grant_type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenRequest {
    /// The device signs [`token_signing_payload`] with its Ed25519 key.
    DeviceSignature {
        /// The user.
        user_id: UserId,
        /// The device.
        device_id: DeviceId,
        /// Unix seconds when signed.
        iat: i64,
        /// Ed25519 signature, unpadded standard base64.
        signature: String,
    },
    /// A refresh token from an earlier grant (single use; a new one is returned).
    RefreshToken {
        /// The refresh token.
        refresh_token: String,
    },
}

/// What a device signs at `POST /token`: binds its identity to the DPoP key thumbprint.
pub fn token_signing_payload(
    user_id: &UserId,
    device_id: &DeviceId,
    jkt: &str,
    iat: i64,
) -> String {
    format!("atlas-token-v1\n{user_id}\n{device_id}\n{jkt}\n{iat}")
}

/// Answer to `POST /token` (RFC 6749 §5.1 with `token_type` DPoP).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    /// DPoP-bound access token.
    pub access_token: String,
    /// Always `DPoP`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Single-use refresh token, bound to the same DPoP key.
    pub refresh_token: String,
}

/// A public one-time or fallback key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKey {
    /// The key's id as the device's account names it.
    pub key_id: String,
    /// Curve25519 public key, unpadded standard base64.
    pub key: String,
}

/// A key a device published, as the device remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedKey {
    /// The kind of key.
    pub key_type: KeyType,
    /// Its id in `user_keys`.
    pub key_id: String,
    /// Public key, base64.
    pub key: String,
}

/// `POST /keys/check` body: the device's own record of what it published.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyCheckRequest {
    /// Identity keys and every one-time or fallback key the device still holds.
    pub keys: Vec<PublishedKey>,
    /// Revoke stored one-time and fallback keys that do not match.
    #[serde(default)]
    pub repair: bool,
}

/// A stored key that does not match what the device published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyMismatch {
    /// Key type.
    pub key_type: KeyType,
    /// Key id.
    pub key_id: String,
    /// What `user_keys` holds.
    pub stored_key: String,
    /// How it disagrees.
    pub problem: MismatchProblem,
}

/// Answer to `POST /keys/check`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyCheckResponse {
    /// Active stored keys compared.
    pub checked: u64,
    /// Those that do not match.
    pub mismatched: Vec<KeyMismatch>,
    /// Mismatched one-time and fallback keys now revoked.
    pub revoked: u64,
}

/// `POST /keys/upload` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysUploadRequest {
    /// New one-time keys.
    #[serde(default)]
    pub one_time_keys: Vec<PublicKey>,
    /// A new fallback key; the previous one becomes `rotated`.
    #[serde(default)]
    pub fallback_key: Option<PublicKey>,
}

/// Key stock of the calling device, so it knows when to top up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyCounts {
    /// Unclaimed one-time keys.
    pub one_time_keys: u64,
    /// Whether an active fallback key is published.
    pub fallback_key: bool,
}

/// `POST /keys/claim` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysClaimRequest {
    /// The user whose devices get one key claimed each.
    pub user_id: UserId,
    /// Only these devices (all active devices when empty).
    #[serde(default)]
    pub device_ids: Vec<DeviceId>,
}

/// A claimed key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimedKey {
    /// The key id.
    pub key_id: String,
    /// Curve25519 public key.
    pub key: String,
    /// True when the device had no one-time key left and this is its fallback key.
    pub fallback: bool,
}

/// One device's keys in a claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimedDevice {
    /// The device's identity keys.
    #[serde(flatten)]
    pub keys: DeviceKeys,
    /// The claimed key, or none when the device has neither one-time nor fallback keys.
    pub one_time_key: Option<ClaimedKey>,
}

/// Answer to `POST /keys/claim`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeysClaimResponse {
    /// The user.
    pub user_id: UserId,
    /// One entry per active device.
    pub devices: Vec<ClaimedDevice>,
}

/// One recipient device's ciphertext in a send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutgoingEnvelope {
    /// Recipient device.
    pub device_id: DeviceId,
    /// Olm message type: 0 pre-key, 1 normal.
    pub msg_type: u8,
    /// Ciphertext, unpadded standard base64 as vodozemac encodes it.
    pub body: String,
    /// The Olm session it was encrypted on (public: both sides derive it from
    /// public keys), so a session can be reset and its in-flight messages found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
}

/// `POST /messages` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Recipient user.
    pub recipient_id: UserId,
    /// Client-chosen id that makes the send idempotent (per sending device).
    pub client_message_id: ClientMessageId,
    /// Algorithm of the ciphertexts.
    #[serde(default = "default_algorithm")]
    pub encryption_algorithm: String,
    /// Exactly one envelope per current device of the recipient; for a resend,
    /// one per device that asked for it.
    pub envelopes: Vec<OutgoingEnvelope>,
    /// The message this re-encrypts, answering `request-resend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend_of: Option<MessageId>,
    /// Current devices of the recipient the sender does not encrypt to, because
    /// the recipient's identity key did not certify them (the sender's judgement).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub untrusted_devices: Vec<DeviceId>,
}

fn default_algorithm() -> String {
    OLM_ALGORITHM.to_owned()
}

/// Sequence number given to one recipient device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Recipient device.
    pub device_id: DeviceId,
    /// Its per-device sequence number.
    pub seq: u64,
}

/// Answer to `POST /messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendResponse {
    /// Server-assigned id of the message.
    pub message_id: MessageId,
    /// RFC 3339 time the server accepted (and durably stored) it.
    pub accepted_at: Timestamp,
    /// One per recipient device.
    pub deliveries: Vec<Delivery>,
    /// True when this answers a retry of an earlier identical send.
    pub duplicate: bool,
    /// The signed `accepted` receipt.
    pub receipt: crate::receipt::ReceiptView,
}

/// `details` of a `device_list_mismatch` error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceListMismatch {
    /// Current devices that got no envelope.
    pub missing: Vec<DeviceId>,
    /// Envelopes for devices that are not current (or duplicated).
    pub extra: Vec<DeviceId>,
    /// The recipient's current devices.
    pub current: Vec<DeviceId>,
}

/// One message waiting for the calling device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxMessage {
    /// Per-device sequence number (1, 2, 3 … without gaps).
    pub seq: u64,
    /// The message id (shared by the copies for the recipient's other devices).
    pub message_id: MessageId,
    /// Sender user.
    pub sender_id: UserId,
    /// Sender device.
    pub sender_device_id: DeviceId,
    /// Algorithm of the ciphertext.
    pub encryption_algorithm: String,
    /// Olm message type.
    pub msg_type: u8,
    /// Ciphertext.
    pub body: String,
    /// RFC 3339 acceptance time.
    pub created_at: Timestamp,
    /// The Olm session the sender says it used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// For a resend: the original message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend_of: Option<MessageId>,
}

/// Answer to `GET /messages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxResponse {
    /// Messages in sequence order.
    pub messages: Vec<InboxMessage>,
    /// Pass as `after` to get the next page.
    pub next_after: u64,
    /// Whether more messages wait beyond this page.
    pub more: bool,
}

/// `POST /messages/ack` body: everything up to and including `up_to_seq` was processed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Highest processed sequence number.
    pub up_to_seq: u64,
}

/// Answer to `POST /messages/ack`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckResponse {
    /// How many messages this ack removed from the queue.
    pub acknowledged: u64,
}

/// A frame the server pushes over `GET /ws`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PushEvent {
    /// A new message for this device.
    Message(InboxMessage),
    /// Something new in the log of a group this device is in (or a Welcome to one).
    Group(GroupNotice),
    /// A recipient asked this device to resend a message.
    Resend(crate::repair::ResendNotice),
    /// One of this device's Olm sessions was reset.
    SessionReset(crate::repair::SessionResetNotice),
}

/// A nudge to fetch a group's log: the entry itself is read with `GET /groups/{group_id}/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupNotice {
    /// The group.
    pub group_id: GroupId,
    /// Position of the new entry in the group's log.
    pub seq: u64,
    /// `commit`, `application` or `welcome`.
    pub kind: String,
}

/// Answer to `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `ok` or `unavailable`.
    pub status: String,
    /// Storage backend and whether it answered.
    pub storage: StorageHealth,
    /// Server version.
    pub version: String,
    /// The emergency lockdown in force (the client API answers 503 `locked_down`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockdown: Option<crate::emergency::LockdownState>,
}

/// Storage part of the health answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StorageHealth {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Whether a round trip succeeded.
    pub ok: bool,
    /// Round-trip time in milliseconds.
    pub latency_ms: f64,
}

/// Answer of the admin routes on `dpop:jti:<JTI>` (the embedded replay cache).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JtiStatus {
    /// The proof id.
    pub jti: String,
    /// Its cache key, the same as in Redis.
    pub key: String,
    /// Whether the server remembers it (a proof with it would be refused as a replay).
    pub seen: bool,
    /// Until when it is remembered (Unix seconds), if seen.
    pub expires_at: Option<i64>,
    /// For a clear: whether it was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared: Option<bool>,
}

/// Where a device is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// Registered with a link code, waiting for another device of the user to certify it.
    Pending,
    /// Certified and in use.
    Active,
    /// Removed by its user or an operator.
    Revoked,
    /// Its identity keys were revoked by an operator: it may fetch nothing and
    /// send nothing until it publishes new ones (`POST /devices/rekey`), and its
    /// old keys are not handed out.
    Rekey,
}

impl DeviceStatus {
    /// The status as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Rekey => "rekey",
        }
    }

    /// Parses a stored status.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Active, Self::Revoked, Self::Rekey]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for DeviceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod device_status_tests {
    use super::DeviceStatus;

    #[test]
    fn statuses_round_trip_on_the_wire() {
        for status in [
            DeviceStatus::Pending,
            DeviceStatus::Active,
            DeviceStatus::Revoked,
            DeviceStatus::Rekey,
        ] {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
            assert_eq!(DeviceStatus::parse(status.as_str()), Some(status));
        }
        assert!(serde_json::from_str::<DeviceStatus>("\"ghost\"").is_err());
    }
}
