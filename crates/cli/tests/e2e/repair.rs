//! The runbook's causes of "Unable to decrypt message", reproduced for real,
//! and their recovery: each failure is reported, shows in `/health/e2ee` and
//! `/metrics`, and the message becomes readable again — on SQLite and PostgreSQL.

use atlas_client::{Client, Received};
use atlas_proto::UserId;
use atlas_testing::{
    Harness, RawDevice, acquaint, assert_health_counts, client, corrupt_one_time_keys,
    decrypt_count, deliver_last_first, e2ee_health, exhaust_one_time_keys, metrics_text,
    operator_token, profile_sql, send_numbered, send_on_desynced_session, send_to_rotated_key,
};
use serde_json::json;

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// Two users who have exchanged one message each way.
async fn acquainted(h: &Harness) -> (Client, Client) {
    let (alice, bob) = (client(h, "alice").await, client(h, "bob").await);
    acquaint(&alice, &bob).await;
    (alice, bob)
}

fn codes(received: &[Received]) -> Vec<&str> {
    received
        .iter()
        .filter_map(|r| Some(r.error.as_ref()?.code.as_str()))
        .collect()
}

/// Skipped message keys not stored: the network delivers the 45th message
/// first, bob's device keeps the 40 skipped keys Olm allows and loses four.
/// The four are reported, resent automatically, and read.
async fn skipped_keys_lost_in_reordering_are_recovered_by_resend(h: Harness) {
    let (alice, bob) = acquainted(&h).await;
    let ids = send_numbered(&alice, &bob, 45).await;
    deliver_last_first(&h, "bob").await;

    let got = bob.messages().sync().await.unwrap();
    assert_eq!(got.len(), 45);
    assert_eq!(got[0].text.as_deref(), Some("m45"));
    assert_eq!(codes(&got), ["MissingSkippedKey"; 4]);
    let failed: Vec<&str> = got
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| r.message_id.as_str())
        .collect();
    assert_eq!(
        failed,
        ids[..4].iter().map(|id| id.as_str()).collect::<Vec<_>>()
    );
    let health = e2ee_health(&h.url()).await;
    assert_eq!(health.failed_decryptions_last_hour, 4);
    assert_eq!(health.failures_by_code.get("MissingSkippedKey"), Some(&4));
    // One user's failures are in the figures, but no outage (docs/e2ee-health.md).
    assert_eq!(health.status, "healthy");

    // Bob's device asked for resends; alice's device answers on its next sync.
    alice.messages().sync().await.unwrap();
    let resent = bob.messages().sync().await.unwrap();
    let texts: Vec<_> = resent.iter().map(|r| r.text.as_deref().unwrap()).collect();
    assert_eq!(texts, ["m1", "m2", "m3", "m4"]);
    let originals: Vec<_> = resent
        .iter()
        .map(|r| r.resend_of.clone().unwrap())
        .collect();
    assert_eq!(originals, ids[..4]);

    assert_health_counts(&h.url(), 0, 4).await;
    let health = e2ee_health(&h.url()).await;
    assert_eq!(
        (health.status.as_str(), health.decryption_success_rate),
        ("healthy", 1.0)
    );
    let metrics = metrics_text(&h.url()).await;
    assert_eq!(decrypt_count(&metrics, "failure"), 4.0);
    assert_eq!(decrypt_count(&metrics, "recovered"), 4.0);
}

/// Double Ratchet state desynchronised: bob's stored session with alice is
/// overwritten by another session's state. The failure is reported, the resend
/// comes on a fresh session, and later messages use it.
async fn desynchronised_ratchet_is_recovered_on_a_fresh_session(h: Harness) {
    let carol = client(&h, "carol").await;
    let (alice, bob) = acquainted(&h).await;
    let lost = send_on_desynced_session(&h, &alice, &bob, &carol).await;
    let got = bob.messages().sync().await.unwrap();
    assert_eq!(codes(&got), ["RatchetDesync"]);
    assert_eq!(
        e2ee_health(&h.url())
            .await
            .failures_by_code
            .get("RatchetDesync"),
        Some(&1)
    );
    alice.messages().sync().await.unwrap();
    let resent = bob.messages().sync().await.unwrap();
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].text.as_deref(), Some("after the desync"));
    assert_eq!(
        resent[0].resend_of.as_deref(),
        Some(lost.message_id.as_str())
    );
    alice
        .messages()
        .send_text(&uid("bob"), "and later")
        .await
        .unwrap();
    let later = bob.messages().sync().await.unwrap();
    assert_eq!(later[0].text.as_deref(), Some("and later"));
    assert_health_counts(&h.url(), 0, 1).await;
}

