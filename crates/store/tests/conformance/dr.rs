//! Disaster-recovery records: the newest backup, and the newest verified one.
use super::*;

async fn dr_records(db: Db) {
    let store = db.open().await;
    assert_eq!(
        store.dr_summary().await.unwrap(),
        atlas_store::DrSummary::default()
    );
    store
        .record_backup("s3://b/p", "monday", 1_000, 10, 500)
        .await
        .unwrap();
    store
        .record_backup("s3://b/p", "tuesday", 2_000, 12, 600)
        .await
        .unwrap();
    let summary = store.dr_summary().await.unwrap();
    assert_eq!(
        (
            summary.backups,
            summary.last_backup_ms,
            summary.last_verified_backup_ms
        ),
        (2, Some(2_000), None)
    );
    store
        .record_verification("s3://b/p", "monday", 1_000, 3_000, true)
        .await
        .unwrap();
    store
        .record_verification("s3://b/p", "tuesday", 2_000, 3_000, false)
        .await
        .unwrap();
    assert_eq!(
        store.dr_summary().await.unwrap().last_verified_backup_ms,
        Some(1_000),
        "the newest backup that verified, not the newest verification"
    );
    // A backup this database did not take (another location) can be verified and counted.
    store
        .record_verification("/mnt/backups", "imported", 2_500, 3_100, true)
        .await
        .unwrap();
    let summary = store.dr_summary().await.unwrap();
    assert_eq!(
        (summary.backups, summary.last_verified_backup_ms),
        (3, Some(2_500))
    );
    // Taking a backup again under a name resets its verification.
    store
        .record_backup("/mnt/backups", "imported", 4_000, 1, 1)
        .await
        .unwrap();
    assert_eq!(
        store.dr_summary().await.unwrap().last_verified_backup_ms,
        Some(1_000)
    );
}

on_both_backends!(dr_records,);

/// A PostgreSQL snapshot taken by COPY while writes go on loads into a new
/// database as exactly the instant it was taken: the same rows, values with
/// tabs, newlines and backslashes intact, sequences carried on, and the
/// store opens on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_dump_loads_into_a_new_database_as_it_was() {
    let source = Db::postgres().await;
    let store = source.open().await;
    add_user(&store, "alice", "D1").await;
    add_user(&store, "bob", "D2").await;
    for i in 0..20 {
        store
            .store_message(&send(
                "alice",
                "bob",
                &format!("c{i}"),
                vec![envelope("D2", &format!("body\t{i}\n\\end"))],
            ))
            .await
            .unwrap();
    }
    let dir = atlas_store::testdb::TempDir::new("pgdump").unwrap();
    let sample = vec!["m-c3".to_owned(), "m-missing".to_owned()];
    // Writes racing the dump are either wholly in it or wholly out.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 20..60 {
                let m = send(
                    "alice",
                    "bob",
                    &format!("c{i}"),
                    vec![envelope("D2", "racing")],
                );
                store.store_message(&m).await.unwrap();
            }
        })
    };
    let facts = store.dump_to(&dir.path, &sample).await.unwrap();
    writer.await.unwrap();
    assert_eq!(facts.missing_messages, vec!["m-missing".to_owned()]);
    let messages = facts.row_counts["messages"];
    assert!((20..=60).contains(&messages), "{messages}");
    assert_eq!(
        facts.row_counts["receipts"], messages,
        "each message with its receipt"
    );

    let target = atlas_store::testdb::TempPostgres::create().await.unwrap();
    let loaded = atlas_store::pg_snapshot::load(&dir.path, &target.url, &sample)
        .await
        .unwrap();
    assert_eq!(loaded, facts);
    let restored = atlas_store::open(&target.url).await.unwrap();
    let bob_queue = restored
        .inbox(&uid("bob"), &did("D2"), 0, 100)
        .await
        .unwrap();
    assert!(
        bob_queue.iter().any(|m| m.body == "body\t3\n\\end"),
        "{bob_queue:?}"
    );
    // Sequences continue past the restored rows.
    add_user(&restored, "carol", "D3").await;
    restored
        .store_message(&send(
            "carol",
            "bob",
            "after",
            vec![envelope("D2", "after")],
        ))
        .await
        .unwrap();
}
