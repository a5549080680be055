//! MLS KeyPackages, group commits, member epochs and the epoch gauges.
use super::*;

pub(crate) fn key_package(n: u8, last_resort: bool) -> NewKeyPackage {
    NewKeyPackage {
        key_package_ref: format!("ref-{n}"),
        bytes: vec![n; 8],
        last_resort,
        binding: Some(format!("binding-{n}")),
    }
}

async fn key_packages_are_claimed_once_then_last_resort(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    let counts = store
        .upload_key_packages(
            &uid("alice"),
            &did("D1"),
            &[
                key_package(1, false),
                key_package(2, false),
                key_package(9, true),
            ],
            now(),
        )
        .await
        .unwrap();
    assert_eq!(
        counts,
        KeyPackageCounts {
            available: 2,
            last_resort: true
        }
    );
    assert!(matches!(
        store
            .upload_key_packages(&uid("alice"), &did("NOPE"), &[key_package(3, false)], now())
            .await,
        Err(StoreError::UnknownDevice)
    ));
    // Concurrent claims: each ordinary KeyPackage once, then the last-resort one.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .claim_key_packages(&uid("alice"), &[], now())
                .await
                .unwrap()
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        let got = t.await.unwrap();
        assert_eq!(got.len(), 1);
        let package = got[0].1.clone().unwrap();
        assert_eq!(
            package.binding,
            Some(format!("binding-{}", package.bytes[0]))
        );
        claimed.push(package.bytes[0]);
    }
    claimed.sort();
    assert_eq!(claimed, [1, 2, 9, 9, 9, 9]);
    assert_eq!(
        store
            .key_package_counts(&uid("alice"), &did("D1"))
            .await
            .unwrap(),
        KeyPackageCounts {
            available: 0,
            last_resort: true
        }
    );
    // A new last-resort package replaces the old one.
    store
        .upload_key_packages(&uid("alice"), &did("D1"), &[key_package(10, true)], now())
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_key_packages(&uid("alice"), &[], now())
            .await
            .unwrap()[0]
            .1
            .clone()
            .map(|p| p.bytes),
        Some(vec![10; 8])
    );
    assert!(matches!(
        store.claim_key_packages(&uid("nobody"), &[], now()).await,
        Err(StoreError::UnknownUser)
    ));
    add_user(&store, "bob", "B1").await;
    assert_eq!(
        store
            .claim_key_packages(&uid("bob"), &[], now())
            .await
            .unwrap(),
        vec![(did("B1"), None)]
    );
    // Packages from before bindings do not count, and bound ones replace them.
    let unbound = NewKeyPackage {
        binding: None,
        ..key_package(20, false)
    };
    let counts = store
        .upload_key_packages(&uid("bob"), &did("B1"), &[unbound], now())
        .await
        .unwrap();
    assert_eq!(counts.available, 0);
    store
        .upload_key_packages(&uid("bob"), &did("B1"), &[key_package(21, false)], now())
        .await
        .unwrap();
    let claimed = store
        .claim_key_packages(&uid("bob"), &[], now())
        .await
        .unwrap();
    assert_eq!(claimed[0].1.as_ref().map(|p| p.bytes[0]), Some(21));
    let again = store
        .claim_key_packages(&uid("bob"), &[], now())
        .await
        .unwrap();
    assert_eq!(
        again,
        vec![(did("B1"), None)],
        "the unbound package was replaced"
    );
}

pub(crate) fn commit(group: &str, id: &str, from: u64, added: &[&str]) -> NewCommit {
    NewCommit {
        group_id: group.parse().unwrap(),
        commit_id: id.into(),
        sender_id: "alice/D1".into(),
        from_epoch: from,
        public_state: format!("state-{id}").into_bytes(),
        group_info: format!("info-{id}").into_bytes(),
        commit: format!("commit-{id}").into_bytes(),
        welcome: (!added.is_empty()).then(|| {
            (
                added.iter().map(|m| m.to_string()).collect(),
                format!("welcome-{id}").into_bytes(),
            )
        }),
        added: added.iter().map(|m| m.to_string()).collect(),
        removed: vec![],
        now: now(),
    }
}

