//! `atlas diagnose` on real failures: each of the runbook's causes is
//! reproduced, `atlas diagnose message|user|group` names it with its evidence
//! and recovery, and `--apply` starts the recovery that makes the message
//! readable again.

use atlas_proto::UserId;
use atlas_testing::{
    Harness, acquaint, client, corrupt_one_time_keys, deliver_last_first, operator_token,
    run_atlas, send_numbered, send_on_desynced_session, send_to_rotated_key,
};
use serde_json::Value;

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// `atlas diagnose KIND ID [--apply] --json`: the diagnosis and what was applied.
fn diagnose(h: &Harness, token: &str, kind: &str, id: &str, apply: bool) -> Value {
    let url = h.url();
    let mut args = vec!["diagnose", kind, id, "--server", url.as_str(), "--json"];
    if apply {
        args.push("--apply");
    }
    let (ok, stdout, stderr) = run_atlas(None, Some(token), &args);
    assert!(ok, "atlas {args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap()
}

fn cause(d: &Value) -> &str {
    d["diagnosis"]["cause"]["code"].as_str().unwrap()
}

async fn every_cause_is_named_and_repaired(h: Harness) {
    let token = operator_token(&h.database_url(), "all");

    // Double Ratchet state desynchronised: reset the session (Option 3) and resend.
    let alice = client(&h, "alice").await;
    let bob = client(&h, "bob").await;
    let carol = client(&h, "carol").await;
    acquaint(&alice, &bob).await;
    let lost = send_on_desynced_session(&h, &alice, &bob, &carol).await;
    bob.messages().sync().await.unwrap();
    let d = diagnose(&h, &token, "message", &lost.message_id, true);
    assert_eq!(cause(&d), "ratchet_desync", "{d:#}");
    let steps = d["diagnosis"]["steps"].to_string();
    assert!(steps.contains("Check Double Ratchet state"), "{steps}");
    let commands = d["diagnosis"]["recovery"][0]["commands"].to_string();
    assert!(
        commands.contains("/sessions/") && commands.contains("/request-resend"),
        "{commands}"
    );
    assert_eq!(d["applied"].as_array().unwrap().len(), 2, "{d:#}");
    alice.messages().sync().await.unwrap();
    let resent = bob.messages().sync().await.unwrap();
    assert_eq!(resent[0].text.as_deref(), Some("after the desync"));
    assert_eq!(
        cause(&diagnose(&h, &token, "message", &lost.message_id, false)),
        "recovered"
    );

    // The recipient's key rotated before the message arrived.
    let dave = client(&h, "dave").await;
    let rotated = send_to_rotated_key(&h, &alice, &dave, "to the old key").await;
    // Dave's device reads (and fails) before anyone answers the resend it asks for.
    dave.messages().sync().await.unwrap();
    let d = diagnose(&h, &token, "message", &rotated, false);
    assert_eq!(cause(&d), "key_rotated", "{d:#}");
    assert!(
        d["diagnosis"]["steps"]
            .to_string()
            .contains("Check user_keys table")
    );
    let user = diagnose(&h, &token, "user", "dave", false);
    assert_eq!(cause(&user), "key_rotated", "{user:#}");

    // Key material corrupted in the database.
    let erin = client(&h, "erin").await;
    corrupt_one_time_keys(&h, "erin").await;
    let corrupted = alice
        .messages()
        .send_text(&uid("erin"), "first contact")
        .await
        .unwrap();
    erin.messages().sync().await.unwrap();
    let d = diagnose(&h, &token, "message", &corrupted.message_id, false);
    assert_eq!(cause(&d), "key_corrupted_in_database", "{d:#}");

    // Skipped message keys not stored.
    let (frank, grace) = (client(&h, "frank").await, client(&h, "grace").await);
    acquaint(&frank, &grace).await;
    let ids = send_numbered(&frank, &grace, 45).await;
    deliver_last_first(&h, "grace").await;
    grace.messages().sync().await.unwrap();
    assert_eq!(
        cause(&diagnose(&h, &token, "message", &ids[0], false)),
        "missing_skipped_keys"
    );
    // The user view collects all four and --apply asks for them again.
    let user = diagnose(&h, &token, "user", "grace", true);
    assert_eq!(cause(&user), "missing_skipped_keys", "{user:#}");
    frank.messages().sync().await.unwrap();
    assert_eq!(grace.messages().sync().await.unwrap().len(), 4);
    assert_eq!(
        cause(&diagnose(&h, &token, "user", "grace", false)),
        "healthy"
    );

    // A member stuck in an old epoch.
    alice.groups().create("team").await.unwrap();
    alice.groups().add("team", &uid("carol")).await.unwrap();
    carol.groups().sync_all().await.unwrap();
    for _ in 0..3 {
        alice.groups().update("team").await.unwrap();
    }
    alice
        .groups()
        .send("team", "while you were out")
        .await
        .unwrap();
    assert_eq!(
        atlas_testing::e2ee_health(&h.url())
            .await
            .mls_members_behind,
        1
    );
    let d = diagnose(&h, &token, "group", "team", true);
    assert_eq!(cause(&d), "member_stuck_in_old_epoch", "{d:#}");
    assert!(
        d["diagnosis"]["recovery"][0]["commands"][0]
            .as_str()
            .unwrap()
            .starts_with("atlas mls send-update --group-id team --member-id carol/")
    );
    let read = carol.groups().sync_all().await.unwrap();
    assert!(
        read.iter()
            .any(|r| r.text.as_deref() == Some("while you were out"))
    );
    assert_eq!(
        cause(&diagnose(&h, &token, "group", "team", false)),
        "healthy"
    );
    assert_eq!(
        atlas_testing::e2ee_health(&h.url())
            .await
            .mls_members_behind,
        0
    );

    // Every step `--apply` took is in the audit log, under the operator's token.
    let url = h.url();
    let acts = crate::audit::audit_entries(&token, &url, None);
    let applied: Vec<&str> = acts.iter().map(|a| a["action"].as_str().unwrap()).collect();
    for action in [
        "POST /sessions/{session_id}/reset",
        "POST /messages/{message_id}/request-resend",
        "POST /admin/groups/{group_id}/members/{member_id}/send-update",
    ] {
        assert!(
            applied.contains(&action),
            "{action} not audited: {applied:?}"
        );
    }
    assert!(
        acts.iter()
            .all(|a| a["actor"] != "anonymous" && a["outcome"] == "ok"),
        "{acts:?}"
    );
}

on_both_backends!(every_cause_is_named_and_repaired);

/// Unknown subjects, malformed ids, and tokens without the scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnose_refuses_bad_input() {
    let h = Harness::sqlite().await;
    let url = h.url();
    let token = operator_token(&h.database_url(), "diagnose");
    assert_eq!(
        cause(&diagnose(
            &h,
            &token,
            "message",
            "0190f0f0-0000-7000-8000-000000000000",
            false
        )),
        "unknown"
    );
    assert_eq!(
        cause(&diagnose(&h, &token, "user", "nobody", false)),
        "unknown"
    );
    assert_eq!(
        cause(&diagnose(&h, &token, "group", "nothing", false)),
        "unknown"
    );
    let (ok, _, stderr) = run_atlas(
        None,
        Some(&token),
        &["diagnose", "message", "../etc", "--server", &url],
    );
    assert!(!ok && stderr.contains("invalid_request"), "{stderr}");
    let narrow = operator_token(&h.database_url(), "dpop");
    let (ok, _, stderr) = run_atlas(
        None,
        Some(&narrow),
        &["diagnose", "user", "bob", "--server", &url],
    );
    assert!(!ok && stderr.contains("insufficient_scope"), "{stderr}");
    let (ok, _, stderr) = run_atlas(None, None, &["diagnose", "user", "bob", "--server", &url]);
    assert!(!ok && stderr.contains("no operator token"), "{stderr}");
    // The human form prints the steps, the cause and the commands.
    let bob = client(&h, "bob").await;
    let _ = bob;
    let (ok, stdout, stderr) = run_atlas(
        None,
        Some(&token),
        &["diagnose", "user", "bob", "--server", &url],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("Diagnosis of user bob") && stdout.contains("Cause:"),
        "{stdout}"
    );
}
