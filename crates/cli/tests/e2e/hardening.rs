//! Attacks of the hostile review (issue 10), reproduced and refused: what a
//! reader of the database file can do, token and refresh-token lifetimes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)] // Tests fail loudly on purpose.

use atlas_crypto::jws::HmacJwsKey;
use atlas_crypto::olm::OlmAccount;
use atlas_proto::{DeviceId, UserId};
use atlas_server::auth::tokens::{AccessClaims, AccessTokens, Confirmation};
use atlas_testing::{Harness, RawDevice, now};

/// The review's first step towards a ghost device: read the access-token key out
/// of the database and mint a token for bob. The key is sealed under the KEK,
/// which is not in the database, so the minted token is refused.
async fn the_database_alone_cannot_mint_a_token(mut h: Harness) {
    let url = h.url();
    let bob = RawDevice::register(&url, "bob").await;
    let real = bob.token().await;
    let (s, _) = bob.call(&real, "GET", "/keys/count", None).await;
    assert_eq!(s, 200);

    let stored = h.stored_server_keys("access-token").await;
    assert_eq!(stored.len(), 1);
    let (kid, secret) = &stored[0];
    assert!(secret.starts_with(b"AKEK\x01"), "stored sealed");
    // Every 32-byte window of what is stored, as the key an attacker would try.
    let claims = AccessClaims {
        iss: url.clone(),
        sub: bob.user_id.clone(),
        did: bob.device_id.clone(),
        cnf: Confirmation {
            jkt: bob.dpop.public_jwk().thumbprint(),
        },
        iat: now(),
        exp: now() + 600,
    };
    let mut tried = 0;
    for window in secret.windows(32) {
        let key = HmacJwsKey::new(window.try_into().unwrap());
        let forged = AccessTokens::new(key, kid.clone(), url.clone()).issue(&claims);
        let (s, body) = bob.call(&forged, "GET", "/keys/count", None).await;
        assert_eq!((s, body["error"].as_str()), (401, Some("invalid_token")));
        tried += 1;
    }
    assert!(tried > 0);
    h.stop().await;
}

/// Files a local reader must not open: the database and the KEK, owner only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_and_kek_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mut h = Harness::sqlite().await;
    RawDevice::register(&h.url(), "bob").await;
    h.stop().await;
    let atlas_testing::Backend::Sqlite(dir) = &h.backend else {
        unreachable!()
    };
    for file in ["atlas.db", "atlas.db-wal", "atlas.db-shm", "server.kek"] {
        let path = dir.path.join(file);
        if !path.exists() && file != "server.kek" && file != "atlas.db" {
            continue; // checkpointed away at close
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file} has mode {mode:o}");
    }
}

/// `atlas serve` creates its data directory owner-only.
#[test]
fn serve_creates_a_private_data_directory() {
    use std::os::unix::fs::PermissionsExt;
    let parent = atlas_store::testdb::TempDir::new("atlas-serve-dir").unwrap();
    let data = atlas_store::testdb::TempDir {
        path: parent.path.join("data"),
    };
    let server = atlas_testing::serve(&data, "127.0.0.1:0", &[]);
    let mode = std::fs::metadata(&data.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    drop(server);
}

/// A database written before sealing existed has its keys sealed at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_keys_of_an_older_database_are_sealed_at_start() {
    let mut h = Harness::sqlite().await;
    h.stop().await;
    let plain = "x'0101010101010101010101010101010101010101010101010101010101010101'";
    let rows = h
        .sql(&format!(
            "UPDATE server_keys SET secret = {plain} WHERE purpose = 'access-token'"
        ))
        .await;
    assert_eq!(rows, 1);
    h.start().await;
    let stored = h.stored_server_keys("access-token").await;
    assert!(stored[0].1.starts_with(b"AKEK\x01"));
    assert_ne!(stored[0].1, vec![1; 32]);
    // The key itself is unchanged (sealing is not a rotation): a token under it still verifies.
    let bob = RawDevice::register(&h.url(), "bob").await;
    let token = bob.token().await;
    assert_eq!(bob.call(&token, "GET", "/keys/count", None).await.0, 200);
    h.stop().await;
}

