//! `GET /admin/diagnose/{messages|users|groups}/{id}` (operator, scope
//! `diagnose`): gathers the evidence the runbook's checks look at from
//! storage and walks the decision tree of `atlas_ops::diagnose`.
use crate::auth::operator::{Admin, scope};
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::state::AppState;
use atlas_ops::diagnose::{
    CopyEvidence, DeviceEvidence, FailedMessage, FailureEvidence, GroupEvidence, KeyEvidence,
    MemberActionEvidence, MemberEvidence, MessageEvidence, ReportEvidence, UserEvidence,
    diagnose_group, diagnose_message, diagnose_user,
};
use atlas_proto::diagnose::Diagnosis;
use atlas_proto::e2ee::FailureCode;
use atlas_proto::keys::{KeyStatus, KeyType};
use atlas_proto::timestamp::rfc3339;
use atlas_proto::{GroupId, MessageId, UserId};
use atlas_store::StoreError;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;

async fn latest_backup(state: &AppState, user_id: &str) -> Result<Option<String>, ApiError> {
    let backups = state
        .stores
        .backups
        .backups(user_id, state.clock.now(), 1)
        .await?;
    Ok(backups.first().map(|b| rfc3339(b.created_at)))
}

/// `GET /admin/diagnose/messages/{message_id}`.
pub async fn message(
    State(state): State<AppState>,
    _: Admin<scope::Diagnose>,
    ApiPath(message_id): ApiPath<MessageId>,
) -> Result<Json<Diagnosis>, ApiError> {
    let copies = state.stores.repair.message_copies(&message_id).await?;
    let reports = state
        .stores
        .reports
        .message_reports("", &message_id)
        .await?;
    let resends = state.stores.repair.resend_requests(&message_id).await?;
    let mut evidence = MessageEvidence {
        message_id: message_id.clone(),
        copies: vec![],
        latest_backup: None,
    };
    for c in &copies {
        let device_active = state
            .stores
            .accounts
            .device(&c.recipient_id, &c.recipient_device_id)
            .await?
            .is_some_and(|d| d.status == atlas_proto::api::DeviceStatus::Active);
        let key_row = match &c.prekey_key {
            Some(key) => {
                state
                    .stores
                    .key_checks
                    .key_by_public(&c.recipient_id, &c.recipient_device_id, key)
                    .await?
            }
            None => None,
        };
        let key_id = key_row
            .as_ref()
            .map(|k| format!("{}:{}", k.key_type, k.key_id));
        let key_used = key_row.map(|k| KeyEvidence {
            key_id: k.key_id,
            key_type: k.key_type,
            status: k.status,
            last_rotated: k.last_rotated.map(rfc3339),
        });
        let check = state
            .stores
            .key_checks
            .key_check(&c.recipient_id, &c.recipient_device_id)
            .await?;
        let session_reset = match &c.session_id {
            Some(sid) => !state.stores.repair.session_resets(sid).await?.is_empty(),
            None => false,
        };
        evidence.copies.push(CopyEvidence {
            recipient: format!("{}/{}", c.recipient_id, c.recipient_device_id),
            sender: format!("{}/{}", c.sender_id, c.sender_device_id),
            recipient_user: c.recipient_id.to_string(),
            algorithm: c.encryption_algorithm.clone(),
            msg_type: c.msg_type,
            session_id: ApiError::stored_opt_id(c.session_id.as_deref())?,
            resend_of: ApiError::stored_opt_id(c.resend_of.as_deref())?,
            created_at: rfc3339(c.created_at),
            delivered: c.delivered_at.is_some(),
            device_active,
            report: reports
                .iter()
                .find(|r| r.user_id == c.recipient_id && r.device_id == c.recipient_device_id)
                .map(|r| ReportEvidence {
                    status: r.status.clone(),
                    code: r.code,
                    first_code: r.first_code,
                }),
            key_looked_up: c.prekey_key.is_some(),
            key_used,
            key_used_differs: check.map(|check| {
                key_id
                    .as_ref()
                    .is_some_and(|id| check.mismatched.contains(id))
            }),
            session_reset,
            resends: resends
                .iter()
                .filter(|r| r.recipient_device_id == c.recipient_device_id)
                .map(|r| (r.status.clone(), r.detail.clone()))
                .collect(),
        });
    }
    if let Some(first) = copies.first() {
        evidence.latest_backup = latest_backup(&state, &first.recipient_id).await?;
    }
    Ok(Json(diagnose_message(&evidence, &state.config.public_url)))
}

