//! Compact JWS (RFC 7515) with EdDSA (RFC 8037) and ES256, the two algorithms
//! Atlas accepts from others, plus HS256 for tokens the server issues to
//! itself. Deliberately small: no `none`, no RSA, and HS256 is never accepted
//! where a public key is expected.
use crate::jwk::PublicJwk;
use atlas_proto::b64;
use p256::ecdsa::signature::{Signer, Verifier};
use serde_json::Value;

/// Longest compact JWS we parse; DPoP proofs and tokens are far smaller.
pub const MAX_COMPACT_LEN: usize = 8 * 1024;

/// Why a JWS was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not three base64url parts, or a part is not the JSON it should be.
    #[error("malformed JWS: {0}")]
    Malformed(&'static str),
    /// `alg` is missing, unsupported, or does not match the key.
    #[error("unsupported or mismatched alg")]
    Alg,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
}

/// A private key that signs JWS.
pub enum JwsSigner {
    /// Ed25519, `alg` EdDSA.
    Ed25519(ed25519_dalek::SigningKey),
    /// P-256, `alg` ES256.
    P256(p256::ecdsa::SigningKey),
}

impl JwsSigner {
    /// A fresh Ed25519 key.
    pub fn generate_ed25519() -> Self {
        Self::Ed25519(ed25519_dalek::SigningKey::from_bytes(&crate::random_bytes()))
    }

    /// A fresh P-256 key.
    pub fn generate_p256() -> Self {
        loop {
            // Rejection sampling: a random 32-byte string is a valid scalar with overwhelming probability.
            if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&crate::random_bytes::<32>()) {
                return Self::P256(key);
            }
        }
    }

    /// Restores a key from its algorithm name and secret bytes.
    pub fn from_secret(alg: &str, secret: &[u8]) -> Option<Self> {
        match alg {
            "EdDSA" => Some(Self::Ed25519(ed25519_dalek::SigningKey::from_bytes(
                &secret.try_into().ok()?,
            ))),
            "ES256" => p256::ecdsa::SigningKey::from_slice(secret)
                .ok()
                .map(Self::P256),
            _ => None,
        }
    }

    /// The secret bytes, for storage encrypted at rest.
    pub fn secret_bytes(&self) -> Vec<u8> {
        match self {
            Self::Ed25519(key) => key.to_bytes().to_vec(),
            Self::P256(key) => key.to_bytes().to_vec(),
        }
    }

    /// The JWS `alg`.
    pub fn alg(&self) -> &'static str {
        match self {
            Self::Ed25519(_) => "EdDSA",
            Self::P256(_) => "ES256",
        }
    }

    /// The public half as a JWK.
    pub fn public_jwk(&self) -> PublicJwk {
        match self {
            Self::Ed25519(key) => PublicJwk::Ed25519(key.verifying_key()),
            Self::P256(key) => PublicJwk::P256(*key.verifying_key()),
        }
    }

    /// Raw signature over `input` (64 bytes for both algorithms).
    pub fn sign_raw(&self, input: &[u8]) -> Vec<u8> {
        match self {
            Self::Ed25519(key) => key.sign(input).to_bytes().to_vec(),
            Self::P256(key) => {
                let sig: p256::ecdsa::Signature = key.sign(input);
                sig.to_bytes().to_vec()
            }
        }
    }

    /// Signs `payload` under `header` (whose `alg` is set here) as a compact JWS.
    pub fn sign_compact(&self, mut header: Value, payload: &[u8]) -> String {
        header["alg"] = Value::from(self.alg());
        let signing_input = format!(
            "{}.{}",
            b64::encode(header.to_string()),
            b64::encode(payload)
        );
        let signature = self.sign_raw(signing_input.as_bytes());
        format!("{signing_input}.{}", b64::encode(signature))
    }
}

/// A secret key for HS256 JWS that only its holder issues and verifies
/// (access tokens: a MAC costs a microsecond where a signature check costs forty).
pub struct HmacJwsKey {
    key: [u8; 32],
}

