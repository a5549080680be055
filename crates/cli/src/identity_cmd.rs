//! Devices and identities: `atlas devices`, `atlas device link-code|approve|remove`,
//! `atlas verify`. A user's identity key certifies each of its devices; contacts
//! pin it on first use and compare safety numbers out of band.
use crate::output::outln;
use crate::profile::open;
use atlas_client::Client;
use atlas_crypto::identity::verify_certificate;
use atlas_proto::{DeviceId, UserId};
use std::path::Path;

/// Flags of `atlas devices`.
#[derive(clap::Args)]
pub struct DevicesArgs {
    /// User whose devices to list (default: this profile's user).
    user_id: Option<UserId>,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// `atlas device …`.
#[derive(clap::Subcommand)]
pub enum DeviceCommand {
    /// Print a single-use code that lets another profile join this user as a new
    /// device (valid 10 minutes); this device certifies it on its next sync.
    LinkCode,
    /// Certify now the devices linked with this device's codes (inbox does it too).
    Approve,
    /// Remove one of this user's devices (signed with the identity key): its
    /// tokens die at once and senders stop encrypting to it.
    Remove {
        /// The device id (see `atlas devices`).
        device_id: DeviceId,
    },
}

/// Flags of `atlas verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The contact.
    user_id: UserId,
    /// Mark the identity key as verified after comparing the safety number (also
    /// accepts a changed one).
    #[arg(long)]
    confirm: bool,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// `atlas devices`: a user's devices, whether the identity key certified each, and the identity's state.
pub async fn devices(profile_dir: &Path, args: DevicesArgs) -> anyhow::Result<()> {
    let client = open(profile_dir).await?;
    let user = args.user_id.unwrap_or_else(|| client.user_id().clone());
    if user == *client.user_id() {
        for d in client.approve_linked_devices().await? {
            eprintln!("certified the newly linked device {user}/{d}");
        }
    }
    let list = client.devices(&user).await?;
    let pin = client.identity_pin(&user).await?;
    if args.json {
        let mut value = serde_json::to_value(&list)?;
        value["identity"] = serde_json::to_value(&pin)?;
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let listed = list.identity_key.as_deref().unwrap_or("");
    match &pin {
        _ if list.identity_key.is_none() => outln!(
            "!! {user} has no identity key: the server's operator revoked it and no device \
             of {user} has re-keyed yet (status rekey). Nothing can be encrypted to {user} until one does."
        ),
        Some(p) if p.identity_key != listed => outln!(
            "!! {user}'s identity key CHANGED: pinned {}, the server now lists {listed}. \
             Nothing is encrypted to the new one until you compare safety numbers \
             (atlas verify {user}) and accept it (atlas verify {user} --confirm).",
            p.identity_key
        ),
        Some(p) => outln!(
            "identity key {listed} ({})",
            if p.verified {
                "verified"
            } else {
                "pinned on first use, not verified: atlas verify"
            }
        ),
        None => outln!("identity key {listed} (not pinned yet)"),
    }
    outln!(
        "{:<14} {:<8} {:<13} {:>9} {:<8} REGISTERED",
        "DEVICE",
        "STATUS",
        "CERTIFIED",
        "ONE-TIME",
        "FALLBACK"
    );
    let trusted_key = pin.as_ref().map_or(listed, |p| p.identity_key.as_str());
    for d in list.devices {
        let certified = match &d.certificate {
            Some(c) if verify_certificate(trusted_key, &user, &d.keys, c).is_ok() => "yes",
            Some(_) => "NO (invalid)",
            None if d.status == atlas_proto::api::DeviceStatus::Pending => "pending",
            None => "NO",
        };
        outln!(
            "{:<14} {:<8} {:<13} {:>9} {:<8} {}",
            d.keys.device_id,
            d.status,
            certified,
            d.one_time_keys_available,
            if d.fallback_key { "yes" } else { "no" },
            d.created_at
        );
    }
    Ok(())
}

/// `atlas device …`.
pub async fn device(profile_dir: &Path, cmd: DeviceCommand) -> anyhow::Result<()> {
    let client = open(profile_dir).await?;
    match cmd {
        DeviceCommand::LinkCode => {
            let (code, expires_at) = client.create_link_code().await?;
            outln!("{code}");
            eprintln!(
                "valid until {expires_at}. On the new device: atlas --profile NEW register {} --server {} --link-code <code>; \
                 then run any command here (e.g. atlas devices) to certify it",
                client.user_id(),
                client.server()
            );
        }
        DeviceCommand::Approve => approve(&client).await?,
        DeviceCommand::Remove { device_id } => {
            client.remove_device(&device_id).await?;
            outln!("removed {}/{device_id}", client.user_id());
        }
    }
    Ok(())
}

async fn approve(client: &Client) -> anyhow::Result<()> {
    let certified = client.approve_linked_devices().await?;
    if certified.is_empty() {
        outln!("no linked device is waiting for this device's certificate");
    }
    for d in certified {
        outln!("certified {}/{d}", client.user_id());
    }
    Ok(())
}

/// `atlas verify`: the safety number with a contact, and `--confirm` to mark it verified.
pub async fn verify(profile_dir: &Path, args: VerifyArgs) -> anyhow::Result<()> {
    let client = open(profile_dir).await?;
    let number = if args.confirm {
        client.confirm_identity(&args.user_id).await?
    } else {
        client.safety_number(&args.user_id).await?
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&number)?);
        return Ok(());
    }
    outln!("safety number with {}:", number.user_id);
    outln!("  {}", number.number);
    if number.changed {
        outln!(
            "!! {}'s identity key changed since it was pinned: compare the number above in person \
             or on a call, then run atlas verify {} --confirm",
            number.user_id,
            number.user_id
        );
    } else if number.verified {
        outln!("verified");
    } else if !args.confirm {
        outln!(
            "compare it with {} out of band, then run atlas verify {} --confirm",
            number.user_id,
            number.user_id
        );
    }
    Ok(())
}
