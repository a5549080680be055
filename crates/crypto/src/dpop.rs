//! RFC 9449 DPoP proofs: creation for clients, verification for servers, and
//! stateless server nonces. Replay (`jti`) bookkeeping is the caller's: it needs
//! storage, and this module has none.
use crate::jwk::PublicJwk;
use crate::jws::{CompactJws, JwsSigner};
use atlas_proto::b64;
use hmac::Mac;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Longest `jti` accepted; it becomes a cache key.
pub const MAX_JTI_LEN: usize = 128;

/// Why a DPoP proof was refused. Each maps to `invalid_dpop_proof` except [`DpopError::NonceRequired`] and [`DpopError::NonceInvalid`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    /// Not a well-formed JWS with a JSON object payload.
    #[error("malformed proof: {0}")]
    Malformed(&'static str),
    /// `typ` is not `dpop+jwt`.
    #[error("typ must be dpop+jwt")]
    WrongType,
    /// `alg` is not EdDSA or ES256, or does not match the `jwk`.
    #[error("unsupported alg")]
    UnsupportedAlg,
    /// The header's `jwk` is missing, private or invalid.
    #[error("invalid jwk: {0}")]
    BadJwk(crate::jwk::JwkError),
    /// The signature does not verify with the embedded key.
    #[error("signature does not verify")]
    BadSignature,
    /// `htm` is not the request method.
    #[error("htm does not match the request method")]
    MethodMismatch,
    /// `htu` is not the request URL.
    #[error("htu does not match the request URL")]
    UrlMismatch,
    /// `iat` is older than the accepted window.
    #[error("iat is too old")]
    Stale,
    /// `iat` lies in the future beyond the allowed clock skew.
    #[error("iat is in the future")]
    FromTheFuture,
    /// `jti` missing, empty or too long.
    #[error("jti missing or invalid")]
    BadJti,
    /// An access token was presented but the proof has no `ath`.
    #[error("ath missing")]
    MissingAth,
    /// `ath` is not the hash of the presented access token.
    #[error("ath does not match the access token")]
    AthMismatch,
    /// The server requires a nonce and the proof has none.
    #[error("a DPoP nonce is required")]
    NonceRequired,
    /// The proof's nonce was not issued by this server or has expired.
    #[error("the DPoP nonce is invalid or expired")]
    NonceInvalid,
}

/// Time window for `iat`.
#[derive(Debug, Clone, Copy)]
pub struct IatWindow {
    /// How old a proof may be, in seconds.
    pub max_age_secs: i64,
    /// How far in the future a proof may claim to be, in seconds (clock skew).
    pub max_skew_secs: i64,
}

impl Default for IatWindow {
    fn default() -> Self {
        Self {
            max_age_secs: 120,
            max_skew_secs: 30,
        }
    }
}

/// What the request the proof came with looks like.
#[derive(Debug, Clone, Copy)]
pub struct ExpectedRequest<'a> {
    /// HTTP method, upper case.
    pub htm: &'a str,
    /// Request URL without query and fragment.
    pub htu: &'a str,
    /// The access token presented with the proof, if any.
    pub access_token: Option<&'a str>,
    /// Current Unix time in seconds (injected, so tests can use the RFC's 2019 examples).
    pub now: i64,
}

/// A proof whose signature and claims checked out (replay not yet checked).
#[derive(Debug, Clone)]
pub struct VerifiedProof {
    /// RFC 7638 thumbprint of the proof key.
    pub jkt: String,
    /// The proof's unique id.
    pub jti: String,
    /// Its issue time.
    pub iat: i64,
    /// The nonce it carries, if any.
    pub nonce: Option<String>,
}

/// `ath`: base64url SHA-256 of the access token.
pub fn access_token_hash(access_token: &str) -> String {
    b64::encode(Sha256::digest(access_token.as_bytes()))
}

/// Strips query and fragment, as RFC 9449 §4.3 compares `htu`.
pub fn normalise_htu(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    &url[..end]
}

