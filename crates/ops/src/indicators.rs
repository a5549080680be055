//! Indicators of compromise (seed `004`, §5.2) as findings for incidents'
//! timelines: what changed in the counters since the last look, over the
//! thresholds, in words. Without I/O: the server takes the snapshots.
use std::collections::BTreeMap;

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Failed authentications by reason.
    pub auth_failures: BTreeMap<String, u64>,
    /// DPoP replays refused.
    pub replays: u64,
    /// Admin requests refused for their address.
    pub refused_addresses: u64,
    /// Admin reads by operator token.
    pub admin_reads: BTreeMap<String, u64>,
    /// Operator tokens ever created, and the newest one's id and label.
    pub tokens_created: u64,
    /// The newest token: id and label.
    pub newest_token: Option<(String, String)>,
}

/// Per minute: more failed authentications than this is "a high volume".
pub const FAILED_AUTH_PER_MINUTE: u64 = 30;
/// Per minute: more replays than this.
pub const REPLAYS_PER_MINUTE: u64 = 10;
/// Per minute: more admin reads by one token than this is "bulk data access".
pub const READS_PER_MINUTE: u64 = 120;

/// What went over a threshold between `before` and `now`, `secs` apart.
pub fn findings(before: &Snapshot, now: &Snapshot, secs: u64) -> Vec<String> {
    // Per-minute thresholds, for looks of 10 s at least: shorter ones would
    // turn a handful of ordinary requests into a finding.
    let scale = |per_minute: u64| (per_minute * secs.max(10)).div_ceil(60).max(1);
    let mut out = Vec::new();
    let mut by_reason = Vec::new();
    let mut failed = 0;
    for (reason, n) in &now.auth_failures {
        let d = n.saturating_sub(before.auth_failures.get(reason).copied().unwrap_or(0));
        if d > 0 {
            failed += d;
            by_reason.push(format!("{reason} × {d}"));
        }
    }
    if failed >= scale(FAILED_AUTH_PER_MINUTE) {
        out.push(format!(
            "High volume of failed auth attempts: {failed} in {secs} s ({})",
            by_reason.join(", ")
        ));
    }
    let replays = now.replays.saturating_sub(before.replays);
    if replays >= scale(REPLAYS_PER_MINUTE) {
        out.push(format!("DPoP proofs replayed: {replays} in {secs} s"));
    }
    let refused = now
        .refused_addresses
        .saturating_sub(before.refused_addresses);
    if refused > 0 {
        out.push(format!(
            "Key access from unexpected sources: {refused} admin requests refused from addresses outside --admin-allow"
        ));
    }
    for (token, n) in &now.admin_reads {
        let d = n.saturating_sub(before.admin_reads.get(token).copied().unwrap_or(0));
        if d >= scale(READS_PER_MINUTE) {
            out.push(format!(
                "Bulk data access: operator token {token} made {d} admin reads in {secs} s"
            ));
        }
    }
    let created = now.tokens_created.saturating_sub(before.tokens_created);
    if created > 0 {
        let newest = now
            .newest_token
            .as_ref()
            .map(|(id, label)| format!(" (newest: {id}, label {label:?})"))
            .unwrap_or_default();
        out.push(format!(
            "Admin account creation: {created} operator token(s) created{newest}"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_went_over_a_threshold_is_reported() {
        let before = Snapshot {
            auth_failures: [("invalid_token".to_owned(), 5)].into(),
            tokens_created: 2,
            ..Snapshot::default()
        };
        let quiet = Snapshot {
            auth_failures: [("invalid_token".to_owned(), 9)].into(),
            ..before.clone()
        };
        assert!(findings(&before, &quiet, 60).is_empty());
        let busy = Snapshot {
            auth_failures: [
                ("invalid_token".to_owned(), 40),
                ("invalid_dpop_proof".to_owned(), 3),
            ]
            .into(),
            replays: 12,
            refused_addresses: 1,
            admin_reads: [("ab12".to_owned(), 500), ("cd34".to_owned(), 3)].into(),
            tokens_created: 3,
            newest_token: Some(("ef56".into(), "laptop".into())),
        };
        let found = findings(&before, &busy, 60);
        assert_eq!(found.len(), 5, "{found:?}");
        assert!(found[0].contains("38 in 60 s") && found[0].contains("invalid_token × 35"));
        assert!(found[1].contains("12 in 60 s"));
        assert!(found[2].contains("--admin-allow"));
        assert!(found[3].contains("ab12") && !found.iter().any(|f| f.contains("cd34")));
        assert!(found[4].contains("1 operator token(s) created (newest: ef56"));
        // A shorter look scales the thresholds down.
        let few = Snapshot {
            auth_failures: [("invalid_token".to_owned(), 10)].into(),
            ..before.clone()
        };
        assert_eq!(findings(&before, &few, 10).len(), 1);
    }
}
