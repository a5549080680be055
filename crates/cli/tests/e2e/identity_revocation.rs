//! `atlas emergency revoke-keys identity --user bob` (seed 004 §3.3, as after a
//! stolen phone): bob's keys stop being handed out and his device may do
//! nothing but re-key; his SDK re-keys by itself on its next sync, reading
//! what was queued for the old keys first; alice's client sees the identity
//! change and sends nothing to bob until she accepts it; the group carries
//! on with bob's new MLS key; everything is in the audit log.
use crate::audit::{audit_entries, kek_of, token};
use atlas_testing::{Harness, RawDevice, on_both_backends, run_atlas};
use serde_json::Value;

/// `atlas emergency revoke-keys ARGS --server URL` with `token`.
pub(crate) fn revoke(token: &str, url: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["emergency", "revoke-keys"];
    all.extend_from_slice(args);
    all.extend(["--server", url]);
    run_atlas(None, Some(token), &all)
}

/// The body of `POST /devices/rekey`: `account`'s keys for `user`'s `device`, certified by `identity`.
pub(crate) fn rekey_request(
    account: &atlas_crypto::olm::OlmAccount,
    identity: &atlas_crypto::identity::UserIdentity,
    user: &atlas_proto::UserId,
    device: &atlas_proto::DeviceId,
) -> Value {
    let keys = account.device_keys(user, device);
    serde_json::json!({
        "device": keys,
        "identity_key": identity.public_key(),
        "certificate": identity.certify(user, &keys),
    })
}

fn devices_of(home: &std::path::Path, profile: &str, user: &str) -> Value {
    serde_json::from_str(&atlas_testing::atlas_ok(
        home,
        &["--profile", profile, "devices", user, "--json"],
    ))
    .unwrap()
}

