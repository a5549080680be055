//! `atlas mls …`: the runbook's MLS recovery steps (admin API, operator token
//! with scope `mls`): inspect a group, ask a stuck member to catch up and
//! self-update, or to rejoin by external commit.
use crate::admin::{ServerArgs, percent_encode};
use crate::output::outln;
use atlas_proto::mls::{AdminGroupView, MemberActionView};
use reqwest::Method;
use std::time::{Duration, Instant};

/// `atlas mls …`.
#[derive(clap::Subcommand)]
pub enum MlsCommand {
    /// The group's epoch, each member's acknowledged epoch, and recovery steps.
    Show {
        /// The group.
        #[arg(long)]
        group_id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Ask a member's device to catch up from the stored commits and commit a self-update.
    SendUpdate(Target),
    /// Ask a member's device to rejoin by external commit from the latest GroupInfo (resync).
    RejoinMember(Target),
    /// Emergency: return the group to an earlier epoch; every member then rejoins.
    RollbackEpoch {
        /// The group.
        #[arg(long)]
        group_id: String,
        /// The epoch to return to.
        #[arg(long)]
        target_epoch: u64,
        /// Skip the typed confirmation.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Which member, and whether to wait for it.
#[derive(clap::Args)]
pub struct Target {
    /// The group.
    #[arg(long)]
    group_id: String,
    /// USER_ID/DEVICE_ID, or USER_ID when the user has one device in the group.
    #[arg(long)]
    member_id: String,
    /// Wait up to this many seconds for the device to report back (0: do not wait).
    #[arg(long, default_value_t = 0)]
    wait: u64,
    #[command(flatten)]
    server: ServerArgs,
}

fn print_view(view: &AdminGroupView) {
    let g = &view.group;
    outln!(
        "{} at epoch {} (since {})",
        g.group_id,
        g.current_epoch,
        g.last_epoch_change
    );
    for m in &g.members {
        let lag = g.current_epoch.saturating_sub(m.epoch);
        let note = match (m.status.as_str(), lag) {
            ("active", 0) => String::new(),
            ("active", n) => format!("  <- {n} epoch(s) behind"),
            (status, _) => format!("  ({status})"),
        };
        outln!("  {:<40} epoch {}{note}", m.member_id, m.epoch);
    }
    for a in view.actions.iter().take(5) {
        let state = match (&a.done_at, &a.outcome) {
            (Some(at), Some(outcome)) => format!("done {at}: {outcome}"),
            _ => "pending (the device acts on its next sync)".into(),
        };
        outln!(
            "  step {} {} for {} requested {}: {state}",
            a.action_id,
            a.action,
            a.member_id,
            a.requested_at
        );
    }
}

/// `atlas mls …`.
pub async fn mls(cmd: MlsCommand) -> anyhow::Result<()> {
    let (target, action) = match cmd {
        MlsCommand::Show { group_id, server } => {
            let path = format!("/admin/groups/{}", percent_encode(&group_id));
            let view: AdminGroupView = server.client()?.call(Method::GET, &path).await?;
            if server.json {
                outln!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print_view(&view);
            }
            return Ok(());
        }
        MlsCommand::RollbackEpoch {
            group_id,
            target_epoch,
            yes,
            server,
        } => return rollback(&group_id, target_epoch, yes, &server).await,
        MlsCommand::SendUpdate(target) => (target, "send-update"),
        MlsCommand::RejoinMember(target) => (target, "rejoin"),
    };
    let client = target.server.client()?;
    let path = format!(
        "/admin/groups/{}/members/{}/{action}",
        percent_encode(&target.group_id),
        percent_encode(&target.member_id)
    );
    let view: AdminGroupView = client.call(Method::POST, &path).await?;
    let step: MemberActionView = view
        .actions
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the server recorded no step"))?;
    if !target.server.json {
        outln!(
            "requested {} for {} in {} (step {})",
            step.action,
            step.member_id,
            step.group_id,
            step.action_id
        );
    }
    if target.wait == 0 {
        if target.server.json {
            outln!("{}", serde_json::to_string_pretty(&view)?);
        } else {
            outln!(
                "the device acts on its next sync; follow with: atlas mls show --group-id {}",
                target.group_id
            );
        }
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(target.wait);
    let show = format!("/admin/groups/{}", percent_encode(&target.group_id));
    loop {
        let view: AdminGroupView = client.call(Method::GET, &show).await?;
        let done = view
            .actions
            .iter()
            .find(|a| a.action_id == step.action_id)
            .and_then(|a| a.outcome.clone());
        if let Some(outcome) = done {
            if target.server.json {
                outln!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print_view(&view);
            }
            anyhow::ensure!(
                !outcome.starts_with("failed"),
                "the device reported: {outcome}"
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{} has not acted within {} s (the step stays pending until its device syncs)",
                step.member_id,
                target.wait
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `atlas mls rollback-epoch`: shows what will be discarded and asks for the
/// group id to be typed back unless `--yes`.
async fn rollback(
    group_id: &str,
    target: u64,
    yes: bool,
    server: &ServerArgs,
) -> anyhow::Result<()> {
    let client = server.client()?;
    let show = format!("/admin/groups/{}", percent_encode(group_id));
    let view: AdminGroupView = client.call(Method::GET, &show).await?;
    let current = view.group.current_epoch;
    anyhow::ensure!(
        target < current,
        "target epoch {target} is not below the current epoch {current}"
    );
    if !yes {
        eprintln!(
            "EMERGENCY: {group_id} goes back from epoch {current} to {target}. Commits and messages of \
             epochs {}..={current} are discarded and every member must rejoin.",
            target + 1
        );
        eprint!("Type the group id ({group_id}) to confirm: ");
        let mut typed = String::new();
        std::io::stdin().read_line(&mut typed)?;
        anyhow::ensure!(typed.trim() == group_id, "not confirmed; nothing changed");
    }
    let body = atlas_proto::mls::RollbackRequest {
        target_epoch: target,
    };
    let path = format!("/admin/groups/{}/rollback", percent_encode(group_id));
    let view: AdminGroupView = client.call_with(Method::POST, &path, Some(&body)).await?;
    if server.json {
        outln!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        outln!(
            "rolled {group_id} back from epoch {current} to {target}; members rejoin on their next sync"
        );
        print_view(&view);
    }
    Ok(())
}
