//! Recovery of stuck members: send-update, rejoin, and the emergency rollback.
use super::*;

async fn scrape(url: &str) -> String {
    let r = atlas_client::http_client()
        .unwrap()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// The sealed MLS state in a profile's database (the same key seals it, so an
/// older copy put back is what a device restored from an old backup holds).
async fn mls_blob(home: &std::path::Path, profile: &str, replace: Option<&[u8]>) -> Vec<u8> {
    use sqlx::Connection;
    let db = home.join("profiles").join(profile).join("state.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    if let Some(blob) = replace {
        sqlx::query("UPDATE kv SET v = $1 WHERE k = 'mls'")
            .bind(blob)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    sqlx::query_scalar("SELECT v FROM kv WHERE k = 'mls'")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// The runbook's recovery ladder on members that are really stuck: one whose
/// state fell behind its cursor (send-update repairs it), one that lost its
/// group state (rejoin-member repairs it).
async fn stuck_members_recover_with_send_update_and_rejoin(h: Harness) {
    let home = h.homes.path.clone();
    let url = h.url();
    let atlas = |args: &[&str]| atlas_testing::atlas_ok(&home, args);
    for user in ["alice", "bob", "carol"] {
        atlas(&["--profile", user, "register", user, "--server", &url]);
    }
    let before_joining = mls_blob(&home, "bob", None).await;
    atlas(&["--profile", "alice", "group", "create", "team"]);
    atlas(&["--profile", "alice", "group", "add", "team", "bob"]);
    atlas(&["--profile", "alice", "group", "add", "team", "carol"]);
    atlas(&["--profile", "bob", "inbox"]);
    atlas(&["--profile", "carol", "inbox"]);
    let at_epoch_2 = mls_blob(&home, "bob", None).await;
    atlas(&["--profile", "carol", "group", "update", "team"]);
    atlas(&["--profile", "carol", "group", "update", "team"]);
    atlas(&["--profile", "bob", "inbox"]);

    // bob's MLS state goes back to epoch 2 while his cursor stays at epoch 4: the
    // next message is from an epoch ahead of him, so his device replays the
    // stored commits by itself and reads it.
    mls_blob(&home, "bob", Some(&at_epoch_2)).await;
    atlas(&[
        "--profile",
        "alice",
        "group",
        "send",
        "team",
        "can you read this",
    ]);
    let inbox = atlas(&["--profile", "bob", "inbox"]);
    assert!(
        inbox.contains("can you read this") && !inbox.contains("Unable to decrypt"),
        "{inbox}"
    );

    // Then bob goes offline while carol moves the group three epochs on: stuck, and visible.
    for _ in 0..3 {
        atlas(&["--profile", "carol", "group", "update", "team"]);
    }
    atlas(&[
        "--profile",
        "alice",
        "group",
        "send",
        "team",
        "while you were away",
    ]);
    atlas(&["--profile", "alice", "inbox"]);
    let token = atlas_testing::operator_token(&h.database_url(), "mls");
    let op = |args: &[&str]| atlas_testing::run_atlas(None, Some(&token), args);
    let (ok, shown, _) = op(&["mls", "show", "--group-id", "team", "--server", &url]);
    assert!(ok && shown.contains("team at epoch 7"), "{shown}");
    assert!(
        shown.contains("epoch 4  <- 3 epoch(s) behind"),
        "the stuck member is visible: {shown}"
    );
    // The group's series carry a salted hash of its name, which `mls show` names.
    let (ok, shown, _) = op(&[
        "mls",
        "show",
        "--group-id",
        "team",
        "--server",
        &url,
        "--json",
    ]);
    assert!(ok);
    let label = serde_json::from_str::<Value>(&shown).unwrap()["metrics_label"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(label.starts_with("g-") && label.len() == 18, "{label}");
    let metrics = scrape(&url).await;
    assert!(
        !metrics.contains("\"team\""),
        "the group name does not leave the server: {metrics}"
    );
    for (gauge, value) in [
        ("atlas_mls_group_epoch", 7),
        ("atlas_mls_group_member_epoch", 4),
        ("atlas_mls_group_members_behind", 1),
    ] {
        let series = format!("{gauge}{{group_id=\"{label}\"}} {value}\n");
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }

    // Option 1: send-update. On bob's next sync his device replays commits 5 to 7, then self-updates.
    let (ok, out, stderr) = op(&[
        "mls",
        "send-update",
        "--group-id",
        "team",
        "--member-id",
        "bob",
        "--server",
        &url,
    ]);
    assert!(
        ok && out.contains("requested update for bob/"),
        "{out}{stderr}"
    );
    let inbox = atlas(&["--profile", "bob", "inbox"]);
    assert!(inbox.contains("while you were away"), "{inbox}");
    let (_, shown, _) = op(&["mls", "show", "--group-id", "team", "--server", &url]);
    assert!(
        shown.contains("caught up from epoch 4 to 7, self-update created epoch 8"),
        "{shown}"
    );
    let bob_line = shown
        .lines()
        .find(|l| l.trim_start().starts_with("bob/"))
        .unwrap();
    assert!(
        shown.contains("team at epoch 8") && bob_line.ends_with("epoch 8"),
        "{shown}"
    );
    assert!(scrape(&url).await.contains(&format!(
        "atlas_mls_group_members_behind{{group_id=\"{label}\"}} 0\n"
    )));
    atlas(&[
        "--profile",
        "alice",
        "group",
        "send",
        "team",
        "welcome back",
    ]);
    assert!(atlas(&["--profile", "bob", "inbox"]).contains("welcome back"));

    // bob loses his group state altogether: catching up cannot help, rejoining does.
    mls_blob(&home, "bob", Some(&before_joining)).await;
    let (ok, _, _) = op(&[
        "mls",
        "send-update",
        "--group-id",
        "team",
        "--member-id",
        "bob",
        "--server",
        &url,
    ]);
    assert!(ok);
    atlas(&["--profile", "bob", "inbox"]);
    let (_, shown, _) = op(&["mls", "show", "--group-id", "team", "--server", &url]);
    assert!(
        shown.contains("update for bob/") && shown.contains("failed: no group team"),
        "{shown}"
    );

    // rejoin-member, waiting for the device: bob syncs meanwhile.
    let waiter = std::thread::spawn({
        let url = url.clone();
        let token = token.clone();
        move || {
            atlas_testing::run_atlas(
                None,
                Some(&token),
                &[
                    "mls",
                    "rejoin-member",
                    "--group-id",
                    "team",
                    "--member-id",
                    "bob",
                    "--wait",
                    "30",
                    "--server",
                    &url,
                ],
            )
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(800));
    atlas(&["--profile", "bob", "inbox"]);
    let (ok, waited, stderr) = waiter.join().unwrap();
    assert!(ok, "{waited}{stderr}");
    assert!(
        waited.contains("rejoined by external commit at epoch 9"),
        "{waited}"
    );
    atlas(&["--profile", "alice", "group", "send", "team", "hello again"]);
    assert!(atlas(&["--profile", "bob", "inbox"]).contains("hello again"));
    assert!(atlas(&["--profile", "carol", "inbox"]).contains("hello again"));
    let members: Value = serde_json::from_str(&atlas(&[
        "--profile",
        "alice",
        "group",
        "members",
        "team",
        "--json",
    ]))
    .unwrap();
    let bobs = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["member_id"].as_str().unwrap().starts_with("bob/"))
        .count();
    assert_eq!(bobs, 1, "the rejoin replaced bob's old leaf: {members}");

    // Operator mistakes: unknown member, unknown group, a token without the scope.
    let (ok, _, stderr) = op(&[
        "mls",
        "send-update",
        "--group-id",
        "team",
        "--member-id",
        "mallory",
        "--server",
        &url,
    ]);
    assert!(!ok && stderr.contains("not_a_member"), "{stderr}");
    let (ok, _, stderr) = op(&[
        "mls",
        "rejoin-member",
        "--group-id",
        "nope",
        "--member-id",
        "bob",
        "--server",
        &url,
    ]);
    assert!(!ok && stderr.contains("unknown_group"), "{stderr}");
    let other = atlas_testing::operator_token(&h.database_url(), "dpop");
    let (ok, _, stderr) = atlas_testing::run_atlas(
        None,
        Some(&other),
        &["mls", "show", "--group-id", "team", "--server", &url],
    );
    assert!(!ok && stderr.contains("insufficient_scope"), "{stderr}");
}

/// Emergency rollback: a bad commit (carol adds mallory) is discarded, every
/// member rejoins, the group converges without mallory.
async fn rollback_epoch_discards_a_bad_commit_and_members_converge(h: Harness) {
    let home = h.homes.path.clone();
    let url = h.url();
    let atlas = |args: &[&str]| atlas_testing::atlas_ok(&home, args);
    for user in ["alice", "bob", "carol", "mallory"] {
        atlas(&["--profile", user, "register", user, "--server", &url]);
    }
    atlas(&["--profile", "alice", "group", "create", "team"]);
    atlas(&["--profile", "alice", "group", "add", "team", "bob"]);
    atlas(&["--profile", "alice", "group", "add", "team", "carol"]);
    atlas(&["--profile", "bob", "inbox"]);
    atlas(&["--profile", "carol", "inbox"]);
    atlas(&["--profile", "carol", "group", "add", "team", "mallory"]);
    atlas(&["--profile", "mallory", "inbox"]);
    atlas(&[
        "--profile",
        "mallory",
        "group",
        "send",
        "team",
        "mallory was here",
    ]);
    assert!(atlas(&["--profile", "alice", "inbox"]).contains("mallory was here"));
    atlas(&["--profile", "bob", "inbox"]);

    let token = atlas_testing::operator_token(&h.database_url(), "mls");
    // Without --yes the group id must be typed back; a wrong answer changes nothing.
    let mut refused = std::process::Command::new(env!("CARGO_BIN_EXE_atlas"))
        .args([
            "mls",
            "rollback-epoch",
            "--group-id",
            "team",
            "--target-epoch",
            "2",
            "--server",
            &url,
        ])
        .env("ATLAS_ADMIN_TOKEN", &token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(refused.stdin.as_mut().unwrap(), b"not-team\n").unwrap();
    let refused = refused.wait_with_output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not confirmed; nothing changed"));
    let op = |args: &[&str]| atlas_testing::run_atlas(None, Some(&token), args);
    let (_, shown, _) = op(&["mls", "show", "--group-id", "team", "--server", &url]);
    assert!(shown.contains("team at epoch 3"), "{shown}");
    let (ok, _, stderr) = op(&[
        "mls",
        "rollback-epoch",
        "--group-id",
        "team",
        "--target-epoch",
        "3",
        "--yes",
        "--server",
        &url,
    ]);
    assert!(
        !ok && stderr.contains("not below the current epoch"),
        "{stderr}"
    );

    let (ok, out, stderr) = op(&[
        "mls",
        "rollback-epoch",
        "--group-id",
        "team",
        "--target-epoch",
        "2",
        "--yes",
        "--server",
        &url,
    ]);
    assert!(ok, "{stderr}");
    assert!(out.contains("rolled team back from epoch 3 to 2"), "{out}");
    assert!(
        out.contains("mallory/") && out.contains("(removed)"),
        "{out}"
    );

    // Every member of epoch 2 rejoins on its next sync; the group moves on without mallory.
    for member in ["alice", "bob", "carol", "alice", "bob"] {
        atlas(&["--profile", member, "inbox"]);
    }
    let (_, shown, _) = op(&["mls", "show", "--group-id", "team", "--server", &url]);
    assert!(
        shown.contains("team at epoch 5"),
        "three rejoins after epoch 2: {shown}"
    );
    assert_eq!(
        shown.matches("rejoined by external commit").count(),
        3,
        "{shown}"
    );
    atlas(&[
        "--profile",
        "alice",
        "group",
        "send",
        "team",
        "after the rollback",
    ]);
    for reader in ["bob", "carol"] {
        assert!(
            atlas(&["--profile", reader, "inbox"]).contains("after the rollback"),
            "{reader}"
        );
    }
    assert!(!atlas(&["--profile", "mallory", "inbox"]).contains("after the rollback"));
    let (ok, _, stderr) = atlas_testing::run_atlas(
        Some(&home),
        None,
        &[
            "--profile",
            "mallory",
            "group",
            "send",
            "team",
            "still here?",
        ],
    );
    assert!(!ok, "{stderr}");
    let members: Value = serde_json::from_str(&atlas(&[
        "--profile",
        "alice",
        "group",
        "members",
        "team",
        "--json",
    ]))
    .unwrap();
    let active: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "active")
        .map(|m| m["member_id"].as_str().unwrap().split('/').next().unwrap())
        .collect();
    assert_eq!(active, ["alice", "bob", "carol"]);
}

on_both_backends!(
    stuck_members_recover_with_send_update_and_rejoin,
    rollback_epoch_discards_a_bad_commit_and_members_converge,
);
