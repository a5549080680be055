//! Signed receipts: what the server attests about a message, the JWS JSON
//! serialization they travel in, and the API bodies that carry them.
use crate::b64;
use crate::ids::{DeviceId, MessageId, UserId};
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};

/// What a receipt attests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptType {
    /// The server durably stored the message for every recipient device.
    Accepted,
    /// One recipient device acknowledged the message.
    Delivered,
}

impl ReceiptType {
    /// The name stored in `receipts.receipt_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Delivered => "delivered",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "accepted" => Some(Self::Accepted),
            "delivered" => Some(Self::Delivered),
            _ => None,
        }
    }
}

/// The digest of one recipient device's ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiphertextDigest {
    /// The recipient device.
    pub device_id: DeviceId,
    /// SHA-256 of the ciphertext bytes (base64-decoded `body`), base64url without padding.
    pub sha256: String,
}

/// The signed payload of a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptClaims {
    /// Issuer: the server's public URL (its JWKS is at `<iss>/.well-known/jwks.json`).
    pub iss: String,
    /// Receipt id (the `receipts.receipt_id` row); stays the same when reissued.
    pub receipt_id: String,
    /// `accepted` or `delivered`.
    pub receipt_type: ReceiptType,
    /// The message.
    pub message_id: MessageId,
    /// Sending user.
    pub sender_id: UserId,
    /// Sending device.
    pub sender_device_id: DeviceId,
    /// Recipient user.
    pub recipient_id: UserId,
    /// Ciphertext digests: every recipient device for `accepted`, the acknowledging one for `delivered`.
    pub ciphertexts: Vec<CiphertextDigest>,
    /// RFC 3339 time the server accepted the message.
    pub accepted_at: String,
    /// RFC 3339 time the device acknowledged it (`delivered` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    /// Signing time, Unix seconds.
    pub iat: i64,
    /// End of validity, Unix seconds.
    pub exp: i64,
}

/// The unprotected header of a receipt: the key id, readable without decoding anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnprotectedHeader {
    /// The signing key's id in the JWKS.
    pub kid: String,
}

/// A JWS in flattened JSON serialization (RFC 7515 §7.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlattenedJws {
    /// base64url of the protected header JSON (`{"alg":"EdDSA",…}`).
    pub protected: String,
    /// Unprotected header with the `kid`.
    pub header: UnprotectedHeader,
    /// base64url of the claims JSON.
    pub payload: String,
    /// base64url of the signature.
    pub signature: String,
}

impl FlattenedJws {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Standard base64 (with padding) of the JSON text, so `base64 -d | jq .` shows it.
    pub fn to_base64(&self) -> String {
        b64::encode_std(self.to_json())
    }
}

/// A receipt as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptView {
    /// `receipts.receipt_id`.
    pub receipt_id: String,
    /// `accepted` or `delivered`.
    pub receipt_type: ReceiptType,
    /// The acknowledging device (`delivered` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<DeviceId>,
    /// Key id it is signed with.
    pub kid: String,
    /// RFC 3339 signing time.
    pub issued_at: Timestamp,
    /// RFC 3339 end of validity (from the `receipts` table).
    pub expires_at: Timestamp,
    /// The receipt itself.
    pub jws: FlattenedJws,
    /// The same, as standard base64 of its JSON.
    pub base64: String,
}

/// `GET /receipts/{message_id}` and `POST /receipts/{message_id}/reissue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptsResponse {
    /// The message.
    pub message_id: MessageId,
    /// Its receipts, `accepted` first, then `delivered` per device.
    pub receipts: Vec<ReceiptView>,
}

/// One receipt-signing key as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SigningKeyView {
    /// Key id.
    pub kid: String,
    /// `EdDSA`.
    pub alg: String,
    /// `active` (signs new receipts), `retired` (published until `publish_until`) or `revoked`.
    pub status: String,
    /// RFC 3339 creation time.
    pub created_at: Timestamp,
    /// RFC 3339 time it stopped signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<Timestamp>,
    /// RFC 3339 time it leaves the JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_until: Option<String>,
    /// RFC 3339 revocation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
    /// Whether `/.well-known/jwks.json` lists it now.
    pub published: bool,
}

/// `GET /admin/signing-keys` and the answer of rotate/revoke.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SigningKeysResponse {
    /// Every receipt-signing key, newest first.
    pub keys: Vec<SigningKeyView>,
}

/// Answer of `POST /admin/token-key/rotate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenKeyRotated {
    /// Id of the new access-token key.
    pub kid: String,
    /// Id of the key that stopped verifying.
    pub previous_kid: String,
    /// When (RFC 3339).
    pub rotated_at: Timestamp,
    /// Unspent refresh tokens revoked with it.
    pub refresh_tokens_revoked: u64,
}

/// `POST /admin/signing-keys/rotate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateSigningRequest {
    /// How long the previous key stays published, in seconds (default: the receipt lifetime).
    #[serde(default)]
    pub overlap_seconds: Option<u64>,
}
