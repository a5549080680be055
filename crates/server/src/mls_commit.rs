//! The MLS commit pipeline of the delivery service: a commit is applied to the
//! group's public state (openmls validates signature, epoch and membership),
//! checked against its sender, GroupInfo and Welcome, then sequenced
//! first-wins per epoch; members are nudged. The route only decodes.
use crate::error::ApiError;
use crate::routes::groups::{
    entry, group_record, invalid_mls, not_a_member, notify, notify_members, require_active,
};
use crate::state::AppState;
use atlas_crypto::mls_ds::{DsError, DsGroup};
use atlas_proto::mls::{CommitResponse, EpochConflict};
use atlas_proto::{ErrorCode, GroupId};
use atlas_store::{CommitOutcome, NewCommit};
use axum::http::StatusCode;

/// A commit as the member submitted it (decoded).
pub struct Submitted {
    /// The commit (`PublicMessage`).
    pub commit: Vec<u8>,
    /// The GroupInfo of the new epoch.
    pub group_info: Vec<u8>,
    /// The Welcome, when the commit adds members.
    pub welcome: Option<Vec<u8>>,
}

/// Validates and sequences `submitted` from member `me` in `group_id`.
pub async fn sequence(
    state: &AppState,
    group_id: &GroupId,
    me: &str,
    submitted: Submitted,
) -> Result<CommitResponse, ApiError> {
    let Submitted {
        commit,
        group_info,
        welcome,
    } = submitted;
    let group = group_record(state, group_id).await?;
    let mut ds = DsGroup::restore(&group.public_state).map_err(ApiError::internal)?;
    let from = ds.epoch();
    let summary = match ds.apply_commit(&commit) {
        Ok(summary) => summary,
        Err(e) => return Err(ds_error(state, group_id, e).await),
    };
    if summary.sender.to_string() != me {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!(
                "the commit is signed by {}, not by the calling device",
                summary.sender
            ),
        ));
    }
    ds.check_group_info(&group_info).map_err(invalid_mls)?;
    let mut added: Vec<String> = summary.added.iter().map(ToString::to_string).collect();
    let welcome = match (welcome, added.is_empty()) {
        (Some(w), false) => Some((added.clone(), w)),
        (None, true) => None,
        (None, false) => {
            return Err(ApiError::invalid(
                "a commit that adds members needs their welcome",
            ));
        }
        (Some(_), true) => {
            return Err(ApiError::invalid(
                "welcome given for a commit that adds no one",
            ));
        }
    };
    if summary.external {
        // An external commit is an active member's resync (the rejoin path, also
        // after a rollback): a removed device, or one never added, cannot let itself in.
        require_active(state, group_id, me).await.map_err(|_| {
            tracing::warn!(%group_id, member = %me, "external commit from a device that is not an active member refused");
            not_a_member("an external commit is accepted only from an active member of the group")
        })?;
        // A (re)join: the joiner's old leaf, if any, is among the removed.
        added.push(me.to_owned());
    }
    let commit_id = uuid::Uuid::now_v7().to_string();
    let outcome = state
        .stores
        .groups
        .sequence_commit(&NewCommit {
            group_id: group_id.clone(),
            commit_id: commit_id.clone(),
            sender_id: me.to_owned(),
            from_epoch: from,
            public_state: ds.snapshot().map_err(ApiError::internal)?,
            group_info,
            commit,
            welcome,
            added,
            removed: summary.removed.iter().map(ToString::to_string).collect(),
            now: state.clock.now(),
        })
        .await?;
    match outcome {
        CommitOutcome::Accepted { seq } => {
            notify_members(state, group_id, seq, atlas_store::kind::COMMIT, me).await;
            let welcomed: Vec<String> = summary.added.iter().map(ToString::to_string).collect();
            notify(
                state,
                group_id,
                seq + 1,
                atlas_store::kind::WELCOME,
                welcomed.iter().map(String::as_str),
            );
            tracing::info!(%group_id, epoch = summary.epoch, sender = %summary.sender, external = summary.external, "commit sequenced");
            Ok(CommitResponse {
                commit_id,
                epoch: summary.epoch,
                seq,
            })
        }
        CommitOutcome::Lost { current_epoch, .. } => {
            Err(conflict(state, group_id, current_epoch, from).await)
        }
    }
}

/// 409 `epoch_conflict`: the group moved on; the details name the commit that won.
async fn conflict(state: &AppState, group_id: &GroupId, current: u64, from: u64) -> ApiError {
    let winner = state
        .stores
        .groups
        .commit_of_epoch(group_id, from.saturating_add(1))
        .await
        .ok()
        .flatten()
        .and_then(|winner| entry(winner).ok());
    let details = EpochConflict {
        current_epoch: current,
        winner,
    };
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::EpochConflict,
        format!("the group is in epoch {current}: process the newer commits, then retry"),
    )
    .with_details(serde_json::to_value(details).unwrap_or_default())
}

/// The answer to a message the delivery service refused: 409 with the winner
/// for an old epoch, 400 otherwise.
pub(crate) async fn ds_error(state: &AppState, group_id: &GroupId, e: DsError) -> ApiError {
    match e {
        DsError::Malformed(m) => ApiError::invalid(format!("malformed MLS message: {m}")),
        DsError::WrongEpoch { message, current } if message < current => {
            conflict(state, group_id, current, message).await
        }
        e @ DsError::WrongEpoch { .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::WrongEpoch,
            e.to_string(),
        ),
        e @ (DsError::WrongGroup(_) | DsError::NotACommit | DsError::Invalid(_)) => invalid_mls(e),
        e @ DsError::State(_) => ApiError::internal(e),
    }
}
