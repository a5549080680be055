//! Incidents on the wire: severities and statuses of the emergency manual
//! (seed `004`, §1 and §6.1), the status page's component states (Atlassian
//! Statuspage's names), requests of `/admin/incidents` and the record with its
//! timeline. Validation happens at deserialisation, as for identifiers.
use crate::timestamp::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// How bad an incident is (§1 of the manual).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// Critical: complete service outage. Respond within 15 min.
    #[serde(rename = "SEV-1")]
    Sev1,
    /// High: major feature broken. 30 min.
    #[serde(rename = "SEV-2")]
    Sev2,
    /// Medium: degraded performance. 2 hours.
    #[serde(rename = "SEV-3")]
    Sev3,
    /// Low: minor issues. 24 hours.
    #[serde(rename = "SEV-4")]
    Sev4,
}

impl Severity {
    /// Every severity, worst first.
    pub const ALL: [Self; 4] = [Self::Sev1, Self::Sev2, Self::Sev3, Self::Sev4];

    /// `SEV-N`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sev1 => "SEV-1",
            Self::Sev2 => "SEV-2",
            Self::Sev3 => "SEV-3",
            Self::Sev4 => "SEV-4",
        }
    }

    /// The manual's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sev1 => "Critical",
            Self::Sev2 => "High",
            Self::Sev3 => "Medium",
            Self::Sev4 => "Low",
        }
    }

    /// The manual's description.
    pub fn description(self) -> &'static str {
        match self {
            Self::Sev1 => "Complete service outage",
            Self::Sev2 => "Major feature broken",
            Self::Sev3 => "Degraded performance",
            Self::Sev4 => "Minor issues",
        }
    }

    /// Minutes within which someone must respond.
    pub fn response_minutes(self) -> u32 {
        match self {
            Self::Sev1 => 15,
            Self::Sev2 => 30,
            Self::Sev3 => 120,
            Self::Sev4 => 24 * 60,
        }
    }

    /// Whether it pages the on-call (SEV-1 and SEV-2).
    pub fn pages(self) -> bool {
        matches!(self, Self::Sev1 | Self::Sev2)
    }

    /// Minutes between status updates the checklist asks for (SEV-1/2: 30).
    pub fn update_every_minutes(self) -> Option<u32> {
        self.pages().then_some(30)
    }

    /// Parses `SEV-N` (or `sev-n`, or `N`).
    pub fn parse(text: &str) -> Option<Self> {
        let n = text
            .strip_prefix("SEV-")
            .or_else(|| text.strip_prefix("sev-"))
            .unwrap_or(text);
        match n {
            "1" => Some(Self::Sev1),
            "2" => Some(Self::Sev2),
            "3" => Some(Self::Sev3),
            "4" => Some(Self::Sev4),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
            .ok_or_else(|| format!("{s:?} is not a severity: SEV-1, SEV-2, SEV-3 or SEV-4"))
    }
}

/// Where an incident stands: the status page's stages (§6.1), then closed (§7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    /// Looking into it (where a declared incident starts).
    Investigating,
    /// The cause is known; a fix is on its way.
    Identified,
    /// A fix is deployed; watching.
    Monitoring,
    /// Over for users.
    Resolved,
    /// Closed: no more updates; the post-mortem is due.
    Closed,
}

impl IncidentStatus {
    /// As on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Investigating => "investigating",
            Self::Identified => "identified",
            Self::Monitoring => "monitoring",
            Self::Resolved => "resolved",
            Self::Closed => "closed",
        }
    }

    /// Parses a stored status.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Investigating,
            Self::Identified,
            Self::Monitoring,
            Self::Resolved,
            Self::Closed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// The status page's heading for an update in this status (§6.1).
    pub fn heading(self) -> &'static str {
        match self {
            Self::Investigating => "Investigating",
            Self::Identified => "Identified",
            Self::Monitoring => "Monitoring",
            Self::Resolved => "Resolved",
            Self::Closed => "Closed",
        }
    }
}

impl fmt::Display for IncidentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A part of the service on the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// The HTTP API.
    Api,
    /// Delivery of messages to devices.
    Delivery,
    /// End-to-end encryption: sessions, keys, decryption.
    E2ee,
    /// MLS groups.
    Groups,
    /// The database.
    Storage,
}

impl Component {
    /// Every component, in page order.
    pub const ALL: [Self; 5] = [
        Self::Api,
        Self::Delivery,
        Self::E2ee,
        Self::Groups,
        Self::Storage,
    ];

