//! `atlas emergency …`: the manual's `emergency-shutdown.sh` (seed 004 §3.1)
//! as a lockdown that keeps the evidence, the admin API and the status page
//! up, and its lift. Typed confirmations as the script asks; without a
//! terminal the phrase must be given with `--confirm`.
use crate::admin::ServerArgs;
use crate::output::outln;
use anyhow::Context;
use atlas_client::operator::OperatorClient;
use atlas_crypto::note::NoteVerifier;
use atlas_proto::emergency::{
    EvidenceBundle, LIFT_PHRASE, LiftRequest, LockdownRequest, LockdownView, SHUTDOWN_PHRASE,
};
use atlas_proto::incident::Message;
use reqwest::Method;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

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
        /// Where the evidence goes (must not exist; default
        /// ./atlas-evidence/emergency_<YYYYmmdd_HHMMSS>).
        #[arg(long)]
        evidence_dir: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Save the server's forensic evidence (logs, state, metrics, configuration
    /// without secrets, audit checkpoint) under a signed manifest, and verify it.
    Evidence {
        /// Where it goes (must not exist; default ./atlas-evidence/evidence_<YYYYmmdd_HHMMSS>).
        #[arg(long)]
        evidence_dir: Option<PathBuf>,
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
    /// Revoke keys that may be compromised (seed 004 §3.3) in one audited step:
    /// `signing` revokes every receipt-signing key (receipts it signed stop
    /// verifying; reissue them) and replaces the access-token and DPoP nonce
    /// keys, so every token dies at once on every replica; devices sign in again
    /// by themselves with their device keys. Secrets are destroyed, never archived.
    ///
    /// `identity` revokes the identity keys of every device (or `--user`'s, as
    /// after a stolen phone) and the user identity keys that certify them: the
    /// server stops handing them out, and each device makes, certifies and
    /// publishes new ones on its next sync or push; contacts see the identity
    /// change. `all` is identity, then signing, then encryption.
    RevokeKeys {
        /// What to revoke.
        #[arg(value_enum)]
        kind: atlas_proto::emergency::KeyKind,
        /// With `identity`: only this user's devices.
        #[arg(long)]
        user: Option<atlas_proto::UserId>,
        /// Do not ask "Continue? (yes/no)".
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Check saved evidence against its signed MANIFEST (and KEY, or the key you pinned).
    VerifyEvidence {
        /// The evidence directory.
        dir: PathBuf,
        /// The audit key you pinned (default: the KEY file saved with the evidence).
        #[arg(long)]
        key: Option<String>,
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

/// `DIR`, or `./atlas-evidence/<prefix>_<YYYYmmdd_HHMMSS>`; created empty, owner-only.
fn evidence_dir(given: Option<PathBuf>, prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = match given {
        Some(dir) => dir,
        None => {
            let stamp = time::OffsetDateTime::now_utc().format(
                time::macros::format_description!("[year][month][day]_[hour][minute][second]"),
            )?;
            PathBuf::from("./atlas-evidence").join(format!("{prefix}_{stamp}"))
        }
    };
    anyhow::ensure!(
        !dir.exists(),
        "evidence directory {} exists: name another (nothing was done)",
        dir.display()
    );
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {} (nothing was done)", parent.display()))?;
    }
    std::fs::create_dir(&dir)
        .with_context(|| format!("cannot create {} (nothing was done)", dir.display()))?;
    atlas_store::set_mode(&dir, 0o700)?;
    Ok(dir)
}

fn write_private(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
    atlas_store::set_mode(path, 0o600)?;
    Ok(())
}

/// [`fetch_evidence`]; on failure the directory it made is removed again, so
/// a refused or failed attempt leaves nothing behind.
async fn save_evidence(client: &OperatorClient, dir: &Path) -> anyhow::Result<usize> {
    let saved = fetch_evidence(client, dir).await;
    if saved.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    saved
}

/// Fetches the bundle, checks it, writes it under `dir` and checks what is on disk; the file count.
async fn fetch_evidence(client: &OperatorClient, dir: &Path) -> anyhow::Result<usize> {
    let bundle: EvidenceBundle = client
        .call(Method::POST, "/admin/emergency/evidence")
        .await?;
    let verifier = NoteVerifier::from_text(&bundle.key).context("the server's audit key")?;
    let files: BTreeMap<String, Vec<u8>> = bundle
        .files
        .into_iter()
        .map(|(name, text)| (name, text.into_bytes()))
        .collect();
    if let Some(bad) = files
        .keys()
        .find(|n| !atlas_crypto::evidence::valid_name(n))
    {
        anyhow::bail!("the server sent a file named {bad:?}: refused");
    }
    atlas_crypto::evidence::verify(&bundle.manifest, &files, &verifier)?;
    for (name, content) in &files {
        write_private(&dir.join(name), content)?;
    }
    write_private(&dir.join("MANIFEST"), bundle.manifest.as_bytes())?;
    write_private(&dir.join("KEY"), format!("{}\n", bundle.key).as_bytes())?;
    // What counts is what is on disk.
    let mut on_disk = BTreeMap::new();
    for name in files.keys() {
        on_disk.insert(name.clone(), std::fs::read(dir.join(name))?);
    }
    let manifest = std::fs::read_to_string(dir.join("MANIFEST"))?;
    atlas_crypto::evidence::verify(&manifest, &on_disk, &verifier)
        .context("the saved evidence does not verify")?;
    Ok(files.len())
}

/// `atlas emergency …`.
pub async fn emergency(cmd: EmergencyCommand) -> anyhow::Result<()> {
    match cmd {
        EmergencyCommand::Evidence {
            evidence_dir: dir,
            server,
        } => {
            let client = server.client()?;
            let dir = evidence_dir(dir, "evidence")?;
            let n = save_evidence(&client, &dir).await?;
            if server.json {
                outln!(
                    "{}",
                    serde_json::json!({"dir": dir.display().to_string(), "files": n, "verified": true})
                );
            } else {
                outln!(
                    "saved {n} files and their signed MANIFEST to {} (verified)",
                    dir.display()
                );
            }
            Ok(())
        }
        EmergencyCommand::Shutdown {
            confirm,
            reason,
            evidence_dir: dir,
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
            let client = server.client()?;
            // A wrong phrase, or a lockdown already in force, goes to the server
            // without evidence: it refuses it and audits the refusal.
            let current: LockdownView = client.call(Method::GET, "/admin/emergency").await?;
            let mut saved = None;
            if confirm == SHUTDOWN_PHRASE && current.lockdown.is_none() {
                let dir = evidence_dir(dir, "emergency")?;
                if !server.json {
                    eprintln!("[1/5] Saving forensic evidence...");
                }
                let n = save_evidence(&client, &dir).await.with_context(|| {
                    format!(
                        "evidence not saved to {}; nothing was locked down",
                        dir.display()
                    )
                })?;
                saved = Some((dir, n));
            }
            let view: LockdownView = client
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
            if let Some((dir, n)) = &saved {
                outln!(
                    "[1/5] Saving forensic evidence... {n} files and a signed MANIFEST in {} (verified)",
                    dir.display()
                );
            }
            outln!(
                "[2/5] Blocking client traffic (503 locked_down, no tokens issued)... done{since}"
            );
            outln!(
                "[3/5] Closing every WebSocket and stopping client work on every replica... done"
            );
            if view.incidents_told.is_empty() {
                outln!(
                    "[4/5] Writing into open incidents... none is open: declare one (atlas incident declare SEV-1 …)"
                );
                outln!(
                    "[5/5] Notifications... none sent (they go out with an incident's timeline)"
                );
            } else {
                let ids: Vec<String> = view
                    .incidents_told
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                outln!("[4/5] Writing into open incidents... {}", ids.join(", "));
                outln!("[5/5] Notifications... queued with those incidents (Slack, PagerDuty)");
            }
            outln!("{RULE}\nLOCKDOWN IN FORCE — end it with: atlas emergency lift");
            if let Some((dir, _)) = &saved {
                outln!("Evidence saved to {}", dir.display());
            }
            outln!("{RULE}");
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
        EmergencyCommand::RevokeKeys {
            kind,
            user,
            yes,
            server,
        } => {
            anyhow::ensure!(
                user.is_none() || kind == atlas_proto::emergency::KeyKind::Identity,
                "--user applies to `identity` only: signing and encryption keys are the server's"
            );
            if !server.json {
                eprintln!(
                    "{RULE}\n⚠️  EMERGENCY KEY REVOCATION\nKey Type: {}{}\n{RULE}",
                    kind.as_str(),
                    user.as_ref()
                        .map(|u| format!(" (user {u})"))
                        .unwrap_or_default()
                );
            }
            if !yes {
                anyhow::ensure!(
                    std::io::stdin().is_terminal(),
                    "no terminal to confirm on: pass --yes"
                );
                eprint!("This will invalidate existing sessions. Continue? (yes/no): ");
                let mut typed = String::new();
                std::io::stdin().read_line(&mut typed)?;
                anyhow::ensure!(typed.trim() == "yes", "not confirmed; nothing changed");
            }
            let view: atlas_proto::emergency::RevokeKeysView = server
                .client()?
                .call_with(
                    Method::POST,
                    "/admin/emergency/revoke-keys",
                    Some(&atlas_proto::emergency::RevokeKeysRequest {
                        kind,
                        user_id: user,
                    }),
                )
                .await?;
            if server.json {
                outln!("{}", serde_json::to_string_pretty(&view)?);
                return Ok(());
            }
            print_revocation(&view);
            outln!(
                "{RULE}\nKEY REVOCATION COMPLETE\nDevices sign in again by themselves; reissue receipts that must verify (atlas receipt --reissue)\n{RULE}"
            );
            Ok(())
        }
        EmergencyCommand::VerifyEvidence { dir, key } => {
            let key = match key {
                Some(key) => key,
                None => std::fs::read_to_string(dir.join("KEY"))
                    .with_context(|| format!("reading {}", dir.join("KEY").display()))?,
            };
            let verifier =
                NoteVerifier::from_text(&key).context("not a signed-note verifier key")?;
            let manifest = std::fs::read_to_string(dir.join("MANIFEST"))
                .with_context(|| format!("reading {}", dir.join("MANIFEST").display()))?;
            let mut files = BTreeMap::new();
            // Files only: what others add beside the bundle goes in subdirectories
            // (emergency-shutdown.sh puts the cluster's view in cluster/).
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type()?.is_file() && name != "MANIFEST" && name != "KEY" {
                    files.insert(name.clone(), std::fs::read(dir.join(&name))?);
                }
            }
            let names = atlas_crypto::evidence::verify(&manifest, &files, &verifier)?;
            outln!(
                "OK: {} files match the MANIFEST signed by {}",
                names.len(),
                verifier.name()
            );
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

/// The seed's numbered steps for what a revocation did, kind by kind.
fn print_revocation(view: &atlas_proto::emergency::RevokeKeysView) {
    let of = |purposes: &[&str]| -> Vec<&atlas_proto::emergency::RevokedKey> {
        view.revoked
            .iter()
            .filter(|k| purposes.contains(&k.purpose.as_str()))
            .collect()
    };
    let identity = of(&["user-identity", "device-signing", "device-identity"]);
    let signing = of(&["receipt-signing", "access-token", "dpop-nonce"]);
    let kek = of(&["kek"]);
    let (all, kind) = (view.kind == atlas_proto::emergency::KeyKind::All, view.kind);
    if all || kind == atlas_proto::emergency::KeyKind::Identity {
        let users = identity
            .iter()
            .filter(|k| k.purpose == "user-identity")
            .count();
        outln!(
            "[1/4] Revoking {users} user identity keys and the keys of {} devices...",
            view.devices_to_rekey
        );
        for key in &identity {
            outln!(
                "      {} {} ({}, was {})",
                key.purpose,
                key.kid,
                key.alg,
                key.was
            );
        }
        outln!(
            "[2/4] Their prekeys and KeyPackages are no longer handed out; their contacts' sessions are reset"
        );
        outln!(
            "[3/4] Their sockets closed with rekey_required: each device re-keys on its next sync or push"
        );
        outln!(
            "[4/4] Contacts see the identity change and compare safety numbers (atlas verify USER)"
        );
    }
    if all || kind == atlas_proto::emergency::KeyKind::Signing {
        outln!("[1/4] Generating new keys... done");
        outln!("[2/4] Revoking the old ones (secrets destroyed, public parts in the audit log)...");
        for key in &signing {
            outln!(
                "      {} {} ({}, was {})",
                key.purpose,
                key.kid,
                key.alg,
                key.was
            );
        }
        outln!("[3/4] Deploying the new keys to every replica... done");
        outln!(
            "[4/4] Ending every session: {} refresh tokens revoked, every socket closed",
            view.refresh_tokens_revoked
        );
    }
    if all || kind == atlas_proto::emergency::KeyKind::Encryption {
        outln!("[1/4] Generating a new key-encryption key... done");
        for key in &kek {
            outln!(
                "[2/4] Re-sealing every server secret under it in one transaction... {}",
                key.alg
            );
            outln!(
                "[3/4] Destroying the old KEK {} (overwritten, not archived)... done",
                key.kid
            );
        }
        outln!("[4/4] Every replica reloads the KEK file... done");
    }
    outln!("      now in use: {}", view.installed.join(", "));
}
