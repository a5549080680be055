//! An mls-rs member in a group of openmls members, through the service.
use super::*;

/// An independent MLS implementation (mls-rs, not openmls) in an Atlas group:
/// it publishes a KeyPackage, joins from an openmls Welcome, reads and sends
/// application messages, and commits through the delivery service, which
/// validates its commit with openmls's public group. Both speak RFC 9420.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mls_rs_member_interoperates_through_the_service() {
    use mls_rs::group::ReceivedMessage;
    use mls_rs::identity::SigningIdentity;
    use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
    use mls_rs::mls_rs_codec::MlsEncode;
    use mls_rs::mls_rules::{CommitOptions, DefaultMlsRules};
    use mls_rs::{CipherSuite, CipherSuiteProvider, CryptoProvider, MlsMessage};

    let h = Harness::sqlite().await;
    let url = h.url();
    let mut alice = Member::new(&url, "alice").await;
    let ruth_http = RawDevice::register(&url, "ruth").await;
    let ruth_token = ruth_http.token().await;

    // ruth's mls-rs client: basic credential "ruth/RAW", the Atlas ciphersuite,
    // GroupInfo with the ratchet tree on every commit (the service needs it).
    let crypto = mls_rs_crypto_rustcrypto::RustCryptoProvider::default();
    let suite = crypto
        .cipher_suite_provider(CipherSuite::CURVE25519_AES128)
        .unwrap();
    let (secret, public) = suite.signature_key_generate().unwrap();
    let identity = SigningIdentity::new(
        BasicCredential::new(b"ruth/RAW".to_vec()).into_credential(),
        public,
    );
    let rules = DefaultMlsRules::new().with_commit_options(
        CommitOptions::new()
            .with_ratchet_tree_extension(true)
            .with_allow_external_commit(true),
    );
    let ruth = mls_rs::Client::builder()
        .identity_provider(BasicIdentityProvider)
        .crypto_provider(crypto)
        .mls_rules(rules)
        .signing_identity(identity, secret, CipherSuite::CURVE25519_AES128)
        .build();
    let kp_message = ruth
        .generate_key_package_message(Default::default(), Default::default(), None)
        .unwrap();
    let kp = kp_message
        .into_key_package()
        .unwrap()
        .mls_encode_to_vec()
        .unwrap();
    let checked = atlas_crypto::mls::check_key_package(&kp).unwrap();
    let ruth_binding = ruth_http
        .account
        .sign(&atlas_crypto::mls::signature_key_statement(
            &checked.member,
            &checked.signature_key,
        ));
    let (status, stock) = ruth_http
        .call(
            &ruth_token,
            "POST",
            "/mls/key-packages",
            Some(json!({
                "key_packages": [b64::encode_std(&kp)],
                "signature_key_binding": ruth_binding,
            })),
        )
        .await;
    assert_eq!(
        status, 200,
        "the service accepts mls-rs's KeyPackage: {stock}"
    );

    // alice (openmls) creates the group and adds ruth (mls-rs).
    alice.create_group("mixed").await;
    let claimed = b64::decode_std(&alice.claim("ruth").await).unwrap();
    let add = alice.mls.add("mixed", &[claimed]).unwrap();
    alice.commit(add).await;
    let (_, welcomes) = ruth_http
        .call(&ruth_token, "GET", "/groups/welcomes", None)
        .await;
    let welcome = b64::decode_std(welcomes["entries"][0]["body"].as_str().unwrap()).unwrap();
    let (mut group, _) = ruth
        .join_group(None, &MlsMessage::from_bytes(&welcome).unwrap(), None)
        .unwrap();
    assert_eq!(group.current_epoch(), 1);
    let mut seen = welcomes["entries"][0]["seq"].as_u64().unwrap();

    // openmls → mls-rs application message.
    alice.say("mixed", "hello from openmls").await;
    let (_, log) = ruth_http
        .call(
            &ruth_token,
            "GET",
            &format!("/groups/mixed/messages?after={seen}"),
            None,
        )
        .await;
    let entry = &log["entries"][0];
    seen = entry["seq"].as_u64().unwrap();
    let message =
        MlsMessage::from_bytes(&b64::decode_std(entry["body"].as_str().unwrap()).unwrap()).unwrap();
    match group.process_incoming_message(message).unwrap() {
        ReceivedMessage::ApplicationMessage(m) => assert_eq!(m.data(), b"hello from openmls"),
        other => panic!("{other:?}"),
    }

    // mls-rs commits through the service: validated by openmls's public group.
    let commit = group.commit(Vec::new()).unwrap();
    let group_info = commit.external_commit_group_info.clone().unwrap();
    let (status, accepted) = ruth_http
        .call(
            &ruth_token,
            "POST",
            "/groups/mixed/commits",
            Some(json!({
                "commit": b64::encode_std(commit.commit_message.to_bytes().unwrap()),
                "group_info": b64::encode_std(group_info.to_bytes().unwrap()),
            })),
        )
        .await;
    assert_eq!(
        status, 201,
        "the service accepts mls-rs's commit: {accepted}"
    );
    group.apply_pending_commit().unwrap();
    assert_eq!(group.current_epoch(), 2);
    let incoming = alice.sync("mixed").await;
    assert!(
        matches!(incoming.as_slice(), [Incoming::Commit { epoch: 2, .. }]),
        "{incoming:?}"
    );

    // mls-rs → openmls application message in the new epoch.
    let sent = group
        .encrypt_application_message(b"hello from mls-rs", Vec::new())
        .unwrap();
    let (status, body) = ruth_http
        .call(
            &ruth_token,
            "POST",
            "/groups/mixed/messages",
            Some(json!({"message": b64::encode_std(sent.to_bytes().unwrap())})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(texts(&alice.sync("mixed").await), ["hello from mls-rs"]);

    // And back: an openmls commit that mls-rs processes.
    let update = alice.mls.self_update("mixed").unwrap();
    alice.commit(update).await;
    let (_, log) = ruth_http
        .call(
            &ruth_token,
            "GET",
            &format!("/groups/mixed/messages?after={seen}"),
            None,
        )
        .await;
    let last_commit = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| e["kind"] == "commit")
        .unwrap();
    let message =
        MlsMessage::from_bytes(&b64::decode_std(last_commit["body"].as_str().unwrap()).unwrap())
            .unwrap();
    assert!(matches!(
        group.process_incoming_message(message).unwrap(),
        ReceivedMessage::Commit(_)
    ));
    assert_eq!(group.current_epoch(), 3);
}
