//! Backups of a real SQLite store to a directory: taken online, verified end
//! to end, and every kind of damage refused with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use atlas_crypto::note::NoteSigner;
use atlas_dr::backup::{Source, backup, default_name};
use atlas_dr::location::{Directory, Location, LocationError};
use atlas_dr::manifest::{MANIFEST, Manifest};
use atlas_dr::scratch::Scratch;
use atlas_dr::verify::{Inputs, Outcome, Report, verify};
use atlas_proto::{DeviceId, UserId};
use atlas_store::{NewIdentity, Store};
use std::sync::Arc;

struct World {
    _dir: Scratch,
    store: Arc<dyn Store>,
    location: Directory,
    signer: NoteSigner,
    identity: String,
    recipient: String,
}

async fn world() -> World {
    let dir = Scratch::new().unwrap();
    let url = format!("sqlite://{}", dir.path("atlas.db").display());
    let store = atlas_store::open(&url).await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    for user in ["alice", "bob"] {
        let keys = atlas_crypto::olm::OlmAccount::new()
            .device_keys(&UserId::new(user).unwrap(), &DeviceId::new("D1").unwrap());
        let identity = NewIdentity {
            identity_key: "k",
            certificate: "c",
        };
        store
            .create_user(&UserId::new(user).unwrap(), &keys, &identity, now)
            .await
            .unwrap();
    }
    let (identity, recipient) = atlas_dr::seal::generate();
    World {
        location: Directory(dir.path("backups")),
        _dir: dir,
        store,
        signer: NoteSigner::new("atlas.test/audit", &[9; 32]).unwrap(),
        identity,
        recipient,
    }
}

async fn take(w: &World, name: &str) -> Manifest {
    let source = Source {
        store: w.store.as_ref(),
        kek: &[1; 32],
        signer: &w.signer,
        audit: None,
    };
    let mut steps = Vec::new();
    let manifest = backup(
        source,
        name,
        &w.recipient,
        &w.location,
        time::OffsetDateTime::now_utc(),
        &mut |s| steps.push(s),
    )
    .await
    .unwrap();
    assert_eq!(steps.len(), 7, "{steps:?}");
    manifest
}

async fn check(w: &World, name: &str) -> Report {
    let pinned = w.signer.verifier().to_text();
    verify(
        &w.location,
        name,
        Inputs {
            identity: Some(&w.identity),
            pinned_signer: Some(&pinned),
            postgres_url: None,
        },
        None,
    )
    .await
    .unwrap()
}

fn failed(report: &Report) -> String {
    let fail = report
        .checks
        .iter()
        .find(|c| c.outcome == Outcome::Fail)
        .unwrap_or_else(|| panic!("expected a failure: {report:?}"));
    format!("{}: {}", fail.name, fail.detail)
}

#[tokio::test]
async fn a_backup_verifies_end_to_end() {
    let w = world().await;
    let manifest = take(&w, "nightly").await;
    assert_eq!(manifest.row_counts["users"], 2);
    assert_eq!(manifest.row_counts["devices"], 2);
    assert_eq!(
        manifest.schema_version,
        atlas_store::latest_schema_version()
    );
    let report = check(&w, "nightly").await;
    assert!(report.passed(), "{report:?}");
    assert_eq!(report.kek.as_deref(), Some(&[1u8; 32][..]));
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "manifest signature",
            "files",
            "archive integrity",
            "keys archive",
            "schema",
            "integrity check",
            "row counts",
            "message sample"
        ]
    );
    // The KEK is nowhere in the backup in the clear.
    for file in &manifest.files {
        let bytes = std::fs::read(w.location.0.join("nightly").join(&file.name)).unwrap();
        assert!(!bytes.windows(32).any(|x| x == [1u8; 32]), "{}", file.name);
    }
    // Without the identity the keys archive is skipped, not failed.
    let report = verify(
        &w.location,
        "nightly",
        Inputs {
            identity: None,
            pinned_signer: None,
            postgres_url: None,
        },
        None,
    )
    .await
    .unwrap();
    assert!(report.passed());
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.name == "keys archive" && c.outcome == Outcome::Skip)
    );
    // A name is used once.
    let source = Source {
        store: w.store.as_ref(),
        kek: &[1; 32],
        signer: &w.signer,
        audit: None,
    };
    let again = backup(
        source,
        "nightly",
        &w.recipient,
        &w.location,
        time::OffsetDateTime::now_utc(),
        &mut |_| {},
    )
    .await;
    assert!(matches!(
        again,
        Err(atlas_dr::backup::BackupError::Location(
            LocationError::Exists(_)
        ))
    ));
    assert!(default_name(time::OffsetDateTime::UNIX_EPOCH) == "atlas_19700101_000000");
}

