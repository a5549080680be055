//! Key backup and restore, as the runbook's `restore-user-keys --user-id
//! --date` is run: `atlas keys backup` on one machine, the device lost,
//! `atlas keys restore` into a fresh profile elsewhere, and the messages that
//! waited are read — with a wrong passphrase, a corrupted backup and a date
//! before any backup refused without touching local state.

use atlas_store::testdb::TempDir;
use atlas_testing::{Harness, RawDevice, atlas_ok, run_atlas};
use serde_json::{Value, json};

fn passphrase_file(dir: &TempDir, name: &str, text: &str) -> String {
    let path = dir.path.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    path.display().to_string()
}

/// `atlas --profile bob keys backup --passphrase-file PASS --json` in `home`.
fn backup(home: &TempDir, pass: &str) -> Value {
    let args = [
        "--profile",
        "bob",
        "keys",
        "backup",
        "--passphrase-file",
        pass,
        "--json",
    ];
    serde_json::from_str(&atlas_ok(&home.path, &args)).unwrap()
}

async fn backup_restores_a_lost_device_on_another_machine(h: Harness) {
    let url = h.url();
    let (phone, laptop) = (
        TempDir::new("atlas-phone").unwrap(),
        TempDir::new("atlas-new-machine").unwrap(),
    );
    let secrets = TempDir::new("atlas-secrets").unwrap();
    let good = passphrase_file(&secrets, "good", "correct horse battery staple");
    let wrong = passphrase_file(&secrets, "wrong", "correct horse battery stable");
    let short = passphrase_file(&secrets, "short", "hunter2");
    atlas_ok(
        &phone.path,
        &["--profile", "alice", "register", "alice", "--server", &url],
    );
    atlas_ok(
        &phone.path,
        &["--profile", "bob", "register", "bob", "--server", &url],
    );
    atlas_ok(
        &phone.path,
        &["--profile", "alice", "send", "bob", "before the backup"],
    );
    assert!(atlas_ok(&phone.path, &["--profile", "bob", "inbox"]).contains("before the backup"));

    let args = [
        "--profile",
        "bob",
        "keys",
        "backup",
        "--passphrase-file",
        short.as_str(),
    ];
    let (ok, _, stderr) = run_atlas(Some(&phone.path), None, &args);
    assert!(!ok && stderr.contains("at least 10 bytes"), "{stderr}");
    let made = backup(&phone, &good);
    let backup_id = made["backup_id"].as_str().unwrap().to_owned();
    assert!(backup_id.starts_with("backup-bob-"), "{made}");
    assert_eq!(made["version"], 1);
    // Bob's phone is lost; alice keeps writing.
    atlas_ok(
        &phone.path,
        &["--profile", "alice", "send", "bob", "while you were away"],
    );

    let today = time::OffsetDateTime::now_utc().date().to_string();
    // Into the laptop's profile; `--server` only while that profile is new.
    let restore = |pass: &str, date: &str, server: bool| {
        let mut args = vec!["--profile", "bob", "keys", "restore", "--user-id", "bob"];
        args.extend(["--date", date, "--passphrase-file", pass]);
        if server {
            args.extend(["--server", url.as_str()]);
        }
        run_atlas(Some(&laptop.path), None, &args)
    };
    let (ok, _, stderr) = restore(&wrong, &today, true);
    assert!(!ok && stderr.contains("wrong passphrase"), "{stderr}");
    let (ok, _, _) = run_atlas(Some(&laptop.path), None, &["--profile", "bob", "whoami"]);
    assert!(!ok, "a failed restore registers nothing");
    let (ok, _, stderr) = restore(&good, "2020-01-01", true);
    assert!(
        !ok && stderr.contains("no backup of bob made at or before"),
        "{stderr}"
    );
    let (ok, _, stderr) = restore(&good, "yesterday", true);
    assert!(!ok && stderr.contains("YYYY-MM-DD"), "{stderr}");

    let (ok, stdout, stderr) = restore(&good, &today, true);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&backup_id), "{stdout}");
    assert!(stdout.contains("alice: while you were away"), "{stdout}");
    // The restored device is bob's device: it sends, and alice reads it.
    atlas_ok(
        &laptop.path,
        &["--profile", "bob", "send", "alice", "back again"],
    );
    assert!(atlas_ok(&phone.path, &["--profile", "alice", "inbox"]).contains("back again"));

    // A corrupted backup is refused and the restored profile keeps working.
    let second = backup(&laptop, &good);
    assert_eq!(second["version"], 2);
    let flipped = h
        .sql(&format!(
            "UPDATE key_backups SET blob = (CASE WHEN substr(blob, 1, 1) = 'A' THEN 'B' ELSE 'A' END) || substr(blob, 2) \
             WHERE backup_id = '{}'",
            second["backup_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(flipped, 1);
    let (ok, _, stderr) = restore(&good, &today, false);
    assert!(!ok && stderr.contains("corrupted"), "{stderr}");
    atlas_ok(
        &phone.path,
        &["--profile", "alice", "send", "bob", "still readable"],
    );
    assert!(atlas_ok(&laptop.path, &["--profile", "bob", "inbox"]).contains("still readable"));
}

on_both_backends!(backup_restores_a_lost_device_on_another_machine);

/// The backup API refuses what is not a backup of the caller, and hands blobs
/// only to the download key, a few guesses a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_api_refuses_bad_input_and_wrong_keys() {
    let h = Harness::sqlite().await;
    let url = h.url();
    let bob = RawDevice::register(&url, "bob").await;
    let token = bob.token().await;
    let kdf = json!({"alg": "argon2id", "m_kib": 19456, "t": 2, "p": 1, "salt": "c2FsdHNhbHRzYWx0c2FsdA"});
    let verifier = atlas_crypto::backup::download_verifier("the-download-key");
    let upload = |id: &str, blob: &str, kdf: &Value| json!({"backup_id": id, "kdf": kdf, "download_verifier": verifier, "blob": blob});
    let (status, body) = bob
        .call(
            &token,
            "POST",
            "/backups",
            Some(upload("backup-bob-1", "c2VhbGVk", &kdf)),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for (body, code) in [
        (
            upload("backup-alice-1", "c2VhbGVk", &kdf),
            "invalid_request",
        ),
        (
            upload("backup-bob-2", "not base64!", &kdf),
            "invalid_request",
        ),
        (
            upload(
                "backup-bob-3",
                "c2VhbGVk",
                &json!({"alg": "argon2id", "m_kib": 4194304, "t": 2, "p": 1, "salt": "c2FsdHNhbHRzYWx0c2FsdA"}),
            ),
            "invalid_request",
        ),
        (upload("backup-bob-1", "c2VhbGVk", &kdf), "backup_exists"),
    ] {
        let (status, answer) = bob.call(&token, "POST", "/backups", Some(body)).await;
        assert_eq!(answer["error"], code, "{status} {answer}");
    }
    let (status, _, _) = bob
        .send_raw("POST", "/backups", None, None, Some(b"{}".to_vec()))
        .await;
    assert_eq!(status, 401);

    let listed = atlas_testing::get_json(&format!("{url}/backups/bob")).await;
    assert_eq!(listed["backups"][0]["backup_id"], "backup-bob-1");
    assert!(
        listed["backups"][0].get("blob").is_none(),
        "the list carries no ciphertext"
    );
    let (status, _, _) = bob
        .send_raw("GET", "/backups/bob?at=yesterday", None, None, None)
        .await;
    assert_eq!(status, 400);

    let download = |key: Option<&str>, id: &str| {
        let auth = key.map(|k| format!("Backup {k}"));
        let path = format!("/backups/bob/{id}");
        let bob = &bob;
        async move { bob.send_raw("GET", &path, auth, None, None).await }
    };
    let (status, _, body) = download(Some("the-download-key"), "backup-bob-1").await;
    assert_eq!((status, body["blob"].as_str()), (200, Some("c2VhbGVk")));
    assert_eq!(download(None, "backup-bob-1").await.0, 401);
    assert_eq!(
        download(Some("the-download-key"), "backup-bob-9").await.0,
        404
    );
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(download(Some("a guess"), "backup-bob-1").await.0);
    }
    assert!(
        statuses.contains(&403) && statuses.contains(&429),
        "{statuses:?}"
    );
}
