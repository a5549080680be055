//! `atlas dr` (seed 004 §4) end to end on the embedded profile: a backup taken
//! while the server serves, listed, verified with a trial restore against the
//! pinned audit key, recorded in the audit log; damage and mistakes refused.
use crate::audit::{audit_entries, kek_of, token};
use atlas_testing::{Harness, run_atlas};
use serde_json::Value;

/// `atlas dr backup` of the harness's database to `to` under `name`.
pub(crate) fn backup_args<'a>(
    recipient: &'a str,
    to: &'a str,
    name: &'a str,
    db: &'a str,
    kek: &'a str,
) -> Vec<&'a str> {
    vec![
        "dr",
        "backup",
        "--recipient",
        recipient,
        "--to",
        to,
        "--name",
        name,
        "--database-url",
        db,
        "--kek-file",
        kek,
    ]
}

/// The backup identity `backup.identity` in `home`: its path and recipient.
pub(crate) fn keygen(home: &std::path::Path) -> (String, String) {
    let identity = home.join("backup.identity").display().to_string();
    let recipient = atlas_testing::atlas_ok(home, &["dr", "keygen", "--output", &identity])
        .trim()
        .to_owned();
    (identity, recipient)
}

/// Registers the profiles `alice` and `bob` with the server at `url`.
/// A server with alice and bob registered, and what the dr commands take.
pub(crate) struct Site {
    /// The server.
    pub(crate) h: Harness,
    /// Its URL.
    pub(crate) url: String,
    /// The CLI home with the profiles `alice` and `bob`.
    pub(crate) home: std::path::PathBuf,
    /// Its KEK file.
    pub(crate) kek: String,
    /// Its database URL.
    pub(crate) db: String,
}

/// [`Site`] on `h`.
pub(crate) fn site(h: Harness) -> Site {
    let url = h.url();
    let home = h.homes.path.clone();
    let kek = kek_of(&h);
    let db = h.database_url();
    for user in ["alice", "bob"] {
        atlas_testing::atlas_ok(
            &home,
            &["--profile", user, "register", user, "--server", &url],
        );
    }
    Site {
        h,
        url,
        home,
        kek,
        db,
    }
}

