//! Users, devices, link tokens, certification and removal.
use super::*;

async fn users_and_devices(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    assert!(matches!(
        store
            .create_user(&uid("alice"), &keys("alice", "D9"), &IDENTITY, now())
            .await,
        Err(StoreError::UserExists)
    ));
    // The failed registration left nothing behind.
    assert_eq!(store.devices(&uid("alice")).await.unwrap().len(), 1);
    assert!(matches!(
        store.devices(&uid("nobody")).await,
        Err(StoreError::UnknownUser)
    ));

    let t = now();
    store
        .create_link_token(&uid("alice"), b"link-1", t + Duration::minutes(5))
        .await
        .unwrap();
    assert!(matches!(
        store
            .add_device(&uid("alice"), &keys("alice", "D2"), b"wrong", "proof", t)
            .await,
        Err(StoreError::InvalidLinkToken)
    ));
    store
        .add_device(&uid("alice"), &keys("alice", "D2"), b"link-1", "proof", t)
        .await
        .unwrap();
    assert!(matches!(
        store
            .add_device(&uid("alice"), &keys("alice", "D3"), b"link-1", "proof", t)
            .await,
        Err(StoreError::InvalidLinkToken)
    ));
    store
        .create_link_token(&uid("alice"), b"link-2", t - Duration::seconds(1))
        .await
        .unwrap();
    assert!(matches!(
        store
            .add_device(&uid("alice"), &keys("alice", "D3"), b"link-2", "proof", t)
            .await,
        Err(StoreError::InvalidLinkToken)
    ));
    store
        .create_link_token(&uid("alice"), b"link-3", t + Duration::minutes(5))
        .await
        .unwrap();
    assert!(matches!(
        store
            .add_device(&uid("alice"), &keys("alice", "D2"), b"link-3", "proof", t)
            .await,
        Err(StoreError::DeviceExists)
    ));

    let devices = store.devices(&uid("alice")).await.unwrap();
    let ids: Vec<&str> = devices.iter().map(|d| d.keys.device_id.as_str()).collect();
    assert_eq!(ids, ["D1", "D2"]);
    let statuses: Vec<&str> = devices.iter().map(|d| d.status.as_str()).collect();
    assert_eq!(
        statuses,
        ["active", "pending"],
        "a linked device waits for its certificate"
    );
    assert_eq!(devices[0].certificate.as_deref(), Some("certificate"));
    assert_eq!(devices[1].link_proof.as_deref(), Some("proof"));
    assert_eq!(devices[1].link_token_hash.as_deref(), Some(&b"link-1"[..]));
    assert_eq!(
        store.identity_key(&uid("alice")).await.unwrap().as_deref(),
        Some("identity-key")
    );
    assert!(matches!(
        store.identity_key(&uid("nobody")).await,
        Err(StoreError::UnknownUser)
    ));

    // Certified once; the sealed identity key is handed out once.
    let pending = store
        .claim_certificate(&uid("alice"), &did("D2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (pending.status.as_str(), pending.certificate),
        ("pending", None)
    );
    assert!(
        store
            .certify_device(&uid("alice"), &did("D2"), "cert-2", "sealed")
            .await
            .unwrap()
    );
    assert!(
        !store
            .certify_device(&uid("alice"), &did("D2"), "cert-x", "x")
            .await
            .unwrap()
    );
    assert!(
        !store
            .certify_device(&uid("alice"), &did("D1"), "cert-x", "x")
            .await
            .unwrap()
    );
    let claimed = store
        .claim_certificate(&uid("alice"), &did("D2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.certificate.as_deref(), Some("cert-2"));
    assert_eq!(claimed.identity_transfer.as_deref(), Some("sealed"));
    let again = store
        .claim_certificate(&uid("alice"), &did("D2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.status.as_str(), again.identity_transfer),
        ("active", None)
    );
    let d2 = store
        .device(&uid("alice"), &did("D2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d2.keys, devices[1].keys);

    // Removal: once, with its prekeys and refresh tokens.
    let upload = KeysUploadRequest {
        one_time_keys: vec![PublicKey {
            key_id: "o1".into(),
            key: "p1".into(),
        }],
        fallback_key: None,
    };
    store
        .upload_keys(&uid("alice"), &did("D2"), &upload, t)
        .await
        .unwrap();
    assert!(
        store
            .revoke_device(&uid("alice"), &did("D2"), Some("sig"), t)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_device(&uid("alice"), &did("D2"), None, t)
            .await
            .unwrap()
    );
    let d2 = store
        .device(&uid("alice"), &did("D2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            d2.status.as_str(),
            d2.revocation.as_deref(),
            d2.one_time_keys
        ),
        ("revoked", Some("sig"), 0)
    );
    let claimed = store
        .claim_keys(&uid("alice"), &[], ClaimKind::OneTimeFirst, t)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "only D1 is handed out");
}

on_both_backends!(users_and_devices,);