/// `GET /admin/diagnose/users/{user_id}`.
pub async fn user(
    State(state): State<AppState>,
    _: Admin<scope::Diagnose>,
    ApiPath(user_id): ApiPath<String>,
) -> Result<Json<Diagnosis>, ApiError> {
    let user = UserId::new(user_id.as_str()).map_err(|e| ApiError::invalid(e.to_string()))?;
    let mut evidence = UserEvidence {
        user_id: user_id.clone(),
        exists: true,
        ..Default::default()
    };
    let devices = match state.stores.accounts.devices(&user).await {
        Ok(devices) => devices,
        Err(StoreError::UnknownUser) => {
            evidence.exists = false;
            return Ok(Json(diagnose_user(&evidence, &state.config.public_url)));
        }
        Err(e) => return Err(e.into()),
    };
    for d in devices {
        let keys = state
            .stores
            .key_checks
            .device_public_keys(&user, &d.keys.device_id)
            .await?;
        let mut counts: Vec<(KeyType, KeyStatus, u64)> = Vec::new();
        for k in &keys {
            match counts
                .iter_mut()
                .find(|(t, s, _)| *t == k.key_type && *s == k.status)
            {
                Some((_, _, n)) => *n += 1,
                None => counts.push((k.key_type, k.status, 1)),
            }
        }
        counts.sort();
        let fallback_rotated = keys
            .iter()
            .filter(|k| k.key_type == KeyType::Fallback)
            .filter_map(|k| k.last_rotated)
            .max()
            .map(rfc3339);
        let check = state
            .stores
            .key_checks
            .key_check(&user_id, d.keys.device_id.as_str())
            .await?;
        evidence.devices.push(DeviceEvidence {
            device_id: d.keys.device_id.to_string(),
            status: d.status.as_str().to_owned(),
            keys: counts,
            fallback_rotated,
            key_check: check
                .map(|c| (rfc3339(c.checked_at), c.mismatched.len() as u64, c.repaired)),
        });
    }
    let since = state.clock.now() - time::Duration::days(1);
    for r in state.stores.reports.user_reports(&user, since, 500).await? {
        match r.status.as_str() {
            "failure" => evidence.failures.push(FailureEvidence {
                message: failed_message(r.group_id, r.message_id)?,
                device_id: r.device_id,
                code: r.code.unwrap_or(FailureCode::KeyCorrupted),
            }),
            "recovered" => evidence.recovered += 1,
            _ => {}
        }
    }
    evidence.latest_backup = latest_backup(&state, &user_id).await?;
    Ok(Json(diagnose_user(&evidence, &state.config.public_url)))
}

/// A reported message: 1:1 when stored without a group, else a group log position.
fn failed_message(group_id: String, message_id: String) -> Result<FailedMessage, ApiError> {
    if group_id.is_empty() {
        return Ok(FailedMessage::Direct(ApiError::stored_id(message_id)?));
    }
    Ok(FailedMessage::Group {
        group_id: ApiError::stored_id(group_id)?,
        seq: message_id.parse().map_err(ApiError::internal)?,
    })
}

/// `GET /admin/diagnose/groups/{group_id}`.
pub async fn group(
    State(state): State<AppState>,
    _: Admin<scope::Diagnose>,
    ApiPath(group_id): ApiPath<GroupId>,
) -> Result<Json<Diagnosis>, ApiError> {
    let mut evidence = GroupEvidence {
        group_id: group_id.clone(),
        exists: false,
        current_epoch: 0,
        last_epoch_change: String::new(),
        members: vec![],
        actions: vec![],
    };
    if let Some(g) = state.stores.groups.group(&group_id).await? {
        evidence.exists = true;
        evidence.current_epoch = g.current_epoch;
        evidence.last_epoch_change = rfc3339(g.last_epoch_change);
        evidence.members = state
            .stores
            .groups
            .group_members(&group_id)
            .await?
            .into_iter()
            .map(|m| MemberEvidence {
                member_id: m.member_id,
                epoch: m.epoch,
                status: m.status,
                last_commit: m.last_commit,
            })
            .collect();
        evidence.actions = state
            .stores
            .member_actions
            .group_member_actions(&group_id)
            .await?
            .into_iter()
            .map(|a| MemberActionEvidence {
                member_id: a.member_id,
                action: a.action,
                done: a.done_at.is_some(),
                outcome: a.outcome,
            })
            .collect();
    }
    Ok(Json(diagnose_group(&evidence)))
}

/// The runbook's diagnosis flow, under `/admin` (scope `diagnose`).
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/diagnose/messages/{message_id}", get(message))
        .route("/diagnose/users/{user_id}", get(user))
        .route("/diagnose/groups/{group_id}", get(group))
}