/// The database file of a stopped server, once its last connection has
/// folded the log into it and removed it (they close in the background).
pub(crate) async fn settled(db: &str) -> std::path::PathBuf {
    let file = atlas_store::sqlite_path(db).unwrap();
    let wal = format!("{}-wal", file.display());
    for _ in 0..100 {
        if !std::path::Path::new(&wal).exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_online_verifies_and_damage_is_refused() {
    let Site {
        h,
        url,
        home,
        kek,
        db,
    } = site(Harness::sqlite().await);
    let auditor = token(&h, &kek, "audit");
    let atlas = |args: &[&str]| atlas_testing::atlas_ok(&home, args);
    for i in 0..3 {
        atlas(&["--profile", "alice", "send", "bob", &format!("m{i}")]);
    }

    let identity = home.join("backup.identity");
    let identity_arg = identity.display().to_string();
    let recipient = atlas(&["dr", "keygen", "--output", &identity_arg])
        .trim()
        .to_owned();
    assert!(recipient.starts_with("age1"), "{recipient}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&identity).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (ok, _, err) = run_atlas(None, None, &["dr", "keygen", "--output", &identity_arg]);
    assert!(!ok && err.contains("must not exist"), "{err}");

    let backups = home.join("backups").display().to_string();
    let dr_backup = |name: &str| {
        run_atlas(
            None,
            None,
            &backup_args(&recipient, &backups, name, &db, &kek),
        )
    };
    let (ok, out, err) = dr_backup("first");
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("[1/4] Snapshot taken") && err.contains("[4/4] Stored manifest.json"),
        "{err}"
    );
    assert!(
        out.contains("backup first complete") && out.contains("3 messages"),
        "{out}"
    );
    let (ok, _, err) = dr_backup("first");
    assert!(!ok && err.contains("exists already"), "{err}");
    let (ok, _, err) = dr_backup("../escape");
    assert!(!ok && err.contains("not a valid backup name"), "{err}");
    let (ok, _, err) = run_atlas(
        None,
        None,
        &backup_args("age1nope", &backups, "x", &db, &kek),
    );
    assert!(!ok && err.contains("not an age recipient"), "{err}");

    let listed: Value =
        serde_json::from_str(&atlas(&["dr", "list", "--from", &backups, "--json"])).unwrap();
    assert_eq!(listed[0]["name"], "first");
    assert_eq!(listed[0]["complete"], true);
    assert!(listed[0]["last_verified"].is_null());

    // Verified against the audit key the server publishes.
    let published: Value =
        atlas_testing::get_json(&format!("{url}/.well-known/atlas/audit-checkpoint")).await;
    let key = published["key"].as_str().unwrap().to_owned();
    let verify = |name: &str, identity: &str| {
        run_atlas(
            None,
            None,
            &[
                "dr",
                "verify",
                name,
                "--from",
                &backups,
                "--identity",
                identity,
                "--key",
                &key,
                "--record",
                "--database-url",
                &db,
            ],
        )
    };
    let metric = |text: &str, name: &str| atlas_testing::series(text, &format!("{name} "));
    let metrics = atlas_testing::metrics_text(&url).await;
    assert_eq!(metric(&metrics, "atlas_dr_backups"), 1.0);
    assert!(metric(&metrics, "atlas_dr_last_backup_timestamp_seconds") > 0.0);
    assert_eq!(
        metric(&metrics, "atlas_dr_last_verified_backup_timestamp_seconds"),
        0.0,
        "not verified yet"
    );
    let (ok, out, err) = verify("first", &identity_arg);
    assert!(ok, "{out}{err}");
    for line in [
        "PASS  manifest signature",
        "PASS  keys archive",
        "PASS  integrity check",
        "PASS  row counts",
        "PASS  message sample",
        "backup verified",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    let listed: Value =
        serde_json::from_str(&atlas(&["dr", "list", "--from", &backups, "--json"])).unwrap();
    assert_eq!(listed[0]["last_verified"]["passed"], true);
    let metrics = atlas_testing::metrics_text(&url).await;
    assert_eq!(
        metric(&metrics, "atlas_dr_last_verified_backup_timestamp_seconds"),
        metric(&metrics, "atlas_dr_last_backup_timestamp_seconds"),
        "the backup verified is the newest"
    );

    // A missing backup lists what exists; the wrong identity and a flipped byte fail.
    let (ok, _, err) = verify("nope", &identity_arg);
    assert!(!ok && err.contains("available: first"), "{err}");
    let other = home.join("other.identity").display().to_string();
    atlas(&["dr", "keygen", "--output", &other]);
    let (ok, out, _) = verify("first", &other);
    assert!(!ok && out.contains("FAIL  keys archive"), "{out}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(home.join("backups/first/manifest.json")).unwrap())
            .unwrap();
    let data = home
        .join("backups/first")
        .join(manifest["files"][0]["name"].as_str().unwrap());
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&data, &bytes).unwrap();
    let (ok, out, _) = verify("first", &identity_arg);
    assert!(
        !ok && out.contains("FAIL  files") && out.contains("altered"),
        "{out}"
    );
    let listed: Value =
        serde_json::from_str(&atlas(&["dr", "list", "--from", &backups, "--json"])).unwrap();
    assert_eq!(listed[0]["last_verified"]["passed"], false);
    let metrics = atlas_testing::metrics_text(&url).await;
    assert_eq!(
        metric(&metrics, "atlas_dr_last_verified_backup_timestamp_seconds"),
        0.0,
        "its last verification failed"
    );

    let entries = audit_entries(&auditor, &url, Some("dr.backup"));
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["target"], "first");
}

/// The seed's full recovery on the embedded profile: the database is
/// destroyed, a bad backup is refused with nothing changed, the good one is
/// restored, the server starts on it and everything acknowledged before the
/// backup is delivered; the restore is in the audit log, which verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_database_is_restored_and_serves_again() {
    let Site {
        mut h,
        url,
        home,
        kek,
        db,
    } = site(Harness::sqlite().await);
    let auditor = token(&h, &kek, "audit");
    let atlas = |args: &[&str]| atlas_testing::atlas_ok(&home, args);
    for i in 0..3 {
        atlas(&["--profile", "alice", "send", "bob", &format!("before-{i}")]);
    }
    let (identity, recipient) = keygen(&home);
    let backups = home.join("backups").display().to_string();
    for name in ["good", "bad"] {
        atlas(&backup_args(&recipient, &backups, name, &db, &kek));
    }
    atlas(&["--profile", "alice", "send", "bob", "after-the-backup"]);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(home.join("backups/bad/manifest.json")).unwrap())
            .unwrap();
    let data = home
        .join("backups/bad")
        .join(manifest["files"][0]["name"].as_str().unwrap());
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&data, &bytes).unwrap();

    h.stop().await;
    let file = settled(&db).await;
    let before = std::fs::read(&file).unwrap();
    let restore = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "dr",
            "restore",
            name,
            "--from",
            &backups,
            "--identity",
            &identity,
            "--database-url",
            &db,
            "--kek-file",
            &kek,
        ];
        args.extend_from_slice(extra);
        run_atlas(None, None, &args)
    };
    let (ok, _, err) = restore("good", &[]);
    assert!(!ok && err.contains("pass --yes"), "{err}");
    let (ok, _, err) = restore("bad", &["--yes"]);
    assert!(
        !ok && err.contains("failed verification: nothing was changed"),
        "{err}"
    );
    assert!(
        std::fs::read(&file).unwrap() == before,
        "the current data is untouched"
    );
    let (ok, _, err) = restore("missing", &["--yes"]);
    assert!(!ok && err.contains("available: bad, good"), "{err}");
    let (ok, _, err) = run_atlas(
        None,
        None,
        &[
            "dr",
            "restore",
            "good",
            "--from",
            &backups,
            "--identity",
            "/nonexistent/identity",
            "--database-url",
            &db,
            "--yes",
        ],
    );
    assert!(!ok && err.contains("reading the identity"), "{err}");
    assert!(std::fs::read(&file).unwrap() == before, "still untouched");

    // The disaster: the database is gone.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    let (ok, out, err) = restore("good", &["--yes"]);
    assert!(ok, "{out}{err}");
    for step in ["[1/6]", "[2/6]", "[3/6]", "[4/6]", "secrets re-sealed"] {
        assert!(err.contains(step), "{step}: {err}");
    }
    h.start().await;
    let inbox = atlas(&["--profile", "bob", "inbox"]);
    for i in 0..3 {
        assert!(inbox.contains(&format!("before-{i}")), "{inbox}");
    }
    assert!(!inbox.contains("after-the-backup"), "{inbox}");
    atlas(&["--profile", "alice", "send", "bob", "after-the-restore"]);
    assert!(atlas(&["--profile", "bob", "inbox"]).contains("after-the-restore"));
    let entries = audit_entries(&auditor, &url, Some("dr.restore"));
    assert_eq!(entries.len(), 1, "{entries:?}");
    let (ok, out, err) = run_atlas(None, Some(&auditor), &["audit", "verify", "--server", &url]);
    assert!(ok && out.contains("OK"), "{out}{err}");
}

