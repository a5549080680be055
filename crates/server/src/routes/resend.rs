//! Resends: `POST /messages/{id}/request-resend` (a recipient device with
//! DPoP, or an operator with Bearer scope `messages`) asks the sending device
//! to re-encrypt a message it keeps in its outbox; the sender learns of it
//! over the WebSocket or on its next sync (`GET /resend-requests`), and
//! answers with a send carrying `resend_of` or with `unavailable`.
use crate::auth::{Caller, DeviceAuth};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use atlas_proto::api::PushEvent;
use atlas_proto::repair::{ResendNotice, ResendRequestView, ResendRequests, ResendUnavailable};
use atlas_proto::{ErrorCode, MessageId, RequestId};
use atlas_store::{MessageCopy, ResendOutcome, ResendRequestRecord};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

/// Resend requests one device pair may make at once.
pub const BURST: u32 = 10;
/// Resend requests per device pair and minute, sustained.
pub const PER_MINUTE: u32 = 20;

/// The wire form of a request.
pub fn view(r: &ResendRequestRecord) -> Result<ResendRequestView, ApiError> {
    Ok(ResendRequestView {
        request_id: r.request_id.clone(),
        message_id: r.message_id.clone(),
        recipient_id: r.recipient_id.clone(),
        recipient_device_id: r.recipient_device_id.clone(),
        sender_id: r.sender_id.clone(),
        sender_device_id: r.sender_device_id.clone(),
        reason: r
            .reason
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(ApiError::internal)?,
        status: r.status.clone(),
        requested_at: r.requested_at.into(),
        resent_message_id: ApiError::stored_opt_id(r.resent_message_id.as_deref())?,
        detail: r.detail.clone(),
    })
}

fn unknown_message() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::UnknownMessage,
        "no such message delivered to you",
    )
}

/// `POST /messages/{message_id}/request-resend`.
pub async fn request(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(message_id): ApiPath<MessageId>,
) -> Result<(StatusCode, Json<ResendRequests>), ApiError> {
    if let Caller::Operator(op) = &caller {
        op.require(atlas_proto::OperatorScope::Messages)?;
    }
    let copies = state.stores.repair.message_copies(&message_id).await?;
    let reports = state
        .stores
        .reports
        .message_reports("", &message_id)
        .await?;
    let decrypted = |c: &MessageCopy| {
        reports.iter().any(|r| {
            r.device_id == c.recipient_device_id
                && r.user_id == c.recipient_id
                && r.status != "failure"
        })
    };
    let (targets, requested_by): (Vec<&MessageCopy>, String) = match &caller {
        Caller::Device(d) => (
            copies
                .iter()
                .filter(|c| {
                    c.recipient_id == d.user_id.as_str()
                        && c.recipient_device_id == d.device_id.as_str()
                })
                .collect(),
            format!("device:{}/{}", d.user_id, d.device_id),
        ),
        // An operator repairs every recipient device that has not read the message.
        Caller::Operator(op) => (
            copies.iter().filter(|c| !decrypted(c)).collect(),
            format!("operator:{}", op.token_id),
        ),
    };
    if targets.is_empty() {
        return Err(match (&caller, copies.is_empty()) {
            (Caller::Operator(_), false) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::NothingToResend,
                "every recipient device reported this message decrypted",
            ),
            _ => unknown_message(),
        });
    }
    let now = state.clock.now();
    let mut records = Vec::with_capacity(targets.len());
    for copy in targets {
        let pair = format!(
            "{}/{}>{}/{}",
            copy.recipient_id, copy.recipient_device_id, copy.sender_id, copy.sender_device_id
        );
        if !state.resend_limit.allow(&pair, state.clock.seconds()) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                format!("at most {PER_MINUTE} resend requests per minute between two devices"),
            ));
        }
        let reason = reports
            .iter()
            .find(|r| r.device_id == copy.recipient_device_id && r.status == "failure")
            .and_then(|r| r.code.map(|c| c.as_str().to_owned()));
        records.push(ResendRequestRecord {
            request_id: super::new_request_id()?,
            message_id: message_id.clone(),
            recipient_id: copy.recipient_id.clone(),
            recipient_device_id: copy.recipient_device_id.clone(),
            sender_id: copy.sender_id.clone(),
            sender_device_id: copy.sender_device_id.clone(),
            requested_by: requested_by.clone(),
            reason,
            status: "pending".into(),
            requested_at: now,
            done_at: None,
            resent_message_id: None,
            detail: None,
        });
    }
    let stored = state.stores.repair.request_resends(&records).await?;
    for r in &stored {
        tracing::info!(message_id = %r.message_id, request_id = %r.request_id, recipient = %format!("{}/{}", r.recipient_id, r.recipient_device_id), by = %requested_by, "resend requested");
        let notice = ResendNotice {
            request_id: r.request_id.clone(),
            message_id: r.message_id.clone(),
        };
        state
            .fanout
            .publish_notice(&r.sender_id, &r.sender_device_id, PushEvent::Resend(notice));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(ResendRequests {
            requests: stored.iter().map(view).collect::<Result<_, _>>()?,
        }),
    ))
}

/// `GET /resend-requests`: what recipients asked this device to resend.
pub async fn pending(
    State(state): State<AppState>,
    auth: DeviceAuth,
) -> Result<Json<ResendRequests>, ApiError> {
    let pending = state
        .stores
        .repair
        .pending_resends(&auth.user_id, &auth.device_id, 100)
        .await?;
    Ok(Json(ResendRequests {
        requests: pending.iter().map(view).collect::<Result<_, _>>()?,
    }))
}

/// `POST /resend-requests/{request_id}/unavailable`: the sender cannot resend
/// (the plaintext left its outbox); diagnosis then points elsewhere.
pub async fn unavailable(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiPath(request_id): ApiPath<RequestId>,
    ApiJson(body): ApiJson<ResendUnavailable>,
) -> Result<StatusCode, ApiError> {
    if body.detail.chars().count() > 200 {
        return Err(ApiError::invalid("detail is at most 200 characters"));
    }
    let closed = state
        .stores
        .repair
        .complete_resend(
            &request_id,
            (&auth.user_id, &auth.device_id),
            ResendOutcome::Unavailable(&body.detail),
            state.clock.now(),
        )
        .await?;
    if !closed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no pending resend request of yours with this id",
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// This module's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/messages/{message_id}/request-resend", post(request))
        .route("/resend-requests", get(pending))
        .route(
            "/resend-requests/{request_id}/unavailable",
            post(unavailable),
        )
}
