//! The data-integrity lines (the restored server against the backup's signed
//! manifest) and the security lines (audit log, acts during the outage, key
//! rotation, configuration).
use super::{Checklist, DATA, SECURITY};
use atlas_client::operator::OperatorClient;
use atlas_dr::manifest::Manifest;
use atlas_dr::verify::Outcome;
use atlas_proto::audit::{AuditEntry, AuditOutcome};
use atlas_proto::recovery::RecoveryFacts;
use atlas_proto::timestamp::Timestamp;
use reqwest::Method;

/// Refused logins since the backup past which they count as a burst (the
/// server logs 60 a minute one by one; an attack is well past that).
const AUTH_FAILURE_BURST: usize = 60;
/// Acts the recovery itself makes: on the host, and this check's own (reading
/// facts, reserving and erasing probes, perhaps in an earlier run).
const RECOVERY_ACTS: [&str; 6] = [
    "dr.backup",
    "dr.restore",
    "operator_token.create",
    "POST /admin/recovery/facts",
    "POST /admin/recovery/probes",
    "DELETE /admin/recovery/probes/{user_id}",
];

/// The audit entries since the backup (read before the probes act), or why not.
pub(super) async fn audit_since(
    admin: &OperatorClient,
    since: Option<&Timestamp>,
) -> Result<Vec<AuditEntry>, String> {
    let Some(since) = since else {
        return Err("no backup given (--backup, --from): no outage window".into());
    };
    let path = format!(
        "/admin/audit?limit=1000&since={}",
        crate::admin::percent_encode(&since.to_string())
    );
    admin
        .call(Method::GET, &path)
        .await
        .map_err(|e| format!("reading the audit log (scope audit): {e}"))
}

fn count(facts: &RecoveryFacts, table: &str) -> i64 {
    facts.row_counts.get(table).copied().unwrap_or(0)
}

/// Restored rows of `tables` against the manifest: equal, or more (new since).
fn counts_line(
    list: &mut Checklist,
    name: &str,
    manifest: &Manifest,
    facts: &RecoveryFacts,
    tables: &[&str],
) {
    let mut short = Vec::new();
    let mut shown = Vec::new();
    for table in tables {
        let (was, now) = (
            manifest.row_counts.get(*table).copied().unwrap_or(0),
            count(facts, table),
        );
        shown.push(format!("{table} {now}/{was}"));
        if now < was {
            short.push(*table);
        }
    }
    let detail = format!("restored/backed up: {}", shown.join(", "));
    if short.is_empty() {
        list.add(DATA, name, Outcome::Pass, detail);
    } else {
        list.add(
            DATA,
            name,
            Outcome::Fail,
            format!("{detail}; fewer rows in {}", short.join(", ")),
        );
    }
}

/// Adds the data-integrity lines.
pub(super) fn integrity(
    list: &mut Checklist,
    manifest: Option<&Manifest>,
    facts: &RecoveryFacts,
    jwks: Option<&serde_json::Value>,
) {
    let Some(manifest) = manifest else {
        for name in [
            "message history intact",
            "user keys restored",
            "conversations accessible",
            "proofs verifiable",
        ] {
            list.add(
                DATA,
                name,
                Outcome::Skip,
                "no backup manifest to compare with (--backup NAME --from LOCATION)",
            );
        }
        return;
    };
    let sample = manifest.message_sample.len();
    let missing = &facts.missing_messages;
    let (was, now) = (
        manifest.row_counts.get("messages").copied().unwrap_or(0),
        count(facts, "messages"),
    );
    list.check(
        DATA,
        "message history intact",
        missing.is_empty() && now >= was,
        format!(
            "messages {now} (backup {was}); {} of {sample} sampled message ids present{}",
            sample - missing.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!(", missing: {}", missing.join(", "))
            }
        ),
    );
    counts_line(
        list,
        "user keys restored",
        manifest,
        facts,
        &["users", "devices", "user_keys", "server_keys"],
    );
    counts_line(
        list,
        "conversations accessible",
        manifest,
        facts,
        &[
            "mls_groups",
            "mls_group_members",
            "mls_epochs",
            "mls_messages",
        ],
    );
    proofs(list, manifest, facts, jwks);
}

