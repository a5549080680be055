//! Emergency actions over the admin API (scope `emergency`): the lockdown that
//! replaces the manual's "scale to zero" and "deny all" (seed 004 §3.1), and
//! its lift. Each needs its typed phrase; each is all-or-nothing (one row) and
//! audited by the router; each is written into every open incident, whose
//! notifications carry it to Slack.
use crate::auth::operator::{Admin, scope};
use crate::control::ControlEvent;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use atlas_ops::incident::Change;
use atlas_proto::emergency::{
    LIFT_PHRASE, LiftRequest, LockdownRequest, LockdownState, LockdownView, SHUTDOWN_PHRASE,
};
use atlas_proto::incident::Message;
use atlas_proto::{ErrorCode, IncidentId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

fn confirm(given: &str, phrase: &str) -> Result<(), ApiError> {
    if given == phrase {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::ConfirmationMismatch,
        format!("type '{phrase}' exactly to confirm"),
    ))
}

/// Writes `text` into every open incident; the incidents told.
async fn tell_incidents(state: &AppState, actor: &str, text: &str) -> Vec<IncidentId> {
    let Ok(message) = Message::new(text) else {
        return Vec::new();
    };
    let open = match state
        .stores
        .incidents
        .incidents(true, super::incidents::MAX_OPEN)
        .await
    {
        Ok(open) => open,
        Err(e) => {
            tracing::error!(error = %e, "open incidents unreadable: the emergency action is not in their timelines");
            return Vec::new();
        }
    };
    let mut told = Vec::new();
    for incident in open {
        match super::incidents::change(state, &incident.id, actor, Change::Note(&message)).await {
            Ok(_) => told.push(incident.id),
            Err(e) => {
                tracing::error!(incident = %incident.id, error = ?e, "emergency action not in the timeline")
            }
        }
    }
    told
}

fn actor(operator: &crate::auth::operator::OperatorAuth) -> String {
    match operator.label.as_str() {
        "" => operator.token_id.clone(),
        label => format!("{} ({label})", operator.token_id),
    }
}

/// `GET /admin/emergency`: the lockdown in force, if any.
async fn show(
    State(state): State<AppState>,
    _operator: Admin<scope::Emergency>,
) -> Result<Json<LockdownView>, ApiError> {
    Ok(Json(LockdownView {
        lockdown: state.stores.lockdown.lockdown().await?,
        incidents_told: Vec::new(),
    }))
}

/// `POST /admin/emergency/lockdown {"confirm": "CONFIRM SHUTDOWN", "reason": …}`.
async fn lockdown(
    State(state): State<AppState>,
    operator: Admin<scope::Emergency>,
    ApiJson(request): ApiJson<LockdownRequest>,
) -> Result<Json<LockdownView>, ApiError> {
    confirm(&request.confirm, SHUTDOWN_PHRASE)?;
    let who = actor(&operator);
    let lockdown = LockdownState {
        since: state.clock.now().into(),
        actor: who.clone(),
        reason: request
            .reason
            .as_ref()
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
    };
    if !state.stores.lockdown.start_lockdown(&lockdown).await? {
        let since = state
            .stores
            .lockdown
            .lockdown()
            .await?
            .map(|l| format!(" since {} by {}", l.since, l.actor))
            .unwrap_or_default();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AlreadyLockedDown,
            format!("a lockdown is already in force{since}"),
        ));
    }
    state.announce(ControlEvent::LockdownChanged).await;
    let reason = match lockdown.reason.as_str() {
        "" => String::new(),
        r => format!(" Reason: {r}"),
    };
    let told = tell_incidents(
        &state,
        &operator.token_id,
        &format!(
            "🛑 EMERGENCY LOCKDOWN by {who}: client API closed (503 locked_down), no tokens issued, every socket closed.{reason}"
        ),
    )
    .await;
    Ok(Json(LockdownView {
        lockdown: Some(lockdown),
        incidents_told: told,
    }))
}

/// `POST /admin/emergency/lift {"confirm": "LIFT LOCKDOWN"}`.
async fn lift(
    State(state): State<AppState>,
    operator: Admin<scope::Emergency>,
    ApiJson(request): ApiJson<LiftRequest>,
) -> Result<Json<LockdownView>, ApiError> {
    confirm(&request.confirm, LIFT_PHRASE)?;
    let Some(ended) = state.stores.lockdown.lift_lockdown().await? else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NotLockedDown,
            "there is no lockdown to lift",
        ));
    };
    state.announce(ControlEvent::LockdownChanged).await;
    let told = tell_incidents(
        &state,
        &operator.token_id,
        &format!(
            "✅ Lockdown lifted by {} (in force since {}): client API open again.",
            actor(&operator),
            ended.since
        ),
    )
    .await;
    Ok(Json(LockdownView {
        lockdown: None,
        incidents_told: told,
    }))
}

/// `POST /admin/emergency/evidence`: the forensic bundle, signed (step 1 of the shutdown).
async fn evidence(
    State(state): State<AppState>,
    _operator: Admin<scope::Emergency>,
) -> Result<Json<atlas_proto::emergency::EvidenceBundle>, ApiError> {
    Ok(Json(crate::evidence::bundle(&state).await?))
}

/// `POST /admin/emergency/revoke-keys {"kind": "signing"}` (seed 004 §3.3).
async fn revoke_keys(
    State(state): State<AppState>,
    operator: Admin<scope::Emergency>,
    crate::limits::ClientAddr(source): crate::limits::ClientAddr,
    ApiJson(request): ApiJson<atlas_proto::emergency::RevokeKeysRequest>,
) -> Result<Json<atlas_proto::emergency::RevokeKeysView>, ApiError> {
    let view = crate::revocation::revoke(
        &state,
        request.kind,
        request.user_id.as_ref(),
        &operator,
        &source,
    )
    .await?;
    let _ = tell_incidents(
        &state,
        &operator.token_id,
        &format!(
            "🔑 Emergency key revocation ({}) by {}: {} keys revoked, {} refresh tokens revoked; devices sign in again with their device keys.",
            request.kind.as_str(),
            actor(&operator),
            view.revoked.len(),
            view.refresh_tokens_revoked
        ),
    )
    .await;
    Ok(Json(view))
}

/// The admin routes.
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/emergency", get(show))
        .route("/emergency/lockdown", post(lockdown))
        .route("/emergency/lift", post(lift))
        .route("/emergency/evidence", post(evidence))
        .route("/emergency/revoke-keys", post(revoke_keys))
}
