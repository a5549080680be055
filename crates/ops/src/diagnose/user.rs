//! `atlas diagnose user`: a user's devices, keys (the runbook's `user_keys`
//! query), key checks, recent decryption failures and backups.
use super::{cause, resend_command, restore_command, step};
use atlas_proto::diagnose::{CauseCode, Diagnosis, Finding, Recovery, RecoveryAction};
use atlas_proto::e2ee::FailureCode;
use atlas_proto::keys::{KeyStatus, KeyType};
use atlas_proto::{GroupId, MessageId};

/// Most failed messages a user diagnosis offers to resend at once.
pub const MAX_RESENDS: usize = 20;

/// Everything the server knows about a user's E2EE state.
#[derive(Debug, Clone, Default)]
pub struct UserEvidence {
    /// The user.
    pub user_id: String,
    /// Whether the user exists.
    pub exists: bool,
    /// Their devices.
    pub devices: Vec<DeviceEvidence>,
    /// Messages to the user whose latest outcome is a failure (last 24 h).
    pub failures: Vec<FailureEvidence>,
    /// Messages recovered in the same window.
    pub recovered: u64,
    /// Newest backup date, if any.
    pub latest_backup: Option<String>,
}

/// One device.
#[derive(Debug, Clone, Default)]
pub struct DeviceEvidence {
    /// Device id.
    pub device_id: String,
    /// `active` or not.
    pub status: String,
    /// `user_keys` rows by `(key_type, status)`.
    pub keys: Vec<(KeyType, KeyStatus, u64)>,
    /// Newest `last_rotated` of its fallback key.
    pub fallback_rotated: Option<String>,
    /// Latest key check: `(when, mismatched, revoked)`.
    pub key_check: Option<(String, u64, u64)>,
}

/// One failed message.
#[derive(Debug, Clone)]
pub struct FailureEvidence {
    /// The message.
    pub message: FailedMessage,
    /// The device.
    pub device_id: String,
    /// Failure code.
    pub code: FailureCode,
}

/// A message a device could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailedMessage {
    /// A 1:1 message.
    Direct(MessageId),
    /// An entry of a group's log.
    Group {
        /// The group.
        group_id: GroupId,
        /// Its position in the log.
        seq: u64,
    },
}

fn count(d: &DeviceEvidence, key_type: KeyType, status: KeyStatus) -> u64 {
    d.keys
        .iter()
        .filter(|(t, s, _)| *t == key_type && *s == status)
        .map(|(_, _, n)| n)
        .sum()
}

