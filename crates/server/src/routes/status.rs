//! The public status page: `GET /status` (HTML, no JavaScript),
//! `GET /api/v2/status.json` and `/api/v2/summary.json` (Statuspage's shapes)
//! and `GET /status/feed.atom`. Public and unauthenticated, so the page is
//! computed at most once every few seconds, whatever the traffic.
use crate::error::ApiError;
use crate::state::AppState;
use atlas_ops::status::{Signals, StatusPage, atom, build, html};
use atlas_proto::status::StatusJson;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a computed page is served before it is computed again.
const FRESH_FOR: Duration = Duration::from_secs(5);
/// Resolved incidents stay on the page this long.
const PAST_FOR: time::Duration = time::Duration::days(7);
/// Incidents looked at.
const RECENT: u32 = 100;

/// The last page computed, and when.
#[derive(Default)]
pub struct StatusCache(tokio::sync::Mutex<Option<(Instant, Arc<StatusPage>)>>);

/// The page, computed again when older than [`FRESH_FOR`].
async fn page(state: &AppState) -> Result<Arc<StatusPage>, ApiError> {
    let mut cached = state.status_page.0.lock().await;
    if let Some((at, page)) = cached.as_ref()
        && at.elapsed() < FRESH_FOR
    {
        return Ok(page.clone());
    }
    let storage_ok = state.stores.all.ping().await.is_ok();
    let redis_ok = match &state.redis {
        Some(redis) => Some(redis.ping().await),
        None => None,
    };
    // The E2EE verdict needs the database; without it, storage is down anyway.
    let (e2ee, members_behind) = match super::health::e2ee(State(state.clone())).await {
        Ok(Json(h)) => (h.status, h.mls_members_behind),
        Err(_) => ("healthy".into(), 0),
    };
    let signals = Signals {
        storage_ok,
        redis_ok,
        draining: *state.shutdown.borrow(),
        e2ee,
        members_behind,
    };
    let now = state.clock.now();
    let mut incidents = Vec::new();
    if storage_ok {
        for incident in state.stores.incidents.incidents(false, RECENT).await? {
            let over = incident.resolved_at.or(incident.closed_at);
            if over.is_some_and(|t| now - t > PAST_FOR) {
                continue;
            }
            let timeline = state
                .stores
                .incidents
                .incident_timeline(&incident.id)
                .await?;
            incidents.push((incident, timeline));
        }
    }
    let url = format!("{}/status", state.config.public_url);
    let page = Arc::new(build(&url, now, &signals, &incidents));
    *cached = Some((Instant::now(), page.clone()));
    Ok(page)
}

/// `GET /status`.
pub async fn status_html(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let page = page(&state).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html(&page),
    ))
}

/// `GET /api/v2/status.json`.
pub async fn status_json(State(state): State<AppState>) -> Result<Json<StatusJson>, ApiError> {
    let page = page(&state).await?;
    Ok(Json(StatusJson {
        page: page.summary.page.clone(),
        status: page.summary.status.clone(),
    }))
}

/// `GET /api/v2/summary.json`.
pub async fn summary_json(
    State(state): State<AppState>,
) -> Result<Json<atlas_proto::status::Summary>, ApiError> {
    Ok(Json(page(&state).await?.summary.clone()))
}

/// `GET /status/feed.atom`.
pub async fn feed(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let page = page(&state).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")],
        atom(&page),
    ))
}

/// This module's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/status", get(status_html))
        .route("/status/feed.atom", get(feed))
        .route("/api/v2/status.json", get(status_json))
        .route("/api/v2/summary.json", get(summary_json))
}