    /// As typed and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Delivery => "delivery",
            Self::E2ee => "e2ee",
            Self::Groups => "groups",
            Self::Storage => "storage",
        }
    }

    /// The name on the status page.
    pub fn title(self) -> &'static str {
        match self {
            Self::Api => "API",
            Self::Delivery => "Message delivery",
            Self::E2ee => "End-to-end encryption",
            Self::Groups => "Groups",
            Self::Storage => "Storage",
        }
    }

    /// Parses a typed or stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A component's state, in Statuspage's words, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentStatus {
    /// Working.
    Operational,
    /// Slow or erratic.
    DegradedPerformance,
    /// Failing for some.
    PartialOutage,
    /// Failing for all.
    MajorOutage,
    /// Taken down on purpose.
    UnderMaintenance,
}

impl ComponentStatus {
    /// Every state.
    pub const ALL: [Self; 5] = [
        Self::Operational,
        Self::DegradedPerformance,
        Self::PartialOutage,
        Self::MajorOutage,
        Self::UnderMaintenance,
    ];

    /// As on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operational => "operational",
            Self::DegradedPerformance => "degraded_performance",
            Self::PartialOutage => "partial_outage",
            Self::MajorOutage => "major_outage",
            Self::UnderMaintenance => "under_maintenance",
        }
    }

    /// Parses a typed or stored state.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for ComponentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Characters an incident's description may have.
pub const MAX_DESCRIPTION: usize = 500;
/// Characters a status message, note or resolution may have.
pub const MAX_TEXT: usize = 4000;
/// Characters a commander's name may have.
pub const MAX_NAME: usize = 100;

/// Text an operator typed: trimmed, not empty, at most `max` characters, and
/// without control characters (but for line breaks and tabs where `lines`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Text(String);

/// Why typed text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Nothing but blanks.
    #[error("must not be empty")]
    Empty,
    /// Over the limit.
    #[error("must be at most {0} characters")]
    TooLong(usize),
    /// A control character (a terminal escape, a NUL …).
    #[error("must not contain control characters")]
    Control,
}

impl Text {
    /// Checks `text` for a field of at most `max` characters; `lines` allows line breaks and tabs.
    pub fn new(text: &str, max: usize, lines: bool) -> Result<Self, TextError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TextError::Empty);
        }
        if text.chars().count() > max {
            return Err(TextError::TooLong(max));
        }
        let allowed = |c: char| lines && matches!(c, '\n' | '\t');
        if text.chars().any(|c| c.is_control() && !allowed(c)) {
            return Err(TextError::Control);
        }
        Ok(Self(text.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Typed text of one kind of field, checked when read from JSON.
macro_rules! text_field {
    ($(#[$doc:meta])* $name:ident, $max:expr, $lines:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub Text);

        impl $name {
            /// Checks and wraps the text.
            pub fn new(text: &str) -> Result<Self, TextError> {
                Text::new(text, $max, $lines).map(Self)
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::new(&raw).map_err(|e| {
                    serde::de::Error::custom(format!("{}: {e}", stringify!($name)))
                })
            }
        }
    };
}

text_field!(
    /// An incident's one-line description.
    Description,
    MAX_DESCRIPTION,
    false
);
text_field!(
    /// A status message, a note or a resolution (line breaks allowed).
    Message,
    MAX_TEXT,
    true
);
text_field!(
    /// Who commands the incident (a name, one line).
    Commander,
    MAX_NAME,
    false
);

/// `POST /admin/incidents`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclareRequest {
    /// How bad.
    pub severity: Severity,
    /// What is wrong.
    pub description: Description,
    /// The incident commander (default: the operator token's label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commander: Option<Commander>,
    /// Components affected, shown degraded until an update says otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Component>,
    /// Who runs the command, for a commander when the token has no label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_user: Option<Commander>,
}

/// `POST /admin/incidents/{id}/updates`: a status-page update.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// The new (or same) status; not `closed` (close does that).
    pub status: IncidentStatus,
    /// What to tell users.
    pub message: Message,
    /// A new severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// Components whose state changes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<Component, ComponentStatus>,
    /// Says a resolved incident is open again.
    #[serde(default)]
    pub reopen: bool,
}

/// `POST /admin/incidents/{id}/assign`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    /// The new commander.
    pub commander: Commander,
}

/// `POST /admin/incidents/{id}/notes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    /// The note.
    pub text: Message,
}

