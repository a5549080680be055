//! Rows as the store hands them out.
use atlas_proto::api::{ClaimedKey, DeviceKeys, OutgoingEnvelope};
use atlas_proto::{ClientMessageId, DeviceId, MessageId, UserId};
use time::OffsetDateTime;

/// A stored identifier, checked again on the way out: a row that no longer
/// passes its type's check is corruption, not input.
pub(crate) fn id<T>(value: String) -> crate::StoreResult<T>
where
    T: TryFrom<String, Error = atlas_proto::IdError>,
{
    T::try_from(value.clone())
        .map_err(|e| crate::StoreError::Corrupt(format!("stored id {value:?}: {e}")))
}

/// [`id`] of a column that may be NULL.
pub(crate) fn opt_id<T>(value: Option<String>) -> crate::StoreResult<Option<T>>
where
    T: TryFrom<String, Error = atlas_proto::IdError>,
{
    value.map(id).transpose()
}

/// A device as stored.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    /// Owner.
    pub user_id: UserId,
    /// Its public keys.
    pub keys: DeviceKeys,
    /// Pending, active or revoked.
    pub status: atlas_proto::api::DeviceStatus,
    /// Registration time.
    pub created_at: OffsetDateTime,
    /// Unclaimed one-time keys.
    pub one_time_keys: u64,
    /// Whether an active fallback key is published.
    pub fallback_key: bool,
    /// The user identity key's certificate (none while pending).
    pub certificate: Option<String>,
    /// The identity key's signature of its removal, if the user removed it.
    pub revocation: Option<String>,
    /// For a linked device: SHA-256 of the link token it used.
    pub link_token_hash: Option<Vec<u8>>,
    /// For a pending device: its proof of holding the link code.
    pub link_proof: Option<String>,
    /// Access tokens issued before this time (Unix seconds) are refused (set by
    /// an identity revocation and by the re-key after it).
    pub tokens_after: Option<i64>,
}

/// A new user's identity key and its certificate of the first device.
#[derive(Debug, Clone, Copy)]
pub struct NewIdentity<'a> {
    /// The identity key (public).
    pub identity_key: &'a str,
    /// Its certificate of the first device.
    pub certificate: &'a str,
}

/// How a new device row is vouched for.
#[derive(Debug, Clone, Copy)]
pub enum Certification<'a> {
    /// Certified by the identity key (the first device): active at once.
    Certified(&'a str),
    /// Linked with a link token: pending until an existing device certifies it.
    Linked {
        /// SHA-256 of the link token.
        token_hash: &'a [u8],
        /// The device's proof of holding the link code.
        proof: &'a str,
    },
}

/// A device's own view of its certification.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateRecord {
    /// `pending`, `active` or `revoked`.
    pub status: String,
    /// The certificate, once certified.
    pub certificate: Option<String>,
    /// The sealed identity key, until handed out.
    pub identity_transfer: Option<String>,
}

/// Which key a claim hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// A one-time key while there is one, else the fallback key.
    OneTimeFirst,
    /// The fallback key only (the target's one-time-key budget is spent).
    FallbackOnly,
}

/// One device's answer in a key claim.
#[derive(Debug, Clone)]
pub struct ClaimedDeviceRecord {
    /// The device's identity keys.
    pub keys: DeviceKeys,
    /// The key claimed for it, if it had any.
    pub key: Option<ClaimedKey>,
}

