//! One conformance suite, run against SQLite and against PostgreSQL (each test
//! in its own fresh database).
#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use atlas_crypto::olm::OlmAccount;
use atlas_proto::api::{DeviceKeys, KeysUploadRequest, OutgoingEnvelope, PublicKey};
use atlas_proto::receipt::ReceiptType;
use atlas_proto::{DeviceId, UserId};
use atlas_store::testdb::{TempDir, TempPostgres};
use atlas_store::{
    AckedMessage, ClaimKind, CommitOutcome, KeyPackageCounts, NewCommit, NewGroup, NewIdentity,
    NewKeyPackage, NewMessage, NewReport, ReceiptRecord, RefreshTokenRecord, RefreshUse,
    ReportChange, ServerKeyRecord, ServerKeyState, Store, StoreError,
};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

enum Db {
    Sqlite(TempDir),
    Postgres(TempPostgres),
}

impl Db {
    async fn sqlite() -> Self {
        Db::Sqlite(TempDir::new("atlas-store-test").unwrap())
    }
    async fn postgres() -> Self {
        Db::Postgres(
            TempPostgres::create()
                .await
                .expect("PostgreSQL at 127.0.0.1:5432 (set ATLAS_TEST_POSTGRES_URL)"),
        )
    }
    fn url(&self) -> String {
        match self {
            Db::Sqlite(dir) => dir.sqlite_url("atlas.db"),
            Db::Postgres(pg) => pg.url.clone(),
        }
    }
    async fn open(&self) -> Arc<dyn Store> {
        atlas_store::open(&self.url()).await.unwrap()
    }
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}
fn did(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}
fn now() -> OffsetDateTime {
    // Whole microseconds, as PostgreSQL stores them, so round trips compare equal.
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap()
}
fn keys(user: &str, device: &str) -> DeviceKeys {
    OlmAccount::new().device_keys(&uid(user), &did(device))
}
/// The store keeps identity keys and certificates as given (the server checks them).
const IDENTITY: NewIdentity<'static> = NewIdentity {
    identity_key: "identity-key",
    certificate: "certificate",
};
async fn add_user(store: &Arc<dyn Store>, user: &str, device: &str) {
    store
        .create_user(&uid(user), &keys(user, device), &IDENTITY, now())
        .await
        .unwrap();
}
fn envelope(device: &str, body: &str) -> OutgoingEnvelope {
    OutgoingEnvelope {
        device_id: did(device),
        msg_type: 1,
        body: body.into(),
        session_id: None,
    }
}
fn send(from: &str, to: &str, client_id: &str, envelopes: Vec<OutgoingEnvelope>) -> NewMessage {
    NewMessage {
        message_id: format!("m-{client_id}"),
        sender_id: uid(from),
        sender_device_id: did("D1"),
        recipient_id: uid(to),
        client_message_id: client_id.into(),
        request_hash: client_id.as_bytes().to_vec(),
        encryption_algorithm: "m.olm.v1.curve25519-aes-sha2".into(),
        envelopes,
        untrusted_devices: vec![],
        queue_limit: 10_000,
        proof_id: None,
        resend_of: None,
        prekey_keys: vec![],
        now: now(),
        receipt: receipt(&format!("m-{client_id}"), from, to, None),
    }
}
fn receipt(message_id: &str, from: &str, to: &str, device: Option<&str>) -> ReceiptRecord {
    let kind = if device.is_some() {
        ReceiptType::Delivered
    } else {
        ReceiptType::Accepted
    };
    ReceiptRecord {
        receipt_id: format!("r-{message_id}-{}", device.unwrap_or("")),
        message_id: message_id.into(),
        receipt_type: kind,
        device_id: device.map(did),
        sender_id: uid(from),
        recipient_id: uid(to),
        kid: "k1".into(),
        jws: format!("{{\"signed\":\"{message_id}\"}}"),
        issued_at: now(),
        expires_at: now() + Duration::days(30),
    }
}
/// Builds the delivered receipt of each acknowledged message, as the server does.
fn delivered(device: &'static str) -> impl Fn(&AckedMessage) -> ReceiptRecord + Send + Sync {
    move |m| receipt(&m.message_id, m.sender_id.as_str(), "carol", Some(device))
}

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

