//! What an incident change tells people, and how a delivery is retried,
//! without I/O. Slack hears every change (the manual's messages); PagerDuty is
//! triggered for SEV-1/2 (at declaration, or on escalation) and resolved on
//! close, always with the incident id as `dedup_key` — the manual's script
//! sends none, so its pages could never be resolved or deduplicated.
use atlas_proto::incident::{Incident, IncidentEvent, IncidentStatus, Severity, TimelineEntry};
use serde_json::json;
use time::{Duration, OffsetDateTime};

/// Where a notification goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// A Slack incoming webhook (`{"text": …}`).
    Slack,
    /// PagerDuty's Events API v2.
    PagerDuty,
}

impl Destination {
    /// Every destination.
    pub const ALL: [Self; 2] = [Self::Slack, Self::PagerDuty];

    /// As stored and labelled.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::PagerDuty => "pagerduty",
        }
    }

    /// Parses a stored destination.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == text)
    }

    /// Least time between two deliveries (Slack allows about one message a second).
    pub fn pace(self) -> Duration {
        match self {
            Self::Slack => Duration::seconds(1),
            Self::PagerDuty => Duration::milliseconds(100),
        }
    }
}

/// A notification to deliver: the JSON body, without any secret (the
/// PagerDuty routing key is added when sending).
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// Where.
    pub destination: Destination,
    /// What, in a few words (shown in `incident show`).
    pub summary: String,
    /// The body.
    pub payload: serde_json::Value,
}

/// PagerDuty's severity for an incident's.
fn pagerduty_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Sev1 => "critical",
        Severity::Sev2 => "error",
        Severity::Sev3 => "warning",
        Severity::Sev4 => "info",
    }
}

/// The notices of a change that turned `before` (none: a declaration) into
/// `after` by `entries`; sets `after.paged` when it pages.
pub fn notices(
    before: Option<&Incident>,
    after: &mut Incident,
    entries: &[TimelineEntry],
    configured: &[Destination],
) -> Vec<Notice> {
    let mut out = Vec::new();
    let id = after.id.to_string();
    for entry in entries {
        let text = match &entry.event {
            IncidentEvent::Declared {
                severity,
                description,
                commander,
            } => Some(format!(
                "🚨 INCIDENT {id} ({severity})\n{description}\nCommander: {commander}"
            )),
            IncidentEvent::Update {
                status, message, ..
            } => Some(format!(
                "{} {id} — {} - {}\n{message}",
                status_icon(*status),
                status.heading(),
                entry.at
            )),
            IncidentEvent::Severity { from, to } => Some(format!("⚠️ {id} severity {from} → {to}")),
            IncidentEvent::Assigned { to, .. } => Some(format!("👤 {id} incident commander: {to}")),
            IncidentEvent::Closed { resolution } => Some(format!(
                "✅ Incident {id} has been resolved and closed.\n{resolution}"
            )),
            IncidentEvent::Indicator { text } => {
                Some(format!("🛡️ {id} indicator of compromise: {text}"))
            }
            IncidentEvent::Note { text } => Some(format!("📝 {id} note: {text}")),
            // Shown with the update that changed them; alerts came from Alertmanager.
            IncidentEvent::Component { .. } | IncidentEvent::Alert { .. } => None,
        };
        if let Some(text) = text {
            out.push(Notice {
                destination: Destination::Slack,
                summary: text.lines().next().unwrap_or_default().to_owned(),
                payload: json!({ "text": text }),
            });
        }
    }
    let was_paging = before.is_some_and(|b| b.severity.pages());
    if after.severity.pages() && !was_paging && after.status != IncidentStatus::Closed {
        after.paged = true;
        out.push(Notice {
            destination: Destination::PagerDuty,
            summary: format!("trigger ({})", after.severity),
            payload: json!({
                "event_action": "trigger",
                "dedup_key": id,
                "payload": {
                    "summary": format!("{id}: {}", after.description),
                    "severity": pagerduty_severity(after.severity),
                    "source": "atlas",
                    "timestamp": atlas_proto::timestamp::rfc3339(after.updated_at),
                    "custom_details": {
                        "incident": id,
                        "severity": after.severity.as_str(),
                        "status": after.status.as_str(),
                        "commander": after.commander,
                    },
                },
            }),
        });
    }
    let closing = after.status == IncidentStatus::Closed
        && before.is_some_and(|b| b.status != IncidentStatus::Closed);
    if closing && after.paged {
        out.push(Notice {
            destination: Destination::PagerDuty,
            summary: "resolve".into(),
            payload: json!({ "event_action": "resolve", "dedup_key": id }),
        });
    }
    out.retain(|n| configured.contains(&n.destination));
    out
}

