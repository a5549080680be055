//! Recovery steps the operator asks of one group member (`atlas mls
//! send-update`, `rejoin-member`), which its device performs on its next sync.
use crate::StoreResult;
use crate::db::{Backend, Tx, read, run};
use atlas_proto::{GroupId, RequestId};
use time::OffsetDateTime;

/// A recovery step requested for one member.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MemberAction {
    /// Id.
    #[sqlx(try_from = "String")]
    pub action_id: RequestId,
    /// The group.
    #[sqlx(try_from = "String")]
    pub group_id: GroupId,
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

/// The member-action part of the store.
#[async_trait::async_trait]
pub trait MemberActionStore: Send + Sync {
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
}

/// Inserts a step inside a larger transaction (a rollback asks every member to rejoin).
pub(crate) async fn insert_action(tx: &mut Tx, a: &MemberAction) -> StoreResult<()> {
    run!(
        tx,
        sqlx::query(
            "INSERT INTO mls_member_actions (action_id, group_id, member_id, action, requested_by, \
               requested_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(a.action_id.as_str())
        .bind(a.group_id.as_str())
        .bind(&a.member_id)
        .bind(&a.action)
        .bind(&a.requested_by)
        .bind(a.requested_at),
        execute
    )?;
    Ok(())
}

#[async_trait::async_trait]
impl<T: Backend> MemberActionStore for T {
    async fn request_member_action(&self, a: &MemberAction) -> StoreResult<()> {
        let mut tx = self.db().begin().await?;
        insert_action(&mut tx, a).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn pending_member_actions(&self, member_id: &str) -> StoreResult<Vec<MemberAction>> {
        Ok(read!(
            self.db(),
            sqlx::query_as(
                "SELECT action_id, group_id, member_id, action, requested_by, requested_at, done_at, \
                   outcome \
                 FROM mls_member_actions WHERE member_id = $1 AND done_at IS NULL \
                 ORDER BY requested_at, action_id",
            )
            .bind(member_id),
            fetch_all
        )?)
    }

    async fn group_member_actions(&self, group_id: &str) -> StoreResult<Vec<MemberAction>> {
        Ok(read!(
            self.db(),
            sqlx::query_as(
                "SELECT action_id, group_id, member_id, action, requested_by, requested_at, done_at, \
                   outcome \
                 FROM mls_member_actions WHERE group_id = $1 ORDER BY requested_at DESC, action_id",
            )
            .bind(group_id),
            fetch_all
        )?)
    }

    async fn complete_member_action(
        &self,
        action_id: &str,
        member_id: &str,
        outcome: &str,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.db().begin().await?;
        let done = run!(
            &mut tx,
            sqlx::query(
                "UPDATE mls_member_actions SET done_at = $1, outcome = $2 \
                 WHERE action_id = $3 AND member_id = $4 AND done_at IS NULL",
            )
            .bind(now)
            .bind(outcome)
            .bind(action_id)
            .bind(member_id),
            execute
        )?;
        tx.commit().await?;
        Ok(done > 0)
    }
}
