//! `POST /reports/decryption`: devices report each decryption outcome (a code
//! and a latency, never content). A report counts only for a message the
//! device received, and only its first outcome or a recovery moves the
//! figures, so no device can inflate or hide failures by repeating itself.
//! And a failure counts (in `/health/e2ee` and the alert counter) only while
//! its reporting user and its sending user are under their hourly caps, so a
//! few colluding accounts cannot page on-call (`atlas_proto::e2ee`).
use crate::auth::DeviceAuth;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use atlas_proto::ErrorCode;
use atlas_proto::e2ee::{
    COUNTED_FAILURES_PER_REPORTER, COUNTED_FAILURES_PER_SENDER, DecryptionReport, FailureCode,
    MAX_REPORTS_PER_REQUEST, Outcome, RejectedReport, ReportsRequest, ReportsResponse,
};
use atlas_proto::keys::KeyStatus;
use atlas_store::{FailureCaps, NewReport, ReportChange};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;

/// Report requests a device may make at once.
pub const BURST: u32 = 30;
/// Report requests per device and minute, sustained.
pub const PER_MINUTE: u32 = 60;

/// Why a single report is refused before it reaches storage.
fn check(report: &DecryptionReport) -> Result<(), &'static str> {
    let id_ok = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if !id_ok(&report.message_id, 64) {
        return Err("message_id is not a message id");
    }
    if report.group_id.as_deref().is_some_and(|g| !id_ok(g, 128)) {
        return Err("group_id is not a group id");
    }
    match (report.outcome, report.code) {
        (Outcome::Failure, None) => Err("a failure needs a code"),
        (Outcome::Success, Some(_)) => Err("a success has no code"),
        _ => Ok(()),
    }
}

/// A device cannot tell a key it never had from one it dropped after a
/// rotation; the server can: if the pre-key message was encrypted to a key
/// `user_keys` marks `rotated`, the key was rotated before the message arrived.
async fn refine_key_not_found(
    state: &AppState,
    auth: &DeviceAuth,
    message_id: &str,
) -> Result<FailureCode, ApiError> {
    let copies = state.stores.repair.message_copies(message_id).await?;
    let Some(key) = copies
        .iter()
        .find(|c| {
            c.recipient_id == auth.user_id.as_str()
                && c.recipient_device_id == auth.device_id.as_str()
        })
        .and_then(|c| c.prekey_key.as_deref())
    else {
        return Ok(FailureCode::KeyNotFound);
    };
    let used = state
        .stores
        .key_checks
        .key_by_public(auth.user_id.as_str(), auth.device_id.as_str(), key)
        .await?;
    Ok(match used {
        Some(k) if k.status == KeyStatus::Rotated => FailureCode::KeyRotated,
        _ => FailureCode::KeyNotFound,
    })
}

/// `POST /reports/decryption`.
pub async fn record(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiJson(req): ApiJson<ReportsRequest>,
) -> Result<Json<ReportsResponse>, ApiError> {
    if req.reports.is_empty() {
        return Err(ApiError::invalid("at least one report is required"));
    }
    if req.reports.len() > MAX_REPORTS_PER_REQUEST {
        return Err(ApiError::too_large(format!(
            "at most {MAX_REPORTS_PER_REQUEST} reports per request"
        )));
    }
    let reporter = format!("{}/{}", auth.user_id, auth.device_id);
    if !state.report_limit.allow(&reporter, state.clock.seconds()) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            format!("at most {PER_MINUTE} report requests per minute and device"),
        ));
    }
    let mut rejected = Vec::new();
    let mut accepted: Vec<DecryptionReport> = Vec::new();
    for report in req.reports {
        match check(&report) {
            Ok(()) => accepted.push(report),
            Err(why) => rejected.push(RejectedReport {
                message_id: report.message_id.chars().take(64).collect(),
                reason: format!("{}: {why}", ErrorCode::InvalidRequest.as_str()),
            }),
        }
    }
    for report in accepted.iter_mut() {
        if report.code == Some(FailureCode::KeyNotFound) && report.group_id.is_none() {
            report.code = Some(refine_key_not_found(&state, &auth, &report.message_id).await?);
        }
    }
    let rows: Vec<NewReport> = accepted
        .iter()
        .map(|r| NewReport {
            message_id: r.message_id.clone(),
            group_id: r.group_id.clone(),
            success: r.outcome == Outcome::Success,
            code: r.code,
            latency_ms: r.latency_ms,
        })
        .collect();
    let now = state.clock.now();
    let caps = FailureCaps {
        since: now - time::Duration::HOUR,
        per_reporter: COUNTED_FAILURES_PER_REPORTER,
        per_sender: COUNTED_FAILURES_PER_SENDER,
    };
    let changes = state
        .stores
        .reports
        .record_reports(&auth.user_id, &auth.device_id, &rows, caps, now)
        .await?;
    let mut recorded = 0;
    for (report, change) in accepted.iter().zip(changes) {
        let group = report.group_id.as_deref().unwrap_or("");
        match change {
            ReportChange::UnknownMessage => rejected.push(RejectedReport {
                message_id: report.message_id.clone(),
                reason: format!(
                    "{}: this device received no such message",
                    ErrorCode::UnknownMessage.as_str()
                ),
            }),
            ReportChange::Failed | ReportChange::FailedUncounted => {
                let counted = change == ReportChange::Failed;
                if counted {
                    state.metrics.crypto("decrypt", "failure");
                }
                let code = report.code.map_or("", |c| c.as_str());
                tracing::warn!(
                    message_id = %report.message_id, group_id = group, reporter = %reporter, code, counted,
                    "decrypt error: {code}"
                );
            }
            ReportChange::Succeeded => state.metrics.crypto("decrypt", "success"),
            ReportChange::Recovered => {
                state.metrics.crypto("decrypt", "recovered");
                tracing::info!(message_id = %report.message_id, group_id = group, reporter = %reporter, "decrypt recovered");
            }
            ReportChange::Unchanged => {}
        }
        if change != ReportChange::UnknownMessage {
            recorded += 1;
        }
    }
    Ok(Json(ReportsResponse { recorded, rejected }))
}

/// This module's routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/reports/decryption", post(record))
}