async fn messages_are_sequenced_idempotent_and_durable(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    add_user(&store, "carol", "P").await;
    store
        .create_link_token(&uid("carol"), b"t", now() + Duration::minutes(1))
        .await
        .unwrap();
    store
        .add_device(&uid("carol"), &keys("carol", "L"), b"t", "proof", now())
        .await
        .unwrap();
    // Pending devices are no recipients until certified.
    let Err(StoreError::DeviceListMismatch(m)) = store
        .store_message(&send(
            "alice",
            "carol",
            "early",
            vec![envelope("P", "x"), envelope("L", "x")],
        ))
        .await
    else {
        panic!("a pending device is no recipient");
    };
    assert_eq!((m.extra, m.current), (vec![did("L")], vec![did("P")]));
    store
        .certify_device(&uid("carol"), &did("L"), "cert", "sealed")
        .await
        .unwrap();

    let Err(StoreError::DeviceListMismatch(m)) = store
        .store_message(&send(
            "alice",
            "carol",
            "c0",
            vec![envelope("P", "x"), envelope("Z", "y")],
        ))
        .await
    else {
        panic!("expected a mismatch");
    };
    assert_eq!(m.missing, [did("L")]);
    assert_eq!(m.extra, [did("Z")]);
    assert_eq!(m.current, [did("L"), did("P")]);
    let Err(StoreError::DeviceListMismatch(m)) = store
        .store_message(&send(
            "alice",
            "carol",
            "c0",
            vec![envelope("P", "x"), envelope("P", "x"), envelope("L", "x")],
        ))
        .await
    else {
        panic!("expected a mismatch for a duplicated device");
    };
    assert_eq!(m.extra, [did("P")]);
    assert!(matches!(
        store
            .store_message(&send("alice", "nobody", "c0", vec![]))
            .await,
        Err(StoreError::UnknownUser)
    ));

    for i in 1..=5 {
        let s = store
            .store_message(&send(
                "alice",
                "carol",
                &format!("c{i}"),
                vec![
                    envelope("P", &format!("p{i}")),
                    envelope("L", &format!("l{i}")),
                ],
            ))
            .await
            .unwrap();
        assert!(!s.duplicate);
        assert!(s.deliveries.contains(&(did("P"), i)));
        assert!(s.deliveries.contains(&(did("L"), i)));
    }
    // A retry returns the original; reusing the id for other content is refused.
    let retry = store
        .store_message(&send(
            "alice",
            "carol",
            "c3",
            vec![envelope("P", "p3"), envelope("L", "l3")],
        ))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.message_id, "m-c3");
    let mut other = send(
        "alice",
        "carol",
        "c3",
        vec![envelope("P", "zz"), envelope("L", "zz")],
    );
    other.request_hash = b"different".to_vec();
    assert!(matches!(
        store.store_message(&other).await,
        Err(StoreError::IdempotencyConflict)
    ));

    let page = store.inbox(&uid("carol"), &did("P"), 0, 2).await.unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(page[0].body, "p1");
    assert_eq!(page[0].sender_id, uid("alice"));
    let page = store.inbox(&uid("carol"), &did("P"), 2, 10).await.unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(
        store
            .ack(&uid("carol"), &did("P"), 3, now(), &delivered("P"))
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .ack(&uid("carol"), &did("P"), 3, now(), &delivered("P"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .inbox(&uid("carol"), &did("P"), 0, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    // The other device's queue is independent.
    assert_eq!(
        store
            .inbox(&uid("carol"), &did("L"), 0, 10)
            .await
            .unwrap()
            .len(),
        5
    );

    drop(store);
    let reopened = db.open().await;
    let left = reopened
        .inbox(&uid("carol"), &did("P"), 0, 10)
        .await
        .unwrap();
    assert_eq!(left.iter().map(|m| m.seq).collect::<Vec<_>>(), [4, 5]);
    let next = reopened
        .store_message(&send(
            "alice",
            "carol",
            "c6",
            vec![envelope("P", "p6"), envelope("L", "l6")],
        ))
        .await
        .unwrap();
    assert!(next.deliveries.contains(&(did("P"), 6)));

    // A device the sender does not trust gets no copy, when the sender says so.
    let mut skipping = send("alice", "carol", "c7", vec![envelope("P", "p7")]);
    assert!(matches!(
        reopened.store_message(&skipping).await,
        Err(StoreError::DeviceListMismatch(_))
    ));
    skipping.untrusted_devices = vec![did("L")];
    let stored = reopened.store_message(&skipping).await.unwrap();
    assert_eq!(stored.deliveries, [(did("P"), 7)]);
}

async fn concurrent_sends_get_distinct_sequence_numbers(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    add_user(&store, "dave", "X").await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .store_message(&send(
                    "alice",
                    "dave",
                    &format!("c{i}"),
                    vec![envelope("X", "b")],
                ))
                .await
                .unwrap()
                .deliveries[0]
                .1
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=40).collect::<Vec<u64>>());
}

/// Two senders list a two-device recipient's envelopes in opposite orders, many
/// times at once: every send is stored (no deadlock between their row locks) and
/// each device's sequence numbers stay gapless.
async fn concurrent_sends_in_opposite_device_orders_all_succeed(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    add_user(&store, "bob", "D1").await;
    add_user(&store, "carol", "C1").await;
    store
        .create_link_token(&uid("carol"), b"link-c", now() + Duration::minutes(5))
        .await
        .unwrap();
    store
        .add_device(
            &uid("carol"),
            &keys("carol", "C2"),
            b"link-c",
            "proof",
            now(),
        )
        .await
        .unwrap();
    assert!(
        store
            .certify_device(&uid("carol"), &did("C2"), "cert", "sealed")
            .await
            .unwrap()
    );
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        let (from, order) = if i % 2 == 0 {
            ("alice", ["C1", "C2"])
        } else {
            ("bob", ["C2", "C1"])
        };
        tasks.push(tokio::spawn(async move {
            let envelopes = order.iter().map(|d| envelope(d, "b")).collect();
            store
                .store_message(&send(from, "carol", &format!("o{i}"), envelopes))
                .await
        }));
    }
    let mut per_device: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for t in tasks {
        let stored = t.await.unwrap().expect("every send is stored");
        for (device, seq) in stored.deliveries {
            per_device.entry(device.to_string()).or_default().push(seq);
        }
    }
    for (device, mut seqs) in per_device {
        seqs.sort();
        assert_eq!(seqs, (1..=40).collect::<Vec<u64>>(), "{device}");
    }
}

