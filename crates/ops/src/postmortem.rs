//! The post-mortem of seed `004` §7.2, written from what was recorded: the
//! summary's duration and impact are computed, the timeline is the incident's,
//! root cause and resolution come from its updates. Lessons and action items
//! stay to be filled in by people.
use atlas_proto::incident::{Impact, IncidentEvent, IncidentStatus, IncidentView, TimelineEntry};
use std::fmt::Write;
use time::OffsetDateTime;

/// The Markdown post-mortem of `incident` with its `impact`.
pub fn render(incident: &IncidentView, impact: &Impact) -> String {
    let mut md = String::new();
    // The incident began with its first alert, when one fired before it was declared.
    let first_fired = incident.timeline.iter().find_map(|e| match &e.event {
        IncidentEvent::Alert { status, .. } if status == "firing" => Some(e.at.0),
        _ => None,
    });
    let start = first_fired.map_or(incident.declared_at.0, |t| t.min(incident.declared_at.0));
    let end = incident.resolved_at.or(incident.closed_at).map(|t| t.0);
    let _ = writeln!(md, "# Post-Mortem: {}\n", incident.id);
    let _ = writeln!(md, "## Summary");
    let _ = writeln!(md, "- **Date**: {}", date(start));
    let duration = end.map_or_else(
        || "ongoing (not resolved)".to_owned(),
        |end| {
            format!(
                "{} ({} to {} UTC)",
                crate::status::duration(end - start),
                clock(start, start),
                clock(end, start)
            )
        },
    );
    let _ = writeln!(md, "- **Duration**: {duration}");
    let _ = writeln!(md, "- **Severity**: {}", severity(incident));
    let _ = writeln!(md, "- **Impact**: {}", impact_line(impact));
    let _ = writeln!(md, "- **Description**: {}", cell(&incident.description));
    let _ = writeln!(
        md,
        "- **Incident commander**: {}",
        cell(&incident.commander)
    );
    md.push('\n');

    let _ = writeln!(md, "## Timeline");
    let _ = writeln!(md, "| Time (UTC) | Event |");
    let _ = writeln!(md, "|------|-------|");
    let first_alert = incident.timeline.iter().position(
        |e| matches!(&e.event, IncidentEvent::Alert { status, .. } if status == "firing"),
    );
    for (i, entry) in incident.timeline.iter().enumerate() {
        let line = event_line(entry);
        let line = if Some(i) == first_alert {
            format!("First alert: {line}")
        } else {
            line
        };
        let _ = writeln!(md, "| {} | {} |", clock(entry.at.0, start), cell(&line));
    }
    md.push('\n');

    let _ = writeln!(md, "## Root Cause");
    let _ = writeln!(
        md,
        "{}\n",
        paragraphs(&said_when(incident, IncidentStatus::Identified))
    );
    let _ = writeln!(md, "## Resolution");
    let mut resolution = said_when(incident, IncidentStatus::Monitoring);
    resolution.extend(said_when(incident, IncidentStatus::Resolved));
    resolution.extend(incident.resolution.clone());
    let _ = writeln!(md, "{}\n", paragraphs(&resolution));

    md.push_str(
        "## Lessons Learned\n### What went well\n- \n\n### What could be improved\n- \n\n\
         ## Action Items\n| Item | Owner | Due Date | Status |\n|------|-------|----------|--------|\n| | | | |\n\n",
    );
    let _ = writeln!(md, "## Appendix");
    let _ = writeln!(
        md,
        "- Incident record: `atlas incident show {} --json`",
        incident.id
    );
    if let (Some(from), Some(until)) = (impact.from, impact.until) {
        let _ = writeln!(md, "- Impact window: {from} to {until}");
    }
    for entry in &incident.timeline {
        if let IncidentEvent::Note { text } = &entry.event {
            let _ = writeln!(md, "- Note ({}): {}", clock(entry.at.0, start), cell(text));
        }
    }
    md
}

