//! The ghost-device attack, device linking and removal, and the device
//! routes' refusal of bad input.
use atlas_crypto::olm::OlmAccount;
use atlas_proto::{DeviceId, UserId};
use atlas_testing::{Harness, RawDevice};

/// Writes a device row straight into the database, as the review's attacker did:
/// a real Olm account (so it could decrypt), self-signed keys, one-time keys,
/// and `certificate` (none, or whatever the attacker can make).
async fn plant_ghost(h: &Harness, user: &str, certificate: Option<String>) -> OlmAccount {
    let mut ghost = OlmAccount::new();
    let keys = ghost.device_keys(
        &UserId::new(user).unwrap(),
        &DeviceId::new("GHOST").unwrap(),
    );
    let cert = certificate.map_or("NULL".to_owned(), |c| format!("'{c}'"));
    let now = "'2026-01-01T00:00:00Z'";
    h.sql(&format!(
        "INSERT INTO devices (user_id, device_id, ed25519, curve25519, signature, status, created_at, next_seq, certificate) \
         VALUES ('{user}', 'GHOST', '{}', '{}', '{}', 'active', {now}, 0, {cert})",
        keys.ed25519, keys.curve25519, keys.signature
    ))
    .await;
    for key in ghost.generate_one_time_keys(5) {
        h.sql(&format!(
            "INSERT INTO user_keys (user_id, device_id, key_id, key_type, public_key, status, created_at) \
             VALUES ('{user}', 'GHOST', '{}', 'one_time', '{}', 'active', {now})",
            key.key_id, key.key
        ))
        .await;
    }
    ghost
}

/// The review's ghost-device attack, by someone who can write the database: a
/// device GHOST planted for bob gets no copy of what alice (who knew bob) or
/// carol (who never wrote to bob) sends him, and both are told why. Swapping
/// bob's identity key as well makes alice refuse to send and show an identity
/// change; a newcomer who pins the forged key sees a safety number that does
/// not match bob's.
pub(super) async fn a_ghost_device_gets_nothing(mut h: Harness) {
    let alice = atlas_testing::client(&h, "alice").await;
    let bob = atlas_testing::client(&h, "bob").await;
    let carol = atlas_testing::client(&h, "carol").await;
    atlas_testing::acquaint(&alice, &bob).await;
    let before = alice.safety_number(bob.user_id()).await.unwrap();
    assert_eq!(
        before.number,
        bob.safety_number(alice.user_id()).await.unwrap().number
    );

    plant_ghost(&h, "bob", None).await;
    let sent = alice
        .messages()
        .send_text(bob.user_id(), "after the ghost")
        .await
        .unwrap();
    assert_eq!(sent.deliveries.len(), 1, "only bob's real device");
    let skipped = alice.untrusted_devices(bob.user_id()).await.unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].device_id.as_str(), "GHOST");
    assert!(
        skipped[0].reason.contains("certificate"),
        "{}",
        skipped[0].reason
    );
    carol
        .messages()
        .send_text(bob.user_id(), "first contact")
        .await
        .unwrap();
    assert_eq!(
        carol.untrusted_devices(bob.user_id()).await.unwrap().len(),
        1
    );
    let got: Vec<String> = bob
        .messages()
        .sync()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.text)
        .collect();
    assert_eq!(got, ["after the ghost", "first contact"]);
    assert_eq!(
        h.sql("UPDATE messages SET body = body WHERE recipient_device_id = 'GHOST'")
            .await,
        0,
        "nothing was ever addressed to the ghost"
    );

    // bob's own view of his safety number with dave, taken while his device is
    // still active (the attack below revokes it; once the server's short device
    // cache expires bob could no longer ask).
    let dave = atlas_testing::client(&h, "dave").await;
    let bobs = bob.safety_number(dave.user_id()).await.unwrap();
    // The attacker also swaps bob's identity key for one of its own and certifies the ghost.
    let forged = atlas_crypto::identity::UserIdentity::generate();
    let ghost_keys: (String, String, String) = {
        let listed = alice.devices(bob.user_id()).await.unwrap();
        let g = listed
            .devices
            .iter()
            .find(|d| d.keys.device_id.as_str() == "GHOST")
            .unwrap();
        (
            g.keys.ed25519.clone(),
            g.keys.curve25519.clone(),
            g.keys.signature.clone(),
        )
    };
    let ghost = atlas_proto::api::DeviceKeys {
        device_id: DeviceId::new("GHOST").unwrap(),
        ed25519: ghost_keys.0,
        curve25519: ghost_keys.1,
        signature: ghost_keys.2,
    };
    h.sql(&format!(
        "UPDATE users SET identity_key = '{}' WHERE user_id = 'bob'",
        forged.public_key()
    ))
    .await;
    h.sql(&format!(
        "UPDATE devices SET certificate = '{}' WHERE user_id = 'bob' AND device_id = 'GHOST'",
        forged.certify(bob.user_id(), &ghost)
    ))
    .await;
    // alice's next send refreshes bob's devices (the list changed) and stops.
    h.sql("UPDATE devices SET status = 'revoked' WHERE user_id = 'bob' AND device_id <> 'GHOST'")
        .await;
    let refused = alice
        .messages()
        .send_text(bob.user_id(), "to the forged identity")
        .await
        .unwrap_err();
    assert!(
        matches!(refused, atlas_client::ClientError::IdentityChanged(ref u) if u == bob.user_id()),
        "{refused}"
    );
    let changes = alice.identity_changes().await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        changes[0].1.changed_to.as_deref(),
        Some(forged.public_key().as_str())
    );
    assert_eq!(
        h.sql("UPDATE messages SET body = body WHERE recipient_device_id = 'GHOST'")
            .await,
        0
    );
    // A newcomer pins the forged key on first use, but its safety number does not
    // match the one bob's own device shows: comparing out of band exposes the attack.
    let daves = dave.safety_number(bob.user_id()).await.unwrap();
    assert_ne!(daves.number, bobs.number);
    h.stop().await;
}