/// A server given the wrong KEK refuses to start instead of minting new keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_kek_refuses_to_start() {
    let mut h = Harness::sqlite().await;
    h.stop().await;
    let mut config = h.config();
    config.kek_file = Some(h.homes.path.join("other.kek"));
    let refused = atlas_server::start(config).await.err().unwrap();
    assert!(refused.to_string().contains("does not open"), "{refused}");
}

/// `atlas keys rotate-token-key` kills every outstanding token at once; an SDK
/// device re-authenticates by itself and keeps working; old refresh tokens are dead.
async fn rotating_the_token_key_kills_every_token(mut h: Harness) {
    let url = h.url();
    let alice = atlas_testing::client(&h, "alice").await;
    let bob = atlas_testing::client(&h, "bob").await;
    atlas_testing::acquaint(&alice, &bob).await;
    let raw = RawDevice::register(&url, "carol").await;
    let grant = raw.token_with(&raw.dpop).await;
    assert_eq!(
        raw.call(&grant.access_token, "GET", "/keys/count", None)
            .await
            .0,
        200
    );

    let op = atlas_testing::operator_token(&h.database_url(), "keys");
    let (ok, stdout, stderr) = atlas_testing::run_atlas(
        None,
        Some(&op),
        &["keys", "rotate-token-key", "--server", &url, "--json"],
    );
    assert!(ok, "{stderr}");
    let rotated: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(rotated["refresh_tokens_revoked"].as_u64().unwrap() >= 3);
    assert_ne!(rotated["kid"], rotated["previous_kid"]);

    let (s, body) = raw
        .call(&grant.access_token, "GET", "/keys/count", None)
        .await;
    assert_eq!((s, body["error"].as_str()), (401, Some("invalid_token")));
    let (s, body) = raw
        .post_token(serde_json::json!({"grant_type": "refresh_token", "refresh_token": grant.refresh_token}))
        .await;
    assert_eq!((s, body["error"].as_str()), (400, Some("invalid_grant")));
    // A device signature still works, and the SDK clients carry on by themselves.
    let fresh = raw.token().await;
    assert_eq!(raw.call(&fresh, "GET", "/keys/count", None).await.0, 200);
    alice
        .messages()
        .send_text(bob.user_id(), "after rotation")
        .await
        .unwrap();
    let got = bob.messages().sync().await.unwrap();
    assert!(
        got.iter()
            .any(|m| m.text.as_deref() == Some("after rotation"))
    );

    // Without an operator token, or with another scope: refused.
    let (ok, _, stderr) =
        atlas_testing::run_atlas(None, None, &["keys", "rotate-token-key", "--server", &url]);
    assert!(!ok, "{stderr}");
    let wrong = atlas_testing::operator_token(&h.database_url(), "receipts");
    let (ok, _, stderr) = atlas_testing::run_atlas(
        None,
        Some(&wrong),
        &["keys", "rotate-token-key", "--server", &url],
    );
    assert!(!ok && stderr.contains("scope"), "{stderr}");
    h.stop().await;
}