async fn revoking_one_users_identity_makes_the_device_rekey_and_contacts_see_it(h: Harness) {
    let url = h.url();
    let home = h.homes.path.clone();
    let kek = kek_of(&h);
    let emergency = token(&h, &kek, "emergency");
    let auditor = token(&h, &kek, "audit");
    let atlas = |args: &[&str]| atlas_testing::atlas_ok(&home, args);
    for user in ["alice", "bob", "carol"] {
        atlas(&["--profile", user, "register", user, "--server", &url]);
    }
    atlas(&["--profile", "alice", "send", "bob", "hello bob"]);
    assert!(atlas(&["--profile", "bob", "inbox"]).contains("hello bob"));
    atlas(&["--profile", "bob", "send", "alice", "hello alice"]);
    assert!(atlas(&["--profile", "alice", "inbox"]).contains("hello alice"));
    atlas(&["--profile", "alice", "group", "create", "team"]);
    atlas(&["--profile", "alice", "group", "add", "team", "bob"]);
    atlas(&["--profile", "alice", "group", "send", "team", "hello team"]);
    assert!(atlas(&["--profile", "bob", "inbox"]).contains("hello team"));
    // Queued for bob's old keys: on the session, a pre-key message from a new
    // contact (for the old account's one-time key), and in the group.
    atlas(&["--profile", "alice", "send", "bob", "queued on the session"]);
    atlas(&["--profile", "carol", "send", "bob", "queued from carol"]);
    atlas(&[
        "--profile",
        "alice",
        "group",
        "send",
        "team",
        "queued in the group",
    ]);
    let before = devices_of(&home, "alice", "bob");
    let old_identity = before["identity_key"].as_str().unwrap().to_owned();
    let bob_device = before["devices"][0]["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_ed25519 = before["devices"][0]["ed25519"].as_str().unwrap().to_owned();
    let dave = RawDevice::register(&url, "dave").await;
    let dave_token = dave.token().await;

    // Refused with nothing changed: --user with a server-wide kind, an unknown user, no scope.
    let (ok, _, err) = revoke(&emergency, &url, &["signing", "--user", "bob", "--yes"]);
    assert!(
        !ok && err.contains("--user applies to `identity` only"),
        "{err}"
    );
    let (ok, _, err) = revoke(&emergency, &url, &["identity", "--user", "ghost", "--yes"]);
    assert!(!ok && err.contains("unknown_user"), "{err}");
    let (ok, _, err) = revoke(&auditor, &url, &["identity", "--user", "bob", "--yes"]);
    assert!(!ok && err.contains("403"), "{err}");
    assert_eq!(
        devices_of(&home, "alice", "bob")["devices"][0]["status"],
        "active"
    );

    let (ok, out, err) = revoke(
        &emergency,
        &url,
        &["identity", "--user", "bob", "--yes", "--json"],
    );
    assert!(ok, "{err}");
    let view: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["kind"], "identity");
    assert_eq!(view["devices_to_rekey"], 1);
    let revoked = view["revoked"].as_array().unwrap();
    let user_key = revoked
        .iter()
        .find(|k| k["purpose"] == "user-identity")
        .unwrap();
    assert_eq!(user_key["kid"], "bob");
    let x = user_key["public_jwk"]["x"].as_str().unwrap();
    assert_eq!(
        atlas_proto::b64::decode_std_lenient(&old_identity).unwrap(),
        atlas_proto::b64::decode(x).unwrap(),
        "the revoked identity key's public part is what the server listed"
    );
    assert!(revoked.iter().all(|k| k["public_jwk"].get("d").is_none()));

    // Until bob re-keys: no identity key, no keys handed out, nothing sent to him.
    let listed = devices_of(&home, "alice", "bob");
    assert!(listed["identity_key"].is_null(), "{listed}");
    assert_eq!(listed["devices"][0]["status"], "rekey");
    let claim = serde_json::json!({"user_id": "bob", "device_ids": [bob_device]});
    let (_, claimed) = dave
        .call(&dave_token, "POST", "/keys/claim", Some(claim))
        .await;
    assert!(
        claimed["devices"].as_array().is_none_or(|d| d.is_empty()),
        "a revoked device's keys are not handed out: {claimed}"
    );
    let (ok, out, err) = run_atlas(
        Some(&home),
        None,
        &["--profile", "alice", "send", "bob", "into the void"],
    );
    assert!(!ok, "nothing may be encrypted to revoked keys: {out}");
    assert!(err.contains("bob has no identity key"), "{err}");

    // bob may not send with the revoked keys; his next sync re-keys, reading
    // what was queued for the old keys first.
    let (ok, _, err) = run_atlas(
        Some(&home),
        None,
        &["--profile", "bob", "send", "alice", "with revoked keys"],
    );
    assert!(!ok && err.contains("rekey_required"), "{err}");
    let inbox = atlas(&["--profile", "bob", "inbox"]);
    for text in [
        "queued on the session",
        "queued from carol",
        "queued in the group",
    ] {
        assert!(inbox.contains(text), "{text}: {inbox}");
    }
    let after = devices_of(&home, "bob", "bob");
    assert_eq!(after["devices"][0]["status"], "active");
    assert_ne!(after["devices"][0]["ed25519"], old_ed25519.as_str());
    let new_identity = after["identity_key"].as_str().unwrap().to_owned();
    assert_ne!(new_identity, old_identity);

    // alice's client flags the change and sends nothing until she accepts it.
    let shown = atlas(&["--profile", "alice", "devices", "bob"]);
    assert!(shown.contains("identity key CHANGED"), "{shown}");
    let (ok, _, err) = run_atlas(
        Some(&home),
        None,
        &["--profile", "alice", "send", "bob", "before verifying"],
    );
    assert!(!ok && err.contains("identity key changed"), "{err}");
    atlas(&["--profile", "alice", "verify", "bob", "--confirm"]);
    atlas(&["--profile", "alice", "send", "bob", "after verifying"]);
    atlas(&["--profile", "bob", "send", "alice", "bob is back"]);
    let inbox = atlas(&["--profile", "bob", "inbox"]);
    assert!(inbox.contains("after verifying"), "{inbox}");
    assert!(!inbox.contains("before verifying"), "{inbox}");
    assert!(atlas(&["--profile", "alice", "inbox"]).contains("bob is back"));

    // The group goes on with bob's new MLS key.
    atlas(&[
        "--profile",
        "alice",
        "group",
        "send",
        "team",
        "after the rekey",
    ]);
    assert!(atlas(&["--profile", "bob", "inbox"]).contains("after the rekey"));
    atlas(&[
        "--profile",
        "bob",
        "group",
        "send",
        "team",
        "bob in the group",
    ]);
    assert!(atlas(&["--profile", "alice", "inbox"]).contains("bob in the group"));

    // Without --yes and without a terminal: refused before anything is asked of the server.
    let (ok, _, err) = revoke(&emergency, &url, &["identity", "--user", "carol"]);
    assert!(!ok && err.contains("pass --yes"), "{err}");

    let revocations = audit_entries(&auditor, &url, Some("keys.revoke"));
    assert_eq!(revocations.len(), 1);
    assert_eq!(revocations[0]["target"], "identity:bob");
    assert!(revocations[0]["detail"].as_str().unwrap().contains(x));
    let rekeys = audit_entries(&auditor, &url, Some("device.rekey"));
    assert_eq!(rekeys.len(), 1);
    assert_eq!(rekeys[0]["target"], format!("bob/{bob_device}"));
    let (ok, out, err) = run_atlas(None, Some(&auditor), &["audit", "verify", "--server", &url]);
    assert!(ok && out.contains("OK"), "{out}{err}");
}

