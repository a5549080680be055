//! DPoP-bound access tokens: compact JWS (HS256) under the server's token key,
//! carrying the device and the proof key thumbprint (`cnf.jkt`), so a request
//! is authenticated without a database read. Only the server (and its replicas,
//! which share the key through the database) issues and checks them, so a MAC
//! serves, at a fraction of the cost of a signature on every request.
use atlas_crypto::jws::{CompactJws, HmacJwsKey};
use atlas_proto::{DeviceId, UserId};
use serde::{Deserialize, Serialize};

/// Why an access token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token we issued (bad structure, signature, issuer or key id).
    #[error("access token is malformed or forged")]
    Invalid,
    /// Past its expiry.
    #[error("access token expired")]
    Expired,
}

/// The `cnf` claim (RFC 7800) binding a token to a DPoP key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Confirmation {
    /// RFC 7638 thumbprint of the DPoP key.
    pub jkt: String,
}

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer: the server's public URL.
    pub iss: String,
    /// The user.
    pub sub: UserId,
    /// The device.
    pub did: DeviceId,
    /// Key binding.
    pub cnf: Confirmation,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expiry (Unix seconds).
    pub exp: i64,
}

/// Issues and verifies access tokens with one server key.
pub struct AccessTokens {
    key: HmacJwsKey,
    kid: String,
    issuer: String,
}

impl AccessTokens {
    /// Tokens under `key` (key id `kid`), issued by `issuer`.
    pub fn new(key: HmacJwsKey, kid: String, issuer: String) -> Self {
        Self { key, kid, issuer }
    }

    /// Issues a token for these claims.
    pub fn issue(&self, claims: &AccessClaims) -> String {
        let header = serde_json::json!({ "typ": "at+jwt", "kid": self.kid });
        self.key
            .sign_compact(header, &serde_json::to_vec(claims).unwrap_or_default())
    }

    /// Verifies a token's MAC, issuer and expiry.
    pub fn verify(&self, token: &str, now: i64) -> Result<AccessClaims, TokenError> {
        let jws = CompactJws::parse(token).map_err(|_| TokenError::Invalid)?;
        if jws.header.get("kid").and_then(|k| k.as_str()) != Some(self.kid.as_str()) {
            return Err(TokenError::Invalid);
        }
        self.key.verify(&jws).map_err(|_| TokenError::Invalid)?;
        let claims: AccessClaims =
            serde_json::from_slice(&jws.payload).map_err(|_| TokenError::Invalid)?;
        if claims.iss != self.issuer {
            return Err(TokenError::Invalid);
        }
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> AccessClaims {
        AccessClaims {
            iss: "https://atlas.test".into(),
            sub: UserId::new("alice").unwrap(),
            did: DeviceId::new("D1").unwrap(),
            cnf: Confirmation { jkt: "abc".into() },
            iat: 0,
            exp,
        }
    }

    #[test]
    fn issue_verify_expire_and_forge() {
        let tokens = AccessTokens::new(
            HmacJwsKey::new(atlas_crypto::random_bytes()),
            "k1".into(),
            "https://atlas.test".into(),
        );
        let token = tokens.issue(&claims(100));
        assert_eq!(tokens.verify(&token, 50).unwrap().cnf.jkt, "abc");
        assert_eq!(tokens.verify(&token, 100).unwrap_err(), TokenError::Expired);

        let other = AccessTokens::new(
            HmacJwsKey::new(atlas_crypto::random_bytes()),
            "k1".into(),
            "https://atlas.test".into(),
        );
        assert_eq!(other.verify(&token, 50).unwrap_err(), TokenError::Invalid);
        let foreign_issuer = AccessTokens::new(
            HmacJwsKey::new(atlas_crypto::random_bytes()),
            "k1".into(),
            "https://evil.test".into(),
        );
        let forged = foreign_issuer.issue(&claims(100));
        assert_eq!(tokens.verify(&forged, 50).unwrap_err(), TokenError::Invalid);
        assert_eq!(
            tokens.verify("not.a.token", 50).unwrap_err(),
            TokenError::Invalid
        );
    }
}
