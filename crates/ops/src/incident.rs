//! The incident lifecycle (seed `004`: §2.1 declaration, §6.1 status-page
//! stages, §7.1 closure) as a state machine without I/O: each change is
//! checked against the incident's state and yields the timeline entries to
//! append. The caller loads and stores; the clock is an argument.
use atlas_proto::IncidentId;
use atlas_proto::incident::{
    Commander, Component, ComponentStatus, DeclareRequest, Incident, IncidentEvent, IncidentStatus,
    IncidentView, Message, Severity, TimelineEntry, UpdateRequest,
};
use time::{Duration, OffsetDateTime};

/// Timeline entries an incident may have: a runaway script cannot grow one without bound.
pub const MAX_EVENTS: u64 = 1000;
/// The post-mortem is due this long after closing (§7.1: "within 48 hours").
pub const POSTMORTEM_DUE: Duration = Duration::hours(48);
/// The resolution when closing names none (the manual's script writes this).
pub const DEFAULT_RESOLUTION: &str = "See post-mortem document";

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncidentError {
    /// Closed incidents do not change (notes aside).
    #[error("incident {0} is closed")]
    Closed(IncidentId),
    /// Not from this status, or not this way.
    #[error("{0}")]
    InvalidTransition(String),
    /// The timeline has [`MAX_EVENTS`] entries.
    #[error("the timeline of incident {0} is full ({MAX_EVENTS} entries)")]
    TimelineFull(IncidentId),
}

