//! The operator's MLS recovery routes (scope `mls`): inspect a group, ask a
//! stuck member's device to catch up and self-update, or to rejoin by external commit.
use crate::auth::operator::{Admin, OperatorAuth, scope};
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::routes::groups::{action_view, group_record, view};
use crate::state::AppState;
use atlas_proto::mls::AdminGroupView;
use atlas_proto::{ErrorCode, GroupId};
use atlas_store::MemberAction;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};

async fn admin_view(state: &AppState, group_id: &GroupId) -> Result<AdminGroupView, ApiError> {
    Ok(AdminGroupView {
        metrics_label: crate::routes::metrics::group_label(state, group_id),
        group: view(state, group_id).await?,
        actions: state
            .stores
            .member_actions
            .group_member_actions(group_id)
            .await?
            .into_iter()
            .map(action_view)
            .collect::<Result<_, _>>()?,
    })
}

/// `GET /admin/groups/{group_id}`: epoch, members' acknowledged epochs, recovery steps.
pub async fn show(
    State(state): State<AppState>,
    _: Admin<scope::Mls>,
    ApiPath(group_id): ApiPath<GroupId>,
) -> Result<Json<AdminGroupView>, ApiError> {
    group_record(&state, &group_id).await?;
    Ok(Json(admin_view(&state, &group_id).await?))
}

/// The member a `USER_ID/DEVICE_ID`, or a bare `USER_ID` with one device in the group, names.
async fn resolve_member(
    state: &AppState,
    group_id: &GroupId,
    given: &str,
) -> Result<String, ApiError> {
    let members = state.stores.groups.group_members(group_id).await?;
    let active: Vec<&str> = members
        .iter()
        .filter(|m| m.status == "active")
        .map(|m| m.member_id.as_str())
        .collect();
    if given.contains('/') {
        return active
            .iter()
            .find(|m| **m == given)
            .map(|m| (*m).to_owned())
            .ok_or_else(|| not_a_member(given));
    }
    let prefix = format!("{given}/");
    let devices: Vec<&str> = active
        .into_iter()
        .filter(|m| m.starts_with(&prefix))
        .collect();
    match devices.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(not_a_member(given)),
        many => Err(ApiError::invalid(format!(
            "{given} has {} devices in the group ({}): name one as USER_ID/DEVICE_ID",
            many.len(),
            many.join(", ")
        ))),
    }
}

fn not_a_member(given: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotAMember,
        format!("{given} is not an active member of the group"),
    )
}

async fn request(
    state: &AppState,
    operator: &OperatorAuth,
    group_id: &GroupId,
    member: &str,
    action: &str,
) -> Result<(StatusCode, Json<AdminGroupView>), ApiError> {
    group_record(state, group_id).await?;
    let member_id = resolve_member(state, group_id, member).await?;
    state
        .stores
        .member_actions
        .request_member_action(&MemberAction {
            action_id: super::new_request_id()?,
            group_id: group_id.clone(),
            member_id: member_id.clone(),
            action: action.to_owned(),
            requested_by: operator.token_id.clone(),
            requested_at: state.clock.now(),
            done_at: None,
            outcome: None,
        })
        .await?;
    tracing::warn!(token_id = %operator.token_id, %group_id, %member_id, %action, "operator requested an MLS recovery step");
    Ok((
        StatusCode::ACCEPTED,
        Json(admin_view(state, group_id).await?),
    ))
}

/// `POST /admin/groups/{group_id}/members/{member_id}/send-update`: the member's
/// device catches up from the stored commits, then commits a self-update.
pub async fn send_update(
    State(state): State<AppState>,
    operator: Admin<scope::Mls>,
    ApiPath((group_id, member)): ApiPath<(GroupId, String)>,
) -> Result<(StatusCode, Json<AdminGroupView>), ApiError> {
    request(&state, &operator, &group_id, &member, "update").await
}

/// `POST /admin/groups/{group_id}/members/{member_id}/rejoin`: the member's
/// device rejoins by external commit from the latest GroupInfo (resync).
pub async fn rejoin(
    State(state): State<AppState>,
    operator: Admin<scope::Mls>,
    ApiPath((group_id, member)): ApiPath<(GroupId, String)>,
) -> Result<(StatusCode, Json<AdminGroupView>), ApiError> {
    request(&state, &operator, &group_id, &member, "rejoin").await
}

/// `POST /admin/groups/{group_id}/rollback` (emergency): the group returns to
/// `target_epoch`; later commits become `rolled_back` and their log entries are
/// hidden; every member of the target epoch is asked to rejoin by external
/// commit, since openmls cannot take a member back to an epoch it has left.
pub async fn rollback(
    State(state): State<AppState>,
    operator: Admin<scope::Mls>,
    ApiPath(group_id): ApiPath<GroupId>,
    crate::extract::ApiJson(req): crate::extract::ApiJson<atlas_proto::mls::RollbackRequest>,
) -> Result<Json<AdminGroupView>, ApiError> {
    let group = group_record(&state, &group_id).await?;
    if req.target_epoch >= group.current_epoch {
        return Err(ApiError::invalid(format!(
            "target epoch {} is not below the current epoch {}",
            req.target_epoch, group.current_epoch
        )));
    }
    let stored = state
        .stores
        .groups
        .epoch_state(&group_id, req.target_epoch)
        .await?
        .ok_or_else(|| {
            ApiError::invalid(format!("no stored state for epoch {}", req.target_epoch))
        })?;
    let at_target = atlas_crypto::mls_ds::DsGroup::restore(&stored)
        .and_then(|g| g.members())
        .map_err(ApiError::internal)?;
    let now = state.clock.now();
    let members_at_target: Vec<String> = at_target.iter().map(ToString::to_string).collect();
    let rejoin = members_at_target
        .iter()
        .map(|member_id| {
            Ok(MemberAction {
                action_id: super::new_request_id()?,
                group_id: group_id.clone(),
                member_id: member_id.clone(),
                action: "rejoin".into(),
                requested_by: operator.token_id.clone(),
                requested_at: now,
                done_at: None,
                outcome: None,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    state
        .stores
        .groups
        .rollback_group(&atlas_store::Rollback {
            group_id: group_id.to_string(),
            target_epoch: req.target_epoch,
            from_epoch: group.current_epoch,
            members_at_target,
            rejoin,
            now,
        })
        .await?;
    tracing::warn!(token_id = %operator.token_id, %group_id, from = group.current_epoch, to = req.target_epoch, "MLS group rolled back");
    Ok(Json(admin_view(&state, &group_id).await?))
}

/// MLS recovery, under `/admin` (scope `mls`).
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/groups/{group_id}", get(show))
        .route(
            "/groups/{group_id}/members/{member_id}/send-update",
            post(send_update),
        )
        .route(
            "/groups/{group_id}/members/{member_id}/rejoin",
            post(rejoin),
        )
        .route("/groups/{group_id}/rollback", post(rollback))
}
