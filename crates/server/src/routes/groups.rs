//! MLS groups: the validating delivery service. Commits are checked against
//! the group's public state and sequenced first-wins per epoch; application
//! messages and Welcomes are logged in order; members acknowledge epochs.
use crate::auth::DeviceAuth;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use atlas_crypto::mls_ds::{DsError, DsGroup};
use atlas_proto::api::PushEvent;
use atlas_proto::mls::{
    CommitRequest, CommitResponse, CreateGroupRequest, EpochAck, GroupInfoResponse, GroupLogEntry,
    GroupLogResponse, GroupMemberView, GroupMessageRequest, GroupView,
};
use atlas_proto::timestamp::Timestamp;
use atlas_proto::{ErrorCode, GroupId, RequestId, b64};
use atlas_store::{GroupMessageRecord, GroupRecord, NewGroup};
use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;

/// Default and largest page of the group log.
const PAGE: u32 = 100;
const MAX_PAGE: u32 = 500;

/// The caller as a group member: `USER_ID/DEVICE_ID`.
pub fn caller_member(auth: &DeviceAuth) -> String {
    format!("{}/{}", auth.user_id, auth.device_id)
}

/// Decodes a base64 field (padded or not) or refuses with a 400 naming it.
pub fn decode(text: &str, field: &str) -> Result<Vec<u8>, ApiError> {
    b64::decode_std_lenient(text).map_err(|_| ApiError::invalid(format!("{field} is not base64")))
}

pub(crate) fn entry(r: GroupMessageRecord) -> Result<GroupLogEntry, ApiError> {
    Ok(GroupLogEntry {
        group_id: r.group_id,
        seq: r.seq,
        kind: r.kind,
        epoch: r.epoch,
        sender_id: r.sender_id,
        body: b64::encode_std(&r.body),
        created_at: r.created_at.into(),
    })
}

pub(crate) fn invalid_mls(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidMlsMessage,
        e.to_string(),
    )
}

pub(crate) async fn group_record(
    state: &AppState,
    group_id: &GroupId,
) -> Result<GroupRecord, ApiError> {
    state.stores.groups.group(group_id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownGroup,
            "unknown group",
        )
    })
}

/// Nudges the connected devices of `members` (`USER_ID/DEVICE_ID`) about a new log entry.
pub(crate) fn notify<'a>(
    state: &AppState,
    group_id: &GroupId,
    seq: u64,
    kind: &str,
    members: impl IntoIterator<Item = &'a str>,
) {
    for member in members {
        let Ok(m) = member.parse::<atlas_proto::MemberRef>() else {
            continue;
        };
        if let Some(device) = m.device_id {
            let notice = atlas_proto::api::GroupNotice {
                group_id: group_id.clone(),
                seq,
                kind: kind.to_owned(),
            };
            state
                .fanout
                .publish_notice(&m.user_id, &device, PushEvent::Group(notice));
        }
    }
}

/// Nudges every active member but `sender` about a new log entry.
pub(crate) async fn notify_members(
    state: &AppState,
    group_id: &GroupId,
    seq: u64,
    kind: &str,
    sender: &str,
) {
    let Ok(members) = state.stores.groups.group_members(group_id).await else {
        return;
    };
    let active = members
        .iter()
        .filter(|m| m.status == "active" && m.member_id != sender)
        .map(|m| m.member_id.as_str());
    notify(state, group_id, seq, kind, active);
}

pub(crate) fn not_a_member(what: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, ErrorCode::NotAMember, what)
}

/// How much of a group the caller may see.
enum Access {
    /// An active member: everything.
    Member,
    /// A removed member: the log up to the commit that removed it (so its device
    /// learns of the removal), nothing else.
    Removed {
        /// Log position of that commit.
        until: u64,
    },
}

/// The caller's access to a group; callers that never were in it are refused.
async fn access(state: &AppState, group_id: &GroupId, member: &str) -> Result<Access, ApiError> {
    let members = state.stores.groups.group_members(group_id).await?;
    match members.iter().find(|m| m.member_id == member) {
        Some(m) if m.status == "active" => Ok(Access::Member),
        Some(m) => Ok(Access::Removed {
            until: m.removed_seq.unwrap_or(0),
        }),
        None => Err(not_a_member("not a member of the group")),
    }
}

/// Refuses callers that are not active members (never were, or were removed).
pub(crate) async fn require_active(
    state: &AppState,
    group_id: &GroupId,
    member: &str,
) -> Result<(), ApiError> {
    match access(state, group_id, member).await? {
        Access::Member => Ok(()),
        Access::Removed { .. } => Err(not_a_member("removed from the group")),
    }
}

