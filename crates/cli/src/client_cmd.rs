//! Client commands: `register`, `send`, `inbox`, `receipt`, `whoami`.
use crate::output::outln;
use crate::profile::open;
use atlas_client::{Client, Received};
use atlas_proto::UserId;
use std::path::Path;

/// Flags of `atlas register`.
#[derive(clap::Args)]
pub struct RegisterArgs {
    /// The user id to register (letters, digits, '.', '_', '-').
    user_id: UserId,
    /// Server URL.
    #[arg(long, env = "ATLAS_SERVER")]
    server: String,
    /// Link code from `atlas device link-code` on an existing device: adds this profile as a new device of USER_ID.
    #[arg(long)]
    link_code: Option<String>,
    /// The server's registration token, if it registers new users only with one.
    #[arg(long, env = "ATLAS_REGISTRATION_TOKEN", hide_env_values = true)]
    registration_token: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Flags of `atlas send`.
#[derive(clap::Args)]
pub struct SendArgs {
    /// Recipient user id.
    user_id: UserId,
    /// The text.
    text: String,
    /// Print the server's answer as JSON.
    #[arg(long)]
    json: bool,
}

/// Flags of `atlas inbox`.
#[derive(clap::Args)]
pub struct InboxArgs {
    /// Print messages as a JSON array.
    #[arg(long)]
    json: bool,
    /// Keep listening (WebSocket push) after printing the backlog; one JSON object per line with --json.
    #[arg(long)]
    follow: bool,
}

/// `atlas register`.
pub async fn register(profile_dir: &Path, args: RegisterArgs) -> anyhow::Result<()> {
    let linked = args.link_code.is_some();
    let client = Client::register_with(
        profile_dir,
        &args.server,
        args.user_id,
        args.link_code,
        args.registration_token,
    )
    .await?;
    let certified = !linked || client.finish_link().await?;
    if args.json {
        outln!(
            "{}",
            serde_json::json!({ "user_id": client.user_id(), "device_id": client.device_id(), "server": client.server(), "certified": certified })
        );
    } else {
        outln!(
            "registered {}/{} on {}",
            client.user_id(),
            client.device_id(),
            client.server()
        );
        if !certified {
            outln!(
                "waiting for certification: run any command on the device that made the link code \
                 (e.g. atlas --profile OLD devices); this device finishes on its next command"
            );
        }
    }
    Ok(())
}

/// `atlas send`.
pub async fn send(profile_dir: &Path, args: SendArgs) -> anyhow::Result<()> {
    let client = open(profile_dir).await?;
    // A one-shot process has no push socket: take the session resets waiting
    // (after an identity revocation, say) before encrypting on an old session.
    client.repair().apply_session_resets().await?;
    let sent = client
        .messages()
        .send_text(&args.user_id, &args.text)
        .await?;
    let untrusted = client.untrusted_devices(&args.user_id).await?;
    for u in &untrusted {
        eprintln!(
            "!! not encrypted to {}/{}: {}",
            args.user_id, u.device_id, u.reason
        );
    }
    if args.json {
        let mut value = serde_json::to_value(&sent)?;
        value["untrusted_devices"] = serde_json::to_value(&untrusted)?;
        outln!("{}", serde_json::to_string(&value)?);
    } else {
        outln!(
            "sent {} to {} device(s) of {}",
            sent.message_id,
            sent.deliveries.len(),
            args.user_id
        );
        outln!(
            "receipt {} signed by {}, valid until {} (atlas receipt {})",
            sent.receipt.receipt_id,
            sent.receipt.kid,
            sent.receipt.expires_at,
            sent.message_id
        );
    }
    Ok(())
}

/// Flags of `atlas receipt`.
#[derive(clap::Args)]
pub struct ReceiptArgs {
    /// The message id (as `send` printed it).
    message_id: atlas_proto::MessageId,
    /// Have the server sign the receipts again with its current key (sender only).
    #[arg(long)]
    reissue: bool,
    /// Print the receipts as JSON.
    #[arg(long)]
    json: bool,
}

/// `atlas receipt`: the latest signed receipts of a message this user sent or received.
pub async fn receipt(profile_dir: &Path, args: ReceiptArgs) -> anyhow::Result<()> {
    let client = open(profile_dir).await?;
    let answer = if args.reissue {
        client.receipts().reissue(&args.message_id).await?
    } else {
        client.receipts().latest(&args.message_id).await?
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    for r in &answer.receipts {
        let device = r
            .device_id
            .as_ref()
            .map(|d| format!(" by {d}"))
            .unwrap_or_default();
        outln!(
            "{} {}{device}: receipt {} kid {} issued {} valid until {}",
            answer.message_id,
            r.receipt_type.as_str(),
            r.receipt_id,
            r.kid,
            r.issued_at,
            r.expires_at
        );
        outln!("{}", r.base64);
    }
    Ok(())
}

fn print_line(m: &Received) {
    match (&m.text, &m.error) {
        (Some(text), _) => outln!(
            "[{}] {}/{}: {}",
            m.created_at,
            m.sender_id,
            m.sender_device_id,
            text
        ),
        (None, error) => outln!(
            "[{}] {}/{}: Unable to decrypt message {} ({})",
            m.created_at,
            m.sender_id,
            m.sender_device_id,
            m.message_id,
            error
                .as_ref()
                .map_or_else(|| "unknown error".to_owned(), ToString::to_string)
        ),
    }
}

/// `atlas inbox`.
pub async fn inbox(profile_dir: &Path, args: InboxArgs) -> anyhow::Result<()> {
    let client = open(profile_dir).await?;
    let received = client.messages().sync().await?;
    let in_groups = client.groups().sync_all().await?;
    if args.json && !args.follow {
        // One array: direct messages, then group entries (those have a "group" field).
        let mut all = Vec::new();
        for m in &received {
            all.push(serde_json::to_value(m)?);
        }
        for m in &in_groups {
            all.push(serde_json::to_value(m)?);
        }
        outln!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for m in &received {
            if args.json {
                outln!("{}", serde_json::to_string(m)?);
            } else {
                print_line(m);
            }
        }
        for m in &in_groups {
            if args.json {
                outln!("{}", serde_json::to_string(m)?);
            } else {
                crate::group_cmd::print_group_line(m);
            }
        }
    }
    if args.follow {
        let json = args.json;
        let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        loop {
            let flag = interrupted.clone();
            let stop = async move {
                let _ = tokio::signal::ctrl_c().await;
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            };
            let print = |m: Received| {
                if json {
                    outln!("{}", serde_json::to_string(&m).unwrap_or_default());
                } else {
                    print_line(&m);
                }
            };
            let print_group = |m: atlas_client::GroupReceived| {
                if json {
                    outln!("{}", serde_json::to_string(&m).unwrap_or_default());
                } else {
                    crate::group_cmd::print_group_line(&m);
                }
            };
            client.listen_all(print, Some(print_group), stop).await?;
            // The server closes the socket when the access token expires: reconnect with a fresh one.
            if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(());
            }
        }
    } else if received.is_empty() && in_groups.is_empty() && !args.json {
        outln!("no new messages");
    }
    for (user, pin) in client.identity_changes().await? {
        eprintln!(
            "!! {user}'s identity key changed (pinned {}, now {}): compare safety numbers with atlas verify {user}",
            pin.identity_key,
            pin.changed_to.unwrap_or_default()
        );
    }
    Ok(())
}

/// `atlas whoami`.
pub async fn whoami(profile_dir: &Path) -> anyhow::Result<()> {
    let client = open(profile_dir).await?;
    outln!(
        "{}",
        serde_json::json!({ "user_id": client.user_id(), "device_id": client.device_id(), "server": client.server() })
    );
    Ok(())
}