/// Walks the checks for a user.
pub fn diagnose_user(u: &UserEvidence, base_url: &str) -> Diagnosis {
    let subject = format!("user {}", u.user_id);
    let mut steps = Vec::new();
    if !u.exists {
        steps.push(step("Check user", "no such user", Finding::Problem));
        return Diagnosis {
            subject,
            steps,
            cause: cause(CauseCode::Unknown, "no such user"),
            recovery: vec![],
        };
    }
    let mut no_prekeys = Vec::new();
    let mut corrupted = Vec::new();
    for d in &u.devices {
        let otk = count(d, KeyType::OneTime, KeyStatus::Active);
        let fallback = count(d, KeyType::Fallback, KeyStatus::Active);
        let identity = count(d, KeyType::Curve25519, KeyStatus::Active)
            + count(d, KeyType::Ed25519, KeyStatus::Active);
        let summary: Vec<String> = d
            .keys
            .iter()
            .map(|(t, s, n)| format!("{t}/{s}: {n}"))
            .collect();
        steps.push(step(
            &format!("Check user_keys table → {} ({})", d.device_id, d.status),
            summary.join(", "),
            if d.status != "active" {
                Finding::Info
            } else if identity < 2 {
                Finding::Problem
            } else {
                Finding::Ok
            },
        ));
        if d.status == "active" && otk == 0 && fallback == 0 {
            no_prekeys.push(d.device_id.clone());
        }
        steps.push(step(
            &format!("Check prekeys → {}", d.device_id),
            format!(
                "{otk} one-time key(s) on offer, {} fallback key{}",
                if fallback > 0 { "a" } else { "no" },
                d.fallback_rotated
                    .as_ref()
                    .map(|t| format!(" (last rotated {t})"))
                    .unwrap_or_default()
            ),
            if d.status == "active" && otk == 0 && fallback == 0 {
                Finding::Problem
            } else {
                Finding::Ok
            },
        ));
        match &d.key_check {
            Some((at, mismatched, revoked)) => {
                steps.push(step(
                    &format!("Check key material → {}", d.device_id),
                    format!("latest check {at}: {mismatched} stored key(s) differ from what the device published, {revoked} revoked"),
                    if *mismatched > *revoked { Finding::Problem } else if *mismatched > 0 { Finding::Info } else { Finding::Ok },
                ));
                if *mismatched > 0 {
                    corrupted.push(d.device_id.clone());
                }
            }
            None => steps.push(step(
                &format!("Check key material → {}", d.device_id),
                "no key check reported yet",
                Finding::Info,
            )),
        }
    }
    let mut codes: Vec<(FailureCode, usize)> = Vec::new();
    for f in &u.failures {
        match codes.iter_mut().find(|(c, _)| *c == f.code) {
            Some((_, n)) => *n += 1,
            None => codes.push((f.code, 1)),
        }
    }
    codes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    steps.push(step(
        "Check logs → decryption errors (last 24 h)",
        if u.failures.is_empty() {
            format!("none unrecovered; {} recovered", u.recovered)
        } else {
            let by: Vec<String> = codes.iter().map(|(c, n)| format!("{c} × {n}")).collect();
            format!(
                "{} unrecovered: {}; {} recovered",
                u.failures.len(),
                by.join(", "),
                u.recovered
            )
        },
        if u.failures.is_empty() {
            Finding::Ok
        } else {
            Finding::Problem
        },
    ));
    steps.push(step(
        "Check key backup",
        u.latest_backup
            .as_ref()
            .map(|d| format!("newest backup {d}"))
            .unwrap_or_else(|| "no backup".into()),
        if u.latest_backup.is_some() {
            Finding::Ok
        } else {
            Finding::Info
        },
    ));
    let one_to_one: Vec<&MessageId> = u
        .failures
        .iter()
        .filter_map(|f| match &f.message {
            FailedMessage::Direct(id) => Some(id),
            FailedMessage::Group { .. } => None,
        })
        .take(MAX_RESENDS)
        .collect();
    let resend_all = Recovery {
        summary: format!(
            "ask the senders to re-encrypt {} failed message(s) (Option 1)",
            one_to_one.len()
        ),
        commands: one_to_one
            .iter()
            .map(|id| resend_command(base_url, id))
            .collect(),
        actions: one_to_one
            .iter()
            .map(|id| RecoveryAction::RequestResend {
                message_id: (*id).clone(),
            })
            .collect(),
    };
    let restore = Recovery {
        summary: "restore the device's keys from backup (Option 2)".into(),
        commands: vec![restore_command(&u.user_id, u.latest_backup.as_deref())],
        actions: vec![],
    };
    let (found, recovery) = if !corrupted.is_empty() && !u.failures.is_empty() {
        (
            cause(
                CauseCode::KeyCorruptedInDatabase,
                format!(
                    "stored keys of {} differ from what the device published",
                    corrupted.join(", ")
                ),
            ),
            vec![resend_all],
        )
    } else if let Some((code, _)) = codes.first() {
        let found = match code {
            FailureCode::KeyRotated => cause(
                CauseCode::KeyRotated,
                "keys rotated before messages arrived",
            ),
            FailureCode::KeyNotFound => cause(
                CauseCode::KeyNotFound,
                "messages encrypted to keys the device does not hold",
            ),
            FailureCode::RatchetDesync => cause(
                CauseCode::RatchetDesync,
                "Double Ratchet state desynchronized; diagnose a message for its session",
            ),
            FailureCode::MissingSkippedKey => cause(
                CauseCode::MissingSkippedKeys,
                "skipped message keys not stored",
            ),
            FailureCode::SessionRetired => cause(
                CauseCode::SessionRetired,
                "messages in flight on reset sessions",
            ),
            FailureCode::EpochTooOld | FailureCode::EpochInFuture => cause(
                CauseCode::MemberStuckInOldEpoch,
                "group messages from another epoch; diagnose the group",
            ),
            other => cause(
                CauseCode::Escalate,
                format!("{other}: escalate to the crypto team"),
            ),
        };
        let mut plans = vec![resend_all];
        if u.latest_backup.is_some() {
            plans.push(restore);
        }
        (found, plans)
    } else if !no_prekeys.is_empty() {
        (
            cause(
                CauseCode::NoPrekeys,
                format!(
                    "{} offer no prekeys: new senders cannot reach them until the device syncs",
                    no_prekeys.join(", ")
                ),
            ),
            vec![Recovery {
                summary: "have the device sync (it tops its keys up)".into(),
                commands: vec!["atlas --profile <PROFILE> inbox".into()],
                actions: vec![],
            }],
        )
    } else {
        (
            cause(
                CauseCode::Healthy,
                "no unrecovered decryption failures, keys consistent",
            ),
            vec![],
        )
    };
    Diagnosis {
        subject,
        steps,
        cause: found,
        recovery: recovery
            .into_iter()
            .filter(|r| !r.commands.is_empty())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(mismatched: u64) -> DeviceEvidence {
        DeviceEvidence {
            device_id: "B".into(),
            status: "active".into(),
            keys: vec![
                (KeyType::Curve25519, KeyStatus::Active, 1),
                (KeyType::Ed25519, KeyStatus::Active, 1),
                (KeyType::OneTime, KeyStatus::Active, 25),
                (KeyType::Fallback, KeyStatus::Active, 1),
            ],
            fallback_rotated: None,
            key_check: Some(("t".into(), mismatched, 0)),
        }
    }

    #[test]
    fn failures_lead_to_resends_and_corruption_is_named() {
        let mut u = UserEvidence {
            user_id: "bob".into(),
            exists: true,
            devices: vec![device(0)],
            ..Default::default()
        };
        assert_eq!(diagnose_user(&u, "x").cause.code, CauseCode::Healthy);
        u.failures = vec![FailureEvidence {
            message: FailedMessage::Direct("m1".parse().unwrap()),
            device_id: "B".into(),
            code: FailureCode::KeyRotated,
        }];
        let d = diagnose_user(&u, "x");
        assert_eq!(d.cause.code, CauseCode::KeyRotated);
        assert_eq!(
            d.recovery[0].actions,
            [RecoveryAction::RequestResend {
                message_id: "m1".parse().unwrap()
            }]
        );
        u.devices = vec![device(3)];
        assert_eq!(
            diagnose_user(&u, "x").cause.code,
            CauseCode::KeyCorruptedInDatabase
        );
        u.failures.clear();
        assert_eq!(
            diagnose_user(&u, "x").cause.code,
            CauseCode::Healthy,
            "repaired and nothing failing"
        );
        assert_eq!(
            diagnose_user(&UserEvidence::default(), "x").cause.code,
            CauseCode::Unknown
        );
    }
}