/// `POST /admin/incidents/{id}/close`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseRequest {
    /// How it ended (default: "See post-mortem document", as the manual's script).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Message>,
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// 1, 2, 3 … per incident.
    pub seq: u64,
    /// When (never before the entry before it).
    pub at: Timestamp,
    /// Who: an operator token's label and id, or `atlas` for the server.
    pub actor: String,
    /// What happened.
    #[serde(flatten)]
    pub event: IncidentEvent,
}

/// What a timeline entry records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IncidentEvent {
    /// Declared.
    Declared {
        /// Severity at declaration.
        severity: Severity,
        /// The description.
        description: String,
        /// The commander.
        commander: String,
    },
    /// A status-page update.
    Update {
        /// Status before.
        from: IncidentStatus,
        /// Status after.
        status: IncidentStatus,
        /// What users were told.
        message: String,
    },
    /// Severity changed.
    Severity {
        /// Before.
        from: Severity,
        /// After.
        to: Severity,
    },
    /// A component's state changed.
    Component {
        /// Which.
        component: Component,
        /// Its new state.
        status: ComponentStatus,
    },
    /// Another commander.
    Assigned {
        /// Before.
        from: String,
        /// After.
        to: String,
    },
    /// A note.
    Note {
        /// The note.
        text: String,
    },
    /// Closed.
    Closed {
        /// How it ended.
        resolution: String,
    },
    /// An indicator of compromise the server noticed while the incident was open.
    Indicator {
        /// What, in words.
        text: String,
    },
    /// An alert fired (or resolved) in the incident's window, as Alertmanager reported it.
    Alert {
        /// `alertname`.
        alertname: String,
        /// `firing` or `resolved`.
        status: String,
        /// Its `severity` label.
        severity: String,
        /// Its `summary` annotation.
        summary: String,
    },
}

/// An alert Alertmanager reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// Alertmanager's fingerprint of its labels.
    pub fingerprint: String,
    /// When it started firing.
    pub starts_at: Timestamp,
    /// When it resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<Timestamp>,
    /// `firing` or `resolved`.
    pub status: String,
    /// `alertname`.
    pub alertname: String,
    /// Its `severity` label (empty without one).
    pub severity: String,
    /// Its `summary` annotation (empty without one).
    pub summary: String,
    /// All its labels.
    pub labels: BTreeMap<String, String>,
}

/// An incident as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentView {
    /// `INC-YYYYMMDDHHMMSS` (UTC), with `-N` when several began in one second.
    pub id: String,
    /// How bad.
    pub severity: Severity,
    /// The manual's name of the severity.
    pub severity_name: String,
    /// Minutes within which someone must respond.
    pub response_minutes: u32,
    /// Where it stands.
    pub status: IncidentStatus,
    /// What is wrong.
    pub description: String,
    /// Who leads.
    pub commander: String,
    /// Declared when.
    pub declared_at: Timestamp,
    /// By whom.
    pub declared_by: String,
    /// When it was (last) resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    /// When it was closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<Timestamp>,
    /// By whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    /// How it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// Components it affects and their state.
    pub components: BTreeMap<Component, ComponentStatus>,
    /// When the next status update is due (SEV-1/2, every 30 min, while open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_update_due: Option<Timestamp>,
    /// When the post-mortem is due (48 h after closing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postmortem_due: Option<Timestamp>,
    /// What happened, in order (empty in lists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEntry>,
    /// What Slack and PagerDuty were told, and whether it arrived (empty in lists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationView>,
}

/// A notification of an incident change and its delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationView {
    /// `slack` or `pagerduty`.
    pub destination: String,
    /// What, in a few words.
    pub summary: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts so far.
    pub attempts: u64,
    /// How the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Queued when.
    pub created_at: Timestamp,
    /// Delivered when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<Timestamp>,
    /// The next attempt (pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
}

/// An incident's state as stored (its timeline apart). Every change appends
/// to the timeline, so `events` also serves as its version.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// Its id.
    pub id: crate::IncidentId,
    /// How bad.
    pub severity: Severity,
    /// Where it stands.
    pub status: IncidentStatus,
    /// What is wrong.
    pub description: String,
    /// Who leads.
    pub commander: String,
    /// Declared when.
    pub declared_at: time::OffsetDateTime,
    /// By whom.
    pub declared_by: String,
    /// The last status update (or the declaration): the next is due from it.
    pub last_update_at: time::OffsetDateTime,
    /// When it was (last) resolved.
    pub resolved_at: Option<time::OffsetDateTime>,
    /// When it was closed.
    pub closed_at: Option<time::OffsetDateTime>,
    /// By whom.
    pub closed_by: Option<String>,
    /// How it ended.
    pub resolution: Option<String>,
    /// Components it affects and their state.
    pub components: BTreeMap<Component, ComponentStatus>,
    /// The time of its last timeline entry: later entries are never earlier.
    pub updated_at: time::OffsetDateTime,
    /// Timeline entries so far.
    pub events: u64,
    /// Whether it paged the on-call (closing it then resolves the page).
    pub paged: bool,
}

