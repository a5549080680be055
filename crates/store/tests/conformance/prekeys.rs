//! One-time and fallback keys, their rows in `user_keys`, and key checks.
use super::*;
use atlas_proto::keys::{KeyStatus, KeyType};

async fn one_time_keys_are_claimed_once(db: Db) {
    let store = db.open().await;
    add_user(&store, "bob", "D1").await;
    let otks: Vec<PublicKey> = (0..10)
        .map(|i| PublicKey {
            key_id: format!("k{i}"),
            key: format!("pub{i}"),
        })
        .collect();
    let upload = KeysUploadRequest {
        one_time_keys: otks,
        fallback_key: Some(PublicKey {
            key_id: "k0".into(),
            key: "fpub1".into(),
        }),
    };
    let counts = store
        .upload_keys(&uid("bob"), &did("D1"), &upload, now())
        .await
        .unwrap();
    assert_eq!(counts.one_time_keys, 10);
    assert!(counts.fallback_key);
    // Re-uploading the same keys is idempotent.
    assert_eq!(
        store
            .upload_keys(&uid("bob"), &did("D1"), &upload, now())
            .await
            .unwrap()
            .one_time_keys,
        10
    );
    assert!(matches!(
        store
            .upload_keys(&uid("bob"), &did("NOPE"), &upload, now())
            .await,
        Err(StoreError::UnknownDevice)
    ));

    // A fallback-only claim (the target's one-time-key budget is spent) consumes nothing.
    let fallback = store
        .claim_keys(&uid("bob"), &[], ClaimKind::FallbackOnly, now())
        .await
        .unwrap();
    assert!(fallback[0].key.as_ref().unwrap().fallback);
    assert_eq!(
        store
            .key_counts(&uid("bob"), &did("D1"))
            .await
            .unwrap()
            .one_time_keys,
        10
    );

    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .claim_keys(&uid("bob"), &[], ClaimKind::OneTimeFirst, now())
                .await
                .unwrap()
        }));
    }
    let mut one_time = Vec::new();
    let mut fallbacks = 0;
    for t in tasks {
        let claimed = t.await.unwrap();
        assert_eq!(claimed.len(), 1);
        let key = claimed[0].key.clone().unwrap();
        if key.fallback {
            assert_eq!(
                key.key_id, "k0",
                "one-time and fallback keys may share an id"
            );
            fallbacks += 1;
        } else {
            one_time.push(key.key_id);
        }
    }
    one_time.sort();
    let before = one_time.len();
    one_time.dedup();
    assert_eq!(
        before,
        one_time.len(),
        "a one-time key was handed out twice"
    );
    assert_eq!(one_time.len(), 10);
    assert_eq!(fallbacks, 6);
    assert_eq!(
        store
            .key_counts(&uid("bob"), &did("D1"))
            .await
            .unwrap()
            .one_time_keys,
        0
    );
    assert!(matches!(
        store
            .claim_keys(&uid("nobody"), &[], ClaimKind::OneTimeFirst, now())
            .await,
        Err(StoreError::UnknownUser)
    ));

    // Rotating the fallback key keeps the old one as 'rotated'.
    let rotate = KeysUploadRequest {
        one_time_keys: vec![],
        fallback_key: Some(PublicKey {
            key_id: "f2".into(),
            key: "fpub2".into(),
        }),
    };
    store
        .upload_keys(&uid("bob"), &did("D1"), &rotate, now())
        .await
        .unwrap();
    let claimed = store
        .claim_keys(&uid("bob"), &[], ClaimKind::OneTimeFirst, now())
        .await
        .unwrap();
    assert_eq!(claimed[0].key.as_ref().unwrap().key_id, "f2");
}

/// Prekey hygiene: a device's rows of `user_keys`, revocation of one-time and
/// fallback keys only, and the latest key check replacing the one before.
async fn key_rows_revocation_and_checks(db: Db) {
    let store = db.open().await;
    add_user(&store, "bob", "D1").await;
    let upload = KeysUploadRequest {
        one_time_keys: (0..3)
            .map(|i| PublicKey {
                key_id: format!("k{i}"),
                key: format!("pub{i}"),
            })
            .collect(),
        fallback_key: Some(PublicKey {
            key_id: "f1".into(),
            key: "fpub1".into(),
        }),
    };
    store
        .upload_keys(&uid("bob"), &did("D1"), &upload, now())
        .await
        .unwrap();
    let rows = store
        .device_public_keys(&uid("bob"), &did("D1"))
        .await
        .unwrap();
    let mut types: Vec<&str> = rows.iter().map(|r| r.key_type.as_str()).collect();
    types.sort();
    assert_eq!(
        types,
        [
            "curve25519",
            "ed25519",
            "fallback",
            "one_time",
            "one_time",
            "one_time"
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r.status == KeyStatus::Active && r.user_id == "bob")
    );
    let found = store
        .key_by_public("bob", "D1", "pub1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.key_id.as_str(), found.key_type.as_str()),
        ("k1", "one_time")
    );
    assert!(
        store
            .key_by_public("bob", "D1", "nope")
            .await
            .unwrap()
            .is_none()
    );
    // Identity keys are never revoked this way; a key type must match its id.
    let revoked = store
        .revoke_keys(
            &uid("bob"),
            &did("D1"),
            &[
                (KeyType::OneTime, "k1".into()),
                (KeyType::Fallback, "k2".into()),
                (KeyType::Ed25519, "ed25519:D1".into()),
                (KeyType::Fallback, "f1".into()),
            ],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(revoked, 2);
    let status = |id: &str, rows: &[atlas_store::UserKeyRecord]| {
        rows.iter().find(|r| r.key_id == id).unwrap().status
    };
    let rows = store
        .device_public_keys(&uid("bob"), &did("D1"))
        .await
        .unwrap();
    assert_eq!(status("k1", &rows), KeyStatus::Revoked);
    assert_eq!(status("k2", &rows), KeyStatus::Active);
    assert_eq!(status("f1", &rows), KeyStatus::Revoked);
    assert!(
        rows.iter()
            .find(|r| r.key_id == "k1")
            .unwrap()
            .last_rotated
            .is_some()
    );

    assert!(store.key_check("bob", "D1").await.unwrap().is_none());
    for (checked, mismatched) in [(5, vec!["k1".to_owned()]), (6, vec![])] {
        let check = atlas_store::KeyCheckRecord {
            user_id: "bob".into(),
            device_id: "D1".into(),
            checked_at: now(),
            checked,
            repaired: mismatched.len() as u64,
            mismatched,
        };
        store.record_key_check(&check).await.unwrap();
        assert_eq!(store.key_check("bob", "D1").await.unwrap(), Some(check));
    }
}

on_both_backends!(
    one_time_keys_are_claimed_once,
    key_rows_revocation_and_checks,
);
