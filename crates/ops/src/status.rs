//! The public status page, without I/O: components from live signals,
//! overridden by active incidents, the page indicator, incidents with their
//! updates (§6.1's stages, and a resolved incident's total duration), and the
//! page as HTML (no JavaScript) and as an Atom feed. Everything user-typed is
//! escaped; nothing internal (hosts, users, operators, errors) is shown.
use crate::incident::is_active;
use atlas_proto::incident::{
    Component, ComponentStatus, Incident, IncidentEvent, IncidentStatus, Severity, TimelineEntry,
};
use atlas_proto::status::{
    ComponentView, IncidentUpdate, Indicator, Page, PageStatus, PublicIncident, Summary,
};
use std::fmt::Write;
use time::OffsetDateTime;

/// What the server measured just now.
#[derive(Debug, Clone)]
pub struct Signals {
    /// The database answers.
    pub storage_ok: bool,
    /// Redis answers (`None`: not configured).
    pub redis_ok: Option<bool>,
    /// The server is shutting down.
    pub draining: bool,
    /// `/health/e2ee`'s verdict: `healthy`, `degraded` or `unhealthy`.
    pub e2ee: String,
    /// MLS members more than two epochs behind.
    pub members_behind: u64,
}

/// The page: its summary, and incidents resolved lately.
#[derive(Debug, Clone)]
pub struct StatusPage {
    /// What `/api/v2/summary.json` serves.
    pub summary: Summary,
    /// Resolved (or closed) incidents, newest first.
    pub past: Vec<PublicIncident>,
}

/// What each component covers.
fn describe(c: Component) -> &'static str {
    match c {
        Component::Api => "Sign-in, keys and the HTTP API",
        Component::Delivery => "Sending and receiving messages",
        Component::E2ee => "Decrypting messages on your devices",
        Component::Groups => "Group conversations",
        Component::Storage => "Message storage",
    }
}

/// Each component as the signals say.
fn live(c: Component, s: &Signals) -> ComponentStatus {
    use ComponentStatus::*;
    match c {
        Component::Storage | Component::Api if !s.storage_ok => MajorOutage,
        Component::Api if s.draining => UnderMaintenance,
        Component::Delivery if !s.storage_ok || s.redis_ok == Some(false) => MajorOutage,
        Component::E2ee => match s.e2ee.as_str() {
            "unhealthy" => PartialOutage,
            "degraded" => DegradedPerformance,
            _ => Operational,
        },
        Component::Groups if s.members_behind > 0 => DegradedPerformance,
        _ => Operational,
    }
}

