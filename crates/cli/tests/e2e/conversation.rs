//! Three users (one with two devices) talk through a real server: first
//! contact, replies both ways, out-of-order arrival, live push, and a server
//! restart mid-conversation — on SQLite and on PostgreSQL.

use atlas_client::Client;
use atlas_proto::UserId;
use atlas_testing::Harness;

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn texts(received: &[atlas_client::Received]) -> Vec<String> {
    received
        .iter()
        .map(|r| {
            r.text.clone().unwrap_or_else(|| {
                format!(
                    "<{}>",
                    r.error
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )
            })
        })
        .collect()
}

async fn three_users_converse(mut h: Harness) {
    let url = h.url();
    let alice = Client::register(&h.profile("alice-phone"), &url, uid("alice"), None)
        .await
        .unwrap();
    let (code, _) = alice.create_link_code().await.unwrap();
    let alice_laptop = Client::register(
        &h.profile("alice-laptop"),
        &url,
        uid("alice"),
        Some(code.clone()),
    )
    .await
    .unwrap();
    // Pending until the phone certifies it (on its next sync).
    assert!(!alice_laptop.finish_link().await.unwrap());
    assert_eq!(
        alice_laptop
            .messages()
            .sync()
            .await
            .err()
            .and_then(|e| e.code()),
        Some(atlas_proto::ErrorCode::DevicePending)
    );
    assert!(alice.messages().sync().await.unwrap().is_empty());
    assert!(alice_laptop.finish_link().await.unwrap());
    // A link code works once.
    let again = Client::register(&h.profile("alice-third"), &url, uid("alice"), Some(code)).await;
    assert_eq!(
        again.err().and_then(|e| e.code()),
        Some(atlas_proto::ErrorCode::InvalidLinkToken)
    );
    let bob = Client::register(&h.profile("bob"), &url, uid("bob"), None)
        .await
        .unwrap();
    let carol = Client::register(&h.profile("carol"), &url, uid("carol"), None)
        .await
        .unwrap();
    assert_eq!(alice.devices(&uid("alice")).await.unwrap().devices.len(), 2);

    // First contact: one send reaches both of alice's devices.
    let sent = bob
        .messages()
        .send_text(&uid("alice"), "hi alice, it's bob")
        .await
        .unwrap();
    assert_eq!(sent.deliveries.len(), 2);
    assert_eq!(
        texts(&alice.messages().sync().await.unwrap()),
        ["hi alice, it's bob"]
    );
    assert_eq!(
        texts(&alice_laptop.messages().sync().await.unwrap()),
        ["hi alice, it's bob"]
    );
    assert!(
        alice.messages().sync().await.unwrap().is_empty(),
        "acknowledged messages are not delivered again"
    );

    // Replies both ways, on the sessions just created.
    alice
        .messages()
        .send_text(&uid("bob"), "hello bob, from my phone")
        .await
        .unwrap();
    alice_laptop
        .messages()
        .send_text(&uid("bob"), "and from my laptop")
        .await
        .unwrap();
    let got = bob.messages().sync().await.unwrap();
    assert_eq!(
        texts(&got),
        ["hello bob, from my phone", "and from my laptop"]
    );
    assert_ne!(got[0].sender_device_id, got[1].sender_device_id);
    bob.messages()
        .send_text(&uid("alice"), "good to hear")
        .await
        .unwrap();
    assert_eq!(
        texts(&alice_laptop.messages().sync().await.unwrap()),
        ["good to hear"]
    );

    // Carol and bob.
    carol
        .messages()
        .send_text(&uid("bob"), "bob? carol here")
        .await
        .unwrap();
    for i in 0..5 {
        bob.messages()
            .send_text(&uid("carol"), &format!("reply {i}"))
            .await
            .unwrap();
    }
    assert_eq!(
        texts(&bob.messages().sync().await.unwrap()),
        ["bob? carol here"]
    );

    // Out of order: carol is handed the last of bob's five messages first. She
    // notices the gap, fetches the missing ones, and processes all in order.
    let pending = carol.messages().pending().await.unwrap();
    assert_eq!(pending.len(), 5);
    let last = pending.last().cloned().unwrap();
    let processed = carol.messages().process(vec![last]).await.unwrap();
    assert_eq!(
        texts(&processed),
        ["reply 0", "reply 1", "reply 2", "reply 3", "reply 4"]
    );

    // Live push over WebSocket.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = {
        let bob_dir = h.profile("bob");
        tokio::spawn(async move {
            let bob = Client::open(&bob_dir).await.unwrap();
            // The client never stops it: only the server's close ends it.
            bob.listen(move |m| tx.send(m).unwrap(), std::future::pending())
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    carol
        .messages()
        .send_text(&uid("bob"), "pushed to you")
        .await
        .unwrap();
    let pushed = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("push arrives")
        .unwrap();
    assert_eq!(pushed.text.as_deref(), Some("pushed to you"));
    // Stopping the server closes the push socket: the listener returns instead of hanging.
    h.stop().await;
    tokio::time::timeout(std::time::Duration::from_secs(10), listener)
        .await
        .expect("listener ends when the server stops")
        .unwrap()
        .unwrap();
    h.start().await;

    // Server restart mid-conversation: queued messages, sessions and tokens survive.
    alice
        .messages()
        .send_text(&uid("carol"), "before the restart")
        .await
        .unwrap();
    h.stop().await;
    h.start().await;
    assert_eq!(h.url(), url);
    let resumed = texts(&carol.messages().sync().await.unwrap());
    assert_eq!(resumed, ["before the restart"]);
    carol
        .messages()
        .send_text(&uid("alice"), "after the restart")
        .await
        .unwrap();
    // The phone had not synced since bob's "good to hear": it gets both, in order.
    assert_eq!(
        texts(&alice.messages().sync().await.unwrap()),
        ["good to hear", "after the restart"]
    );
    assert_eq!(
        texts(&alice_laptop.messages().sync().await.unwrap()),
        ["after the restart"]
    );
    // A client restarted too (reopened from disk) keeps its sessions.
    drop(bob);
    let bob = Client::open(&h.profile("bob")).await.unwrap();
    alice_laptop
        .messages()
        .send_text(&uid("bob"), "still there?")
        .await
        .unwrap();
    assert_eq!(
        texts(&bob.messages().sync().await.unwrap()),
        ["still there?"]
    );
    h.stop().await;
}

/// The runbook's first cause of "Unable to decrypt": the recipient's key
/// rotated before the message arrived. Within the grace period it still decrypts.
async fn rotated_fallback_key_still_decrypts(mut h: Harness) {
    let url = h.url();
    let alice = Client::register(&h.profile("alice"), &url, uid("alice"), None)
        .await
        .unwrap();
    let bob = Client::register(&h.profile("bob"), &url, uid("bob"), None)
        .await
        .unwrap();
    // Someone tries to drain alice's one-time keys: past her budget claims get
    // the fallback key, the claimer is slowed down, and alice keeps one-time keys.
    let drain = atlas_testing::RawDevice::register(&url, "drain").await;
    let token = drain.token().await;
    let mut fallback_claims = 0;
    let mut refused = 0;
    for _ in 0..40 {
        let proof = drain.proof("POST", "/keys/claim", Some(&token), atlas_testing::now());
        let (status, headers, claimed) = drain
            .send_raw(
                "POST",
                "/keys/claim",
                Some(format!("DPoP {token}")),
                Some(proof),
                Some(
                    serde_json::json!({"user_id": "alice"})
                        .to_string()
                        .into_bytes(),
                ),
            )
            .await;
        match status {
            200 if claimed["devices"][0]["one_time_key"]["fallback"] == true => {
                fallback_claims += 1
            }
            200 => {}
            429 => {
                assert!(headers.contains_key("retry-after"), "{claimed}");
                assert_eq!(claimed["error"], "rate_limited");
                refused += 1;
            }
            other => panic!("claim answered {other}: {claimed}"),
        }
    }
    assert!(fallback_claims >= 15, "{fallback_claims} fallback claims");
    assert!(
        refused >= 5,
        "the claimer is slowed down ({refused} refused)"
    );
    let left = alice.devices(&uid("alice")).await.unwrap().devices[0].one_time_keys_available;
    assert!(
        left >= 10,
        "a drain cannot exhaust alice ({left} one-time keys left)"
    );

    bob.messages()
        .send_text(&uid("alice"), "encrypted to your fallback key")
        .await
        .unwrap();
    alice.keys().rotate_fallback().await.unwrap();
    assert_eq!(
        texts(&alice.messages().sync().await.unwrap()),
        ["encrypted to your fallback key"]
    );
    alice
        .messages()
        .send_text(&uid("bob"), "got it")
        .await
        .unwrap();
    assert_eq!(texts(&bob.messages().sync().await.unwrap()), ["got it"]);

    // Sent text stays in the outbox for resends, and nothing on disk holds it in the clear.
    let sent = alice
        .messages()
        .send_text(&uid("bob"), "secret words in the outbox")
        .await
        .unwrap();
    assert_eq!(
        alice
            .messages()
            .sent_text(&sent.message_id)
            .await
            .unwrap()
            .as_deref(),
        Some("secret words in the outbox")
    );
    for entry in std::fs::read_dir(h.profile("alice")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(12).any(|w| w == b"secret words"),
            "plaintext found in the profile on disk"
        );
    }
    h.stop().await;
}

/// A message whose processing hits a network failure (here: the sender's keys
/// cannot be fetched because the server is down) is neither acknowledged nor
/// reported as undecryptable; the next sync decrypts it.
async fn a_network_failure_mid_processing_loses_nothing(mut h: Harness) {
    let url = h.url();
    let alice = Client::register(&h.profile("alice"), &url, uid("alice"), None)
        .await
        .unwrap();
    let carol = Client::register(&h.profile("carol"), &url, uid("carol"), None)
        .await
        .unwrap();
    alice
        .messages()
        .send_text(&uid("carol"), "first contact")
        .await
        .unwrap();
    let pending = carol.messages().pending().await.unwrap();
    h.stop().await;
    let error = carol.messages().process(pending).await.unwrap_err();
    assert!(
        matches!(error, atlas_client::ClientError::Network(_)),
        "{error}"
    );
    assert_eq!(carol.messages().last_seq().await.unwrap(), 0);
    h.start().await;
    assert_eq!(
        texts(&carol.messages().sync().await.unwrap()),
        ["first contact"]
    );
    h.stop().await;
}

/// The SDK takes its time from the injected clock: proofs dated by a device
/// clock ten minutes ahead are refused (outside the server's `iat` window),
/// and the same device works again once its clock is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_dates_its_proofs_by_its_clock() {
    struct Ahead;
    impl atlas_proto::clock::Clock for Ahead {
        fn now(&self) -> time::OffsetDateTime {
            time::OffsetDateTime::now_utc() + time::Duration::minutes(10)
        }
    }
    let h = Harness::sqlite().await;
    let bob = atlas_testing::client(&h, "bob").await;
    let mut alice = atlas_testing::client(&h, "alice").await;
    alice.set_clock(std::sync::Arc::new(Ahead));
    let refused = alice
        .messages()
        .send_text(bob.user_id(), "from the future")
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(atlas_proto::ErrorCode::InvalidDpopProof),
        "{refused}"
    );
    alice.set_clock(std::sync::Arc::new(atlas_proto::clock::SystemClock));
    alice
        .messages()
        .send_text(bob.user_id(), "on time")
        .await
        .unwrap();
    let got = bob.messages().sync().await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text.as_deref(), Some("on time"));
}

on_both_backends!(
    three_users_converse,
    rotated_fallback_key_still_decrypts,
    a_network_failure_mid_processing_loses_nothing,
);