fn status_icon(status: IncidentStatus) -> &'static str {
    match status {
        IncidentStatus::Investigating => "🔍",
        IncidentStatus::Identified => "🎯",
        IncidentStatus::Monitoring => "👀",
        IncidentStatus::Resolved | IncidentStatus::Closed => "✅",
    }
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer, with its `Retry-After` in seconds if any.
    Status(u16, Option<u64>),
    /// No answer: refused, reset, timed out.
    Network(String),
}

impl Outcome {
    /// The attempt as recorded.
    pub fn describe(&self) -> String {
        match self {
            Self::Status(status, Some(after)) => format!("HTTP {status} (Retry-After {after} s)"),
            Self::Status(status, None) => format!("HTTP {status}"),
            Self::Network(e) => format!("network: {e}"),
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Delivered.
    Delivered,
    /// Try again at this time.
    RetryAt(OffsetDateTime),
    /// Stop: the destination refused it for good, or it is too old.
    GiveUp,
}

/// The first retry waits this long; each next one twice as long, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::seconds(1);
/// The longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::minutes(5);
/// A notification not delivered this long after it was made is given up.
pub const GIVE_UP_AFTER: Duration = Duration::hours(24);
/// The longest `Retry-After` honoured (a receiver cannot park the queue for days).
const MAX_RETRY_AFTER: u64 = 3600;

/// After attempt number `attempt` (1, 2 …) of a notification made at
/// `created_at` ended with `outcome` at `now`: delivered, retried (network
/// errors, 5xx and 429, honouring `Retry-After`), or given up (other 4xx).
pub fn next(
    outcome: &Outcome,
    attempt: u32,
    created_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Next {
    let wait = match outcome {
        Outcome::Status(200..=299, _) => return Next::Delivered,
        Outcome::Status(429, Some(after)) => {
            Duration::seconds((*after).min(MAX_RETRY_AFTER) as i64)
        }
        Outcome::Status(429 | 500..=599, _) | Outcome::Network(_) => backoff(attempt),
        Outcome::Status(_, _) => return Next::GiveUp,
    };
    if now + wait - created_at > GIVE_UP_AFTER {
        return Next::GiveUp;
    }
    Next::RetryAt(now + wait)
}

/// 1 s, 2 s, 4 s … up to [`MAX_BACKOFF`].
fn backoff(attempt: u32) -> Duration {
    let doubled = FIRST_BACKOFF * 2_i32.saturating_pow(attempt.saturating_sub(1).min(16));
    doubled.min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{Change, apply, declare};
    use atlas_proto::IncidentId;
    use atlas_proto::incident::{DeclareRequest, Description, Message, UpdateRequest};
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-30 06:00:00 UTC);
    const BOTH: [Destination; 2] = Destination::ALL;

    fn declared(severity: Severity) -> (Incident, Vec<Notice>) {
        let request = DeclareRequest {
            severity,
            description: Description::new("Messages not delivering").unwrap(),
            commander: None,
            components: vec![],
            os_user: None,
        };
        let (mut i, entries) = declare(IncidentId::at(T0, 1), &request, "alice".into(), "ops", T0);
        let n = notices(None, &mut i, &entries, &BOTH);
        (i, n)
    }

    fn change(i: &mut Incident, c: Change<'_>) -> Vec<Notice> {
        let before = i.clone();
        let entries = apply(i, c, "ops", T0).unwrap();
        notices(Some(&before), i, &entries, &BOTH)
    }

    fn update(status: IncidentStatus, severity: Option<Severity>) -> UpdateRequest {
        UpdateRequest {
            status,
            message: Message::new("news").unwrap(),
            severity,
            components: Default::default(),
            reopen: false,
        }
    }

    fn at(notices: &[Notice], d: Destination) -> Vec<&Notice> {
        notices.iter().filter(|n| n.destination == d).collect()
    }

    #[test]
    fn a_sev2_pages_once_with_its_id_as_dedup_key_and_closing_resolves_it() {
        let (mut i, n) = declared(Severity::Sev2);
        let slack = at(&n, Destination::Slack);
        assert_eq!(slack.len(), 1);
        assert!(
            slack[0].payload["text"]
                .as_str()
                .unwrap()
                .starts_with("🚨 INCIDENT INC-20261130060000 (SEV-2)")
        );
        let pd = at(&n, Destination::PagerDuty);
        assert_eq!(pd.len(), 1);
        let trigger = &pd[0].payload;
        assert_eq!(trigger["event_action"], "trigger");
        assert_eq!(trigger["dedup_key"], "INC-20261130060000");
        assert_eq!(
            trigger["payload"]["summary"],
            "INC-20261130060000: Messages not delivering"
        );
        assert_eq!(trigger["payload"]["severity"], "error");
        assert_eq!(trigger["payload"]["source"], "atlas");
        assert!(
            trigger.get("routing_key").is_none(),
            "no secret in the outbox"
        );
        assert!(i.paged);
        // Updates reach Slack only; escalating within paging severities pages no more.
        let n = change(
            &mut i,
            Change::Update(&update(IncidentStatus::Identified, Some(Severity::Sev1))),
        );
        assert_eq!(at(&n, Destination::Slack).len(), 2, "severity, then update");
        assert!(at(&n, Destination::PagerDuty).is_empty());
        change(
            &mut i,
            Change::Update(&update(IncidentStatus::Resolved, None)),
        );
        let n = change(&mut i, Change::Close(None));
        let pd = at(&n, Destination::PagerDuty);
        assert_eq!(pd.len(), 1);
        assert_eq!(
            pd[0].payload,
            json!({"event_action": "resolve", "dedup_key": "INC-20261130060000"})
        );
        assert!(
            at(&n, Destination::Slack)[0].payload["text"]
                .as_str()
                .unwrap()
                .contains("has been resolved and closed")
        );
    }

    #[test]
    fn a_sev3_pages_only_when_escalated_and_notes_reach_slack_only() {
        let (mut i, n) = declared(Severity::Sev3);
        assert!(at(&n, Destination::PagerDuty).is_empty() && !i.paged);
        let note = Message::new("n").unwrap();
        let n = change(&mut i, Change::Note(&note));
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].payload["text"], "📝 INC-20261130060000 note: n");
        let n = change(
            &mut i,
            Change::Update(&update(IncidentStatus::Identified, Some(Severity::Sev2))),
        );
        assert_eq!(
            at(&n, Destination::PagerDuty)[0].payload["event_action"],
            "trigger"
        );
        // Only what is configured is queued.
        let before = i.clone();
        let entries = apply(&mut i, Change::Note(&note), "ops", T0).unwrap();
        assert!(notices(Some(&before), &mut i, &entries, &[]).is_empty());
    }