/// The worse of two states (maintenance counts as no worse than operational).
fn worse(a: ComponentStatus, b: ComponentStatus) -> ComponentStatus {
    let rank = |s: ComponentStatus| match s {
        ComponentStatus::Operational => 0,
        ComponentStatus::UnderMaintenance => 1,
        ComponentStatus::DegradedPerformance => 2,
        ComponentStatus::PartialOutage => 3,
        ComponentStatus::MajorOutage => 4,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// An incident's impact on the page.
fn impact(severity: Severity) -> Indicator {
    match severity {
        Severity::Sev1 => Indicator::Critical,
        Severity::Sev2 => Indicator::Major,
        Severity::Sev3 | Severity::Sev4 => Indicator::Minor,
    }
}

/// The page as of `now`, from `signals` and `incidents` (active and lately resolved, with timelines).
pub fn build(
    url: &str,
    now: OffsetDateTime,
    signals: &Signals,
    incidents: &[(Incident, Vec<TimelineEntry>)],
) -> StatusPage {
    let page = Page {
        id: "atlas".into(),
        name: "Atlas".into(),
        url: url.into(),
        time_zone: "Etc/UTC".into(),
        updated_at: incidents
            .iter()
            .map(|(i, _)| i.updated_at)
            .max()
            .unwrap_or(now)
            .into(),
    };
    let active: Vec<&Incident> = incidents
        .iter()
        .map(|(i, _)| i)
        .filter(|i| is_active(i))
        .collect();
    let components: Vec<ComponentView> = Component::ALL
        .iter()
        .zip(1..)
        .map(|(&c, position)| {
            let status = active
                .iter()
                .filter_map(|i| i.components.get(&c).copied())
                .fold(live(c, signals), worse);
            ComponentView {
                id: c.as_str().into(),
                name: c.title().into(),
                status,
                position,
                description: describe(c).into(),
                showcase: true,
                group: false,
                only_show_if_degraded: false,
                page_id: "atlas".into(),
                updated_at: now.into(),
            }
        })
        .collect();
    let from_components = components.iter().map(|c| match c.status {
        ComponentStatus::MajorOutage => Indicator::Critical,
        ComponentStatus::PartialOutage => Indicator::Major,
        ComponentStatus::DegradedPerformance => Indicator::Minor,
        ComponentStatus::Operational | ComponentStatus::UnderMaintenance => Indicator::None,
    });
    let indicator = from_components
        .chain(active.iter().map(|i| impact(i.severity)))
        .max()
        .unwrap_or(Indicator::None);
    let description = match indicator {
        Indicator::None => "All Systems Operational",
        Indicator::Minor => "Minor Service Outage",
        Indicator::Major => "Partial System Outage",
        Indicator::Critical => "Major System Outage",
    };
    let (mut current, mut past) = (Vec::new(), Vec::new());
    for (incident, timeline) in incidents {
        let public = public(incident, timeline);
        if is_active(incident) {
            current.push(public);
        } else {
            past.push(public);
        }
    }
    StatusPage {
        summary: Summary {
            page,
            status: PageStatus {
                indicator,
                description: description.into(),
            },
            components,
            incidents: current,
            scheduled_maintenances: Vec::new(),
        },
        past,
    }
}

/// An incident as users see it: its description and the updates posted.
fn public(incident: &Incident, timeline: &[TimelineEntry]) -> PublicIncident {
    let id = incident.id.to_string();
    let mut updates: Vec<IncidentUpdate> = timeline
        .iter()
        .filter_map(|e| match &e.event {
            IncidentEvent::Update {
                status, message, ..
            } => Some(IncidentUpdate {
                id: format!("{id}-{}", e.seq),
                incident_id: id.clone(),
                status: status.as_str().into(),
                body: message.clone(),
                created_at: e.at,
                display_at: e.at,
            }),
            _ => None,
        })
        .collect();
    updates.reverse();
    let monitoring_at = timeline.iter().find_map(|e| match &e.event {
        IncidentEvent::Update {
            status: IncidentStatus::Monitoring,
            ..
        } => Some(e.at),
        _ => None,
    });
    let resolved_at = incident.resolved_at.or(incident.closed_at);
    let status = match incident.status {
        IncidentStatus::Closed => IncidentStatus::Resolved,
        s => s,
    };
    PublicIncident {
        name: incident.description.clone(),
        status: status.as_str().into(),
        impact: impact(incident.severity),
        created_at: incident.declared_at.into(),
        started_at: incident.declared_at.into(),
        updated_at: incident.updated_at.into(),
        monitoring_at,
        resolved_at: resolved_at.map(Into::into),
        total_duration: resolved_at.map(|r| duration(r - incident.declared_at)),
        page_id: "atlas".into(),
        incident_updates: updates,
        components: incident
            .components
            .keys()
            .map(|c| c.as_str().into())
            .collect(),
        id,
    }
}

/// `X hours Y minutes` (§6.1's "Total duration").
pub fn duration(d: time::Duration) -> String {
    let minutes = d.whole_minutes().max(0);
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match minutes / 60 {
        0 => plural(minutes, "minute"),
        h => format!("{} {}", plural(h, "hour"), plural(minutes % 60, "minute")),
    }
}

/// Text safe inside HTML and XML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A component state in words.
fn words(s: ComponentStatus) -> &'static str {
    match s {
        ComponentStatus::Operational => "Operational",
        ComponentStatus::DegradedPerformance => "Degraded performance",
        ComponentStatus::PartialOutage => "Partial outage",
        ComponentStatus::MajorOutage => "Major outage",
        ComponentStatus::UnderMaintenance => "Under maintenance",
    }
}

/// The page as HTML: readable without JavaScript, refreshing itself every minute.
pub fn html(page: &StatusPage) -> String {
    let s = &page.summary;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"60\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Atlas status</title>\
         <link rel=\"alternate\" type=\"application/atom+xml\" href=\"/status/feed.atom\">\
         <style>body{{font-family:sans-serif;max-width:50rem;margin:2rem auto;padding:0 1rem;color:#222}}\
         .banner{{padding:1rem;border-radius:.4rem;color:#fff;font-size:1.3rem}}\
         .none{{background:#2e7d32}}.minor{{background:#f9a825}}.major{{background:#ef6c00}}.critical{{background:#c62828}}\
         table{{width:100%;border-collapse:collapse;margin:1rem 0}}td{{padding:.5rem;border-bottom:1px solid #ddd}}\
         .operational{{color:#2e7d32}}.degraded_performance{{color:#f9a825}}.partial_outage{{color:#ef6c00}}\
         .major_outage{{color:#c62828}}.under_maintenance{{color:#1565c0}}\
         .incident{{border-left:4px solid #ef6c00;padding:0 1rem;margin:1rem 0}}.past{{border-color:#999}}\
         small{{color:#666}}</style></head><body><h1>Atlas status</h1>"
    );
    let _ = write!(
        h,
        "<p class=\"banner {}\" id=\"indicator\">{}</p>",
        s.status.indicator.as_str(),
        esc(&s.status.description)
    );
    for incident in &s.incidents {
        incident_html(&mut h, incident, false);
    }
    h.push_str("<h2>Components</h2><table>");
    for c in &s.components {
        let _ = write!(
            h,
            "<tr><td>{}<br><small>{}</small></td><td class=\"{}\">{}</td></tr>",
            esc(&c.name),
            esc(&c.description),
            c.status.as_str(),
            words(c.status)
        );
    }
    h.push_str("</table>");
    if !page.past.is_empty() {
        h.push_str("<h2>Past incidents</h2>");
    }
    for incident in &page.past {
        incident_html(&mut h, incident, true);
    }
    let _ = write!(
        h,
        "<p><small>Updated {}. <a href=\"/status/feed.atom\">Atom feed</a> · \
         <a href=\"/api/v2/summary.json\">JSON</a></small></p></body></html>",
        s.page.updated_at
    );
    h
}