async fn concurrent_retries_store_one_message(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    add_user(&store, "erin", "E").await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let store = store.clone();
        // Ten copies each of three sends, interleaved, all at once; the third reuses an id with other content.
        let (client_id, body, hash) = match i % 3 {
            0 => ("same", "b", b"h-same".to_vec()),
            1 => ("other", "c", b"h-other".to_vec()),
            _ => ("same", "x", b"h-conflict".to_vec()),
        };
        tasks.push(tokio::spawn(async move {
            let mut m = send("alice", "erin", client_id, vec![envelope("E", body)]);
            m.message_id = format!("m-{i}");
            m.request_hash = hash;
            store.store_message(&m).await
        }));
    }
    let mut stored = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(s) => stored.push(s),
            Err(StoreError::IdempotencyConflict) => conflicts += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let originals: Vec<_> = stored.iter().filter(|s| !s.duplicate).collect();
    // "same" was stored once by its first arrival: either the b or the x content wins, never both.
    assert_eq!(originals.len(), 2, "one original per client message id");
    assert_eq!(stored.len() + conflicts, 30);
    assert_eq!(
        conflicts, 10,
        "the losing content of 'same' is refused every time"
    );
    let queue = store.inbox(&uid("erin"), &did("E"), 0, 100).await.unwrap();
    assert_eq!(queue.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
    for s in &stored {
        let original = originals
            .iter()
            .find(|o| o.deliveries == s.deliveries)
            .expect("duplicates answer with the original");
        assert_eq!(original.message_id, s.message_id);
    }
}

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

/// The runbook's diagnosis queries run verbatim.
async fn runbook_queries_run_verbatim(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    add_user(&store, "bob", "B").await;
    let sent = store
        .store_message(&send("alice", "bob", "c1", vec![envelope("B", "x")]))
        .await
        .unwrap();
    let q1 = "SELECT user_id, key_id, status, last_rotated FROM user_keys WHERE user_id='alice';";
    let q2 = format!(
        "SELECT message_id, sender_id, recipient_id, encryption_algorithm, created_at FROM messages WHERE message_id='{}';",
        sent.message_id
    );
    match &db {
        Db::Postgres(pg) => {
            for q in [q1.to_string(), q2] {
                let text = pg.psql(&q).unwrap();
                assert!(text.contains("alice"), "{q} printed {text}");
            }
        }
        Db::Sqlite(_) => {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&db.url()).await.unwrap();
            for q in [q1.to_string(), q2] {
                let rows = sqlx::query(sqlx::AssertSqlSafe(q))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                assert!(!rows.is_empty());
            }
        }
    }
}

/// The accepted receipt is stored with the send, a delivered one with each ack,
/// and a reissue replaces the signature but keeps the id and expiry.
async fn receipts_follow_sends_and_acks(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    add_user(&store, "carol", "P").await;
    let m = send("alice", "carol", "c1", vec![envelope("P", "cGF5bG9hZA==")]);
    store.store_message(&m).await.unwrap();
    // A retry stores nothing new.
    store.store_message(&m).await.unwrap();
    assert_eq!(
        store.receipts("m-c1").await.unwrap(),
        vec![m.receipt.clone()]
    );

    let seen = std::sync::Mutex::new(Vec::new());
    let build = |acked: &AckedMessage| {
        seen.lock().unwrap().push((
            acked.message_id.clone(),
            acked.body.clone(),
            acked.sender_device_id.clone(),
        ));
        receipt(
            &acked.message_id,
            acked.sender_id.as_str(),
            "carol",
            Some("P"),
        )
    };
    assert_eq!(
        store
            .ack(&uid("carol"), &did("P"), 1, now(), &build)
            .await
            .unwrap(),
        1
    );
    // The builder saw the ciphertext before it was dropped.
    assert_eq!(
        *seen.lock().unwrap(),
        [("m-c1".to_owned(), "cGF5bG9hZA==".to_owned(), did("D1"))]
    );
    let all = store.receipts("m-c1").await.unwrap();
    assert_eq!(
        all.iter()
            .map(|r| (r.receipt_type, r.device_id.clone()))
            .collect::<Vec<_>>(),
        [
            (ReceiptType::Accepted, None),
            (ReceiptType::Delivered, Some(did("P")))
        ]
    );

    let later = now() + Duration::minutes(1);
    assert!(
        store
            .update_receipt(&m.receipt.receipt_id, "k2", "{\"resigned\":1}", later)
            .await
            .unwrap()
    );
    assert!(
        !store
            .update_receipt("nope", "k2", "{}", later)
            .await
            .unwrap()
    );
    let reissued = &store.receipts("m-c1").await.unwrap()[0];
    assert_eq!(
        (
            reissued.kid.as_str(),
            reissued.jws.as_str(),
            reissued.issued_at
        ),
        ("k2", "{\"resigned\":1}", later)
    );
    assert_eq!(reissued.expires_at, m.receipt.expires_at);
    assert!(store.receipts("unknown").await.unwrap().is_empty());

    if let Db::Postgres(pg) = &db {
        // The runbook's emergency extension, verbatim, then read back.
        let q = format!(
            "UPDATE receipts SET expires_at=NOW() + INTERVAL '7 days' WHERE receipt_id='{}';",
            m.receipt.receipt_id
        );
        assert_eq!(pg.psql(&q).unwrap().trim(), "UPDATE 1");
        let extended = store.receipts("m-c1").await.unwrap()[0].expires_at;
        let days = (extended - now()).whole_hours();
        assert!((167..=168).contains(&days), "{days} h");
    }
}

