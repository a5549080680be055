//! Backups in a real S3-compatible server (moto's): stored, listed, verified
//! end to end; an altered object and an unreachable store are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use atlas_crypto::note::NoteSigner;
use atlas_dr::backup::{Source, backup};
use atlas_dr::location::Location;
use atlas_dr::s3::S3;
use atlas_dr::scratch::Scratch;
use atlas_dr::verify::{Inputs, Outcome, verify};
use atlas_testing::S3Server;

#[tokio::test]
async fn backups_round_trip_through_s3() {
    let Some(mut server) = S3Server::start().await else {
        return;
    };
    let config = server.config();
    let config: Vec<(&str, &str)> = config.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let location = S3::parse_with(&server.url("prod/atlas"), &config).unwrap();
    assert_eq!(location.describe(), "s3://atlas-backups/prod/atlas");
    assert!(location.names().await.unwrap().is_empty());

    let dir = Scratch::new().unwrap();
    let store = atlas_store::open(&format!("sqlite://{}", dir.path("atlas.db").display()))
        .await
        .unwrap();
    let signer = NoteSigner::new("atlas.test/audit", &[3; 32]).unwrap();
    let (identity, recipient) = atlas_dr::seal::generate();
    for name in ["monday", "tuesday"] {
        let source = Source {
            store: store.as_ref(),
            kek: &[2; 32],
            signer: &signer,
            audit: None,
        };
        backup(
            source,
            name,
            &recipient,
            &location,
            time::OffsetDateTime::now_utc(),
            &mut |_| {},
        )
        .await
        .unwrap();
    }
    assert_eq!(location.names().await.unwrap(), ["monday", "tuesday"]);
    assert!(
        location.create("monday").await.is_err(),
        "names are used once"
    );
    let pinned = signer.verifier().to_text();
    let inputs = || Inputs {
        identity: Some(&identity),
        pinned_signer: Some(&pinned),
        postgres_url: None,
    };
    let report = verify(&location, "monday", inputs(), None).await.unwrap();
    assert!(report.passed(), "{report:?}");
    assert_eq!(report.kek.as_deref(), Some(&[2u8; 32][..]));

    // An object replaced in the bucket.
    let manifest: serde_json::Value = {
        let path = dir.path("m.json");
        location
            .get("tuesday", "manifest.json", &path)
            .await
            .unwrap();
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let data = manifest["files"][0]["name"].as_str().unwrap();
    let junk = dir.path("junk");
    std::fs::write(&junk, b"not the snapshot").unwrap();
    location.put("tuesday", data, &junk).await.unwrap();
    let report = verify(&location, "tuesday", inputs(), None).await.unwrap();
    let fail = report
        .checks
        .iter()
        .find(|c| c.outcome == Outcome::Fail)
        .unwrap();
    assert_eq!(fail.name, "files", "{fail:?}");

    // The store goes away: an error, never a pass.
    server.kill();
    assert!(verify(&location, "monday", inputs(), None).await.is_err());
}