fn incident_html(h: &mut String, i: &PublicIncident, past: bool) {
    let _ = write!(
        h,
        "<div class=\"incident{}\"><h3>{}</h3>",
        if past { " past" } else { "" },
        esc(&i.name)
    );
    for u in &i.incident_updates {
        let heading = IncidentStatus::parse(&u.status).map_or("Update", |s| s.heading());
        let _ = write!(
            h,
            "<p><strong>{heading}</strong> <small>{}</small><br>{}</p>",
            u.display_at,
            esc(&u.body).replace('\n', "<br>")
        );
    }
    if let Some(d) = &i.total_duration {
        let _ = write!(h, "<p>Total duration: {}</p>", esc(d));
    }
    h.push_str("</div>");
}

/// The page as an Atom feed: one entry per update, newest first.
pub fn atom(page: &StatusPage) -> String {
    let s = &page.summary;
    let mut entries: Vec<(&PublicIncident, &IncidentUpdate)> = s
        .incidents
        .iter()
        .chain(&page.past)
        .flat_map(|i| i.incident_updates.iter().map(move |u| (i, u)))
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.1.created_at));
    let mut x = String::new();
    let _ = write!(
        x,
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <feed xmlns=\"http://www.w3.org/2005/Atom\"><title>Atlas status</title>\
         <id>{}</id><link href=\"{}\"/><updated>{}</updated>",
        esc(&s.page.url),
        esc(&s.page.url),
        s.page.updated_at
    );
    for (incident, update) in entries {
        let heading = IncidentStatus::parse(&update.status).map_or("Update", |s| s.heading());
        let _ = write!(
            x,
            "<entry><id>{}#{}</id><title>{}: {}</title><updated>{}</updated>\
             <link href=\"{}\"/><content type=\"text\">{}</content></entry>",
            esc(&s.page.url),
            esc(&update.id),
            heading,
            esc(&incident.name),
            update.created_at,
            esc(&s.page.url),
            esc(&update.body)
        );
    }
    x.push_str("</feed>");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{Change, apply, declare};
    use atlas_proto::IncidentId;
    use atlas_proto::incident::{DeclareRequest, Description, Message, UpdateRequest};
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-30 06:00:00 UTC);

    fn healthy() -> Signals {
        Signals {
            storage_ok: true,
            redis_ok: None,
            draining: false,
            e2ee: "healthy".into(),
            members_behind: 0,
        }
    }

    fn incident(text: &str, components: Vec<Component>) -> (Incident, Vec<TimelineEntry>) {
        let request = DeclareRequest {
            severity: Severity::Sev2,
            description: Description::new(text).unwrap(),
            commander: Some(atlas_proto::incident::Commander::new("secret-oncall").unwrap()),
            components,
            os_user: None,
        };
        declare(
            IncidentId::at(T0, 1),
            &request,
            "ops-bob".into(),
            "ops-bob (token abc)",
            T0,
        )
    }

    fn status_of(page: &StatusPage, c: Component) -> ComponentStatus {
        page.summary
            .components
            .iter()
            .find(|v| v.id == c.as_str())
            .unwrap()
            .status
    }

    #[test]
    fn components_follow_signals_and_active_incidents() {
        let page = build("https://status.atlas.dev", T0, &healthy(), &[]);
        assert_eq!(page.summary.status.indicator, Indicator::None);
        assert_eq!(page.summary.status.description, "All Systems Operational");
        let mut signals = healthy();
        signals.e2ee = "degraded".into();
        signals.redis_ok = Some(false);
        let page = build("u", T0, &signals, &[]);
        assert_eq!(
            status_of(&page, Component::E2ee),
            ComponentStatus::DegradedPerformance
        );
        assert_eq!(
            status_of(&page, Component::Delivery),
            ComponentStatus::MajorOutage
        );
        assert_eq!(page.summary.status.indicator, Indicator::Critical);
        // An active SEV-2 on delivery: partial outage, shown; once resolved, the live state again.
        let (mut i, mut t) = incident("Messages delayed", vec![Component::Delivery]);
        let page = build("u", T0, &healthy(), &[(i.clone(), t.clone())]);
        assert_eq!(
            status_of(&page, Component::Delivery),
            ComponentStatus::PartialOutage
        );
        assert_eq!(page.summary.status.indicator, Indicator::Major);
        assert_eq!(page.summary.incidents.len(), 1);
        let resolved = UpdateRequest {
            status: IncidentStatus::Resolved,
            message: Message::new("All delivered").unwrap(),
            severity: None,
            components: Default::default(),
            reopen: false,
        };
        let later = T0 + time::Duration::minutes(95);
        t.extend(apply(&mut i, Change::Update(&resolved), "ops", later).unwrap());
        let page = build("u", later, &healthy(), &[(i, t)]);
        assert_eq!(
            status_of(&page, Component::Delivery),
            ComponentStatus::Operational
        );
        assert!(page.summary.incidents.is_empty());
        assert_eq!(
            page.past[0].total_duration.as_deref(),
            Some("1 hour 35 minutes")
        );
    }

    #[test]
    fn the_page_escapes_what_operators_typed_and_shows_nothing_internal() {
        let (i, t) = incident("<script>alert('x')</script> & more", vec![Component::Api]);
        let page = build("https://status.atlas.dev", T0, &healthy(), &[(i, t)]);
        let html = html(&page);
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"));
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("http-equiv=\"refresh\""));
        for internal in ["ops-bob", "secret-oncall", "token"] {
            assert!(!html.contains(internal), "{internal} leaked: {html}");
            let json = serde_json::to_string(&page.summary).unwrap();
            assert!(!json.contains(internal), "{internal} leaked: {json}");
        }
        let feed = atom(&page);
        assert!(
            feed.starts_with("<?xml")
                && feed.contains("<feed xmlns=\"http://www.w3.org/2005/Atom\">")
        );
    }

    #[test]
    fn durations_read_as_people_say_them() {
        let m = time::Duration::minutes;
        assert_eq!(duration(m(1)), "1 minute");
        assert_eq!(duration(m(59)), "59 minutes");
        assert_eq!(duration(m(61)), "1 hour 1 minute");
        assert_eq!(duration(m(185)), "3 hours 5 minutes");
    }
}
