//! Storage of MLS groups: KeyPackages, the group row whose epoch moves by
//! compare-and-set, per-epoch public state and GroupInfo, the ordered group
//! log, and each member's acknowledged epoch — the tables the runbook queries.
use crate::StoreResult;
use atlas_proto::{DeviceId, UserId};
use time::OffsetDateTime;

/// A KeyPackage to publish.
#[derive(Debug, Clone)]
pub struct NewKeyPackage {
    /// Its reference (hex SHA-256 of the bytes), unique per device.
    pub key_package_ref: String,
    /// TLS-serialized KeyPackage.
    pub bytes: Vec<u8>,
    /// Handed out when the stock is empty, and then more than once.
    pub last_resort: bool,
    /// The device's signature of the package's MLS signature key (see `atlas_crypto::mls`).
    pub binding: Option<String>,
}

/// A claimed KeyPackage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedKeyPackageRecord {
    /// TLS-serialized KeyPackage.
    pub bytes: Vec<u8>,
    /// The device's signature of its MLS signature key, if it gave one.
    pub binding: Option<String>,
}

/// A device's KeyPackage stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyPackageCounts {
    /// Unclaimed ordinary KeyPackages.
    pub available: u64,
    /// Whether a last-resort KeyPackage is published.
    pub last_resort: bool,
}

/// A group as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRecord {
    /// The group's name (its MLS group id).
    pub group_id: String,
    /// The epoch of the last accepted commit.
    pub current_epoch: u64,
    /// When that commit was accepted.
    pub last_epoch_change: OffsetDateTime,
    /// The creating member.
    pub created_by: String,
    /// The delivery service's public-group snapshot at `current_epoch`.
    pub public_state: Vec<u8>,
}

/// A new group at epoch 0.
#[derive(Debug, Clone)]
pub struct NewGroup {
    /// Name (unique per server).
    pub group_id: String,
    /// The creating member (`USER_ID/DEVICE_ID`).
    pub creator: String,
    /// Public-group snapshot at epoch 0.
    pub public_state: Vec<u8>,
    /// The creator's GroupInfo of epoch 0.
    pub group_info: Vec<u8>,
    /// Creation time.
    pub now: OffsetDateTime,
}

/// A validated commit to sequence.
#[derive(Debug, Clone)]
pub struct NewCommit {
    /// The group.
    pub group_id: String,
    /// Server-assigned id.
    pub commit_id: String,
    /// The committer (`USER_ID/DEVICE_ID`).
    pub sender_id: String,
    /// The epoch the commit was made in; it wins only if the group is still there.
    pub from_epoch: u64,
    /// Public-group snapshot after the commit.
    pub public_state: Vec<u8>,
    /// GroupInfo of the new epoch.
    pub group_info: Vec<u8>,
    /// The commit message.
    pub commit: Vec<u8>,
    /// The Welcome and the members it is for.
    pub welcome: Option<(Vec<String>, Vec<u8>)>,
    /// Members the commit adds.
    pub added: Vec<String>,
    /// Members the commit removes.
    pub removed: Vec<String>,
    /// Acceptance time.
    pub now: OffsetDateTime,
}

/// How sequencing a commit ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CommitOutcome {
    /// It won its epoch and is in the log at `seq`.
    Accepted {
        /// Log position of the commit.
        seq: u64,
    },
    /// Another commit won the epoch first.
    Lost {
        /// The group's epoch now.
        current_epoch: u64,
        /// The commit that moved the group out of the sender's epoch, if still in the log.
        winner: Option<GroupMessageRecord>,
    },
}

/// `kind` of a log entry.
pub mod kind {
    /// A commit (`PublicMessage`).
    pub const COMMIT: &str = "commit";
    /// An application message (`PrivateMessage`).
    pub const APPLICATION: &str = "application";
    /// A Welcome for one member.
    pub const WELCOME: &str = "welcome";
}

/// One entry of a group's log.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMessageRecord {
    /// The group.
    pub group_id: String,
    /// Position in the group's log.
    pub seq: u64,
    /// See [`kind`].
    pub kind: String,
    /// The epoch it was sent in (a commit: the epoch it creates).
    pub epoch: u64,
    /// The sending member.
    pub sender_id: String,
    /// The MLS message.
    pub body: Vec<u8>,
    /// When it was stored.
    pub created_at: OffsetDateTime,
}

/// A member row.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMemberRecord {
    /// `USER_ID/DEVICE_ID`.
    pub member_id: String,
    /// The last epoch it acknowledged (one below its join epoch until it acknowledges that).
    pub epoch: u64,
    /// The commit of that epoch.
    pub last_commit: Option<String>,
    /// `active` or `removed`.
    pub status: String,
    /// The epoch it joined in.
    pub joined_epoch: u64,
    /// For a removed member: the log position of the commit that removed it (its view ends there).
    pub removed_seq: Option<u64>,
    /// Last change.
    pub updated_at: OffsetDateTime,
}

/// A recovery step requested for one member.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberAction {
    /// Id.
    pub action_id: String,
    /// The group.
    pub group_id: String,
    /// The member (`USER_ID/DEVICE_ID`).
    pub member_id: String,
    /// `update` (catch up, then self-update) or `rejoin` (external commit from the latest GroupInfo).
    pub action: String,
    /// The operator token that asked.
    pub requested_by: String,
    /// When.
    pub requested_at: OffsetDateTime,
    /// When the device reported back.
    pub done_at: Option<OffsetDateTime>,
    /// What it reported.
    pub outcome: Option<String>,
}