impl Drop for HmacJwsKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl HmacJwsKey {
    /// A key from 32 secret bytes.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// Signs `payload` under `header` (whose `alg` is set to HS256) as a compact JWS.
    pub fn sign_compact(&self, mut header: Value, payload: &[u8]) -> String {
        use hmac::Mac;
        header["alg"] = Value::from("HS256");
        let signing_input = format!(
            "{}.{}",
            b64::encode(header.to_string()),
            b64::encode(payload)
        );
        let tag = crate::hmac_sha256(&self.key, signing_input.as_bytes())
            .finalize()
            .into_bytes();
        format!("{signing_input}.{}", b64::encode(tag))
    }

    /// Verifies an HS256 JWS made with this key (constant-time comparison).
    pub fn verify(&self, jws: &CompactJws<'_>) -> Result<(), JwsError> {
        use hmac::Mac;
        if jws.alg() != Some("HS256") {
            return Err(JwsError::Alg);
        }
        crate::hmac_sha256(&self.key, jws.signing_input.as_bytes())
            .verify_slice(&jws.signature)
            .map_err(|_| JwsError::BadSignature)
    }
}

/// A parsed, not yet verified, compact JWS.
#[derive(Debug, Clone)]
pub struct CompactJws<'a> {
    /// The protected header.
    pub header: Value,
    /// The decoded payload bytes.
    pub payload: Vec<u8>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

impl<'a> CompactJws<'a> {
    /// Splits and decodes a compact JWS; the header must be a JSON object.
    pub fn parse(token: &'a str) -> Result<Self, JwsError> {
        if token.len() > MAX_COMPACT_LEN {
            return Err(JwsError::Malformed("too long"));
        }
        let (signing_input, signature) = token
            .rsplit_once('.')
            .ok_or(JwsError::Malformed("not three parts"))?;
        let (header_b64, payload_b64) = signing_input
            .split_once('.')
            .ok_or(JwsError::Malformed("not three parts"))?;
        if payload_b64.contains('.') {
            return Err(JwsError::Malformed("not three parts"));
        }
        let header_bytes =
            b64::decode(header_b64).map_err(|_| JwsError::Malformed("header is not base64url"))?;
        let header: Value = serde_json::from_slice(&header_bytes)
            .map_err(|_| JwsError::Malformed("header is not JSON"))?;
        if !header.is_object() {
            return Err(JwsError::Malformed("header is not an object"));
        }
        let payload = b64::decode(payload_b64)
            .map_err(|_| JwsError::Malformed("payload is not base64url"))?;
        let signature = b64::decode(signature)
            .map_err(|_| JwsError::Malformed("signature is not base64url"))?;
        Ok(Self {
            header,
            payload,
            signing_input,
            signature,
        })
    }

    /// The header's `alg`, if it is a string.
    pub fn alg(&self) -> Option<&str> {
        self.header.get("alg").and_then(Value::as_str)
    }

    /// Verifies the signature with `key`; the header's `alg` must be the key's.
    pub fn verify(&self, key: &PublicJwk) -> Result<(), JwsError> {
        if self.alg() != Some(key.alg()) {
            return Err(JwsError::Alg);
        }
        verify_raw(key, self.signing_input.as_bytes(), &self.signature)
    }

    /// The payload parsed as a JSON object.
    pub fn claims(&self) -> Result<serde_json::Map<String, Value>, JwsError> {
        match serde_json::from_slice(&self.payload) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(JwsError::Malformed("payload is not a JSON object")),
        }
    }
}