/// A revoked device may sign in but do nothing except re-key, and only with
/// keys its new identity key really certified; an active device has nothing
/// to re-key; the ws push closes with `rekey_required`.
async fn a_revoked_device_may_only_rekey_with_keys_it_certified(h: Harness) {
    use atlas_crypto::identity::UserIdentity;
    use atlas_crypto::olm::OlmAccount;
    use futures_util::StreamExt;
    let url = h.url();
    let kek = kek_of(&h);
    let emergency = token(&h, &kek, "emergency");
    let mut dave = RawDevice::register(&url, "dave").await;
    let erin = RawDevice::register(&url, "erin").await;
    let (dave_token, erin_token) = (dave.token().await, erin.token().await);
    let (new_account, new_identity) = (OlmAccount::new(), UserIdentity::generate());
    let good = rekey_request(&new_account, &new_identity, &dave.user_id, &dave.device_id);
    let (status, body) = dave
        .call(&dave_token, "POST", "/devices/rekey", Some(good.clone()))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("invalid_request")),
        "{body}"
    );
    let mut socket = dave.push_socket(&dave_token).await;
    // Token times are whole seconds: the revocation comes in a later one.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let (ok, out, err) = revoke(&emergency, &url, &["identity", "--user", "dave", "--yes"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("[1/4] Revoking 1 user identity keys and the keys of 1 devices"),
        "{out}"
    );
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
        .await
        .expect("the socket is closed at once");
    assert!(
        format!("{closed:?}").contains("rekey_required"),
        "{closed:?}"
    );

    // A token captured before the revocation is dead; a new one (signed with
    // the old device key, the only one the device has) may do nothing but
    // re-key: everything else is refused with a code the SDK acts on.
    let (status, answer) = dave.call(&dave_token, "GET", "/messages", None).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_token"))
    );
    let dave_token = dave.token().await;
    for (method, path, body) in [
        ("GET", "/messages", None),
        (
            "POST",
            "/keys/upload",
            Some(serde_json::json!({"one_time_keys": []})),
        ),
        ("GET", "/mls/key-packages/count", None),
        ("GET", "/users/erin/devices", None),
    ] {
        let (status, answer) = dave.call(&dave_token, method, path, body).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (403, Some("rekey_required")),
            "{method} {path}: {answer}"
        );
    }
    let other = rekey_request(
        &new_account,
        &new_identity,
        &dave.user_id,
        &atlas_proto::DeviceId::new("NOTMINE").unwrap(),
    );
    let mut forged = good.clone();
    forged["device"]["curve25519"] = serde_json::json!(OlmAccount::new().curve25519());
    let mut uncertified = good.clone();
    uncertified["certificate"] = serde_json::json!(UserIdentity::generate().certify(
        &dave.user_id,
        &serde_json::from_value(good["device"].clone()).unwrap()
    ));
    let mut junk = good.clone();
    junk["identity_key"] = serde_json::json!("not a key");
    let mut extra = good.clone();
    extra["admin"] = serde_json::json!(true);
    for (body, code) in [
        (other, "invalid_request"),
        (forged, "invalid_signature"),
        (uncertified, "invalid_certificate"),
        (junk, "invalid_certificate"),
        (extra, "invalid_request"),
    ] {
        let (status, answer) = dave
            .call(&dave_token, "POST", "/devices/rekey", Some(body))
            .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some(code)),
            "{answer}"
        );
    }
    let (status, answer) = erin
        .call(&erin_token, "POST", "/devices/rekey", Some(good.clone()))
        .await;
    assert_eq!(
        status, 409,
        "an active device has nothing to re-key: {answer}"
    );
    let window_token = dave.token().await;
    let (status, answer) = dave
        .call(&dave_token, "POST", "/devices/rekey", Some(good.clone()))
        .await;
    assert_eq!(status, 200, "{answer}");
    // Whoever held the old key during the wait holds nothing now.
    let (status, answer) = dave.call(&window_token, "GET", "/messages", None).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_token"))
    );
    // From the next second on, only the new device key signs in, and there is
    // nothing more to re-key.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    dave.account = new_account;
    let dave_token = dave.token().await;
    assert_eq!(
        dave.call(&dave_token, "GET", "/messages", None).await.0,
        200
    );
    let (status, _) = dave
        .call(&dave_token, "POST", "/devices/rekey", Some(good))
        .await;
    assert_eq!(status, 409, "re-keyed once only");
    assert_eq!(
        erin.call(&erin_token, "GET", "/messages", None).await.0,
        200
    );
}

