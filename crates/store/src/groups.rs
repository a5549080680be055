//! Storage of MLS groups: the group row whose epoch moves by compare-and-set,
//! per-epoch public state and GroupInfo, the ordered group log, and each
//! member's acknowledged epoch — the tables the runbook queries.
use crate::db::{Backend, Tx, read, run};
use crate::member_actions::{MemberAction, insert_action};
use crate::{StoreError, StoreResult};
use atlas_proto::GroupId;
use time::OffsetDateTime;

/// A group as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct GroupRecord {
    /// The group's name (its MLS group id).
    pub group_id: String,
    /// The epoch of the last accepted commit.
    #[sqlx(try_from = "i64")]
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
    pub group_id: GroupId,
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
    pub group_id: GroupId,
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
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct GroupMessageRecord {
    /// The group.
    #[sqlx(try_from = "String")]
    pub group_id: GroupId,
    /// Position in the group's log.
    #[sqlx(try_from = "i64")]
    pub seq: u64,
    /// See [`kind`].
    pub kind: String,
    /// The epoch it was sent in (a commit: the epoch it creates).
    #[sqlx(try_from = "i64")]
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

/// Converts an epoch or position for storage (they never reach `i64::MAX`).
fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Recomputes one group's epoch gauges (see migration 0018) inside the
/// transaction that changed its epoch or its members.
async fn refresh_gauges(tx: &mut Tx, group_id: &str) -> StoreResult<()> {
    run!(
        tx,
        sqlx::query(
            "UPDATE mls_groups SET \
               min_member_epoch = COALESCE((SELECT MIN(m.epoch) FROM mls_group_members m \
                 WHERE m.group_id = mls_groups.group_id AND m.status = 'active'), current_epoch), \
               members_behind = (SELECT COUNT(*) FROM mls_group_members m \
                 WHERE m.group_id = mls_groups.group_id AND m.status = 'active' \
                   AND m.epoch + 2 < mls_groups.current_epoch), \
               epoch_lag = current_epoch - COALESCE((SELECT MIN(m.epoch) FROM mls_group_members m \
                 WHERE m.group_id = mls_groups.group_id AND m.status = 'active'), current_epoch) \
             WHERE group_id = $1",
        )
        .bind(group_id),
        execute
    )?;
    Ok(())
}

/// Adds a member, or makes a removed one active again, at `joined_epoch`.
async fn upsert_member(
    tx: &mut Tx,
    group_id: &str,
    member_id: &str,
    joined_epoch: i64,
    now: OffsetDateTime,
) -> StoreResult<()> {
    // Until it acknowledges its join epoch, a member counts as one epoch behind.
    run!(
        tx,
        sqlx::query(
            "INSERT INTO mls_group_members (group_id, member_id, epoch, last_commit, status, \
               joined_epoch, updated_at) \
             VALUES ($1, $2, $3, NULL, 'active', $4, $5) \
             ON CONFLICT (group_id, member_id) DO UPDATE SET epoch = $3, last_commit = NULL, \
               status = 'active', joined_epoch = $4, updated_at = $5, removed_seq = NULL",
        )
        .bind(group_id)
        .bind(member_id)
        .bind((joined_epoch - 1).max(0))
        .bind(joined_epoch)
        .bind(now),
        execute
    )?;
    Ok(())
}

/// Appends one entry to a group's log.
async fn insert_log(tx: &mut Tx, entry: &GroupMessageRecord) -> StoreResult<()> {
    run!(
        tx,
        sqlx::query(
            "INSERT INTO mls_messages (group_id, seq, kind, epoch, sender_id, body, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(entry.group_id.as_str())
        .bind(signed(entry.seq))
        .bind(&entry.kind)
        .bind(signed(entry.epoch))
        .bind(&entry.sender_id)
        .bind(&entry.body)
        .bind(entry.created_at),
        execute
    )?;
    Ok(())
}

/// The columns of [`GroupMessageRecord`].
const LOG_COLUMNS: &str = "group_id, seq, kind, epoch, sender_id, body, created_at";

/// A member row as stored (positions signed).
#[derive(sqlx::FromRow)]
struct MemberRow {
    member_id: String,
    epoch: i64,
    last_commit: Option<String>,
    status: String,
    joined_epoch: i64,
    updated_at: OffsetDateTime,
    removed_seq: Option<i64>,
}

#[async_trait::async_trait]
impl<T: Backend> GroupStore for T {
    async fn create_group(&self, g: &NewGroup) -> StoreResult<()> {
        let mut tx = self.db().begin().await?;
        let inserted = run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO mls_groups (group_id, current_epoch, last_epoch_change, created_by, \
                   created_at, public_state, next_seq) \
                 VALUES ($1, 0, $2, $3, $2, $4, 0) ON CONFLICT DO NOTHING",
            )
            .bind(g.group_id.as_str())
            .bind(g.now)
            .bind(&g.creator)
            .bind(&g.public_state),
            execute
        )?;
        if inserted == 0 {
            return Err(StoreError::GroupExists);
        }
        run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO mls_group_members (group_id, member_id, epoch, last_commit, status, \
                   joined_epoch, updated_at) \
                 VALUES ($1, $2, 0, NULL, 'active', 0, $3)",
            )
            .bind(g.group_id.as_str())
            .bind(&g.creator)
            .bind(g.now),
            execute
        )?;
        run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO mls_epochs (group_id, epoch, public_state, group_info, created_at) \
                 VALUES ($1, 0, $2, $3, $4)",
            )
            .bind(g.group_id.as_str())
            .bind(&g.public_state)
            .bind(&g.group_info)
            .bind(g.now),
            execute
        )?;
        refresh_gauges(&mut tx, &g.group_id).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn group(&self, group_id: &str) -> StoreResult<Option<GroupRecord>> {
        Ok(read!(
            self.db(),
            sqlx::query_as(
                "SELECT group_id, current_epoch, last_epoch_change, created_by, public_state \
                 FROM mls_groups WHERE group_id = $1",
            )
            .bind(group_id),
            fetch_optional
        )?)
    }

    async fn sequence_commit(&self, c: &NewCommit) -> StoreResult<CommitOutcome> {
        let from = signed(c.from_epoch);
        let new_epoch = from.saturating_add(1);
        let entries: i64 = if c.welcome.is_some() { 2 } else { 1 };
        let mut tx = self.db().begin().await?;
        // The compare-and-set that makes the first valid commit of an epoch the only one.
        let next: Option<(i64,)> = run!(
            &mut tx,
            sqlx::query_as(
                "UPDATE mls_groups SET current_epoch = $1, last_epoch_change = $2, public_state = $3, \
                   next_seq = next_seq + $4 \
                 WHERE group_id = $5 AND current_epoch = $6 RETURNING next_seq",
            )
            .bind(new_epoch)
            .bind(c.now)
            .bind(&c.public_state)
            .bind(entries)
            .bind(c.group_id.as_str())
            .bind(from),
            fetch_optional
        )?;
        let Some((next,)) = next else {
            let current: Option<(i64,)> = run!(
                &mut tx,
                sqlx::query_as("SELECT current_epoch FROM mls_groups WHERE group_id = $1")
                    .bind(c.group_id.as_str()),
                fetch_optional
            )?;
            let (current,) = current.ok_or(StoreError::UnknownGroup)?;
            tx.commit().await?;
            let winner = self
                .commit_of_epoch(&c.group_id, c.from_epoch.saturating_add(1))
                .await?;
            return Ok(CommitOutcome::Lost {
                current_epoch: current.max(0) as u64,
                winner,
            });
        };
        let seq = next - entries + 1;
        run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO mls_commits (commit_id, group_id, sender_id, epoch, status, seq, created_at) \
                 VALUES ($1, $2, $3, $4, 'pending', $5, $6)",
            )
            .bind(&c.commit_id)
            .bind(c.group_id.as_str())
            .bind(&c.sender_id)
            .bind(new_epoch)
            .bind(seq)
            .bind(c.now),
            execute
        )?;
        // A rolled-back epoch may come again: its old row gives way.
        run!(
            &mut tx,
            sqlx::query("DELETE FROM mls_epochs WHERE group_id = $1 AND epoch >= $2")
                .bind(c.group_id.as_str())
                .bind(new_epoch),
            execute
        )?;
        run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO mls_epochs (group_id, epoch, public_state, group_info, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(c.group_id.as_str())
            .bind(new_epoch)
            .bind(&c.public_state)
            .bind(&c.group_info)
            .bind(c.now),
            execute
        )?;
        let entry = |seq: i64, kind: &str, body: &[u8]| GroupMessageRecord {
            group_id: c.group_id.clone(),
            seq: seq.max(0) as u64,
            kind: kind.to_owned(),
            epoch: new_epoch.max(0) as u64,
            sender_id: c.sender_id.clone(),
            body: body.to_vec(),
            created_at: c.now,
        };
        insert_log(&mut tx, &entry(seq, kind::COMMIT, &c.commit)).await?;
        for member in &c.removed {
            run!(
                &mut tx,
                sqlx::query(
                    "UPDATE mls_group_members SET status = 'removed', updated_at = $1, removed_seq = $4 \
                     WHERE group_id = $2 AND member_id = $3",
                )
                .bind(c.now)
                .bind(c.group_id.as_str())
                .bind(member)
                .bind(seq),
                execute
            )?;
        }
        for member in &c.added {
            upsert_member(&mut tx, &c.group_id, member, new_epoch, c.now).await?;
        }
        if let Some((recipients, welcome)) = &c.welcome {
            insert_log(&mut tx, &entry(seq + 1, kind::WELCOME, welcome)).await?;
            for member in recipients {
                run!(
                    &mut tx,
                    sqlx::query(
                        "INSERT INTO mls_welcomes (member_id, group_id, seq) VALUES ($1, $2, $3) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(member)
                    .bind(c.group_id.as_str())
                    .bind(seq + 1),
                    execute
                )?;
            }
        }
        refresh_gauges(&mut tx, &c.group_id).await?;
        tx.commit().await?;
        Ok(CommitOutcome::Accepted {
            seq: seq.max(0) as u64,
        })
    }

    async fn commit_of_epoch(
        &self,
        group_id: &str,
        epoch: u64,
    ) -> StoreResult<Option<GroupMessageRecord>> {
        let sql = format!(
            "SELECT {LOG_COLUMNS} FROM mls_messages \
             WHERE group_id = $1 AND kind = 'commit' AND epoch = $2 AND rolled_back = 0 \
             ORDER BY seq DESC LIMIT 1"
        );
        Ok(read!(
            self.db(),
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(group_id)
                .bind(signed(epoch)),
            fetch_optional
        )?)
    }

    async fn append_group_message(
        &self,
        group_id: &str,
        epoch: u64,
        sender_id: &str,
        body: &[u8],
        now: OffsetDateTime,
    ) -> StoreResult<u64> {
        let mut tx = self.db().begin().await?;
        let status: Option<(String,)> = run!(
            &mut tx,
            sqlx::query_as(
                "SELECT status FROM mls_group_members WHERE group_id = $1 AND member_id = $2",
            )
            .bind(group_id)
            .bind(sender_id),
            fetch_optional
        )?;
        if status.as_ref().map(|s| s.0.as_str()) != Some("active") {
            let exists: Option<(i64,)> = run!(
                &mut tx,
                sqlx::query_as("SELECT current_epoch FROM mls_groups WHERE group_id = $1")
                    .bind(group_id),
                fetch_optional
            )?;
            return Err(if exists.is_some() {
                StoreError::NotAGroupMember
            } else {
                StoreError::UnknownGroup
            });
        }
        let (seq,): (i64,) = run!(
            &mut tx,
            sqlx::query_as(
                "UPDATE mls_groups SET next_seq = next_seq + 1 WHERE group_id = $1 RETURNING next_seq",
            )
            .bind(group_id),
            fetch_one
        )?;
        let entry = GroupMessageRecord {
            group_id: crate::records::id(group_id.to_owned())?,
            seq: seq.max(0) as u64,
            kind: kind::APPLICATION.to_owned(),
            epoch,
            sender_id: sender_id.to_owned(),
            body: body.to_vec(),
            created_at: now,
        };
        insert_log(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(seq.max(0) as u64)
    }

    async fn group_messages(
        &self,
        group_id: &str,
        after: u64,
        up_to: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<GroupMessageRecord>> {
        let sql = format!(
            "SELECT {LOG_COLUMNS} FROM mls_messages \
             WHERE group_id = $1 AND seq > $2 AND seq <= $4 AND kind <> 'welcome' AND rolled_back = 0 \
             ORDER BY seq LIMIT $3"
        );
        Ok(read!(
            self.db(),
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(group_id)
                .bind(signed(after))
                .bind(i64::from(limit))
                .bind(up_to.map_or(i64::MAX, signed)),
            fetch_all
        )?)
    }

    async fn welcomes(&self, member_id: &str) -> StoreResult<Vec<GroupMessageRecord>> {
        Ok(read!(
            self.db(),
            sqlx::query_as(
                "SELECT m.group_id, m.seq, m.kind, m.epoch, m.sender_id, m.body, m.created_at \
                 FROM mls_welcomes w \
                 JOIN mls_messages m ON m.group_id = w.group_id AND m.seq = w.seq \
                 JOIN mls_group_members gm ON gm.group_id = w.group_id \
                   AND gm.member_id = w.member_id AND gm.status = 'active' \
                 WHERE w.member_id = $1 AND m.rolled_back = 0 \
                 ORDER BY m.created_at, m.seq",
            )
            .bind(member_id),
            fetch_all
        )?)
    }

    async fn group_info(
        &self,
        group_id: &str,
        epoch: Option<u64>,
    ) -> StoreResult<Option<(u64, Vec<u8>)>> {
        let row: Option<(i64, Vec<u8>)> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT epoch, group_info FROM mls_epochs \
                 WHERE group_id = $1 AND ($2 IS NULL OR epoch = $2) ORDER BY epoch DESC LIMIT 1",
            )
            .bind(group_id)
            .bind(epoch.map(signed)),
            fetch_optional
        )?;
        Ok(row.map(|(e, info)| (e.max(0) as u64, info)))
    }

    async fn acknowledge_epoch(
        &self,
        group_id: &str,
        member_id: &str,
        epoch: u64,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let mut tx = self.db().begin().await?;
        let lock = tx.dialect().for_update();
        let group_sql = format!("SELECT current_epoch FROM mls_groups WHERE group_id = $1{lock}");
        let current: Option<(i64,)> = run!(
            &mut tx,
            sqlx::query_as(sqlx::AssertSqlSafe(group_sql.as_str())).bind(group_id),
            fetch_optional
        )?;
        let (current,) = current.ok_or(StoreError::UnknownGroup)?;
        let acknowledged = signed(epoch).min(current);
        let member_sql = format!(
            "SELECT status FROM mls_group_members WHERE group_id = $1 AND member_id = $2{lock}"
        );
        let status: Option<(String,)> = run!(
            &mut tx,
            sqlx::query_as(sqlx::AssertSqlSafe(member_sql.as_str()))
                .bind(group_id)
                .bind(member_id),
            fetch_optional
        )?;
        if status.as_ref().map(|s| s.0.as_str()) != Some("active") {
            return Err(StoreError::NotAGroupMember);
        }
        // Only forward: an old epoch acknowledged again (or made up) cannot drag the
        // member back and make the group look out of step.
        run!(
            &mut tx,
            sqlx::query(
                "UPDATE mls_group_members SET epoch = $1, updated_at = $2, last_commit = \
                   (SELECT commit_id FROM mls_commits WHERE group_id = $3 AND epoch = $1 \
                      AND status <> 'rolled_back' ORDER BY seq DESC LIMIT 1) \
                 WHERE group_id = $3 AND member_id = $4 AND epoch < $1",
            )
            .bind(acknowledged)
            .bind(now)
            .bind(group_id)
            .bind(member_id),
            execute
        )?;
        // Its Welcomes of epochs it has reached are served no more.
        run!(
            &mut tx,
            sqlx::query(
                "DELETE FROM mls_welcomes WHERE member_id = $1 AND group_id = $2 AND seq IN \
                   (SELECT seq FROM mls_messages WHERE group_id = $2 AND kind = 'welcome' AND epoch <= $3)",
            )
            .bind(member_id)
            .bind(group_id)
            .bind(acknowledged),
            execute
        )?;
        run!(
            &mut tx,
            sqlx::query(
                "UPDATE mls_commits SET status = 'acknowledged' WHERE group_id = $1 AND status = 'pending' \
                 AND epoch <= (SELECT MIN(epoch) FROM mls_group_members \
                   WHERE group_id = $1 AND status = 'active')",
            )
            .bind(group_id),
            execute
        )?;
        refresh_gauges(&mut tx, group_id).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn group_members(&self, group_id: &str) -> StoreResult<Vec<GroupMemberRecord>> {
        let rows: Vec<MemberRow> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT member_id, epoch, last_commit, status, joined_epoch, updated_at, removed_seq \
                 FROM mls_group_members WHERE group_id = $1 ORDER BY member_id",
            )
            .bind(group_id),
            fetch_all
        )?;
        Ok(rows
            .into_iter()
            .map(|r| GroupMemberRecord {
                member_id: r.member_id,
                epoch: r.epoch.max(0) as u64,
                last_commit: r.last_commit,
                status: r.status,
                joined_epoch: r.joined_epoch.max(0) as u64,
                updated_at: r.updated_at,
                removed_seq: r.removed_seq.map(|s| s.max(0) as u64),
            })
            .collect())
    }

    async fn epoch_state(&self, group_id: &str, epoch: u64) -> StoreResult<Option<Vec<u8>>> {
        let row: Option<(Vec<u8>,)> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT public_state FROM mls_epochs WHERE group_id = $1 AND epoch = $2"
            )
            .bind(group_id)
            .bind(signed(epoch)),
            fetch_optional
        )?;
        Ok(row.map(|(state,)| state))
    }

    async fn rollback_group(&self, r: &Rollback) -> StoreResult<()> {
        let target = signed(r.target_epoch);
        let mut tx = self.db().begin().await?;
        let state: Option<(Vec<u8>,)> = run!(
            &mut tx,
            sqlx::query_as(
                "SELECT public_state FROM mls_epochs WHERE group_id = $1 AND epoch = $2"
            )
            .bind(r.group_id.as_str())
            .bind(target),
            fetch_optional
        )?;
        let (state,) = state.ok_or(StoreError::UnknownGroup)?;
        let moved = run!(
            &mut tx,
            sqlx::query(
                "UPDATE mls_groups SET current_epoch = $1, public_state = $2, last_epoch_change = $3 \
                 WHERE group_id = $4 AND current_epoch = $5",
            )
            .bind(target)
            .bind(&state)
            .bind(r.now)
            .bind(r.group_id.as_str())
            .bind(signed(r.from_epoch)),
            execute
        )?;
        if moved == 0 {
            return Err(StoreError::UnknownGroup);
        }
        run!(
            &mut tx,
            sqlx::query(
                "UPDATE mls_commits SET status = 'rolled_back' WHERE group_id = $1 AND epoch > $2"
            )
            .bind(r.group_id.as_str())
            .bind(target),
            execute
        )?;
        run!(
            &mut tx,
            sqlx::query(
                "UPDATE mls_messages SET rolled_back = 1 WHERE group_id = $1 AND epoch > $2"
            )
            .bind(r.group_id.as_str())
            .bind(target),
            execute
        )?;
        run!(
            &mut tx,
            sqlx::query("DELETE FROM mls_epochs WHERE group_id = $1 AND epoch > $2")
                .bind(r.group_id.as_str())
                .bind(target),
            execute
        )?;
        // Members of the discarded epochs see nothing logged after the rollback.
        run!(
            &mut tx,
            sqlx::query(
                "UPDATE mls_group_members SET status = 'removed', updated_at = $1, \
                 removed_seq = (SELECT next_seq FROM mls_groups WHERE group_id = $2) WHERE group_id = $2",
            )
            .bind(r.now)
            .bind(r.group_id.as_str()),
            execute
        )?;
        for member in &r.members_at_target {
            run!(
                &mut tx,
                sqlx::query(
                    "UPDATE mls_group_members SET status = 'active', updated_at = $1, removed_seq = NULL, \
                     epoch = CASE WHEN epoch > $2 THEN $2 ELSE epoch END \
                     WHERE group_id = $3 AND member_id = $4",
                )
                .bind(r.now)
                .bind(target)
                .bind(r.group_id.as_str())
                .bind(member),
                execute
            )?;
        }
        for a in &r.rejoin {
            insert_action(&mut tx, a).await?;
        }
        refresh_gauges(&mut tx, &r.group_id).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn group_epoch_health(&self, limit: u32) -> StoreResult<Vec<GroupEpochHealth>> {
        // Maintained by `refresh_gauges`: an index walk, not a join of every group and member.
        let rows: Vec<(String, i64, i64, i64)> = read!(
            self.db(),
            sqlx::query_as(
                "SELECT group_id, current_epoch, min_member_epoch, members_behind FROM mls_groups \
                 ORDER BY epoch_lag DESC, group_id LIMIT $1",
            )
            .bind(i64::from(limit)),
            fetch_all
        )?;
        Ok(rows
            .into_iter()
            .map(|(group_id, current, min, behind)| GroupEpochHealth {
                group_id,
                current_epoch: current.max(0) as u64,
                min_member_epoch: min.max(0) as u64,
                members_behind: behind.max(0) as u64,
            })
            .collect())
    }
}
