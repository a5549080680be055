//! The audit log: concurrent appenders get consecutive indices, every row
//! reads back exactly as it was sealed, and checkpoints are kept one per size.
use super::*;
use atlas_crypto::audit_log::{Checkpoint, SealedEntry, Tree, digest_of, seal_entry, verify_log};
use atlas_crypto::note::NoteSigner;
use atlas_proto::audit::{AuditOutcome, NewAuditEntry};
use atlas_store::{AuditFilter, StoredCheckpoint};

fn entry(action: &str, n: usize) -> NewAuditEntry {
    NewAuditEntry {
        // Nanoseconds on purpose: the store keeps milliseconds, and so does the digest.
        at: (now() + Duration::nanoseconds(123_456)).into(),
        actor: format!("op{n}"),
        actor_label: "on-call ü".into(),
        source: "10.0.0.7".into(),
        action: action.into(),
        target: format!("/admin/x/{n}"),
        outcome: AuditOutcome::Ok,
        detail: String::new(),
    }
}

async fn concurrent_appends_get_consecutive_indices_and_verify(db: Db) {
    let store = db.open().await;
    let signer = Arc::new(NoteSigner::new("atlas.test/audit", &[9; 32]).unwrap());
    let mut tasks = Vec::new();
    for n in 0..16 {
        let (store, signer) = (store.clone(), signer.clone());
        tasks.push(tokio::spawn(async move {
            let e = entry(
                if n % 2 == 0 {
                    "POST /admin/a"
                } else {
                    "keys.revoke"
                },
                n,
            );
            let digest = digest_of(&e);
            let seal = move |i: u64| seal_entry(&signer, i, &digest).to_vec();
            store.append_audit(&e, &seal).await.unwrap()
        }));
    }
    let mut indices = Vec::new();
    for t in tasks {
        indices.push(t.await.unwrap());
    }
    indices.sort_unstable();
    assert_eq!(indices, (0..16).collect::<Vec<_>>());
    assert_eq!(store.audit_size().await.unwrap(), 16);

    let rows = store.audit_entries(0, 100).await.unwrap();
    let mut tree = Tree::new();
    for (entry, _) in &rows {
        tree.push(digest_of(&entry.entry));
    }
    let checkpoint = Checkpoint {
        origin: "atlas.test/audit".into(),
        size: 16,
        root: tree.root(),
    };
    let stored = StoredCheckpoint {
        size: 16,
        note: checkpoint.sign(&signer).unwrap(),
    };
    assert!(store.add_audit_checkpoint(&stored, now()).await.unwrap());
    assert!(!store.add_audit_checkpoint(&stored, now()).await.unwrap());
    assert_eq!(
        store.latest_audit_checkpoint().await.unwrap().unwrap().0,
        stored
    );

    let sealed: Vec<SealedEntry> = rows
        .iter()
        .map(|(e, seal)| SealedEntry {
            digest: digest_of(&e.entry),
            seal: seal.clone(),
        })
        .collect();
    let notes: Vec<String> = store
        .audit_checkpoints()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.note)
        .collect();
    let report = verify_log(&sealed, &notes, &signer.verifier());
    assert!(report.ok(), "{report:?}");

    let revokes = store
        .audit_list(&AuditFilter {
            action: Some("keys.".into()),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(revokes.len(), 8);
    assert!(
        revokes.windows(2).all(|w| w[0].seq > w[1].seq),
        "newest first"
    );
    let none = store
        .audit_list(&AuditFilter {
            since: Some(now() + Duration::hours(1)),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

on_both_backends!(concurrent_appends_get_consecutive_indices_and_verify);
