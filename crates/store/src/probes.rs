//! Recovery probes: the throwaway users `atlas verify-recovery` registers to
//! prove a restored server works, and erases afterwards. A name under
//! [`PROBE_PREFIX`] registers only once an operator reserved it, and only a
//! reserved probe can be erased, so the erasure never reaches a real user's
//! data; a probe that shares a conversation with anyone but probes is refused.
use crate::db::{Backend, Tx, read, run};
use crate::{StoreError, StoreResult};
use atlas_proto::{DeviceId, UserId};
use std::collections::BTreeSet;
use time::OffsetDateTime;

/// The user id prefix kept for probes.
pub const PROBE_PREFIX: &str = "atlas-probe-";
/// Most probes reserved at once: a run takes two and erases them; an
/// interrupted run's stay until erased (the next run erases stale ones).
pub const MAX_PROBES: usize = 16;

/// A reserved probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedProbe {
    /// Its user id.
    pub user_id: UserId,
    /// When it was reserved.
    pub reserved_at: OffsetDateTime,
    /// The operator token that reserved it.
    pub reserved_by: String,
}

/// What erasing a probe removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasedProbe {
    /// Its devices (their sockets and cached standing are to be dropped).
    pub devices: Vec<DeviceId>,
    /// Groups removed with it (every member was a probe).
    pub groups: u64,
    /// Rows deleted, all tables together.
    pub rows: u64,
}

/// The recovery-probe part of the store.
#[async_trait::async_trait]
pub trait ProbeStore: Send + Sync {
    /// Reserves probe user ids for `reserved_by` (each must start with
    /// [`PROBE_PREFIX`]; [`StoreError::TooManyProbes`] past [`MAX_PROBES`]).
    async fn reserve_probes(
        &self,
        users: &[UserId],
        reserved_by: &str,
        now: OffsetDateTime,
    ) -> StoreResult<()>;
    /// Whether `user` is a reserved probe.
    async fn is_reserved_probe(&self, user: &UserId) -> StoreResult<bool>;
    /// The reserved probes, oldest first.
    async fn reserved_probes(&self) -> StoreResult<Vec<ReservedProbe>>;
    /// Deletes everything stored about a reserved probe, and its reservation,
    /// in one transaction: [`StoreError::NotAProbe`] for any other user,
    /// [`StoreError::ProbeNotIsolated`] when it talked to anyone but probes.
    async fn erase_probe(&self, user: &UserId) -> StoreResult<ErasedProbe>;
}

/// Rows about one user, deleted children first (`$1`: the user id; its MLS
/// welcomes, named `user/device`, go before these).
const USER_ROWS: &[&str] = &[
    "DELETE FROM receipts WHERE sender_id = $1 OR recipient_id = $1",
    "DELETE FROM messages WHERE sender_id = $1 OR recipient_id = $1",
    "DELETE FROM send_log WHERE sender_id = $1",
    "DELETE FROM resend_requests WHERE sender_id = $1 OR recipient_id = $1",
    "DELETE FROM olm_session_resets WHERE user_id = $1 OR peer_user_id = $1",
    "DELETE FROM decryption_reports WHERE user_id = $1 OR sender_id = $1",
    "DELETE FROM mls_key_packages WHERE user_id = $1",
    "DELETE FROM key_checks WHERE user_id = $1",
    "DELETE FROM key_backups WHERE user_id = $1",
    "DELETE FROM refresh_tokens WHERE user_id = $1",
    "DELETE FROM link_tokens WHERE user_id = $1",
    "DELETE FROM user_keys WHERE user_id = $1",
    "DELETE FROM devices WHERE user_id = $1",
    "DELETE FROM users WHERE user_id = $1",
    "DELETE FROM recovery_probes WHERE user_id = $1",
];

/// Rows of one group, children first (`$1`: the group id).
const GROUP_ROWS: &[&str] = &[
    "DELETE FROM mls_member_actions WHERE group_id = $1",
    "DELETE FROM mls_messages WHERE group_id = $1",
    "DELETE FROM mls_epochs WHERE group_id = $1",
    "DELETE FROM mls_commits WHERE group_id = $1",
    "DELETE FROM mls_welcomes WHERE group_id = $1",
    "DELETE FROM decryption_reports WHERE group_id = $1",
    "DELETE FROM mls_group_members WHERE group_id = $1",
    "DELETE FROM mls_groups WHERE group_id = $1",
];

/// `user/`, which the MLS member ids (`user/device`) of `user` start with, and
/// its length in characters (SQL's `substr` counts characters).
fn member_prefix(user: &UserId) -> StoreResult<(String, i32)> {
    let prefix = format!("{user}/");
    let len = i32::try_from(prefix.chars().count())
        .map_err(|_| StoreError::Corrupt("user id too long".into()))?;
    Ok((prefix, len))
}

/// The user of an MLS member id (`user/device`).
fn member_user(member: &str) -> &str {
    member.split_once('/').map_or(member, |(user, _)| user)
}

