//! `/admin/incidents`: the emergency manual's incidents as records every
//! operator sees (scope `incidents`). The rules are `atlas_ops::incident`'s;
//! here a change is loaded, applied and saved, again if another change to the
//! same incident came first.
use crate::auth::operator::{Admin, OperatorAuth, scope};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use atlas_ops::incident::{self as lifecycle, Change, IncidentError};
use atlas_proto::incident::{
    AssignRequest, CloseRequest, DeclareRequest, Impact, Incident, IncidentList, IncidentView,
    NoteRequest, NotificationView, TimelineEntry, UpdateRequest,
};
use atlas_proto::{ErrorCode, IncidentId};
use atlas_store::{NewNotification, NotificationRecord};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;

/// Incidents open at once: more is a runaway script, not an emergency.
pub const MAX_OPEN: u32 = 100;
/// Incidents declared in one second (the `-N` of their ids).
const MAX_PER_SECOND: u32 = 1000;
/// Saves of one change before giving up on a busy incident.
const SAVE_ATTEMPTS: usize = 5;
/// Incidents listed at most.
const MAX_LIST: u32 = 500;
/// Alerts shown in one incident's timeline at most.
const MAX_ALERTS_SHOWN: u32 = 500;

/// Who did it, as the timeline names them: the token's label and id.
pub fn actor(operator: &OperatorAuth) -> String {
    if operator.label.is_empty() {
        format!("token {}", operator.token_id)
    } else {
        format!("{} (token {})", operator.label, operator.token_id)
    }
}

fn refused(e: IncidentError) -> ApiError {
    let code = match e {
        IncidentError::Closed(_) => ErrorCode::IncidentClosed,
        IncidentError::InvalidTransition(_) => ErrorCode::InvalidTransition,
        IncidentError::TimelineFull(_) => ErrorCode::InvalidRequest,
    };
    ApiError::new(StatusCode::CONFLICT, code, e.to_string())
}

fn unknown(id: &IncidentId) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::UnknownIncident,
        format!("no incident {id}"),
    )
}

/// The incident with its timeline and notifications.
async fn full_view(state: &AppState, incident: &Incident) -> Result<IncidentView, ApiError> {
    let store = &state.stores.incidents;
    let timeline = store.incident_timeline(&incident.id).await?;
    // The alerts of its window: from an hour before it was declared to its close.
    let from = incident.declared_at - atlas_ops::alerts::LOOKBACK;
    let until = incident.closed_at.unwrap_or_else(|| state.clock.now());
    let alerts = state
        .stores
        .alerts
        .alerts_between(from, until, MAX_ALERTS_SHOWN)
        .await?;
    let timeline = atlas_ops::alerts::merge(timeline, &alerts, from, until);
    let mut view = lifecycle::view(incident, timeline);
    let notifications = store.incident_notifications(&incident.id).await?;
    view.notifications = notifications.into_iter().map(notification_view).collect();
    Ok(view)
}

/// A queued notification as `incident show` lists it.
fn notification_view(n: NotificationRecord) -> NotificationView {
    let next_attempt_at = (n.status == "pending")
        .then(|| {
            time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(n.next_attempt_ms) * 1_000_000,
            )
            .ok()
        })
        .flatten()
        .map(Into::into);
    NotificationView {
        destination: n.destination,
        summary: n.summary,
        status: n.status,
        attempts: n.attempts.max(0) as u64,
        last_error: n.last_error,
        created_at: n.created_at.into(),
        delivered_at: n.delivered_at.map(Into::into),
        next_attempt_at,
    }
}

/// The notifications a change makes, for the outbox (written with the change).
fn outbox(
    state: &AppState,
    before: Option<&Incident>,
    after: &mut Incident,
    entries: &[TimelineEntry],
) -> Vec<NewNotification> {
    let now = state.clock.now();
    atlas_ops::notify::notices(before, after, entries, &state.notify_to)
        .into_iter()
        .map(|n| NewNotification {
            notification_id: uuid::Uuid::now_v7().to_string(),
            destination: n.destination.as_str().to_owned(),
            summary: n.summary,
            payload: n.payload.to_string(),
            created_at: now,
        })
        .collect()
}

