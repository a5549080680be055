//! `GET /metrics`: Prometheus text exposition. The counters are this
//! process's (see `telemetry`); MLS epoch gauges are kept in the store by the
//! transactions that change a group (a scrape reads at most [`MAX_GROUPS`]
//! rows by index), so every server process reports the same truth.
//!
//! Cardinality: one series per group and gauge, `group_id` the only label,
//! for at most [`MAX_GROUPS`] groups, the most lagging first (a healthy group
//! beyond the cap is the one that matters least to the alert).
//!
//! Metadata: group names do not leave the server unless the operator asks
//! (`--metrics-group-ids`); the label is a stable salted hash otherwise, so the
//! per-group alert still works and `atlas mls show` names the group's label.
//! `--metrics-listen` serves this route on an address of its own (an internal
//! network) instead of the public one.
use crate::error::ApiError;
use crate::state::AppState;
use crate::telemetry::label;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use std::fmt::Write;

/// Most groups exported per scrape.
pub const MAX_GROUPS: u32 = 1000;

/// A gauge: name, help text, and its value for one group.
type Gauge = (
    &'static str,
    &'static str,
    fn(&atlas_store::GroupEpochHealth) -> u64,
);

/// The `group_id` label of a group: its name, or a stable salted hash of it.
pub fn group_label(state: &AppState, group_id: &str) -> String {
    if state.metrics_config.expose_group_ids {
        return group_id.to_owned();
    }
    let digest = atlas_crypto::mac_hex(&state.metrics_config.label_key, group_id.as_bytes());
    format!("g-{}", &digest[..16])
}

/// `GET /metrics` on the public listener: 404 when metrics have a listener of their own.
pub async fn public(State(state): State<AppState>) -> Result<axum::response::Response, ApiError> {
    if state.metrics_config.own_listener {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            atlas_proto::ErrorCode::NotFound,
            "metrics are served on the metrics listener",
        ));
    }
    Ok(metrics(State(state)).await?.into_response())
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&state).await?,
    ))
}

/// The disaster-recovery series: when the newest backup was taken, and the
/// newest one whose verification passed (0 when there is none).
fn render_dr(out: &mut String, dr: &atlas_store::DrSummary) {
    let seconds = |ms: Option<i64>| ms.map_or(0, |ms| ms / 1000);
    for (name, help, value) in [
        (
            "atlas_dr_backups",
            "Disaster-recovery backups recorded in this database.",
            dr.backups,
        ),
        (
            "atlas_dr_last_backup_timestamp_seconds",
            "When the newest disaster-recovery backup was taken (Unix seconds; 0 when none).",
            seconds(dr.last_backup_ms),
        ),
        (
            "atlas_dr_last_verified_backup_timestamp_seconds",
            "When the newest backup whose atlas dr verify passed was taken (Unix seconds; 0 when none).",
            seconds(dr.last_verified_backup_ms),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    let failures = crate::scheduled_backups::FAILURES.load(std::sync::atomic::Ordering::Relaxed);
    let name = "atlas_dr_scheduled_backup_failures_total";
    let _ = writeln!(
        out,
        "# HELP {name} Scheduled backups (atlas serve --backup-to) that failed since start.\n# TYPE {name} counter\n{name} {failures}"
    );
}

/// Every series `/metrics` shows, in the Prometheus text format (also the
/// emergency evidence's metrics snapshot).
pub async fn render(state: &AppState) -> Result<String, ApiError> {
    let groups = state.stores.groups.group_epoch_health(MAX_GROUPS).await?;
    let mut out = String::new();
    state.metrics.render(&mut out);
    state.metrics.latency.render(&mut out);
    crate::performance::render_process(&mut out);
    state
        .audit
        .render_metrics(&mut out, state.clock.now())
        .await;
    render_dr(&mut out, &state.stores.all.dr_summary().await?);
    let gauges: [Gauge; 3] = [
        (
            "atlas_mls_group_epoch",
            "Current epoch of an MLS group.",
            |g| g.current_epoch,
        ),
        (
            "atlas_mls_group_member_epoch",
            "Lowest epoch acknowledged by an active member of the group.",
            |g| g.min_member_epoch,
        ),
        (
            "atlas_mls_group_members_behind",
            "Active members of the group more than two epochs behind.",
            |g| g.members_behind,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for g in &groups {
            let _ = writeln!(
                out,
                "{name}{{group_id=\"{}\"}} {}",
                label(&group_label(state, &g.group_id)),
                value(g)
            );
        }
    }
    // Operator tokens are made on the server host, not through the API: the
    // database's count is the counter ("unexpected admin account creation").
    let (tokens, _) = state
        .stores
        .operator_tokens
        .operator_tokens_created()
        .await?;
    let open = state
        .stores
        .incidents
        .incidents(true, crate::routes::incidents::MAX_OPEN)
        .await?
        .len();
    let _ = writeln!(
        out,
        "# HELP atlas_operator_tokens_created_total Operator tokens ever created.\n\
         # TYPE atlas_operator_tokens_created_total counter\n\
         atlas_operator_tokens_created_total {tokens}\n\
         # HELP atlas_incidents_open Incidents declared and not yet closed.\n\
         # TYPE atlas_incidents_open gauge\n\
         atlas_incidents_open {open}"
    );
    let locked = state.lockdown.current();
    let _ = writeln!(
        out,
        "# HELP atlas_lockdown_active 1 while an emergency lockdown closes the client API (atlas emergency lift ends it).\n\
         # TYPE atlas_lockdown_active gauge\n\
         atlas_lockdown_active {}\n\
         # HELP atlas_lockdown_since_seconds Unix time the lockdown in force began (0 when none).\n\
         # TYPE atlas_lockdown_since_seconds gauge\n\
         atlas_lockdown_since_seconds {}",
        u8::from(locked.is_some()),
        locked.map_or(0, |l| l.since.0.unix_timestamp())
    );
    // Incident notifications by state: failed ones are a page nobody got.
    let counts = state.stores.incidents.notification_counts().await?;
    let _ = writeln!(
        out,
        "# HELP atlas_incident_notifications Incident notifications by destination and delivery state."
    );
    let _ = writeln!(out, "# TYPE atlas_incident_notifications gauge");
    for destination in atlas_ops::notify::Destination::ALL {
        for status in ["pending", "delivered", "failed"] {
            let n = counts
                .iter()
                .find(|(d, s, _)| d == destination.as_str() && s == status)
                .map_or(0, |(_, _, n)| *n);
            let _ = writeln!(
                out,
                "atlas_incident_notifications{{destination=\"{}\",status=\"{status}\"}} {n}",
                destination.as_str()
            );
        }
    }
    Ok(out)
}

/// `/metrics` on the API listener (answers only when no separate listener is set).
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(public))
}

/// Only `/metrics`, for its own listener (`--metrics-listen`).
pub fn listener_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}