#[async_trait::async_trait]
impl<T: Backend> ProbeStore for T {
    async fn reserve_probes(
        &self,
        users: &[UserId],
        reserved_by: &str,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        if users.iter().any(|u| !u.as_str().starts_with(PROBE_PREFIX)) {
            return Err(StoreError::NotAProbe);
        }
        let mut tx = self.db().begin().await?;
        // Concurrent reservations count one after the other (SQLite has one writer).
        if let Some(conn) = tx.postgres() {
            sqlx::query("LOCK TABLE recovery_probes IN EXCLUSIVE MODE")
                .execute(conn)
                .await?;
        }
        let (reserved,): (i64,) = run!(
            &mut tx,
            sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM recovery_probes"),
            fetch_one
        )?;
        if usize::try_from(reserved).unwrap_or(usize::MAX) + users.len() > MAX_PROBES {
            return Err(StoreError::TooManyProbes(MAX_PROBES));
        }
        for user in users {
            run!(
                &mut tx,
                sqlx::query(
                    "INSERT INTO recovery_probes (user_id, reserved_at, reserved_by) \
                     VALUES ($1, $2, $3)"
                )
                .bind(user.as_str())
                .bind(now)
                .bind(reserved_by),
                execute
            )?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn is_reserved_probe(&self, user: &UserId) -> StoreResult<bool> {
        let found: Option<(String,)> = read!(
            self.db(),
            sqlx::query_as("SELECT user_id FROM recovery_probes WHERE user_id = $1")
                .bind(user.as_str()),
            fetch_optional
        )?;
        Ok(found.is_some())
    }

    async fn reserved_probes(&self) -> StoreResult<Vec<ReservedProbe>> {
        let rows: Vec<(String, OffsetDateTime, String)> = read!(
            self.db(),
            sqlx::query_as("SELECT user_id, reserved_at, reserved_by FROM recovery_probes"),
            fetch_all
        )?;
        // Sorted here: SQLite compares times as text, whose fraction of a
        // second has no fixed width.
        let mut probes = rows
            .into_iter()
            .map(|(user_id, reserved_at, reserved_by)| {
                Ok(ReservedProbe {
                    user_id: UserId::new(user_id)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    reserved_at,
                    reserved_by,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        probes.sort_by(|a, b| (a.reserved_at, &a.user_id).cmp(&(b.reserved_at, &b.user_id)));
        Ok(probes)
    }

    async fn erase_probe(&self, user: &UserId) -> StoreResult<ErasedProbe> {
        let mut tx = self.db().begin().await?;
        let probes: BTreeSet<String> = run!(
            &mut tx,
            sqlx::query_as::<_, (String,)>("SELECT user_id FROM recovery_probes"),
            fetch_all
        )?
        .into_iter()
        .map(|(u,)| u)
        .collect();
        if !probes.contains(user.as_str()) {
            return Err(StoreError::NotAProbe);
        }
        let groups = isolated_groups(&mut tx, user, &probes).await?;
        check_correspondents(&mut tx, user, &probes).await?;
        let devices: Vec<(String,)> = run!(
            &mut tx,
            sqlx::query_as("SELECT device_id FROM devices WHERE user_id = $1").bind(user.as_str()),
            fetch_all
        )?;
        let devices = devices
            .into_iter()
            .map(|(d,)| DeviceId::new(d).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect::<StoreResult<Vec<_>>>()?;
        let mut rows = 0;
        for group in &groups {
            for sql in GROUP_ROWS {
                rows += run!(&mut tx, sqlx::query(*sql).bind(group), execute)?;
            }
        }
        let (member_prefix, prefix_len) = member_prefix(user)?;
        rows += run!(
            &mut tx,
            sqlx::query("DELETE FROM mls_welcomes WHERE substr(member_id, 1, $2) = $1")
                .bind(&member_prefix)
                .bind(prefix_len),
            execute
        )?;
        for sql in USER_ROWS {
            rows += run!(&mut tx, sqlx::query(*sql).bind(user.as_str()), execute)?;
        }
        tx.commit().await?;
        Ok(ErasedProbe {
            devices,
            groups: groups.len() as u64,
            rows,
        })
    }
}

/// The groups `user` created or belongs to, each to go with it; refused when
/// any has a member that is not a probe (the server cannot remove a member
/// from an MLS group without a commit, so it leaves such a group alone).
async fn isolated_groups(
    tx: &mut Tx,
    user: &UserId,
    probes: &BTreeSet<String>,
) -> StoreResult<Vec<String>> {
    let (member_prefix, prefix_len) = member_prefix(user)?;
    let groups: Vec<(String,)> = run!(
        &mut *tx,
        sqlx::query_as(
            "SELECT group_id FROM mls_groups WHERE substr(created_by, 1, $2) = $1 \
             UNION SELECT group_id FROM mls_group_members WHERE substr(member_id, 1, $2) = $1"
        )
        .bind(&member_prefix)
        .bind(prefix_len),
        fetch_all
    )?;
    let groups: Vec<String> = groups.into_iter().map(|(g,)| g).collect();
    for group in &groups {
        let members: Vec<(String,)> = run!(
            &mut *tx,
            sqlx::query_as("SELECT member_id FROM mls_group_members WHERE group_id = $1")
                .bind(group),
            fetch_all
        )?;
        if let Some((stranger,)) = members.iter().find(|(m,)| !probes.contains(member_user(m))) {
            return Err(StoreError::ProbeNotIsolated(format!(
                "group {group} has member {stranger}"
            )));
        }
    }
    Ok(groups)
}

/// Refuses when `user` exchanged 1:1 messages with anyone but probes.
async fn check_correspondents(
    tx: &mut Tx,
    user: &UserId,
    probes: &BTreeSet<String>,
) -> StoreResult<()> {
    let pairs: Vec<(String, String)> = run!(
        &mut *tx,
        sqlx::query_as(
            "SELECT DISTINCT sender_id, recipient_id FROM messages \
             WHERE sender_id = $1 OR recipient_id = $1"
        )
        .bind(user.as_str()),
        fetch_all
    )?;
    match pairs
        .iter()
        .flat_map(|(s, r)| [s, r])
        .find(|u| !probes.contains(u.as_str()))
    {
        Some(stranger) => Err(StoreError::ProbeNotIsolated(format!(
            "messages with {stranger}"
        ))),
        None => Ok(()),
    }
}
