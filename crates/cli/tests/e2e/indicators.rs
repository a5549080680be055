//! Indicators of compromise (seed `004`, §5.2): refused admin addresses,
//! failed authentications and operator tokens created show in /metrics and in
//! the timeline of the open incident.
use atlas_testing::{Harness, operator_token, run_atlas, series};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indicators_are_counted_and_written_into_the_open_incident() {
    let mut h = Harness::sqlite().await;
    h.stop().await;
    let mut config = h.config();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin_allow = vec!["127.0.0.1/32".parse().unwrap()];
    config.indicator_interval = std::time::Duration::from_secs(1);
    let server = atlas_server::start(config).await.unwrap();
    let url = server.public_url.clone();
    let op = operator_token(&h.database_url(), "incidents");
    let (ok, out, err) = run_atlas(
        None,
        Some(&op),
        &[
            "incident",
            "declare",
            "SEV-2",
            "Suspicious activity",
            "--server",
            &url,
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // An admin request from 127.0.0.2, outside --admin-allow: refused before its token is read.
    let http = atlas_client::http_client().unwrap(); // installs the TLS provider too
    let elsewhere = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let refused = elsewhere
        .get(format!("{url}/admin/incidents"))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "forbidden", "{body}");
    // Forty requests with a made-up token; a new operator token.
    for _ in 0..40 {
        let answer = http
            .get(format!("{url}/messages"))
            .header("authorization", "DPoP made.up.token")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401);
    }
    operator_token(&h.database_url(), "keys");

    let metrics = atlas_testing::metrics_text(&url).await;
    assert_eq!(
        series(&metrics, r#"atlas_admin_refused_total{reason="address"}"#),
        1.0
    );
    assert!(
        series(
            &metrics,
            r#"atlas_auth_failures_total{reason="invalid_token"}"#
        ) >= 40.0
    );
    assert_eq!(series(&metrics, "atlas_operator_tokens_created_total"), 2.0);
    assert_eq!(series(&metrics, "atlas_incidents_open"), 1.0);
    assert!(
        metrics.contains("atlas_admin_requests_total{token_id="),
        "{metrics}"
    );

    // Within a few looks, each is an entry of the open incident's timeline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let wanted = [
        "Key access from unexpected sources",
        "High volume of failed auth attempts",
        "Admin account creation:",
    ];
    loop {
        let (ok, out, err) = run_atlas(
            None,
            Some(&op),
            &["incident", "show", &id, "--server", &url, "--json"],
        );
        assert!(ok, "{err}");
        let shown: Value = serde_json::from_str(&out).unwrap();
        let texts: Vec<String> = shown["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "indicator")
            .map(|e| {
                assert_eq!(e["actor"], "atlas");
                e["text"].as_str().unwrap().to_owned()
            })
            .collect();
        if wanted.iter().all(|w| texts.iter().any(|t| t.contains(w))) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{texts:?}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    // The requests of the window, by class, for the post-mortem's error rates.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let impact: Value = http
            .get(format!("{url}/admin/incidents/{id}/impact"))
            .bearer_auth(&op)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if impact["client_errors"].as_u64().unwrap_or(0) >= 41 {
            assert!(impact["requests"].as_u64().unwrap() > 41, "{impact}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{impact}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    server.stop().await;
}
