//! Receipt issuing: the current signing key (cached, shared by every server
//! process through the store), the claims of `accepted` and `delivered`
//! receipts, and reissuing a stored receipt with the current key.
use crate::error::ApiError;
use crate::server_keys::ServerKeys;
use atlas_crypto::receipt::{ReceiptSigner, claims_of};
use atlas_proto::receipt::{
    CiphertextDigest, FlattenedJws, ReceiptClaims, ReceiptType, ReceiptView,
};
use atlas_proto::timestamp::rfc3339;
use atlas_proto::{DeviceId, MessageId, UserId, b64};
use atlas_store::{ReceiptRecord, ServerKeyRecord};
use sha2::{Digest, Sha256};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// `server_keys.purpose` of receipt-signing keys.
pub const SIGNING_PURPOSE: &str = "receipt-signing";

/// How long a process signs with a cached key before asking the store again,
/// which bounds how late other processes notice a rotation or revocation.
const KEY_CACHE: Duration = Duration::from_secs(5);

/// A fresh receipt-signing key record.
pub fn new_signing_key(now: OffsetDateTime) -> ServerKeyRecord {
    let (kid, seed) = ReceiptSigner::generate();
    ServerKeyRecord {
        kid,
        purpose: SIGNING_PURPOSE.into(),
        alg: "EdDSA".into(),
        secret: seed.to_vec(),
        created_at: now,
    }
}

/// The active signing key, cached for `KEY_CACHE`.
#[derive(Default)]
pub struct SigningKeys {
    cached: RwLock<Option<(Instant, Arc<ReceiptSigner>)>>,
}

impl SigningKeys {
    /// The key new receipts are signed with (created on first use).
    pub async fn current(
        &self,
        keys: &ServerKeys,
        now: OffsetDateTime,
    ) -> Result<Arc<ReceiptSigner>, ApiError> {
        if let Ok(guard) = self.cached.read()
            && let Some((at, signer)) = guard.as_ref()
            && at.elapsed() < KEY_CACHE
        {
            return Ok(signer.clone());
        }
        let make = move || new_signing_key(now);
        let record = keys.active(SIGNING_PURPOSE, &make).await?;
        let signer =
            Arc::new(ReceiptSigner::new(record.kid, &record.secret).map_err(ApiError::internal)?);
        if let Ok(mut guard) = self.cached.write() {
            *guard = Some((Instant::now(), signer.clone()));
        }
        Ok(signer)
    }

    /// Forgets the cached key (after this process rotated or revoked one).
    pub fn invalidate(&self) {
        if let Ok(mut guard) = self.cached.write() {
            *guard = None;
        }
    }
}

/// Who issues receipts and for how long they are valid.
#[derive(Debug, Clone)]
pub struct ReceiptPolicy {
    /// `iss` of every receipt: the server's public URL.
    pub issuer: String,
    /// Validity of a new receipt.
    pub ttl: time::Duration,
}

/// SHA-256 of a ciphertext given as (padded or unpadded) standard base64; `None` if it is not base64.
pub fn ciphertext_digest(body: &str) -> Option<String> {
    let bytes = b64::decode_std_lenient(body).ok()?;
    Some(b64::encode(Sha256::digest(bytes)))
}

/// The parties and contents of a message, as a receipt states them.
pub struct MessageFacts<'a> {
    /// The message.
    pub message_id: &'a MessageId,
    /// Sending user.
    pub sender_id: &'a UserId,
    /// Sending device.
    pub sender_device_id: &'a DeviceId,
    /// Recipient user.
    pub recipient_id: &'a UserId,
    /// When the server accepted it.
    pub accepted_at: OffsetDateTime,
}

impl ReceiptPolicy {
    /// Signs a new receipt about `facts` at `now`; returns its row and the signed form.
    pub fn issue(
        &self,
        signer: &ReceiptSigner,
        facts: &MessageFacts<'_>,
        ciphertexts: Vec<CiphertextDigest>,
        delivered: Option<(&DeviceId, OffsetDateTime)>,
        now: OffsetDateTime,
    ) -> (ReceiptRecord, FlattenedJws) {
        let expires_at = now + self.ttl;
        let claims = ReceiptClaims {
            iss: self.issuer.clone(),
            receipt_id: uuid::Uuid::now_v7().to_string(),
            receipt_type: if delivered.is_some() {
                ReceiptType::Delivered
            } else {
                ReceiptType::Accepted
            },
            message_id: facts.message_id.clone(),
            sender_id: facts.sender_id.clone(),
            sender_device_id: facts.sender_device_id.clone(),
            recipient_id: facts.recipient_id.clone(),
            ciphertexts,
            accepted_at: rfc3339(facts.accepted_at),
            delivered_at: delivered.map(|(_, at)| rfc3339(at)),
            iat: now.unix_timestamp(),
            exp: expires_at.unix_timestamp(),
        };
        let jws = signer.sign(&claims);
        let record = ReceiptRecord {
            receipt_id: claims.receipt_id,
            message_id: claims.message_id,
            receipt_type: claims.receipt_type,
            device_id: delivered.map(|(device, _)| device.clone()),
            sender_id: claims.sender_id,
            recipient_id: claims.recipient_id,
            kid: signer.kid().to_owned(),
            jws: jws.to_json(),
            issued_at: now,
            expires_at,
        };
        (record, jws)
    }
}

/// Why a stored receipt cannot be reissued.
#[derive(Debug, thiserror::Error)]
pub enum ReissueError {
    /// Its validity in the `receipts` table has ended.
    #[error("receipt {receipt_id} expired at {expires_at}")]
    Expired {
        /// The receipt.
        receipt_id: String,
        /// Its `expires_at`.
        expires_at: String,
    },
    /// The stored receipt does not decode (corruption or our bug).
    #[error("stored receipt {0} is unreadable")]
    Unreadable(String),
}

/// Signs a stored receipt again with `signer`: same claims, `iat` now, `exp`
/// from the row (the table decides validity). Returns the new JWS JSON.
pub fn resign(
    record: &ReceiptRecord,
    signer: &ReceiptSigner,
    now: OffsetDateTime,
) -> Result<String, ReissueError> {
    if record.expires_at <= now {
        return Err(ReissueError::Expired {
            receipt_id: record.receipt_id.clone(),
            expires_at: rfc3339(record.expires_at),
        });
    }
    let unreadable = || ReissueError::Unreadable(record.receipt_id.clone());
    let stored = serde_json::from_str(&record.jws).map_err(|_| unreadable())?;
    let mut claims = claims_of(&stored).map_err(|_| unreadable())?;
    claims.iat = now.unix_timestamp();
    claims.exp = record.expires_at.unix_timestamp();
    Ok(signer.sign(&claims).to_json())
}

/// The API form of a stored receipt.
pub fn view(record: &ReceiptRecord) -> Result<ReceiptView, ApiError> {
    let jws = serde_json::from_str(&record.jws).map_err(ApiError::internal)?;
    Ok(view_signed(record, jws))
}

/// The API form of a receipt whose signed form is at hand.
pub fn view_signed(record: &ReceiptRecord, jws: FlattenedJws) -> ReceiptView {
    ReceiptView {
        receipt_id: record.receipt_id.clone(),
        receipt_type: record.receipt_type,
        device_id: record.device_id.clone(),
        kid: record.kid.clone(),
        issued_at: record.issued_at.into(),
        expires_at: record.expires_at.into(),
        base64: jws.to_base64(),
        jws,
    }
}