/// A change to an open incident.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// A status-page update.
    Update(&'a UpdateRequest),
    /// A new commander.
    Assign(&'a Commander),
    /// A note (allowed after closing too: context for the post-mortem).
    Note(&'a Message),
    /// Closing, with how it ended.
    Close(Option<&'a Message>),
    /// An indicator of compromise the server noticed.
    Indicator(&'a str),
}

/// The state a component is shown in while an incident of `severity` affects it.
pub fn affected(severity: Severity) -> ComponentStatus {
    match severity {
        Severity::Sev1 => ComponentStatus::MajorOutage,
        Severity::Sev2 => ComponentStatus::PartialOutage,
        Severity::Sev3 | Severity::Sev4 => ComponentStatus::DegradedPerformance,
    }
}

/// A new incident `id`, declared by `actor` at `now`, and its first timeline entries.
pub fn declare(
    id: IncidentId,
    request: &DeclareRequest,
    commander: String,
    actor: &str,
    now: OffsetDateTime,
) -> (Incident, Vec<TimelineEntry>) {
    let mut incident = Incident {
        id,
        severity: request.severity,
        status: IncidentStatus::Investigating,
        description: request.description.as_str().to_owned(),
        commander: commander.clone(),
        declared_at: now,
        declared_by: actor.to_owned(),
        last_update_at: now,
        resolved_at: None,
        closed_at: None,
        closed_by: None,
        resolution: None,
        components: Default::default(),
        updated_at: now,
        events: 0,
        paged: false,
    };
    let mut events = vec![IncidentEvent::Declared {
        severity: request.severity,
        description: incident.description.clone(),
        commander,
    }];
    for &component in &request.components {
        let status = affected(request.severity);
        if incident.components.insert(component, status).is_none() {
            events.push(IncidentEvent::Component { component, status });
        }
    }
    let entries = append(&mut incident, actor, now, events);
    (incident, entries)
}

/// Applies `change` by `actor` at `now`; the timeline entries to append.
/// `incident` is changed only when the change is accepted.
pub fn apply(
    incident: &mut Incident,
    change: Change<'_>,
    actor: &str,
    now: OffsetDateTime,
) -> Result<Vec<TimelineEntry>, IncidentError> {
    let closed = incident.status == IncidentStatus::Closed;
    if closed && !matches!(change, Change::Note(_)) {
        return Err(IncidentError::Closed(incident.id.clone()));
    }
    let mut next = incident.clone();
    let at = now.max(incident.updated_at);
    let events = match change {
        Change::Update(update) => update_events(&mut next, update, at)?,
        Change::Assign(commander) => {
            let to = commander.as_str().to_owned();
            let from = std::mem::replace(&mut next.commander, to.clone());
            vec![IncidentEvent::Assigned { from, to }]
        }
        Change::Note(text) => vec![IncidentEvent::Note {
            text: text.as_str().to_owned(),
        }],
        Change::Indicator(text) => vec![IncidentEvent::Indicator {
            text: text.to_owned(),
        }],
        Change::Close(resolution) => {
            if next.status != IncidentStatus::Resolved {
                return Err(IncidentError::InvalidTransition(format!(
                    "incident {} is {}: update it to resolved before closing it",
                    next.id, next.status
                )));
            }
            let resolution = resolution.map_or(DEFAULT_RESOLUTION, |r| r.as_str());
            next.status = IncidentStatus::Closed;
            next.closed_at = Some(at);
            next.closed_by = Some(actor.to_owned());
            next.resolution = Some(resolution.to_owned());
            vec![IncidentEvent::Closed {
                resolution: resolution.to_owned(),
            }]
        }
    };
    if next.events + events.len() as u64 > MAX_EVENTS {
        return Err(IncidentError::TimelineFull(next.id));
    }
    let entries = append(&mut next, actor, at, events);
    *incident = next;
    Ok(entries)
}

/// The entries of a status-page update (severity and component changes first).
fn update_events(
    next: &mut Incident,
    update: &UpdateRequest,
    at: OffsetDateTime,
) -> Result<Vec<IncidentEvent>, IncidentError> {
    let from = next.status;
    if update.status == IncidentStatus::Closed {
        return Err(IncidentError::InvalidTransition(format!(
            "close incident {} with `close`, not with an update",
            next.id
        )));
    }
    if from == IncidentStatus::Resolved && update.status != from && !update.reopen {
        return Err(IncidentError::InvalidTransition(format!(
            "incident {} is resolved: say --reopen to make it {} again",
            next.id, update.status
        )));
    }
    let mut events = Vec::new();
    if let Some(to) = update.severity.filter(|&s| s != next.severity) {
        events.push(IncidentEvent::Severity {
            from: next.severity,
            to,
        });
        next.severity = to;
    }
    for (&component, &status) in &update.components {
        if next.components.insert(component, status) != Some(status) {
            events.push(IncidentEvent::Component { component, status });
        }
    }
    events.push(IncidentEvent::Update {
        from,
        status: update.status,
        message: update.message.as_str().to_owned(),
    });
    next.status = update.status;
    next.last_update_at = at;
    next.resolved_at = match update.status {
        IncidentStatus::Resolved if from == IncidentStatus::Resolved => next.resolved_at,
        IncidentStatus::Resolved => Some(at),
        _ => None,
    };
    Ok(events)
}

/// Numbers `events` after the incident's last entry, at `at`.
fn append(
    incident: &mut Incident,
    actor: &str,
    at: OffsetDateTime,
    events: Vec<IncidentEvent>,
) -> Vec<TimelineEntry> {
    let entries: Vec<TimelineEntry> = events
        .into_iter()
        .zip(incident.events + 1..)
        .map(|(event, seq)| TimelineEntry {
            seq,
            at: at.into(),
            actor: actor.to_owned(),
            event,
        })
        .collect();
    incident.events += entries.len() as u64;
    incident.updated_at = at;
    entries
}

/// Whether the incident is not yet over for users (the status page shows it as active).
pub fn is_active(incident: &Incident) -> bool {
    !matches!(
        incident.status,
        IncidentStatus::Resolved | IncidentStatus::Closed
    )
}

/// The incident as the admin API shows it, with `timeline` (empty in lists).
pub fn view(incident: &Incident, timeline: Vec<TimelineEntry>) -> IncidentView {
    let next_update_due = incident
        .severity
        .update_every_minutes()
        .filter(|_| is_active(incident))
        .map(|m| (incident.last_update_at + Duration::minutes(i64::from(m))).into());
    IncidentView {
        id: incident.id.to_string(),
        severity: incident.severity,
        severity_name: incident.severity.name().to_owned(),
        response_minutes: incident.severity.response_minutes(),
        status: incident.status,
        description: incident.description.clone(),
        commander: incident.commander.clone(),
        declared_at: incident.declared_at.into(),
        declared_by: incident.declared_by.clone(),
        resolved_at: incident.resolved_at.map(Into::into),
        closed_at: incident.closed_at.map(Into::into),
        closed_by: incident.closed_by.clone(),
        resolution: incident.resolution.clone(),
        components: incident.components.clone(),
        next_update_due,
        postmortem_due: incident.closed_at.map(|c| (c + POSTMORTEM_DUE).into()),
        timeline,
        notifications: Vec::new(),
    }
}

/// A component named in an update, `NAME=STATUS`.
pub fn parse_component_status(text: &str) -> Result<(Component, ComponentStatus), String> {
    let (name, status) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: write COMPONENT=STATUS, e.g. delivery=partial_outage"))?;
    let component = Component::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Component::ALL.iter().map(|c| c.as_str()).collect();
        format!("{name:?} is not a component: {}", names.join(", "))
    })?;
    let status = ComponentStatus::parse(status).ok_or_else(|| {
        let names: Vec<&str> = ComponentStatus::ALL.iter().map(|c| c.as_str()).collect();
        format!("{status:?} is not a component status: {}", names.join(", "))
    })?;
    Ok((component, status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use atlas_proto::incident::Description;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-30 06:00:00 UTC);

    fn declared(severity: Severity) -> Incident {
        let request = DeclareRequest {
            severity,
            description: Description::new("Messages not delivering").unwrap(),
            commander: None,
            components: vec![Component::Delivery],
            os_user: None,
        };
        let id = IncidentId::at(T0, 1);
        let (incident, entries) = declare(id, &request, "alice".into(), "ops", T0);
        assert_eq!(entries.len(), 2, "declared, and its component");
        assert_eq!(incident.events, 2);
        incident
    }

    fn update(status: IncidentStatus, reopen: bool) -> UpdateRequest {
        UpdateRequest {
            status,
            message: Message::new("news").unwrap(),
            severity: None,
            components: Default::default(),
            reopen,
        }
    }

    #[test]
    fn an_incident_goes_through_the_status_page_stages_and_closes() {
        let mut i = declared(Severity::Sev2);
        assert_eq!(
            i.components[&Component::Delivery],
            ComponentStatus::PartialOutage
        );
        let v = view(&i, vec![]);
        assert_eq!(v.next_update_due.unwrap().0, T0 + Duration::minutes(30));
        let mut at = T0;
        for status in [
            IncidentStatus::Identified,
            IncidentStatus::Monitoring,
            IncidentStatus::Resolved,
        ] {
            at += Duration::minutes(10);
            let u = update(status, false);
            let entries = apply(&mut i, Change::Update(&u), "ops", at).unwrap();
            assert_eq!(entries.last().unwrap().seq, i.events);
        }
        assert_eq!(i.resolved_at, Some(at));
        assert_eq!(view(&i, vec![]).next_update_due, None, "not while resolved");
        let closed_at = at + Duration::minutes(5);
        apply(&mut i, Change::Close(None), "bob", closed_at).unwrap();
        assert_eq!(
            (i.status, i.closed_by.as_deref(), i.resolution.as_deref()),
            (
                IncidentStatus::Closed,
                Some("bob"),
                Some(DEFAULT_RESOLUTION)
            )
        );
        assert_eq!(
            view(&i, vec![]).postmortem_due.unwrap().0,
            closed_at + Duration::hours(48)
        );
        // Closed: only notes.
        let u = update(IncidentStatus::Investigating, true);
        assert_eq!(
            apply(&mut i, Change::Update(&u), "ops", closed_at),
            Err(IncidentError::Closed(i.id.clone()))
        );
        assert!(apply(&mut i, Change::Close(None), "ops", closed_at).is_err());
        let note = Message::new("customer follow-up sent").unwrap();
        assert!(apply(&mut i, Change::Note(&note), "ops", closed_at).is_ok());
    }

    #[test]
    fn a_resolved_incident_reopens_only_when_asked_and_closes_only_when_resolved() {
        let mut i = declared(Severity::Sev3);
        assert!(matches!(
            apply(&mut i, Change::Close(None), "ops", T0),
            Err(IncidentError::InvalidTransition(_))
        ));
        let resolved = update(IncidentStatus::Resolved, false);
        apply(&mut i, Change::Update(&resolved), "ops", T0).unwrap();
        let before = i.clone();
        let back = update(IncidentStatus::Investigating, false);
        let refused = apply(&mut i, Change::Update(&back), "ops", T0).unwrap_err();
        assert!(refused.to_string().contains("--reopen"), "{refused}");
        assert_eq!(i, before, "a refused change changes nothing");
        let reopened = update(IncidentStatus::Investigating, true);
        apply(&mut i, Change::Update(&reopened), "ops", T0).unwrap();
        assert_eq!(
            (i.status, i.resolved_at),
            (IncidentStatus::Investigating, None)
        );
        let closing = update(IncidentStatus::Closed, false);
        assert!(apply(&mut i, Change::Update(&closing), "ops", T0).is_err());
    }

    #[test]
    fn severity_and_component_changes_are_recorded_once_and_time_never_runs_backwards() {
        let mut i = declared(Severity::Sev3);
        let mut u = update(IncidentStatus::Identified, false);
        u.severity = Some(Severity::Sev1);
        u.components
            .insert(Component::Delivery, ComponentStatus::MajorOutage);
        u.components
            .insert(Component::E2ee, ComponentStatus::DegradedPerformance);
        let later = T0 + Duration::minutes(3);
        let entries = apply(&mut i, Change::Update(&u), "ops", later).unwrap();
        let kinds: Vec<&str> = entries
            .iter()
            .map(|e| match e.event {
                IncidentEvent::Severity { .. } => "severity",
                IncidentEvent::Component { .. } => "component",
                IncidentEvent::Update { .. } => "update",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["severity", "component", "component", "update"]);
        assert_eq!(i.severity, Severity::Sev1);
        // The same again changes neither severity nor components; a clock that
        // went back stamps the entry with the last time instead.
        let entries = apply(&mut i, Change::Update(&u), "ops", T0).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].at.0, later);
        let commander = Commander::new("carol").unwrap();
        let entries = apply(&mut i, Change::Assign(&commander), "ops", later).unwrap();
        assert_eq!(
            entries[0].event,
            IncidentEvent::Assigned {
                from: "alice".into(),
                to: "carol".into()
            }
        );
    }

    #[test]
    fn the_timeline_is_bounded() {
        let mut i = declared(Severity::Sev4);
        let note = Message::new("n").unwrap();
        while i.events < MAX_EVENTS {
            apply(&mut i, Change::Note(&note), "ops", T0).unwrap();
        }
        assert_eq!(
            apply(&mut i, Change::Note(&note), "ops", T0),
            Err(IncidentError::TimelineFull(i.id.clone()))
        );
    }

    #[test]
    fn components_are_named_name_equals_status() {
        assert_eq!(
            parse_component_status("delivery=partial_outage"),
            Ok((Component::Delivery, ComponentStatus::PartialOutage))
        );
        for bad in ["delivery", "nope=operational", "api=down", "=", ""] {
            assert!(parse_component_status(bad).is_err(), "{bad}");
        }
    }
}
