//! DPoP-bound access tokens: compact JWS (HS256) under the server's token key,
//! carrying the device and the proof key thumbprint (`cnf.jkt`), so a request
//! is authenticated without a database read. Only the server (and its replicas,
//! which share the key through the database) issues and checks them, so a MAC
//! serves, at a fraction of the cost of a signature on every request.
use atlas_crypto::jws::{CompactJws, HmacJwsKey};
use atlas_proto::{DeviceId, UserId};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};

/// Why an access token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token we issued (bad structure, signature, issuer or key id).
    #[error("access token is malformed or forged")]
    Invalid,
    /// Under a key this process does not hold (another replica may have rotated it).
    #[error("access token is under an unknown or rotated key")]
    UnknownKey,
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

/// The key tokens are issued and checked with.
struct TokenKey {
    kid: String,
    key: HmacJwsKey,
}

/// The DPoP nonce key in use, replaceable at once (emergency revocation).
pub struct Nonces {
    current: RwLock<Arc<atlas_crypto::dpop::NonceIssuer>>,
}

/// Nonce lifetime, seconds.
pub const NONCE_LIFETIME_SECS: i64 = 300;

impl Nonces {
    /// Nonces under `key`.
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            current: RwLock::new(Arc::new(atlas_crypto::dpop::NonceIssuer::new(
                key,
                NONCE_LIFETIME_SECS,
            ))),
        }
    }

    fn current(&self) -> Arc<atlas_crypto::dpop::NonceIssuer> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A fresh nonce.
    pub fn issue(&self, now: i64) -> String {
        self.current().issue(now)
    }

    /// Checks a nonce a proof carries.
    pub fn check(&self, nonce: &str, now: i64) -> Result<(), atlas_crypto::dpop::DpopError> {
        self.current().check(nonce, now)
    }

    /// Replaces the key: nonces under the previous one stop verifying.
    pub fn install(&self, key: [u8; 32]) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(
            atlas_crypto::dpop::NonceIssuer::new(key, NONCE_LIFETIME_SECS),
        );
    }
}

/// Issues and verifies access tokens with the server's current token key.
/// Rotating the key ([`AccessTokens::install`]) kills every outstanding token.
pub struct AccessTokens {
    current: RwLock<Arc<TokenKey>>,
    issuer: String,
}

impl AccessTokens {
    /// Tokens under `key` (key id `kid`), issued by `issuer`.
    pub fn new(key: HmacJwsKey, kid: String, issuer: String) -> Self {
        Self {
            current: RwLock::new(Arc::new(TokenKey { kid, key })),
            issuer,
        }
    }

    fn current(&self) -> Arc<TokenKey> {
        // A panic elsewhere cannot leave the Arc half-written, so a poisoned lock is still good.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The id of the key in use.
    pub fn kid(&self) -> String {
        self.current().kid.clone()
    }

    /// Replaces the key in use: tokens under the previous one stop verifying.
    pub fn install(&self, key: HmacJwsKey, kid: String) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(TokenKey { kid, key });
    }

    /// Issues a token for these claims.
    pub fn issue(&self, claims: &AccessClaims) -> String {
        let current = self.current();
        let header = serde_json::json!({ "typ": "at+jwt", "kid": current.kid });
        current
            .key
            .sign_compact(header, &serde_json::to_vec(claims).unwrap_or_default())
    }

    /// Verifies a token's MAC, issuer and expiry.
    pub fn verify(&self, token: &str, now: i64) -> Result<AccessClaims, TokenError> {
        let jws = CompactJws::parse(token).map_err(|_| TokenError::Invalid)?;
        let current = self.current();
        match jws.header.get("kid").and_then(|k| k.as_str()) {
            Some(kid) if kid == current.kid => {}
            Some(_) => return Err(TokenError::UnknownKey),
            None => return Err(TokenError::Invalid),
        }
        current.key.verify(&jws).map_err(|_| TokenError::Invalid)?;
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

/// Least time between two looks for a rotated token key, so tokens under made-up
/// key ids cannot turn into a database read each.
const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Picks up a token key another server process rotated to (a token under an
/// unknown key id made it look); true if the key changed.
pub async fn reload_key(state: &crate::state::Inner) -> bool {
    {
        let mut checked = state
            .token_key_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if checked.is_some_and(|at| at.elapsed() < RELOAD_EVERY) {
            return false;
        }
        *checked = Some(std::time::Instant::now());
    }
    reload_key_now(state).await
}

/// Loads the current token key from the store, told that a replica rotated
/// it: tokens under the old key stop verifying here too. True if it changed.
pub async fn reload_key_now(state: &crate::state::Inner) -> bool {
    let purpose = crate::server_keys::ACCESS_TOKEN_PURPOSE;
    let now = state.clock.now();
    let nonce = crate::server_keys::NONCE_PURPOSE;
    let make_nonce = move || crate::new_hmac_key(nonce, now);
    match state.keys.active(nonce, &make_nonce).await {
        Ok(key) => match <[u8; 32]>::try_from(key.secret) {
            Ok(secret) => state.nonces.install(secret),
            Err(_) => tracing::error!("the DPoP nonce key is not 32 bytes"),
        },
        Err(e) => tracing::error!(error = %e, "cannot read the DPoP nonce key"),
    }
    let make = move || crate::new_hmac_key(purpose, now);
    match state.keys.active(purpose, &make).await {
        Ok(key) if key.kid != state.tokens.kid() => match <[u8; 32]>::try_from(key.secret) {
            Ok(secret) => {
                state.tokens.install(HmacJwsKey::new(secret), key.kid);
                true
            }
            Err(_) => false,
        },
        Ok(_) => false,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the access-token key");
            false
        }
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

        // After a rotation the old token is dead, a new one verifies.
        tokens.install(HmacJwsKey::new(atlas_crypto::random_bytes()), "k2".into());
        assert_eq!(
            tokens.verify(&token, 50).unwrap_err(),
            TokenError::UnknownKey
        );
        let fresh = tokens.issue(&claims(100));
        assert_eq!(tokens.verify(&fresh, 50).unwrap().sub.as_str(), "alice");
    }
}
