//! `atlas diagnose group`: the runbook's MLS checks (member epochs, group
//! epoch, pending commits) and the recovery ladder.
use super::{cause, step};
use atlas_proto::GroupId;
use atlas_proto::diagnose::{CauseCode, Diagnosis, Finding, Recovery, RecoveryAction};

/// How far behind a member may be before it counts as stuck (the alert's threshold).
pub const MAX_LAG: u64 = 2;

/// Everything the server knows about a group.
#[derive(Debug, Clone)]
pub struct GroupEvidence {
    /// The group.
    pub group_id: GroupId,
    /// Whether it exists.
    pub exists: bool,
    /// Current epoch.
    pub current_epoch: u64,
    /// RFC 3339.
    pub last_epoch_change: String,
    /// Members.
    pub members: Vec<MemberEvidence>,
    /// Recovery steps asked of members, newest first.
    pub actions: Vec<MemberActionEvidence>,
}

/// One member row.
#[derive(Debug, Clone, Default)]
pub struct MemberEvidence {
    /// `USER_ID/DEVICE_ID`.
    pub member_id: String,
    /// Acknowledged epoch.
    pub epoch: u64,
    /// `active` or `removed`.
    pub status: String,
    /// Its last acknowledged commit.
    pub last_commit: Option<String>,
}

/// One recovery step asked of a member.
#[derive(Debug, Clone, Default)]
pub struct MemberActionEvidence {
    /// `USER_ID/DEVICE_ID`.
    pub member_id: String,
    /// `update` or `rejoin`.
    pub action: String,
    /// Whether the device reported back.
    pub done: bool,
    /// What it reported.
    pub outcome: Option<String>,
}

/// Walks the checks for a group.
pub fn diagnose_group(g: &GroupEvidence) -> Diagnosis {
    let subject = format!("group {}", g.group_id);
    if !g.exists {
        return Diagnosis {
            subject,
            steps: vec![step(
                "Check group's current epoch",
                "no such group",
                Finding::Problem,
            )],
            cause: cause(CauseCode::Unknown, "no such group"),
            recovery: vec![],
        };
    }
    let mut steps = vec![step(
        "Check group's current epoch",
        format!("epoch {} since {}", g.current_epoch, g.last_epoch_change),
        Finding::Info,
    )];
    let active: Vec<&MemberEvidence> = g.members.iter().filter(|m| m.status == "active").collect();
    let mut stuck = Vec::new();
    for m in &active {
        let lag = g.current_epoch.saturating_sub(m.epoch);
        steps.push(step(
            &format!("Check member's epoch → {}", m.member_id),
            format!(
                "acknowledged epoch {} ({lag} behind){}",
                m.epoch,
                m.last_commit
                    .as_ref()
                    .map(|c| format!(", last commit {c}"))
                    .unwrap_or_default()
            ),
            if lag > MAX_LAG {
                Finding::Problem
            } else {
                Finding::Ok
            },
        ));
        if lag > MAX_LAG {
            stuck.push(*m);
        }
    }
    let behind = active.iter().filter(|m| m.epoch < g.current_epoch).count();
    steps.push(step(
        "Check pending commits",
        format!(
            "{behind} active member(s) have not acknowledged epoch {}",
            g.current_epoch
        ),
        if behind == 0 {
            Finding::Ok
        } else {
            Finding::Info
        },
    ));
    let Some(member) = stuck.first() else {
        return Diagnosis {
            subject,
            steps,
            cause: cause(
                CauseCode::Healthy,
                "every active member is within two epochs",
            ),
            recovery: vec![],
        };
    };
    let last = g.actions.iter().find(|a| a.member_id == member.member_id);
    if let Some(a) = last {
        steps.push(step(
            &format!("Recovery already asked of {}", a.member_id),
            format!(
                "{}: {}",
                a.action,
                if a.done {
                    a.outcome.clone().unwrap_or_else(|| "done".into())
                } else {
                    "waiting for the device to come online".into()
                }
            ),
            Finding::Info,
        ));
    }
    let (group_id, member_id) = (g.group_id.clone(), member.member_id.clone());
    let update = Recovery {
        summary: format!(
            "ask {member_id} to catch up from the stored commits and self-update (Option 1)"
        ),
        commands: vec![format!(
            "atlas mls send-update --group-id {group_id} --member-id {member_id}"
        )],
        actions: vec![RecoveryAction::MlsSendUpdate {
            group_id: group_id.clone(),
            member_id: member_id.clone(),
        }],
    };
    let rejoin = Recovery {
        summary: format!("have {member_id} rejoin by external commit (Option 2, last resort)"),
        commands: vec![format!(
            "atlas mls rejoin-member --group-id {group_id} --member-id {member_id}"
        )],
        actions: vec![RecoveryAction::MlsRejoin {
            group_id: group_id.clone(),
            member_id: member_id.clone(),
        }],
    };
    let update_failed = last.is_some_and(|a| {
        a.action == "update"
            && a.done
            && a.outcome
                .as_deref()
                .is_some_and(|o| o.starts_with("failed"))
    });
    let recovery = if update_failed {
        vec![rejoin, update]
    } else {
        vec![update, rejoin]
    };
    Diagnosis {
        subject,
        steps,
        cause: cause(
            CauseCode::MemberStuckInOldEpoch,
            format!(
                "{member_id} is stuck in epoch {} of {}",
                member.epoch, g.current_epoch
            ),
        ),
        recovery,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(epochs: &[(&str, u64)]) -> GroupEvidence {
        GroupEvidence {
            group_id: "team".parse().unwrap(),
            exists: true,
            current_epoch: 7,
            last_epoch_change: "t".into(),
            members: epochs
                .iter()
                .map(|(m, e)| MemberEvidence {
                    member_id: (*m).into(),
                    epoch: *e,
                    status: "active".into(),
                    last_commit: None,
                })
                .collect(),
            actions: vec![],
        }
    }

    #[test]
    fn a_member_three_behind_is_stuck_and_a_failed_update_escalates_to_rejoin() {
        assert_eq!(
            diagnose_group(&group(&[("a/A", 7), ("b/B", 5)])).cause.code,
            CauseCode::Healthy
        );
        let mut g = group(&[("a/A", 7), ("c/C", 4)]);
        let d = diagnose_group(&g);
        assert_eq!(d.cause.code, CauseCode::MemberStuckInOldEpoch);
        assert!(matches!(
            d.recovery[0].actions[0],
            RecoveryAction::MlsSendUpdate { .. }
        ));
        g.actions = vec![MemberActionEvidence {
            member_id: "c/C".into(),
            action: "update".into(),
            done: true,
            outcome: Some("failed: no group state".into()),
        }];
        assert!(matches!(
            diagnose_group(&g).recovery[0].actions[0],
            RecoveryAction::MlsRejoin { .. }
        ));
        assert_eq!(
            diagnose_group(&GroupEvidence {
                exists: false,
                members: vec![],
                ..group(&[])
            })
            .cause
            .code,
            CauseCode::Unknown
        );
    }
}