/// `POST /admin/incidents`: declares an incident (§2.1).
pub async fn declare(
    State(state): State<AppState>,
    operator: Admin<scope::Incidents>,
    ApiJson(request): ApiJson<DeclareRequest>,
) -> Result<(StatusCode, Json<IncidentView>), ApiError> {
    let open = state.stores.incidents.incidents(true, MAX_OPEN).await?;
    if open.len() as u32 >= MAX_OPEN {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::InvalidRequest,
            format!("{MAX_OPEN} incidents are open: close some before declaring more"),
        ));
    }
    let actor = actor(&operator);
    // The operator's word, else the token's label, else who ran the command.
    let commander = request
        .commander
        .as_ref()
        .map(|c| c.as_str().to_owned())
        .or_else(|| (!operator.label.is_empty()).then(|| operator.label.clone()))
        .or_else(|| request.os_user.as_ref().map(|u| u.as_str().to_owned()))
        .unwrap_or_else(|| actor.clone());
    let now = state.clock.now();
    for n in 1..=MAX_PER_SECOND {
        let id = IncidentId::at(now, n);
        let (mut incident, entries) =
            lifecycle::declare(id, &request, commander.clone(), &actor, now);
        let notices = outbox(&state, None, &mut incident, &entries);
        if state
            .stores
            .incidents
            .create_incident(&incident, &entries, &notices)
            .await?
        {
            tracing::warn!(incident = %incident.id, severity = %incident.severity, %actor, "incident declared");
            return Ok((
                StatusCode::CREATED,
                Json(lifecycle::view(&incident, entries)),
            ));
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::InvalidRequest,
        "too many incidents declared this second",
    ))
}

/// Query of `GET /admin/incidents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only those not closed.
    #[serde(default)]
    pub open: bool,
    /// At most this many (default 50).
    pub limit: Option<u32>,
}

/// `GET /admin/incidents`: newest first.
pub async fn list(
    State(state): State<AppState>,
    _: Admin<scope::Incidents>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<IncidentList>, ApiError> {
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_LIST);
    let incidents = state.stores.incidents.incidents(query.open, limit).await?;
    Ok(Json(IncidentList {
        incidents: incidents
            .iter()
            .map(|i| lifecycle::view(i, Vec::new()))
            .collect(),
    }))
}

/// `GET /admin/incidents/{id}`: the incident and its timeline.
pub async fn show(
    State(state): State<AppState>,
    _: Admin<scope::Incidents>,
    ApiPath(id): ApiPath<IncidentId>,
) -> Result<Json<IncidentView>, ApiError> {
    let incident = state
        .stores
        .incidents
        .incident(&id)
        .await?
        .ok_or_else(|| unknown(&id))?;
    Ok(Json(full_view(&state, &incident).await?))
}

/// Query of `GET /admin/incidents/{id}/impact`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpactQuery {
    /// Seconds after which a delivery counts as late (default 60).
    pub late_after: Option<u64>,
}

/// Longest `late_after`: a day.
const MAX_LATE_AFTER: u64 = 86_400;

/// `GET /admin/incidents/{id}/impact`: what the server recorded from the
/// first alert (or the declaration) to the resolution (or the close, or
/// now), for the post-mortem.
pub async fn impact(
    State(state): State<AppState>,
    _: Admin<scope::Incidents>,
    ApiPath(id): ApiPath<IncidentId>,
    ApiQuery(query): ApiQuery<ImpactQuery>,
) -> Result<Json<Impact>, ApiError> {
    let late_after = query.late_after.unwrap_or(60);
    if !(1..=MAX_LATE_AFTER).contains(&late_after) {
        return Err(ApiError::invalid(format!(
            "late_after must be 1 to {MAX_LATE_AFTER} seconds"
        )));
    }
    let incident = state
        .stores
        .incidents
        .incident(&id)
        .await?
        .ok_or_else(|| unknown(&id))?;
    let until = incident
        .resolved_at
        .or(incident.closed_at)
        .unwrap_or_else(|| state.clock.now());
    // From the first alert that fired before the declaration, as the post-mortem's duration.
    let lookback = incident.declared_at - atlas_ops::alerts::LOOKBACK;
    let from = state
        .stores
        .alerts
        .alerts_between(lookback, incident.declared_at, 1)
        .await?
        .first()
        .map_or(incident.declared_at, |a| {
            a.starts_at.0.max(lookback).min(incident.declared_at)
        });
    let impact = state
        .stores
        .incidents
        .impact(from, until, late_after)
        .await?;
    Ok(Json(impact))
}

