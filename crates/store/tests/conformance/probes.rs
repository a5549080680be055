//! Recovery probes: only reserved names are erased, only when they kept to
//! probes, and then with every row about them.
use super::*;

const A: &str = "atlas-probe-t-a";
const B: &str = "atlas-probe-t-b";
const C: &str = "atlas-probe-t-c";

fn count(rows: &[(String, i64)], table: &str) -> i64 {
    rows.iter().find(|(t, _)| t == table).unwrap().1
}

async fn probes_are_erased_alone(db: Db) {
    let store = db.open().await;
    assert!(matches!(
        store.reserve_probes(&[uid("alice")], "op", now()).await,
        Err(StoreError::NotAProbe)
    ));
    store
        .reserve_probes(&[uid(A), uid(B), uid(C)], "op", now())
        .await
        .unwrap();
    assert!(store.is_reserved_probe(&uid(A)).await.unwrap());
    assert!(!store.is_reserved_probe(&uid("alice")).await.unwrap());
    for user in ["alice", A, B, C] {
        add_user(&store, user, "D1").await;
    }
    for (from, to, id) in [(A, B, "c1"), (B, A, "c2"), (C, "alice", "c3")] {
        store
            .store_message(&send(from, to, id, vec![envelope("D1", "x")]))
            .await
            .unwrap();
    }
    let before = store.row_counts().await.unwrap();

    assert!(matches!(
        store.erase_probe(&uid("alice")).await,
        Err(StoreError::NotAProbe)
    ));
    match store.erase_probe(&uid(C)).await {
        Err(StoreError::ProbeNotIsolated(why)) => assert!(why.contains("alice"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.row_counts().await.unwrap(),
        before,
        "nothing was touched"
    );

    let erased = store.erase_probe(&uid(A)).await.unwrap();
    assert_eq!(erased.devices, vec![did("D1")]);
    assert_eq!(erased.groups, 0);
    assert!(erased.rows >= 7, "{erased:?}");
    let after = store.row_counts().await.unwrap();
    for (table, gone) in [
        ("users", 1),
        ("devices", 1),
        ("messages", 2),
        ("receipts", 2),
        ("send_log", 1),
        ("recovery_probes", 1),
    ] {
        assert_eq!(
            count(&before, table) - count(&after, table),
            gone,
            "{table}"
        );
    }
    assert!(!store.is_reserved_probe(&uid(A)).await.unwrap());
    assert!(matches!(
        store.erase_probe(&uid(A)).await,
        Err(StoreError::NotAProbe)
    ));
    // B's correspondent is gone, so B is alone now.
    store.erase_probe(&uid(B)).await.unwrap();
    let left = store.row_counts().await.unwrap();
    assert_eq!(count(&left, "users"), 2, "alice and C");
    assert_eq!(count(&left, "messages"), 1, "C's message to alice");
}

/// Concurrent reservations never pass the limit, and the list is oldest first.
async fn probe_reservations_stop_at_the_limit(db: Db) {
    let store = db.open().await;
    let start = now();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let pair = [
                    uid(&format!("atlas-probe-{i}-a")),
                    uid(&format!("atlas-probe-{i}-b")),
                ];
                store.reserve_probes(&pair, "op", now()).await
            })
        })
        .collect();
    let mut taken = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => taken += 1,
            Err(StoreError::TooManyProbes(most)) => assert_eq!(most, atlas_store::MAX_PROBES),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(taken * 2, atlas_store::MAX_PROBES);
    let listed = store.reserved_probes().await.unwrap();
    assert_eq!(listed.len(), atlas_store::MAX_PROBES);
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].reserved_at <= w[1].reserved_at),
        "{listed:#?}"
    );
    assert!(
        listed
            .iter()
            .all(|p| p.reserved_at >= start && p.reserved_by == "op")
    );
}

on_both_backends!(
    probes_are_erased_alone,
    probe_reservations_stop_at_the_limit
);