/// `SEV-1 (Critical)`, saying what it was declared as when it changed.
fn severity(incident: &IncidentView) -> String {
    let declared = incident.timeline.iter().find_map(|e| match &e.event {
        IncidentEvent::Declared { severity, .. } => Some(*severity),
        _ => None,
    });
    let now = format!("{} ({})", incident.severity, incident.severity_name);
    match declared {
        Some(first) if first != incident.severity => format!("{now}; declared as {first}"),
        _ => now,
    }
}

/// The impact in one sentence.
fn impact_line(i: &Impact) -> String {
    let mut parts = vec![format!(
        "{} messages sent during the incident ({} device copies)",
        i.messages, i.copies
    )];
    parts.push(format!(
        "{} copies delivered more than {} s late and {} not delivered yet, for {} users",
        i.delivered_late, i.late_after_secs, i.undelivered, i.users_delayed
    ));
    if i.requests > 0 {
        let share = |n: u64| n as f64 * 100.0 / i.requests as f64;
        parts.push(format!(
            "{} API requests, {:.1} % answered 5xx and {:.1} % 4xx",
            i.requests,
            share(i.server_errors),
            share(i.client_errors)
        ));
    }
    let failures: u64 = i.decryption_failures.values().sum();
    if failures == 0 {
        parts.push("no decryption failures reported".into());
    } else {
        let causes: Vec<String> = i
            .decryption_failures
            .iter()
            .map(|(code, n)| format!("{code} × {n}"))
            .collect();
        parts.push(format!(
            "{failures} decryption failures reported by {} users ({})",
            i.users_failing,
            causes.join(", ")
        ));
    }
    parts.join("; ")
}

