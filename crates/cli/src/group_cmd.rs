//! `atlas group …`: MLS groups from a client profile.
use crate::output::outln;
use crate::profile::open;
use atlas_client::GroupReceived;
use atlas_proto::UserId;
use std::path::Path;

/// `atlas group …`.
#[derive(clap::Subcommand)]
pub enum GroupCommand {
    /// Create a group with this device as its only member.
    Create {
        /// The group's name (unique on the server): letters, digits, - _ .
        name: String,
    },
    /// Add every device of a user.
    Add {
        /// The group.
        group: String,
        /// The user to add.
        user_id: UserId,
    },
    /// Remove every device of a user.
    Remove {
        /// The group.
        group: String,
        /// The user to remove.
        user_id: UserId,
    },
    /// Send an encrypted text to the group.
    Send {
        /// The group.
        group: String,
        /// The text.
        text: String,
    },
    /// Refresh this device's keys in the group (a new epoch).
    Update {
        /// The group.
        group: String,
    },
    /// The group's epoch and members, with the epoch each has acknowledged
    /// (after what catching up with the group's log read).
    Members {
        /// The group.
        group: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Prints one group log entry as `inbox` shows it.
pub fn print_group_line(m: &GroupReceived) {
    match (&m.text, &m.event, &m.error) {
        (Some(text), _, _) => outln!("[{}] #{} {}: {}", m.created_at, m.group, m.sender, text),
        (None, Some(event), _) => outln!(
            "[{}] #{} {} committed: {}",
            m.created_at,
            m.group,
            m.sender,
            event
        ),
        (None, None, error) => outln!(
            "[{}] #{} {}: Unable to decrypt message (seq {}, {})",
            m.created_at,
            m.group,
            m.sender,
            m.seq,
            error
                .as_ref()
                .map_or_else(|| "unknown error".to_owned(), ToString::to_string)
        ),
    }
}

/// `atlas group …`.
pub async fn group(profile_dir: &Path, cmd: GroupCommand) -> anyhow::Result<()> {
    let client = open(profile_dir).await?;
    match cmd {
        GroupCommand::Create { name } => {
            let view = client.groups().create(&name).await?;
            outln!(
                "created group {} (epoch {})",
                view.group_id,
                view.current_epoch
            );
        }
        GroupCommand::Add { group, user_id } => {
            let done = client.groups().add(&group, &user_id).await?;
            done.read.iter().for_each(print_group_line);
            outln!("added {user_id} to {group} (epoch {})", done.answer.epoch);
        }
        GroupCommand::Remove { group, user_id } => {
            let done = client.groups().remove(&group, &user_id).await?;
            done.read.iter().for_each(print_group_line);
            outln!(
                "removed {user_id} from {group} (epoch {})",
                done.answer.epoch
            );
        }
        GroupCommand::Send { group, text } => {
            let sent = client.groups().send(&group, &text).await?;
            sent.read.iter().for_each(print_group_line);
            outln!(
                "sent to {group} (seq {}, epoch {})",
                sent.answer.seq,
                sent.answer.epoch
            );
        }
        GroupCommand::Update { group } => {
            let done = client.groups().update(&group).await?;
            done.read.iter().for_each(print_group_line);
            outln!(
                "updated this device in {group} (epoch {})",
                done.answer.epoch
            );
        }
        GroupCommand::Members { group, json } => {
            let read = client.groups().sync(&group).await?;
            let view = client.groups().view(&group).await?;
            if json {
                // What the sync read goes along, or it would never be shown.
                let mut out = serde_json::to_value(&view)?;
                out["read"] = serde_json::to_value(&read)?;
                outln!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                read.iter().for_each(print_group_line);
                outln!(
                    "{} at epoch {} (since {})",
                    view.group_id,
                    view.current_epoch,
                    view.last_epoch_change
                );
                for m in &view.members {
                    let lag = view.current_epoch.saturating_sub(m.epoch);
                    let note = match (m.status.as_str(), lag) {
                        ("active", 0) => String::new(),
                        ("active", n) => format!("  ({n} behind)"),
                        (status, _) => format!("  ({status})"),
                    };
                    outln!("  {:<40} epoch {}{note}", m.member_id, m.epoch);
                }
            }
        }
    }
    Ok(())
}