/// A removed device's token is refused, and so is every way to a new one.
fn assert_dead(e: atlas_client::ClientError) {
    use atlas_proto::ErrorCode::{InvalidGrant, InvalidToken};
    assert!(matches!(e.code(), Some(InvalidToken | InvalidGrant)), "{e}");
}

/// Linking: the device with the code is certified by the device that made it; a
/// registration that has the link token but not the code's secret (the server,
/// say) is never certified and never gets a copy; removal, by the user or an
/// operator, kills the device's tokens at once and senders stop encrypting to it.
pub(super) async fn linked_devices_are_certified_and_removed_by_their_user(mut h: Harness) {
    let url = h.url();
    let phone = atlas_testing::client(&h, "alice").await;
    let bob = atlas_testing::client(&h, "bob").await;
    let (code, _) = phone.create_link_code().await.unwrap();
    let laptop = atlas_client::Client::register(
        &h.profile("alice-laptop"),
        &url,
        UserId::new("alice").unwrap(),
        Some(code),
    )
    .await
    .unwrap();
    assert_eq!(
        phone.approve_linked_devices().await.unwrap(),
        [laptop.device_id().clone()]
    );
    assert!(laptop.finish_link().await.unwrap());
    bob.messages()
        .send_text(phone.user_id(), "to both")
        .await
        .unwrap();
    assert_eq!(
        laptop.messages().sync().await.unwrap()[0].text.as_deref(),
        Some("to both")
    );
    assert_eq!(
        phone.messages().sync().await.unwrap()[0].text.as_deref(),
        Some("to both")
    );

    // The link token without the code's secret: the proof fails, the code is burned.
    let (code, _) = phone.create_link_code().await.unwrap();
    let token = code.split('.').nth(1).unwrap().to_owned();
    let mut body = serde_json::json!({
        "user_id": "alice",
        "device": atlas_testing::fresh_keys("alice", "IMPOSTOR"),
        "link_token": token,
        "link_proof": "AAAA",
    });
    let raw = RawDevice::register(&url, "someone").await;
    let (s, b) = raw.post_json("/users", body.take()).await;
    assert_eq!(s, 201, "{b}");
    assert!(phone.approve_linked_devices().await.unwrap().is_empty());
    let listed = bob.devices(phone.user_id()).await.unwrap();
    let impostor = listed
        .devices
        .iter()
        .find(|d| d.keys.device_id.as_str() == "IMPOSTOR")
        .unwrap();
    assert_eq!(
        (impostor.status.as_str(), impostor.certificate.as_deref()),
        ("pending", None)
    );
    let sent = bob
        .messages()
        .send_text(phone.user_id(), "not for the impostor")
        .await
        .unwrap();
    assert_eq!(sent.deliveries.len(), 2);

    // A removal the identity key did not sign is refused; the user's own removal works.
    let (s, b) = raw
        .call(
            &raw.token().await,
            "POST",
            "/devices/RAW/revoke",
            Some(serde_json::json!({"signature": "AAAA"})),
        )
        .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_certificate")));
    // The laptop is listening on its push socket when it is removed.
    let listening = {
        let laptop = atlas_client::Client::open(&h.profile("alice-laptop"))
            .await
            .unwrap();
        let (pushed, mut was_pushed) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            laptop
                .listen(move |m| pushed.send(m).unwrap(), std::future::pending())
                .await
        });
        // Something pushed to it shows the socket is open.
        bob.messages()
            .send_text(phone.user_id(), "while listening")
            .await
            .unwrap();
        // (after what it had not read yet)
        loop {
            let m = tokio::time::timeout(std::time::Duration::from_secs(10), was_pushed.recv())
                .await
                .expect("pushed to the listening laptop")
                .unwrap();
            if m.text.as_deref() == Some("while listening") {
                break;
            }
        }
        task
    };
    phone.remove_device(laptop.device_id()).await.unwrap();
    // Its socket is closed at once, and the client says why.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), listening)
        .await
        .expect("the removed device's socket was closed")
        .unwrap();
    let why = ended.unwrap_err().to_string();
    assert!(why.contains("device_revoked"), "{why}");
    assert_dead(laptop.messages().sync().await.unwrap_err());
    let sent = bob
        .messages()
        .send_text(phone.user_id(), "after removal")
        .await
        .unwrap();
    assert_eq!(sent.deliveries.len(), 1, "only the phone");
    let listed = bob.devices(phone.user_id()).await.unwrap();
    let removed = listed
        .devices
        .iter()
        .find(|d| d.keys.device_id == *laptop.device_id())
        .unwrap();
    assert_eq!(removed.status, atlas_proto::api::DeviceStatus::Revoked);
    atlas_crypto::identity::verify_revocation(
        listed.identity_key.as_deref().unwrap(),
        phone.user_id(),
        &removed.keys,
        removed.revocation.as_deref().unwrap(),
    )
    .expect("the removal is signed by alice's identity key");

    // A stolen phone: the operator removes it (typed confirmation skipped with --yes).
    let op = atlas_testing::operator_token(&h.database_url(), "devices");
    let member = format!("alice/{}", phone.device_id());
    let (ok, _, stderr) = atlas_testing::run_atlas(
        None,
        Some(&op),
        &[
            "admin", "device", "revoke", &member, "--yes", "--server", &url,
        ],
    );
    assert!(ok, "{stderr}");
    assert_dead(phone.messages().sync().await.unwrap_err());
    let wrong = atlas_testing::operator_token(&h.database_url(), "keys");
    let (ok, _, stderr) = atlas_testing::run_atlas(
        None,
        Some(&wrong),
        &[
            "admin", "device", "revoke", "bob/X", "--yes", "--server", &url,
        ],
    );
    assert!(!ok && stderr.contains("scope"), "{stderr}");
    h.stop().await;
}

