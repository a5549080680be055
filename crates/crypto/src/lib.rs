//! Atlas cryptography, sans-I/O: JOSE (JWK, JWS, RFC 7638 thumbprints), RFC 9449
//! DPoP proofs, Olm accounts and sessions over vodozemac, and encryption of
//! local secrets at rest. No networking, no storage, no clocks of its own.
#![forbid(unsafe_code)]

pub mod at_rest;
pub mod device;
pub mod dpop;
pub mod jwk;
pub mod jws;
pub mod olm;

/// Fills a fresh array from the operating system's CSPRNG (through `rand`'s thread RNG).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    rand::random()
}

/// A random identifier: 16 random bytes, base64url.
pub fn random_id() -> String {
    atlas_proto::b64::encode(random_bytes::<16>())
}