/// `(kid, status, published at t)` of each key.
fn lifecycle(states: &[ServerKeyState], t: OffsetDateTime) -> Vec<(&str, &str, bool)> {
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

fn key_package(n: u8, last_resort: bool) -> NewKeyPackage {
    NewKeyPackage {
        key_package_ref: format!("ref-{n}"),
        bytes: vec![n; 8],
        last_resort,
        binding: Some(format!("binding-{n}")),
    }
}

async fn key_packages_are_claimed_once_then_last_resort(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    let counts = store
        .upload_key_packages(
            &uid("alice"),
            &did("D1"),
            &[
                key_package(1, false),
                key_package(2, false),
                key_package(9, true),
            ],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(
        counts,
        KeyPackageCounts {
            available: 2,
            last_resort: true
        }
    );
    assert!(matches!(
        store
            .upload_key_packages(&uid("alice"), &did("NOPE"), &[key_package(3, false)], now())
            .await,
        Err(StoreError::UnknownDevice)
    ));
    // Concurrent claims: each ordinary KeyPackage once, then the last-resort one.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .claim_key_packages(&uid("alice"), &[], now())
                .await
                .unwrap()
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        let got = t.await.unwrap();
        assert_eq!(got.len(), 1);
        let package = got[0].1.clone().unwrap();
        assert_eq!(
            package.binding,
            Some(format!("binding-{}", package.bytes[0]))
        );
        claimed.push(package.bytes[0]);
    }
    claimed.sort();
    assert_eq!(claimed, [1, 2, 9, 9, 9, 9]);
    assert_eq!(
        store
            .key_package_counts(&uid("alice"), &did("D1"))
            .await
            .unwrap(),
        KeyPackageCounts {
            available: 0,
            last_resort: true
        }
    );
    // A new last-resort package replaces the old one.
    store
        .upload_key_packages(&uid("alice"), &did("D1"), &[key_package(10, true)], now())
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_key_packages(&uid("alice"), &[], now())
            .await
            .unwrap()[0]
            .1
            .clone()
            .map(|p| p.bytes),
        Some(vec![10; 8])
    );
    assert!(matches!(
        store.claim_key_packages(&uid("nobody"), &[], now()).await,
        Err(StoreError::UnknownUser)
    ));
    add_user(&store, "bob", "B1").await;
    assert_eq!(
        store
            .claim_key_packages(&uid("bob"), &[], now())
            .await
            .unwrap(),
        vec![(did("B1"), None)]
    );
    // Packages from before bindings do not count, and bound ones replace them.
    let unbound = NewKeyPackage {
        binding: None,
        ..key_package(20, false)
    };
    let counts = store
        .upload_key_packages(&uid("bob"), &did("B1"), &[unbound], now())
        .await
        .unwrap();
    assert_eq!(counts.available, 0);
    store
        .upload_key_packages(&uid("bob"), &did("B1"), &[key_package(21, false)], now())
        .await
        .unwrap();
    let claimed = store
        .claim_key_packages(&uid("bob"), &[], now())
        .await
        .unwrap();
    assert_eq!(claimed[0].1.as_ref().map(|p| p.bytes[0]), Some(21));
    let again = store
        .claim_key_packages(&uid("bob"), &[], now())
        .await
        .unwrap();
    assert_eq!(
        again,
        vec![(did("B1"), None)],
        "the unbound package was replaced"
    );
}

fn commit(group: &str, id: &str, from: u64, added: &[&str]) -> NewCommit {
    NewCommit {
        group_id: group.into(),
        commit_id: id.into(),
        sender_id: "alice/D1".into(),
        from_epoch: from,
        public_state: format!("state-{id}").into_bytes(),
        group_info: format!("info-{id}").into_bytes(),
        commit: format!("commit-{id}").into_bytes(),
        welcome: (!added.is_empty()).then(|| {
            (
                added.iter().map(|m| m.to_string()).collect(),
                format!("welcome-{id}").into_bytes(),
            )
        }),
        added: added.iter().map(|m| m.to_string()).collect(),
        removed: vec![],
        now: now(),
    }
}

/// `(group, epoch, lowest member epoch, members behind)` as `/metrics` reads them.
async fn gauges(store: &Arc<dyn Store>, limit: u32) -> Vec<(String, u64, u64, u64)> {
    store
        .group_epoch_health(limit)
        .await
        .unwrap()
        .into_iter()
        .map(|g| {
            (
                g.group_id,
                g.current_epoch,
                g.min_member_epoch,
                g.members_behind,
            )
        })
        .collect()
}

