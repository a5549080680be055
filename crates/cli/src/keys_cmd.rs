//! `atlas keys …`: this device's key backups, and the server's receipt-signing
//! and access-token keys (admin API, operator token).
use crate::admin::{ServerArgs, percent_encode};
use crate::output::outln;
use atlas_proto::receipt::{RotateSigningRequest, SigningKeysResponse, TokenKeyRotated};
use reqwest::Method;

/// `atlas keys …`.
#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// List the receipt-signing keys: active, retired (published during the overlap), revoked.
    Signing {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Start signing receipts with a new key; the old one stays in the JWKS for the overlap.
    RotateSigning {
        /// How long the previous key stays published: 90s, 30m, 12h, 7d (default: the receipt lifetime).
        #[arg(long, value_parser = parse_duration)]
        overlap: Option<u64>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove a key from the JWKS at once; receipts it signed stop verifying until reissued.
    RevokeSigning {
        /// The key id (`kid`; base64url, so it may start with `-`).
        #[arg(allow_hyphen_values = true)]
        kid: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Rotate the access-token key: every access and refresh token dies at once and
    /// devices re-authenticate with their device keys (clients do so by themselves).
    RotateTokenKey {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Encrypt this device's key state under a recovery passphrase and store it on the server.
    Backup {
        #[command(flatten)]
        passphrase: crate::backup_cmd::PassphraseArgs,
        /// Print the backup's description as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore the newest backup made at or before DATE into this profile (new or existing), then read waiting messages.
    Restore {
        /// Whose backup.
        #[arg(long)]
        user_id: atlas_proto::UserId,
        /// RFC 3339, or YYYY-MM-DD for the end of that day (UTC).
        #[arg(long, value_parser = crate::backup_cmd::parse_date)]
        date: time::OffsetDateTime,
        /// Server URL (needed when the profile is new).
        #[arg(long)]
        server: Option<String>,
        #[command(flatten)]
        passphrase: crate::backup_cmd::PassphraseArgs,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Seconds from `90`, `90s`, `30m`, `12h` or `7d`.
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 7d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?} (use s, m, h or d)")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| "duration too large".into())
}

/// `atlas keys …`.
pub async fn keys(profile_dir: &std::path::Path, cmd: KeysCommand) -> anyhow::Result<()> {
    let (server, answer): (ServerArgs, SigningKeysResponse) = match cmd {
        KeysCommand::Backup { passphrase, json } => {
            return crate::backup_cmd::backup(profile_dir, &passphrase, json).await;
        }
        KeysCommand::Restore {
            user_id,
            date,
            server,
            passphrase,
            json,
        } => {
            return crate::backup_cmd::restore(
                profile_dir,
                &user_id,
                date,
                server,
                &passphrase,
                json,
            )
            .await;
        }
        KeysCommand::RotateTokenKey { server } => {
            let answer: TokenKeyRotated = server
                .client()?
                .call(Method::POST, "/admin/token-key/rotate")
                .await?;
            if server.json {
                outln!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                outln!(
                    "access-token key rotated at {}: {} replaces {}; every outstanding token is dead \
                     ({} refresh tokens revoked); devices re-authenticate with their device keys",
                    answer.rotated_at,
                    answer.kid,
                    answer.previous_kid,
                    answer.refresh_tokens_revoked
                );
            }
            return Ok(());
        }
        KeysCommand::Signing { server } => {
            let answer = server
                .client()?
                .call(Method::GET, "/admin/signing-keys")
                .await?;
            (server, answer)
        }
        KeysCommand::RotateSigning { overlap, server } => {
            let body = RotateSigningRequest {
                overlap_seconds: overlap,
            };
            let answer = server
                .client()?
                .call_with(Method::POST, "/admin/signing-keys/rotate", Some(&body))
                .await?;
            (server, answer)
        }
        KeysCommand::RevokeSigning { kid, server } => {
            let path = format!("/admin/signing-keys/{}/revoke", percent_encode(&kid));
            let answer = server.client()?.call(Method::POST, &path).await?;
            (server, answer)
        }
    };
    if server.json {
        outln!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    for k in &answer.keys {
        let until = match (k.status.as_str(), &k.publish_until, &k.revoked_at) {
            ("retired", Some(until), _) => format!(", published until {until}"),
            ("revoked", _, Some(at)) => format!(", revoked {at}"),
            _ => String::new(),
        };
        outln!(
            "{} {:<8} {} created {}{until}{}",
            k.kid,
            k.status,
            k.alg,
            k.created_at,
            if k.published { " [in JWKS]" } else { "" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1_800));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert!(parse_duration("7w").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
