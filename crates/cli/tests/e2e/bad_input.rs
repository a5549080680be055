//! Replayed, forged, misdirected and malformed requests: each gets a clear 4xx
//! with a stable code, nothing stored changes, and the server keeps serving.

use atlas_crypto::jws::JwsSigner;
use atlas_testing::{Harness, RawDevice, fresh_keys, now};
use serde_json::{Value, json};

/// Routes reachable without a token (each refuses what it must in its own tests).
const PUBLIC_ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/health/e2ee"),
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/status"),
    ("GET", "/status/feed.atom"),
    ("GET", "/api/v2/status.json"),
    ("GET", "/api/v2/summary.json"),
    ("GET", "/metrics"),
    ("POST", "/users"),
    ("POST", "/token"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/.well-known/atlas/audit-checkpoint"),
    ("GET", "/backups/{user_id}"),
    ("GET", "/backups/{user_id}/{backup_id}"),
];

/// Every (method, path template) the router declares, read from the source
/// of every route module: `router()` routes as they are, `admin_router()`
/// routes under `/admin`, where `routes/admin.rs` nests them.
fn router_routes() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/src/routes");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (i, part) in source.split("pub fn admin_router()").enumerate() {
            // Text after the marker up to the function's end is the admin router.
            let (admin, rest) = match i {
                0 => ("", part),
                _ => part.split_once("\n}\n").unwrap_or((part, "")),
            };
            out.extend(routes_in(admin, "/admin"));
            out.extend(routes_in(rest, ""));
        }
    }
    // `/metrics` is declared twice: on the API and on its own listener.
    out.sort();
    out.dedup();
    out
}

/// The `.route(…)` calls of one router's source, their paths under `prefix`.
fn routes_in(source: &str, prefix: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for chunk in source.split(".route(").skip(1) {
        // The route's arguments end at the first line that closes the call.
        let call = chunk.split("\n        )\n").next().unwrap_or(chunk);
        let call = call.split(")\n").next().unwrap_or(call);
        let Some(path) = call.split('"').nth(1) else {
            continue;
        };
        for (needle, method) in [
            ("get(", "GET"),
            ("post(", "POST"),
            ("delete(", "DELETE"),
            ("put(", "PUT"),
        ] {
            if call.contains(needle) {
                out.push((method.to_owned(), format!("{prefix}{path}")));
            }
        }
    }
    out
}

/// A concrete path for a template, with plausible values for its parameters.
fn sample_path(template: &str) -> String {
    template
        .replace("{user_id}", "mallory")
        .replace("{device_id}", "RAW")
        .replace("{member_id}", "mallory")
        .replace("{message_id}", "00000000-0000-7000-8000-000000000000")
        .replace("{group_id}", "team")
        .replace("{session_id}", "AAAA")
        .replace("{backup_id}", "backup-mallory-1")
        .replace("{request_id}", "r1")
        .replace("{action_id}", "a1")
        .replace("{kid}", "k1")
        .replace("{jti}", "j1")
        .replace("{id}", "INC-20261130060509")
}

/// `GET /keys/count` with the given proof and mallory's token.
async fn keys_count(
    device: &RawDevice,
    auth: &Option<String>,
    proof: String,
) -> (u16, reqwest::header::HeaderMap, Value) {
    device
        .send_raw("GET", "/keys/count", auth.clone(), Some(proof), None)
        .await
}

fn code(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("<none>")
}