/// Verifies everything about a proof that needs no state: structure, `typ`, `alg`,
/// key, signature, `htm`, `htu`, `iat` window, `jti` shape and `ath`.
pub fn verify_proof(
    proof: &str,
    expected: &ExpectedRequest<'_>,
    window: IatWindow,
) -> Result<VerifiedProof, DpopError> {
    let jws = CompactJws::parse(proof).map_err(|e| match e {
        crate::jws::JwsError::Malformed(what) => DpopError::Malformed(what),
        _ => DpopError::Malformed("not a JWS"),
    })?;
    if jws.header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(DpopError::WrongType);
    }
    if !matches!(jws.alg(), Some("EdDSA" | "ES256")) {
        return Err(DpopError::UnsupportedAlg);
    }
    let jwk = jws
        .header
        .get("jwk")
        .ok_or(DpopError::BadJwk(crate::jwk::JwkError::Malformed("jwk")))?;
    let key = PublicJwk::from_json(jwk).map_err(DpopError::BadJwk)?;
    jws.verify(&key).map_err(|e| match e {
        crate::jws::JwsError::Alg => DpopError::UnsupportedAlg,
        _ => DpopError::BadSignature,
    })?;
    let claims = jws
        .claims()
        .map_err(|_| DpopError::Malformed("payload is not a JSON object"))?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);

    if text("htm") != Some(expected.htm) {
        return Err(DpopError::MethodMismatch);
    }
    match text("htu") {
        Some(htu) if normalise_htu(htu) == normalise_htu(expected.htu) => {}
        _ => return Err(DpopError::UrlMismatch),
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(DpopError::Malformed("iat missing"))?;
    if iat < expected.now.saturating_sub(window.max_age_secs) {
        return Err(DpopError::Stale);
    }
    if iat > expected.now.saturating_add(window.max_skew_secs) {
        return Err(DpopError::FromTheFuture);
    }
    let jti = match text("jti") {
        Some(jti) if !jti.is_empty() && jti.len() <= MAX_JTI_LEN => jti.to_owned(),
        _ => return Err(DpopError::BadJti),
    };
    if let Some(token) = expected.access_token {
        match text("ath") {
            None => return Err(DpopError::MissingAth),
            Some(ath) if ath != access_token_hash(token) => return Err(DpopError::AthMismatch),
            Some(_) => {}
        }
    }
    Ok(VerifiedProof {
        jkt: key.thumbprint(),
        jti,
        iat,
        nonce: text("nonce").map(str::to_owned),
    })
}

/// Builds a proof for one request.
pub fn create_proof(
    signer: &JwsSigner,
    htm: &str,
    htu: &str,
    iat: i64,
    access_token: Option<&str>,
    nonce: Option<&str>,
) -> String {
    let header = json!({ "typ": "dpop+jwt", "jwk": signer.public_jwk().to_json() });
    let mut claims =
        json!({ "jti": crate::random_id(), "htm": htm, "htu": normalise_htu(htu), "iat": iat });
    if let Some(token) = access_token {
        claims["ath"] = Value::from(access_token_hash(token));
    }
    if let Some(nonce) = nonce {
        claims["nonce"] = Value::from(nonce);
    }
    signer.sign_compact(header, claims.to_string().as_bytes())
}

/// Issues and checks stateless server nonces: the issue time, MACed with a server key.
pub struct NonceIssuer {
    key: [u8; 32],
    lifetime_secs: i64,
}

impl Drop for NonceIssuer {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl NonceIssuer {
    /// A nonce issuer with a server-held key; nonces live `lifetime_secs`.
    pub fn new(key: [u8; 32], lifetime_secs: i64) -> Self {
        Self { key, lifetime_secs }
    }

    fn mac(&self, issued: i64) -> hmac::Hmac<Sha256> {
        crate::hmac_sha256(&self.key, &issued.to_be_bytes())
    }

    /// A nonce valid from `now` for the configured lifetime.
    pub fn issue(&self, now: i64) -> String {
        let tag = self.mac(now).finalize().into_bytes();
        let mut raw = now.to_be_bytes().to_vec();
        raw.extend_from_slice(&tag[..16]);
        b64::encode(raw)
    }

    /// Checks a nonce this issuer made, within its lifetime.
    pub fn check(&self, nonce: &str, now: i64) -> Result<(), DpopError> {
        let raw = b64::decode(nonce).map_err(|_| DpopError::NonceInvalid)?;
        if raw.len() != 24 {
            return Err(DpopError::NonceInvalid);
        }
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&raw[..8]);
        let issued = i64::from_be_bytes(issued);
        self.mac(issued)
            .verify_truncated_left(&raw[8..])
            .map_err(|_| DpopError::NonceInvalid)?;
        if now < issued.saturating_sub(5) || now > issued.saturating_add(self.lifetime_secs) {
            return Err(DpopError::NonceInvalid);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Vector {
        proof: String,
        htm: String,
        htu: String,
        iat: i64,
        jti: String,
        token: Option<String>,
    }

    fn rfc9449() -> (Vec<Vector>, String) {
        let v: Value =
            serde_json::from_str(include_str!("../test-vectors/rfc9449-dpop.json")).unwrap();
        let proofs = v["proofs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| Vector {
                proof: p["proof"].as_str().unwrap().into(),
                htm: p["htm"].as_str().unwrap().into(),
                htu: p["htu"].as_str().unwrap().into(),
                iat: p["iat"].as_i64().unwrap(),
                jti: p["jti"].as_str().unwrap().into(),
                token: p["access_token"].as_str().map(Into::into),
            })
            .collect();
        (proofs, v["jwk_thumbprint_sha256"].as_str().unwrap().into())
    }

    fn expected(v: &Vector, now: i64) -> ExpectedRequest<'_> {
        ExpectedRequest {
            htm: &v.htm,
            htu: &v.htu,
            access_token: v.token.as_deref(),
            now,
        }
    }

    #[test]
    fn rfc9449_examples_verify_with_their_clock() {
        let (vectors, jkt) = rfc9449();
        for v in &vectors {
            let ok = verify_proof(&v.proof, &expected(v, v.iat + 1), IatWindow::default()).unwrap();
            assert_eq!(ok.jkt, jkt);
            assert_eq!(ok.jti, v.jti);
            assert_eq!(ok.iat, v.iat);
        }
    }

