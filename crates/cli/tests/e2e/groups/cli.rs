//! `atlas group …` end to end.
use super::*;

/// The CLI end to end: profiles persist their MLS state between commands,
/// concurrent commits rebase automatically, `inbox` shows group messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_groups_create_add_send_update_remove() {
    let h = Harness::sqlite().await;
    let home = h.homes.path.clone();
    let url = h.url();
    let atlas = |args: &[&str]| atlas_testing::atlas_ok(&home, args);
    for user in ["alice", "bob", "carol", "dave"] {
        atlas(&["--profile", user, "register", user, "--server", &url]);
    }
    assert!(
        atlas(&["--profile", "alice", "group", "create", "team"])
            .contains("created group team (epoch 0)")
    );
    assert!(atlas(&["--profile", "alice", "group", "add", "team", "bob"]).contains("(epoch 1)"));
    assert!(atlas(&["--profile", "alice", "group", "add", "team", "carol"]).contains("(epoch 2)"));
    atlas(&["--profile", "alice", "group", "send", "team", "hello team"]);
    for reader in ["bob", "carol"] {
        let inbox = atlas(&["--profile", reader, "inbox"]);
        assert!(
            inbox.contains("#team alice/") && inbox.contains(": hello team"),
            "{reader}: {inbox}"
        );
    }

    // What a send reads while catching up is shown, not silently consumed.
    atlas(&[
        "--profile",
        "carol",
        "group",
        "send",
        "team",
        "read on the way",
    ]);
    let sent = atlas(&["--profile", "bob", "group", "send", "team", "bob answers"]);
    assert!(
        sent.contains(": read on the way") && sent.contains("sent to team"),
        "{sent}"
    );

    // bob and carol update at the same time: both land, one on top of the other.
    let (bob, carol) = tokio::join!(
        tokio::task::spawn_blocking({
            let home = home.clone();
            move || {
                atlas_testing::run_atlas(
                    Some(&home),
                    None,
                    &["--profile", "bob", "group", "update", "team"],
                )
            }
        }),
        tokio::task::spawn_blocking({
            let home = home.clone();
            move || {
                atlas_testing::run_atlas(
                    Some(&home),
                    None,
                    &["--profile", "carol", "group", "update", "team"],
                )
            }
        })
    );
    let (bob, carol) = (bob.unwrap(), carol.unwrap());
    assert!(bob.0 && carol.0, "{bob:?} {carol:?}");
    atlas(&["--profile", "alice", "inbox"]);
    let members: Value = serde_json::from_str(&atlas(&[
        "--profile",
        "alice",
        "group",
        "members",
        "team",
        "--json",
    ]))
    .unwrap();
    assert_eq!(members["current_epoch"], 4);
    atlas(&[
        "--profile",
        "bob",
        "group",
        "send",
        "team",
        "after the race",
    ]);
    let inbox: Value =
        serde_json::from_str(&atlas(&["--profile", "carol", "inbox", "--json"])).unwrap();
    let texts: Vec<&str> = inbox
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert!(texts.contains(&"after the race"), "{inbox}");

    // Removal: carol learns it, alice and bob go on; the members list shows it.
    atlas(&["--profile", "alice", "group", "remove", "team", "carol"]);
    assert!(atlas(&["--profile", "carol", "inbox"]).contains("removed this device"));
    let listed = atlas(&["--profile", "bob", "group", "members", "team"]);
    assert!(
        listed.contains("carol/") && listed.contains("(removed)"),
        "{listed}"
    );
    let (ok, _, stderr) = atlas_testing::run_atlas(
        Some(&home),
        None,
        &["--profile", "carol", "group", "send", "team", "let me in"],
    );
    assert!(!ok, "a removed member cannot send: {stderr}");
    // Added again, carol accepts the new Welcome in place of her old state.
    atlas(&["--profile", "alice", "group", "add", "team", "carol"]);
    atlas(&[
        "--profile",
        "alice",
        "group",
        "send",
        "team",
        "welcome back carol",
    ]);
    assert!(atlas(&["--profile", "carol", "inbox"]).contains("welcome back carol"));
    let (ok, _, stderr) = atlas_testing::run_atlas(
        Some(&home),
        None,
        &["--profile", "dave", "group", "create", "team"],
    );
    assert!(!ok && stderr.contains("group_exists"), "{stderr}");
    // The refused creation left nothing behind: dave can still be welcomed into "team".
    atlas(&["--profile", "alice", "group", "add", "team", "dave"]);
    atlas(&["--profile", "alice", "group", "send", "team", "hi dave"]);
    assert!(atlas(&["--profile", "dave", "inbox"]).contains("hi dave"));
    let (ok, _, stderr) = atlas_testing::run_atlas(
        Some(&home),
        None,
        &["--profile", "alice", "group", "add", "team", "nobody"],
    );
    assert!(!ok && stderr.contains("unknown_user"), "{stderr}");
}
