//! Incidents (seed `004`, §2.1, §6.1, §7.1) through `atlas incident`, on both
//! backends: declared, updated through the status-page stages, closed, with
//! every refusal clear and changing nothing.
use atlas_testing::{Harness, RawDevice, operator_token, run_atlas};
use serde_json::{Value, json};

/// `atlas incident ARGS --server URL --json` with `token`: success and its JSON, or stderr.
pub(crate) fn incident(url: &str, token: &str, args: &[&str]) -> Result<Value, String> {
    let mut all = vec!["incident"];
    all.extend_from_slice(args);
    all.extend(["--server", url, "--json"]);
    let (ok, out, err) = run_atlas(None, Some(token), &all);
    if ok {
        Ok(serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}")))
    } else {
        assert!(!err.contains("panicked"), "{err}");
        Err(err)
    }
}

fn kinds(view: &Value) -> Vec<String> {
    view["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn rfc3339(v: &Value) -> time::OffsetDateTime {
    atlas_proto::timestamp::parse_rfc3339(v.as_str().unwrap()).unwrap()
}

async fn incidents_are_declared_updated_and_closed(mut h: Harness) {
    let url = h.url();
    let op = operator_token(&h.database_url(), "incidents");

    // Declared: the manual's id, severity meanings, the token's label as commander.
    let declared = incident(
        &url,
        &op,
        &[
            "declare",
            "SEV-2",
            "Messages not delivering <script>x</script>",
            "--component",
            "delivery",
        ],
    )
    .unwrap();
    let id = declared["id"].as_str().unwrap().to_owned();
    assert!(atlas_proto::IncidentId::new(id.as_str()).is_ok(), "{id}");
    assert_eq!(
        (
            &declared["status"],
            &declared["severity_name"],
            &declared["response_minutes"],
            &declared["commander"]
        ),
        (
            &json!("investigating"),
            &json!("High"),
            &json!(30),
            &json!("operator")
        ),
        "{declared}"
    );
    assert_eq!(declared["components"]["delivery"], "partial_outage");
    assert_eq!(
        declared["description"], "Messages not delivering <script>x</script>",
        "stored as typed; the status page escapes it"
    );
    let due = rfc3339(&declared["next_update_due"]) - rfc3339(&declared["declared_at"]);
    assert_eq!(due, time::Duration::minutes(30), "SEV-2: every 30 min");
    assert_eq!(kinds(&declared), ["declared", "component"]);

    // Several at once: distinct ids, several open.
    let (ok, text, err) = run_atlas(
        None,
        Some(&op),
        &[
            "incident",
            "declare",
            "4",
            "Typo on the login page",
            "--server",
            &url,
        ],
    );
    assert!(ok, "{err}");
    assert!(
        text.contains("INCIDENT DECLARED") && text.contains("Severity: SEV-4 (Low"),
        "the manual's banner: {text}"
    );
    let commanded = incident(
        &url,
        &op,
        &["declare", "SEV-3", "Slow sends", "--commander", "carol"],
    )
    .unwrap();
    assert_eq!(commanded["commander"], "carol");
    assert!(
        commanded.get("next_update_due").is_none(),
        "SEV-3: none due"
    );
    let open = incident(&url, &op, &["list", "--open"]).unwrap();
    let ids: Vec<&str> = open["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{open}");
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        3
    );

    // Through the stages, with a severity and a component change recorded.
    let identified = incident(
        &url,
        &op,
        &[
            "update",
            &id,
            "--status",
            "identified",
            "--message",
            "Replica 2 queue stuck",
            "--severity",
            "SEV-1",
            "--component",
            "e2ee=degraded_performance",
        ],
    )
    .unwrap();
    assert_eq!(identified["severity"], "SEV-1");
    assert_eq!(
        kinds(&identified)[2..],
        ["severity", "component", "update"],
        "{identified}"
    );
    incident(&url, &op, &["assign", &id, "--commander", "dave"]).unwrap();
    incident(
        &url,
        &op,
        &["note", &id, "Rolled back to the previous image"],
    )
    .unwrap();
    // Traffic during the incident: three sends bob cannot read yet, two of
    // which he reports as failed to decrypt.
    let alice = RawDevice::register(&url, "alice").await;
    let bob = RawDevice::register(&url, "bob").await;
    let sent = alice.send_junk("bob", "RAW", 3).await;
    assert_eq!(bob.report_failures(&sent[..2]).await, 2);

    // Refused, each with its code, changing nothing.
    let before = incident(&url, &op, &["show", &id]).unwrap();
    let refusals: [(&[&str], &str); 6] = [
        (&["close", &id], "invalid_transition"),
        (
            &["update", &id, "--status", "closed", "--message", "x"],
            "close an incident with",
        ),
        (
            &["update", &id, "--status", "fixed", "--message", "x"],
            "investigating, identified",
        ),
        (&["show", "INC-20200101000000"], "unknown_incident"),
        (&["show", "INC-1"], "INC-YYYYMMDDHHMMSS"),
        (&["declare", "SEV-5", "x"], "not a severity"),
    ];
    for (args, expected) in refusals {
        let err = incident(&url, &op, args).unwrap_err();
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let huge = "x".repeat(100_000);
    let escape = "red \u{1b}[31m text";
    for (args, expected) in [
        (vec!["declare", "SEV-3", huge.as_str()], "at most 500"),
        (vec!["note", &id, escape], "control characters"),
        (vec!["declare", "SEV-3", "   "], "must not be empty"),
    ] {
        let err = incident(&url, &op, &args).unwrap_err();
        assert!(err.contains(expected), "{err}");
        assert!(
            err.len() < 1000 && !err.contains('\u{1b}'),
            "not echoed: {err}"
        );
    }
    assert_eq!(incident(&url, &op, &["show", &id]).unwrap(), before);

    // Resolved; back to work only when said; closed; then only notes.
    incident(
        &url,
        &op,
        &["update", &id, "--status", "resolved", "--message", "Fixed"],
    )
    .unwrap();
    let err = incident(
        &url,
        &op,
        &["update", &id, "--status", "monitoring", "--message", "x"],
    )
    .unwrap_err();
    assert!(err.contains("--reopen"), "{err}");
    incident(
        &url,
        &op,
        &[
            "update",
            &id,
            "--status",
            "monitoring",
            "--message",
            "Back",
            "--reopen",
        ],
    )
    .unwrap();
    incident(
        &url,
        &op,
        &["update", &id, "--status", "resolved", "--message", "Fixed"],
    )
    .unwrap();
    let closed = incident(
        &url,
        &op,
        &["close", &id, "--resolution", "Replica 2 replaced"],
    )
    .unwrap();
    assert_eq!(
        (&closed["status"], &closed["resolution"]),
        (&json!("closed"), &json!("Replica 2 replaced"))
    );
    assert!(
        closed["closed_by"]
            .as_str()
            .unwrap()
            .starts_with("operator (token ")
    );
    let pm = rfc3339(&closed["postmortem_due"]) - rfc3339(&closed["closed_at"]);
    assert_eq!(pm, time::Duration::hours(48));
    assert!(closed.get("next_update_due").is_none());
    let err = incident(
        &url,
        &op,
        &["update", &id, "--status", "resolved", "--message", "x"],
    )
    .unwrap_err();
    assert!(err.contains("incident_closed"), "{err}");
    incident(&url, &op, &["note", &id, "Customers informed"]).unwrap();
    let open = incident(&url, &op, &["list", "--open"]).unwrap();
    assert_eq!(open["incidents"].as_array().unwrap().len(), 2);
    let all = incident(&url, &op, &["list"]).unwrap();
    assert_eq!(all["incidents"].as_array().unwrap().len(), 3);

    // The post-mortem: the template, with duration, impact and timeline computed.
    let file = h.profile("postmortem.md");
    let (ok, _, err) = run_atlas(
        None,
        Some(&op),
        &[
            "incident",
            "postmortem",
            &id,
            "--output",
            file.to_str().unwrap(),
            "--server",
            &url,
        ],
    );
    assert!(ok, "{err}");
    let md = std::fs::read_to_string(&file).unwrap();
    assert!(md.starts_with(&format!("# Post-Mortem: {id}\n")), "{md}");
    assert!(
        md.contains("- **Severity**: SEV-1 (Critical); declared as SEV-2"),
        "{md}"
    );
    assert!(md.contains("- **Duration**: "), "{md}");
    assert!(
        md.contains("3 messages sent during the incident (3 device copies)"),
        "{md}"
    );
    assert!(md.contains("3 not delivered yet, for 1 users"), "{md}");
    assert!(
        md.contains("2 decryption failures reported by 1 users"),
        "{md}"
    );
    assert!(
        md.contains("Root cause identified: Replica 2 queue stuck"),
        "{md}"
    );
    assert!(md.contains("Incident closed: Replica 2 replaced"), "{md}");
    assert!(md.contains("&lt;script&gt;"), "HTML escaped: {md}");
    assert!(md.contains("## Action Items"), "{md}");
    let err = incident(&url, &op, &["postmortem", "INC-20200101000000"]).unwrap_err();
    assert!(err.contains("unknown_incident"), "{err}");

    // Timestamps never run backwards; every entry names its actor.
    let shown = incident(&url, &op, &["show", &id]).unwrap();
    let entries = shown["timeline"].as_array().unwrap();
    let times: Vec<_> = entries.iter().map(|e| rfc3339(&e["at"])).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{shown}");
    assert!(
        entries
            .iter()
            .all(|e| e["actor"].as_str().unwrap().contains("token"))
    );
    assert_eq!(entries.last().unwrap()["kind"], "note");

    // Another scope, or none: refused.
    let keys = operator_token(&h.database_url(), "keys");
    let err = incident(&url, &keys, &["list"]).unwrap_err();
    assert!(err.contains("insufficient_scope"), "{err}");
    let (ok, _, err) = run_atlas(None, None, &["incident", "list", "--server", &url]);
    assert!(!ok && err.contains("ATLAS_ADMIN_TOKEN"), "{err}");

    // The API refuses malformed bodies with a clear code, never a 500.
    let http = atlas_client::http_client().unwrap();
    for body in [
        json!({"severity": "SEV-9", "description": "x"}),
        json!({"severity": "SEV-2"}),
        json!({"severity": "SEV-2", "description": "x", "extra": 1}),
        json!({"severity": "SEV-2", "description": "a\u{0}b"}),
        json!({"severity": "SEV-2", "description": "x", "components": ["kitchen"]}),
    ] {
        let answer = http
            .post(format!("{url}/admin/incidents"))
            .bearer_auth(&op)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let refusal: Value = answer.json().await.unwrap();
        assert_eq!(
            (status, &refusal["error"]),
            (400, &json!("invalid_request")),
            "{body}: {refusal}"
        );
    }
    let answer = http
        .get(format!("{url}/admin/incidents/..%2Fetc"))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    for query in [
        "late_after=0",
        "late_after=86401",
        "late_after=soon",
        "bogus=1",
    ] {
        let answer = http
            .get(format!("{url}/admin/incidents/{id}/impact?{query}"))
            .bearer_auth(&op)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{query}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{query}: {body}");
    }
    h.stop().await;
}

on_both_backends!(incidents_are_declared_updated_and_closed);

/// A server on `h`'s database notifying `slack` and `pagerduty` (one receiver's paths).
async fn notifying_server(h: &Harness, receiver: &str) -> atlas_server::RunningServer {
    let mut config = h.config();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.notify = atlas_server::notify::NotifyConfig {
        slack_webhook_url: Some(format!("{receiver}/slack")),
        pagerduty_routing_key: Some("R0UTINGKEY".into()),
        pagerduty_events_url: format!("{receiver}/v2/enqueue"),
        request_timeout: std::time::Duration::from_secs(1),
    };
    atlas_server::start(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sev2_reaches_slack_and_pagerduty_through_429_500_and_a_restart() {
    use atlas_testing::WebhookReceiver;
    let mut h = Harness::sqlite().await;
    h.stop().await;
    // First a 429 with Retry-After, then a 500, then success: for Slack and PagerDuty alike.
    let receiver = WebhookReceiver::start(&[(429, Some(1)), (500, None)], 200).await;
    let server = notifying_server(&h, &receiver.url).await;
    let url = server.public_url.clone();
    let op = operator_token(&h.database_url(), "incidents");

    // Alertmanager reported an alert five minutes before anyone declared.
    let am = operator_token(&h.database_url(), "alerts");
    let fired = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let alert = |status: &str, ends: &str| {
        json!({"version": "4", "status": status, "receiver": "atlas", "groupKey": "{}:{}",
            "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://alertmanager", "alerts": [{
                "status": status,
                "labels": {"alertname": "HighDecryptionFailureRate", "severity": "critical"},
                "annotations": {"summary": "Decryption failure rate above 10/min"},
                "startsAt": atlas_proto::timestamp::rfc3339(fired),
                "endsAt": ends, "generatorURL": "http://prometheus", "fingerprint": "6f1a2b3c"}]})
    };
    let http = atlas_client::http_client().unwrap();
    let post = |body: Value, token: &str| {
        http.post(format!("{url}/admin/alerts"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let answer = post(alert("firing", "0001-01-01T00:00:00Z"), &am)
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // Malformed, oversized or unauthorised webhooks are refused and change nothing.
    for (body, token, status) in [
        (json!({"version": "3", "alerts": []}), am.as_str(), 400),
        (
            json!({"version": "4", "alerts": [{"status": "firing"}]}),
            am.as_str(),
            400,
        ),
        (
            json!({"version": "4", "alerts": vec![alert("firing", "")["alerts"][0].clone(); 1001]}),
            am.as_str(),
            413,
        ),
        (alert("firing", ""), op.as_str(), 403),
    ] {
        let answer = post(body, token).await.unwrap();
        assert_eq!(answer.status(), status);
    }

    let declared = incident(&url, &op, &["declare", "SEV-2", "Messages not delivering"]).unwrap();
    let id = declared["id"].as_str().unwrap().to_owned();
    for (status, message) in [("identified", "Queue stuck"), ("resolved", "Fixed")] {
        incident(
            &url,
            &op,
            &["update", &id, "--status", status, "--message", message],
        )
        .unwrap();
    }
    let resolved_at = atlas_proto::timestamp::rfc3339(time::OffsetDateTime::now_utc());
    let answer = post(alert("resolved", &resolved_at), &am).await.unwrap();
    assert_eq!(answer.status(), 200);
    incident(&url, &op, &["close", &id]).unwrap();

    // The alert that fired before the declaration is the first timeline entry,
    // and the post-mortem's first alert.
    let shown = incident(&url, &op, &["show", &id]).unwrap();
    let first = &shown["timeline"][0];
    assert_eq!(
        (&first["kind"], &first["alertname"], &first["status"]),
        (
            &json!("alert"),
            &json!("HighDecryptionFailureRate"),
            &json!("firing")
        ),
        "{shown}"
    );
    assert_eq!(
        kinds(&shown).iter().filter(|k| *k == "alert").count(),
        2,
        "firing and resolved"
    );
    let pm = incident(&url, &op, &["postmortem", &id]).unwrap();
    let md = pm["markdown"].as_str().unwrap();
    assert!(
        md.contains("First alert: Alert fired: HighDecryptionFailureRate — Decryption failure rate above 10/min"),
        "{md}"
    );
    for computed in [
        "- **Duration**: ",
        "- **Impact**: ",
        "Incident declared (SEV-2)",
        "Root cause identified: Queue stuck",
        "Service restored: Fixed",
        "Incident closed: ",
    ] {
        assert!(md.contains(computed), "{computed}: {md}");
    }
    // The status page, its JSON and its feed show each stage of the incident.
    let page = http.get(format!("{url}/status")).send().await.unwrap();
    let page = page.text().await.unwrap();
    let feed = http
        .get(format!("{url}/status/feed.atom"))
        .send()
        .await
        .unwrap();
    let feed = feed.text().await.unwrap();
    for stage in ["Identified", "Resolved"] {
        assert!(
            page.contains(&format!("<strong>{stage}</strong>")),
            "{stage}: {page}"
        );
        let title = format!("<title>{stage}: Messages not delivering</title>");
        assert!(feed.contains(&title), "{stage}: {feed}");
    }
    let summary: Value = http
        .get(format!("{url}/api/v2/summary.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(summary["status"]["indicator"], "none", "closed: {summary}");

    // Every Slack message arrives once, in order; PagerDuty gets one trigger and
    // one resolve with the incident id as dedup_key and the routing key.
    let slack = receiver.accepted("/slack", 4, 60).await;
    let texts: Vec<&str> = slack
        .iter()
        .map(|r| r.body["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert!(
        texts[0].starts_with(&format!("🚨 INCIDENT {id} (SEV-2)")),
        "{texts:?}"
    );
    assert!(
        texts[1].contains("Identified") && texts[1].contains("Queue stuck"),
        "{texts:?}"
    );
    assert!(
        texts[2].contains("Resolved") && texts[2].contains("Fixed"),
        "{texts:?}"
    );
    assert!(
        texts[3].contains("has been resolved and closed"),
        "{texts:?}"
    );
    let pd = receiver.accepted("/v2/enqueue", 2, 60).await;
    let actions: Vec<&str> = pd
        .iter()
        .map(|r| r.body["event_action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "resolve"]);
    for event in &pd {
        assert_eq!(event.body["dedup_key"], id.as_str());
        assert_eq!(event.body["routing_key"], "R0UTINGKEY");
    }
    assert_eq!(
        pd[0].body["payload"]["summary"],
        format!("{id}: Messages not delivering")
    );
    assert_eq!(pd[0].body["payload"]["severity"], "error");
    let statuses: Vec<u16> = receiver.received().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses[..2],
        [429, 500],
        "the script was played: {statuses:?}"
    );
    // `incident show` says what was delivered and after how many attempts.
    let shown = incident(&url, &op, &["show", &id]).unwrap();
    let notes = shown["notifications"].as_array().unwrap();
    assert_eq!(notes.len(), 6, "{shown}");
    assert!(notes.iter().all(|n| n["status"] == "delivered"), "{shown}");
    let attempts: u64 = notes.iter().map(|n| n["attempts"].as_u64().unwrap()).sum();
    assert_eq!(attempts, 6 + 2, "two refused attempts, retried: {shown}");

    // A receiver answering 500 forever: the notification waits, visibly, and
    // the server keeps serving; a restart loses nothing.
    receiver.answer_with(500);
    let second = incident(&url, &op, &["declare", "SEV-4", "Typo on the login page"]).unwrap();
    let second_id = second["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let waiting = loop {
        let shown = incident(&url, &op, &["show", &second_id]).unwrap();
        let n = shown["notifications"][0].clone();
        if n["attempts"].as_u64().unwrap() >= 2 {
            break n;
        }
        assert!(std::time::Instant::now() < deadline, "{shown}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        (&waiting["status"], &waiting["last_error"]),
        (&json!("pending"), &json!("HTTP 500")),
        "{waiting}"
    );
    assert!(waiting["next_attempt_at"].is_string(), "{waiting}");
    let health = http.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the server keeps serving");
    let metrics = atlas_testing::metrics_text(&url).await;
    let pending = r#"atlas_incident_notifications{destination="slack",status="pending"}"#;
    assert_eq!(atlas_testing::series(&metrics, pending), 1.0, "{metrics}");
    let delivered = r#"atlas_incident_notifications{destination="pagerduty",status="delivered"}"#;
    assert_eq!(atlas_testing::series(&metrics, delivered), 2.0);
    // A receiver that hangs: the attempt times out (1 s here, 10 s by default) and is retried.
    receiver.answer_with(atlas_testing::HANG);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let shown = incident(&url, &op, &["show", &second_id]).unwrap();
        let n = &shown["notifications"][0];
        if n["last_error"] == "network: timed out" {
            assert_eq!(n["status"], "pending", "{n}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{shown}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let health = http.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the server keeps serving");
    server.stop().await;
    receiver.answer_with(200);
    let server = notifying_server(&h, &receiver.url).await;
    let slack = receiver.accepted("/slack", 5, 60).await;
    assert_eq!(slack.len(), 5, "delivered after the restart");
    assert!(slack[4].body["text"].as_str().unwrap().contains(&second_id));
    server.stop().await;
}
