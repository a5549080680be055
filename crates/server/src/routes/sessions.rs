//! Olm session resets: `POST /sessions/{session_id}/reset` (one of the
//! session's devices with DPoP, or an operator with Bearer scope `messages`)
//! retires a session at both ends. Each device learns of it over the
//! WebSocket or on its next sync (`GET /sessions/resets`), forgets the
//! session and acknowledges; the next message starts a new one. Messages
//! still in flight on the old session are listed, and their recipients ask
//! for resends when they cannot read them.
use crate::auth::{Caller, DeviceAuth};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use atlas_proto::api::PushEvent;
use atlas_proto::repair::{
    SessionResetNotice, SessionResetResponse, SessionResetView, SessionResets, SessionResetsAck,
};
use atlas_proto::{DeviceId, ErrorCode, SessionId, UserId};
use atlas_store::SessionResetRecord;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

/// Most sessions acknowledged at once.
const MAX_ACK: usize = 100;

fn unknown_session() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::UnknownSession,
        "no message was sent on this session by or to you",
    )
}

/// `POST /sessions/{session_id}/reset`.
pub async fn reset(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(session_id): ApiPath<SessionId>,
) -> Result<(StatusCode, Json<SessionResetResponse>), ApiError> {
    // Stored and announced in the base64url form; the standard form is accepted too.
    let session_id = session_id.url_form();
    if let Caller::Operator(op) = &caller {
        op.require(atlas_proto::OperatorScope::Messages)?;
    }
    let parties = state
        .stores
        .repair
        .session_parties(&session_id)
        .await?
        .ok_or_else(unknown_session)?;
    let ends = [parties.sender.clone(), parties.recipient.clone()];
    let requested_by = match &caller {
        Caller::Device(d) => {
            let me = (d.user_id.to_string(), d.device_id.to_string());
            if !ends.contains(&me) {
                return Err(unknown_session());
            }
            format!("device:{}/{}", me.0, me.1)
        }
        Caller::Operator(op) => format!("operator:{}", op.token_id),
    };
    let now = state.clock.now();
    let rows: Vec<SessionResetRecord> = [(&ends[0], &ends[1]), (&ends[1], &ends[0])]
        .into_iter()
        .map(
            |((user, device), (peer_user, peer_device))| SessionResetRecord {
                session_id: session_id.to_string(),
                user_id: user.clone(),
                device_id: device.clone(),
                peer_user_id: peer_user.clone(),
                peer_device_id: peer_device.clone(),
                requested_by: requested_by.clone(),
                reset_at: now,
                seen_at: None,
            },
        )
        .collect();
    let in_flight = state.stores.repair.reset_session(&rows).await?;
    tracing::info!(%session_id, by = %requested_by, in_flight = in_flight.len(), "olm session reset");
    for (user, device) in &ends {
        if let (Ok(user), Ok(device)) = (UserId::new(user.as_str()), DeviceId::new(device.as_str()))
        {
            let notice = SessionResetNotice {
                session_id: session_id.clone(),
            };
            state
                .fanout
                .publish_notice(&user, &device, PushEvent::SessionReset(notice));
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(SessionResetResponse {
            session_id,
            devices: ends.iter().map(|(u, d)| format!("{u}/{d}")).collect(),
            in_flight,
        }),
    ))
}

/// `GET /sessions/resets`: resets this device has not applied yet.
pub async fn unseen(
    State(state): State<AppState>,
    auth: DeviceAuth,
) -> Result<Json<SessionResets>, ApiError> {
    let rows = state
        .stores
        .repair
        .unseen_session_resets(&auth.user_id, &auth.device_id)
        .await?;
    Ok(Json(SessionResets {
        resets: rows
            .iter()
            .map(|r| -> Result<_, ApiError> {
                Ok(SessionResetView {
                    session_id: ApiError::stored_id(&*r.session_id)?,
                    peer: format!("{}/{}", r.peer_user_id, r.peer_device_id),
                    requested_by: r.requested_by.clone(),
                    reset_at: r.reset_at.into(),
                })
            })
            .collect::<Result<_, _>>()?,
    }))
}

/// `POST /sessions/resets/ack`: this device retired these sessions.
pub async fn ack(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiJson(body): ApiJson<SessionResetsAck>,
) -> Result<StatusCode, ApiError> {
    if body.session_ids.len() > MAX_ACK {
        return Err(ApiError::too_large(format!(
            "at most {MAX_ACK} sessions per acknowledgement"
        )));
    }
    let ids: Vec<String> = body
        .session_ids
        .iter()
        .map(|id| id.url_form().to_string())
        .collect();
    state
        .stores
        .repair
        .ack_session_resets(&auth.user_id, &auth.device_id, &ids, state.clock.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// This module's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions/{session_id}/reset", post(reset))
        .route("/sessions/resets", get(unseen))
        .route("/sessions/resets/ack", post(ack))
}
