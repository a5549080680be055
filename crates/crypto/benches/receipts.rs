//! Receipt signing and verification speed, single core:
//! `cargo bench -p atlas-crypto --bench receipts [-- --seconds N]`.
//! Signing is what the server adds to every send and every acknowledged
//! message; verifying is what `atlas verify-receipt` does per receipt (decode,
//! JWKS lookup, Ed25519 check, timestamp checks).
#![allow(clippy::unwrap_used, missing_docs)]

use atlas_crypto::receipt::{ReceiptSigner, published_jwk};
use atlas_crypto::receipt_inspect::verify_receipt;
use atlas_proto::receipt::{CiphertextDigest, ReceiptClaims, ReceiptType};
use atlas_proto::{DeviceId, UserId, b64};
use std::time::{Duration, Instant};

fn claims(now: i64) -> ReceiptClaims {
    let ms = format!("{:012x}", now * 1000);
    ReceiptClaims {
        iss: "https://api.atlas.dev".into(),
        receipt_id: "019a0000-0000-7000-8000-000000000001".into(),
        receipt_type: ReceiptType::Accepted,
        message_id: format!("{}-{}-7000-8000-000000000000", &ms[..8], &ms[8..])
            .parse()
            .unwrap(),
        sender_id: UserId::new("alice").unwrap(),
        sender_device_id: DeviceId::new("ALICEDEVICE1").unwrap(),
        recipient_id: UserId::new("bob").unwrap(),
        ciphertexts: vec![CiphertextDigest {
            device_id: DeviceId::new("BOBDEVICE001").unwrap(),
            sha256: b64::encode([9u8; 32]),
        }],
        accepted_at: time::OffsetDateTime::from_unix_timestamp(now)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
        delivered_at: None,
        iat: now,
        exp: now + 30 * 86_400,
    }
}

/// Runs `f` repeatedly for `span` and returns operations per second.
fn rate(span: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < span {
        for _ in 0..64 {
            f();
        }
        n += 64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut seconds = 3u64;
    while let Some(arg) = args.next() {
        if arg == "--seconds" {
            seconds = args.next().and_then(|s| s.parse().ok()).unwrap_or(seconds);
        }
    }
    let span = Duration::from_secs(seconds);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (kid, seed) = ReceiptSigner::generate();
    let (old_kid, old_seed) = ReceiptSigner::generate();
    let signer = ReceiptSigner::new(&kid, &seed).unwrap();
    let jwks = serde_json::json!({"keys": [published_jwk(&old_kid, &old_seed).unwrap(), published_jwk(&kid, &seed).unwrap()]});
    let c = claims(now);

    let signed = rate(span, || {
        std::hint::black_box(signer.sign(std::hint::black_box(&c)).to_json());
    });
    let receipt = signer.sign(&c).to_base64();
    assert!(verify_receipt(&receipt, &jwks, now).ok);
    let verified = rate(span, || {
        assert!(verify_receipt(std::hint::black_box(&receipt), &jwks, now).ok);
    });
    println!(
        "receipt sign (claims → flattened JWS JSON): {signed:>9.0} /s  ({:.1} µs each)",
        1e6 / signed
    );
    println!(
        "receipt verify (base64 → all 7 checks):     {verified:>9.0} /s  ({:.1} µs each)",
        1e6 / verified
    );
}
