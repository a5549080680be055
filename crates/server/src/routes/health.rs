//! `GET /health`: liveness with a storage round trip; `GET /livez` and
//! `GET /readyz` for orchestrators; `GET /health/e2ee`: last hour's decryption
//! outcomes as devices reported them.
use crate::error::ApiError;
use crate::state::AppState;
use atlas_proto::api::{HealthResponse, StorageHealth};
use atlas_proto::e2ee::{E2eeHealth, health_status};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

/// 200 when storage answers, 503 otherwise.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    let started = std::time::Instant::now();
    let ok = state.stores.all.ping().await.is_ok();
    let lockdown = state.lockdown.current();
    let body = HealthResponse {
        status: match (ok, &lockdown) {
            (false, _) => "unavailable",
            (true, Some(_)) => "locked_down",
            (true, None) => "ok",
        }
        .into(),
        lockdown,
        storage: StorageHealth {
            backend: state.stores.all.backend().into(),
            ok,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        },
        version: env!("CARGO_PKG_VERSION").into(),
    };
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}

/// `GET /livez`: the process is alive and serving; checks nothing else, so an
/// orchestrator restarts a server only when the server itself is stuck.
pub async fn livez() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive" }))
}

/// `GET /readyz`: 200 when this server should get traffic — the database and,
/// when configured, Redis answer, and it is not shutting down; 503 otherwise,
/// with each check's verdict.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let database = state.stores.all.ping().await.is_ok();
    let redis = match &state.redis {
        Some(redis) => Some(redis.ping().await),
        None => None,
    };
    let draining = *state.shutdown.borrow();
    let ready = database && redis != Some(false) && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": { "database": database, "redis": redis, "draining": draining },
    });
    (status, Json(body))
}

/// `GET /health/e2ee`: always 200 (a poor E2EE figure is no reason to restart
/// a server), the verdict is in `status`; thresholds in `atlas_proto::e2ee`.
pub async fn e2ee(State(state): State<AppState>) -> Result<Json<E2eeHealth>, ApiError> {
    let since = state.clock.now() - time::Duration::HOUR;
    let counts = state.stores.reports.outcome_counts(since).await?;
    let ratio = |n: u64| {
        if counts.reported == 0 {
            0.0
        } else {
            n as f64 / counts.reported as f64
        }
    };
    let failure_ratio = ratio(counts.failed);
    let behind: u64 = state
        .stores
        .groups
        .group_epoch_health(crate::routes::metrics::MAX_GROUPS)
        .await?
        .iter()
        .map(|g| g.members_behind)
        .sum();
    let status = match health_status(
        failure_ratio,
        counts.failing_reporters,
        counts.failing_senders,
    ) {
        "healthy" if behind > 0 => "degraded",
        status => status,
    };
    // Four decimals: the runbook's example shows 0.998, and more digits are noise.
    let success_rate = ((1.0 - failure_ratio) * 10_000.0).round() / 10_000.0;
    Ok(Json(E2eeHealth {
        status: status.into(),
        decryption_success_rate: success_rate,
        avg_latency_ms: counts.avg_latency_ms,
        failed_decryptions_last_hour: counts.failed,
        recovered_last_hour: counts.recovered,
        reports_last_hour: counts.reported,
        failures_by_code: counts.failures_by_code.into_iter().collect(),
        mls_members_behind: behind,
        failing_users_last_hour: counts.failing_reporters,
        uncounted_failures_last_hour: counts.uncounted,
    }))
}

/// This module's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/health/e2ee", get(e2ee))
}