/// `POST /groups`: registers a group the caller created (epoch 0, the caller its only member).
pub async fn create(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiJson(req): ApiJson<CreateGroupRequest>,
) -> Result<(StatusCode, Json<GroupView>), ApiError> {
    let info = decode(&req.group_info, "group_info")?;
    let ds = DsGroup::from_group_info(&req.group_id, &info).map_err(|e| match e {
        DsError::Malformed(m) => ApiError::invalid(format!("malformed GroupInfo: {m}")),
        e => invalid_mls(e),
    })?;
    let me = caller_member(&auth);
    let members = ds.members().map_err(invalid_mls)?;
    if ds.epoch() != 0 || members.len() != 1 || members[0].to_string() != me {
        return Err(invalid_mls(
            "a new group must be at epoch 0 with the calling device as its only member",
        ));
    }
    let now = state.clock.now();
    state
        .stores
        .groups
        .create_group(&NewGroup {
            group_id: req.group_id.clone(),
            creator: me,
            public_state: ds.snapshot().map_err(ApiError::internal)?,
            group_info: info,
            now,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(view(&state, &req.group_id).await?),
    ))
}

pub(crate) async fn view(state: &AppState, group_id: &GroupId) -> Result<GroupView, ApiError> {
    let group = group_record(state, group_id).await?;
    let members = state.stores.groups.group_members(group_id).await?;
    Ok(GroupView {
        group_id: group_id.clone(),
        current_epoch: group.current_epoch,
        last_epoch_change: group.last_epoch_change.into(),
        members: members
            .into_iter()
            .map(|m| GroupMemberView {
                member_id: m.member_id,
                epoch: m.epoch,
                status: m.status,
                joined_epoch: m.joined_epoch,
                last_commit: m.last_commit,
            })
            .collect(),
    })
}

/// `GET /groups/{group_id}`: epoch and members with their acknowledged epochs.
pub async fn show(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiPath(group_id): ApiPath<GroupId>,
) -> Result<Json<GroupView>, ApiError> {
    group_record(&state, &group_id).await?;
    require_active(&state, &group_id, &caller_member(&auth)).await?;
    Ok(Json(view(&state, &group_id).await?))
}

/// `POST /groups/{group_id}/commits`: the commit pipeline (`crate::mls_commit`)
/// validates it against the current epoch and sequences it; the first valid
/// commit of an epoch wins, a later one gets 409 `epoch_conflict` with the winner.
pub async fn commit(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiPath(group_id): ApiPath<GroupId>,
    ApiJson(req): ApiJson<CommitRequest>,
) -> Result<(StatusCode, Json<CommitResponse>), ApiError> {
    let submitted = crate::mls_commit::Submitted {
        commit: decode(&req.commit, "commit")?,
        group_info: decode(&req.group_info, "group_info")?,
        welcome: req
            .welcome
            .as_deref()
            .map(|w| decode(w, "welcome"))
            .transpose()?,
    };
    let response =
        crate::mls_commit::sequence(&state, &group_id, &caller_member(&auth), submitted).await?;
    Ok((StatusCode::CREATED, Json(response)))
}

/// `POST /groups/{group_id}/messages`: an application message of a member.
pub async fn post_message(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiPath(group_id): ApiPath<GroupId>,
    ApiJson(req): ApiJson<GroupMessageRequest>,
) -> Result<(StatusCode, Json<GroupLogEntry>), ApiError> {
    let group = group_record(&state, &group_id).await?;
    let body = decode(&req.message, "message")?;
    let ds = DsGroup::restore(&group.public_state).map_err(ApiError::internal)?;
    let epoch = match ds.check_application(&body) {
        Ok(epoch) => epoch,
        Err(e) => return Err(crate::mls_commit::ds_error(&state, &group_id, e).await),
    };
    let now = state.clock.now();
    let me = caller_member(&auth);
    let seq = state
        .stores
        .groups
        .append_group_message(&group_id, epoch, &me, &body, now)
        .await?;
    notify_members(&state, &group_id, seq, atlas_store::kind::APPLICATION, &me).await;
    Ok((
        StatusCode::CREATED,
        Json(entry(GroupMessageRecord {
            group_id: group_id.clone(),
            seq,
            kind: atlas_store::kind::APPLICATION.into(),
            epoch,
            sender_id: me,
            body,
            created_at: now,
        })?),
    ))
}

/// Query of `GET /groups/{group_id}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Entries after this position.
    #[serde(default)]
    pub after: u64,
    /// Page size (default 100, at most 500).
    pub limit: Option<u32>,
    /// Start at the commit that created this epoch (a member catching up from
    /// its own epoch); `after` applies when there is no such commit.
    pub from_epoch: Option<u64>,
}

