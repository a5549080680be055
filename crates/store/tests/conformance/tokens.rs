//! Refresh tokens, operator tokens, server keys and the replay cache.
use super::*;

async fn tokens_keys_and_jtis(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    let t = now();
    let record = RefreshTokenRecord {
        token_hash: b"h1".to_vec(),
        user_id: uid("alice"),
        device_id: did("D1"),
        jkt: "jkt".into(),
        family_id: "fam-1".into(),
        expires_at: t + Duration::days(1),
    };
    let use_token = |hash: &'static [u8]| {
        let store = store.clone();
        async move { store.use_refresh_token(hash, t).await.unwrap() }
    };
    store.insert_refresh_token(&record).await.unwrap();
    let RefreshUse::Fresh(used) = use_token(b"h1").await else {
        panic!("a fresh token is accepted")
    };
    assert_eq!(
        (used.jkt.as_str(), used.family_id.as_str()),
        ("jkt", "fam-1")
    );
    // Its successor in the same family, then the spent one again: the family dies.
    let successor = RefreshTokenRecord {
        token_hash: b"h1-next".to_vec(),
        ..record.clone()
    };
    store.insert_refresh_token(&successor).await.unwrap();
    assert!(
        matches!(use_token(b"h1").await, RefreshUse::Replayed { family_id, .. } if family_id == "fam-1"),
        "refresh tokens are single use"
    );
    assert!(
        matches!(use_token(b"h1-next").await, RefreshUse::Replayed { .. }),
        "the replay revoked the unspent successor too"
    );
    let expired = RefreshTokenRecord {
        token_hash: b"h2".to_vec(),
        family_id: "fam-2".into(),
        expires_at: t - Duration::seconds(1),
        ..record.clone()
    };
    store.insert_refresh_token(&expired).await.unwrap();
    assert!(matches!(use_token(b"h2").await, RefreshUse::Invalid));
    assert!(matches!(use_token(b"nope").await, RefreshUse::Invalid));
    // Revoking a device's tokens (or all) leaves none usable.
    for (hash, family) in [(&b"h3"[..], "fam-3"), (&b"h4"[..], "fam-4")] {
        let fresh = RefreshTokenRecord {
            token_hash: hash.to_vec(),
            family_id: family.into(),
            ..record.clone()
        };
        store.insert_refresh_token(&fresh).await.unwrap();
    }
    assert_eq!(
        store
            .revoke_refresh_tokens(Some((&uid("alice"), &did("D1"))), t)
            .await
            .unwrap(),
        3,
        "h3, h4 and the expired, never used h2"
    );
    assert!(matches!(
        use_token(b"h3").await,
        RefreshUse::Replayed { .. }
    ));
    assert_eq!(store.revoke_refresh_tokens(None, t).await.unwrap(), 0);

    let make = || ServerKeyRecord {
        kid: format!("k-{}", now().unix_timestamp_nanos()),
        purpose: "token".into(),
        alg: "EdDSA".into(),
        secret: vec![1; 32],
        created_at: now(),
    };
    let first = store.server_key("token", &make).await.unwrap();
    let second = store.server_key("token", &make).await.unwrap();
    assert_eq!(first.kid, second.kid);
    assert_eq!(second.secret, vec![1; 32]);

    let unix = t.unix_timestamp();
    assert!(store.insert_jti("j1", unix + 300).await.unwrap());
    assert!(
        !store.insert_jti("j1", unix + 300).await.unwrap(),
        "a replay"
    );
    assert!(store.insert_jti("j2", unix - 300).await.unwrap());
    assert_eq!(store.jti("j1").await.unwrap(), Some(unix + 300));
    assert_eq!(store.jti("nope").await.unwrap(), None);
    assert_eq!(
        store.prune_jtis(unix, 100).await.unwrap(),
        1,
        "only j2 expired"
    );
    assert_eq!(store.jti("j2").await.unwrap(), None);
    assert!(store.delete_jti("j1").await.unwrap());
    assert!(!store.delete_jti("j1").await.unwrap());

    // The same proof id from many requests at once: exactly one is new.
    let tries: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.insert_jti("same", unix + 300).await.unwrap() })
        })
        .collect();
    let mut fresh = 0;
    for t in tries {
        fresh += usize::from(t.await.unwrap());
    }
    assert_eq!(fresh, 1, "one of 16 concurrent inserts of one jti is new");

    // A send records its request's proof id in its own transaction.
    add_user(&store, "bob", "B1").await;
    let mut first = send("alice", "bob", "p1", vec![envelope("B1", "x")]);
    first.proof_id = Some(("send-proof".into(), unix + 300));
    store.store_message(&first).await.unwrap();
    assert!(!store.insert_jti("send-proof", unix + 300).await.unwrap());
    let mut replayed = send("alice", "bob", "p2", vec![envelope("B1", "y")]);
    replayed.proof_id = Some(("send-proof".into(), unix + 300));
    assert!(matches!(
        store.store_message(&replayed).await,
        Err(StoreError::Replay)
    ));
    replayed.proof_id = Some(("other-proof".into(), unix + 300));
    assert_eq!(
        store.store_message(&replayed).await.unwrap().deliveries[0].1,
        2,
        "nothing of the replay was stored"
    );

    // One proof on many different sends at once (committed together or not):
    // exactly one is stored, every other is a replay.
    let tries: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let mut m = send("alice", "bob", &format!("r{i}"), vec![envelope("B1", "z")]);
            m.proof_id = Some(("racing-proof".into(), unix + 300));
            tokio::spawn(async move { store.store_message(&m).await })
        })
        .collect();
    let (mut stored, mut replays) = (0, 0);
    for t in tries {
        match t.await.unwrap() {
            Ok(_) => stored += 1,
            Err(StoreError::Replay) => replays += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((stored, replays), (1, 15));

    // Pruning goes in batches and leaves live ids alone.
    for i in 0..25 {
        store
            .insert_jti(&format!("old-{i}"), unix - 1)
            .await
            .unwrap();
    }
    assert_eq!(store.prune_jtis(unix, 10).await.unwrap(), 10);
    assert_eq!(store.prune_jtis(unix, 100).await.unwrap(), 15);
    assert_eq!(store.prune_jtis(unix, 100).await.unwrap(), 0);
    assert!(store.jti("same").await.unwrap().is_some());
}

async fn operator_tokens_are_hashed_and_revocable(db: Db) {
    let store = db.open().await;
    let record = atlas_store::OperatorTokenRecord {
        token_id: "op1".into(),
        token_hash: b"hash-1".to_vec(),
        scopes: vec!["dpop".into(), "receipts".into()],
        label: "on-call".into(),
        created_at: now(),
        expires_at: Some(now() + Duration::hours(8)),
    };
    store.create_operator_token(&record).await.unwrap();
    assert_eq!(
        store.operator_token(b"hash-1").await.unwrap(),
        Some(record.clone())
    );
    assert_eq!(store.operator_token(b"other").await.unwrap(), None);
    assert!(
        store.create_operator_token(&record).await.is_err(),
        "ids are unique"
    );
    assert!(store.revoke_operator_token("op1", now()).await.unwrap());
    assert!(!store.revoke_operator_token("op1", now()).await.unwrap());
    assert_eq!(
        store.operator_token(b"hash-1").await.unwrap(),
        None,
        "a revoked token no longer authenticates"
    );
}

/// `(kid, status, published at t)` of each key.
pub(crate) fn lifecycle(states: &[ServerKeyState], t: OffsetDateTime) -> Vec<(&str, &str, bool)> {
    states
        .iter()
        .map(|s| (s.key.kid.as_str(), s.status.as_str(), s.published(t)))
        .collect()
}

async fn signing_keys_rotate_with_overlap_and_revoke(db: Db) {
    let store = db.open().await;
    let t = now();
    let key = |kid: &str| ServerKeyRecord {
        kid: kid.into(),
        purpose: "receipt-signing".into(),
        alg: "EdDSA".into(),
        secret: vec![2; 32],
        created_at: t,
    };
    let first = store
        .server_key("receipt-signing", &|| key("k1"))
        .await
        .unwrap();
    assert_eq!(first.kid, "k1");
    let mut k2 = key("k2");
    k2.created_at = t + Duration::seconds(1);
    store
        .rotate_server_key(&k2, t + Duration::days(7), t)
        .await
        .unwrap();
    assert_eq!(
        store
            .server_key("receipt-signing", &|| key("x"))
            .await
            .unwrap()
            .kid,
        "k2"
    );
    let states = store.server_keys("receipt-signing").await.unwrap();
    let summary = lifecycle(&states, t);
    assert_eq!(summary, [("k2", "active", true), ("k1", "retired", true)]);
    assert!(
        !states[1].published(t + Duration::days(8)),
        "the overlap ends"
    );

    // Revoking a retired key needs no replacement; revoking the active one installs it.
    assert!(
        store
            .revoke_server_key("receipt-signing", "k1", &key("unused"), t)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_server_key("receipt-signing", "k1", &key("unused"), t)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_server_key("receipt-signing", "nope", &key("unused"), t)
            .await
            .unwrap()
    );
    let mut k3 = key("k3");
    k3.created_at = t + Duration::seconds(2);
    assert!(
        store
            .revoke_server_key("receipt-signing", "k2", &k3, t)
            .await
            .unwrap()
    );
    let states = store.server_keys("receipt-signing").await.unwrap();
    let summary = lifecycle(&states, t);
    assert_eq!(
        summary,
        [
            ("k3", "active", true),
            ("k2", "revoked", false),
            ("k1", "revoked", false)
        ]
    );
    assert!(states[1].revoked_at.is_some());
    assert!(store.server_keys("other").await.unwrap().is_empty());
}

on_both_backends!(
    tokens_keys_and_jtis,
    operator_tokens_are_hashed_and_revocable,
    signing_keys_rotate_with_overlap_and_revoke,
);
