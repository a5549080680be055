//! What the server shows from outside: `/health/e2ee`, `/metrics`, JSON.

/// `GET /health/e2ee`.
pub async fn e2ee_health(url: &str) -> atlas_proto::e2ee::E2eeHealth {
    serde_json::from_value(get_json(&format!("{url}/health/e2ee")).await).unwrap()
}

/// `GET /metrics` as text.
pub async fn metrics_text(url: &str) -> String {
    let http = atlas_client::http_client().unwrap();
    let answer = http.get(format!("{url}/metrics")).send().await.unwrap();
    answer.text().await.unwrap()
}

/// The value of one series in a `/metrics` text.
pub fn series(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from /metrics"))
}

/// `atlas_crypto_operations_total{operation="decrypt",status=STATUS}`.
pub fn decrypt_count(metrics: &str, status: &str) -> f64 {
    series(
        metrics,
        &format!("atlas_crypto_operations_total{{operation=\"decrypt\",status=\"{status}\"}}"),
    )
}

/// `GET url` as JSON, without authentication.
pub async fn get_json(url: &str) -> serde_json::Value {
    let http = atlas_client::http_client().unwrap();
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// `/health/e2ee` shows `failed` unrecovered and `recovered` recovered messages.
pub async fn assert_health_counts(url: &str, failed: u64, recovered: u64) {
    let health = e2ee_health(url).await;
    assert_eq!(
        (
            health.failed_decryptions_last_hour,
            health.recovered_last_hour
        ),
        (failed, recovered),
        "{health:?}"
    );
}