/// A send to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Server-assigned id.
    pub message_id: MessageId,
    /// Sender user.
    pub sender_id: UserId,
    /// Sender device.
    pub sender_device_id: DeviceId,
    /// Recipient user.
    pub recipient_id: UserId,
    /// Sender's idempotency key.
    pub client_message_id: ClientMessageId,
    /// Hash of the request body, to tell a retry from a reuse of the idempotency key.
    pub request_hash: Vec<u8>,
    /// Algorithm of the ciphertexts.
    pub encryption_algorithm: String,
    /// One ciphertext per recipient device (per requesting device for a resend).
    pub envelopes: Vec<OutgoingEnvelope>,
    /// Current devices of the recipient the sender does not trust, which get no copy.
    pub untrusted_devices: Vec<DeviceId>,
    /// Most unacknowledged messages a recipient device may hold; a send that
    /// would add to a fuller queue is refused ([`crate::StoreError::QueueFull`]).
    pub queue_limit: u64,
    /// The original message, for a resend.
    pub resend_of: Option<MessageId>,
    /// The DPoP proof id of the request and until when to remember it, recorded in
    /// the send's transaction (a replay is refused with [`crate::StoreError::Replay`]).
    pub proof_id: Option<(String, i64)>,
    /// For pre-key envelopes: the recipient device and the key it was encrypted to.
    pub prekey_keys: Vec<(DeviceId, String)>,
    /// Acceptance time.
    pub now: OffsetDateTime,
    /// The signed `accepted` receipt, stored in the same transaction.
    pub receipt: ReceiptRecord,
}

impl NewMessage {
    /// The key a device's pre-key envelope was encrypted to.
    pub fn prekey_key(&self, device: &DeviceId) -> Option<&str> {
        self.prekey_keys
            .iter()
            .find(|(d, _)| d == device)
            .map(|(_, k)| k.as_str())
    }
}

/// A signed receipt as stored. `expires_at` is the source of truth for its
/// validity: a reissue signs the same claims with it and the current key.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiptRecord {
    /// Receipt id (kept across reissues).
    pub receipt_id: String,
    /// The message.
    pub message_id: MessageId,
    /// `accepted` or `delivered`.
    pub receipt_type: atlas_proto::receipt::ReceiptType,
    /// The acknowledging device (`delivered` only).
    pub device_id: Option<DeviceId>,
    /// Sending user (who may read and reissue it).
    pub sender_id: UserId,
    /// Recipient user (who may read it).
    pub recipient_id: UserId,
    /// Signing key id.
    pub kid: String,
    /// The flattened JWS JSON.
    pub jws: String,
    /// Signing time.
    pub issued_at: OffsetDateTime,
    /// End of validity.
    pub expires_at: OffsetDateTime,
}

/// A message a device is acknowledging, as the `delivered` receipt needs it.
#[derive(Debug, Clone)]
pub struct AckedMessage {
    /// The message.
    pub message_id: MessageId,
    /// Sending user.
    pub sender_id: UserId,
    /// Sending device.
    pub sender_device_id: DeviceId,
    /// Its ciphertext for the acknowledging device (base64).
    pub body: String,
    /// When it was accepted.
    pub accepted_at: OffsetDateTime,
}

/// Builds the `delivered` receipt of an acknowledged message (the store calls it inside the ack transaction).
pub type DeliveredReceipts<'a> = &'a (dyn Fn(&AckedMessage) -> ReceiptRecord + Send + Sync);

/// What storing a send produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSend {
    /// The message id (the original one for a retried send).
    pub message_id: MessageId,
    /// When it was accepted.
    pub accepted_at: OffsetDateTime,
    /// Sequence number per recipient device.
    pub deliveries: Vec<(DeviceId, u64)>,
    /// True when this was a retry of an already stored send.
    pub duplicate: bool,
}

/// A refresh token's stored form.
#[derive(Debug, Clone)]
pub struct RefreshTokenRecord {
    /// SHA-256 of the token.
    pub token_hash: Vec<u8>,
    /// Owner.
    pub user_id: UserId,
    /// Device.
    pub device_id: DeviceId,
    /// DPoP key thumbprint it is bound to.
    pub jkt: String,
    /// The chain it belongs to (every token rotated from one device-signature grant).
    pub family_id: String,
    /// Expiry: the chain's, which rotation does not extend.
    pub expires_at: OffsetDateTime,
}

/// What presenting a refresh token came to.
#[derive(Debug, Clone)]
pub enum RefreshUse {
    /// Unused and unexpired: it is spent now.
    Fresh(RefreshTokenRecord),
    /// Already spent or revoked: its whole family is revoked now.
    Replayed {
        /// The revoked family.
        family_id: String,
        /// Its device.
        device_id: DeviceId,
    },
    /// Unknown or expired.
    Invalid,
}

