//! `atlas diagnose message|user|group`: the server walks the runbook's
//! decision tree on its data; this prints each step with its evidence, the
//! cause and the recovery, and with `--apply` starts the recommended one.
use crate::admin::{ServerArgs, percent_encode};
use crate::output::outln;
use atlas_client::operator::OperatorClient;
use atlas_proto::diagnose::{Diagnosis, Finding, RecoveryAction};
use reqwest::Method;

/// `atlas diagnose …`.
#[derive(clap::Subcommand)]
pub enum DiagnoseCommand {
    /// Why a message could not be read, walked per recipient device.
    Message(Target),
    /// A user's devices, keys, key checks, recent failures and backups.
    User(Target),
    /// A group's epochs, its members' epochs and the recovery steps asked of them.
    Group(Target),
}

/// What to diagnose and where.
#[derive(clap::Args)]
pub struct Target {
    /// Message id, user id or group id.
    id: String,
    /// Start the recommended recovery (resend, session reset, MLS send-update or rejoin).
    #[arg(long)]
    apply: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// `atlas diagnose …`.
pub async fn diagnose(cmd: DiagnoseCommand) -> anyhow::Result<()> {
    let (kind, target) = match cmd {
        DiagnoseCommand::Message(t) => ("messages", t),
        DiagnoseCommand::User(t) => ("users", t),
        DiagnoseCommand::Group(t) => ("groups", t),
    };
    let client = target.server.client()?;
    let path = format!("/admin/diagnose/{kind}/{}", percent_encode(&target.id));
    let diagnosis: Diagnosis = client.call(Method::GET, &path).await?;
    let applied = if target.apply {
        apply(&client, &diagnosis).await?
    } else {
        Vec::new()
    };
    if target.server.json {
        let out = serde_json::json!({ "diagnosis": diagnosis, "applied": applied });
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print(&diagnosis);
    for line in &applied {
        outln!("applied: {line}");
    }
    if target.apply && applied.is_empty() && !diagnosis.recovery.is_empty() {
        outln!(
            "applied: nothing — the recommended recovery needs the user's device; run the commands above"
        );
    }
    Ok(())
}

fn print(d: &Diagnosis) {
    outln!("Diagnosis of {}", d.subject);
    for (i, s) in d.steps.iter().enumerate() {
        let mark = match s.finding {
            Finding::Ok => "ok",
            Finding::Problem => "!!",
            Finding::Info => "--",
        };
        outln!("{:>2}. [{mark}] {}\n       {}", i + 1, s.check, s.evidence);
    }
    outln!("Cause: {} ({})", d.cause.summary, d.cause.code);
    for (i, r) in d.recovery.iter().enumerate() {
        let label = if i == 0 { "Recovery" } else { "Otherwise" };
        outln!("{label}: {}", r.summary);
        for c in &r.commands {
            outln!("  {c}");
        }
    }
}

/// Runs the recommended plan's actions in order; returns what was done.
async fn apply(client: &OperatorClient, d: &Diagnosis) -> anyhow::Result<Vec<String>> {
    let Some(plan) = d.recovery.first() else {
        return Ok(Vec::new());
    };
    let mut done = Vec::new();
    for action in &plan.actions {
        let path = match action {
            RecoveryAction::RequestResend { message_id } => {
                format!("/messages/{}/request-resend", percent_encode(message_id))
            }
            RecoveryAction::ResetSession { session_id } => {
                format!("/sessions/{}/reset", percent_encode(session_id))
            }
            RecoveryAction::MlsSendUpdate {
                group_id,
                member_id,
            } => format!(
                "/admin/groups/{}/members/{}/send-update",
                percent_encode(group_id),
                percent_encode(member_id)
            ),
            RecoveryAction::MlsRejoin {
                group_id,
                member_id,
            } => format!(
                "/admin/groups/{}/members/{}/rejoin",
                percent_encode(group_id),
                percent_encode(member_id)
            ),
        };
        // The answers (requests, reset, member step) are for the record only.
        let _: serde_json::Value = client.call(Method::POST, &path).await?;
        done.push(format!("POST {path}"));
    }
    Ok(done)
}