    #[test]
    fn rfc9449_examples_fail_for_the_wrong_request() {
        let (vectors, _) = rfc9449();
        let v = &vectors[2];
        let mut e = expected(v, v.iat);
        e.htm = "POST";
        assert_eq!(
            verify_proof(&v.proof, &e, IatWindow::default()).unwrap_err(),
            DpopError::MethodMismatch
        );
        let mut e = expected(v, v.iat);
        e.htu = "https://resource.example.org/other";
        assert_eq!(
            verify_proof(&v.proof, &e, IatWindow::default()).unwrap_err(),
            DpopError::UrlMismatch
        );
        let mut e = expected(v, v.iat);
        e.access_token = Some("another-token");
        assert_eq!(
            verify_proof(&v.proof, &e, IatWindow::default()).unwrap_err(),
            DpopError::AthMismatch
        );
        // Today's clock: the 2019 proof is stale.
        let e = expected(v, 1_790_000_000);
        assert_eq!(
            verify_proof(&v.proof, &e, IatWindow::default()).unwrap_err(),
            DpopError::Stale
        );
        let e = expected(v, v.iat - 3600);
        assert_eq!(
            verify_proof(&v.proof, &e, IatWindow::default()).unwrap_err(),
            DpopError::FromTheFuture
        );
        // A token presented with a proof that has no ath.
        let v0 = &vectors[0];
        let mut e = expected(v0, v0.iat);
        e.access_token = Some("token");
        assert_eq!(
            verify_proof(&v0.proof, &e, IatWindow::default()).unwrap_err(),
            DpopError::MissingAth
        );
    }

    #[test]
    fn forged_signature_and_header_tricks_are_refused() {
        let (vectors, _) = rfc9449();
        let v = &vectors[0];
        let mut parts: Vec<String> = v.proof.split('.').map(String::from).collect();
        let mut sig = b64::decode(&parts[2]).unwrap();
        sig[10] ^= 1;
        parts[2] = b64::encode(sig);
        assert_eq!(
            verify_proof(&parts.join("."), &expected(v, v.iat), IatWindow::default()).unwrap_err(),
            DpopError::BadSignature
        );

        let signer = JwsSigner::generate_ed25519();
        let jwt = signer.sign_compact(
            json!({"typ": "JWT", "jwk": signer.public_jwk().to_json()}),
            b"{}",
        );
        assert_eq!(
            verify_proof(&jwt, &expected(v, v.iat), IatWindow::default()).unwrap_err(),
            DpopError::WrongType
        );
        let no_jwk = signer.sign_compact(json!({"typ": "dpop+jwt"}), b"{}");
        assert!(matches!(
            verify_proof(&no_jwk, &expected(v, v.iat), IatWindow::default()),
            Err(DpopError::BadJwk(_))
        ));
        // Header claims ES256 but the key is Ed25519.
        let other = JwsSigner::generate_p256();
        let mismatched = format!(
            "{}.{}.{}",
            b64::encode(
                json!({"typ":"dpop+jwt","alg":"ES256","jwk":signer.public_jwk().to_json()})
                    .to_string()
            ),
            b64::encode("{}"),
            b64::encode(other.sign_raw(b"x"))
        );
        assert_eq!(
            verify_proof(&mismatched, &expected(v, v.iat), IatWindow::default()).unwrap_err(),
            DpopError::UnsupportedAlg
        );
        assert!(matches!(
            verify_proof("garbage", &expected(v, v.iat), IatWindow::default()),
            Err(DpopError::Malformed(_))
        ));
    }

    #[test]
    fn own_proofs_round_trip_for_both_algorithms() {
        for signer in [JwsSigner::generate_ed25519(), JwsSigner::generate_p256()] {
            let proof = create_proof(
                &signer,
                "POST",
                "https://atlas.test/messages?x=1",
                1000,
                Some("tok"),
                Some("n1"),
            );
            let e = ExpectedRequest {
                htm: "POST",
                htu: "https://atlas.test/messages",
                access_token: Some("tok"),
                now: 1000,
            };
            let ok = verify_proof(&proof, &e, IatWindow::default()).unwrap();
            assert_eq!(ok.jkt, signer.public_jwk().thumbprint());
            assert_eq!(ok.nonce.as_deref(), Some("n1"));
        }
    }

    #[test]
    fn nonces_expire_and_cannot_be_forged() {
        let issuer = NonceIssuer::new([7; 32], 300);
        let nonce = issuer.issue(1000);
        assert!(issuer.check(&nonce, 1200).is_ok());
        assert_eq!(issuer.check(&nonce, 1400), Err(DpopError::NonceInvalid));
        let other = NonceIssuer::new([8; 32], 300);
        assert_eq!(other.check(&nonce, 1000), Err(DpopError::NonceInvalid));
        assert_eq!(issuer.check("bm9wZQ", 1000), Err(DpopError::NonceInvalid));
    }
}
