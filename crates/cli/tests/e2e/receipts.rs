//! Signed receipts end to end: issued on send and on acknowledgement, verified
//! against the published JWKS, through key rotation with overlap, revocation,
//! expiry and its extension in the `receipts` table, and reissue; and who may
//! see or reissue them.

use atlas_crypto::receipt_inspect::{ReceiptReport, verify_receipt};
use atlas_proto::b64;
use atlas_proto::receipt::ReceiptsResponse;
use atlas_server::Clock;
use atlas_testing::{Harness, RawDevice};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const DAY: i64 = 86_400;

/// A raw device whose proofs follow the harness clock.
async fn device(h: &Harness, user: &str) -> (RawDevice, String) {
    let d = RawDevice::register(&h.url(), user)
        .await
        .following(&h.clock);
    let token = d.token().await;
    (d, token)
}

async fn jwks(h: &Harness) -> Value {
    let r = atlas_client::http_client()
        .unwrap()
        .get(format!("{}/.well-known/jwks.json", h.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    r.json().await.unwrap()
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn check(h: &Harness, receipt_b64: &str) -> ReceiptReport {
    verify_receipt(receipt_b64, &jwks(h).await, h.clock.unix())
}

fn failed(report: &ReceiptReport) -> Vec<&'static str> {
    atlas_crypto::checks::failed(&report.checks)
}

/// An operator token with `scopes`, minted straight into the server's store.
async fn operator(h: &Harness, scopes: &[&str]) -> String {
    let store = atlas_store::open(&h.database_url()).await.unwrap();
    let scopes: Vec<atlas_proto::OperatorScope> = scopes
        .iter()
        .map(|s| atlas_proto::OperatorScope::parse(s).unwrap())
        .collect();
    let (token, record) = atlas_server::auth::operator::new_token(
        &scopes,
        "test".into(),
        h.clock.now(),
        // The test moves its clock by weeks.
        time::Duration::days(365),
    );
    store.create_operator_token(&record).await.unwrap();
    token
}

async fn bearer(
    h: &Harness,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let http = atlas_client::http_client().unwrap();
    let mut request = http
        .request(method.parse().unwrap(), format!("{}{path}", h.url()))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn receipts_of(answer: &Value) -> ReceiptsResponse {
    serde_json::from_value(answer.clone()).unwrap()
}

async fn receipts_sign_rotate_revoke_expire_and_reissue(h: Harness) {
    let (alice, alice_token) = device(&h, "alice").await;
    let (bob, bob_token) = device(&h, "bob").await;
    let (carol, carol_token) = device(&h, "carol").await;
    let ops = operator(&h, &["receipts", "keys"]).await;

    // Send: the answer carries a signed accepted receipt over the ciphertext digest.
    let (status, sent) = alice
        .call(
            &alice_token,
            "POST",
            "/messages",
            Some(json!({"recipient_id": "bob", "client_message_id": "c1",
                "encryption_algorithm": "m.olm.v1.curve25519-aes-sha2",
                "envelopes": [{"device_id": "RAW", "msg_type": 1, "body": "aGVsbG8"}]})),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let message_id = sent["message_id"].as_str().unwrap().to_owned();
    let accepted_b64 = sent["receipt"]["base64"].as_str().unwrap().to_owned();
    let report = check(&h, &accepted_b64).await;
    assert!(report.ok, "{:?}", report.checks);
    let claims = report.claims.unwrap();
    assert_eq!(claims.message_id, message_id.as_str());
    assert_eq!(
        (claims.sender_id.as_str(), claims.recipient_id.as_str()),
        ("alice", "bob")
    );
    assert_eq!(
        claims.ciphertexts[0].sha256,
        b64::encode(Sha256::digest(b"hello"))
    );
    assert_eq!(claims.iss, h.url());
    let first_kid = sent["receipt"]["kid"].as_str().unwrap().to_owned();
    assert_eq!(kids(&jwks(&h).await), [first_kid.as_str()]);

    // A retried send answers with the same receipt, not a new one.
    let (status, retry) = alice
        .call(
            &alice_token,
            "POST",
            "/messages",
            Some(json!({"recipient_id": "bob", "client_message_id": "c1",
                "encryption_algorithm": "m.olm.v1.curve25519-aes-sha2",
                "envelopes": [{"device_id": "RAW", "msg_type": 1, "body": "aGVsbG8"}]})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(retry["receipt"], sent["receipt"]);

    // Acknowledgement adds a delivered receipt, visible to sender and recipient.
    let (status, _) = bob
        .call(
            &bob_token,
            "POST",
            "/messages/ack",
            Some(json!({"up_to_seq": 1})),
        )
        .await;
    assert_eq!(status, 200);
    let path = format!("/receipts/{message_id}");
    let (status, answer) = alice.call(&alice_token, "GET", &path, None).await;
    assert_eq!(status, 200, "{answer}");
    let latest = receipts_of(&answer);
    assert_eq!(latest.receipts.len(), 2);
    let delivered = &latest.receipts[1];
    assert_eq!(delivered.device_id.as_ref().unwrap().as_str(), "RAW");
    let report = check(&h, &delivered.base64).await;
    assert!(report.ok, "{:?}", report.checks);
    assert!(report.claims.unwrap().delivered_at.is_some());
    let (status, _) = bob.call(&bob_token, "GET", &path, None).await;
    assert_eq!(status, 200, "the recipient may read the receipts");

    // Neither party: nothing is revealed. Recipient: may read but not reissue.
    let (status, body) = carol.call(&carol_token, "GET", &path, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_message"))
    );
    let reissue = format!("{path}/reissue");
    let (status, body) = carol.call(&carol_token, "POST", &reissue, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_message"))
    );
    let (status, body) = bob.call(&bob_token, "POST", &reissue, None).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let (status, body) = alice
        .call(
            &alice_token,
            "GET",
            "/receipts/00000000-0000-7000-8000-000000000000",
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_message"))
    );
    let (status, body) = alice
        .call(
            &alice_token,
            "GET",
            &format!("/receipts/{}", "x".repeat(65)),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, _) = bearer(&h, "atlas-op.nope.nope", "GET", &path, None).await;
    assert_eq!(status, 401);
    let dpop_only = operator(&h, &["dpop"]).await;
    let (status, body) = bearer(&h, &dpop_only, "POST", &reissue, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("insufficient_scope"))
    );
    let (status, _) = bearer(&h, &dpop_only, "POST", "/admin/signing-keys/rotate", None).await;
    assert_eq!(status, 403);
    let unauthenticated = atlas_client::http_client()
        .unwrap()
        .get(format!("{}{path}", h.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    // Rotation with a one-day overlap: both keys published, old receipts still verify, new ones use the new key.
    let (status, keys) = bearer(
        &h,
        &ops,
        "POST",
        "/admin/signing-keys/rotate",
        Some(json!({"overlap_seconds": DAY})),
    )
    .await;
    assert_eq!(status, 200, "{keys}");
    assert_eq!(keys["keys"][0]["status"], "active");
    assert_eq!(keys["keys"][1]["status"], "retired");
    let second_kid = keys["keys"][0]["kid"].as_str().unwrap().to_owned();
    assert_eq!(
        kids(&jwks(&h).await),
        [second_kid.clone(), first_kid.clone()]
    );
    assert!(
        check(&h, &accepted_b64).await.ok,
        "old receipts verify during the overlap"
    );
    for (body, why) in [
        (json!({"overlap_seconds": "soon"}), "wrong type"),
        (
            json!({"overlap_seconds": 10 * 366 * DAY}),
            "longer than a year",
        ),
        (json!({"overlap": 60}), "unknown field"),
    ] {
        let (status, bad) =
            bearer(&h, &ops, "POST", "/admin/signing-keys/rotate", Some(body)).await;
        assert_eq!(
            (status, bad["error"].as_str()),
            (400, Some("invalid_request")),
            "{why}"
        );
    }
    let (status, _) = bearer(
        &h,
        &ops,
        "POST",
        &format!("/admin/signing-keys/{}/revoke", "k".repeat(129)),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let anonymous = atlas_client::http_client()
        .unwrap()
        .post(format!("{}/admin/signing-keys/rotate", h.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(
        anonymous.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(
        kids(&jwks(&h).await).len(),
        2,
        "refused rotations changed nothing"
    );

    // After the overlap the old key is gone and its receipts name it as the reason; reissue repairs them.
    h.clock.advance(DAY + 60);
    let alice_token = alice.token().await;
    assert_eq!(kids(&jwks(&h).await), [second_kid.as_str()]);
    let report = check(&h, &accepted_b64).await;
    assert_eq!(failed(&report), ["kid"]);
    let (status, answer) = alice.call(&alice_token, "POST", &reissue, None).await;
    assert_eq!(status, 200, "{answer}");
    let reissued = receipts_of(&answer);
    assert!(reissued.receipts.iter().all(|r| r.kid == second_kid));
    for r in &reissued.receipts {
        assert!(check(&h, &r.base64).await.ok);
    }
    assert_eq!(
        reissued.receipts[0].receipt_id, latest.receipts[0].receipt_id,
        "same receipt, new signature"
    );
    let (_, fetched) = alice.call(&alice_token, "GET", &path, None).await;
    assert_eq!(receipts_of(&fetched), reissued, "GET returns the latest");

    // Revoking the active key: it leaves the JWKS at once, a new key takes over,
    // and an operator's reissue makes the receipts verify again.
    let (status, keys) = bearer(
        &h,
        &ops,
        "POST",
        &format!("/admin/signing-keys/{second_kid}/revoke"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{keys}");
    let third_kid = keys["keys"][0]["kid"].as_str().unwrap().to_owned();
    assert_eq!(kids(&jwks(&h).await), [third_kid.as_str()]);
    assert_eq!(
        failed(&check(&h, &reissued.receipts[0].base64).await),
        ["kid"]
    );
    let (status, body) = bearer(
        &h,
        &ops,
        "POST",
        &format!("/admin/signing-keys/{second_kid}/revoke"),
        None,
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_key")));
    let (status, answer) = bearer(&h, &ops, "POST", &reissue, None).await;
    assert_eq!(status, 200, "{answer}");
    let by_operator = receipts_of(&answer);
    assert!(check(&h, &by_operator.receipts[0].base64).await.ok);

    // Expiry: the receipt lapses, reissue refuses until the table extends it.
    h.clock.advance(31 * DAY);
    let alice_token = alice.token().await;
    let report = check(&h, &by_operator.receipts[0].base64).await;
    assert_eq!(failed(&report), ["expiry"]);
    let (status, body) = alice.call(&alice_token, "POST", &reissue, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("receipt_expired")),
        "{body}"
    );
    let receipt_id = by_operator.receipts[0].receipt_id.clone();
    extend_expiry(&h, &receipt_id).await;
    let (status, answer) = alice.call(&alice_token, "POST", &reissue, None).await;
    assert_eq!(status, 200, "{answer}");
    let extended = receipts_of(&answer);
    let accepted = extended
        .receipts
        .iter()
        .find(|r| r.receipt_id == receipt_id)
        .unwrap();
    let report = check(&h, &accepted.base64).await;
    assert!(report.ok, "{:?}", report.checks);
    let left = report.claims.unwrap().exp - h.clock.unix();
    assert!(
        (7 * DAY - 60..=7 * DAY).contains(&left),
        "extended by the runbook's 7 days, {left} s left"
    );
}

/// The runbook's emergency extension of one receipt: verbatim through psql on
/// PostgreSQL; the same statement in SQLite's date arithmetic otherwise.
async fn extend_expiry(h: &Harness, receipt_id: &str) {
    match &h.backend {
        atlas_testing::Backend::Postgres(pg) => {
            pg.psql(&format!(
                "UPDATE receipts SET expires_at=NOW() + INTERVAL '7 days' WHERE receipt_id='{receipt_id}';"
            ))
            .unwrap();
            // The server clock runs ahead of the database's NOW(): shift by the same offset.
            let offset = h.clock.unix() - atlas_testing::now();
            pg.psql(&format!(
                "UPDATE receipts SET expires_at=expires_at + INTERVAL '{offset} seconds' WHERE receipt_id='{receipt_id}';"
            ))
            .unwrap();
        }
        atlas_testing::Backend::Sqlite(_) => {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&h.database_url())
                .await
                .unwrap();
            sqlx::query("UPDATE receipts SET expires_at = $1 WHERE receipt_id = $2")
                .bind(h.clock.now() + time::Duration::days(7))
                .bind(receipt_id)
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

on_both_backends!(receipts_sign_rotate_revoke_expire_and_reissue);

fn atlas(home: &std::path::Path, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    atlas_testing::run_atlas(Some(home), token, args)
}

/// The Python recipe of docs/receipts.md, run with an independent JOSE library.
/// `None` when jwcrypto is missing and the run does not demand it (CI sets
/// ATLAS_REQUIRE_INTEROP=1 after installing it, so there it always runs).
fn jwcrypto_verify(dir: &std::path::Path, jwks: &Value, receipt: &str) -> Option<(bool, String)> {
    let available = std::process::Command::new("python3")
        .args(["-c", "import jwcrypto"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            std::env::var_os("ATLAS_REQUIRE_INTEROP").is_none(),
            "python3 with jwcrypto is required (pip install jwcrypto)"
        );
        eprintln!("SKIPPED: jwcrypto interop (pip install jwcrypto to run it)");
        return None;
    }
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/receipts.md"
    ))
    .unwrap();
    let start = doc
        .find("```python\n")
        .expect("python recipe in docs/receipts.md")
        + "```python\n".len();
    let recipe = &doc[start..start + doc[start..].find("```").unwrap()];
    let script = dir.join("verify_receipt.py");
    std::fs::write(&script, recipe).unwrap();
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).unwrap();
    std::fs::write(dir.join("receipt.txt"), receipt).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir.join("jwks.json"))
        .arg(dir.join("receipt.txt"))
        .output()
        .unwrap();
    Some((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_receipts_keys_and_independent_verification() {
    let h = Harness::sqlite().await;
    let home = h.homes.path.clone();
    let url = h.url();
    let ops = operator(&h, &["keys", "receipts"]).await;
    for user in ["alice", "bob"] {
        let (ok, _, stderr) = atlas(
            &home,
            None,
            &["--profile", user, "register", user, "--server", &url],
        );
        assert!(ok, "{stderr}");
    }
    let (ok, stdout, stderr) = atlas(
        &home,
        None,
        &["--profile", "alice", "send", "bob", "hello", "--json"],
    );
    assert!(ok, "{stderr}");
    let sent: Value = serde_json::from_str(&stdout).unwrap();
    let message_id = sent["message_id"].as_str().unwrap().to_owned();
    let receipt_b64 = sent["receipt"]["base64"].as_str().unwrap().to_owned();
    let first_kid = sent["receipt"]["kid"].as_str().unwrap().to_owned();

    // The runbook's first look: base64 -d | jq . shows the kid.
    let decoded: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &receipt_b64).unwrap(),
    )
    .unwrap();
    assert_eq!(decoded["header"]["kid"], first_kid.as_str());

    // verify-receipt finds the JWKS through the receipt's issuer; every check passes.
    let (ok, stdout, stderr) = atlas(&home, None, &["verify-receipt", "--receipt", &receipt_b64]);
    assert!(ok, "{stdout}{stderr}");
    for name in [
        "structure",
        "header",
        "claims",
        "kid",
        "signature",
        "timestamps",
        "expiry",
    ] {
        assert!(stdout.contains(&format!("PASS {name}")), "{name}: {stdout}");
    }
    let dir = atlas_store::testdb::TempDir::new("atlas-receipt-files").unwrap();
    let json_file = dir.path.join("receipt.json");
    std::fs::write(&json_file, decoded.to_string()).unwrap();
    let at_file = format!("@{}", json_file.display());
    let (ok, stdout, _) = atlas(
        &home,
        None,
        &["verify-receipt", "--receipt", &at_file, "--json"],
    );
    assert!(ok);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (report["ok"].as_bool(), report["kid"].as_str()),
        (Some(true), Some(first_kid.as_str()))
    );

    // Failures name their reason and exit non-zero.
    let mut tampered = decoded.clone();
    let mut claims: Value =
        serde_json::from_slice(&b64::decode(decoded["payload"].as_str().unwrap()).unwrap())
            .unwrap();
    claims["recipient_id"] = json!("mallory");
    tampered["payload"] = json!(b64::encode(claims.to_string()));
    let (ok, _, stderr) = atlas(
        &home,
        None,
        &["verify-receipt", "--receipt", &tampered.to_string()],
    );
    assert!(
        !ok && stderr.contains("Invalid receipt: signature"),
        "{stderr}"
    );
    let (ok, _, stderr) = atlas(
        &home,
        None,
        &["verify-receipt", "--receipt", "bm90IGpzb24="],
    );
    assert!(
        !ok && stderr.contains("Invalid receipt: structure"),
        "{stderr}"
    );
    let unrelated = dir.path.join("unrelated.json");
    std::fs::write(&unrelated, r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"other","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#).unwrap();
    let (ok, _, stderr) = atlas(
        &home,
        None,
        &[
            "verify-receipt",
            "--receipt",
            &receipt_b64,
            "--jwks",
            unrelated.to_str().unwrap(),
        ],
    );
    assert!(
        !ok && stderr.contains("Invalid receipt: kid") && stderr.contains("listed: other"),
        "{stderr}"
    );
    let (ok, _, stderr) = atlas(
        &home,
        None,
        &[
            "verify-receipt",
            "--receipt",
            &receipt_b64,
            "--at",
            "2999-01-01T00:00:00Z",
        ],
    );
    assert!(
        !ok && stderr.contains("Invalid receipt: expiry"),
        "{stderr}"
    );

    // An independent JOSE implementation agrees, on the good and the tampered receipt.
    if let Some((ok, output)) = jwcrypto_verify(&dir.path, &jwks(&h).await, &receipt_b64) {
        assert!(ok, "jwcrypto refused a good receipt: {output}");
        assert!(output.contains(&message_id), "{output}");
        let (ok, output) =
            jwcrypto_verify(&dir.path, &jwks(&h).await, &tampered.to_string()).unwrap();
        assert!(
            !ok && output.contains("InvalidJWSSignature"),
            "jwcrypto accepted a tampered receipt: {output}"
        );
    }

    // bob reads the message: the delivered receipt appears for alice.
    let (ok, _, stderr) = atlas(&home, None, &["--profile", "bob", "inbox"]);
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = atlas(
        &home,
        None,
        &["--profile", "alice", "receipt", &message_id, "--json"],
    );
    assert!(ok, "{stderr}");
    let latest: ReceiptsResponse = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        latest
            .receipts
            .iter()
            .map(|r| r.receipt_type.as_str())
            .collect::<Vec<_>>(),
        ["accepted", "delivered"]
    );

    // Operator: rotate with an overlap, list, revoke the old key; alice reissues.
    let (ok, _, stderr) = atlas(&home, None, &["keys", "signing", "--server", &url]);
    assert!(!ok && stderr.contains("ATLAS_ADMIN_TOKEN"), "{stderr}");
    let (ok, stdout, stderr) = atlas(
        &home,
        Some(&ops),
        &[
            "keys",
            "rotate-signing",
            "--overlap",
            "1h",
            "--server",
            &url,
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("{first_kid} retired")) && stdout.contains("[in JWKS]"),
        "{stdout}"
    );
    let (ok, _, stderr) = atlas(
        &home,
        Some(&ops),
        &[
            "keys",
            "rotate-signing",
            "--overlap",
            "1w",
            "--server",
            &url,
        ],
    );
    assert!(!ok && stderr.contains("unknown unit"), "{stderr}");
    let (ok, _, _) = atlas(&home, None, &["verify-receipt", "--receipt", &receipt_b64]);
    assert!(ok, "old receipts verify during the overlap");
    let (ok, stdout, _) = atlas(
        &home,
        Some(&ops),
        &["keys", "signing", "--server", &url, "--json"],
    );
    assert!(ok);
    let keys: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    let (ok, stdout, stderr) = atlas(
        &home,
        Some(&ops),
        &["keys", "revoke-signing", &first_kid, "--server", &url],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("{first_kid} revoked")), "{stdout}");
    let (ok, _, stderr) = atlas(
        &home,
        Some(&ops),
        &["keys", "revoke-signing", "no-such-kid", "--server", &url],
    );
    assert!(!ok && stderr.contains("unknown_key"), "{stderr}");
    let (ok, _, stderr) = atlas(&home, None, &["verify-receipt", "--receipt", &receipt_b64]);
    assert!(!ok && stderr.contains("Invalid receipt: kid"), "{stderr}");
    if let Some((ok, output)) = jwcrypto_verify(&dir.path, &jwks(&h).await, &receipt_b64) {
        assert!(!ok && output.contains("not in the JWKS"), "{output}");
    }

    let (ok, _, stderr) = atlas(
        &home,
        None,
        &["--profile", "bob", "receipt", &message_id, "--reissue"],
    );
    assert!(
        !ok && stderr.contains("forbidden"),
        "the recipient cannot reissue: {stderr}"
    );
    let (ok, stdout, stderr) = atlas(
        &home,
        None,
        &[
            "--profile",
            "alice",
            "receipt",
            &message_id,
            "--reissue",
            "--json",
        ],
    );
    assert!(ok, "{stderr}");
    let reissued: ReceiptsResponse = serde_json::from_str(&stdout).unwrap();
    for r in &reissued.receipts {
        let (ok, stdout, stderr) = atlas(&home, None, &["verify-receipt", "--receipt", &r.base64]);
        assert!(ok, "{stdout}{stderr}");
        if let Some((ok, output)) = jwcrypto_verify(&dir.path, &jwks(&h).await, &r.base64) {
            assert!(ok, "{output}");
        }
    }
    // Runbook section 4, verbatim but for its placeholders: parse, look up the kid, reissue.
    let current = &reissued.receipts[0];
    let shown = atlas_testing::run_runbook(
        &format!(
            r#"echo '{b64}' | base64 -d | jq .
curl https://trust.atlas.dev/.well-known/jwks.json | jq '.keys[] | select(.kid=="{kid}")'
curl -X POST https://api.atlas.dev/receipts/{message_id}/reissue \
  -H 'Authorization: Bearer {ops}'
"#,
            b64 = current.base64,
            kid = current.kid,
        ),
        &url,
    );
    assert!(
        shown.contains(&format!("\"kid\": \"{}\"", current.kid)),
        "{shown}"
    );
    assert!(
        shown.contains("\"kty\": \"OKP\""),
        "the JWKS lookup found the key: {shown}"
    );
    assert!(
        shown.contains(&format!("\"message_id\":\"{message_id}\"")),
        "reissued: {shown}"
    );

    let (ok, _, stderr) = atlas(&home, None, &["--profile", "alice", "receipt", "../../etc"]);
    // Refused while parsing the arguments, before anything goes into a URL path.
    assert!(
        !ok && stderr.contains("invalid value '../../etc' for '<MESSAGE_ID>'"),
        "{stderr}"
    );
}
