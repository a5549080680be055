//! Resend requests and session resets.
use super::*;

/// Resend requests (one pending per copy, completed once by its sender) and
/// session resets (seen once by each side, naming the messages in flight).
async fn resends_and_session_resets(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    add_user(&store, "bob", "D1").await;
    let mut on_session = envelope("D1", "x");
    on_session.session_id = Some("s1".parse().unwrap());
    store
        .store_message(&send("alice", "bob", "r1", vec![on_session]))
        .await
        .unwrap();
    let copies = store.message_copies("m-r1").await.unwrap();
    assert_eq!(copies.len(), 1);
    assert_eq!(
        (
            copies[0].recipient_id.as_str(),
            copies[0].seq,
            copies[0].msg_type
        ),
        ("bob", 1, 1)
    );
    assert_eq!(copies[0].session_id.as_deref(), Some("s1"));
    assert!(store.message_copies("m-none").await.unwrap().is_empty());

    let request = |id: &str| atlas_store::ResendRequestRecord {
        request_id: id.parse().unwrap(),
        message_id: "m-r1".parse().unwrap(),
        recipient_id: "bob".parse().unwrap(),
        recipient_device_id: "D1".parse().unwrap(),
        sender_id: "alice".parse().unwrap(),
        sender_device_id: "D1".parse().unwrap(),
        requested_by: "bob/D1".into(),
        reason: Some("MissingSkippedKey".into()),
        status: "pending".into(),
        requested_at: now(),
        done_at: None,
        resent_message_id: None,
        detail: None,
    };
    let first = store.request_resends(&[request("q1")]).await.unwrap();
    assert_eq!(first[0].request_id, "q1");
    // A second request for the same copy while one is pending gets that one.
    let again = store.request_resends(&[request("q2")]).await.unwrap();
    assert_eq!(again[0].request_id, "q1");
    let pending = store
        .pending_resends(&uid("alice"), &did("D1"), 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    let resent = atlas_store::ResendOutcome::Resent("m-r2");
    assert!(
        !store
            .complete_resend("q1", (&uid("bob"), &did("D1")), resent, now())
            .await
            .unwrap(),
        "only the sender completes it"
    );
    assert!(
        store
            .complete_resend("q1", (&uid("alice"), &did("D1")), resent, now())
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete_resend("q1", (&uid("alice"), &did("D1")), resent, now())
            .await
            .unwrap(),
        "once"
    );
    let done = store.resend_requests("m-r1").await.unwrap();
    assert_eq!(
        (
            done[0].status.as_str(),
            done[0].resent_message_id.as_deref()
        ),
        ("resent", Some("m-r2"))
    );
    assert!(done[0].done_at.is_some());

    let parties = store.session_parties("s1").await.unwrap().unwrap();
    assert_eq!(parties.sender, ("alice".to_owned(), "D1".to_owned()));
    assert_eq!(parties.recipient, ("bob".to_owned(), "D1".to_owned()));
    assert!(store.session_parties("s-none").await.unwrap().is_none());
    let reset = |user: &str, peer: &str| atlas_store::SessionResetRecord {
        session_id: "s1".into(),
        user_id: user.into(),
        device_id: "D1".into(),
        peer_user_id: peer.into(),
        peer_device_id: "D1".into(),
        requested_by: "operator".into(),
        reset_at: now(),
        seen_at: None,
    };
    let in_flight = store
        .reset_session(&[reset("alice", "bob"), reset("bob", "alice")])
        .await
        .unwrap();
    assert_eq!(in_flight, ["m-r1"]);
    assert_eq!(store.session_resets("s1").await.unwrap().len(), 2);
    let unseen = store
        .unseen_session_resets(&uid("bob"), &did("D1"))
        .await
        .unwrap();
    assert_eq!(unseen.len(), 1);
    let ids = vec!["s1".to_owned()];
    assert_eq!(
        store
            .ack_session_resets(&uid("bob"), &did("D1"), &ids, now())
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .ack_session_resets(&uid("bob"), &did("D1"), &ids, now())
            .await
            .unwrap(),
        0
    );
    assert!(
        store
            .unseen_session_resets(&uid("bob"), &did("D1"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .unseen_session_resets(&uid("alice"), &did("D1"))
            .await
            .unwrap()
            .len(),
        1
    );
}

on_both_backends!(resends_and_session_resets,);