/// Runbook Option 3: an operator resets the session with the runbook's curl
/// line. Both devices retire it, the message in flight on it is flagged,
/// resent on a new session and read; later messages use the new session.
async fn session_reset_retires_both_ends_and_in_flight_messages_are_resent(h: Harness) {
    let (alice, bob) = acquainted(&h).await;
    let in_flight = alice
        .messages()
        .send_text(&uid("bob"), "in flight")
        .await
        .unwrap();
    let pending = bob.messages().pending().await.unwrap();
    let session = pending[0].session_id.clone().unwrap();
    let token = operator_token(&h.database_url(), "messages");
    let answer = atlas_testing::run_runbook(
        &format!(
            "curl -X POST https://api.atlas.dev/sessions/{session}/reset \\\n  -H 'Authorization: Bearer {token}'\n"
        ),
        &h.url(),
    );
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["in_flight"], json!([in_flight.message_id]));
    let mut devices: Vec<String> = serde_json::from_value(answer["devices"].clone()).unwrap();
    devices.sort();
    assert_eq!(
        devices,
        [
            format!("alice/{}", alice.device_id()),
            format!("bob/{}", bob.device_id())
        ]
    );

    let got = bob.messages().sync().await.unwrap();
    assert_eq!(codes(&got), ["SessionRetired"]);
    alice.messages().sync().await.unwrap();
    let resent = bob.messages().sync().await.unwrap();
    assert_eq!(resent[0].text.as_deref(), Some("in flight"));
    assert_eq!(
        resent[0].resend_of.as_deref(),
        Some(in_flight.message_id.as_str())
    );
    alice
        .messages()
        .send_text(&uid("bob"), "on the new session")
        .await
        .unwrap();
    let next = bob.messages().pending().await.unwrap();
    assert_ne!(next[0].session_id.as_deref(), Some(session.as_str()));
    assert_eq!(
        bob.messages().sync().await.unwrap()[0].text.as_deref(),
        Some("on the new session")
    );
    assert_health_counts(&h.url(), 0, 1).await;
}

/// Key material corrupted in the database: every one-time key the server holds
/// for bob is replaced by a key bob never made. Alice's first message is
/// encrypted to one; bob reports KeyNotFound, his consistency check finds the
/// stored keys differ and has them revoked, and the resend (on a key bob
/// published afresh) is read.
async fn keys_corrupted_in_the_database_are_revoked_and_the_message_resent(h: Harness) {
    let alice = client(&h, "alice").await;
    let bob = client(&h, "bob").await;
    let corrupted = corrupt_one_time_keys(&h, "bob").await;
    assert_eq!(corrupted, 25);
    let lost = alice
        .messages()
        .send_text(&uid("bob"), "first contact")
        .await
        .unwrap();
    let got = bob.messages().sync().await.unwrap();
    assert_eq!(codes(&got), ["KeyNotFound"]);
    // The 24 corrupted keys still on offer were revoked (the 25th went to alice).
    let revoked = h
        .sql("UPDATE user_keys SET status = status WHERE user_id = 'bob' AND status = 'revoked'")
        .await;
    assert_eq!(revoked, 24);
    // A later check still names the 25 bad rows (revoked, or handed to alice) but has nothing left to revoke.
    let check = bob.keys().check(true).await.unwrap();
    assert_eq!((check.mismatched.len(), check.revoked), (25, 0));
    alice.messages().sync().await.unwrap();
    let resent = bob.messages().sync().await.unwrap();
    assert_eq!(resent[0].text.as_deref(), Some("first contact"));
    assert_eq!(
        resent[0].resend_of.as_deref(),
        Some(lost.message_id.as_str())
    );
    assert_health_counts(&h.url(), 0, 1).await;
}

