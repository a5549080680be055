//! The emergency lockdown (seed 004 §3.1): typed confirmation, the client API
//! closed (503 locked_down with Retry-After, no tokens, sockets closed) while
//! health, status, metrics and the admin API stay up; written into the open
//! incident; held across a restart; lifted; every attempt audited.
use crate::audit::{kek_of, token};
use crate::replicas::closed_by_server;
use atlas_testing::{Harness, RawDevice, on_both_backends, run_atlas};
use serde_json::Value;

async fn a_lockdown_closes_the_client_api_until_lifted(mut h: Harness) {
    let url = h.url();
    let kek = kek_of(&h);
    let emergency = token(&h, &kek, "emergency");
    let incidents = token(&h, &kek, "incidents");
    let auditor = token(&h, &kek, "audit");
    let narrow = token(&h, &kek, "incidents");
    let (ok, out, err) = run_atlas(
        None,
        Some(&incidents),
        &[
            "incident",
            "declare",
            "SEV-1",
            "Key compromise suspected",
            "--server",
            &url,
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let incident: Value = serde_json::from_str(&out).unwrap();
    let id = incident["id"].as_str().unwrap().to_owned();
    let bob = RawDevice::register(&url, "bob").await;
    let bob_token = bob.token().await;
    let mut socket = bob.push_socket(&bob_token).await;
    let evidence = h.homes.path.join("evidence");
    let dir = |name: &str| evidence.join(name).display().to_string();
    let shutdown_to = |token: &str, confirm: Option<&str>, to: &str| {
        let mut args = vec![
            "emergency",
            "shutdown",
            "--server",
            &url,
            "--reason",
            "drill",
            "--evidence-dir",
            to,
        ];
        if let Some(confirm) = confirm {
            args.extend(["--confirm", confirm]);
        }
        let (ok, out, err) = run_atlas(None, Some(token), &args);
        (ok, format!("{out}{err}"))
    };
    let shutdown = |token: &str, confirm: Option<&str>| shutdown_to(token, confirm, &dir("bundle"));

    // Malformed bodies and queries: a clear 400, nothing changed.
    let raw = atlas_client::http_client().unwrap();
    for (method, path, body) in [
        (
            "POST",
            "/admin/emergency/lockdown",
            serde_json::json!({"confirm": 5}),
        ),
        (
            "POST",
            "/admin/emergency/lockdown",
            serde_json::json!({"confirm": "CONFIRM SHUTDOWN", "reason": "x".repeat(100_000)}),
        ),
        (
            "POST",
            "/admin/emergency/lockdown",
            serde_json::json!({"confirm": "CONFIRM SHUTDOWN", "extra": 1}),
        ),
        ("POST", "/admin/emergency/lift", serde_json::json!({})),
        (
            "POST",
            "/admin/emergency/revoke-keys",
            serde_json::json!({"kind": "everything"}),
        ),
        ("GET", "/admin/audit?limit=many", serde_json::Value::Null),
        (
            "GET",
            "/admin/audit?since=yesterday",
            serde_json::Value::Null,
        ),
    ] {
        let token = if path.starts_with("/admin/audit") {
            &auditor
        } else {
            &emergency
        };
        let request = raw
            .request(method.parse().unwrap(), format!("{url}{path}"))
            .bearer_auth(token);
        let request = if body.is_null() {
            request
        } else {
            request.json(&body)
        };
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        assert!(
            matches!(status, 400 | 413 | 422),
            "{method} {path}: {status} {body}"
        );
        assert!(
            body["error"].is_string(),
            "{method} {path}: a stable code: {body}"
        );
    }
    assert_eq!(
        bob.call(&bob_token, "GET", "/messages", None).await.0,
        200,
        "nothing changed"
    );

    // Refused: without the scope, with a wrong phrase, without a terminal to type it on.
    let (ok, out) = shutdown(&narrow, Some("CONFIRM SHUTDOWN"));
    assert!(!ok && out.contains("insufficient_scope"), "{out}");
    let (ok, out) = shutdown(&emergency, Some("confirm shutdown"));
    assert!(!ok && out.contains("confirmation_mismatch"), "{out}");
    let (ok, out) = shutdown(&emergency, None);
    assert!(
        !ok && out.contains("pass --confirm 'CONFIRM SHUTDOWN'"),
        "{out}"
    );
    std::fs::create_dir_all(dir("taken")).unwrap();
    let (ok, out) = shutdown_to(&emergency, Some("CONFIRM SHUTDOWN"), &dir("taken"));
    assert!(!ok && out.contains("exists"), "{out}");
    let (ok, out) = shutdown_to(&emergency, Some("CONFIRM SHUTDOWN"), "/proc/atlas-evidence");
    assert!(!ok && out.contains("cannot create"), "{out}");
    assert!(
        !std::path::Path::new(&dir("bundle")).exists(),
        "no evidence for a refused shutdown"
    );
    assert_eq!(
        bob.call(&bob_token, "GET", "/messages", None).await.0,
        200,
        "nothing changed"
    );

    let (ok, out) = shutdown(&emergency, Some("CONFIRM SHUTDOWN"));
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("[4/5] Writing into open incidents... {id}")),
        "{out}"
    );
    assert!(
        out.contains("[1/5] Saving forensic evidence... 5 files"),
        "{out}"
    );

    // The evidence: signed, checkable by sha256sum alone, without secrets.
    let bundle = std::path::PathBuf::from(dir("bundle"));
    let check = std::process::Command::new("sha256sum")
        .args(["-c", "MANIFEST"])
        .current_dir(&bundle)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && listed.matches(": OK").count() == 5,
        "{listed}"
    );
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["open_incidents"][0]["id"], id.as_str());
    assert!(state["row_counts"]["users"].as_i64().unwrap() >= 1);
    let acts = state["recent_admin_actions"].as_array().unwrap();
    assert!(
        acts.iter().any(|a| a["action"] == "POST /admin/incidents"),
        "{acts:?}"
    );
    let config = std::fs::read_to_string(bundle.join("config.json")).unwrap();
    assert!(
        !config.contains("kek") && !config.contains("postgres://"),
        "{config}"
    );
    assert!(
        std::fs::read_to_string(bundle.join("metrics.txt"))
            .unwrap()
            .contains("atlas_audit_entries")
    );
    assert!(
        std::fs::read_to_string(bundle.join("audit-checkpoint.txt"))
            .unwrap()
            .contains("/audit/")
    );
    let verify = |path: &std::path::Path| {
        let (ok, out, err) = run_atlas(
            None,
            None,
            &["emergency", "verify-evidence", &path.display().to_string()],
        );
        (ok, format!("{out}{err}"))
    };
    assert!(verify(&bundle).0);
    std::fs::write(bundle.join("state.json"), "{}").unwrap();
    let (ok, out) = verify(&bundle);
    assert!(
        !ok && out.contains("state.json does not match the manifest"),
        "{out}"
    );
    assert_eq!(
        closed_by_server(&mut socket).await,
        (1008, "locked_down".into())
    );
    let (status, headers, body) = bob
        .send_raw(
            "GET",
            "/messages",
            Some(format!("DPoP {bob_token}")),
            None,
            None,
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (503, Some("locked_down")));
    assert_eq!(headers["retry-after"], "60");
    let (status, body) = bob
        .post_token(serde_json::json!({"grant_type": "refresh_token", "refresh_token": "x"}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("locked_down")),
        "no tokens"
    );
    let http = atlas_client::http_client().unwrap();
    for path in [
        "/livez",
        "/readyz",
        "/status",
        "/api/v2/status.json",
        "/metrics",
        "/.well-known/jwks.json",
    ] {
        let status = http
            .get(format!("{url}{path}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{path} stays up");
    }
    let health: Value = atlas_testing::get_json(&format!("{url}/health")).await;
    assert_eq!(health["status"], "locked_down");
    assert_eq!(health["lockdown"]["reason"], "drill");
    let metrics = atlas_testing::metrics_text(&url).await;
    assert_eq!(
        atlas_testing::series(&metrics, "atlas_lockdown_active"),
        1.0
    );
    let (ok, out) = shutdown(&emergency, Some("CONFIRM SHUTDOWN"));
    assert!(!ok && out.contains("already_locked_down"), "{out}");
    let (ok, out, err) = run_atlas(
        None,
        Some(&incidents),
        &["incident", "show", &id, "--server", &url, "--json"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("EMERGENCY LOCKDOWN"), "{out}");

    // It is in the database: a restarted server is still locked down.
    h.stop().await;
    h.start().await;
    let (status, _) = bob.call(&bob_token, "GET", "/messages", None).await;
    assert_eq!(status, 503, "held across a restart");
    let (ok, out, _) = run_atlas(
        None,
        Some(&emergency),
        &["emergency", "status", "--server", &url],
    );
    assert!(ok && out.contains("LOCKED DOWN"), "{out}");

    let lift = |confirm: &str| {
        let (ok, out, err) = run_atlas(
            None,
            Some(&emergency),
            &["emergency", "lift", "--confirm", confirm, "--server", &url],
        );
        (ok, format!("{out}{err}"))
    };
    let (ok, out) = lift("LIFT");
    assert!(!ok && out.contains("confirmation_mismatch"), "{out}");
    let (ok, out) = lift("LIFT LOCKDOWN");
    assert!(ok, "{out}");
    assert_eq!(
        bob.call(&bob_token, "GET", "/messages", None).await.0,
        200,
        "open again"
    );
    let metrics = atlas_testing::metrics_text(&url).await;
    assert_eq!(
        atlas_testing::series(&metrics, "atlas_lockdown_active"),
        0.0
    );
    let (ok, out) = lift("LIFT LOCKDOWN");
    assert!(!ok && out.contains("not_locked_down"), "{out}");

    // Every attempt is in the audit log with its outcome.
    let entries = crate::audit::audit_entries(&auditor, &url, Some("POST /admin/emergency"));
    // The token without the scope was refused at its first request, and that is recorded too.
    let refused = crate::audit::audit_entries(&auditor, &url, Some("GET /admin/emergency"));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["detail"], "403 insufficient_scope");
    let seen: Vec<String> = entries
        .iter()
        .rev()
        .map(|e| {
            format!(
                "{} {} {}",
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
                e["detail"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            // The malformed ones first: refused, and recorded.
            "POST /admin/emergency/lockdown refused 400 invalid_request",
            "POST /admin/emergency/lockdown refused 400 invalid_request",
            "POST /admin/emergency/lockdown refused 400 invalid_request",
            "POST /admin/emergency/lift refused 400 invalid_request",
            "POST /admin/emergency/revoke-keys refused 400 invalid_request",
            "POST /admin/emergency/lockdown refused 400 confirmation_mismatch",
            "POST /admin/emergency/evidence ok 200",
            "POST /admin/emergency/lockdown ok 200",
            "POST /admin/emergency/lockdown refused 409 already_locked_down",
            "POST /admin/emergency/lift refused 400 confirmation_mismatch",
            "POST /admin/emergency/lift ok 200",
            "POST /admin/emergency/lift refused 409 not_locked_down",
        ]
    );
}

/// `revoke-keys signing`: every receipt key is revoked (a receipt signed
/// before stops verifying, the JWKS drops its key), every token dies at once,
/// the secrets are gone from the database, the public parts are in the audit
/// log, and the CLI carries on with no user action.
async fn revoking_signing_keys_kills_tokens_and_receipts_and_clients_carry_on(h: Harness) {
    let url = h.url();
    let kek = kek_of(&h);
    let home = h.homes.path.clone();
    let emergency = token(&h, &kek, "emergency");
    let auditor = token(&h, &kek, "audit");
    for user in ["alice", "bob"] {
        atlas_testing::atlas_ok(
            &home,
            &["--profile", user, "register", user, "--server", &url],
        );
    }
    let sent: Value = serde_json::from_str(&atlas_testing::atlas_ok(
        &home,
        &["--profile", "alice", "send", "bob", "before", "--json"],
    ))
    .unwrap();
    let receipt = sent["receipt"]["base64"].as_str().unwrap().to_owned();
    let old_kid = sent["receipt"]["kid"].as_str().unwrap().to_owned();
    atlas_testing::atlas_ok(&home, &["verify-receipt", "--receipt", &receipt]);
    let carol = RawDevice::register(&url, "carol").await;
    let captured = carol.token().await;
    assert_eq!(carol.call(&captured, "GET", "/messages", None).await.0, 200);

    // Without a terminal and without --yes: refused, nothing changed.
    let (ok, _, err) = run_atlas(
        None,
        Some(&emergency),
        &["emergency", "revoke-keys", "signing", "--server", &url],
    );
    assert!(!ok && err.contains("pass --yes"), "{err}");
    let (ok, _, err) = run_atlas(
        None,
        Some(&emergency),
        &["emergency", "revoke-keys", "everything", "--server", &url],
    );
    assert!(!ok && err.contains("invalid value"), "{err}");
    assert_eq!(carol.call(&captured, "GET", "/messages", None).await.0, 200);

    let (ok, out, err) = run_atlas(
        None,
        Some(&emergency),
        &[
            "emergency",
            "revoke-keys",
            "signing",
            "--yes",
            "--server",
            &url,
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let view: Value = serde_json::from_str(&out).unwrap();
    let revoked = view["revoked"].as_array().unwrap();
    let purposes: std::collections::BTreeSet<&str> = revoked
        .iter()
        .map(|k| k["purpose"].as_str().unwrap())
        .collect();
    assert_eq!(
        purposes,
        ["access-token", "dpop-nonce", "receipt-signing"].into()
    );
    let old = revoked
        .iter()
        .find(|k| k["kid"] == old_kid.as_str())
        .unwrap();
    assert_eq!(old["public_jwk"]["kid"], old_kid.as_str());
    assert!(old["public_jwk"].get("d").is_none(), "public parts only");

    // The captured token is dead; the old receipt no longer verifies; the JWKS moved on.
    let (status, body) = carol.call(&captured, "GET", "/messages", None).await;
    assert_eq!(status, 401, "{body}");
    let (ok, out, err) = run_atlas(None, None, &["verify-receipt", "--receipt", &receipt]);
    assert!(
        !ok,
        "a receipt under a revoked key must not verify: {out}{err}"
    );
    let jwks: Value = atlas_testing::get_json(&format!("{url}/.well-known/jwks.json")).await;
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kid"] != old_kid.as_str())
    );
    // The secrets are destroyed, not kept: the rows hold nothing.
    for purpose in ["receipt-signing", "access-token", "dpop-nonce"] {
        let stored = h.stored_server_keys(purpose).await;
        let wiped = stored
            .iter()
            .filter(|(_, secret)| secret.is_empty())
            .count();
        assert_eq!(
            wiped,
            stored.len() - 1,
            "{purpose}: all but the new key wiped"
        );
    }

    // The users do nothing: their next commands sign in again and work.
    atlas_testing::atlas_ok(&home, &["--profile", "alice", "send", "bob", "after"]);
    let inbox = atlas_testing::atlas_ok(&home, &["--profile", "bob", "inbox"]);
    assert!(
        inbox.contains("before") && inbox.contains("after"),
        "{inbox}"
    );
    let fresh: Value = serde_json::from_str(&atlas_testing::atlas_ok(
        &home,
        &["--profile", "alice", "send", "bob", "verified", "--json"],
    ))
    .unwrap();
    assert_ne!(fresh["receipt"]["kid"], old_kid.as_str());
    atlas_testing::atlas_ok(
        &home,
        &[
            "verify-receipt",
            "--receipt",
            fresh["receipt"]["base64"].as_str().unwrap(),
        ],
    );

    let entries = crate::audit::audit_entries(&auditor, &url, Some("keys.revoke"));
    assert_eq!(entries.len(), 1);
    assert!(entries[0]["detail"].as_str().unwrap().contains(&old_kid));
}

/// Every stored secret: (purpose, kid, sealed secret).
async fn all_secrets(h: &Harness) -> Vec<(String, String, Vec<u8>)> {
    let mut all = Vec::new();
    for purpose in [
        "access-token",
        "dpop-nonce",
        "receipt-signing",
        "metrics-label",
        "audit-log",
    ] {
        for (kid, secret) in h.stored_server_keys(purpose).await {
            all.push((purpose.to_owned(), kid, secret));
        }
    }
    all
}

fn kek_bytes(path: &str) -> [u8; 32] {
    let text = std::fs::read_to_string(path).unwrap();
    atlas_proto::b64::decode(text.trim())
        .unwrap()
        .try_into()
        .unwrap()
}

fn kek_from_file(path: &str) -> atlas_server::kek::Kek {
    atlas_server::kek::Kek::from_key(&kek_bytes(path))
}

/// `revoke-keys encryption`: a new KEK, every secret re-sealed, the old KEK
/// gone (it opens nothing, its file is replaced); the server carries on and
/// restarts. A rotation cut between the database and the file is finished
/// at the next start; one that never reached the database is forgotten.
async fn revoking_the_kek_reseals_every_secret_and_survives_a_crash(mut h: Harness) {
    let url = h.url();
    let kek = kek_of(&h);
    let home = h.homes.path.clone();
    let emergency = token(&h, &kek, "emergency");
    for user in ["alice", "bob"] {
        atlas_testing::atlas_ok(
            &home,
            &["--profile", user, "register", user, "--server", &url],
        );
    }
    atlas_testing::atlas_ok(&home, &["--profile", "alice", "send", "bob", "before"]);
    let old_bytes = kek_bytes(&kek);
    let old = atlas_server::kek::Kek::from_key(&old_bytes);
    let before = all_secrets(&h).await;
    assert!(before.len() >= 5);

    let (ok, out, err) = run_atlas(
        None,
        Some(&emergency),
        &[
            "emergency",
            "revoke-keys",
            "encryption",
            "--yes",
            "--server",
            &url,
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("Destroying the old KEK {}", old.fingerprint())),
        "{out}"
    );
    let new = kek_from_file(&kek);
    assert_ne!(new.fingerprint(), old.fingerprint());
    assert!(!std::path::Path::new(&format!("{kek}.next")).exists());
    let after = all_secrets(&h).await;
    assert_eq!(after.len(), before.len());
    for ((purpose, kid, was), (_, _, now)) in before.iter().zip(&after) {
        assert_ne!(was, now, "{purpose} {kid} re-sealed");
        assert!(
            old.open(purpose, kid, now).is_err(),
            "the old KEK opens nothing"
        );
        assert!(new.open(purpose, kid, now).is_ok());
    }
    // A replica that had not reloaded yet writes a key under the old KEK;
    // adopting the new KEK re-seals that straggler, so every key opens again.
    let store = atlas_store::open(&h.database_url()).await.unwrap();
    let stale = atlas_server::server_keys::ServerKeys::new(
        store.clone(),
        atlas_server::kek::Kek::from_key(&old_bytes),
    );
    let now = time::OffsetDateTime::now_utc();
    stale
        .rotate(&atlas_server::receipts::new_signing_key(now), now, now)
        .await
        .unwrap();
    assert_eq!(stale.adopt_kek(kek_from_file(&kek)).await.unwrap(), 1);
    for (purpose, kid, secret) in all_secrets(&h).await {
        if !secret.is_empty() {
            assert!(new.open(&purpose, &kid, &secret).is_ok(), "{purpose} {kid}");
        }
    }
    drop((stale, store));
    // The server uses the new KEK at once, and after a restart.
    atlas_testing::atlas_ok(&home, &["--profile", "alice", "send", "bob", "after"]);
    h.stop().await;
    h.start().await;
    atlas_testing::atlas_ok(&home, &["--profile", "alice", "send", "bob", "restarted"]);
    let inbox = atlas_testing::atlas_ok(&home, &["--profile", "bob", "inbox"]);
    assert!(
        inbox.contains("before") && inbox.contains("after") && inbox.contains("restarted"),
        "{inbox}"
    );

    // A crash after the database was re-sealed and the old file zeroed, before the rename.
    h.stop().await;
    let store = atlas_store::open(&h.database_url()).await.unwrap();
    let path = std::path::PathBuf::from(&kek);
    let next_path = atlas_server::kek::Kek::next_path(&path);
    let keys = atlas_server::open_server_keys(store.clone(), &path)
        .await
        .unwrap();
    let next = atlas_server::kek::Kek::create_new(&next_path).unwrap();
    keys.reseal_all(&next).await.unwrap();
    std::fs::write(&path, vec![0u8; 45]).unwrap();
    drop((keys, store));
    h.start().await;
    atlas_testing::atlas_ok(&home, &["--profile", "alice", "send", "bob", "recovered"]);
    assert_eq!(
        kek_from_file(&kek).fingerprint(),
        next.fingerprint(),
        "the next KEK became the KEK"
    );
    assert!(!next_path.exists());

    // A rotation that never reached the database: its next KEK is dropped.
    h.stop().await;
    atlas_server::kek::Kek::create_new(&next_path).unwrap();
    h.start().await;
    assert!(!next_path.exists());
    assert_eq!(kek_from_file(&kek).fingerprint(), next.fingerprint());
    atlas_testing::atlas_ok(&home, &["--profile", "alice", "send", "bob", "still"]);
}

on_both_backends!(
    a_lockdown_closes_the_client_api_until_lifted,
    revoking_signing_keys_kills_tokens_and_receipts_and_clients_carry_on,
    revoking_the_kek_reseals_every_secret_and_survives_a_crash
);

/// The drill on two replicas sharing PostgreSQL and Redis: a SEV-1,
/// shutdown with evidence (503 on both replicas, health and status up), the
/// signing keys and the KEK revoked through different replicas, lift; clients
/// sign in again by themselves, nothing accepted before the shutdown is lost;
/// one user's identity revoked on one replica and re-keyed on the other; and
/// the audit log verifies — until a row is edited by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_on_two_replicas() {
    use crate::replicas::{PUBLIC, base, replica, shared_redis};
    let mut h = Harness::postgres().await;
    h.stop().await;
    let redis = shared_redis();
    let (r1, r2) = (replica(&h, &redis).await, replica(&h, &redis).await);
    let (u1, u2) = (base(&r1), base(&r2));
    let kek = kek_of(&h);
    let incidents = token(&h, &kek, "incidents");
    let emergency = token(&h, &kek, "emergency");
    let auditor = token(&h, &kek, "audit");
    let cli = |token: &str, args: &[&str]| {
        let (ok, out, err) = run_atlas(None, Some(token), args);
        assert!(ok, "atlas {args:?}: {out}{err}");
        out
    };
    cli(
        &incidents,
        &["incident", "declare", "SEV-1", "Drill", "--server", &u1],
    );
    let mut alice = RawDevice::register(&u1, "alice").await.behind(PUBLIC);
    let mut bob = RawDevice::register(&u2, "bob").await.behind(PUBLIC);
    let bob_device = bob.device_id.to_string();
    let accepted = alice.send_junk("bob", &bob_device, 5).await;
    let (alice_old, bob_old) = (alice.token().await, bob.token().await);

    // Shutdown through replica 1, with evidence; both replicas refuse clients.
    let evidence = h.homes.path.join("drill-evidence");
    let evidence = evidence.display().to_string();
    let out = cli(
        &emergency,
        &[
            "emergency",
            "shutdown",
            "--confirm",
            "CONFIRM SHUTDOWN",
            "--evidence-dir",
            &evidence,
            "--server",
            &u1,
        ],
    );
    assert!(
        out.contains("[4/5] Writing into open incidents... INC-"),
        "{out}"
    );
    cli(&emergency, &["emergency", "verify-evidence", &evidence]);
    for (device, token, url) in [(&mut bob, &bob_old, &u2), (&mut alice, &alice_old, &u1)] {
        device.base = url.clone();
        let (status, body) = device.call(token, "GET", "/messages", None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("locked_down")),
            "{url}"
        );
    }
    let http = atlas_client::http_client().unwrap();
    for url in [&u1, &u2] {
        let health: Value = atlas_testing::get_json(&format!("{url}/health")).await;
        assert_eq!(health["status"], "locked_down", "{url}");
        assert_eq!(
            http.get(format!("{url}/status"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }

    // Signing keys through replica 2, the KEK through replica 1, signing again
    // through replica 2: the last is sealed under the KEK replica 2 reloaded,
    // or replica 1 could not open it below.
    for (kind, url) in [("signing", &u2), ("encryption", &u1), ("signing", &u2)] {
        cli(
            &emergency,
            &["emergency", "revoke-keys", kind, "--yes", "--server", url],
        );
    }
    cli(
        &emergency,
        &[
            "emergency",
            "lift",
            "--confirm",
            "LIFT LOCKDOWN",
            "--server",
            &u1,
        ],
    );

    // Old tokens are dead everywhere; devices sign in again with their device keys.
    for url in [&u1, &u2] {
        alice.base = url.clone();
        assert_eq!(
            alice.call(&alice_old, "GET", "/messages", None).await.0,
            401,
            "{url}"
        );
    }
    alice.base = u1.clone();
    let alice_new = alice.token().await;
    let (status, body) = alice
        .call(
            &alice_new,
            "POST",
            "/messages",
            Some(serde_json::json!({
                "recipient_id": "bob",
                "client_message_id": "after-the-drill",
                "envelopes": [{"device_id": bob_device, "msg_type": 1, "body": "YWZ0ZXI"}],
            })),
        )
        .await;
    assert_eq!(
        status, 201,
        "replica 1 signs a receipt with the key replica 2 sealed: {body}"
    );
    bob.base = u2.clone();
    let bob_new = bob.token().await;
    let queued = bob.queued_ids(&bob_new).await;
    for id in &accepted {
        assert!(
            queued.contains(id),
            "{id} accepted before the shutdown is still queued"
        );
    }
    assert!(queued.contains(&body["message_id"].as_str().unwrap().to_owned()));

    // bob's phone is stolen: his identity is revoked through replica 1, and
    // replica 2 refuses his device at once (the control channel), until it
    // re-keys there; alice, on replica 1, sees a new identity key.
    let old_identity = alice
        .call(&alice_new, "GET", "/users/bob/devices", None)
        .await
        .1["identity_key"]
        .clone();
    cli(
        &emergency,
        &[
            "emergency",
            "revoke-keys",
            "identity",
            "--user",
            "bob",
            "--yes",
            "--server",
            &u1,
        ],
    );
    let (status, answer) = bob.call(&bob.token().await, "GET", "/messages", None).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (403, Some("rekey_required"))
    );
    let (account, identity) = (
        atlas_crypto::olm::OlmAccount::new(),
        atlas_crypto::identity::UserIdentity::generate(),
    );
    let rekey = crate::identity_revocation::rekey_request(
        &account,
        &identity,
        &bob.user_id,
        &bob.device_id,
    );
    let (status, answer) = bob
        .call(&bob.token().await, "POST", "/devices/rekey", Some(rekey))
        .await;
    assert_eq!(status, 200, "{answer}");
    bob.account = account;
    bob.identity = identity;
    // Tokens granted in the second of the re-key are refused: sign in after it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        bob.call(&bob.token().await, "GET", "/messages", None)
            .await
            .0,
        200
    );
    let new_identity = alice
        .call(&alice_new, "GET", "/users/bob/devices", None)
        .await
        .1["identity_key"]
        .clone();
    assert_ne!(new_identity, old_identity);
    assert_eq!(new_identity, bob.identity.public_key().as_str());

    // The record of all of it verifies; a hand edit does not.
    let out = cli(&auditor, &["audit", "verify", "--server", &u2]);
    assert!(out.contains("OK"), "{out}");
    assert_eq!(
        crate::audit::audit_entries(&auditor, &u1, Some("keys.revoke")).len(),
        4
    );
    assert_eq!(
        crate::audit::audit_entries(&auditor, &u1, Some("device.rekey")).len(),
        1
    );
    h.sql("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 1")
        .await;
    let (ok, out, _) = run_atlas(None, Some(&auditor), &["audit", "verify", "--server", &u1]);
    assert!(!ok && out.contains("TAMPERED: entry 1 was edited"), "{out}");
    r1.stop().await;
    r2.stop().await;
}

/// `atlas serve` keeps its recent log lines for the evidence: the bundle of a
/// real server process holds the warning it logged at start.
#[test]
fn the_evidence_of_a_server_process_holds_its_log_lines() {
    let data = atlas_store::testdb::TempDir::new("atlas-evidence-logs").unwrap();
    let server = atlas_testing::serve(&data, "127.0.0.1:0", &[]);
    let db = format!("sqlite://{}", data.path.join("atlas.db").display());
    let token = atlas_testing::operator_token(&db, "emergency");
    let dir = data.path.join("evidence");
    let dir = dir.display().to_string();
    let (ok, out, err) = run_atlas(
        None,
        Some(&token),
        &[
            "emergency",
            "evidence",
            "--evidence-dir",
            &dir,
            "--server",
            &server.url,
        ],
    );
    assert!(ok, "{out}{err}");
    let logs = std::fs::read_to_string(std::path::Path::new(&dir).join("logs.jsonl")).unwrap();
    let first: Value = serde_json::from_str(logs.lines().next().unwrap()).unwrap();
    assert!(
        first["timestamp"].is_string() && first["level"].is_string(),
        "{first}"
    );
    assert!(logs.contains("created a new key-encryption key"), "{logs}");
}
