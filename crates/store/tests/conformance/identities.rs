//! Emergency revocation of identity keys, and re-keying.
use super::*;
use atlas_store::RekeyOutcome;

/// One user's revocation leaves the others alone; the revoked device's keys
/// are not handed out, its refresh tokens die, its session peers are told to
/// reset; re-keying installs the first device's identity key and refuses a
/// second, different one.
async fn identities_revoke_and_rekey(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    add_user(&store, "bob", "D1").await;
    let t = now();
    store
        .create_link_token(&uid("bob"), b"link", t + Duration::minutes(5))
        .await
        .unwrap();
    store
        .add_device(&uid("bob"), &keys("bob", "D2"), b"link", "proof", t)
        .await
        .unwrap();
    assert!(
        store
            .certify_device(&uid("bob"), &did("D2"), "cert-2", "transfer")
            .await
            .unwrap()
    );
    let upload = KeysUploadRequest {
        one_time_keys: vec![PublicKey {
            key_id: "AAAAAQ".into(),
            key: "otk".into(),
        }],
        fallback_key: None,
    };
    store
        .upload_keys(&uid("bob"), &did("D1"), &upload, t)
        .await
        .unwrap();
    let mut on_session = envelope("D1", "x");
    on_session.session_id = Some("s1".parse().unwrap());
    store
        .store_message(&send(
            "alice",
            "bob",
            "m1",
            vec![on_session, envelope("D2", "y")],
        ))
        .await
        .unwrap();

    assert!(matches!(
        store.revoke_identities(Some(&uid("ghost")), "op", t).await,
        Err(StoreError::UnknownUser)
    ));
    let done = store
        .revoke_identities(Some(&uid("bob")), "operator:t1", t)
        .await
        .unwrap();
    assert_eq!(done.users.len(), 1);
    assert_eq!(done.users[0].identity_key.as_deref(), Some("identity-key"));
    let revoked: Vec<&str> = done.devices.iter().map(|d| d.device_id.as_str()).collect();
    assert_eq!(revoked, ["D1", "D2"]);
    assert_eq!(
        done.sessions_reset,
        [("alice".to_owned(), "D1".to_owned(), "s1".to_owned())]
    );
    let resets = store
        .unseen_session_resets(&uid("alice"), &did("D1"))
        .await
        .unwrap();
    assert_eq!(resets.len(), 1);
    assert_eq!(resets[0].requested_by, "operator:t1");
    assert_eq!(store.identity_key(&uid("bob")).await.unwrap(), None);
    assert_eq!(
        store.identity_key(&uid("alice")).await.unwrap().as_deref(),
        Some("identity-key"),
        "another user is untouched"
    );
    let d1 = store
        .device(&uid("bob"), &did("D1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d1.status.as_str(), d1.one_time_keys), ("rekey", 0));
    assert_eq!(d1.tokens_after, Some(t.unix_timestamp()));
    assert!(
        store
            .claim_keys(&uid("bob"), &[], ClaimKind::OneTimeFirst, t)
            .await
            .unwrap()
            .is_empty(),
        "a revoked device's keys are not handed out"
    );
    assert!(matches!(
        store.upload_keys(&uid("bob"), &did("D1"), &upload, t).await,
        Err(StoreError::UnknownDevice)
    ));

    let new_identity = NewIdentity {
        identity_key: "new-identity",
        certificate: "new-cert",
    };
    let new_keys = keys("bob", "D1");
    assert_eq!(
        store
            .rekey_device(&uid("alice"), &keys("alice", "D1"), &new_identity, t)
            .await
            .unwrap(),
        RekeyOutcome::NotRekeying
    );
    assert_eq!(
        store
            .rekey_device(&uid("bob"), &new_keys, &new_identity, t)
            .await
            .unwrap(),
        RekeyOutcome::Done
    );
    let d1 = store
        .device(&uid("bob"), &did("D1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d1.status.as_str(), "active");
    assert_eq!(d1.keys.ed25519, new_keys.ed25519);
    assert_eq!(d1.certificate.as_deref(), Some("new-cert"));
    assert_eq!(
        d1.tokens_after,
        Some(t.unix_timestamp() + 1),
        "tokens of the re-key's second die too"
    );
    assert_eq!(
        store.identity_key(&uid("bob")).await.unwrap().as_deref(),
        Some("new-identity")
    );
    // The new account numbers its keys from the start again: the same id is a new key.
    let counts = store
        .upload_keys(&uid("bob"), &did("D1"), &upload, t)
        .await
        .unwrap();
    assert_eq!(counts.one_time_keys, 1);
    assert_eq!(
        store
            .rekey_device(&uid("bob"), &new_keys, &new_identity, t)
            .await
            .unwrap(),
        RekeyOutcome::NotRekeying,
        "once only"
    );
    let other = NewIdentity {
        identity_key: "another-identity",
        certificate: "cert",
    };
    assert_eq!(
        store
            .rekey_device(&uid("bob"), &keys("bob", "D2"), &other, t)
            .await
            .unwrap(),
        RekeyOutcome::IdentityReplaced
    );
    assert_eq!(
        store
            .device(&uid("bob"), &did("D2"))
            .await
            .unwrap()
            .unwrap()
            .status
            .as_str(),
        "rekey",
        "the refused device is untouched"
    );

    // Every user's at once.
    let all = store
        .revoke_identities(None, "operator:t1", t)
        .await
        .unwrap();
    let users: Vec<&str> = all.users.iter().map(|u| u.user_id.as_str()).collect();
    assert_eq!(users, ["alice", "bob"]);
    assert_eq!(
        all.devices.len(),
        2,
        "alice/D1 and bob/D1 (bob/D2 was rekey already)"
    );
}

on_both_backends!(identities_revoke_and_rekey,);