/// The recipient's key rotated before the message arrived: bob's one-time
/// keys are all claimed, alice's message goes to his fallback key, and bob
/// rotates the fallback key twice before reading it (Olm keeps one previous
/// key). The server names the cause KeyRotated; the resend is read.
async fn key_rotated_before_the_message_arrived_is_named_and_recovered(h: Harness) {
    let alice = client(&h, "alice").await;
    let bob = client(&h, "bob").await;
    let lost = send_to_rotated_key(&h, &alice, &bob, "to the fallback key").await;
    let got = bob.messages().sync().await.unwrap();
    assert_eq!(codes(&got), ["KeyNotFound"]);
    let health = e2ee_health(&h.url()).await;
    assert_eq!(
        health.failures_by_code.get("KeyRotated"),
        Some(&1),
        "{health:?}"
    );
    alice.messages().sync().await.unwrap();
    let resent = bob.messages().sync().await.unwrap();
    assert_eq!(resent[0].text.as_deref(), Some("to the fallback key"));
    assert_eq!(resent[0].resend_of.as_deref(), Some(lost.as_str()));
}

on_both_backends!(
    keys_corrupted_in_the_database_are_revoked_and_the_message_resent,
    key_rotated_before_the_message_arrived_is_named_and_recovered,
    skipped_keys_lost_in_reordering_are_recovered_by_resend,
    desynchronised_ratchet_is_recovered_on_a_fresh_session,
    session_reset_retires_both_ends_and_in_flight_messages_are_resent,
);

/// Who may reset which session, and what a malformed request gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_resets_are_authorised() {
    let h = Harness::sqlite().await;
    let (alice, bob) = acquainted(&h).await;
    alice.messages().send_text(&uid("bob"), "x").await.unwrap();
    let session = bob.messages().pending().await.unwrap()[0]
        .session_id
        .clone()
        .unwrap();
    let carol = RawDevice::register(&h.url(), "carol").await;
    let token = carol.token().await;
    let reset = format!("/sessions/{session}/reset");
    // Not carol's session, no such session, not a session id, no credentials.
    for (path, status, code) in [
        (reset.as_str(), 404, "unknown_session"),
        (
            "/sessions/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/reset",
            404,
            "unknown_session",
        ),
        ("/sessions/not%20an%20id/reset", 400, "invalid_request"),
    ] {
        let (got, body) = carol.call(&token, "POST", path, None).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{path}"
        );
    }
    let (status, _, _) = carol.send_raw("POST", &reset, None, None, None).await;
    assert_eq!(status, 401);
    let http = atlas_client::http_client().unwrap();
    let denied = http
        .post(format!("{}{reset}", h.url()))
        .bearer_auth(operator_token(&h.database_url(), "receipts"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status().as_u16(), 403);
    let too_many: Vec<String> = (0..101).map(|i| format!("s{i}")).collect();
    let (status, _) = carol
        .call(
            &token,
            "POST",
            "/sessions/resets/ack",
            Some(json!({ "session_ids": too_many })),
        )
        .await;
    assert_eq!(status, 413);
    // Either end may reset its own session (the standard base64 form works too).
    let answer = bob
        .repair()
        .reset_session(
            &session
                .parse::<atlas_proto::SessionId>()
                .unwrap()
                .std_form(),
        )
        .await
        .unwrap();
    assert_eq!(answer.session_id, session.as_str());
    assert_eq!(alice.repair().apply_session_resets().await.unwrap(), 1);
    assert_eq!(alice.repair().apply_session_resets().await.unwrap(), 0);
}

