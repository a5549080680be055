//! Incidents and their timelines.
use super::*;
use atlas_ops::incident::{Change, apply, declare};
use atlas_proto::IncidentId;
use atlas_proto::incident::{
    Component, ComponentStatus, DeclareRequest, Description, IncidentStatus, Message, Severity,
    UpdateRequest,
};

fn request() -> DeclareRequest {
    DeclareRequest {
        severity: Severity::Sev2,
        description: Description::new("Messages not delivering").unwrap(),
        commander: None,
        components: vec![Component::Delivery],
        os_user: None,
    }
}

fn update(status: IncidentStatus) -> UpdateRequest {
    UpdateRequest {
        status,
        message: Message::new("<b>news</b>").unwrap(),
        severity: Some(Severity::Sev1),
        components: [(Component::E2ee, ComponentStatus::DegradedPerformance)].into(),
        reopen: false,
    }
}

/// Incidents round-trip with their timelines; a change is saved only from
/// the version it was made on, so of two concurrent changes one wins.
async fn incidents_round_trip_and_changes_are_saved_first_wins(db: Db) {
    let store = db.open().await;
    let t = now();
    let id = IncidentId::at(t, 1);
    let (mut incident, entries) = declare(id.clone(), &request(), "alice".into(), "ops", t);
    assert!(
        store
            .create_incident(&incident, &entries, &[])
            .await
            .unwrap()
    );
    assert!(
        !store
            .create_incident(&incident, &entries, &[])
            .await
            .unwrap(),
        "the id is taken"
    );
    assert_eq!(store.incident(&id).await.unwrap().as_ref(), Some(&incident));
    assert_eq!(store.incident_timeline(&id).await.unwrap(), entries);
    let unknown = IncidentId::at(t, 2);
    assert_eq!(store.incident(&unknown).await.unwrap(), None);
    assert!(store.incident_timeline(&unknown).await.unwrap().is_empty());

    // Two operators update from the same version: the second save is refused.
    let version = incident.events;
    let mut theirs = incident.clone();
    let u = update(IncidentStatus::Identified);
    let mine = apply(
        &mut incident,
        Change::Update(&u),
        "ops",
        t + Duration::seconds(1),
    )
    .unwrap();
    let note = Message::new("looking").unwrap();
    let other = apply(&mut theirs, Change::Note(&note), "bob", t).unwrap();
    let (a, b) = tokio::join!(
        store.save_incident(&incident, version, &mine, &[]),
        store.save_incident(&theirs, version, &other, &[])
    );
    assert!(
        a.unwrap() ^ b.unwrap(),
        "exactly one of two concurrent changes is saved"
    );
    let stored = store.incident(&id).await.unwrap().unwrap();
    let timeline = store.incident_timeline(&id).await.unwrap();
    assert_eq!(timeline.len() as u64, stored.events);
    assert!(stored == incident || stored == theirs);

    // Listing: newest first; closed ones leave the open list.
    let later = IncidentId::at(t + Duration::seconds(5), 1);
    let (second, first_entries) = declare(
        later.clone(),
        &request(),
        "carol".into(),
        "ops",
        t + Duration::seconds(5),
    );
    assert!(
        store
            .create_incident(&second, &first_entries, &[])
            .await
            .unwrap()
    );
    let listed: Vec<IncidentId> = store
        .incidents(true, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(listed, [later.clone(), id.clone()]);
    let mut current = store.incident(&later).await.unwrap().unwrap();
    let version = current.events;
    let resolved = UpdateRequest {
        components: Default::default(),
        ..update(IncidentStatus::Resolved)
    };
    let mut entries = apply(&mut current, Change::Update(&resolved), "ops", t).unwrap();
    entries.extend(apply(&mut current, Change::Close(None), "ops", t).unwrap());
    assert!(
        store
            .save_incident(&current, version, &entries, &[])
            .await
            .unwrap()
    );
    let open: Vec<IncidentId> = store
        .incidents(true, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(open, [id]);
    assert_eq!(store.incidents(false, 1).await.unwrap()[0].id, later);
    assert_eq!(
        store.incident(&later).await.unwrap().unwrap().status,
        IncidentStatus::Closed
    );
}

/// The impact of a window: sends in it, their late and undelivered copies.
async fn impact_counts_the_window(db: Db) {
    let store = db.open().await;
    add_user(&store, "alice", "D1").await;
    add_user(&store, "carol", "P").await;
    add_user(&store, "dan", "Q").await;
    let t = now();
    for (id, to, device) in [
        ("c1", "carol", "P"),
        ("c2", "carol", "P"),
        ("d1", "dan", "Q"),
    ] {
        let m = send("alice", to, id, vec![envelope(device, "cGF5bG9hZA==")]);
        store.store_message(&m).await.unwrap();
    }
    // carol reads the first two minutes later; dan never does.
    store
        .ack(
            &uid("carol"),
            &did("P"),
            2,
            t + Duration::minutes(2),
            &delivered("P"),
        )
        .await
        .unwrap();
    let impact = store
        .impact(t - Duration::minutes(1), t + Duration::minutes(1), 60)
        .await
        .unwrap();
    assert_eq!(
        (
            impact.messages,
            impact.copies,
            impact.delivered_late,
            impact.undelivered,
            impact.users_delayed
        ),
        (3, 3, 2, 1, 2),
        "{impact:?}"
    );
    let lenient = store
        .impact(t - Duration::minutes(1), t + Duration::minutes(1), 600)
        .await
        .unwrap();
    assert_eq!((lenient.delivered_late, lenient.users_delayed), (0, 1));
    let after = store
        .impact(t + Duration::minutes(1), t + Duration::minutes(2), 60)
        .await
        .unwrap();
    assert_eq!(
        (after.messages, after.copies, after.users_delayed),
        (0, 0, 0)
    );
    assert!(after.decryption_failures.is_empty());

    // Requests by status class, added per minute by each replica, summed.
    let minute = minute_of(t);
    for _ in 0..2 {
        let counts = [
            ("2xx".to_owned(), 90),
            ("4xx".to_owned(), 6),
            ("5xx".to_owned(), 4),
        ];
        store.add_request_counts(minute, &counts).await.unwrap();
    }
    let with_requests = store
        .impact(t - Duration::minutes(1), t + Duration::minutes(1), 60)
        .await
        .unwrap();
    assert_eq!(
        (
            with_requests.requests,
            with_requests.client_errors,
            with_requests.server_errors
        ),
        (200, 12, 8)
    );
    let next_minute = store
        .impact(t + Duration::minutes(2), t + Duration::minutes(3), 60)
        .await
        .unwrap();
    assert_eq!(next_minute.requests, 0);
}

/// The start of `t`'s minute, in Unix milliseconds.
fn minute_of(t: OffsetDateTime) -> i64 {
    let ms = (t.unix_timestamp_nanos() / 1_000_000) as i64;
    ms / 60_000 * 60_000
}

fn notice(n: u32, t: OffsetDateTime) -> atlas_store::NewNotification {
    atlas_store::NewNotification {
        notification_id: format!("n{n}"),
        destination: "slack".into(),
        summary: format!("message {n}"),
        payload: format!("{{\"text\":\"{n}\"}}"),
        created_at: t + Duration::milliseconds(i64::from(n)),
    }
}

/// Notifications are queued with their change and go out one at a time per
/// destination, in order: the head is retried before anything behind it.
async fn notifications_go_out_in_order_one_at_a_time(db: Db) {
    let store = db.open().await;
    let t = now();
    let id = IncidentId::at(t, 1);
    let (incident, entries) = declare(id.clone(), &request(), "alice".into(), "ops", t);
    let queued = [notice(1, t), notice(2, t)];
    assert!(
        store
            .create_incident(&incident, &entries, &queued)
            .await
            .unwrap()
    );
    let lease = Duration::seconds(30);
    let t = t + Duration::seconds(1);
    let first = store
        .claim_notification("slack", t, lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.notification_id, "n1");
    assert_eq!(first.incident_id, id.as_str());
    assert!(
        store
            .claim_notification("slack", t, lease)
            .await
            .unwrap()
            .is_none(),
        "held"
    );
    assert!(
        store
            .claim_notification("pagerduty", t, lease)
            .await
            .unwrap()
            .is_none()
    );
    let retry_at = t + Duration::seconds(5);
    let failed = atlas_store::Attempt {
        number: 1,
        at: t,
        outcome: "HTTP 500",
        status: "pending",
        retry_at,
        others_not_before: t,
    };
    store.finish_notification("n1", &failed).await.unwrap();
    assert!(
        store
            .claim_notification("slack", t, lease)
            .await
            .unwrap()
            .is_none(),
        "not due"
    );
    let again = store
        .claim_notification("slack", retry_at, lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.notification_id.as_str(), again.attempts), ("n1", 1));
    assert_eq!(again.last_error.as_deref(), Some("HTTP 500"));
    let delivered = atlas_store::Attempt {
        number: 2,
        at: retry_at,
        outcome: "HTTP 200",
        status: "delivered",
        retry_at,
        others_not_before: retry_at + Duration::seconds(1),
    };
    store.finish_notification("n1", &delivered).await.unwrap();
    // The destination's pace holds the next one back, whoever would send it.
    let held = store
        .claim_notification("slack", retry_at, lease)
        .await
        .unwrap();
    assert!(held.is_none(), "paced");
    let paced = retry_at + Duration::seconds(1);
    let second = store
        .claim_notification("slack", paced, lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.notification_id, "n2");
    // A lease that ran out (its holder died) is taken over.
    let later = paced + lease + Duration::seconds(1);
    let taken = store
        .claim_notification("slack", later, lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.notification_id, "n2");
    let listed = store.incident_notifications(&id).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|n| (n.notification_id.as_str(), n.status.as_str()))
            .collect::<Vec<_>>(),
        [("n1", "delivered"), ("n2", "pending")]
    );
    assert_eq!(listed[0].delivered_at, Some(retry_at));
    let mut counts = store.notification_counts().await.unwrap();
    counts.sort();
    assert_eq!(
        counts,
        [
            ("slack".into(), "delivered".into(), 1),
            ("slack".into(), "pending".into(), 1)
        ]
    );
}