/// `revoke-keys all`: identity, signing and encryption in one command; both
/// users re-key by themselves and, once they accept each other's new identity
/// key, talk again, and what could not be authenticated is resent; three
/// audit entries.
async fn revoking_all_keys_rekeys_everyone_and_replaces_the_servers_keys(h: Harness) {
    let url = h.url();
    let home = h.homes.path.clone();
    let kek = kek_of(&h);
    let emergency = token(&h, &kek, "emergency");
    let auditor = token(&h, &kek, "audit");
    let atlas = |args: &[&str]| atlas_testing::atlas_ok(&home, args);
    for user in ["alice", "bob"] {
        atlas(&["--profile", user, "register", user, "--server", &url]);
    }
    atlas(&["--profile", "alice", "send", "bob", "before"]);
    let (ok, out, err) = run_atlas(
        None,
        Some(&emergency),
        &["emergency", "revoke-keys", "all", "--yes", "--server", &url],
    );
    assert!(ok, "{err}");
    for step in [
        "Revoking 2 user identity keys and the keys of 2 devices",
        "receipt-signing",
        "Re-sealing every server secret",
    ] {
        assert!(out.contains(step), "{step}: {out}");
    }
    // alice's first message starts a session from alice's old identity key,
    // revoked too: bob cannot authenticate it, so he asks for it again, and
    // alice resends it under her new identity once they trust each other.
    let first = atlas(&["--profile", "bob", "inbox"]);
    assert!(!first.contains(": before"), "{first}");
    atlas(&["--profile", "alice", "inbox"]);
    let (ok, _, err) = run_atlas(
        Some(&home),
        None,
        &["--profile", "alice", "send", "bob", "x"],
    );
    assert!(!ok && err.contains("identity key changed"), "{err}");
    atlas(&["--profile", "alice", "verify", "bob", "--confirm"]);
    atlas(&["--profile", "bob", "verify", "alice", "--confirm"]);
    atlas(&["--profile", "alice", "send", "bob", "after"]);
    atlas(&["--profile", "bob", "send", "alice", "back"]);
    let inbox = atlas(&["--profile", "bob", "inbox"]);
    assert!(inbox.contains(": after"), "{inbox}");
    assert!(atlas(&["--profile", "alice", "inbox"]).contains("back"));
    assert!(
        atlas(&["--profile", "bob", "inbox"]).contains(": before"),
        "resent under the new identity"
    );
    let targets: Vec<String> = audit_entries(&auditor, &url, Some("keys.revoke"))
        .iter()
        .map(|e| e["target"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(targets.len(), 3, "{targets:?}");
    for kind in ["identity", "signing", "encryption"] {
        assert!(targets.iter().any(|t| t == kind), "{kind}: {targets:?}");
    }
}

/// A device listening on its push socket re-keys when the server closes it
/// with `rekey_required`, and the listener returns so the caller reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_device_rekeys_when_its_socket_is_closed() {
    use atlas_client::Client;
    let h = Harness::sqlite().await;
    let url = h.url();
    let kek = kek_of(&h);
    let emergency = token(&h, &kek, "emergency");
    let uid = |u: &str| atlas_proto::UserId::new(u).unwrap();
    let alice = Client::register(&h.profile("alice"), &url, uid("alice"), None)
        .await
        .unwrap();
    let bob = Client::register(&h.profile("bob"), &url, uid("bob"), None)
        .await
        .unwrap();
    let old_keys = alice.devices(&uid("bob")).await.unwrap().devices[0]
        .keys
        .clone();
    alice
        .messages()
        .send_text(&uid("bob"), "first")
        .await
        .unwrap();
    bob.messages().sync().await.unwrap();
    drop(bob);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = {
        let bob_dir = h.profile("bob");
        tokio::spawn(async move {
            let bob = Client::open(&bob_dir).await.unwrap();
            bob.listen(move |m| tx.send(m).unwrap(), std::future::pending())
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (ok, _, err) = revoke(&emergency, &url, &["identity", "--user", "bob", "--yes"]);
    assert!(ok, "{err}");
    tokio::time::timeout(std::time::Duration::from_secs(20), listener)
        .await
        .expect("the listener re-keys and returns")
        .unwrap()
        .unwrap();
    let listed = alice.devices(&uid("bob")).await.unwrap();
    assert_eq!(listed.devices[0].status.as_str(), "active");
    assert_ne!(listed.devices[0].keys.ed25519, old_keys.ed25519);
    assert!(rx.try_recv().is_err(), "nothing was queued");

    alice.confirm_identity(&uid("bob")).await.unwrap();
    alice
        .messages()
        .send_text(&uid("bob"), "after")
        .await
        .unwrap();
    let bob = Client::open(&h.profile("bob")).await.unwrap();
    let read = bob.messages().sync().await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].text.as_deref(), Some("after"));
}

on_both_backends!(
    revoking_one_users_identity_makes_the_device_rekey_and_contacts_see_it,
    a_revoked_device_may_only_rekey_with_keys_it_certified,
    revoking_all_keys_rekeys_everyone_and_replaces_the_servers_keys,
);