/// `GET /groups/{group_id}/messages`: commits and application messages in order.
pub async fn log(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiPath(group_id): ApiPath<GroupId>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Json<GroupLogResponse>, ApiError> {
    group_record(&state, &group_id).await?;
    let up_to = match access(&state, &group_id, &caller_member(&auth)).await? {
        Access::Member => None,
        Access::Removed { until } => Some(until),
    };
    let limit = q.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let after = match q.from_epoch {
        Some(epoch) => state
            .stores
            .groups
            .commit_of_epoch(&group_id, epoch)
            .await?
            .map_or(q.after, |c| c.seq.saturating_sub(1)),
        None => q.after,
    };
    let entries: Vec<GroupLogEntry> = state
        .stores
        .groups
        .group_messages(&group_id, after, up_to, limit)
        .await?
        .into_iter()
        .map(entry)
        .collect::<Result<_, _>>()?;
    let next_after = entries.last().map_or(after, |e| e.seq);
    Ok(Json(GroupLogResponse {
        entries,
        next_after,
    }))
}

/// `GET /groups/welcomes`: Welcomes addressed to the calling device.
pub async fn welcomes(
    State(state): State<AppState>,
    auth: DeviceAuth,
) -> Result<Json<GroupLogResponse>, ApiError> {
    let entries: Vec<GroupLogEntry> = state
        .stores
        .groups
        .welcomes(&caller_member(&auth))
        .await?
        .into_iter()
        .map(entry)
        .collect::<Result<_, _>>()?;
    Ok(Json(GroupLogResponse {
        next_after: entries.last().map_or(0, |e| e.seq),
        entries,
    }))
}

/// `GET /groups/{group_id}/group-info`: the latest GroupInfo, for an external (re)join.
pub async fn group_info(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiPath(group_id): ApiPath<GroupId>,
) -> Result<Json<GroupInfoResponse>, ApiError> {
    group_record(&state, &group_id).await?;
    require_active(&state, &group_id, &caller_member(&auth)).await?;
    let (epoch, info) = state
        .stores
        .groups
        .group_info(&group_id, None)
        .await?
        .ok_or_else(|| ApiError::internal("group without GroupInfo"))?;
    Ok(Json(GroupInfoResponse {
        epoch,
        group_info: b64::encode_std(info),
    }))
}

/// `POST /groups/{group_id}/ack`: the calling device has processed up to `epoch`.
pub async fn ack(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiPath(group_id): ApiPath<GroupId>,
    ApiJson(req): ApiJson<EpochAck>,
) -> Result<Json<GroupView>, ApiError> {
    group_record(&state, &group_id).await?;
    state
        .stores
        .groups
        .acknowledge_epoch(
            &group_id,
            &caller_member(&auth),
            req.epoch,
            state.clock.now(),
        )
        .await?;
    Ok(Json(view(&state, &group_id).await?))
}

/// The API form of a recovery step.
pub(crate) fn action_view(
    a: atlas_store::MemberAction,
) -> Result<atlas_proto::mls::MemberActionView, ApiError> {
    Ok(atlas_proto::mls::MemberActionView {
        action_id: a.action_id,
        group_id: a.group_id,
        member_id: a.member_id,
        action: a.action,
        requested_at: a.requested_at.into(),
        done_at: a.done_at.map(Timestamp::from),
        outcome: a.outcome,
    })
}

/// `GET /groups/actions`: recovery steps operators asked of the calling device.
pub async fn actions(
    State(state): State<AppState>,
    auth: DeviceAuth,
) -> Result<Json<atlas_proto::mls::MemberActionsResponse>, ApiError> {
    let actions = state
        .stores
        .member_actions
        .pending_member_actions(&caller_member(&auth))
        .await?
        .into_iter()
        .map(action_view)
        .collect::<Result<_, _>>()?;
    Ok(Json(atlas_proto::mls::MemberActionsResponse { actions }))
}

/// `POST /groups/actions/{action_id}/done`: the device reports a step done.
pub async fn action_done(
    State(state): State<AppState>,
    auth: DeviceAuth,
    ApiPath(action_id): ApiPath<RequestId>,
    ApiJson(req): ApiJson<atlas_proto::mls::ActionDone>,
) -> Result<StatusCode, ApiError> {
    if req.outcome.len() > 1024 {
        return Err(ApiError::too_large("outcome is at most 1024 characters"));
    }
    let member = caller_member(&auth);
    let done = state
        .stores
        .member_actions
        .complete_member_action(&action_id, &member, &req.outcome, state.clock.now())
        .await?;
    if !done {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such pending action for this device",
        ));
    }
    tracing::info!(%action_id, %member, outcome = %req.outcome, "member finished a recovery step");
    Ok(StatusCode::NO_CONTENT)
}

/// Body limit of a commit: adding many members makes a large commit and Welcome.
const MAX_COMMIT_BODY: usize = 16 * 1024 * 1024;

/// This module's routes; a commit may be larger than other requests (`max_body_bytes`).
pub fn router(max_body_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/groups", post(create))
        .route("/groups/welcomes", get(welcomes))
        .route("/groups/actions", get(actions))
        .route("/groups/actions/{action_id}/done", post(action_done))
        .route("/groups/{group_id}", get(show))
        .route(
            "/groups/{group_id}/commits",
            post(commit).layer(DefaultBodyLimit::max(max_body_bytes.max(MAX_COMMIT_BODY))),
        )
        .route("/groups/{group_id}/messages", post(post_message).get(log))
        .route("/groups/{group_id}/group-info", get(group_info))
        .route("/groups/{group_id}/ack", post(ack))
}
