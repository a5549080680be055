//! `atlas dpop …`: the device's side of the runbook's DPoP checks (a fresh
//! proof and its token for a `curl` by hand; a new DPoP key pair) and the
//! server's replay cache (operators).
use crate::admin::{self, JtiCommand};
use crate::output::outln;
use crate::profile::open;
use std::path::Path;

/// `atlas dpop …`.
#[derive(clap::Subcommand)]
pub enum DpopCommand {
    /// Print a fresh DPoP proof for one request and the access token bound to
    /// it, as the two headers of the runbook's `curl` check.
    Proof {
        /// The request's method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// The request's URL, as the server's public URL names it (the proof's `htu`).
        #[arg(long)]
        url: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Regenerate this device's DPoP key pair and bind a new access token to
    /// it (the old key is erased: tokens bound to it are of no use).
    RotateKey {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The server's DPoP replay cache (`dpop:jti:<JTI>`; admin API, operator token).
    #[command(subcommand)]
    Jti(JtiCommand),
}

/// `atlas dpop …`.
pub async fn dpop(profile_dir: &Path, cmd: DpopCommand) -> anyhow::Result<()> {
    match cmd {
        DpopCommand::Proof { method, url, json } => {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                anyhow::bail!(
                    "--url must be an absolute http(s) URL, e.g. https://api.atlas.dev/messages"
                );
            }
            let client = open(profile_dir).await?;
            let (proof, token) = client.dpop_proof(&method, &url).await?;
            if json {
                // The runbook's `echo '<DPOP_HEADER>' | base64 -d | jq .` needs
                // standard, padded base64; a proof's parts are base64url.
                let header = proof
                    .split('.')
                    .next()
                    .and_then(|h| atlas_proto::b64::decode(h).ok())
                    .map(atlas_proto::b64::encode_std);
                let out = serde_json::json!({
                    "htm": method.to_ascii_uppercase(),
                    "htu": url,
                    "proof": proof,
                    "access_token": token,
                    "header_base64": header,
                });
                outln!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                outln!("DPoP: {proof}");
                outln!("Authorization: DPoP {token}");
            }
        }
        DpopCommand::RotateKey { json } => {
            let client = open(profile_dir).await?;
            let jkt = client.rotate_dpop_key().await?;
            if json {
                outln!("{}", serde_json::json!({ "jkt": jkt }));
            } else {
                outln!("new DPoP key {jkt}; a new access token is bound to it");
            }
        }
        DpopCommand::Jti(cmd) => admin::jti(cmd).await?,
    }
    Ok(())
}