/// What the server recorded in an incident's window (`GET /admin/incidents/{id}/impact`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Impact {
    /// The window: from the declaration…
    pub from: Option<Timestamp>,
    /// …to the resolution (or the close, or now).
    pub until: Option<Timestamp>,
    /// 1:1 sends accepted in the window.
    pub messages: u64,
    /// Their copies, one per recipient device.
    pub copies: u64,
    /// Copies delivered more than `late_after_secs` after they were accepted.
    pub delivered_late: u64,
    /// Copies not delivered yet.
    pub undelivered: u64,
    /// Seconds after which a delivery counts as late.
    pub late_after_secs: u64,
    /// Users with a late or undelivered copy.
    pub users_delayed: u64,
    /// Decryption failures first reported in the window, by cause.
    pub decryption_failures: BTreeMap<String, u64>,
    /// Users who reported them.
    pub users_failing: u64,
    /// HTTP requests answered in the window (as the replicas recorded them each minute).
    #[serde(default)]
    pub requests: u64,
    /// Of them, answered 4xx.
    #[serde(default)]
    pub client_errors: u64,
    /// Of them, answered 5xx.
    #[serde(default)]
    pub server_errors: u64,
}

/// `GET /admin/incidents`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentList {
    /// Newest first.
    pub incidents: Vec<IncidentView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_read_as_typed_and_say_what_the_manual_says() {
        assert_eq!(Severity::parse("SEV-2"), Some(Severity::Sev2));
        assert_eq!(Severity::parse("sev-1"), Some(Severity::Sev1));
        assert_eq!(Severity::parse("4"), Some(Severity::Sev4));
        for bad in ["SEV-0", "SEV-5", "", "critical", "SEV-22"] {
            assert_eq!(Severity::parse(bad), None, "{bad}");
        }
        assert_eq!(serde_json::to_string(&Severity::Sev3).unwrap(), "\"SEV-3\"");
        let minutes: Vec<u32> = Severity::ALL.iter().map(|s| s.response_minutes()).collect();
        assert_eq!(minutes, [15, 30, 120, 1440]);
        assert!(Severity::Sev2.pages() && !Severity::Sev3.pages());
    }

    #[test]
    fn typed_text_is_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(
            Description::new("  API down ").unwrap().as_str(),
            "API down"
        );
        assert_eq!(Description::new(" \n "), Err(TextError::Empty));
        assert_eq!(
            Description::new(&"x".repeat(MAX_DESCRIPTION + 1)),
            Err(TextError::TooLong(MAX_DESCRIPTION))
        );
        assert_eq!(Description::new("a\nb"), Err(TextError::Control));
        assert_eq!(Description::new("bell\u{7}"), Err(TextError::Control));
        assert_eq!(
            Message::new("line 1\nline 2\ttab").unwrap().as_str(),
            "line 1\nline 2\ttab"
        );
        assert_eq!(Message::new("esc\u{1b}[31m"), Err(TextError::Control));
        // HTML is text like any other: the status page escapes it.
        assert!(Description::new("<script>alert(1)</script>").is_ok());
        let refused: Result<DeclareRequest, _> =
            serde_json::from_str(r#"{"severity":"SEV-2","description":"a\u0000b"}"#);
        assert!(refused.unwrap_err().to_string().contains("control"));
    }

    #[test]
    fn events_are_tagged_by_kind() {
        let entry = TimelineEntry {
            seq: 2,
            at: Timestamp(time::OffsetDateTime::UNIX_EPOCH),
            actor: "ops".into(),
            event: IncidentEvent::Update {
                from: IncidentStatus::Investigating,
                status: IncidentStatus::Identified,
                message: "found it".into(),
            },
        };
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["kind"], "update");
        assert_eq!(json["status"], "identified");
        let back: TimelineEntry = serde_json::from_value(json).unwrap();
        assert_eq!(back, entry);
    }
}