/// `(group, epoch, lowest member epoch, members behind)` as `/metrics` reads them.
pub(crate) async fn gauges(store: &Arc<dyn Store>, limit: u32) -> Vec<(String, u64, u64, u64)> {
    store
        .group_epoch_health(limit)
        .await
        .unwrap()
        .into_iter()
        .map(|g| {
            (
                g.group_id,
                g.current_epoch,
                g.min_member_epoch,
                g.members_behind,
            )
        })
        .collect()
}

/// The epoch gauges are kept current by every commit, acknowledgement, removal
/// and rollback (not computed per scrape), most lagging group first.
async fn mls_gauges_follow_commits_acks_and_rollbacks(db: Db) {
    let store = db.open().await;
    for id in ["a", "b"] {
        store
            .create_group(&NewGroup {
                group_id: id.parse().unwrap(),
                creator: "alice/D1".into(),
                public_state: b"s".to_vec(),
                group_info: b"i".to_vec(),
                now: now(),
            })
            .await
            .unwrap();
    }
    let row = |g: &str, e, m, b| (g.to_owned(), e, m, b);
    assert_eq!(
        gauges(&store, 10).await,
        [row("a", 0, 0, 0), row("b", 0, 0, 0)]
    );
    store
        .sequence_commit(&commit("a", "a1", 0, &["bob/B1"]))
        .await
        .unwrap();
    for (i, from) in (1..4).enumerate() {
        store
            .sequence_commit(&commit("a", &format!("a{}", i + 2), from, &[]))
            .await
            .unwrap();
    }
    store
        .sequence_commit(&commit("b", "b1", 0, &["carol/C1"]))
        .await
        .unwrap();
    store
        .acknowledge_epoch("a", "alice/D1", 4, now())
        .await
        .unwrap();
    // bob joined at epoch 1 and acknowledged nothing: he counts as at epoch 0.
    assert_eq!(
        gauges(&store, 10).await,
        [row("a", 4, 0, 1), row("b", 1, 0, 0)]
    );
    assert_eq!(gauges(&store, 1).await, [row("a", 4, 0, 1)]);
    store
        .acknowledge_epoch("a", "bob/B1", 3, now())
        .await
        .unwrap();
    assert_eq!(gauges(&store, 10).await[0], row("a", 4, 3, 0));
    // Removing the laggard lifts the group's lowest epoch.
    store
        .acknowledge_epoch("a", "bob/B1", 1, now())
        .await
        .unwrap();
    let mut removal = commit("a", "a5", 4, &[]);
    removal.removed = vec!["bob/B1".into()];
    store.sequence_commit(&removal).await.unwrap();
    assert_eq!(gauges(&store, 10).await[..1], [row("a", 5, 4, 0)]);
    store
        .rollback_group(&atlas_store::Rollback {
            group_id: "a".into(),
            target_epoch: 2,
            from_epoch: 5,
            members_at_target: vec!["alice/D1".into()],
            rejoin: vec![],
            now: now(),
        })
        .await
        .unwrap();
    assert_eq!(
        gauges(&store, 10).await,
        [row("b", 1, 0, 0), row("a", 2, 2, 0)]
    );
}