/// The epoch gauges are kept current by every commit, acknowledgement, removal
/// and rollback (not computed per scrape), most lagging group first.
async fn mls_gauges_follow_commits_acks_and_rollbacks(db: Db) {
    let store = db.open().await;
    for id in ["a", "b"] {
        store
            .create_group(&NewGroup {
                group_id: id.into(),
                creator: "alice/D1".into(),
                public_state: b"s".to_vec(),
                group_info: b"i".to_vec(),
                now: now(),
            })
            .await
            .unwrap();
    }
    let row = |g: &str, e, m, b| (g.to_owned(), e, m, b);
    assert_eq!(
        gauges(&store, 10).await,
        [row("a", 0, 0, 0), row("b", 0, 0, 0)]
    );
    store
        .sequence_commit(&commit("a", "a1", 0, &["bob/B1"]))
        .await
        .unwrap();
    for (i, from) in (1..4).enumerate() {
        store
            .sequence_commit(&commit("a", &format!("a{}", i + 2), from, &[]))
            .await
            .unwrap();
    }
    store
        .sequence_commit(&commit("b", "b1", 0, &["carol/C1"]))
        .await
        .unwrap();
    store
        .acknowledge_epoch("a", "alice/D1", 4, now())
        .await
        .unwrap();
    // bob joined at epoch 1 and acknowledged nothing: he counts as at epoch 0.
    assert_eq!(
        gauges(&store, 10).await,
        [row("a", 4, 0, 1), row("b", 1, 0, 0)]
    );
    assert_eq!(gauges(&store, 1).await, [row("a", 4, 0, 1)]);
    store
        .acknowledge_epoch("a", "bob/B1", 3, now())
        .await
        .unwrap();
    assert_eq!(gauges(&store, 10).await[0], row("a", 4, 3, 0));
    // Removing the laggard lifts the group's lowest epoch.
    store
        .acknowledge_epoch("a", "bob/B1", 1, now())
        .await
        .unwrap();
    let mut removal = commit("a", "a5", 4, &[]);
    removal.removed = vec!["bob/B1".into()];
    store.sequence_commit(&removal).await.unwrap();
    assert_eq!(gauges(&store, 10).await[..1], [row("a", 5, 4, 0)]);
    store
        .rollback_group(&atlas_store::Rollback {
            group_id: "a".into(),
            target_epoch: 2,
            from_epoch: 5,
            members_at_target: vec!["alice/D1".into()],
            rejoin: vec![],
            now: now(),
        })
        .await
        .unwrap();
    assert_eq!(
        gauges(&store, 10).await,
        [row("b", 1, 0, 0), row("a", 2, 2, 0)]
    );
}

async fn group_commits_are_sequenced_first_wins(db: Db) {
    let store = db.open().await;
    let group = NewGroup {
        group_id: "team".into(),
        creator: "alice/D1".into(),
        public_state: b"state-0".to_vec(),
        group_info: b"info-0".to_vec(),
        now: now(),
    };
    store.create_group(&group).await.unwrap();
    assert!(matches!(
        store.create_group(&group).await,
        Err(StoreError::GroupExists)
    ));
    assert_eq!(
        store
            .sequence_commit(&commit("team", "c1", 0, &["bob/B1", "carol/C1"]))
            .await
            .unwrap(),
        CommitOutcome::Accepted { seq: 1 }
    );
    // A second commit from epoch 0 loses and learns the winner.
    match store
        .sequence_commit(&commit("team", "late", 0, &[]))
        .await
        .unwrap()
    {
        CommitOutcome::Lost {
            current_epoch: 1,
            winner: Some(w),
        } => assert_eq!(w.body, b"commit-c1"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.sequence_commit(&commit("nope", "x", 0, &[])).await,
        Err(StoreError::UnknownGroup)
    ));
    // Many concurrent commits from the same epoch: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .sequence_commit(&commit("team", &format!("race-{i}"), 1, &[]))
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), CommitOutcome::Accepted { .. }) {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    let g = store.group("team").await.unwrap().unwrap();
    assert_eq!(g.current_epoch, 2);
    assert!(g.public_state.starts_with(b"state-race-"));
    assert_eq!(store.group_info("team", None).await.unwrap().unwrap().0, 2);
    assert_eq!(
        store.group_info("team", Some(1)).await.unwrap().unwrap().1,
        b"info-c1"
    );

    // The Welcome is stored once and listed for each added member.
    for member in ["bob/B1", "carol/C1"] {
        let welcomes = store.welcomes(member).await.unwrap();
        assert_eq!(welcomes.len(), 1);
        assert_eq!(
            (welcomes[0].body.as_slice(), welcomes[0].epoch),
            (&b"welcome-c1"[..], 1)
        );
    }
    assert!(store.welcomes("dave/D1").await.unwrap().is_empty());

    // Application messages: members only; the log keeps one order.
    let seq = store
        .append_group_message("team", 2, "bob/B1", b"hi", now())
        .await
        .unwrap();
    assert!(matches!(
        store
            .append_group_message("team", 2, "mallory/M", b"x", now())
            .await,
        Err(StoreError::NotAGroupMember)
    ));
    assert!(matches!(
        store
            .append_group_message("nope", 0, "bob/B1", b"x", now())
            .await,
        Err(StoreError::UnknownGroup)
    ));
    let log = store.group_messages("team", 0, None, 100).await.unwrap();
    let kinds: Vec<_> = log.iter().map(|m| (m.kind.as_str(), m.epoch)).collect();
    assert_eq!(kinds, [("commit", 1), ("commit", 2), ("application", 2)]);
    assert_eq!(log.last().unwrap().seq, seq);
    assert_eq!(
        store
            .group_messages("team", seq, None, 100)
            .await
            .unwrap()
            .len(),
        0
    );

    // Acknowledgements: new members start one epoch behind; a commit stays
    // pending until every active member has acknowledged its epoch.
    let members = store.group_members("team").await.unwrap();
    let epochs: Vec<_> = members
        .iter()
        .map(|m| (m.member_id.as_str(), m.epoch))
        .collect();
    assert_eq!(epochs, [("alice/D1", 0), ("bob/B1", 0), ("carol/C1", 0)]);
    for member in ["alice/D1", "bob/B1"] {
        store
            .acknowledge_epoch("team", member, 2, now())
            .await
            .unwrap();
    }
    store
        .acknowledge_epoch("team", "carol/C1", 1, now())
        .await
        .unwrap();
    assert!(matches!(
        store.acknowledge_epoch("team", "mallory/M", 1, now()).await,
        Err(StoreError::NotAGroupMember)
    ));
    assert!(matches!(
        store.acknowledge_epoch("nope", "bob/B1", 1, now()).await,
        Err(StoreError::UnknownGroup)
    ));
    let members = store.group_members("team").await.unwrap();
    assert_eq!(members[2].epoch, 1);
    assert!(
        members[0]
            .last_commit
            .as_deref()
            .unwrap()
            .starts_with("race-")
    );
    // Acknowledging beyond the current epoch is capped.
    store
        .acknowledge_epoch("team", "carol/C1", 99, now())
        .await
        .unwrap();
    assert_eq!(store.group_members("team").await.unwrap()[2].epoch, 2);

    // The runbook's three diagnosis queries, verbatim.
    let queries = [
        "SELECT group_id, member_id, epoch, last_commit FROM mls_group_members WHERE member_id='carol/C1' AND group_id='team';",
        "SELECT group_id, current_epoch, last_epoch_change FROM mls_groups WHERE group_id='team';",
        "SELECT commit_id, sender_id, epoch, status FROM mls_commits WHERE group_id='team' AND status='pending';",
    ];
    match &db {
        Db::Postgres(pg) => {
            let out: Vec<String> = queries.iter().map(|q| pg.psql(q).unwrap()).collect();
            assert!(out[0].contains("carol/C1"), "{}", out[0]);
            assert!(out[1].contains("team"), "{}", out[1]);
            assert!(
                out[2].contains("(0 rows)"),
                "every member acknowledged: {}",
                out[2]
            );
        }
        Db::Sqlite(_) => {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&db.url()).await.unwrap();
            for q in &queries[..2] {
                let rows = sqlx::query(sqlx::AssertSqlSafe(*q))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                assert_eq!(rows.len(), 1, "{q}");
            }
            let pending = sqlx::query(sqlx::AssertSqlSafe(queries[2]))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            assert!(pending.is_empty());
        }
    }
}