    #[test]
    fn retries_back_off_honour_retry_after_and_stop_on_client_errors() {
        let now = T0 + Duration::minutes(1);
        assert_eq!(
            next(&Outcome::Status(200, None), 1, T0, now),
            Next::Delivered
        );
        assert_eq!(
            next(&Outcome::Status(202, None), 1, T0, now),
            Next::Delivered
        );
        assert_eq!(
            next(&Outcome::Status(429, Some(7)), 1, T0, now),
            Next::RetryAt(now + Duration::seconds(7))
        );
        assert_eq!(
            next(&Outcome::Status(429, None), 3, T0, now),
            Next::RetryAt(now + Duration::seconds(4))
        );
        assert_eq!(
            next(&Outcome::Status(503, None), 1, T0, now),
            Next::RetryAt(now + Duration::seconds(1))
        );
        assert_eq!(
            next(&Outcome::Network("reset".into()), 30, T0, now),
            Next::RetryAt(now + MAX_BACKOFF)
        );
        for status in [400, 401, 403, 404, 413] {
            assert_eq!(
                next(&Outcome::Status(status, None), 1, T0, now),
                Next::GiveUp,
                "{status}"
            );
        }
        let late = T0 + GIVE_UP_AFTER;
        assert_eq!(next(&Outcome::Status(500, None), 9, T0, late), Next::GiveUp);
        assert_eq!(
            next(&Outcome::Status(429, Some(u64::MAX)), 1, T0, now),
            Next::RetryAt(now + Duration::hours(1)),
            "Retry-After is capped"
        );
    }
}