async fn group_commits_are_sequenced_first_wins(db: Db) {
    let store = db.open().await;
    let group = NewGroup {
        group_id: "team".parse().unwrap(),
        creator: "alice/D1".into(),
        public_state: b"state-0".to_vec(),
        group_info: b"info-0".to_vec(),
        now: now(),
    };
    store.create_group(&group).await.unwrap();
    assert!(matches!(
        store.create_group(&group).await,
        Err(StoreError::GroupExists)
    ));
    assert_eq!(
        store
            .sequence_commit(&commit("team", "c1", 0, &["bob/B1", "carol/C1"]))
            .await
            .unwrap(),
        CommitOutcome::Accepted { seq: 1 }
    );
    // A second commit from epoch 0 loses and learns the winner.
    match store
        .sequence_commit(&commit("team", "late", 0, &[]))
        .await
        .unwrap()
    {
        CommitOutcome::Lost {
            current_epoch: 1,
            winner: Some(w),
        } => assert_eq!(w.body, b"commit-c1"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.sequence_commit(&commit("nope", "x", 0, &[])).await,
        Err(StoreError::UnknownGroup)
    ));
    // Many concurrent commits from the same epoch: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .sequence_commit(&commit("team", &format!("race-{i}"), 1, &[]))
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), CommitOutcome::Accepted { .. }) {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    let g = store.group("team").await.unwrap().unwrap();
    assert_eq!(g.current_epoch, 2);
    assert!(g.public_state.starts_with(b"state-race-"));
    assert_eq!(store.group_info("team", None).await.unwrap().unwrap().0, 2);
    assert_eq!(
        store.group_info("team", Some(1)).await.unwrap().unwrap().1,
        b"info-c1"
    );

    // The Welcome is stored once and listed for each added member.
    for member in ["bob/B1", "carol/C1"] {
        let welcomes = store.welcomes(member).await.unwrap();
        assert_eq!(welcomes.len(), 1);
        assert_eq!(
            (welcomes[0].body.as_slice(), welcomes[0].epoch),
            (&b"welcome-c1"[..], 1)
        );
    }
    assert!(store.welcomes("dave/D1").await.unwrap().is_empty());

    // Application messages: members only; the log keeps one order.
    let seq = store
        .append_group_message("team", 2, "bob/B1", b"hi", now())
        .await
        .unwrap();
    assert!(matches!(
        store
            .append_group_message("team", 2, "mallory/M", b"x", now())
            .await,
        Err(StoreError::NotAGroupMember)
    ));
    assert!(matches!(
        store
            .append_group_message("nope", 0, "bob/B1", b"x", now())
            .await,
        Err(StoreError::UnknownGroup)
    ));
    let log = store.group_messages("team", 0, None, 100).await.unwrap();
    let kinds: Vec<_> = log.iter().map(|m| (m.kind.as_str(), m.epoch)).collect();
    assert_eq!(kinds, [("commit", 1), ("commit", 2), ("application", 2)]);
    assert_eq!(log.last().unwrap().seq, seq);
    assert_eq!(
        store
            .group_messages("team", seq, None, 100)
            .await
            .unwrap()
            .len(),
        0
    );

    // Acknowledgements: new members start one epoch behind; a commit stays
    // pending until every active member has acknowledged its epoch.
    let members = store.group_members("team").await.unwrap();
    let epochs: Vec<_> = members
        .iter()
        .map(|m| (m.member_id.as_str(), m.epoch))
        .collect();
    assert_eq!(epochs, [("alice/D1", 0), ("bob/B1", 0), ("carol/C1", 0)]);
    for member in ["alice/D1", "bob/B1"] {
        store
            .acknowledge_epoch("team", member, 2, now())
            .await
            .unwrap();
    }
    store
        .acknowledge_epoch("team", "carol/C1", 1, now())
        .await
        .unwrap();
    assert!(matches!(
        store.acknowledge_epoch("team", "mallory/M", 1, now()).await,
        Err(StoreError::NotAGroupMember)
    ));
    assert!(matches!(
        store.acknowledge_epoch("nope", "bob/B1", 1, now()).await,
        Err(StoreError::UnknownGroup)
    ));
    let members = store.group_members("team").await.unwrap();
    assert_eq!(members[2].epoch, 1);
    assert!(
        members[0]
            .last_commit
            .as_deref()
            .unwrap()
            .starts_with("race-")
    );
    // Acknowledging beyond the current epoch is capped.
    store
        .acknowledge_epoch("team", "carol/C1", 99, now())
        .await
        .unwrap();
    assert_eq!(store.group_members("team").await.unwrap()[2].epoch, 2);

    // The runbook's three diagnosis queries, verbatim.
    let queries = [
        "SELECT group_id, member_id, epoch, last_commit FROM mls_group_members WHERE member_id='carol/C1' AND group_id='team';",
        "SELECT group_id, current_epoch, last_epoch_change FROM mls_groups WHERE group_id='team';",
        "SELECT commit_id, sender_id, epoch, status FROM mls_commits WHERE group_id='team' AND status='pending';",
    ];
    match &db {
        Db::Postgres(pg) => {
            let out: Vec<String> = queries.iter().map(|q| pg.psql(q).unwrap()).collect();
            assert!(out[0].contains("carol/C1"), "{}", out[0]);
            assert!(out[1].contains("team"), "{}", out[1]);
            assert!(
                out[2].contains("(0 rows)"),
                "every member acknowledged: {}",
                out[2]
            );
        }
        Db::Sqlite(_) => {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&db.url()).await.unwrap();
            for q in &queries[..2] {
                let rows = sqlx::query(sqlx::AssertSqlSafe(*q))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                assert_eq!(rows.len(), 1, "{q}");
            }
            let pending = sqlx::query(sqlx::AssertSqlSafe(queries[2]))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            assert!(pending.is_empty());
        }
    }
}