/// Receipts of sampled messages verify as of the backup; the audit log holds
/// the manifest's checkpoint.
fn proofs(
    list: &mut Checklist,
    manifest: &Manifest,
    facts: &RecoveryFacts,
    jwks: Option<&serde_json::Value>,
) {
    let at = atlas_proto::timestamp::parse_rfc3339(&manifest.created_at)
        .map_or(0, time::OffsetDateTime::unix_timestamp);
    let mut problems = Vec::new();
    if let Some(jwks) = jwks {
        for r in &facts.receipts {
            let report = atlas_crypto::receipt_inspect::verify_receipt(&r.jws, jwks, at);
            if let Some(why) = report.failure() {
                problems.push(format!("receipt of {}: {why}", r.message_id));
            }
        }
    } else {
        problems.push("the server's JWKS could not be read".into());
    }
    let audit = match (&manifest.audit, facts.audit.checkpoint_consistent) {
        (None, _) => "the backup recorded no audit checkpoint".to_owned(),
        (Some(a), Some(true)) => format!(
            "the audit log holds the backup's checkpoint ({} entries)",
            a.size
        ),
        (Some(a), _) => {
            problems.push(format!(
                "the audit log does not hold the backup's checkpoint ({} entries)",
                a.size
            ));
            String::new()
        }
    };
    let detail = format!(
        "{} receipt(s) of sampled messages verify as of {}; {audit}",
        facts.receipts.len(),
        manifest.created_at
    );
    if problems.is_empty() {
        list.add(DATA, "proofs verifiable", Outcome::Pass, detail);
    } else {
        list.add(
            DATA,
            "proofs verifiable",
            Outcome::Fail,
            problems.join("; "),
        );
    }
}

/// Adds the security lines.
pub(super) fn security(
    list: &mut Checklist,
    facts: &RecoveryFacts,
    since: Option<&Timestamp>,
    entries: Result<Vec<AuditEntry>, String>,
) {
    list.check(
        SECURITY,
        "audit log intact",
        facts.audit.intact,
        if facts.audit.intact {
            format!(
                "{} entries; every seal and checkpoint verifies",
                facts.audit.entries
            )
        } else {
            facts.audit.problems.join("; ")
        },
    );
    match entries {
        Ok(entries) => outage(list, since, &entries),
        Err(why) => list.add(
            SECURITY,
            "no unauthorised access during the outage",
            Outcome::Skip,
            why,
        ),
    }
    let rekey = facts.devices_awaiting_rekey;
    list.check(
        SECURITY,
        "key rotation completed",
        rekey == 0,
        format!(
            "{rekey} device(s) still to re-key after an identity revocation; open incidents: {}",
            if facts.open_incidents.is_empty() {
                "none".to_owned()
            } else {
                facts.open_incidents.join("; ")
            }
        ),
    );
    let bad: Vec<String> = facts
        .config
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    let all: Vec<String> = facts
        .config
        .iter()
        .map(|c| format!("{} {}", c.name, c.detail))
        .collect();
    list.check(
        SECURITY,
        "configuration self-check",
        bad.is_empty(),
        if bad.is_empty() {
            all.join("; ")
        } else {
            bad.join("; ")
        },
    );
}

/// Admin acts and refused logins since the backup: only the recovery's own.
fn outage(list: &mut Checklist, since: Option<&Timestamp>, entries: &[AuditEntry]) {
    let acts: Vec<String> = entries
        .iter()
        .filter(|e| {
            let admin = e.entry.action.contains(" /admin/") || !e.entry.action.contains(' ');
            let write = !e.entry.action.starts_with("GET ");
            admin
                && write
                && e.entry.actor != "server"
                && !RECOVERY_ACTS.contains(&e.entry.action.as_str())
        })
        .map(|e| {
            format!(
                "#{} {} {} by {}",
                e.seq, e.entry.action, e.entry.target, e.entry.actor
            )
        })
        .collect();
    let refused = entries
        .iter()
        .filter(|e| e.entry.outcome == AuditOutcome::Refused && e.entry.actor == "anonymous")
        .count();
    let since = since.map(ToString::to_string).unwrap_or_default();
    let mut problems = Vec::new();
    if !acts.is_empty() {
        problems.push(format!("admin acts since the backup: {}", acts.join(", ")));
    }
    if refused > AUTH_FAILURE_BURST {
        problems.push(format!("{refused} refused logins since the backup"));
    }
    if problems.is_empty() {
        list.add(
            SECURITY,
            "no unauthorised access during the outage",
            Outcome::Pass,
            format!(
                "since {since}: {} audit entries, no admin act but the recovery's own, {refused} refused login(s)",
                entries.len()
            ),
        );
    } else {
        list.add(
            SECURITY,
            "no unauthorised access during the outage",
            Outcome::Fail,
            problems.join("; "),
        );
    }
}
