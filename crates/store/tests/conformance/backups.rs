//! Key backups.
use super::*;

/// A user keeps the newest ten backups; storing more deletes the oldest.
async fn backups_keep_the_newest_ten(db: Db) {
    let store = db.open().await;
    let t = now();
    for i in 0..12 {
        let backup = atlas_store::NewBackup {
            backup_id: format!("backup-zoe-{i}").parse().unwrap(),
            user_id: "zoe".parse().unwrap(),
            device_id: "Z".parse().unwrap(),
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
        backup_id: "backup-zoe-11".parse().unwrap(),
        user_id: "zoe".parse().unwrap(),
        device_id: "Z".parse().unwrap(),
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

on_both_backends!(backups_keep_the_newest_ten,);