/// An operator token as stored (the token itself is never stored).
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorTokenRecord {
    /// Public id, used to revoke it.
    pub token_id: String,
    /// SHA-256 of the token.
    pub token_hash: Vec<u8>,
    /// What it may do.
    pub scopes: Vec<String>,
    /// Who or what it is for.
    pub label: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// End of validity (none for tokens made before expiry existed).
    pub expires_at: Option<OffsetDateTime>,
}

/// A server-held key (token signing, nonce MAC, …).
#[derive(Clone)]
pub struct ServerKeyRecord {
    /// Key id.
    pub kid: String,
    /// What it is for.
    pub purpose: String,
    /// Algorithm name.
    pub alg: String,
    /// Secret bytes.
    pub secret: Vec<u8>,
    /// Creation time.
    pub created_at: OffsetDateTime,
}
impl std::fmt::Debug for ServerKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log line.
        f.debug_struct("ServerKeyRecord")
            .field("kid", &self.kid)
            .field("purpose", &self.purpose)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A server key with its lifecycle (receipt-signing keys rotate and are revoked).
#[derive(Debug, Clone)]
pub struct ServerKeyState {
    /// The key.
    pub key: ServerKeyRecord,
    /// `active`, `retired` or `revoked`.
    pub status: String,
    /// When it stopped being the active key.
    pub retired_at: Option<OffsetDateTime>,
    /// When a retired key leaves the published key set.
    pub publish_until: Option<OffsetDateTime>,
    /// When it was revoked.
    pub revoked_at: Option<OffsetDateTime>,
}

impl ServerKeyState {
    /// Whether verifiers should still find it: active, or retired within its overlap.
    pub fn published(&self, now: OffsetDateTime) -> bool {
        match self.status.as_str() {
            "active" => true,
            "retired" => self.publish_until.is_some_and(|until| until > now),
            _ => false,
        }
    }
}

/// One row of a send check: `("s", message_id, request_hash, 0)` for an earlier
/// send with the same client message id, `("d", device_id, None, next_seq)` per active recipient device.
/// `(kind, value, hash, next_seq, queued)`: the send log's entry (`s`) or a device (`d`).
pub(crate) type CheckRow = (String, String, Option<Vec<u8>>, i64, i64);

/// The verdict on a send before anything is written.
pub(crate) enum SendCheck {
    /// A retry of a stored send: answer with the original.
    Duplicate(StoredSend),
    /// New and matching the recipient's devices.
    Accept,
}

/// Compares the envelopes of a send with the recipient's current devices.
pub(crate) fn device_list_mismatch(
    current: &[DeviceId],
    envelopes: &[OutgoingEnvelope],
) -> Option<atlas_proto::api::DeviceListMismatch> {
    let mut seen = std::collections::BTreeSet::new();
    let mut extra = Vec::new();
    for e in envelopes {
        if !current.contains(&e.device_id) || !seen.insert(e.device_id.clone()) {
            extra.push(e.device_id.clone());
        }
    }
    let missing: Vec<DeviceId> = current
        .iter()
        .filter(|d| !seen.contains(*d))
        .cloned()
        .collect();
    (!missing.is_empty() || !extra.is_empty()).then(|| atlas_proto::api::DeviceListMismatch {
        missing,
        extra,
        current: current.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_key_prints_without_its_secret() {
        let key = ServerKeyRecord {
            kid: "k1".into(),
            purpose: "access-token".into(),
            alg: "HS256".into(),
            secret: b"hunter2-hunter2".to_vec(),
            created_at: OffsetDateTime::UNIX_EPOCH,
        };
        let printed = format!("{key:?}");
        assert!(printed.contains("k1"), "{printed}");
        assert!(
            !printed.contains("secret") && !printed.contains("104"),
            "{printed}"
        );
    }
}
