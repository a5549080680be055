//! `atlas diagnose message`: the Systematic Diagnosis Flow for one message,
//! walked for each recipient device that could not read it.
use super::{cause, resend_command, reset_command, restore_command, step};
use atlas_proto::diagnose::{Cause, CauseCode, Diagnosis, Finding, Recovery, RecoveryAction, Step};
use atlas_proto::e2ee::FailureCode;
use atlas_proto::keys::{KeyStatus, KeyType};
use atlas_proto::{MessageId, SessionId};

/// Everything the server knows about one message.
#[derive(Debug, Clone)]
pub struct MessageEvidence {
    /// The message.
    pub message_id: MessageId,
    /// One per recipient device.
    pub copies: Vec<CopyEvidence>,
    /// Newest backup date of the recipient user, if any.
    pub latest_backup: Option<String>,
}

/// One recipient device's copy and what is known about it.
#[derive(Debug, Clone, Default)]
pub struct CopyEvidence {
    /// `USER_ID/DEVICE_ID`.
    pub recipient: String,
    /// `USER_ID/DEVICE_ID`.
    pub sender: String,
    /// Recipient user.
    pub recipient_user: String,
    /// Algorithm.
    pub algorithm: String,
    /// 0 pre-key, 1 normal.
    pub msg_type: u8,
    /// Olm session named by the sender (base64url).
    pub session_id: Option<SessionId>,
    /// The original, for a resend.
    pub resend_of: Option<MessageId>,
    /// RFC 3339 acceptance.
    pub created_at: String,
    /// Acknowledged by the device.
    pub delivered: bool,
    /// The device is still active.
    pub device_active: bool,
    /// The device's report.
    pub report: Option<ReportEvidence>,
    /// For a pre-key message: the `user_keys` row of the key it was encrypted to (None: no such row).
    pub key_used: Option<KeyEvidence>,
    /// Whether the message was a pre-key message whose key the server looked up.
    pub key_looked_up: bool,
    /// Whether the device's latest consistency check found the key used
    /// stored with another value than it published (None: no check yet).
    pub key_used_differs: Option<bool>,
    /// The session was reset.
    pub session_reset: bool,
    /// Resend requests for this device: `(status, detail)`, newest first.
    pub resends: Vec<(String, Option<String>)>,
}

/// A device's decryption report.
#[derive(Debug, Clone, Default)]
pub struct ReportEvidence {
    /// `success`, `failure` or `recovered`.
    pub status: String,
    /// Latest failure code.
    pub code: Option<FailureCode>,
    /// First failure code.
    pub first_code: Option<FailureCode>,
}

/// A `user_keys` row.
#[derive(Debug, Clone)]
pub struct KeyEvidence {
    /// Key id.
    pub key_id: String,
    /// Key type.
    pub key_type: KeyType,
    /// Status.
    pub status: KeyStatus,
    /// Last rotation.
    pub last_rotated: Option<String>,
}