fn action(id: &str, member: &str, minutes: i64) -> atlas_store::MemberAction {
    atlas_store::MemberAction {
        action_id: id.parse().unwrap(),
        group_id: "team".parse().unwrap(),
        member_id: member.into(),
        action: "update".into(),
        requested_by: "op-1".into(),
        requested_at: now() + Duration::minutes(minutes),
        done_at: None,
        outcome: None,
    }
}

/// Recovery steps: pending per member oldest first, listed per group newest
/// first, completed once and only by their member; a rollback asks every
/// member past the target to rejoin in the same transaction.
async fn member_actions_are_pending_until_their_member_reports(db: Db) {
    let store = db.open().await;
    store
        .create_group(&NewGroup {
            group_id: "team".parse().unwrap(),
            creator: "alice/D1".into(),
            public_state: b"s".to_vec(),
            group_info: b"i".to_vec(),
            now: now(),
        })
        .await
        .unwrap();
    for a in [
        action("a1", "bob/B1", 0),
        action("a2", "bob/B1", 1),
        action("a3", "carol/C1", 2),
    ] {
        store.request_member_action(&a).await.unwrap();
    }
    let ids = |actions: Vec<atlas_store::MemberAction>| -> Vec<String> {
        actions
            .into_iter()
            .map(|a| a.action_id.to_string())
            .collect()
    };
    assert_eq!(
        ids(store.pending_member_actions("bob/B1").await.unwrap()),
        ["a1", "a2"]
    );
    assert_eq!(
        ids(store.group_member_actions("team").await.unwrap()),
        ["a3", "a2", "a1"]
    );
    assert!(
        !store
            .complete_member_action("a1", "carol/C1", "done", now())
            .await
            .unwrap(),
        "only its member completes it"
    );
    assert!(
        store
            .complete_member_action("a1", "bob/B1", "done", now())
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete_member_action("a1", "bob/B1", "done", now())
            .await
            .unwrap()
    );
    assert_eq!(
        ids(store.pending_member_actions("bob/B1").await.unwrap()),
        ["a2"]
    );
    let done = store.group_member_actions("team").await.unwrap();
    let a1 = done.iter().find(|a| a.action_id == "a1").unwrap();
    assert_eq!(a1.outcome.as_deref(), Some("done"));
    assert!(a1.done_at.is_some());

    store
        .sequence_commit(&commit("team", "c1", 0, &["bob/B1"]))
        .await
        .unwrap();
    let mut rejoin = action("r1", "bob/B1", 3);
    rejoin.action = "rejoin".into();
    store
        .rollback_group(&atlas_store::Rollback {
            group_id: "team".parse().unwrap(),
            target_epoch: 0,
            from_epoch: 1,
            members_at_target: vec!["alice/D1".into()],
            rejoin: vec![rejoin],
            now: now(),
        })
        .await
        .unwrap();
    let pending = store.pending_member_actions("bob/B1").await.unwrap();
    assert_eq!(pending.last().map(|a| a.action.as_str()), Some("rejoin"));
}

on_both_backends!(
    key_packages_are_claimed_once_then_last_resort,
    group_commits_are_sequenced_first_wins,
    mls_gauges_follow_commits_acks_and_rollbacks,
    member_actions_are_pending_until_their_member_reports,
);