/// Verifies a raw 64-byte signature over `input`.
pub fn verify_raw(key: &PublicJwk, input: &[u8], signature: &[u8]) -> Result<(), JwsError> {
    match key {
        PublicJwk::Ed25519(vk) => {
            let sig = ed25519_dalek::Signature::from_slice(signature)
                .map_err(|_| JwsError::BadSignature)?;
            vk.verify_strict(input, &sig)
                .map_err(|_| JwsError::BadSignature)
        }
        PublicJwk::P256(vk) => {
            let sig = p256::ecdsa::Signature::from_slice(signature)
                .map_err(|_| JwsError::BadSignature)?;
            vk.verify(input, &sig).map_err(|_| JwsError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jose() -> Value {
        serde_json::from_str(include_str!("../test-vectors/rfc7638-rfc8037-jose.json")).unwrap()
    }

    #[test]
    fn rfc8037_signature_is_reproduced_and_verifies() {
        let v = jose();
        let d = b64::decode(v["rfc8037"]["private_jwk"]["d"].as_str().unwrap()).unwrap();
        let signer = JwsSigner::from_secret("EdDSA", &d).unwrap();
        let token = signer.sign_raw(b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc");
        let expected = v["rfc8037"]["jws_compact"].as_str().unwrap();
        assert_eq!(b64::encode(token), expected.rsplit('.').next().unwrap());

        let parsed = CompactJws::parse(expected).unwrap();
        let key = PublicJwk::from_json(&v["rfc8037"]["public_jwk"]).unwrap();
        parsed.verify(&key).unwrap();
        assert_eq!(parsed.payload, b"Example of Ed25519 signing");
    }

    #[test]
    fn tampering_is_detected() {
        let v = jose();
        let key = PublicJwk::from_json(&v["rfc8037"]["public_jwk"]).unwrap();
        let good = v["rfc8037"]["jws_compact"].as_str().unwrap();
        let mut parts: Vec<&str> = good.split('.').collect();
        let other_payload = b64::encode("Example of Ed25519 signinG");
        parts[1] = &other_payload;
        let tampered = parts.join(".");
        assert_eq!(
            CompactJws::parse(&tampered).unwrap().verify(&key),
            Err(JwsError::BadSignature)
        );
        assert!(matches!(
            CompactJws::parse("a.b"),
            Err(JwsError::Malformed(_))
        ));
        assert!(matches!(
            CompactJws::parse("a.b.c.d"),
            Err(JwsError::Malformed(_))
        ));
        assert!(matches!(
            CompactJws::parse("!!.e30.AA"),
            Err(JwsError::Malformed(_))
        ));
    }

    #[test]
    fn hs256_round_trip_and_no_confusion_with_public_keys() {
        let key = HmacJwsKey::new([3; 32]);
        let token = key.sign_compact(serde_json::json!({"typ": "at+jwt"}), b"{}");
        let parsed = CompactJws::parse(&token).unwrap();
        key.verify(&parsed).unwrap();
        assert_eq!(
            HmacJwsKey::new([4; 32]).verify(&parsed),
            Err(JwsError::BadSignature)
        );
        // An HS256 token never verifies as a public-key signature, and vice versa.
        assert_eq!(
            parsed.verify(&JwsSigner::generate_ed25519().public_jwk()),
            Err(JwsError::Alg)
        );
        let signed = JwsSigner::generate_ed25519().sign_compact(serde_json::json!({}), b"{}");
        assert_eq!(
            key.verify(&CompactJws::parse(&signed).unwrap()),
            Err(JwsError::Alg)
        );
    }

    #[test]
    fn es256_round_trip_and_alg_confusion() {
        let signer = JwsSigner::generate_p256();
        let token = signer.sign_compact(serde_json::json!({"typ": "JWT"}), b"{}");
        let parsed = CompactJws::parse(&token).unwrap();
        parsed.verify(&signer.public_jwk()).unwrap();
        let other = JwsSigner::generate_ed25519();
        assert_eq!(parsed.verify(&other.public_jwk()), Err(JwsError::Alg));
        let restored = JwsSigner::from_secret("ES256", &signer.secret_bytes()).unwrap();
        assert_eq!(restored.public_jwk(), signer.public_jwk());
    }
}
