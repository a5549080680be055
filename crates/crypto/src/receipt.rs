//! Receipt signing (server side) and decoding: an Ed25519 JWS in flattened
//! JSON serialization whose `kid` sits in the unprotected header, so an
//! operator reads it with `base64 -d | jq .` and any JOSE library verifies it
//! against the published JWKS.
use atlas_proto::b64;
use atlas_proto::receipt::{FlattenedJws, ReceiptClaims, UnprotectedHeader};
use ed25519_dalek::Signer;
use serde_json::{Value, json};

/// The protected header of every receipt. `kid` is not in it: RFC 7515 §7.2.1
/// wants the two headers disjoint, and the unprotected one is where people look.
pub const PROTECTED_HEADER: &str = r#"{"alg":"EdDSA","typ":"atlas-receipt+jws"}"#;

/// Largest receipt input we parse (JSON or base64); real receipts are a few KiB.
pub const MAX_RECEIPT_LEN: usize = 64 * 1024;

/// Why a receipt could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Larger than [`MAX_RECEIPT_LEN`].
    #[error("receipt is larger than {MAX_RECEIPT_LEN} bytes")]
    TooLarge,
    /// Neither flattened JWS JSON nor base64 of it.
    #[error("not a receipt: {0}")]
    Malformed(String),
    /// A stored signing secret is not a 32-byte Ed25519 seed (our bug or corruption).
    #[error("signing key is not a 32-byte Ed25519 seed")]
    BadSigningKey,
}

/// Signs receipts with one Ed25519 key.
pub struct ReceiptSigner {
    kid: String,
    key: ed25519_dalek::SigningKey,
}

impl ReceiptSigner {
    /// A signer from a stored key id and 32-byte seed.
    pub fn new(kid: impl Into<String>, seed: &[u8]) -> Result<Self, ReceiptError> {
        let seed: [u8; 32] = seed.try_into().map_err(|_| ReceiptError::BadSigningKey)?;
        Ok(Self {
            kid: kid.into(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// A fresh key: its id (the RFC 7638 thumbprint, so it names the key itself) and seed.
    pub fn generate() -> (String, [u8; 32]) {
        let seed = crate::random_bytes::<32>();
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let kid = crate::jwk::PublicJwk::Ed25519(key.verifying_key()).thumbprint();
        (kid, seed)
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &ReceiptClaims) -> FlattenedJws {
        let protected = b64::encode(PROTECTED_HEADER);
        let payload = b64::encode(serde_json::to_vec(claims).unwrap_or_default());
        let signature = self.key.sign(format!("{protected}.{payload}").as_bytes());
        FlattenedJws {
            protected,
            header: UnprotectedHeader {
                kid: self.kid.clone(),
            },
            payload,
            signature: b64::encode(signature.to_bytes()),
        }
    }
}

/// The JWKS entry (RFC 7517, RFC 8037) for the key with this seed.
pub fn published_jwk(kid: &str, seed: &[u8]) -> Result<Value, ReceiptError> {
    let signer = ReceiptSigner::new(kid, seed)?;
    let mut jwk = crate::jwk::PublicJwk::Ed25519(signer.key.verifying_key()).to_json();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    jwk["alg"] = json!("EdDSA");
    Ok(jwk)
}

/// How the receipt was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptForm {
    /// The flattened JWS JSON.
    Json,
    /// Base64 (standard or url-safe) of that JSON.
    Base64,
}

/// Reads a receipt given as its JSON or as base64 of its JSON.
pub fn decode_receipt(input: &str) -> Result<(FlattenedJws, ReceiptForm), ReceiptError> {
    if input.len() > MAX_RECEIPT_LEN {
        return Err(ReceiptError::TooLarge);
    }
    let input = input.trim();
    if input.starts_with('{') {
        return parse_json(input.as_bytes()).map(|jws| (jws, ReceiptForm::Json));
    }
    let compact: String = input.chars().filter(|c| !c.is_whitespace()).collect();
    let unpadded = compact.trim_end_matches('=');
    let bytes = b64::decode(&unpadded.replace('+', "-").replace('/', "_")).map_err(|_| {
        ReceiptError::Malformed("neither JSON nor base64 (did the copy lose characters?)".into())
    })?;
    parse_json(&bytes).map(|jws| (jws, ReceiptForm::Base64))
}

fn parse_json(bytes: &[u8]) -> Result<FlattenedJws, ReceiptError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ReceiptError::Malformed(format!(
            "expected JWS JSON with protected, header.kid, payload and signature: {e}"
        ))
    })
}