fn report(
    message_id: &str,
    group: Option<&str>,
    code: Option<&str>,
    latency_ms: Option<u64>,
) -> NewReport {
    NewReport {
        message_id: message_id.into(),
        group_id: group.map(str::to_owned),
        success: code.is_none(),
        code: code.map(str::to_owned),
        latency_ms,
    }
}

/// Caps no test of first outcomes reaches.
fn uncapped(now: time::OffsetDateTime) -> atlas_store::FailureCaps {
    atlas_store::FailureCaps {
        since: now - Duration::hours(1),
        per_reporter: 1000,
        per_sender: 1000,
    }
}

/// `(reported, succeeded, failed, recovered)`.
fn tally(c: &atlas_store::OutcomeCounts) -> (u64, u64, u64, u64) {
    (c.reported, c.succeeded, c.failed, c.recovered)
}

async fn decryption_reports_count_first_outcomes_and_recoveries(db: Db) {
    use ReportChange::*;
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    add_user(&store, "bob", "D1").await;
    for id in ["c1", "c2", "c3"] {
        store
            .store_message(&send("alice", "bob", id, vec![envelope("D1", "x")]))
            .await
            .unwrap();
    }
    let later = now() + Duration::seconds(5);
    let (bob, d1) = (uid("bob"), did("D1"));
    let changes = store
        .record_reports(
            &bob,
            &d1,
            &[
                report("m-c1", None, None, Some(10)),
                report("m-c2", None, Some("KeyNotFound"), None),
                report("m-c3", None, None, Some(u64::MAX)),
                report("m-nope", None, None, Some(1)),
            ],
            uncapped(later),
            later,
        )
        .await
        .unwrap();
    assert_eq!(changes, vec![Succeeded, Failed, Succeeded, UnknownMessage]);
    // The sender did not receive its own message: its report does not count.
    assert_eq!(
        store
            .record_reports(
                &uid("alice"),
                &d1,
                &[report("m-c1", None, Some("KeyNotFound"), None)],
                uncapped(later),
                later
            )
            .await
            .unwrap(),
        vec![UnknownMessage]
    );
    // Repeats change nothing that counts; a failure after a success is ignored.
    let repeats = [
        report("m-c2", None, Some("RatchetDesync"), None),
        report("m-c1", None, Some("DuplicateMessage"), None),
        report("m-c1", None, None, Some(10)),
    ];
    assert_eq!(
        store
            .record_reports(&bob, &d1, &repeats, uncapped(later), later)
            .await
            .unwrap(),
        vec![Unchanged, Unchanged, Unchanged]
    );
    let counts = store
        .outcome_counts(later - Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(tally(&counts), (3, 2, 1, 0));
    assert_eq!(
        counts.failures_by_code,
        vec![("RatchetDesync".to_owned(), 1)]
    );
    // An absurd latency was capped by the message's age (about 5 s).
    assert!(
        (2_500..=2_600).contains(&counts.avg_latency_ms),
        "{}",
        counts.avg_latency_ms
    );

    assert_eq!(
        store
            .record_reports(
                &bob,
                &d1,
                &[report("m-c2", None, None, Some(30))],
                uncapped(later),
                later
            )
            .await
            .unwrap(),
        vec![Recovered]
    );
    let counts = store
        .outcome_counts(later - Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(tally(&counts), (3, 2, 0, 1));
    let rows = store.message_reports("", "m-c2").await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "recovered");
    assert_eq!(rows[0].first_code.as_deref(), Some("KeyNotFound"));
    assert_eq!(rows[0].sender_id, "alice");
    assert_eq!(
        store
            .user_reports(&bob, later - Duration::hours(1), 10)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        store
            .outcome_counts(later + Duration::seconds(1))
            .await
            .unwrap()
            .reported,
        0
    );

    // Group messages: only members other than the sender may report, only application messages.
    let group = NewGroup {
        group_id: "team".into(),
        creator: "alice/D1".into(),
        public_state: b"s".to_vec(),
        group_info: b"i".to_vec(),
        now: now(),
    };
    store.create_group(&group).await.unwrap();
    let seq = store
        .append_group_message("team", 0, "alice/D1", b"ct", now())
        .await
        .unwrap();
    let group_report = [report(
        &seq.to_string(),
        Some("team"),
        Some("EpochTooOld"),
        None,
    )];
    assert_eq!(
        store
            .record_reports(&bob, &d1, &group_report, uncapped(later), later)
            .await
            .unwrap(),
        vec![UnknownMessage]
    );
    assert_eq!(
        store
            .record_reports(&uid("alice"), &d1, &group_report, uncapped(later), later)
            .await
            .unwrap(),
        vec![UnknownMessage]
    );
    store
        .sequence_commit(&commit("team", "c1", 0, &["bob/D1"]))
        .await
        .unwrap();
    assert_eq!(
        store
            .record_reports(&bob, &d1, &group_report, uncapped(later), later)
            .await
            .unwrap(),
        vec![Failed]
    );
    let rows = store
        .message_reports("team", &seq.to_string())
        .await
        .unwrap();
    assert_eq!(
        (
            rows[0].sender_id.as_str(),
            rows[0].sender_device_id.as_str()
        ),
        ("alice", "D1")
    );
    let commit_seq = [report(&(seq + 1).to_string(), Some("team"), None, None)];
    assert_eq!(
        store
            .record_reports(&bob, &d1, &commit_seq, uncapped(later), later)
            .await
            .unwrap(),
        vec![UnknownMessage]
    );
}

/// Each reporting user and each sending user count a few failures per window;
/// the rest are kept but left out of the figures (see `atlas_proto::e2ee`).
async fn failures_count_up_to_the_caps(db: Db) {
    use ReportChange::*;
    let store = db.open().await;
    for user in ["mallory", "bob", "carol", "dave"] {
        add_user(&store, user, "D1").await;
    }
    for (from, to, id) in [
        ("mallory", "bob", "j1"),
        ("mallory", "bob", "j2"),
        ("mallory", "bob", "j3"),
        ("mallory", "carol", "j4"),
        ("bob", "carol", "j5"),
        ("mallory", "dave", "j7"),
    ] {
        store
            .store_message(&send(from, to, id, vec![envelope("D1", "x")]))
            .await
            .unwrap();
    }
    let later = now() + Duration::seconds(5);
    let caps = atlas_store::FailureCaps {
        since: later - Duration::hours(1),
        per_reporter: 2,
        per_sender: 3,
    };
    let fail = |id: &str| report(id, None, Some("KeyNotFound"), None);
    let changes = store
        .record_reports(
            &uid("bob"),
            &did("D1"),
            &[fail("m-j1"), fail("m-j2"), fail("m-j3")],
            caps,
            later,
        )
        .await
        .unwrap();
    assert_eq!(
        changes,
        vec![Failed, Failed, FailedUncounted],
        "two per reporter"
    );
    let changes = store
        .record_reports(
            &uid("carol"),
            &did("D1"),
            &[fail("m-j4"), fail("m-j5")],
            caps,
            later,
        )
        .await
        .unwrap();
    // mallory's third counted failure fills the sender cap; bob as a sender is still under it.
    assert_eq!(changes, vec![Failed, Failed]);
    let changes = store
        .record_reports(&uid("dave"), &did("D1"), &[fail("m-j7")], caps, later)
        .await
        .unwrap();
    assert_eq!(changes, vec![FailedUncounted], "three per sender");
    let counts = store
        .outcome_counts(later - Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(
        (counts.failed, counts.uncounted, counts.reported),
        (4, 2, 4)
    );
    assert_eq!((counts.failing_reporters, counts.failing_senders), (2, 2));
    // Uncounted reports are kept for diagnosis.
    assert_eq!(store.message_reports("", "m-j3").await.unwrap().len(), 1);
    // A new window starts the caps afresh.
    store
        .store_message(&send("mallory", "bob", "j6", vec![envelope("D1", "x")]))
        .await
        .unwrap();
    let next = atlas_store::FailureCaps {
        since: later + Duration::seconds(1),
        ..caps
    };
    let changes = store
        .record_reports(
            &uid("bob"),
            &did("D1"),
            &[fail("m-j6")],
            next,
            later + Duration::seconds(2),
        )
        .await
        .unwrap();
    assert_eq!(changes, vec![Failed]);
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
            .all(|r| r.status == "active" && r.user_id == "bob")
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
                ("one_time".into(), "k1".into()),
                ("fallback".into(), "k2".into()),
                ("ed25519".into(), "ed25519:D1".into()),
                ("fallback".into(), "f1".into()),
            ],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(revoked, 2);
    let status = |id: &str, rows: &[atlas_store::UserKeyRecord]| {
        rows.iter().find(|r| r.key_id == id).unwrap().status.clone()
    };
    let rows = store
        .device_public_keys(&uid("bob"), &did("D1"))
        .await
        .unwrap();
    assert_eq!(status("k1", &rows), "revoked");
    assert_eq!(status("k2", &rows), "active");
    assert_eq!(status("f1", &rows), "revoked");
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

/// Resend requests (one pending per copy, completed once by its sender) and
/// session resets (seen once by each side, naming the messages in flight).
async fn resends_and_session_resets(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    add_user(&store, "bob", "D1").await;
    let mut on_session = envelope("D1", "x");
    on_session.session_id = Some("s1".into());
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
        request_id: id.into(),
        message_id: "m-r1".into(),
        recipient_id: "bob".into(),
        recipient_device_id: "D1".into(),
        sender_id: "alice".into(),
        sender_device_id: "D1".into(),
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

/// A user keeps the newest ten backups; storing more deletes the oldest.
async fn backups_keep_the_newest_ten(db: Db) {
    let store = db.open().await;
    let t = now();
    for i in 0..12 {
        let backup = atlas_store::NewBackup {
            backup_id: format!("backup-zoe-{i}"),
            user_id: "zoe".into(),
            device_id: "Z".into(),
            kdf: "{}".into(),
            download_verifier: "v".into(),
            blob: "sealed".into(),
            created_at: t + Duration::seconds(i),
        };
        assert_eq!(
            store.store_backup(&backup).await.unwrap().version,
            i as u64 + 1
        );
    }
    let kept = store
        .backups("zoe", t + Duration::days(1), 100)
        .await
        .unwrap();
    let versions: Vec<u64> = kept.iter().map(|b| b.version).collect();
    assert_eq!(versions, (3..=12).rev().collect::<Vec<u64>>());
    assert!(store.backup("backup-zoe-0").await.unwrap().is_none());
    let (meta, verifier, blob) = store.backup("backup-zoe-11").await.unwrap().unwrap();
    assert_eq!(
        (meta.version, verifier.as_str(), blob.as_str()),
        (12, "v", "sealed")
    );
    let again = atlas_store::NewBackup {
        backup_id: "backup-zoe-11".into(),
        user_id: "zoe".into(),
        device_id: "Z".into(),
        kdf: "{}".into(),
        download_verifier: "v".into(),
        blob: "other".into(),
        created_at: t,
    };
    assert!(matches!(
        store.store_backup(&again).await,
        Err(StoreError::BackupExists)
    ));
}

/// A device's queue of undelivered messages is capped; acknowledging frees room.
async fn queues_are_capped_until_acknowledged(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    add_user(&store, "dan", "Q").await;
    let capped = |i: u32| {
        let mut m = send("alice", "dan", &format!("q{i}"), vec![envelope("Q", "x")]);
        m.queue_limit = 3;
        m
    };
    for i in 0..3 {
        store.store_message(&capped(i)).await.unwrap();
    }
    assert!(matches!(
        store.store_message(&capped(3)).await,
        Err(StoreError::QueueFull(d)) if d == did("Q")
    ));
    store
        .ack(&uid("dan"), &did("Q"), 2, now(), &delivered("Q"))
        .await
        .unwrap();
    // Two acknowledged: room for two more.
    let stored = store.store_message(&capped(4)).await.unwrap();
    assert_eq!(
        stored.deliveries,
        [(did("Q"), 4)],
        "nothing of the refused send was stored"
    );
    store.store_message(&capped(5)).await.unwrap();
    assert!(matches!(
        store.store_message(&capped(6)).await,
        Err(StoreError::QueueFull(_))
    ));
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Db::sqlite().await).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Db::postgres().await).await } )*
        }
    };
}

on_both_backends!(
    users_and_devices,
    one_time_keys_are_claimed_once,
    messages_are_sequenced_idempotent_and_durable,
    concurrent_sends_get_distinct_sequence_numbers,
    concurrent_retries_store_one_message,
    concurrent_sends_in_opposite_device_orders_all_succeed,
    tokens_keys_and_jtis,
    operator_tokens_are_hashed_and_revocable,
    runbook_queries_run_verbatim,
    receipts_follow_sends_and_acks,
    signing_keys_rotate_with_overlap_and_revoke,
    key_packages_are_claimed_once_then_last_resort,
    group_commits_are_sequenced_first_wins,
    mls_gauges_follow_commits_acks_and_rollbacks,
    decryption_reports_count_first_outcomes_and_recoveries,
    failures_count_up_to_the_caps,
    backups_keep_the_newest_ten,
    key_rows_revocation_and_checks,
    resends_and_session_resets,
    queues_are_capped_until_acknowledged,
);
