//! Public JSON Web Keys (RFC 7517) for the algorithms Atlas accepts, and their
//! RFC 7638 thumbprints.
use atlas_proto::b64;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Why a JWK was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// Not an object, or a required member is missing or not a string.
    #[error("malformed JWK: {0}")]
    Malformed(&'static str),
    /// A `kty`/`crv` we do not accept.
    #[error("unsupported key type or curve")]
    Unsupported,
    /// The JWK carries private key material (`d`), which must never be sent.
    #[error("JWK contains a private key")]
    PrivateKey,
    /// The coordinates do not describe a valid public key.
    #[error("JWK is not a valid public key")]
    InvalidKey,
}

/// A public key Atlas can verify signatures with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicJwk {
    /// OKP / Ed25519 (RFC 8037), for `alg` EdDSA.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// EC / P-256, for `alg` ES256.
    P256(p256::ecdsa::VerifyingKey),
}

fn member<'a>(
    obj: &'a serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, JwkError> {
    obj.get(name)
        .and_then(Value::as_str)
        .ok_or(JwkError::Malformed(name))
}

fn coordinate<const N: usize>(text: &str) -> Result<[u8; N], JwkError> {
    let bytes = b64::decode(text).map_err(|_| JwkError::InvalidKey)?;
    bytes.try_into().map_err(|_| JwkError::InvalidKey)
}

impl PublicJwk {
    /// Parses a public JWK, refusing private members and unknown key types.
    pub fn from_json(value: &Value) -> Result<Self, JwkError> {
        let obj = value
            .as_object()
            .ok_or(JwkError::Malformed("not an object"))?;
        if obj.contains_key("d") {
            return Err(JwkError::PrivateKey);
        }
        match (member(obj, "kty")?, obj.get("crv").and_then(Value::as_str)) {
            ("OKP", Some("Ed25519")) => {
                let x: [u8; 32] = coordinate(member(obj, "x")?)?;
                ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map(Self::Ed25519)
                    .map_err(|_| JwkError::InvalidKey)
            }
            ("EC", Some("P-256")) => {
                let x: [u8; 32] = coordinate(member(obj, "x")?)?;
                let y: [u8; 32] = coordinate(member(obj, "y")?)?;
                let mut sec1 = [0u8; 65];
                sec1[0] = 0x04;
                sec1[1..33].copy_from_slice(&x);
                sec1[33..].copy_from_slice(&y);
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                    .map(Self::P256)
                    .map_err(|_| JwkError::InvalidKey)
            }
            _ => Err(JwkError::Unsupported),
        }
    }

    /// The JWK as JSON (public members only).
    pub fn to_json(&self) -> Value {
        match self {
            Self::Ed25519(key) => serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": b64::encode(key.as_bytes()),
            }),
            Self::P256(key) => {
                let point = key.to_sec1_bytes();
                serde_json::json!({
                    "kty": "EC", "crv": "P-256",
                    "x": b64::encode(&point[1..33]), "y": b64::encode(&point[33..65]),
                })
            }
        }
    }

    /// The JWS `alg` this key verifies.
    pub fn alg(&self) -> &'static str {
        match self {
            Self::Ed25519(_) => "EdDSA",
            Self::P256(_) => "ES256",
        }
    }

    /// RFC 7638 SHA-256 thumbprint, base64url: the `jkt` a DPoP token is bound to.
    pub fn thumbprint(&self) -> String {
        thumbprint(&self.to_json()).unwrap_or_default()
    }
}

/// RFC 7638 thumbprint of any JWK whose required members we know (EC, OKP, RSA, oct).
pub fn thumbprint(jwk: &Value) -> Result<String, JwkError> {
    let obj = jwk
        .as_object()
        .ok_or(JwkError::Malformed("not an object"))?;
    let required: &[&'static str] = match member(obj, "kty")? {
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        "RSA" => &["e", "kty", "n"],
        "oct" => &["k", "kty"],
        _ => return Err(JwkError::Unsupported),
    };
    // Members in lexicographic order, no whitespace: the canonical form RFC 7638 §3.3 hashes.
    let mut canonical = String::from("{");
    for (i, name) in required.iter().enumerate() {
        if i > 0 {
            canonical.push(',');
        }
        let value = member(obj, name)?;
        canonical.push_str(&serde_json::to_string(name).unwrap_or_default());
        canonical.push(':');
        canonical.push_str(&serde_json::to_string(value).unwrap_or_default());
    }
    canonical.push('}');
    Ok(b64::encode(Sha256::digest(canonical.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors(name: &str) -> Value {
        let text = match name {
            "rfc7638-rfc8037-jose.json" => {
                include_str!("../test-vectors/rfc7638-rfc8037-jose.json")
            }
            "rfc9449-dpop.json" => include_str!("../test-vectors/rfc9449-dpop.json"),
            other => panic!("no test vector file {other}"),
        };
        serde_json::from_str(text).expect("json")
    }

    #[test]
    fn rfc7638_rsa_example_thumbprint() {
        let v = vectors("rfc7638-rfc8037-jose.json");
        assert_eq!(
            thumbprint(&v["rfc7638"]["jwk"]).unwrap(),
            v["rfc7638"]["thumbprint_sha256"]
        );
    }

    #[test]
    fn rfc8037_ed25519_thumbprint() {
        let v = vectors("rfc7638-rfc8037-jose.json");
        let jwk = PublicJwk::from_json(&v["rfc8037"]["public_jwk"]).unwrap();
        assert_eq!(jwk.thumbprint(), v["rfc8037"]["thumbprint_sha256"]);
    }

    #[test]
    fn rfc9449_p256_thumbprint() {
        let v = vectors("rfc9449-dpop.json");
        let jwk = PublicJwk::from_json(&v["public_jwk"]).unwrap();
        assert_eq!(jwk.thumbprint(), v["jwk_thumbprint_sha256"]);
        assert_eq!(jwk.alg(), "ES256");
    }

    #[test]
    fn refuses_private_and_bogus_keys() {
        let v = vectors("rfc7638-rfc8037-jose.json");
        assert_eq!(
            PublicJwk::from_json(&v["rfc8037"]["private_jwk"]),
            Err(JwkError::PrivateKey)
        );
        assert_eq!(
            PublicJwk::from_json(&v["rfc7638"]["jwk"]),
            Err(JwkError::Unsupported)
        );
        let short = serde_json::json!({"kty":"OKP","crv":"Ed25519","x":"AAAA"});
        assert_eq!(PublicJwk::from_json(&short), Err(JwkError::InvalidKey));
        let off_curve = serde_json::json!({"kty":"EC","crv":"P-256","x":b64::encode([1u8;32]),"y":b64::encode([2u8;32])});
        assert_eq!(PublicJwk::from_json(&off_curve), Err(JwkError::InvalidKey));
        assert_eq!(
            PublicJwk::from_json(&serde_json::json!("x")),
            Err(JwkError::Malformed("not an object"))
        );
    }
}
