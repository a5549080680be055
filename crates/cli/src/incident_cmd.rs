//! `atlas incident …`: the emergency manual's incident scripts (seed `004`,
//! `declare-incident.sh`, the status-page stages, `close-incident.sh`) against
//! the server's record, which every operator sees, instead of a file in /tmp.
use crate::admin::ServerArgs;
use crate::output::outln;
use anyhow::Context;
use atlas_ops::incident::parse_component_status;
use atlas_proto::IncidentId;
use atlas_proto::incident::{
    AssignRequest, CloseRequest, Commander, Component, ComponentStatus, DeclareRequest,
    Description, Impact, IncidentEvent, IncidentList, IncidentStatus, IncidentView, Message,
    NoteRequest, Severity, UpdateRequest,
};
use reqwest::Method;

/// `atlas incident …`.
#[derive(clap::Subcommand)]
pub enum IncidentCommand {
    /// Declare an incident: SEV-1 critical (respond in 15 min), SEV-2 high (30 min),
    /// SEV-3 medium (2 h), SEV-4 low (24 h). Pages the on-call for SEV-1/2.
    Declare {
        /// SEV-1 … SEV-4.
        severity: Severity,
        /// What is wrong, one line.
        description: String,
        /// The incident commander (default: the operator token's label, else you).
        #[arg(long)]
        commander: Option<String>,
        /// A component affected (repeatable): api, delivery, e2ee, groups, storage.
        #[arg(long = "component", value_parser = component)]
        components: Vec<Component>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Post a status update: investigating, identified, monitoring or resolved.
    Update {
        /// The incident, INC-….
        id: IncidentId,
        /// The new stage.
        #[arg(long, value_parser = stage)]
        status: IncidentStatus,
        /// What users are told.
        #[arg(long)]
        message: String,
        /// A new severity.
        #[arg(long)]
        severity: Option<Severity>,
        /// A component's state, NAME=STATUS (repeatable), e.g. delivery=partial_outage.
        #[arg(long = "component", value_parser = parse_component_status)]
        components: Vec<(Component, ComponentStatus)>,
        /// Reopen a resolved incident (it cannot go back without saying so).
        #[arg(long)]
        reopen: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Hand the incident to another commander.
    Assign {
        /// The incident, INC-….
        id: IncidentId,
        /// The new commander.
        #[arg(long)]
        commander: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Add a note to the timeline.
    Note {
        /// The incident, INC-….
        id: IncidentId,
        /// The note.
        text: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List incidents, newest first.
    List {
        /// Only those not closed.
        #[arg(long)]
        open: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// An incident with its timeline, the next update due and the post-mortem due date.
    Show {
        /// The incident, INC-….
        id: IncidentId,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Write the post-mortem (the manual's template): duration, impact and
    /// timeline from what the server recorded; lessons and actions to fill in.
    Postmortem {
        /// The incident, INC-….
        id: IncidentId,
        /// Write it to this file instead of printing it.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
        /// A delivery later than this after acceptance counts as delayed.
        #[arg(long, default_value = "60s", value_parser = crate::keys_cmd::parse_duration)]
        late_after: u64,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Close a resolved incident; the post-mortem is due within 48 hours.
    Close {
        /// The incident, INC-….
        id: IncidentId,
        /// How it ended (default: "See post-mortem document").
        #[arg(long)]
        resolution: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

// Typed text is checked here rather than by clap, whose error would echo
// the value: 100 KB of it, or a terminal escape sequence.

fn description(text: &str) -> anyhow::Result<Description> {
    Description::new(text).map_err(|e| anyhow::anyhow!("the description {e}"))
}

fn message(what: &str, text: &str) -> anyhow::Result<Message> {
    Message::new(text).map_err(|e| anyhow::anyhow!("the {what} {e}"))
}

fn commander(text: &str) -> anyhow::Result<Commander> {
    Commander::new(text).map_err(|e| anyhow::anyhow!("the commander's name {e}"))
}

fn component(text: &str) -> Result<Component, String> {
    Component::parse(text).ok_or_else(|| {
        let names: Vec<&str> = Component::ALL.iter().map(|c| c.as_str()).collect();
        format!("not a component: {}", names.join(", "))
    })
}

/// A stage an update may set (`closed` is `atlas incident close`).
fn stage(text: &str) -> Result<IncidentStatus, String> {
    match IncidentStatus::parse(text) {
        Some(IncidentStatus::Closed) => Err("close an incident with `atlas incident close`".into()),
        Some(status) => Ok(status),
        None => Err("investigating, identified, monitoring or resolved".into()),
    }
}

/// Who runs this command, for a commander when the token has no label.
fn os_user() -> Option<Commander> {
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()?;
    Commander::new(&name).ok()
}

/// `atlas incident …`.
pub async fn incident(cmd: IncidentCommand) -> anyhow::Result<()> {
    match cmd {
        IncidentCommand::Declare {
            severity,
            description: description_text,
            commander,
            components,
            server,
        } => {
            let request = DeclareRequest {
                severity,
                description: description(&description_text)?,
                commander: commander.as_deref().map(self::commander).transpose()?,
                components,
                os_user: os_user(),
            };
            let view: IncidentView = server
                .client()?
                .call_with(Method::POST, "/admin/incidents", Some(&request))
                .await?;
            if server.json {
                return print_json(&view);
            }
            print_banner(&view);
        }
        IncidentCommand::Update {
            id,
            status,
            message: text,
            severity,
            components,
            reopen,
            server,
        } => {
            let request = UpdateRequest {
                status,
                message: message("message", &text)?,
                severity,
                components: components.into_iter().collect(),
                reopen,
            };
            let path = format!("/admin/incidents/{id}/updates");
            changed(&server, &path, &request).await?;
        }
        IncidentCommand::Assign {
            id,
            commander,
            server,
        } => {
            let path = format!("/admin/incidents/{id}/assign");
            let commander = self::commander(&commander)?;
            changed(&server, &path, &AssignRequest { commander }).await?;
        }
        IncidentCommand::Note { id, text, server } => {
            let path = format!("/admin/incidents/{id}/notes");
            let text = message("note", &text)?;
            changed(&server, &path, &NoteRequest { text }).await?;
        }
        IncidentCommand::Close {
            id,
            resolution,
            server,
        } => {
            let path = format!("/admin/incidents/{id}/close");
            let resolution = resolution
                .as_deref()
                .map(|r| message("resolution", r))
                .transpose()?;
            let view = send(&server, &path, &CloseRequest { resolution }).await?;
            if server.json {
                return print_json(&view);
            }
            outln!(
                "Incident {} closed by {}.",
                view.id,
                view.closed_by.as_deref().unwrap_or("?")
            );
            if let Some(due) = view.postmortem_due {
                outln!(
                    "Schedule the post-mortem: due by {due} (atlas incident postmortem {}).",
                    view.id
                );
            }
        }
        IncidentCommand::List { open, server } => {
            let path = format!("/admin/incidents?open={open}");
            let list: IncidentList = server.client()?.call(Method::GET, &path).await?;
            if server.json {
                return print_json(&list);
            }
            if list.incidents.is_empty() {
                outln!("no incidents");
            }
            for i in &list.incidents {
                outln!(
                    "{}  {}  {:<13}  {}  (commander {})",
                    i.id,
                    i.severity,
                    i.status.as_str(),
                    i.description,
                    i.commander
                );
            }
        }
        IncidentCommand::Postmortem {
            id,
            output,
            late_after,
            server,
        } => {
            let client = server.client()?;
            let view: IncidentView = client
                .call(Method::GET, &format!("/admin/incidents/{id}"))
                .await?;
            let path = format!("/admin/incidents/{id}/impact?late_after={late_after}");
            let impact: Impact = client.call(Method::GET, &path).await?;
            let markdown = atlas_ops::postmortem::render(&view, &impact);
            if server.json {
                let all =
                    serde_json::json!({ "incident": view, "impact": impact, "markdown": markdown });
                return print_json(&all);
            }
            match output {
                Some(file) => {
                    std::fs::write(&file, &markdown)
                        .with_context(|| format!("writing {}", file.display()))?;
                    eprintln!("post-mortem of {id} written to {}", file.display());
                }
                None => outln!("{markdown}"),
            }
        }
        IncidentCommand::Show { id, server } => {
            let path = format!("/admin/incidents/{id}");
            let view: IncidentView = server.client()?.call(Method::GET, &path).await?;
            if server.json {
                return print_json(&view);
            }
            print_incident(&view);
        }
    }
    Ok(())
}

/// Posts a change and prints the incident as it now is.
async fn changed<B: serde::Serialize>(
    server: &ServerArgs,
    path: &str,
    body: &B,
) -> anyhow::Result<()> {
    let view = send(server, path, body).await?;
    if server.json {
        return print_json(&view);
    }
    print_incident(&view);
    Ok(())
}

async fn send<B: serde::Serialize>(
    server: &ServerArgs,
    path: &str,
    body: &B,
) -> anyhow::Result<IncidentView> {
    Ok(server
        .client()?
        .call_with(Method::POST, path, Some(body))
        .await?)
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The manual's banner (§2.1).
fn print_banner(v: &IncidentView) {
    let rule = "==========================================";
    outln!("{rule}");
    outln!("INCIDENT DECLARED");
    outln!("ID: {}", v.id);
    outln!(
        "Severity: {} ({}: {}, respond within {})",
        v.severity,
        v.severity_name,
        v.severity.description(),
        minutes(v.response_minutes)
    );
    outln!("Time: {}", v.declared_at);
    outln!("Description: {}", v.description);
    outln!("Commander: {}", v.commander);
    if let Some(due) = v.next_update_due {
        outln!("Next status update due: {due}");
    }
    outln!("{rule}");
    outln!("Incident {} created. Begin response procedures.", v.id);
}

/// `15 min`, `2 h`, `24 h`.
fn minutes(m: u32) -> String {
    if m >= 60 && m.is_multiple_of(60) {
        format!("{} h", m / 60)
    } else {
        format!("{m} min")
    }
}

/// An incident for people: its state, then its timeline.
fn print_incident(v: &IncidentView) {
    outln!(
        "{}  {} ({})  {}",
        v.id,
        v.severity,
        v.severity_name,
        v.status
    );
    outln!("  {}", v.description);
    outln!("  commander: {}", v.commander);
    outln!("  declared:  {} by {}", v.declared_at, v.declared_by);
    if let Some(at) = v.resolved_at {
        outln!("  resolved:  {at}");
    }
    if let Some(at) = v.closed_at {
        outln!(
            "  closed:    {at} by {}: {}",
            v.closed_by.as_deref().unwrap_or("?"),
            v.resolution.as_deref().unwrap_or("")
        );
    }
    for (component, status) in &v.components {
        outln!("  {}: {}", component.title(), status);
    }
    if let Some(due) = v.next_update_due {
        outln!("  next status update due: {due}");
    }
    if let Some(due) = v.postmortem_due {
        outln!("  post-mortem due: {due}");
    }
    if !v.timeline.is_empty() {
        outln!("  timeline:");
    }
    for e in &v.timeline {
        outln!("    {}  {}  {}", e.at, e.actor, describe(&e.event));
    }
    if !v.notifications.is_empty() {
        outln!("  notifications:");
    }
    for n in &v.notifications {
        let state = match (n.status.as_str(), &n.last_error, n.next_attempt_at) {
            ("delivered", _, _) => format!(
                "delivered {} ({} attempts)",
                n.delivered_at.map(|t| t.to_string()).unwrap_or_default(),
                n.attempts
            ),
            ("pending", Some(e), Some(next)) => {
                format!("PENDING: attempt {} got {e}; next at {next}", n.attempts)
            }
            ("failed", e, _) => format!(
                "FAILED after {} attempts: {}",
                n.attempts,
                e.as_deref().unwrap_or("?")
            ),
            _ => "pending".to_owned(),
        };
        outln!("    {:<9}  {state}  {}", n.destination, n.summary);
    }
}

/// One timeline entry in words.
pub(crate) fn describe(event: &IncidentEvent) -> String {
    match event {
        IncidentEvent::Declared {
            severity,
            description,
            commander,
        } => format!("declared {severity}: {description} (commander {commander})"),
        IncidentEvent::Update {
            from,
            status,
            message,
        } if from == status => format!("update ({status}): {message}"),
        IncidentEvent::Update {
            from,
            status,
            message,
        } => format!("{from} → {status}: {message}"),
        IncidentEvent::Severity { from, to } => format!("severity {from} → {to}"),
        IncidentEvent::Component { component, status } => {
            format!("{} is {status}", component.title())
        }
        IncidentEvent::Assigned { from, to } => format!("commander {from} → {to}"),
        IncidentEvent::Note { text } => format!("note: {text}"),
        IncidentEvent::Indicator { text } => format!("indicator of compromise: {text}"),
        IncidentEvent::Closed { resolution } => format!("closed: {resolution}"),
        IncidentEvent::Alert {
            alertname,
            status,
            summary,
            ..
        } => format!("alert {alertname} {status}: {summary}"),
    }
}