/// The same recovery through a real S3-compatible server (moto's), with the
/// usual AWS environment: backup, list, verify, and — while the store is
/// down — a restore that fails with the current data untouched, then one
/// that works once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_go_to_s3_and_come_back() {
    let Some(mut s3) = atlas_testing::S3Server::start().await else {
        return;
    };
    let Site {
        mut h,
        url: _,
        home,
        kek,
        db,
    } = site(Harness::sqlite().await);
    let atlas = |args: &[&str]| atlas_testing::atlas_ok(&home, args);
    atlas(&["--profile", "alice", "send", "bob", "kept in s3"]);
    let (identity, recipient) = keygen(&home);
    let bucket = s3.url("atlas");
    let env = s3.env();
    let dr = |args: &[&str]| atlas_testing::run_atlas_env(&env, args);
    let (ok, out, err) = dr(&backup_args(&recipient, &bucket, "nightly", &db, &kek));
    assert!(ok && out.contains("s3://atlas-backups/atlas"), "{out}{err}");
    let (ok, out, err) = dr(&["dr", "list", "--from", &bucket]);
    assert!(
        ok && out.contains("nightly") && out.contains("complete"),
        "{out}{err}"
    );
    let (ok, out, err) = dr(&[
        "dr",
        "verify",
        "nightly",
        "--from",
        &bucket,
        "--identity",
        &identity,
    ]);
    assert!(ok && out.contains("backup verified"), "{out}{err}");

    h.stop().await;
    let restore = |env: &[(&str, String)]| {
        atlas_testing::run_atlas_env(
            env,
            &[
                "dr",
                "restore",
                "nightly",
                "--from",
                &bucket,
                "--identity",
                &identity,
                "--database-url",
                &db,
                "--kek-file",
                &kek,
                "--yes",
            ],
        )
    };
    let file = settled(&db).await;
    let before = std::fs::metadata(&file).unwrap().modified().unwrap();
    let mut unreachable = env.clone();
    unreachable[0].1 = format!("http://127.0.0.1:{}", atlas_testing::free_port());
    let (ok, _, err) = restore(&unreachable);
    assert!(!ok, "{err}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        before,
        "the current data is untouched while the store is unreachable"
    );
    // A store whose downloads break off: for good, the restore fails with the
    // data untouched; now and then, each download resumes where it stopped.
    let through = |proxy: &atlas_testing::CuttingProxy, retries: &str| {
        let mut env = env.clone();
        env[0].1 = proxy.endpoint.clone();
        env.push(("ATLAS_S3_MAX_RETRIES", retries.into()));
        env
    };
    let broken =
        atlas_testing::CuttingProxy::start(&s3.endpoint, "_data.tar.gz", usize::MAX, 1500).await;
    let (ok, out, err) = restore(&through(&broken, "2"));
    assert!(!ok, "{out}{err}");
    assert_eq!(broken.cut(), 3, "the download and its two retries");
    assert!(
        out.contains("_data.tar.gz") || err.contains("_data.tar.gz"),
        "{out}{err}"
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        before,
        "the current data is untouched after a broken download"
    );
    let flaky = atlas_testing::CuttingProxy::start(&s3.endpoint, "_data.tar.gz", 2, 1500).await;
    let (ok, out, err) = restore(&through(&flaky, "3"));
    assert!(ok && out.contains("restored nightly"), "{out}{err}");
    assert_eq!((flaky.cut(), flaky.cuts_left()), (2, 0));
    let (ok, out, err) = restore(&env);
    assert!(ok && out.contains("restored nightly"), "{out}{err}");
    h.start().await;
    assert!(atlas(&["--profile", "bob", "inbox"]).contains("kept in s3"));
    s3.kill();
}

