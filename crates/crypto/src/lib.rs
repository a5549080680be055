//! Atlas cryptography, sans-I/O: JOSE (JWK, JWS, RFC 7638 thumbprints), RFC 9449
//! DPoP proofs, Olm accounts and sessions over vodozemac, and encryption of
//! local secrets at rest. No networking, no storage, no clocks of its own.
#![forbid(unsafe_code)]

pub mod at_rest;
pub mod audit_log;
pub mod backup;
pub mod checks;
pub mod device;
pub mod dpop;
pub mod dpop_inspect;
pub mod evidence;
pub mod identity;
pub mod jwk;
pub mod jws;
pub mod mls;
pub mod mls_ds;
pub mod note;
pub mod olm;
pub mod receipt;
pub mod receipt_inspect;

/// Fills a fresh array from the operating system's CSPRNG (through `rand`'s thread RNG).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    rand::random()
}

/// HMAC-SHA256 under a 32-byte server key, fed with `input` (finish with `finalize` or `verify_*`).
pub(crate) fn hmac_sha256(key: &[u8; 32], input: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| {
        #[expect(clippy::unreachable, reason = "HMAC accepts keys of any length")]
        {
            unreachable!("HMAC takes any key length")
        }
    });
    mac.update(input);
    mac
}

/// HMAC-SHA256 of `input` under `key`, as lowercase hex.
pub fn mac_hex(key: &[u8; 32], input: &[u8]) -> String {
    hex::encode(hmac::Mac::finalize(hmac_sha256(key, input)).into_bytes())
}

/// A random identifier: 16 random bytes, base64url.
pub fn random_id() -> String {
    atlas_proto::b64::encode(random_bytes::<16>())
}
