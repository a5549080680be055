//! One well-formed input per target, so a fuzzer starts from the structure
//! the decoder expects instead of from nothing.
use crate::fixtures::{self, HTU, NOW, TOKEN};
use atlas_proto::receipt::{CiphertextDigest, ReceiptClaims, ReceiptType};
use atlas_proto::{DeviceId, UserId};
use serde_json::json;

/// `(target, name, input)` for every seed.
#[expect(
    clippy::expect_used,
    reason = "seeds are made from fixed, valid values; failing to make one is a bug to stop at"
)]
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let f = fixtures::get();
    let proof = atlas_crypto::dpop::create_proof(&f.signer, "POST", HTU, NOW, Some(TOKEN), None);
    let token = f.signer.sign_compact(
        json!({"typ": "at+jwt"}),
        br#"{"sub":"alice","exp":1795999999}"#,
    );
    let claims = ReceiptClaims {
        iss: "https://atlas.test".into(),
        receipt_id: "019ad000-0000-7000-8000-000000000001".into(),
        receipt_type: ReceiptType::Accepted,
        message_id: "019ad000-0000-7000-8000-000000000000"
            .parse()
            .expect("message id"),
        sender_id: UserId::new("alice").expect("user"),
        sender_device_id: DeviceId::new("A1").expect("device"),
        recipient_id: UserId::new("bob").expect("user"),
        ciphertexts: vec![CiphertextDigest {
            device_id: DeviceId::new("B1").expect("device"),
            sha256: "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU".into(),
        }],
        accepted_at: "2026-11-29T00:00:00Z".into(),
        delivered_at: None,
        iat: NOW,
        exp: NOW + 86_400,
    };
    let receipt = f.receipts.sign(&claims).to_json();
    let key_package = f.device.key_package(false).expect("key package");
    let update = f.device.self_update("fuzz").expect("commit");
    f.device.discard_commit("fuzz").expect("discard");
    let application = f.device.encrypt("fuzz", b"hello").expect("application");
    let send = json!({
        "recipient_id": "bob",
        "client_message_id": "c1",
        "envelopes": [{"device_id": "B1", "msg_type": 0, "body": "aGVsbG8", "session_id": "c2Vzc2lvbg"}],
    });
    let reports = json!({"reports": [
        {"message_id": "019ad000-0000-7000-8000-000000000000", "outcome": "failure", "code": "KeyNotFound"},
        {"message_id": "3", "group_id": "team", "outcome": "success", "latency_ms": 12},
    ]});
    let tagged = |tag: u8, body: serde_json::Value| {
        let mut out = vec![tag];
        out.extend(body.to_string().into_bytes());
        out
    };
    vec![
        ("jws", "access_token", token.into_bytes()),
        ("jws", "dpop_proof", proof.clone().into_bytes()),
        ("jws", "jwk", f.jwk.to_json().to_string().into_bytes()),
        ("dpop", "proof", proof.into_bytes()),
        ("dpop", "nonce", f.nonces.issue(NOW).into_bytes()),
        ("receipt", "json", receipt.clone().into_bytes()),
        (
            "receipt",
            "base64",
            atlas_proto::b64::encode(receipt).into_bytes(),
        ),
        ("mls", "key_package", key_package),
        ("mls", "commit", update.commit),
        ("mls", "group_info", update.group_info),
        ("mls", "application", application),
        ("mls", "ds_state", f.group.clone()),
        ("request_json", "send", tagged(0, send)),
        ("request_json", "reports", tagged(6, reports)),
    ]
}