/// `atlas serve --backup-to DIR --backup-every …`: the embedded server backs
/// itself up at start (and on schedule) with the same format, verifiable,
/// recorded for the metrics and in the audit log; bad flags are refused.
#[test]
fn the_embedded_server_backs_itself_up() {
    let data = atlas_store::testdb::TempDir::new("atlas-dr-serve").unwrap();
    let home = data.path.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let identity = home.join("backup.identity").display().to_string();
    let recipient = atlas_testing::atlas_ok(&home, &["dr", "keygen", "--output", &identity])
        .trim()
        .to_owned();
    let backups = data.path.join("backups").display().to_string();
    for (flags, error) in [
        (vec!["--backup-to", backups.as_str()], "--backup-recipient"),
        (
            vec!["--backup-to", &backups, "--backup-recipient", "age1nope"],
            "not an age recipient",
        ),
        (
            vec![
                "--backup-to",
                &backups,
                "--backup-recipient",
                &recipient,
                "--backup-every",
                "10s",
            ],
            "at least a minute",
        ),
    ] {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir"];
        let dir = data.path.join("db").display().to_string();
        args.push(&dir);
        args.extend(flags);
        let (ok, _, err) = run_atlas(None, None, &args);
        assert!(!ok && err.contains(error), "{error}: {err}");
    }
    let server = atlas_testing::serve(
        &data,
        "127.0.0.1:0",
        &[
            "--backup-to",
            &backups,
            "--backup-recipient",
            &recipient,
            "--backup-every",
            "1h",
        ],
    );
    let started = std::time::Instant::now();
    let listed = loop {
        let (ok, out, _) = run_atlas(None, None, &["dr", "list", "--from", &backups, "--json"]);
        let listed: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        if ok && listed[0]["complete"] == true {
            break listed;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no backup at start: {}",
            server.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let name = listed[0]["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("atlas_"), "{name}");
    let (ok, out, err) = run_atlas(
        None,
        None,
        &[
            "dr",
            "verify",
            &name,
            "--from",
            &backups,
            "--identity",
            &identity,
        ],
    );
    assert!(ok && out.contains("backup verified"), "{out}{err}");
    let metrics = std::process::Command::new("curl")
        .args(["-fsS", &format!("{}/metrics", server.url)])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(metrics.contains("\natlas_dr_backups 1\n"), "{metrics}");
    assert!(
        metrics.contains("\natlas_dr_scheduled_backup_failures_total 0\n"),
        "{metrics}"
    );
}

/// `atlas bench dr`: a scratch database backed up, verified and restored,
/// with the figures an operator plans around.
#[test]
fn the_recovery_bench_reports_its_figures() {
    let admin = atlas_store::testdb::postgres_admin_url();
    for (backend, extra) in [
        ("sqlite", vec![]),
        ("postgres", vec!["--database-url", &admin]),
    ] {
        let mut args = vec!["bench", "dr", "--messages", "3000", "--json"];
        args.extend(extra);
        let (ok, out, err) = run_atlas(None, None, &args);
        assert!(ok, "{err}");
        let figures: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(figures["messages"], 3000);
        assert_eq!(figures["backend"], backend);
        let part = |k: &str| figures[k].as_f64().unwrap();
        assert!(
            part("backup_seconds") > 0.0
                && part("verify_seconds") > 0.0
                && part("restore_seconds") > 0.0
        );
        let sum = part("backup_seconds") + part("verify_seconds") + part("restore_seconds");
        assert!((part("total_seconds") - sum).abs() < 1e-6);
        assert!(
            figures["backup_bytes"].as_u64().unwrap() > 3000 * 300,
            "{figures}"
        );
    }
}

/// PostgreSQL: a backup taken by COPY in one repeatable-read snapshot while
/// the server serves, trial-restored into a scratch database on the same
/// server, then restored into a new database renamed into the old one's
/// place (which is kept), re-sealed and audited; a restore while the server
/// still holds the database is refused with nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_backup_is_verified_and_restored() {
    let Site {
        mut h,
        url,
        home,
        kek,
        db,
    } = site(Harness::postgres().await);
    let auditor = token(&h, &kek, "audit");
    let atlas = |args: &[&str]| atlas_testing::atlas_ok(&home, args);
    for i in 0..3 {
        atlas(&["--profile", "alice", "send", "bob", &format!("before-{i}")]);
    }
    let (identity, recipient) = keygen(&home);
    let backups = home.join("backups").display().to_string();
    let out = atlas(&backup_args(&recipient, &backups, "pg", &db, &kek));
    assert!(out.contains("backup pg complete"), "{out}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(home.join("backups/pg/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["backend"], "postgres");
    assert_eq!(manifest["row_counts"]["messages"], 3);
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "dr",
            "verify",
            "pg",
            "--from",
            &backups,
            "--identity",
            &identity,
        ];
        args.extend_from_slice(extra);
        run_atlas(None, None, &args)
    };
    // Without a server to restore into, the trial restore is skipped, not passed.
    let (ok, out, err) = verify(&[]);
    assert!(ok && out.contains("SKIP  trial restore"), "{out}{err}");
    let (ok, out, err) = verify(&["--database-url", &db]);
    assert!(
        ok && out.contains("scratch database") && out.contains("backup verified"),
        "{out}{err}"
    );
    atlas(&["--profile", "alice", "send", "bob", "after-the-backup"]);

    let restore = || {
        run_atlas(
            None,
            None,
            &[
                "dr",
                "restore",
                "pg",
                "--from",
                &backups,
                "--identity",
                &identity,
                "--database-url",
                &db,
                "--kek-file",
                &kek,
                "--yes",
            ],
        )
    };
    // The server still holds the database: refused, nothing changed.
    let (ok, _, err) = restore();
    assert!(!ok && err.contains("stop every server"), "{err}");
    // Its trial restore, kept to be renamed in, is gone again.
    let incoming = err
        .split_whitespace()
        .find(|w| w.contains("_restoring_"))
        .unwrap()
        .trim_end_matches(',');
    assert!(
        !atlas_store::pg_snapshot::database_exists(&db, incoming)
            .await
            .unwrap(),
        "{incoming} is left behind"
    );
    let counts = atlas_store::open(&db)
        .await
        .unwrap()
        .row_counts()
        .await
        .unwrap();
    assert!(counts.contains(&("messages".into(), 4)), "{counts:?}");

    h.stop().await;
    let (ok, out, err) = restore();
    assert!(
        ok && out.contains("restored pg into PostgreSQL database"),
        "{out}{err}"
    );
    assert!(
        err.contains("_restoring_") && !err.contains("atlas_dr_verify_"),
        "the trial restore is the database renamed in (loaded once): {err}"
    );
    let kept = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("the previous database is kept as "))
        .unwrap()
        .to_owned();
    h.start().await;
    let inbox = atlas(&["--profile", "bob", "inbox"]);
    for i in 0..3 {
        assert!(inbox.contains(&format!("before-{i}")), "{inbox}");
    }
    assert!(!inbox.contains("after-the-backup"), "{inbox}");
    atlas(&["--profile", "alice", "send", "bob", "after-the-restore"]);
    assert!(atlas(&["--profile", "bob", "inbox"]).contains("after-the-restore"));
    assert_eq!(audit_entries(&auditor, &url, Some("dr.restore")).len(), 1);
    atlas_store::pg_snapshot::drop_database(&db, &kept)
        .await
        .unwrap();
}