async fn dpop_abuse_is_refused(mut h: Harness) {
    let url = h.url();
    let mallory = RawDevice::register(&url, "mallory").await;
    let token = mallory.token().await;
    let auth = Some(format!("DPoP {token}"));

    // Every route the router has (read from its source, so a new route cannot be
    // left out): DPoP routes refuse a missing token, a Bearer token and a
    // replayed proof; operator routes refuse a missing token; the rest are public.
    let routes = router_routes();
    assert!(routes.len() > 50, "the router source was read: {routes:?}");
    let (mut dpop, mut operator, mut public) = (0, 0, 0);
    for (method, template) in &routes {
        let (method, path) = (method.as_str(), sample_path(template));
        let path = path.as_str();
        let (s, headers, b) = mallory
            .send_raw(method, path, None, None, Some(b"{}".to_vec()))
            .await;
        let challenge = headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if PUBLIC_ROUTES.contains(&(method, template.as_str())) {
            public += 1;
            continue;
        }
        assert_eq!(
            (s, code(&b)),
            (401, "invalid_token"),
            "{method} {path} without a token"
        );
        if challenge.starts_with("Bearer") {
            assert!(template.starts_with("/admin/"), "{method} {template}");
            operator += 1;
            continue;
        }
        assert!(
            challenge.starts_with("DPoP"),
            "{method} {path}: {challenge}"
        );
        dpop += 1;
        let p = mallory.proof(method, path, Some(&token), now());
        let (s, _, b) = mallory
            .send_raw(method, path, Some(format!("Bearer {token}")), Some(p), None)
            .await;
        assert_eq!(
            (s, code(&b)),
            (401, "invalid_token"),
            "{method} {path} with Bearer"
        );
        let p = mallory.proof(method, path, Some(&token), now());
        let _ = mallory
            .send_raw(
                method,
                path,
                auth.clone(),
                Some(p.clone()),
                Some(b"{}".to_vec()),
            )
            .await;
        let (s, _, b) = mallory
            .send_raw(method, path, auth.clone(), Some(p), Some(b"{}".to_vec()))
            .await;
        assert_eq!(
            (s, code(&b)),
            (401, "invalid_dpop_proof"),
            "{method} {path} replayed"
        );
    }
    assert!(
        dpop >= 30 && operator >= 10,
        "{dpop} DPoP, {operator} operator, {public} public routes"
    );

    // A correct request works.
    let (status, body) = mallory.call(&token, "GET", "/keys/count", None).await;
    assert_eq!(status, 200, "{body}");

    // Replay: the same proof twice.
    let proof = mallory.proof("GET", "/keys/count", Some(&token), now());
    let (s1, _, _) = keys_count(&mallory, &auth, proof.clone()).await;
    assert_eq!(s1, 200);
    let (s2, headers, body) = keys_count(&mallory, &auth, proof.clone()).await;
    assert_eq!((s2, code(&body)), (401, "invalid_dpop_proof"));
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("Invalid DPoP proof")
    );
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("DPoP error=\"invalid_dpop_proof\"")
    );

    // A proof for another method, another URL, another origin.
    for (method, path) in [("POST", "/keys/count"), ("GET", "/messages")] {
        let p = mallory.proof(method, path, Some(&token), now());
        let (s, _, b) = keys_count(&mallory, &auth, p).await;
        assert_eq!(
            (s, code(&b)),
            (401, "invalid_dpop_proof"),
            "{method} {path}: {b}"
        );
    }
    let foreign = atlas_crypto::dpop::create_proof(
        &mallory.dpop,
        "GET",
        "https://evil.example/keys/count",
        now(),
        Some(&token),
        None,
    );
    let (s, _, b) = keys_count(&mallory, &auth, foreign).await;
    assert_eq!((s, code(&b)), (401, "invalid_dpop_proof"));

    // Stale and future iat.
    for iat in [now() - 3600, now() + 3600] {
        let p = mallory.proof("GET", "/keys/count", Some(&token), iat);
        let (s, _, b) = keys_count(&mallory, &auth, p).await;
        assert_eq!((s, code(&b)), (401, "invalid_dpop_proof"), "iat {iat}");
    }

    // Missing proof, garbage proof.
    let (s, _, b) = mallory
        .send_raw("GET", "/keys/count", auth.clone(), None, None)
        .await;
    assert_eq!((s, code(&b)), (401, "invalid_dpop_proof"));
    let (s, _, b) = keys_count(&mallory, &auth, "not-a-jwt".into()).await;
    assert_eq!((s, code(&b)), (401, "invalid_dpop_proof"));

    // Forged token: signature flipped.
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let p = mallory.proof("GET", "/keys/count", Some(&forged), now());
    let (s, _, b) = mallory
        .send_raw(
            "GET",
            "/keys/count",
            Some(format!("DPoP {forged}")),
            Some(p),
            None,
        )
        .await;
    assert_eq!((s, code(&b)), (401, "invalid_token"));

    // Token presented with a proof made by another key: binding fails.
    let thief_key = JwsSigner::generate_p256();
    let p = atlas_crypto::dpop::create_proof(
        &thief_key,
        "GET",
        &format!("{url}/keys/count"),
        now(),
        Some(&token),
        None,
    );
    let (s, _, b) = keys_count(&mallory, &auth, p).await;
    assert_eq!((s, code(&b)), (401, "invalid_token"));
    assert_eq!(b["error_description"], "Token binding failed");

    // A DPoP-bound token presented as Bearer; no Authorization at all.
    let p = mallory.proof("GET", "/keys/count", Some(&token), now());
    let (s, _, b) = mallory
        .send_raw(
            "GET",
            "/keys/count",
            Some(format!("Bearer {token}")),
            Some(p),
            None,
        )
        .await;
    assert_eq!((s, code(&b)), (401, "invalid_token"));
    let (s, _, b) = mallory
        .send_raw("GET", "/keys/count", None, None, None)
        .await;
    assert_eq!((s, code(&b)), (401, "invalid_token"));

    // ES256 DPoP keys work too.
    let es256 = JwsSigner::generate_p256();
    let es_token = mallory.token_with(&es256).await.access_token;
    let p = atlas_crypto::dpop::create_proof(
        &es256,
        "GET",
        &format!("{url}/keys/count"),
        now(),
        Some(&es_token),
        None,
    );
    let (s, _, b) = mallory
        .send_raw(
            "GET",
            "/keys/count",
            Some(format!("DPoP {es_token}")),
            Some(p),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");

    // Token request with a bad device signature, or a replayed token proof.
    let grant = json!({"grant_type": "device_signature", "user_id": "mallory", "device_id": "RAW", "iat": now(), "signature": "AAAA"});
    let p = mallory.proof("POST", "/token", None, now());
    let (s, _, b) = mallory
        .send_raw(
            "POST",
            "/token",
            None,
            Some(p.clone()),
            Some(grant.to_string().into_bytes()),
        )
        .await;
    assert_eq!((s, code(&b)), (400, "invalid_grant"));
    let (s, _, b) = mallory
        .send_raw(
            "POST",
            "/token",
            None,
            Some(p),
            Some(grant.to_string().into_bytes()),
        )
        .await;
    assert_eq!((s, code(&b)), (401, "invalid_dpop_proof"));

    // A refresh token is single use and bound to its DPoP key.
    let pair = mallory.token_with(&mallory.dpop).await;
    let refresh = json!({"grant_type": "refresh_token", "refresh_token": pair.refresh_token})
        .to_string()
        .into_bytes();
    let p = atlas_crypto::dpop::create_proof(
        &thief_key,
        "POST",
        &format!("{url}/token"),
        now(),
        None,
        None,
    );
    let (s, _, b) = mallory
        .send_raw("POST", "/token", None, Some(p), Some(refresh.clone()))
        .await;
    assert_eq!(
        (s, code(&b)),
        (400, "invalid_grant"),
        "refresh with another key"
    );
    let p = mallory.proof("POST", "/token", None, now());
    let (s, _, b) = mallory
        .send_raw("POST", "/token", None, Some(p), Some(refresh))
        .await;
    assert_eq!(
        (s, code(&b)),
        (400, "invalid_grant"),
        "a refresh token is gone after one use, even a failed one"
    );

    // Expiry: ten minutes later the token is refused.
    h.clock.advance(601);
    let p = atlas_crypto::dpop::create_proof(
        &mallory.dpop,
        "GET",
        &format!("{url}/keys/count"),
        now() + 601,
        Some(&token),
        None,
    );
    let (s, _, b) = keys_count(&mallory, &auth, p).await;
    assert_eq!((s, code(&b)), (401, "invalid_token"));
    assert!(b["error_description"].as_str().unwrap().contains("expired"));
    h.clock.advance(-601);

    // The replay cache survives a restart: a proof used before is still refused after.
    let proof = mallory.proof("GET", "/keys/count", Some(&token), now());
    let (s, _, _) = keys_count(&mallory, &auth, proof.clone()).await;
    assert_eq!(s, 200);
    h.stop().await;
    h.start().await;
    let (s, _, b) = keys_count(&mallory, &auth, proof).await;
    assert_eq!(
        (s, code(&b)),
        (401, "invalid_dpop_proof"),
        "replay after restart"
    );
    let (s, _) = mallory.call(&token, "GET", "/keys/count", None).await;
    assert_eq!(s, 200, "the server keeps serving");
    h.stop().await;
}