/// Who may ask for a resend, how often, and what the sender may send as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_requests_are_authorised_limited_and_checked() {
    let h = Harness::sqlite().await;
    let url = h.url();
    let alice = client(&h, "alice").await;
    let bob = client(&h, "bob").await;
    let sent = alice
        .messages()
        .send_text(&uid("bob"), "hello")
        .await
        .unwrap();
    let id = sent.message_id.as_str();
    let path = format!("/messages/{id}/request-resend");

    // A stranger, and the sender itself, cannot ask: to them the message does not exist.
    let mallory = RawDevice::register(&url, "mallory").await;
    let token = mallory.token().await;
    let (status, body) = mallory.call(&token, "POST", &path, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_message"))
    );
    let err = alice
        .repair()
        .request_resend(&sent.message_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(atlas_proto::ErrorCode::UnknownMessage));
    // Malformed ids, no credentials.
    let (status, _) = mallory
        .call(
            &token,
            "POST",
            "/messages/..%2F..%2Fetc/request-resend",
            None,
        )
        .await;
    assert_eq!(status, 400);
    let (status, _, _) = mallory.send_raw("POST", &path, None, None, None).await;
    assert_eq!(status, 401);

    // An operator needs the `messages` scope.
    let http = atlas_client::http_client().unwrap();
    let as_operator = |token: String| {
        let (http, url, path) = (http.clone(), url.clone(), path.clone());
        async move {
            let r = http
                .post(format!("{url}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let (status, body) = as_operator(operator_token(&h.database_url(), "dpop")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("insufficient_scope"))
    );
    let operator = operator_token(&h.database_url(), "messages");
    let (status, body) = as_operator(operator.clone()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["requests"][0]["recipient_device_id"],
        bob.device_id().as_str()
    );
    assert_eq!(body["requests"][0]["status"], "pending");
    // Asking again while one is pending returns the same request.
    let (_, again) = as_operator(operator.clone()).await;
    assert_eq!(
        again["requests"][0]["request_id"],
        body["requests"][0]["request_id"]
    );

    // A send claiming to be a resend needs a pending request for each device it goes to.
    let forged = json!({
        "recipient_id": "bob",
        "client_message_id": "forged",
        "resend_of": id,
        "envelopes": [{"device_id": "NOTBOB", "msg_type": 1, "body": "AAAA"}],
    });
    let (status, body) = mallory
        .call(&token, "POST", "/messages", Some(forged))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );

    // The sender answers; once bob has read it, there is nothing left to resend.
    alice.messages().sync().await.unwrap();
    let got = bob.messages().sync().await.unwrap();
    assert_eq!(
        got.iter()
            .filter_map(|r| r.text.as_deref())
            .collect::<Vec<_>>(),
        ["hello", "hello"]
    );
    let (status, body) = as_operator(operator.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("nothing_to_resend"))
    );

    // A sender whose outbox no longer has the message says so.
    let gone = alice
        .messages()
        .send_text(&uid("bob"), "soon forgotten")
        .await
        .unwrap();
    profile_sql(&h.profile("alice"), "DELETE FROM outbox").await;
    bob.repair().request_resend(&gone.message_id).await.unwrap();
    assert_eq!(alice.repair().answer_resends().await.unwrap(), 0);
    let marked = h
        .sql("UPDATE resend_requests SET detail = detail WHERE status = 'unavailable' AND detail LIKE '%outbox%'")
        .await;
    assert_eq!(marked, 1);

    // Requests between one pair of devices are rate-limited.
    let mut limited = 0;
    for _ in 0..30 {
        match bob.repair().request_resend(&gone.message_id).await {
            Err(e) if e.code() == Some(atlas_proto::ErrorCode::RateLimited) => limited += 1,
            other => {
                other.unwrap();
            }
        }
    }
    assert!(limited >= 15, "{limited} of 30 limited");

    // Closing a request: only the sending device, only a pending one, a short reason.
    let (_, pending) = mallory.call(&token, "GET", "/resend-requests", None).await;
    assert_eq!(
        pending["requests"],
        json!([]),
        "mallory sent nothing, so nothing is asked of her"
    );
    for (path, body, status) in [
        (
            "/resend-requests/no-such-request/unavailable",
            json!({"detail": "gone"}),
            404,
        ),
        (
            "/resend-requests/x/unavailable",
            json!({"detail": "x".repeat(201)}),
            400,
        ),
        (
            "/resend-requests/x/unavailable",
            json!({"why": "gone"}),
            400,
        ),
    ] {
        let (got, answer) = mallory.call(&token, "POST", path, Some(body)).await;
        assert_eq!(got, status, "{path}: {answer}");
    }
    let (status, _, _) = mallory
        .send_raw(
            "POST",
            "/resend-requests/x/unavailable",
            None,
            None,
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(status, 401);
}

/// Prekey hygiene on a schedule: the fallback key is replaced when a week
/// old, and a message already encrypted to the old one still decrypts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_key_rotates_weekly_with_a_grace_period() {
    let h = Harness::sqlite().await;
    let alice = client(&h, "alice").await;
    let bob = client(&h, "bob").await;
    let now = time::OffsetDateTime::now_utc();
    let fresh = bob.keys().maintain(now).await.unwrap();
    assert!(!fresh.fallback_rotated);
    assert!(fresh.check.mismatched.is_empty());
    assert!(fresh.counts.one_time_keys >= 10 && fresh.counts.fallback_key);

    exhaust_one_time_keys(&h, "bob").await;
    let carol = RawDevice::register(&h.url(), "carol").await;
    let token = carol.token().await;
    alice
        .messages()
        .send_text(&uid("bob"), "to last week's key")
        .await
        .unwrap();
    let week_later = bob
        .keys()
        .maintain(now + time::Duration::days(8))
        .await
        .unwrap();
    assert!(week_later.fallback_rotated);
    assert_eq!(week_later.counts.one_time_keys, 25, "topped up again");
    let rotated = h
        .sql("UPDATE user_keys SET status = status WHERE user_id = 'bob' AND key_type = 'fallback' AND status = 'rotated'")
        .await;
    assert_eq!(rotated, 1);
    let got = bob.messages().sync().await.unwrap();
    assert_eq!(got[0].text.as_deref(), Some("to last week's key"));

    // Malformed and oversized checks are refused.
    let (status, _) = carol
        .call(
            &token,
            "POST",
            "/keys/check",
            Some(json!({"keys": "all of them"})),
        )
        .await;
    assert_eq!(status, 400);
    let many: Vec<_> = (0..2001)
        .map(|i| json!({"key_type": "one_time", "key_id": format!("k{i}"), "key": "x"}))
        .collect();
    let (status, _) = carol
        .call(&token, "POST", "/keys/check", Some(json!({ "keys": many })))
        .await;
    assert_eq!(status, 413);
    let (status, _, _) = carol
        .send_raw(
            "POST",
            "/keys/check",
            None,
            None,
            Some(b"{\"keys\": []}".to_vec()),
        )
        .await;
    assert_eq!(status, 401);
}