/// The claims of a receipt, read without verifying it (for reissuing one we stored).
pub fn claims_of(jws: &FlattenedJws) -> Result<ReceiptClaims, ReceiptError> {
    let bytes = b64::decode(&jws.payload)
        .map_err(|_| ReceiptError::Malformed("payload is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ReceiptError::Malformed(format!("payload is not receipt claims: {e}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use atlas_proto::receipt::{CiphertextDigest, ReceiptType};
    use atlas_proto::{DeviceId, UserId};

    /// A receipt of a message accepted at 2025-10-29T00:00:00Z.
    pub(crate) fn claims() -> ReceiptClaims {
        ReceiptClaims {
            iss: "https://api.atlas.dev".into(),
            receipt_id: "r1".into(),
            receipt_type: ReceiptType::Accepted,
            // A UUIDv7 of the acceptance time (2025-10-29T00:00:00Z).
            message_id: "019a2d43-a800-7000-8000-000000000000".parse().unwrap(),
            sender_id: UserId::new("alice").unwrap(),
            sender_device_id: DeviceId::new("A1").unwrap(),
            recipient_id: UserId::new("bob").unwrap(),
            ciphertexts: vec![CiphertextDigest {
                device_id: DeviceId::new("B1").unwrap(),
                sha256: b64::encode([7u8; 32]),
            }],
            accepted_at: "2025-10-29T00:00:00Z".into(),
            delivered_at: None,
            iat: 1_761_696_000,
            exp: 1_761_696_000 + 86_400,
        }
    }

    #[test]
    fn json_and_base64_forms_decode_to_the_same_receipt() {
        let (kid, seed) = ReceiptSigner::generate();
        let jws = ReceiptSigner::new(&kid, &seed).unwrap().sign(&claims());
        let (from_json, form) = decode_receipt(&jws.to_json()).unwrap();
        assert_eq!((from_json.clone(), form), (jws.clone(), ReceiptForm::Json));
        let (from_b64, form) = decode_receipt(&jws.to_base64()).unwrap();
        assert_eq!((from_b64, form), (jws.clone(), ReceiptForm::Base64));
        assert_eq!(claims_of(&jws).unwrap(), claims());
        // What `base64 -d | jq .` shows: the kid in plain sight.
        let shown: Value =
            serde_json::from_slice(&b64::decode_std(&jws.to_base64()).unwrap()).unwrap();
        assert_eq!(shown["header"]["kid"], json!(kid));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        for bad in ["", "{", "{}", "!!!", "eyJmb28iOjF9", r#"{"payload":"x"}"#] {
            assert!(
                matches!(decode_receipt(bad), Err(ReceiptError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            decode_receipt(&"A".repeat(MAX_RECEIPT_LEN + 1)),
            Err(ReceiptError::TooLarge)
        );
        assert!(ReceiptSigner::new("k", &[0; 31]).is_err());
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint_and_the_jwk_is_public() {
        let (kid, seed) = ReceiptSigner::generate();
        let jwk = published_jwk(&kid, &seed).unwrap();
        assert_eq!(crate::jwk::thumbprint(&jwk).unwrap(), kid);
        assert_eq!(jwk["use"], "sig");
        assert!(jwk.get("d").is_none());
    }
}