/// An emergency rollback, decided by the caller from the target epoch's state.
#[derive(Debug, Clone)]
pub struct Rollback {
    /// The group.
    pub group_id: String,
    /// The epoch to return to.
    pub target_epoch: u64,
    /// The group's epoch the rollback starts from (it fails if the group moved meanwhile).
    pub from_epoch: u64,
    /// Members of the target epoch.
    pub members_at_target: Vec<String>,
    /// Steps for the devices that must rejoin (those past the target).
    pub rejoin: Vec<MemberAction>,
    /// When.
    pub now: OffsetDateTime,
}

/// One group's epoch health, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEpochHealth {
    /// The group.
    pub group_id: String,
    /// Its epoch.
    pub current_epoch: u64,
    /// The lowest epoch an active member has acknowledged.
    pub min_member_epoch: u64,
    /// Active members more than two epochs behind.
    pub members_behind: u64,
}

/// The MLS part of the store.
#[async_trait::async_trait]
pub trait GroupStore: Send + Sync {
    /// Publishes KeyPackages of a device; a new last-resort one replaces the old.
    async fn upload_key_packages(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        packages: &[NewKeyPackage],
        now: OffsetDateTime,
    ) -> StoreResult<KeyPackageCounts>;
    /// A device's stock (bound KeyPackages only: unbound ones are never counted).
    async fn key_package_counts(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> StoreResult<KeyPackageCounts>;
    /// Claims one KeyPackage per active device of `user_id` (only `devices` if
    /// not empty): an ordinary one never handed out before, else the last-resort one.
    async fn claim_key_packages(
        &self,
        user_id: &UserId,
        devices: &[DeviceId],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(DeviceId, Option<ClaimedKeyPackageRecord>)>>;

    /// Creates a group at epoch 0 with its creator as the only member.
    async fn create_group(&self, group: &NewGroup) -> StoreResult<()>;
    /// One group.
    async fn group(&self, group_id: &str) -> StoreResult<Option<GroupRecord>>;
    /// Sequences a validated commit: in one transaction, moves the group from
    /// `from_epoch` to the next epoch if it is still there (first commit wins),
    /// stores the new state, GroupInfo, commit, Welcome and member changes.
    async fn sequence_commit(&self, commit: &NewCommit) -> StoreResult<CommitOutcome>;
    /// The commit in the log that created `epoch`.
    async fn commit_of_epoch(
        &self,
        group_id: &str,
        epoch: u64,
    ) -> StoreResult<Option<GroupMessageRecord>>;
    /// Appends an application message to the log; returns its position.
    async fn append_group_message(
        &self,
        group_id: &str,
        epoch: u64,
        sender_id: &str,
        body: &[u8],
        now: OffsetDateTime,
    ) -> StoreResult<u64>;
    /// Commits and application messages after `after` (and up to `up_to`, if given), in order.
    async fn group_messages(
        &self,
        group_id: &str,
        after: u64,
        up_to: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<GroupMessageRecord>>;
    /// Welcomes addressed to a member of the groups it is active in, not yet acknowledged.
    async fn welcomes(&self, member_id: &str) -> StoreResult<Vec<GroupMessageRecord>>;
    /// The GroupInfo of an epoch (the latest if `None`).
    async fn group_info(
        &self,
        group_id: &str,
        epoch: Option<u64>,
    ) -> StoreResult<Option<(u64, Vec<u8>)>>;
    /// Records that a member processed up to `epoch` (an older epoch than it
    /// acknowledged before changes nothing); commits every active member has
    /// acknowledged stop being pending, and the member's Welcomes up to that epoch are deleted.
    async fn acknowledge_epoch(
        &self,
        group_id: &str,
        member_id: &str,
        epoch: u64,
        now: OffsetDateTime,
    ) -> StoreResult<()>;
    /// The group's members, active and removed.
    async fn group_members(&self, group_id: &str) -> StoreResult<Vec<GroupMemberRecord>>;

    /// Records a recovery step for a member.
    async fn request_member_action(&self, action: &MemberAction) -> StoreResult<()>;
    /// Steps not yet done for a member, oldest first.
    async fn pending_member_actions(&self, member_id: &str) -> StoreResult<Vec<MemberAction>>;
    /// Every step of a group, newest first.
    async fn group_member_actions(&self, group_id: &str) -> StoreResult<Vec<MemberAction>>;
    /// Marks a member's step done; false if there is no such pending step of that member.
    async fn complete_member_action(
        &self,
        action_id: &str,
        member_id: &str,
        outcome: &str,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Emergency rollback to `target_epoch`, in one transaction: the group's
    /// state and epoch return to it, later commits become `rolled_back`, their
    /// log entries are hidden, members are set to `members_at_target` (the
    /// others removed), and each of `rejoin` gets a rejoin step.
    async fn rollback_group(&self, rollback: &Rollback) -> StoreResult<()>;
    /// The public state stored for an epoch.
    async fn epoch_state(&self, group_id: &str, epoch: u64) -> StoreResult<Option<Vec<u8>>>;
    /// Epoch health of at most `limit` groups, the most lagging first.
    async fn group_epoch_health(&self, limit: u32) -> StoreResult<Vec<GroupEpochHealth>>;
}