/// A resend retried with the same body (its answer was lost) gets the stored
/// answer, not a refusal for an already answered request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_resend_gets_the_stored_answer() {
    let h = Harness::sqlite().await;
    let bob = client(&h, "bob").await;
    let mallory = RawDevice::register(&h.url(), "mallory").await;
    let token = mallory.token().await;
    let garbage = "R2FyYmFnZSBjaXBoZXJ0ZXh0IGZyb20gbWFsbG9yeQ";
    let send = |id: &str, resend_of: Option<&str>| {
        json!({
            "recipient_id": "bob",
            "client_message_id": id,
            "resend_of": resend_of,
            "envelopes": [{"device_id": bob.device_id().as_str(), "msg_type": 1, "body": garbage}],
        })
    };
    let (status, sent) = mallory
        .call(&token, "POST", "/messages", Some(send("m1", None)))
        .await;
    assert_eq!(status, 201, "{sent}");
    // Bob cannot read it and asks for a resend by himself.
    assert_eq!(
        codes(&bob.messages().sync().await.unwrap()),
        ["KeyNotFound"]
    );
    let (_, asked) = mallory.call(&token, "GET", "/resend-requests", None).await;
    assert_eq!(asked["requests"][0]["message_id"], sent["message_id"]);
    let original = sent["message_id"].as_str().unwrap();
    let body = send("resend-1", Some(original));
    let (first, answer) = mallory
        .call(&token, "POST", "/messages", Some(body.clone()))
        .await;
    assert_eq!(first, 201, "{answer}");
    let (again, retried) = mallory.call(&token, "POST", "/messages", Some(body)).await;
    assert_eq!(
        (again, &retried["message_id"]),
        (200, &answer["message_id"])
    );
    assert_eq!(retried["duplicate"], true);
    let (_, left) = mallory.call(&token, "GET", "/resend-requests", None).await;
    assert_eq!(left["requests"], json!([]));
}