/// What one failing copy leads to: steps, cause, and a recovery plan.
fn walk(m: &MessageEvidence, c: &CopyEvidence, base: &str) -> (Vec<Step>, Cause, Recovery) {
    let who = &c.recipient;
    let mut steps = Vec::new();
    let code = c.report.as_ref().and_then(|r| r.code);
    steps.push(step(
        "Check logs → decryption error",
        format!(
            "{who} reported {}",
            code.map_or("no failure", FailureCode::as_str)
        ),
        Finding::Problem,
    ));
    let resend = Recovery {
        summary: format!("ask {} to re-encrypt it for {who} (Option 1)", c.sender),
        commands: vec![resend_command(base, &m.message_id)],
        actions: vec![RecoveryAction::RequestResend {
            message_id: m.message_id.clone(),
        }],
    };
    if !c.device_active {
        steps.push(step(
            "Check key status → active?",
            format!("{who} is no longer an active device"),
            Finding::Problem,
        ));
        let plan = Recovery {
            summary: "nothing to repair on a removed device; the user reads it on an active one"
                .into(),
            commands: vec![],
            actions: vec![],
        };
        return (
            steps,
            cause(
                CauseCode::DeviceInactive,
                format!("{who} is no longer active"),
            ),
            plan,
        );
    }
    if c.session_reset || code == Some(FailureCode::SessionRetired) {
        steps.push(step(
            "Check Double Ratchet state → synchronized?",
            "the session was reset after the message was sent on it",
            Finding::Problem,
        ));
        return (
            steps,
            cause(
                CauseCode::SessionRetired,
                "sent on a session that was reset: in flight when the session was retired",
            ),
            resend,
        );
    }
    if c.key_looked_up
        || code == Some(FailureCode::KeyNotFound)
        || code == Some(FailureCode::KeyRotated)
    {
        let evidence = match &c.key_used {
            Some(k) => format!(
                "the pre-key message used {} key {} — status {}{}",
                k.key_type,
                k.key_id,
                k.status,
                k.last_rotated
                    .as_ref()
                    .map(|t| format!(", last rotated {t}"))
                    .unwrap_or_default()
            ),
            None if c.key_looked_up => {
                "the key the pre-key message used is not in user_keys".into()
            }
            None => "an ordinary message with no session on the device".into(),
        };
        let exists = c.key_used.is_some() || !c.key_looked_up;
        steps.push(step(
            "Check user_keys table → key exists?",
            evidence,
            Finding::ok_if(exists),
        ));
        if !exists {
            let plan = Recovery {
                summary:
                    "re-exchange keys: the sender starts a new session on a key the device holds"
                        .into(),
                ..resend
            };
            return (
                steps,
                cause(
                    CauseCode::KeyNotFound,
                    "the sender used a key that was never published for this device",
                ),
                plan,
            );
        }
        if let Some(k) = &c.key_used {
            steps.push(step(
                "Check key status → active?",
                format!("{} ({})", k.status, k.key_id),
                if matches!(k.status, KeyStatus::Rotated | KeyStatus::Revoked) {
                    Finding::Problem
                } else {
                    Finding::Ok
                },
            ));
            if k.status == KeyStatus::Rotated {
                return (
                    steps,
                    cause(
                        CauseCode::KeyRotated,
                        "the recipient's key was rotated before the message was received",
                    ),
                    resend,
                );
            }
            let corrupted = k.status == KeyStatus::Revoked || c.key_used_differs == Some(true);
            steps.push(step(
                "Check key material → matches what the device published?",
                match c.key_used_differs {
                    Some(false) => "the device's latest key check found this key as it published it",
                    Some(true) => "the device's latest key check found this key stored with a value it never published",
                    None if k.status == KeyStatus::Revoked => "the key was revoked by a key check",
                    None => "the device has not run a key check yet",
                },
                Finding::ok_if(!corrupted),
            ));
            if corrupted {
                return (
                    steps,
                    cause(CauseCode::KeyCorruptedInDatabase, "key material corrupted in the database: the stored public key is not the device's"),
                    Recovery {
                        summary: "the device's key check revoked the bad keys; the sender re-encrypts on a good one".into(),
                        ..resend
                    },
                );
            }
            // Published, handed out, and not held by the device: the device lost it.
            let plan = Recovery {
                summary: format!(
                    "restore {}'s keys from backup, then ask for a resend (Option 2)",
                    c.recipient_user
                ),
                commands: vec![
                    restore_command(&c.recipient_user, m.latest_backup.as_deref()),
                    resend_command(base, &m.message_id),
                ],
                actions: resend.actions.clone(),
            };
            return (
                steps,
                cause(
                    CauseCode::KeyLostOnDevice,
                    "the device no longer holds the private key it published",
                ),
                plan,
            );
        }
        let plan = Recovery {
            summary: "re-exchange keys: the sender starts a new session".into(),
            ..resend
        };
        return (
            steps,
            cause(
                CauseCode::KeyNotFound,
                "the device has no session with the sender",
            ),
            plan,
        );
    }
    let synchronized = code != Some(FailureCode::RatchetDesync);
    steps.push(step(
        "Check Double Ratchet state → synchronized?",
        format!(
            "session {}: {}",
            c.session_id.as_ref().map_or("unknown", SessionId::as_str),
            if synchronized {
                "the device decrypts on it"
            } else {
                "the device's ratchet does not match the sender's"
            }
        ),
        Finding::ok_if(synchronized),
    ));
    if !synchronized {
        let mut plan = Recovery {
            summary: "reset the session (Option 3), then have the message resent on a new one"
                .into(),
            commands: vec![],
            actions: vec![],
        };
        if let Some(sid) = &c.session_id {
            plan.commands.push(reset_command(base, sid));
            plan.actions.push(RecoveryAction::ResetSession {
                session_id: sid.clone(),
            });
        }
        plan.commands.extend(resend.commands);
        plan.actions.extend(resend.actions);
        return (
            steps,
            cause(
                CauseCode::RatchetDesync,
                "Double Ratchet state desynchronized",
            ),
            plan,
        );
    }
    let missing = code == Some(FailureCode::MissingSkippedKey);
    steps.push(step(
        "Check message chain → missing skipped keys?",
        if missing {
            "the message key was skipped and is no longer stored"
        } else {
            "no"
        },
        Finding::ok_if(!missing),
    ));
    if missing {
        return (
            steps,
            cause(
                CauseCode::MissingSkippedKeys,
                "skipped message keys not stored (out-of-order delivery beyond what Olm keeps)",
            ),
            Recovery {
                summary: "request the missing message again".into(),
                ..resend
            },
        );
    }
    if code == Some(FailureCode::DuplicateMessage) {
        return (
            steps,
            cause(
                CauseCode::DuplicateMessage,
                "the device decrypted this message before: a repeated delivery",
            ),
            Recovery {
                summary: "nothing to repair".into(),
                commands: vec![],
                actions: vec![],
            },
        );
    }
    (
        steps,
        cause(
            CauseCode::Escalate,
            format!(
                "{}: not a cause this tree knows — escalate to the crypto team (security@atlas.dev)",
                code.map_or("no code", FailureCode::as_str)
            ),
        ),
        resend,
    )
}