/// Alerts are recorded once per start, resolved in place, found by window and pruned.
async fn alerts_are_kept_by_start_and_found_by_window(db: Db) {
    let store = db.open().await;
    let t = now();
    let alert = |status: &str, ends: Option<OffsetDateTime>, starts: OffsetDateTime| {
        atlas_proto::incident::AlertRecord {
            fingerprint: "abc123".into(),
            starts_at: starts.into(),
            ends_at: ends.map(Into::into),
            status: status.into(),
            alertname: "HighDecryptionFailureRate".into(),
            severity: "critical".into(),
            summary: "rate".into(),
            labels: [(
                "alertname".to_owned(),
                "HighDecryptionFailureRate".to_owned(),
            )]
            .into(),
        }
    };
    let start = t - Duration::minutes(10);
    store
        .record_alerts(&[alert("firing", None, start)], t)
        .await
        .unwrap();
    store
        .record_alerts(&[alert("resolved", Some(t), start)], t)
        .await
        .unwrap();
    let found = store
        .alerts_between(t - Duration::hours(1), t + Duration::hours(1), 10)
        .await
        .unwrap();
    assert_eq!(
        found,
        [alert("resolved", Some(t), start)],
        "one alert, resolved in place"
    );
    // Found by its end too; not outside.
    let by_end = store
        .alerts_between(t - Duration::minutes(1), t + Duration::minutes(1), 10)
        .await
        .unwrap();
    assert_eq!(by_end.len(), 1);
    let before = store
        .alerts_between(t - Duration::hours(2), t - Duration::hours(1), 10)
        .await
        .unwrap();
    assert!(before.is_empty());
    // Recording long after forgets it.
    let later = t + atlas_store::ALERTS_KEPT + Duration::days(1);
    store.record_alerts(&[], later).await.unwrap();
    let gone = store
        .alerts_between(t - Duration::hours(1), t + Duration::hours(1), 10)
        .await
        .unwrap();
    assert!(gone.is_empty());
}

on_both_backends!(
    alerts_are_kept_by_start_and_found_by_window,
    incidents_round_trip_and_changes_are_saved_first_wins,
    impact_counts_the_window,
    notifications_go_out_in_order_one_at_a_time
);
