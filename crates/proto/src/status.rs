//! The public status page's JSON, in the shapes of Atlassian Statuspage's
//! public API (`/api/v2/status.json`, `/api/v2/summary.json`), so existing
//! status widgets and monitors read it. Nothing internal appears here: no
//! hostnames, user ids, operators or error text.
use crate::incident::ComponentStatus;
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};

/// The page itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// `atlas`.
    pub id: String,
    /// `Atlas`.
    pub name: String,
    /// The status page's URL.
    pub url: String,
    /// Always `Etc/UTC`.
    pub time_zone: String,
    /// When its content last changed.
    pub updated_at: Timestamp,
}

/// How the whole service is, worst first in severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Indicator {
    /// All operational.
    None,
    /// Degraded performance somewhere.
    Minor,
    /// A partial outage.
    Major,
    /// A major outage.
    Critical,
}

impl Indicator {
    /// As on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Minor => "minor",
            Self::Major => "major",
            Self::Critical => "critical",
        }
    }
}

/// The page's overall status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageStatus {
    /// `none`, `minor`, `major` or `critical`.
    pub indicator: Indicator,
    /// In words, as Statuspage says it.
    pub description: String,
}

/// `GET /api/v2/status.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusJson {
    /// The page.
    pub page: Page,
    /// Its status.
    pub status: PageStatus,
}

/// A component on the page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentView {
    /// Its id (`api`, `delivery` …).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its state.
    pub status: ComponentStatus,
    /// Order on the page.
    pub position: u32,
    /// What it covers.
    pub description: String,
    /// Shown on the page.
    pub showcase: bool,
    /// Not a group of components.
    pub group: bool,
    /// Shown even when operational.
    pub only_show_if_degraded: bool,
    /// The page.
    pub page_id: String,
    /// When its state was computed.
    pub updated_at: Timestamp,
}

/// One update of an incident, as users read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentUpdate {
    /// `INC-…-N`.
    pub id: String,
    /// The incident.
    pub incident_id: String,
    /// `investigating`, `identified`, `monitoring` or `resolved`.
    pub status: String,
    /// What users were told.
    pub body: String,
    /// When.
    pub created_at: Timestamp,
    /// When (the same).
    pub display_at: Timestamp,
}

/// An incident as users see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicIncident {
    /// `INC-…`.
    pub id: String,
    /// Its description.
    pub name: String,
    /// `investigating`, `identified`, `monitoring`, `resolved` (closed ones too).
    pub status: String,
    /// `none`, `minor`, `major` or `critical` (from its severity).
    pub impact: Indicator,
    /// Declared.
    pub created_at: Timestamp,
    /// Started (the same).
    pub started_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
    /// First monitored.
    pub monitoring_at: Option<Timestamp>,
    /// Resolved.
    pub resolved_at: Option<Timestamp>,
    /// From declared to resolved, in words (resolved ones).
    pub total_duration: Option<String>,
    /// The page.
    pub page_id: String,
    /// Newest first.
    pub incident_updates: Vec<IncidentUpdate>,
    /// The components it affects.
    pub components: Vec<String>,
}

/// `GET /api/v2/summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The page.
    pub page: Page,
    /// Its status.
    pub status: PageStatus,
    /// Every component.
    pub components: Vec<ComponentView>,
    /// Unresolved incidents, newest first.
    pub incidents: Vec<PublicIncident>,
    /// None: Atlas does not schedule maintenance on the page.
    pub scheduled_maintenances: Vec<serde_json::Value>,
}