/// Refresh tokens rotate on use; a spent one presented again kills its whole chain,
/// and rotation never extends the chain's expiry.
async fn a_replayed_refresh_token_kills_its_chain(mut h: Harness) {
    let raw = RawDevice::register(&h.url(), "dave")
        .await
        .following(&h.clock);
    let first = raw.token_with(&raw.dpop).await;
    let refresh =
        |token: &str| serde_json::json!({"grant_type": "refresh_token", "refresh_token": token});
    let (s, second) = raw.post_token(refresh(&first.refresh_token)).await;
    assert_eq!(s, 200, "{second}");
    let second_refresh = second["refresh_token"].as_str().unwrap().to_owned();
    // The thief (or a confused client) presents the spent token again.
    let (s, body) = raw.post_token(refresh(&first.refresh_token)).await;
    assert_eq!((s, body["error"].as_str()), (400, Some("invalid_grant")));
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    // …and the legitimate successor died with the chain.
    let (s, body) = raw.post_token(refresh(&second_refresh)).await;
    assert_eq!((s, body["error"].as_str()), (400, Some("invalid_grant")));

    // A new chain from a device signature; its refreshed tokens keep the chain's expiry.
    let start = raw.token_with(&raw.dpop).await;
    h.clock.advance(20 * 24 * 3600);
    let (s, next) = raw.post_token(refresh(&start.refresh_token)).await;
    assert_eq!(s, 200);
    h.clock.advance(11 * 24 * 3600);
    let (s, body) = raw
        .post_token(refresh(next["refresh_token"].as_str().unwrap()))
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "30 days after the device signature the chain is over, however often it was refreshed"
    );
    h.clock.advance(-31 * 24 * 3600);
    h.stop().await;
}

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
async fn a_ghost_device_gets_nothing(mut h: Harness) {
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
    let dave = atlas_testing::client(&h, "dave").await;
    let daves = dave.safety_number(bob.user_id()).await.unwrap();
    let bobs = bob.safety_number(dave.user_id()).await.unwrap();
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
async fn linked_devices_are_certified_and_removed_by_their_user(mut h: Harness) {
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
    phone.remove_device(laptop.device_id()).await.unwrap();
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

/// Operator tokens name their scopes and expire: `atlas admin token create`
/// without `--scope` is refused, and a token past `--expires-in` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_tokens_need_a_scope_and_expire() {
    let mut h = Harness::sqlite().await;
    let db = h.database_url();
    let create = |extra: &[&str]| {
        let mut args = vec!["admin", "token", "create", "--database-url", &db, "--json"];
        args.extend_from_slice(extra);
        atlas_testing::run_atlas(None, None, &args)
    };
    let (ok, _, stderr) = create(&[]);
    assert!(!ok && stderr.contains("--scope"), "{stderr}");
    let (ok, _, stderr) = create(&["--scope", "keys", "--expires-in", "0s"]);
    assert!(!ok && stderr.contains("expires-in"), "{stderr}");
    let (ok, stdout, stderr) = create(&["--scope", "keys", "--expires-in", "10m"]);
    assert!(ok, "{stderr}");
    let created: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(created["expires_at"].as_str().unwrap().starts_with("20"));
    let token = created["token"].as_str().unwrap();
    let url = h.url();
    let list = |token: &str| {
        atlas_testing::run_atlas(None, Some(token), &["keys", "signing", "--server", &url])
    };
    let (ok, _, stderr) = list(token);
    assert!(ok, "{stderr}");
    h.clock.advance(11 * 60);
    let (ok, _, stderr) = list(token);
    assert!(!ok && stderr.contains("expired"), "{stderr}");
    h.clock.advance(-11 * 60);
    h.stop().await;
}

/// A server of our own with `limits` and `registration`, over SQLite.
async fn limited_server(
    dir: &atlas_store::testdb::TempDir,
    limits: atlas_server::limits::LimitConfig,
    registration: atlas_server::state::Registration,
) -> atlas_server::RunningServer {
    let mut config = atlas_server::ServerConfig::new(dir.sqlite_url("atlas.db"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.limits = limits;
    config.registration = registration;
    atlas_server::start(config).await.unwrap()
}

/// The review locked bob out of his own backup with ten wrong guesses from
/// anywhere. Now a stranger guessing from one address runs out of attempts
/// (429 with Retry-After) while bob, elsewhere, still restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_guessing_backups_cannot_lock_the_owner_out() {
    let h = Harness::sqlite().await;
    let bob = atlas_testing::client(&h, "bob").await;
    let info = bob.keys().backup(b"correct horse battery").await.unwrap();
    // The stranger connects from 127.0.0.2, bob from 127.0.0.1.
    let stranger = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let url = format!("{}/backups/bob/{}", h.url(), info.backup_id);
    let mut statuses = Vec::new();
    for guess in 0..12 {
        let r = stranger
            .get(&url)
            .header("Authorization", format!("Backup guess-{guess}"))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 403).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    let (restored, _) = atlas_client::Client::restore_keys(
        &h.profile("bob-again"),
        &h.url(),
        bob.user_id(),
        time::OffsetDateTime::now_utc(),
        b"correct horse battery",
    )
    .await
    .expect("the owner still restores");
    assert_eq!(restored.user_id(), bob.user_id());
}

/// Registration: open within a per-address limit, with a token, or closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_limited_and_can_need_a_token() {
    use atlas_server::state::Registration;
    let dir = atlas_store::testdb::TempDir::new("atlas-registration").unwrap();
    let limits = atlas_server::limits::LimitConfig {
        registrations_per_address: (3, 1),
        ..Default::default()
    };
    let server = limited_server(
        &dir,
        limits.clone(),
        Registration::Token("sixteen-chars-token".into()),
    )
    .await;
    let url = server.public_url.clone();
    let http = reqwest::Client::new();
    let register = |body: serde_json::Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .post(format!("{url}/users"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r.headers().contains_key("retry-after");
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (
                status,
                retry,
                body["error"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    let (s, _, e) = register(atlas_testing::registration("amy", "A")).await;
    assert_eq!((s, e.as_str()), (403, "forbidden"));
    let mut wrong = atlas_testing::registration("amy", "A");
    wrong["registration_token"] = serde_json::json!("not-the-token-at-all");
    assert_eq!(register(wrong).await.0, 403);
    let mut right = atlas_testing::registration("amy", "A");
    right["registration_token"] = serde_json::json!("sixteen-chars-token");
    assert_eq!(register(right).await.0, 201);
    let (s, retry, e) = register(atlas_testing::registration("ben", "B")).await;
    assert_eq!(
        (s, retry, e.as_str()),
        (429, true, "rate_limited"),
        "the fourth from one address"
    );
    server.stop().await;

    let closed = limited_server(&dir, limits, Registration::Closed).await;
    let mut body = atlas_testing::registration("cy", "C");
    body["registration_token"] = serde_json::json!("sixteen-chars-token");
    let r = reqwest::Client::new()
        .post(format!("{}/users", closed.public_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    closed.stop().await;
}

/// A `GET /ws` upgrade request of `device`, with its token and a fresh proof.
fn ws_request(
    base: &str,
    device: &RawDevice,
    token: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("{}/ws", base.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    let proof = device.proof("GET", "/ws", Some(token), now());
    request
        .headers_mut()
        .insert("authorization", format!("DPoP {token}").parse().unwrap());
    request.headers_mut().insert("dpop", proof.parse().unwrap());
    request
}

/// The review opened 1,000 WebSockets for one device. Now a device gets at most
/// its limit (429 with Retry-After after), and a closed socket frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_per_device_are_capped() {
    let dir = atlas_store::testdb::TempDir::new("atlas-ws-cap").unwrap();
    let limits = atlas_server::limits::LimitConfig {
        websockets_per_device: 2,
        ..Default::default()
    };
    let server = limited_server(&dir, limits, atlas_server::state::Registration::Open).await;
    let url = server.public_url.clone();
    let device = RawDevice::register(&url, "wsuser").await;
    let token = device.token().await;
    let open =
        || async { tokio_tungstenite::connect_async(ws_request(&url, &device, &token)).await };
    let first = open().await.expect("first socket");
    let _second = open().await.expect("second socket");
    match open().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 429);
            assert!(r.headers().contains_key("retry-after"));
        }
        other => panic!(
            "a third socket must be refused, got {:?}",
            other.map(|_| ())
        ),
    }
    drop(first);
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(s) = open().await {
            reopened = Some(s);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(reopened.is_some(), "a closed socket frees its place");
    server.stop().await;
}

/// `/metrics` on an address of its own: the public listener no longer answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_a_listener_of_their_own() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = free.local_addr().unwrap();
    drop(free);
    let dir = atlas_store::testdb::TempDir::new("atlas-metrics-listen").unwrap();
    let mut config = atlas_server::ServerConfig::new(dir.sqlite_url("atlas.db"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics_listen = Some(metrics_addr);
    let server = atlas_server::start(config).await.unwrap();
    let public = reqwest::get(format!("{}/metrics", server.public_url))
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let internal = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(internal.status(), 200);
    assert!(
        internal
            .text()
            .await
            .unwrap()
            .contains("# TYPE atlas_mls_group_epoch gauge")
    );
    server.stop().await;
}

/// The review queued without bound. Now a device's undelivered messages are
/// capped: the send past it gets 429 `queue_full` with `Retry-After`, and
/// acknowledging frees room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_makes_senders_wait() {
    let dir = atlas_store::testdb::TempDir::new("atlas-queue-cap").unwrap();
    let limits = atlas_server::limits::LimitConfig {
        queued_per_device: 2,
        ..Default::default()
    };
    let server = limited_server(&dir, limits, atlas_server::state::Registration::Open).await;
    let sender = RawDevice::register(&server.public_url, "flooder").await;
    let recipient = RawDevice::register(&server.public_url, "target").await;
    let token = sender.token().await;
    let send = |i: u32| {
        let body = serde_json::json!({
            "recipient_id": "target",
            "client_message_id": format!("f{i}"),
            "envelopes": [{"device_id": "RAW", "msg_type": 1, "body": "AAAA"}],
        });
        let proof = sender.proof("POST", "/messages", Some(&token), now());
        sender.send_raw(
            "POST",
            "/messages",
            Some(format!("DPoP {token}")),
            Some(proof),
            Some(body.to_string().into_bytes()),
        )
    };
    assert_eq!(send(0).await.0, 201);
    assert_eq!(send(1).await.0, 201);
    let (s, headers, b) = send(2).await;
    assert_eq!((s, b["error"].as_str()), (429, Some("queue_full")), "{b}");
    assert!(headers.contains_key("retry-after"));
    let rtoken = recipient.token().await;
    let (s, _) = recipient
        .call(
            &rtoken,
            "POST",
            "/messages/ack",
            Some(serde_json::json!({"up_to_seq": 2})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(send(3).await.0, 201, "acknowledging frees room");
    server.stop().await;
}

/// The device routes refuse bad input with a stable code and change nothing:
/// forged or oversized certificates, certifying a device that is not pending,
/// unknown devices, malformed bodies, another user's device.
async fn device_routes_refuse_bad_input(mut h: Harness) {
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

on_both_backends!(
    a_ghost_device_gets_nothing,
    device_routes_refuse_bad_input,
    linked_devices_are_certified_and_removed_by_their_user,
    the_database_alone_cannot_mint_a_token,
    rotating_the_token_key_kills_every_token,
    a_replayed_refresh_token_kills_its_chain,
);

/// Reads from `stream` until the server closes it; how long that took. Panics
/// after `limit`, so a connection the server keeps open fails the test.
async fn time_until_closed(
    stream: &mut tokio::net::TcpStream,
    limit: std::time::Duration,
) -> std::time::Duration {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept the connection open for {limit:?}"),
        }
    }
}

/// The review left idle and half-sent connections open for good. Now a request
/// head must arrive within the header-read timeout, an idle keep-alive connection
/// is closed after it, and a body that stops flowing ends the request — while a
/// prompt client is served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let dir = atlas_store::testdb::TempDir::new("atlas-timeouts").unwrap();
    let mut config = atlas_server::ServerConfig::new(dir.sqlite_url("atlas.db"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.timeouts = atlas_server::listener::Timeouts {
        header_read: std::time::Duration::from_secs(1),
        body_read: std::time::Duration::from_secs(1),
        websocket_idle: std::time::Duration::from_secs(3),
    };
    let server = atlas_server::start(config).await.unwrap();
    let limit = std::time::Duration::from_secs(10);

    // Half a request head, then silence.
    let mut half = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let waited = time_until_closed(&mut half, limit).await;
    assert!(
        waited >= std::time::Duration::from_millis(900),
        "{waited:?}"
    );

    // Connected, never a byte.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    time_until_closed(&mut silent, limit).await;

    // A full request is answered; the idle keep-alive connection then closes.
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut idle, &mut answer)
        .await
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    time_until_closed(&mut idle, limit).await;

    // A body announced but never sent: the request fails and the connection ends.
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"us")
        .await
        .unwrap();
    time_until_closed(&mut stalled, limit).await;

    // A prompt client is served throughout.
    let health = reqwest::get(format!("{}/health", server.public_url))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // A WebSocket whose client never answers pings is closed after the idle limit.
    let device = RawDevice::register(&server.public_url, "sleeper").await;
    let token = device.token().await;
    let request = ws_request(&server.public_url, &device, &token);
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    // Take the raw stream back so nothing answers the pings.
    let mut raw = match socket.into_inner() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s,
        _ => unreachable!("plain TCP"),
    };
    let waited = time_until_closed(&mut raw, limit).await;
    assert!(waited >= std::time::Duration::from_secs(2), "{waited:?}");
    server.stop().await;
}

/// Someone who writes the database replaces bob's KeyPackages with ones of
/// their own making for bob's certified device (bob's device id in the
/// credential, their own MLS signature key): alice's client refuses to add
/// them, with or without a binding signature, and nothing is committed. Once
/// bob publishes his own (bound) KeyPackages again, the add works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_key_package_is_not_added() {
    use atlas_crypto::mls::{MlsDevice, signature_key_statement};
    let h = Harness::sqlite().await;
    let alice = atlas_testing::client(&h, "alice").await;
    let bob = atlas_testing::client(&h, "bob").await;
    alice.groups().create("team").await.unwrap();
    let (user, device) = (bob.user_id().clone(), bob.device_id().clone());
    let forger = MlsDevice::new(&user, &device).unwrap();
    let forged = forger.key_package(false).unwrap();
    let checked = atlas_crypto::mls::check_key_package(&forged).unwrap();
    let statement = signature_key_statement(&checked.member, &checked.signature_key);
    let attacker = OlmAccount::new();
    for binding in [
        "NULL".to_owned(),
        format!("'{}'", attacker.sign(&statement)),
    ] {
        h.sql("DELETE FROM mls_key_packages WHERE user_id = 'bob'")
            .await;
        let hex: String = forged.iter().map(|b| format!("{b:02x}")).collect();
        h.sql(&format!(
            "INSERT INTO mls_key_packages (user_id, device_id, key_package_ref, key_package, last_resort, status, created_at, binding) \
             VALUES ('bob', '{device}', 'forged', X'{hex}', 0, 'active', '2026-01-01T00:00:00Z', {binding})"
        ))
        .await;
        match alice.groups().add("team", &user).await {
            Err(atlas_client::ClientError::UntrustedKeys(what)) => {
                assert!(what.contains("MLS KeyPackage"), "{what}")
            }
            other => panic!("a forged KeyPackage must be refused, got {other:?}"),
        }
        let view = alice.groups().view("team").await.unwrap();
        assert_eq!(view.current_epoch, 0, "nothing was committed");
    }
    h.sql("DELETE FROM mls_key_packages WHERE user_id = 'bob'")
        .await;
    bob.groups().top_up_key_packages().await.unwrap();
    alice.groups().add("team", &user).await.unwrap();
}
