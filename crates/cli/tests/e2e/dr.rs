//! `atlas dr` (seed 004 §4) end to end on the embedded profile: a backup taken
//! while the server serves, listed, verified with a trial restore against the
//! pinned audit key, recorded in the audit log; damage and mistakes refused.
use crate::audit::{audit_entries, kek_of, token};
use atlas_testing::{Harness, run_atlas};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_online_verifies_and_damage_is_refused() {
    let h = Harness::sqlite().await;
    let url = h.url();
    let home = h.homes.path.clone();
    let kek = kek_of(&h);
    let db = h.database_url();
    let auditor = token(&h, &kek, "audit");
    let atlas = |args: &[&str]| atlas_testing::atlas_ok(&home, args);
    for user in ["alice", "bob"] {
        atlas(&["--profile", user, "register", user, "--server", &url]);
    }
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
            &[
                "dr",
                "backup",
                "--recipient",
                &recipient,
                "--to",
                &backups,
                "--name",
                name,
                "--database-url",
                &db,
                "--kek-file",
                &kek,
            ],
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
        &[
            "dr",
            "backup",
            "--recipient",
            "age1nope",
            "--to",
            &backups,
            "--name",
            "x",
            "--database-url",
            &db,
            "--kek-file",
            &kek,
        ],
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
            ],
        )
    };
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

    let entries = audit_entries(&auditor, &url, Some("dr.backup"));
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["target"], "first");
}