/// Loads incident `id`, applies `change` by `actor` and saves it, from the
/// top when another change came first; the incident as it now is.
pub(crate) async fn change(
    state: &AppState,
    id: &IncidentId,
    actor: &str,
    change: Change<'_>,
) -> Result<IncidentView, ApiError> {
    for _ in 0..SAVE_ATTEMPTS {
        let mut incident = state
            .stores
            .incidents
            .incident(id)
            .await?
            .ok_or_else(|| unknown(id))?;
        let version = incident.events;
        let before = incident.clone();
        let entries =
            lifecycle::apply(&mut incident, change, actor, state.clock.now()).map_err(refused)?;
        let notices = outbox(state, Some(&before), &mut incident, &entries);
        if state
            .stores
            .incidents
            .save_incident(&incident, version, &entries, &notices)
            .await?
        {
            tracing::info!(incident = %id, status = %incident.status, %actor, "incident changed");
            return full_view(state, &incident).await;
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::InvalidRequest,
        format!("incident {id} keeps changing: try again"),
    ))
}

/// `POST /admin/incidents/{id}/updates`: a status-page update (§6.1).
pub async fn update(
    State(state): State<AppState>,
    operator: Admin<scope::Incidents>,
    ApiPath(id): ApiPath<IncidentId>,
    ApiJson(request): ApiJson<UpdateRequest>,
) -> Result<Json<IncidentView>, ApiError> {
    let view = change(&state, &id, &actor(&operator), Change::Update(&request)).await?;
    Ok(Json(view))
}

/// `POST /admin/incidents/{id}/assign`: a new incident commander.
pub async fn assign(
    State(state): State<AppState>,
    operator: Admin<scope::Incidents>,
    ApiPath(id): ApiPath<IncidentId>,
    ApiJson(request): ApiJson<AssignRequest>,
) -> Result<Json<IncidentView>, ApiError> {
    let change_ = Change::Assign(&request.commander);
    Ok(Json(change(&state, &id, &actor(&operator), change_).await?))
}

/// `POST /admin/incidents/{id}/notes`: a timeline entry.
pub async fn note(
    State(state): State<AppState>,
    operator: Admin<scope::Incidents>,
    ApiPath(id): ApiPath<IncidentId>,
    ApiJson(request): ApiJson<NoteRequest>,
) -> Result<Json<IncidentView>, ApiError> {
    let change_ = Change::Note(&request.text);
    Ok(Json(change(&state, &id, &actor(&operator), change_).await?))
}

/// `POST /admin/incidents/{id}/close`: closes a resolved incident (§7.1).
pub async fn close(
    State(state): State<AppState>,
    operator: Admin<scope::Incidents>,
    ApiPath(id): ApiPath<IncidentId>,
    ApiJson(request): ApiJson<CloseRequest>,
) -> Result<Json<IncidentView>, ApiError> {
    let change_ = Change::Close(request.resolution.as_ref());
    let view = change(&state, &id, &actor(&operator), change_).await?;
    tracing::warn!(incident = %id, "incident closed: post-mortem due within 48 hours");
    Ok(Json(view))
}

/// Incidents, under `/admin` (scope `incidents`).
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/incidents", post(declare).get(list))
        .route("/incidents/{id}", get(show))
        .route("/incidents/{id}/impact", get(impact))
        .route("/incidents/{id}/updates", post(update))
        .route("/incidents/{id}/assign", post(assign))
        .route("/incidents/{id}/notes", post(note))
        .route("/incidents/{id}/close", post(close))
}