/// Runs `script` (sh) in a private mount namespace, where it may mount a
/// small tmpfs: a full disk without touching the machine's. `$ATLAS` is the
/// binary. (exit ok, stdout, stderr)
fn in_mount_namespace(script: &str) -> (bool, String, String) {
    let out = std::process::Command::new("unshare")
        .args(["-rm", "sh", "-c", script])
        .env("ATLAS", atlas_testing::atlas_bin())
        .env_remove("ATLAS_ADMIN_TOKEN")
        .output()
        .expect("unshare (util-linux) runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A full disk: a backup to it and a restore onto it fail with the
/// system's reason, and the data already there is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_backup_and_restore_with_the_data_untouched() {
    let (can, _, why) = in_mount_namespace("mount -t tmpfs -o size=4k tmpfs /mnt");
    if !can {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs unshare -rm and tmpfs: {why}"
        );
        eprintln!("skipped: no private mount namespace here ({why})");
        return;
    }
    let Site {
        mut h,
        url: _,
        home,
        kek,
        db,
    } = site(Harness::sqlite().await);
    atlas_testing::atlas_ok(&home, &["--profile", "alice", "send", "bob", "kept"]);
    let (identity, recipient) = keygen(&home);
    let full = home.join("full");
    std::fs::create_dir_all(&full).unwrap();
    let full = full.display().to_string();
    let (ok, _, err) = in_mount_namespace(&format!(
        "mount -t tmpfs -o size=8k tmpfs {full} && \
         \"$ATLAS\" dr backup --recipient {recipient} --to {full}/backups --name nightly \
           --database-url {db} --kek-file {kek}"
    ));
    assert!(!ok && err.contains("No space left on device"), "{err}");
    // The server never noticed.
    assert!(atlas_testing::atlas_ok(&home, &["--profile", "bob", "inbox"]).contains("kept"));

    let backups = home.join("backups").display().to_string();
    atlas_testing::atlas_ok(&home, &backup_args(&recipient, &backups, "good", &db, &kek));
    h.stop().await;
    let file = settled(&db).await;
    let size = std::fs::metadata(&file).unwrap().len();
    // Room for the current database and its KEK, not for a second copy.
    let (ok, out, err) = in_mount_namespace(&format!(
        "mount -t tmpfs -o size={} tmpfs {full} && cp {} {full}/atlas.db && cp {kek} {full}/server.kek && \
         \"$ATLAS\" dr restore good --from {backups} --identity {identity} --data-dir {full} --yes; \
         rc=$?; cmp {} {full}/atlas.db && echo UNTOUCHED; ls -a {full}; exit $rc",
        size + 64 * 1024,
        file.display(),
        file.display()
    ));
    assert!(!ok && err.contains("No space left on device"), "{out}{err}");
    assert!(out.contains("UNTOUCHED"), "{out}");
    assert!(
        !out.contains(".atlas-restoring"),
        "the partial copy is removed: {out}"
    );
}
