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
