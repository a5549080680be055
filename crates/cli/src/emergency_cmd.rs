//! `atlas emergency …`: the manual's `emergency-shutdown.sh` (seed 004 §3.1)
//! as a lockdown that keeps the evidence, the admin API and the status page
//! up, and its lift. Typed confirmations as the script asks; without a
//! terminal the phrase must be given with `--confirm`.
use crate::admin::ServerArgs;
use crate::output::outln;
use atlas_proto::emergency::{
    LIFT_PHRASE, LiftRequest, LockdownRequest, LockdownView, SHUTDOWN_PHRASE,
};
use atlas_proto::incident::Message;
use reqwest::Method;
use std::io::IsTerminal;

/// `atlas emergency …`.
#[derive(clap::Subcommand)]
pub enum EmergencyCommand {
    /// Lock the server down (every replica): the client API answers 503
    /// locked_down, no tokens are issued, every WebSocket is closed; health,
    /// status page, metrics and the admin API stay up. Written into every open
    /// incident (and so to Slack). Scope emergency.
    Shutdown {
        /// The phrase, when there is no terminal to type it: 'CONFIRM SHUTDOWN'.
        #[arg(long)]
        confirm: Option<String>,
        /// Why, for the incident timelines and the record.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// End the lockdown. Scope emergency.
    Lift {
        /// The phrase, when there is no terminal to type it: 'LIFT LOCKDOWN'.
        #[arg(long)]
        confirm: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Whether a lockdown is in force.
    Status {
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// The phrase from `--confirm`, or typed at the prompt on a terminal.
fn phrase(given: Option<String>, phrase: &str) -> anyhow::Result<String> {
    if let Some(given) = given {
        return Ok(given);
    }
    anyhow::ensure!(
        std::io::stdin().is_terminal(),
        "no terminal to confirm on: pass --confirm '{phrase}'"
    );
    eprint!("Type '{phrase}' to proceed: ");
    let mut typed = String::new();
    std::io::stdin().read_line(&mut typed)?;
    Ok(typed.trim_end_matches(['\r', '\n']).to_owned())
}

const RULE: &str = "==========================================";

/// `atlas emergency …`.
pub async fn emergency(cmd: EmergencyCommand) -> anyhow::Result<()> {
    match cmd {
        EmergencyCommand::Shutdown {
            confirm,
            reason,
            server,
        } => {
            let reason = reason
                .as_deref()
                .map(Message::new)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--reason: {e}"))?;
            if !server.json {
                eprintln!("{RULE}\n⚠️  EMERGENCY SHUTDOWN INITIATED\n{RULE}");
            }
            let confirm = phrase(confirm, SHUTDOWN_PHRASE)?;
            // A wrong phrase goes to the server too, which refuses it and audits the refusal.
            let view: LockdownView = server
                .client()?
                .call_with(
                    Method::POST,
                    "/admin/emergency/lockdown",
                    Some(&LockdownRequest { confirm, reason }),
                )
                .await?;
            if server.json {
                outln!("{}", serde_json::to_string_pretty(&view)?);
                return Ok(());
            }
            let since = view
                .lockdown
                .as_ref()
                .map(|l| format!(" since {} by {}", l.since, l.actor))
                .unwrap_or_default();
            outln!(
                "[1/4] Locking down the client API (503 locked_down, no tokens issued)... done{since}"
            );
            outln!("[2/4] Closing every WebSocket on every replica... done");
            if view.incidents_told.is_empty() {
                outln!(
                    "[3/4] Writing into open incidents... none is open: declare one (atlas incident declare SEV-1 …)"
                );
                outln!(
                    "[4/4] Notifications... none sent (they go out with an incident's timeline)"
                );
            } else {
                let ids: Vec<String> = view
                    .incidents_told
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                outln!("[3/4] Writing into open incidents... {}", ids.join(", "));
                outln!("[4/4] Notifications... queued with those incidents (Slack, PagerDuty)");
            }
            outln!("{RULE}\nLOCKDOWN IN FORCE — end it with: atlas emergency lift\n{RULE}");
            Ok(())
        }
        EmergencyCommand::Lift { confirm, server } => {
            let confirm = phrase(confirm, LIFT_PHRASE)?;
            let view: LockdownView = server
                .client()?
                .call_with(
                    Method::POST,
                    "/admin/emergency/lift",
                    Some(&LiftRequest { confirm }),
                )
                .await?;
            if server.json {
                outln!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                outln!("lockdown lifted: the client API is open again");
            }
            Ok(())
        }
        EmergencyCommand::Status { server } => {
            let view: LockdownView = server
                .client()?
                .call(Method::GET, "/admin/emergency")
                .await?;
            if server.json {
                outln!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                match &view.lockdown {
                    Some(l) => outln!(
                        "LOCKED DOWN since {} by {}{}",
                        l.since,
                        l.actor,
                        if l.reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", l.reason)
                        }
                    ),
                    None => outln!("no lockdown"),
                }
            }
            Ok(())
        }
    }
}
