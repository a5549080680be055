//! Storage of the emergency lockdown: one row while it is in force. Starting
//! and lifting are single statements, so two operators racing get one winner.
use crate::db::{Backend, read, run};
use crate::{StoreError, StoreResult};
use atlas_proto::emergency::LockdownState;
use time::OffsetDateTime;

/// The lockdown part of the store.
#[async_trait::async_trait]
pub trait LockdownStore: Send + Sync {
    /// The lockdown in force, if any.
    async fn lockdown(&self) -> StoreResult<Option<LockdownState>>;
    /// Starts `state`; false if a lockdown is already in force.
    async fn start_lockdown(&self, state: &LockdownState) -> StoreResult<bool>;
    /// Ends the lockdown; the one that was in force, if any.
    async fn lift_lockdown(&self) -> StoreResult<Option<LockdownState>>;
}

fn ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn state((since_ms, actor, reason): (i64, String, String)) -> StoreResult<LockdownState> {
    let since = OffsetDateTime::from_unix_timestamp_nanos(i128::from(since_ms) * 1_000_000)
        .map_err(|_| StoreError::Corrupt("lockdown time".into()))?;
    Ok(LockdownState {
        since: since.into(),
        actor,
        reason,
    })
}

#[async_trait::async_trait]
impl<T: Backend> LockdownStore for T {
    async fn lockdown(&self) -> StoreResult<Option<LockdownState>> {
        let row: Option<(i64, String, String)> = read!(
            self.db(),
            sqlx::query_as("SELECT since_ms, actor, reason FROM lockdown WHERE id = 1"),
            fetch_optional
        )?;
        row.map(state).transpose()
    }

    async fn start_lockdown(&self, lockdown: &LockdownState) -> StoreResult<bool> {
        let mut tx = self.db().begin().await?;
        let started = run!(
            &mut tx,
            sqlx::query(
                "INSERT INTO lockdown (id, since_ms, actor, reason) VALUES (1, $1, $2, $3) \
                 ON CONFLICT (id) DO NOTHING"
            )
            .bind(ms(lockdown.since.0))
            .bind(&lockdown.actor)
            .bind(&lockdown.reason),
            execute
        )?;
        tx.commit().await?;
        Ok(started == 1)
    }

    async fn lift_lockdown(&self) -> StoreResult<Option<LockdownState>> {
        let mut tx = self.db().begin().await?;
        let row: Option<(i64, String, String)> = run!(
            &mut tx,
            sqlx::query_as("DELETE FROM lockdown WHERE id = 1 RETURNING since_ms, actor, reason"),
            fetch_optional
        )?;
        tx.commit().await?;
        row.map(state).transpose()
    }
}