/// The device routes refuse bad input with a stable code and change nothing:
/// forged or oversized certificates, certifying a device that is not pending,
/// unknown devices, malformed bodies, another user's device.
pub(super) async fn device_routes_refuse_bad_input(mut h: Harness) {
    let url = h.url();
    let alice = RawDevice::register(&url, "alice").await;
    let bob = RawDevice::register(&url, "bob").await;
    let token = alice.token().await;
    let call = |path: &str, body: serde_json::Value| {
        let path = path.to_owned();
        let token = token.clone();
        let alice = &alice;
        async move { alice.call(&token, "POST", &path, Some(body)).await }
    };
    let code = |b: &serde_json::Value| b["error"].as_str().unwrap_or_default().to_owned();

    // A pending device of alice's, linked with a real token.
    let (_, link) = call("/devices/link-tokens", serde_json::json!({})).await;
    let newcomer = atlas_testing::fresh_keys("alice", "NEW");
    let body = serde_json::json!({
        "user_id": "alice", "device": &newcomer,
        "link_token": link["link_token"], "link_proof": "AAAA",
    });
    assert_eq!(alice.post_json("/users", body).await.0, 201);
    let keys = newcomer.clone();

    // Certificates: forged (another identity), garbage, oversized, malformed.
    let forged = atlas_crypto::identity::UserIdentity::generate().certify(&alice.user_id, &keys);
    for (body, status, expected) in [
        (
            serde_json::json!({"certificate": forged, "identity_transfer": "x"}),
            400,
            "invalid_certificate",
        ),
        (
            serde_json::json!({"certificate": "not base64!", "identity_transfer": "x"}),
            400,
            "invalid_certificate",
        ),
        (
            serde_json::json!({"certificate": "A".repeat(4096), "identity_transfer": "x"}),
            413,
            "payload_too_large",
        ),
        (
            serde_json::json!({"certificate": 5}),
            400,
            "invalid_request",
        ),
        (
            serde_json::json!({"certificate": forged, "identity_transfer": "x", "extra": 1}),
            400,
            "invalid_request",
        ),
    ] {
        let (s, b) = call("/devices/NEW/certificate", body).await;
        assert_eq!((s, code(&b).as_str()), (status, expected), "{b}");
    }
    let good = alice.identity.certify(&alice.user_id, &keys);
    let (s, b) = call(
        "/devices/NOPE/certificate",
        serde_json::json!({"certificate": good, "identity_transfer": "x"}),
    )
    .await;
    assert_eq!((s, code(&b).as_str()), (404, "unknown_device"), "{b}");
    // bob's device is not alice's to certify, and an active device is not pending.
    let (s, _) = call(
        "/devices/RAW/certificate",
        serde_json::json!({"certificate": good, "identity_transfer": "x"}),
    )
    .await;
    assert_eq!(
        s, 400,
        "alice's own first device: the certificate is for NEW's keys"
    );
    let own = alice.identity.certify(
        &alice.user_id,
        &alice.account.device_keys(&alice.user_id, &alice.device_id),
    );
    let (s, b) = call(
        "/devices/RAW/certificate",
        serde_json::json!({"certificate": own, "identity_transfer": "x"}),
    )
    .await;
    assert_eq!((s, code(&b).as_str()), (409, "forbidden"), "{b}");
    let listed = bob
        .call(&bob.token().await, "GET", "/users/alice/devices", None)
        .await
        .1;
    let pending = listed["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == "NEW")
        .unwrap()
        .clone();
    assert_eq!(
        (pending["status"].as_str(), pending.get("certificate")),
        (Some("pending"), None),
        "nothing changed"
    );

    // Removals: unknown device, oversized, malformed, a signature by another identity.
    let (s, b) = call(
        "/devices/NOPE/revoke",
        serde_json::json!({"signature": "AAAA"}),
    )
    .await;
    assert_eq!((s, code(&b).as_str()), (404, "unknown_device"), "{b}");
    let (s, b) = call(
        "/devices/NEW/revoke",
        serde_json::json!({"signature": "A".repeat(4096)}),
    )
    .await;
    assert_eq!((s, code(&b).as_str()), (413, "payload_too_large"), "{b}");
    let (s, b) = call("/devices/NEW/revoke", serde_json::json!({"sig": 1})).await;
    assert_eq!((s, code(&b).as_str()), (400, "invalid_request"), "{b}");
    let other = atlas_crypto::identity::UserIdentity::generate().revoke(&alice.user_id, &keys);
    let (s, b) = call(
        "/devices/NEW/revoke",
        serde_json::json!({"signature": other}),
    )
    .await;
    assert_eq!((s, code(&b).as_str()), (400, "invalid_certificate"), "{b}");
    // Operator removal of an unknown device.
    let op = atlas_testing::operator_token(&h.database_url(), "devices");
    let r = reqwest::Client::new()
        .post(format!("{url}/admin/devices/alice/NOPE/revoke"))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let listed = bob
        .call(&bob.token().await, "GET", "/users/alice/devices", None)
        .await
        .1;
    assert!(
        listed["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] != "revoked"),
        "no device was removed: {listed}"
    );
    h.stop().await;
}
