//! Device key signatures: a device signs its keys and its token requests with
//! its Ed25519 identity key, in vodozemac's unpadded standard base64.
use atlas_proto::UserId;
use atlas_proto::api::DeviceKeys;
use vodozemac::{Ed25519PublicKey, Ed25519Signature};

/// Why a device signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceSignatureError {
    /// The public key is not a valid Ed25519 key in base64.
    #[error("ed25519 key is malformed")]
    BadKey,
    /// The Curve25519 key is not a valid key in base64.
    #[error("curve25519 key is malformed")]
    BadCurveKey,
    /// The signature is malformed or does not verify.
    #[error("signature does not verify")]
    BadSignature,
}

/// Verifies `signature` by `ed25519` (both unpadded standard base64) over `message`.
pub fn verify(ed25519: &str, message: &[u8], signature: &str) -> Result<(), DeviceSignatureError> {
    let key = Ed25519PublicKey::from_base64(ed25519).map_err(|_| DeviceSignatureError::BadKey)?;
    let sig =
        Ed25519Signature::from_base64(signature).map_err(|_| DeviceSignatureError::BadSignature)?;
    key.verify(message, &sig)
        .map_err(|_| DeviceSignatureError::BadSignature)
}

/// Checks that a device's key bundle is well formed and self-signed.
pub fn verify_device_keys(user_id: &UserId, keys: &DeviceKeys) -> Result<(), DeviceSignatureError> {
    vodozemac::Curve25519PublicKey::from_base64(&keys.curve25519)
        .map_err(|_| DeviceSignatureError::BadCurveKey)?;
    verify(
        &keys.ed25519,
        keys.signing_payload(user_id).as_bytes(),
        &keys.signature,
    )
}

/// Checks that `key` is a Curve25519 public key in base64.
pub fn check_curve25519(key: &str) -> Result<(), DeviceSignatureError> {
    vodozemac::Curve25519PublicKey::from_base64(key)
        .map(|_| ())
        .map_err(|_| DeviceSignatureError::BadCurveKey)
}
