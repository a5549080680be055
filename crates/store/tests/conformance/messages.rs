//! Sends, their sequence numbers and idempotency, concurrency, receipts and queue limits.
use super::*;

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

/// Many sends at once to a device with room for three: sends committed together
/// count each other, so exactly three are stored, whatever the batching.
async fn concurrent_sends_respect_the_queue_cap(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    add_user(&store, "erin", "Q").await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut m = send(
                "alice",
                "erin",
                &format!("cap{i}"),
                vec![envelope("Q", "x")],
            );
            m.queue_limit = 3;
            store.store_message(&m).await
        }));
    }
    let (mut stored, mut full) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(s) => stored.push(s.deliveries[0].1),
            Err(StoreError::QueueFull(_)) => full += 1,
            Err(e) => panic!("{e}"),
        }
    }
    stored.sort();
    assert_eq!((stored, full), (vec![1, 2, 3], 27));
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
            m.message_id = format!("m-{i}").parse().unwrap();
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
        [(
            "m-c1".parse().unwrap(),
            "cGF5bG9hZA==".to_owned(),
            did("D1")
        )]
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

on_both_backends!(
    messages_are_sequenced_idempotent_and_durable,
    concurrent_sends_get_distinct_sequence_numbers,
    concurrent_sends_respect_the_queue_cap,
    concurrent_retries_store_one_message,
    concurrent_sends_in_opposite_device_orders_all_succeed,
    receipts_follow_sends_and_acks,
    queues_are_capped_until_acknowledged,
);