#[tokio::test]
async fn damaged_backups_are_refused_with_the_reason() {
    let w = world().await;
    let manifest = take(&w, "b").await;
    let dir = w.location.0.join("b");
    let data = dir.join(&manifest.files[0].name);
    let keys = dir.join(&manifest.files[1].name);
    let original = std::fs::read(&data).unwrap();

    std::fs::write(&data, &original[..original.len() / 2]).unwrap();
    assert!(failed(&check(&w, "b").await).contains("truncated"));
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 1;
    std::fs::write(&data, &flipped).unwrap();
    assert!(failed(&check(&w, "b").await).contains("altered"));
    std::fs::write(&data, &original).unwrap();
    assert!(check(&w, "b").await.passed());

    // The wrong identity.
    let (other, _) = atlas_dr::seal::generate();
    let report = verify(
        &w.location,
        "b",
        Inputs {
            identity: Some(&other),
            pinned_signer: None,
            postgres_url: None,
        },
        None,
    )
    .await
    .unwrap();
    assert!(failed(&report).starts_with("keys archive: the keys archive does not open"));

    // An edited manifest, a missing file, a forger's signature, a newer schema.
    let manifest_path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&manifest_path).unwrap();
    std::fs::write(&manifest_path, text.replace("\"users\": 2", "\"users\": 3")).unwrap();
    assert!(failed(&check(&w, "b").await).contains("different manifest"));
    std::fs::write(&manifest_path, &text).unwrap();
    let forger = NoteSigner::new("atlas.test/audit", &[1; 32]).unwrap();
    let mut forged = manifest.clone();
    forged.signer = forger.verifier().to_text();
    let (bytes, sig) = forged.sign(&forger).unwrap();
    std::fs::write(&manifest_path, &bytes).unwrap();
    std::fs::write(dir.join("manifest.sig"), &sig).unwrap();
    assert!(failed(&check(&w, "b").await).contains("not by the pinned key"));
    let mut newer = manifest.clone();
    newer.schema_version = atlas_store::latest_schema_version() + 1;
    let (bytes, sig) = newer.sign(&w.signer).unwrap();
    std::fs::write(&manifest_path, &bytes).unwrap();
    std::fs::write(dir.join("manifest.sig"), &sig).unwrap();
    assert!(failed(&check(&w, "b").await).contains("restore it with a newer atlas"));
    let mut counted = manifest.clone();
    counted.row_counts.insert("messages".into(), 5);
    let (bytes, sig) = counted.sign(&w.signer).unwrap();
    std::fs::write(&manifest_path, &bytes).unwrap();
    std::fs::write(dir.join("manifest.sig"), &sig).unwrap();
    assert!(failed(&check(&w, "b").await).contains("messages: 0 restored, 5 in the manifest"));
    std::fs::remove_file(&keys).unwrap();
    assert!(failed(&check(&w, "b").await).contains("missing"));
    std::fs::remove_file(&manifest_path).unwrap();
    assert!(failed(&check(&w, "b").await).contains("incomplete backup"));
    assert!(failed(&check(&w, "nothing-here").await).contains("missing"));
    assert_eq!(w.location.names().await.unwrap(), ["b"]);
}