/// Walks the tree for a message.
pub fn diagnose_message(m: &MessageEvidence, base_url: &str) -> Diagnosis {
    let subject = format!("message {}", m.message_id);
    let mut steps = vec![step(
        "Check message metadata",
        match m.copies.first() {
            Some(c) => format!(
                "from {} to {} device(s) of {}, {}, accepted {}{}",
                c.sender,
                m.copies.len(),
                c.recipient_user,
                c.algorithm,
                c.created_at,
                c.resend_of
                    .as_ref()
                    .map(|o| format!(", a resend of {o}"))
                    .unwrap_or_default()
            ),
            None => "no such message".into(),
        },
        if m.copies.is_empty() {
            Finding::Problem
        } else {
            Finding::Info
        },
    )];
    if m.copies.is_empty() {
        return Diagnosis {
            subject,
            steps,
            cause: cause(CauseCode::Unknown, "no message with this id"),
            recovery: vec![],
        };
    }
    for c in &m.copies {
        let (evidence, finding) = match (&c.report, c.delivered) {
            (Some(r), _) if r.status == "success" => ("decrypted".to_owned(), Finding::Ok),
            (Some(r), _) if r.status == "recovered" => (
                format!(
                    "failed with {} at first, decrypted after recovery",
                    r.first_code.map_or("?", FailureCode::as_str)
                ),
                Finding::Ok,
            ),
            (Some(r), _) => (
                format!("failed: {}", r.code.map_or("?", FailureCode::as_str)),
                Finding::Problem,
            ),
            (None, false) => (
                "not delivered yet (device offline)".to_owned(),
                Finding::Info,
            ),
            (None, true) => (
                "delivered, no report from the device".to_owned(),
                Finding::Info,
            ),
        };
        steps.push(step(
            &format!("Decryption on {}", c.recipient),
            evidence,
            finding,
        ));
        for (status, detail) in &c.resends {
            steps.push(step(
                &format!("Resend for {}", c.recipient),
                format!(
                    "{status}{}",
                    detail
                        .as_ref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                ),
                if status == "unavailable" {
                    Finding::Problem
                } else {
                    Finding::Info
                },
            ));
        }
    }
    let failing = m
        .copies
        .iter()
        .find(|c| c.report.as_ref().is_some_and(|r| r.status == "failure"));
    let Some(c) = failing else {
        let recovered = m
            .copies
            .iter()
            .any(|c| c.report.as_ref().is_some_and(|r| r.status == "recovered"));
        let undelivered = m.copies.iter().any(|c| !c.delivered);
        let found = if recovered {
            cause(
                CauseCode::Recovered,
                "every device that reported failed first and decrypted after recovery",
            )
        } else if undelivered {
            cause(
                CauseCode::NotDelivered,
                "waiting for a device to come online; nothing failed",
            )
        } else {
            cause(
                CauseCode::Healthy,
                "every device that reported decrypted it",
            )
        };
        return Diagnosis {
            subject,
            steps,
            cause: found,
            recovery: vec![],
        };
    };
    if c.resends.first().is_some_and(|(s, _)| s == "unavailable") {
        steps.push(step(
            "Request message resend → sender still has plaintext?",
            "no: the sending device's outbox no longer holds it",
            Finding::Problem,
        ));
        return Diagnosis {
            subject,
            steps,
            cause: cause(
                CauseCode::PlaintextUnavailable,
                "the sender no longer has the plaintext to resend",
            ),
            recovery: vec![Recovery {
                summary: format!(
                    "restore {}'s keys from a backup made before the failure (Option 2)",
                    c.recipient_user
                ),
                commands: vec![restore_command(
                    &c.recipient_user,
                    m.latest_backup.as_deref(),
                )],
                actions: vec![],
            }],
        };
    }
    let (more, found, plan) = walk(m, c, base_url);
    steps.extend(more);
    Diagnosis {
        subject,
        steps,
        cause: found,
        recovery: vec![plan],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(code: &str) -> MessageEvidence {
        MessageEvidence {
            message_id: "m1".parse().unwrap(),
            copies: vec![CopyEvidence {
                recipient: "bob/B".into(),
                sender: "alice/A".into(),
                recipient_user: "bob".into(),
                algorithm: "olm".into(),
                session_id: Some("s1".parse().unwrap()),
                delivered: true,
                device_active: true,
                report: Some(ReportEvidence {
                    status: "failure".into(),
                    code: Some(code.parse().unwrap()),
                    first_code: Some(code.parse().unwrap()),
                }),
                ..Default::default()
            }],
            latest_backup: Some("2026-11-20T10:00:00Z".into()),
        }
    }

    #[test]
    fn each_runbook_cause_has_its_recovery() {
        let d = diagnose_message(&failing("RatchetDesync"), "https://api");
        assert_eq!(d.cause.code, CauseCode::RatchetDesync);
        assert_eq!(
            d.recovery[0].actions,
            [
                RecoveryAction::ResetSession {
                    session_id: "s1".parse().unwrap()
                },
                RecoveryAction::RequestResend {
                    message_id: "m1".parse().unwrap()
                }
            ]
        );
        assert!(d.recovery[0].commands[0].contains("https://api/sessions/s1/reset"));
        assert_eq!(
            diagnose_message(&failing("MissingSkippedKey"), "x")
                .cause
                .code,
            CauseCode::MissingSkippedKeys
        );

        let mut rotated = failing("KeyRotated");
        rotated.copies[0].key_looked_up = true;
        rotated.copies[0].key_used = Some(KeyEvidence {
            key_id: "k".into(),
            key_type: KeyType::Fallback,
            status: KeyStatus::Rotated,
            last_rotated: None,
        });
        assert_eq!(
            diagnose_message(&rotated, "x").cause.code,
            CauseCode::KeyRotated
        );

        let mut corrupted = failing("KeyNotFound");
        corrupted.copies[0].key_looked_up = true;
        corrupted.copies[0].key_used = Some(KeyEvidence {
            key_id: "k".into(),
            key_type: KeyType::OneTime,
            status: KeyStatus::Consumed,
            last_rotated: None,
        });
        corrupted.copies[0].key_used_differs = Some(true);
        assert_eq!(
            diagnose_message(&corrupted, "x").cause.code,
            CauseCode::KeyCorruptedInDatabase
        );

        corrupted.copies[0].key_used_differs = Some(false);
        let lost = diagnose_message(&corrupted, "x");
        assert_eq!(lost.cause.code, CauseCode::KeyLostOnDevice);
        assert!(
            lost.recovery[0].commands[0]
                .contains("atlas keys restore --user-id bob --date 2026-11-20T10:00:00Z")
        );

        let mut gone = failing("MissingSkippedKey");
        gone.copies[0].resends = vec![("unavailable".into(), Some("not in outbox".into()))];
        assert_eq!(
            diagnose_message(&gone, "x").cause.code,
            CauseCode::PlaintextUnavailable
        );
        assert_eq!(
            diagnose_message(&failing("Forged"), "x").cause.code,
            CauseCode::Escalate
        );
    }

    #[test]
    fn healthy_recovered_and_unknown_messages() {
        let mut ok = failing("KeyNotFound");
        ok.copies[0].report = Some(ReportEvidence {
            status: "success".into(),
            ..Default::default()
        });
        assert_eq!(diagnose_message(&ok, "x").cause.code, CauseCode::Healthy);
        ok.copies[0].report = Some(ReportEvidence {
            status: "recovered".into(),
            first_code: Some(FailureCode::KeyNotFound),
            ..Default::default()
        });
        let d = diagnose_message(&ok, "x");
        assert_eq!(d.cause.code, CauseCode::Recovered);
        assert!(d.recovery.is_empty());
        assert_eq!(
            diagnose_message(
                &MessageEvidence {
                    message_id: "m2".parse().unwrap(),
                    copies: vec![],
                    latest_backup: None
                },
                "x"
            )
            .cause
            .code,
            CauseCode::Unknown
        );
    }
}