async fn malformed_requests_change_nothing(mut h: Harness) {
    let url = h.url();
    let alice = RawDevice::register(&url, "alice").await;
    let bob = RawDevice::register(&url, "bob").await;
    let token = alice.token().await;
    let bob_token = bob.token().await;

    // Registration: garbage, wrong types, bad signature, duplicate user, bad ids.
    for (body, expected) in [
        (b"{not json".to_vec(), "invalid_request"),
        (
            json!({"user_id": 5}).to_string().into_bytes(),
            "invalid_request",
        ),
        (
            json!({"user_id": "bad id!", "device": {}})
                .to_string()
                .into_bytes(),
            "invalid_request",
        ),
    ] {
        let (s, _, b) = alice
            .send_raw("POST", "/users", None, None, Some(body))
            .await;
        assert_eq!((s, code(&b)), (400, expected), "{b}");
    }
    let mut keys = fresh_keys("eve", "E");
    keys.signature = keys
        .signature
        .replace(|c: char| c.is_ascii_lowercase(), "A");
    let (s, b) = alice
        .post_json("/users", json!({"user_id": "eve", "device": keys}))
        .await;
    assert_eq!((s, code(&b)), (400, "invalid_signature"));
    let (s, b) = alice
        .post_json("/users", atlas_testing::registration("bob", "X"))
        .await;
    assert_eq!((s, code(&b)), (409, "user_exists"));
    // A new user needs an identity key that certifies its first device.
    let (s, b) = alice
        .post_json(
            "/users",
            json!({"user_id": "eve", "device": fresh_keys("eve", "E")}),
        )
        .await;
    assert_eq!((s, code(&b)), (400, "invalid_request"), "{b}");
    let mut forged = atlas_testing::registration("eve", "E");
    forged["device"] = json!(fresh_keys("eve", "E"));
    let (s, b) = alice.post_json("/users", forged).await;
    assert_eq!((s, code(&b)), (400, "invalid_certificate"), "{b}");
    let mut garbage = atlas_testing::registration("eve", "E");
    garbage["identity_key"] = json!("not a key");
    let (s, b) = alice.post_json("/users", garbage).await;
    assert_eq!((s, code(&b)), (400, "invalid_certificate"), "{b}");
    let mut both = atlas_testing::registration("eve", "E");
    both["link_token"] = json!("x");
    let (s, b) = alice.post_json("/users", both).await;
    assert_eq!((s, code(&b)), (400, "invalid_request"), "{b}");

    // Sends: wrong device list, unknown user, malformed, oversized.
    let envelope = |device: &str| json!({"device_id": device, "msg_type": 0, "body": "AAAA"});
    let send = |to: &str, id: &str, envelopes: Vec<Value>| json!({"recipient_id": to, "client_message_id": id, "envelopes": envelopes});
    let (s, b) = alice
        .call(
            &token,
            "POST",
            "/messages",
            Some(send("bob", "m1", vec![envelope("NOPE")])),
        )
        .await;
    assert_eq!((s, code(&b)), (409, "device_list_mismatch"));
    assert_eq!(b["details"]["missing"], json!(["RAW"]));
    assert_eq!(b["details"]["extra"], json!(["NOPE"]));
    let (s, b) = alice
        .call(
            &token,
            "POST",
            "/messages",
            Some(send("nobody", "m2", vec![envelope("RAW")])),
        )
        .await;
    assert_eq!((s, code(&b)), (404, "unknown_user"));
    let (s, b) = alice
        .call(
            &token,
            "POST",
            "/messages",
            Some(json!({"content": "test"})),
        )
        .await;
    assert_eq!(
        (s, code(&b)),
        (400, "invalid_request"),
        "the runbook's test body is refused cleanly"
    );
    let big = "A".repeat(20 * 1024);
    let huge = "A".repeat(300 * 1024);
    for (id, msg_type, body, status, expected) in [
        ("m3", 7, "AAAA", 400, "invalid_request"),
        ("m4", 1, "<script>", 400, "invalid_request"),
        ("m5", 1, big.as_str(), 413, "payload_too_large"),
        ("m6", 1, huge.as_str(), 413, "payload_too_large"),
    ] {
        let envelope = json!({"device_id": "RAW", "msg_type": msg_type, "body": body});
        let (s, b) = alice
            .call(
                &token,
                "POST",
                "/messages",
                Some(send("bob", id, vec![envelope])),
            )
            .await;
        assert_eq!((s, code(&b)), (status, expected), "{id}");
    }

    // Nothing of that reached bob's queue.
    let (s, b) = bob.call(&bob_token, "GET", "/messages", None).await;
    assert_eq!(s, 200);
    assert_eq!(b["messages"], json!([]));

    // A good send, its idempotent retry, and a conflicting reuse of the id.
    let good = send("bob", "m7", vec![envelope("RAW")]);
    let (s, first) = alice
        .call(&token, "POST", "/messages", Some(good.clone()))
        .await;
    assert_eq!(s, 201, "{first}");
    let (s, retry) = alice.call(&token, "POST", "/messages", Some(good)).await;
    assert_eq!(s, 200);
    assert_eq!(retry["message_id"], first["message_id"]);
    assert_eq!(retry["duplicate"], true);
    let (s, b) = alice
        .call(
            &token,
            "POST",
            "/messages",
            Some(send(
                "bob",
                "m7",
                vec![json!({"device_id": "RAW", "msg_type": 0, "body": "BBBB"})],
            )),
        )
        .await;
    assert_eq!((s, code(&b)), (409, "idempotency_conflict"));
    let (_, b) = bob.call(&bob_token, "GET", "/messages", None).await;
    assert_eq!(b["messages"].as_array().unwrap().len(), 1);
    assert_eq!(b["messages"][0]["seq"], 1);

    // Keys and queries: malformed keys, too many keys, unknown users, bad query.
    let (s, b) = alice
        .call(
            &token,
            "POST",
            "/keys/upload",
            Some(json!({"one_time_keys": [{"key_id": "k", "key": "not-a-key"}]})),
        )
        .await;
    assert_eq!((s, code(&b)), (400, "invalid_request"));
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"key_id": format!("k{i}"), "key": "AAAA"}))
        .collect();
    let (s, b) = alice
        .call(
            &token,
            "POST",
            "/keys/upload",
            Some(json!({"one_time_keys": many})),
        )
        .await;
    assert_eq!((s, code(&b)), (413, "payload_too_large"));
    let (s, b) = alice
        .call(
            &token,
            "POST",
            "/keys/claim",
            Some(json!({"user_id": "ghost"})),
        )
        .await;
    assert_eq!((s, code(&b)), (404, "unknown_user"));
    let (s, b) = alice
        .call(&token, "GET", "/users/ghost/devices", None)
        .await;
    assert_eq!((s, code(&b)), (404, "unknown_user"));
    let (s, b) = alice
        .call(&token, "GET", "/messages?after=minus-one", None)
        .await;
    assert_eq!((s, code(&b)), (400, "invalid_request"));
    let (s, b) = alice
        .call(
            &token,
            "POST",
            "/messages/ack",
            Some(json!({"up_to_seq": "all"})),
        )
        .await;
    assert_eq!((s, code(&b)), (400, "invalid_request"));
    let (s, _, b) = alice
        .send_raw("GET", "/no/such/route", None, None, None)
        .await;
    assert_eq!((s, code(&b)), (404, "not_found"));
    let (s, _, b) = alice
        .send_raw("DELETE", "/messages", None, None, None)
        .await;
    assert_eq!((s, code(&b)), (405, "method_not_allowed"));

    // Device linking needs a valid link token.
    let newcomer = json!({"user_id": "alice", "device": fresh_keys("alice", "NEW"), "link_token": "guess", "link_proof": "p"});
    let (s, b) = alice.post_json("/users", newcomer).await;
    assert_eq!((s, code(&b)), (403, "invalid_link_token"));
    let unproven =
        json!({"user_id": "alice", "device": fresh_keys("alice", "NEW"), "link_token": "guess"});
    let (s, b) = alice.post_json("/users", unproven).await;
    assert_eq!((s, code(&b)), (400, "invalid_request"));
    let (_, b) = alice
        .call(&token, "GET", "/users/alice/devices", None)
        .await;
    assert_eq!(b["devices"].as_array().unwrap().len(), 1);

    let (s, _, b) = alice.send_raw("GET", "/health", None, None, None).await;
    assert_eq!(s, 200, "{b}");
    h.stop().await;
}

on_both_backends!(dpop_abuse_is_refused, malformed_requests_change_nothing);
