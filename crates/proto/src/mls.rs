//! Request and response bodies of the MLS routes. MLS messages travel as
//! standard base64 of their RFC 9420 wire encoding.
use crate::ids::{DeviceId, GroupId, RequestId, UserId};
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};

/// `POST /mls/key-packages`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPackageUpload {
    /// Ordinary KeyPackages, each claimed at most once.
    #[serde(default)]
    pub key_packages: Vec<String>,
    /// A last-resort KeyPackage (replaces the previous one).
    #[serde(default)]
    pub last_resort: Option<String>,
    /// The device's Ed25519 signature (base64) of its MLS signature key
    /// statement (`atlas_crypto::mls::signature_key_statement`); required.
    #[serde(default)]
    pub signature_key_binding: Option<String>,
}

/// A device's KeyPackage stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPackageStock {
    /// Unclaimed ordinary KeyPackages.
    pub available: u64,
    /// Whether a last-resort KeyPackage is published.
    pub last_resort: bool,
}

/// `POST /mls/key-packages/claim`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPackageClaim {
    /// Whose devices.
    pub user_id: UserId,
    /// Only these devices (default: all active ones).
    #[serde(default)]
    pub devices: Vec<DeviceId>,
}

/// One device's claimed KeyPackage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimedKeyPackage {
    /// The device.
    pub device_id: DeviceId,
    /// Its KeyPackage, or `None` if it published none.
    pub key_package: Option<String>,
    /// The device's signature binding the KeyPackage's signature key to its certified key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_key_binding: Option<String>,
}

/// Answer to a claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyPackageClaimResponse {
    /// One per device.
    pub key_packages: Vec<ClaimedKeyPackage>,
}

/// `POST /groups`: a group created by the caller, at epoch 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupRequest {
    /// The group's name (its MLS group id), unique per server.
    pub group_id: GroupId,
    /// The creator's GroupInfo of epoch 0, with the ratchet tree.
    pub group_info: String,
}

/// `POST /groups/{group_id}/commits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// The commit (`PublicMessage`).
    pub commit: String,
    /// The GroupInfo of the epoch it creates, with the ratchet tree.
    pub group_info: String,
    /// The Welcome for the members it adds.
    #[serde(default)]
    pub welcome: Option<String>,
}

/// Answer to an accepted commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitResponse {
    /// The commit's id in `mls_commits`.
    pub commit_id: String,
    /// The epoch it created.
    pub epoch: u64,
    /// Its position in the group's log.
    pub seq: u64,
}

/// `details` of a 409 `epoch_conflict`: what the loser needs to rebase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochConflict {
    /// The group's epoch now.
    pub current_epoch: u64,
    /// The commit that won the epoch the loser was in, if still in the log.
    pub winner: Option<GroupLogEntry>,
}

/// `POST /groups/{group_id}/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMessageRequest {
    /// The application message (`PrivateMessage`).
    pub message: String,
}

/// One entry of a group's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupLogEntry {
    /// The group.
    pub group_id: GroupId,
    /// Position in the log.
    pub seq: u64,
    /// `commit`, `application` or `welcome`.
    pub kind: String,
    /// The epoch it was sent in (a commit: the epoch it creates).
    pub epoch: u64,
    /// The sending member (`USER_ID/DEVICE_ID`).
    pub sender_id: String,
    /// The MLS message.
    pub body: String,
    /// RFC 3339 time it was stored.
    pub created_at: Timestamp,
}

/// `GET /groups/{group_id}/messages` and `GET /groups/welcomes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupLogResponse {
    /// Entries in order.
    pub entries: Vec<GroupLogEntry>,
    /// Pass as `after` for the next page.
    pub next_after: u64,
}

/// `POST /groups/{group_id}/ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochAck {
    /// The epoch the device has processed.
    pub epoch: u64,
}

/// A member as `GET /groups/{group_id}` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMemberView {
    /// `USER_ID/DEVICE_ID`.
    pub member_id: String,
    /// The epoch it acknowledged.
    pub epoch: u64,
    /// `active` or `removed`.
    pub status: String,
    /// The epoch it joined in.
    pub joined_epoch: u64,
    /// The commit of its acknowledged epoch.
    pub last_commit: Option<String>,
}

/// `GET /groups/{group_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupView {
    /// The group.
    pub group_id: GroupId,
    /// Its epoch.
    pub current_epoch: u64,
    /// RFC 3339 time of the last epoch change.
    pub last_epoch_change: Timestamp,
    /// Members, with their acknowledged epochs.
    pub members: Vec<GroupMemberView>,
}

/// `GET /groups/{group_id}/group-info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfoResponse {
    /// The epoch it describes.
    pub epoch: u64,
    /// The GroupInfo, with the ratchet tree.
    pub group_info: String,
}

/// A recovery step an operator asked a member's device to take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberActionView {
    /// Id, to report it done.
    pub action_id: RequestId,
    /// The group.
    pub group_id: GroupId,
    /// The member (`USER_ID/DEVICE_ID`).
    pub member_id: String,
    /// `update` (catch up from the stored commits, then self-update) or `rejoin` (external commit).
    pub action: String,
    /// RFC 3339 request time.
    pub requested_at: Timestamp,
    /// RFC 3339 time the device reported back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<Timestamp>,
    /// What the device reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// `GET /groups/actions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberActionsResponse {
    /// Pending steps for the calling device, oldest first.
    pub actions: Vec<MemberActionView>,
}

/// `POST /groups/actions/{action_id}/done`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionDone {
    /// What happened, e.g. "caught up to epoch 5, updated to epoch 6".
    pub outcome: String,
}

/// `GET /admin/groups/{group_id}` and the answer of the recovery requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminGroupView {
    /// The group and its members' acknowledged epochs.
    pub group: GroupView,
    /// Recovery steps, newest first.
    pub actions: Vec<MemberActionView>,
    /// The `group_id` label of the group's series in `/metrics` (a salted hash
    /// unless the server exposes group ids).
    #[serde(default)]
    pub metrics_label: String,
}

/// `POST /admin/groups/{group_id}/rollback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The epoch to return to (below the current one, with its state still stored).
    pub target_epoch: u64,
}