/// What the updates said on reaching `status`.
fn said_when(incident: &IncidentView, status: IncidentStatus) -> Vec<String> {
    incident
        .timeline
        .iter()
        .filter_map(|e| match &e.event {
            IncidentEvent::Update {
                status: s, message, ..
            } if *s == status => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// Paragraphs, or the template's placeholder when nothing was recorded.
fn paragraphs(texts: &[String]) -> String {
    if texts.is_empty() {
        return "[Not recorded in the incident's updates: fill in.]".into();
    }
    texts
        .iter()
        .map(|t| escape(t))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// One timeline entry, in the template's words where it has them.
fn event_line(entry: &TimelineEntry) -> String {
    let by = &entry.actor;
    match &entry.event {
        IncidentEvent::Declared {
            severity,
            description,
            ..
        } => format!("Incident declared ({severity}): {description} — {by}"),
        IncidentEvent::Update {
            status: IncidentStatus::Identified,
            message,
            ..
        } => format!("Root cause identified: {message}"),
        IncidentEvent::Update {
            status: IncidentStatus::Monitoring,
            message,
            ..
        } => format!("Fix deployed, monitoring: {message}"),
        IncidentEvent::Update {
            status: IncidentStatus::Resolved,
            message,
            ..
        } => format!("Service restored: {message}"),
        IncidentEvent::Update {
            status, message, ..
        } => format!("{}: {message}", status.heading()),
        IncidentEvent::Severity { from, to } => format!("Severity {from} → {to}"),
        IncidentEvent::Component { component, status } => {
            format!("{} {status}", component.title())
        }
        IncidentEvent::Assigned { to, .. } => format!("Incident commander: {to}"),
        IncidentEvent::Note { text } => format!("Note: {text}"),
        IncidentEvent::Indicator { text } => format!("Indicator of compromise: {text}"),
        IncidentEvent::Closed { resolution } => format!("Incident closed: {resolution} — {by}"),
        IncidentEvent::Alert {
            alertname,
            status,
            summary,
            ..
        } if status == "firing" => format!("Alert fired: {alertname} — {summary}"),
        IncidentEvent::Alert {
            alertname, status, ..
        } => format!("Alert {status}: {alertname}"),
    }
}

/// `HH:MM`, with the date when it is not the incident's day.
fn clock(t: OffsetDateTime, start: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let hm = format!("{:02}:{:02}", t.hour(), t.minute());
    if t.date() == start.to_offset(time::UtcOffset::UTC).date() {
        hm
    } else {
        format!("{} {hm}", date(t))
    }
}

/// `YYYY-MM-DD` (UTC).
fn date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// Text for a Markdown table cell: one line, no column breaks.
fn cell(text: &str) -> String {
    escape(text).replace('\n', " ").replace('|', "\\|")
}

/// Text whose HTML a Markdown renderer must not interpret.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{Change, apply, declare, view};
    use atlas_proto::IncidentId;
    use atlas_proto::incident::{
        Component, DeclareRequest, Description, Message, Severity, UpdateRequest,
    };
    use time::macros::datetime;

    fn update(status: IncidentStatus, text: &str) -> UpdateRequest {
        UpdateRequest {
            status,
            message: Message::new(text).unwrap(),
            severity: None,
            components: Default::default(),
            reopen: false,
        }
    }

    #[test]
    fn the_post_mortem_follows_the_template_with_computed_figures() {
        let t0 = datetime!(2026-11-30 06:00:00 UTC);
        let request = DeclareRequest {
            severity: Severity::Sev2,
            description: Description::new("Messages | not <b>delivering</b>").unwrap(),
            commander: None,
            components: vec![Component::Delivery],
            os_user: None,
        };
        let (mut i, mut timeline) =
            declare(IncidentId::at(t0, 1), &request, "alice".into(), "ops", t0);
        let mut at = t0;
        for (minutes, status, text) in [
            (
                12,
                IncidentStatus::Identified,
                "Replica 2's queue was stuck",
            ),
            (40, IncidentStatus::Monitoring, "Replica 2 replaced"),
            (85, IncidentStatus::Resolved, "Delivery back to normal"),
        ] {
            at = t0 + time::Duration::minutes(minutes);
            let u = update(status, text);
            timeline.extend(apply(&mut i, Change::Update(&u), "ops", at).unwrap());
        }
        let note = Message::new("line one\nline two").unwrap();
        timeline.extend(apply(&mut i, Change::Note(&note), "ops", at).unwrap());
        let impact = Impact {
            messages: 1200,
            copies: 1500,
            delivered_late: 300,
            undelivered: 4,
            late_after_secs: 60,
            users_delayed: 42,
            decryption_failures: [("OLM_BAD_MAC".to_owned(), 3)].into(),
            users_failing: 2,
            requests: 4000,
            server_errors: 120,
            client_errors: 40,
            ..Impact::default()
        };
        let md = render(&view(&i, timeline), &impact);
        assert!(
            md.starts_with("# Post-Mortem: INC-20261130060000\n"),
            "{md}"
        );
        assert!(md.contains("- **Date**: 2026-11-30"), "{md}");
        assert!(
            md.contains("- **Duration**: 1 hour 25 minutes (06:00 to 07:25 UTC)"),
            "{md}"
        );
        assert!(md.contains("- **Severity**: SEV-2 (High)"), "{md}");
        assert!(
            md.contains("1200 messages sent during the incident"),
            "{md}"
        );
        assert!(md.contains(
            "300 copies delivered more than 60 s late and 4 not delivered yet, for 42 users"
        ));
        assert!(md.contains("3 decryption failures reported by 2 users (OLM_BAD_MAC × 3)"));
        assert!(
            md.contains("4000 API requests, 3.0 % answered 5xx and 1.0 % 4xx"),
            "{md}"
        );
        assert!(md.contains("| 06:00 | Incident declared (SEV-2): Messages \\| not &lt;b&gt;delivering&lt;/b&gt; — ops |"), "{md}");
        assert!(md.contains("| 06:12 | Root cause identified: Replica 2's queue was stuck |"));
        assert!(md.contains("| 06:40 | Fix deployed, monitoring: Replica 2 replaced |"));
        assert!(md.contains("| 07:25 | Service restored: Delivery back to normal |"));
        assert!(
            md.contains("## Root Cause\nReplica 2's queue was stuck\n"),
            "{md}"
        );
        assert!(
            md.contains("| 07:25 | Note: line one line two |"),
            "one line per row: {md}"
        );
        for heading in [
            "## Lessons Learned",
            "### What went well",
            "## Action Items",
            "## Appendix",
        ] {
            assert!(md.contains(heading), "{heading}");
        }
    }
}
