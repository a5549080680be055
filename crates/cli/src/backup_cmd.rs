//! `atlas keys backup` and `atlas keys restore` (the runbook's
//! `restore-user-keys --user-id --date`): the device's key state, encrypted
//! on this machine under a recovery passphrase.
use crate::output::outln;
use anyhow::{Context, bail};
use atlas_client::Client;
use atlas_proto::UserId;
use std::path::{Path, PathBuf};
use time::{Date, OffsetDateTime, Time};

/// Where the recovery passphrase comes from: `--passphrase-file`,
/// `ATLAS_BACKUP_PASSPHRASE`, or a prompt.
#[derive(clap::Args)]
pub struct PassphraseArgs {
    /// Read the passphrase from the first line of FILE.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

impl PassphraseArgs {
    fn read(&self, confirm: bool) -> anyhow::Result<Vec<u8>> {
        if let Some(file) = &self.passphrase_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            return Ok(text.lines().next().unwrap_or_default().as_bytes().to_vec());
        }
        if let Ok(text) = std::env::var("ATLAS_BACKUP_PASSPHRASE") {
            return Ok(text.into_bytes());
        }
        let first = rpassword::prompt_password("Recovery passphrase: ").context(
            "no passphrase: use --passphrase-file, ATLAS_BACKUP_PASSPHRASE or a terminal",
        )?;
        if confirm && rpassword::prompt_password("Repeat it: ")? != first {
            bail!("the passphrases differ");
        }
        Ok(first.into_bytes())
    }
}

/// `--date`: RFC 3339, or `YYYY-MM-DD` meaning the end of that day (UTC).
pub fn parse_date(text: &str) -> Result<OffsetDateTime, String> {
    if let Ok(at) = atlas_proto::timestamp::parse_rfc3339(text) {
        return Ok(at);
    }
    let day = Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| format!("{text:?} is neither RFC 3339 nor YYYY-MM-DD"))?;
    Ok(day.with_time(Time::MAX).assume_utc())
}

/// `atlas keys backup`.
pub async fn backup(
    profile_dir: &Path,
    passphrase: &PassphraseArgs,
    json: bool,
) -> anyhow::Result<()> {
    let client = Client::open(profile_dir).await?;
    let secret = passphrase.read(true)?;
    eprintln!("deriving the backup key (Argon2id) and encrypting …");
    let info = client.keys().backup(&secret).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        outln!(
            "{} (version {}, {} bytes) stored on {}; restore with: atlas keys restore --user-id {} --date {}",
            info.backup_id,
            info.version,
            info.size,
            client.server(),
            info.user_id,
            info.created_at
        );
    }
    Ok(())
}

/// `atlas keys restore`.
pub async fn restore(
    profile_dir: &Path,
    user_id: &UserId,
    at: OffsetDateTime,
    server: Option<String>,
    passphrase: &PassphraseArgs,
    json: bool,
) -> anyhow::Result<()> {
    let server = match server {
        Some(server) => server,
        None => Client::open(profile_dir)
            .await
            .map(|c| c.server().to_owned())
            .context("this profile is not registered: pass --server")?,
    };
    let secret = passphrase.read(false)?;
    eprintln!("fetching the newest backup of {user_id} at or before {at} …");
    let (client, restored) =
        Client::restore_keys(profile_dir, &server, user_id, at, &secret).await?;
    let received = client.messages().sync().await?;
    if json {
        let out = serde_json::json!({ "restored": restored, "device_id": client.device_id(), "received": received });
        outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        outln!(
            "restored {} (version {}, made {} on device {}): {} sessions; {} messages read",
            restored.backup.backup_id,
            restored.backup.version,
            restored.backup.created_at,
            restored.backup.device_id,
            restored.sessions,
            received.len()
        );
        for r in received {
            match (r.text, r.error) {
                (Some(text), _) => outln!("{}: {text}", r.sender_id),
                (None, Some(error)) => outln!("{}: <unable to decrypt: {error}>", r.sender_id),
                (None, None) => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_date;

    #[test]
    fn dates() {
        let day = parse_date("2026-11-22").unwrap();
        assert_eq!((day.hour(), day.minute(), day.second()), (23, 59, 59));
        let exact = parse_date("2026-11-22T10:00:00Z").unwrap();
        assert_eq!(exact.hour(), 10);
        assert!(parse_date("22/11/2026").is_err());
        assert!(parse_date("2026-13-01").is_err());
    }
}
