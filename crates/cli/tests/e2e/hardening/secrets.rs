//! What a reader of the database file can do, and token lifetimes: sealed
//! keys, file modes, the KEK, token-key rotation, refresh-token replay,
//! operator token scopes and expiry.
use atlas_crypto::jws::HmacJwsKey;
use atlas_server::auth::tokens::{AccessClaims, AccessTokens, Confirmation};
use atlas_testing::{Harness, RawDevice, now};

/// The review's first step towards a ghost device: read the access-token key out
/// of the database and mint a token for bob. The key is sealed under the KEK,
/// which is not in the database, so the minted token is refused.
pub(super) async fn the_database_alone_cannot_mint_a_token(mut h: Harness) {
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
pub(super) async fn rotating_the_token_key_kills_every_token(mut h: Harness) {
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
pub(super) async fn a_replayed_refresh_token_kills_its_chain(mut h: Harness) {
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
