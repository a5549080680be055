//! Decryption outcome reports and their caps.
use super::*;
use crate::groups::commit;
use atlas_proto::e2ee::FailureCode;

pub(crate) fn report(
    message_id: &str,
    group: Option<&str>,
    code: Option<&str>,
    latency_ms: Option<u64>,
) -> NewReport {
    NewReport {
        message_id: message_id.into(),
        group_id: group.map(|g| g.parse().unwrap()),
        success: code.is_none(),
        code: code.map(|c| c.parse().unwrap()),
        latency_ms,
    }
}

/// Caps no test of first outcomes reaches.
pub(crate) fn uncapped(now: time::OffsetDateTime) -> atlas_store::FailureCaps {
    atlas_store::FailureCaps {
        since: now - Duration::hours(1),
        per_reporter: 1000,
        per_sender: 1000,
    }
}

/// `(reported, succeeded, failed, recovered)`.
pub(crate) fn tally(c: &atlas_store::OutcomeCounts) -> (u64, u64, u64, u64) {
    (c.reported, c.succeeded, c.failed, c.recovered)
}

async fn decryption_reports_count_first_outcomes_and_recoveries(db: Db) {
    use ReportChange::*;
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    add_user(&store, "bob", "D1").await;
    for id in ["c1", "c2", "c3"] {
        store
            .store_message(&send("alice", "bob", id, vec![envelope("D1", "x")]))
            .await
            .unwrap();
    }
    let later = now() + Duration::seconds(5);
    let (bob, d1) = (uid("bob"), did("D1"));
    let changes = store
        .record_reports(
            &bob,
            &d1,
            &[
                report("m-c1", None, None, Some(10)),
                report("m-c2", None, Some("KeyNotFound"), None),
                report("m-c3", None, None, Some(u64::MAX)),
                report("m-nope", None, None, Some(1)),
            ],
            uncapped(later),
            later,
        )
        .await
        .unwrap();
    assert_eq!(changes, vec![Succeeded, Failed, Succeeded, UnknownMessage]);
    // The sender did not receive its own message: its report does not count.
    assert_eq!(
        store
            .record_reports(
                &uid("alice"),
                &d1,
                &[report("m-c1", None, Some("KeyNotFound"), None)],
                uncapped(later),
                later
            )
            .await
            .unwrap(),
        vec![UnknownMessage]
    );
    // Repeats change nothing that counts; a failure after a success is ignored.
    let repeats = [
        report("m-c2", None, Some("RatchetDesync"), None),
        report("m-c1", None, Some("DuplicateMessage"), None),
        report("m-c1", None, None, Some(10)),
    ];
    assert_eq!(
        store
            .record_reports(&bob, &d1, &repeats, uncapped(later), later)
            .await
            .unwrap(),
        vec![Unchanged, Unchanged, Unchanged]
    );
    let counts = store
        .outcome_counts(later - Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(tally(&counts), (3, 2, 1, 0));
    assert_eq!(
        counts.failures_by_code,
        vec![("RatchetDesync".to_owned(), 1)]
    );
    // An absurd latency was capped by the message's age (about 5 s).
    assert!(
        (2_500..=2_600).contains(&counts.avg_latency_ms),
        "{}",
        counts.avg_latency_ms
    );

    assert_eq!(
        store
            .record_reports(
                &bob,
                &d1,
                &[report("m-c2", None, None, Some(30))],
                uncapped(later),
                later
            )
            .await
            .unwrap(),
        vec![Recovered]
    );
    let counts = store
        .outcome_counts(later - Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(tally(&counts), (3, 2, 0, 1));
    let rows = store.message_reports("", "m-c2").await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "recovered");
    assert_eq!(rows[0].first_code, Some(FailureCode::KeyNotFound));
    assert_eq!(rows[0].sender_id, "alice");
    assert_eq!(
        store
            .user_reports(&bob, later - Duration::hours(1), 10)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        store
            .outcome_counts(later + Duration::seconds(1))
            .await
            .unwrap()
            .reported,
        0
    );

    // Group messages: only members other than the sender may report, only application messages.
    let group = NewGroup {
        group_id: "team".parse().unwrap(),
        creator: "alice/D1".into(),
        public_state: b"s".to_vec(),
        group_info: b"i".to_vec(),
        now: now(),
    };
    store.create_group(&group).await.unwrap();
    let seq = store
        .append_group_message("team", 0, "alice/D1", b"ct", now())
        .await
        .unwrap();
    let group_report = [report(
        &seq.to_string(),
        Some("team"),
        Some("EpochTooOld"),
        None,
    )];
    assert_eq!(
        store
            .record_reports(&bob, &d1, &group_report, uncapped(later), later)
            .await
            .unwrap(),
        vec![UnknownMessage]
    );
    assert_eq!(
        store
            .record_reports(&uid("alice"), &d1, &group_report, uncapped(later), later)
            .await
            .unwrap(),
        vec![UnknownMessage]
    );
    store
        .sequence_commit(&commit("team", "c1", 0, &["bob/D1"]))
        .await
        .unwrap();
    assert_eq!(
        store
            .record_reports(&bob, &d1, &group_report, uncapped(later), later)
            .await
            .unwrap(),
        vec![Failed]
    );
    let rows = store
        .message_reports("team", &seq.to_string())
        .await
        .unwrap();
    assert_eq!(
        (
            rows[0].sender_id.as_str(),
            rows[0].sender_device_id.as_str()
        ),
        ("alice", "D1")
    );
    let commit_seq = [report(&(seq + 1).to_string(), Some("team"), None, None)];
    assert_eq!(
        store
            .record_reports(&bob, &d1, &commit_seq, uncapped(later), later)
            .await
            .unwrap(),
        vec![UnknownMessage]
    );
}

/// Each reporting user and each sending user count a few failures per window;
/// the rest are kept but left out of the figures (see `atlas_proto::e2ee`).
async fn failures_count_up_to_the_caps(db: Db) {
    use ReportChange::*;
    let store = db.open().await;
    for user in ["mallory", "bob", "carol", "dave"] {
        add_user(&store, user, "D1").await;
    }
    for (from, to, id) in [
        ("mallory", "bob", "j1"),
        ("mallory", "bob", "j2"),
        ("mallory", "bob", "j3"),
        ("mallory", "carol", "j4"),
        ("bob", "carol", "j5"),
        ("mallory", "dave", "j7"),
    ] {
        store
            .store_message(&send(from, to, id, vec![envelope("D1", "x")]))
            .await
            .unwrap();
    }
    let later = now() + Duration::seconds(5);
    let caps = atlas_store::FailureCaps {
        since: later - Duration::hours(1),
        per_reporter: 2,
        per_sender: 3,
    };
    let fail = |id: &str| report(id, None, Some("KeyNotFound"), None);
    let changes = store
        .record_reports(
            &uid("bob"),
            &did("D1"),
            &[fail("m-j1"), fail("m-j2"), fail("m-j3")],
            caps,
            later,
        )
        .await
        .unwrap();
    assert_eq!(
        changes,
        vec![Failed, Failed, FailedUncounted],
        "two per reporter"
    );
    let changes = store
        .record_reports(
            &uid("carol"),
            &did("D1"),
            &[fail("m-j4"), fail("m-j5")],
            caps,
            later,
        )
        .await
        .unwrap();
    // mallory's third counted failure fills the sender cap; bob as a sender is still under it.
    assert_eq!(changes, vec![Failed, Failed]);
    let changes = store
        .record_reports(&uid("dave"), &did("D1"), &[fail("m-j7")], caps, later)
        .await
        .unwrap();
    assert_eq!(changes, vec![FailedUncounted], "three per sender");
    let counts = store
        .outcome_counts(later - Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(
        (counts.failed, counts.uncounted, counts.reported),
        (4, 2, 4)
    );
    assert_eq!((counts.failing_reporters, counts.failing_senders), (2, 2));
    // Uncounted reports are kept for diagnosis.
    assert_eq!(store.message_reports("", "m-j3").await.unwrap().len(), 1);
    // A new window starts the caps afresh.
    store
        .store_message(&send("mallory", "bob", "j6", vec![envelope("D1", "x")]))
        .await
        .unwrap();
    let next = atlas_store::FailureCaps {
        since: later + Duration::seconds(1),
        ..caps
    };
    let changes = store
        .record_reports(
            &uid("bob"),
            &did("D1"),
            &[fail("m-j6")],
            next,
            later + Duration::seconds(2),
        )
        .await
        .unwrap();
    assert_eq!(changes, vec![Failed]);
}

on_both_backends!(
    decryption_reports_count_first_outcomes_and_recoveries,
    failures_count_up_to_the_caps,
);
