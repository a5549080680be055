//! Verification tools for operators and users: `atlas verify-dpop` and `atlas verify-receipt`.
use crate::output::outln;
use anyhow::Context;
use atlas_crypto::checks::Check;
use atlas_crypto::dpop::IatWindow;
use atlas_crypto::dpop_inspect::{Inspection, inspect_proof};
use atlas_crypto::receipt::{claims_of, decode_receipt};
use atlas_crypto::receipt_inspect::verify_receipt;

/// Flags of `atlas verify-dpop`.
#[derive(clap::Args)]
pub struct VerifyDpopArgs {
    /// The DPoP proof (the `DPoP` header value), or @FILE.
    #[arg(long)]
    proof: String,
    /// The access token it was sent with (with or without the `DPoP ` prefix), or @FILE.
    #[arg(long)]
    token: Option<String>,
    /// The request method, to check `htm`.
    #[arg(long)]
    method: Option<String>,
    /// The request URL, to check `htu`.
    #[arg(long)]
    url: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Reads `@FILE` and `-` (stdin) arguments; anything else is the value itself.
fn value(arg: &str) -> anyhow::Result<String> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None if arg == "-" => std::io::read_to_string(std::io::stdin()).context("reading stdin")?,
        None => arg.to_owned(),
    };
    Ok(text.trim().to_owned())
}

fn print_checks(checks: &[Check]) {
    for c in checks {
        let mark = match c.ok {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "SKIP",
        };
        outln!("{mark} {:<14} {}", c.name, c.detail);
    }
}

/// Flags of `atlas verify-receipt`.
#[derive(clap::Args)]
pub struct VerifyReceiptArgs {
    /// The receipt: its JSON, base64 of its JSON, @FILE, or - for stdin.
    #[arg(long)]
    receipt: String,
    /// JWKS to verify against: a URL or a file (default: `<iss>/.well-known/jwks.json` from the receipt).
    #[arg(long)]
    jwks: Option<String>,
    /// Verify as of this time (RFC 3339) instead of now, e.g. to ask whether it was valid then.
    #[arg(long)]
    at: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Where the JWKS comes from: the flag, else the issuer the receipt names (read unverified,
/// which is safe: a forged issuer can only point at keys that fail the signature check).
fn jwks_source(flag: Option<String>, receipt: &str) -> anyhow::Result<String> {
    if let Some(source) = flag {
        return Ok(source);
    }
    let (jws, _) = decode_receipt(receipt).context("Invalid receipt")?;
    let claims = claims_of(&jws).context("Invalid receipt")?;
    Ok(format!(
        "{}/.well-known/jwks.json",
        claims.iss.trim_end_matches('/')
    ))
}

pub(crate) async fn load_jwks(source: &str) -> anyhow::Result<serde_json::Value> {
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        let response = atlas_client::http_client()?
            .get(source)
            .send()
            .await
            .with_context(|| format!("fetching JWKS {source}"))?;
        anyhow::ensure!(
            response.status().is_success(),
            "fetching JWKS {source}: HTTP {}",
            response.status()
        );
        response.text().await?
    } else {
        std::fs::read_to_string(source).with_context(|| format!("reading JWKS {source}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("JWKS {source} is not JSON"))
}

/// `atlas verify-receipt`: prints every check; fails with the first failed one's reason.
pub async fn verify_receipt_cmd(args: VerifyReceiptArgs) -> anyhow::Result<()> {
    let receipt = value(&args.receipt)?;
    let now = match &args.at {
        Some(at) => atlas_proto::timestamp::parse_rfc3339(at)
            .with_context(|| format!("--at {at} is not RFC 3339"))?,
        None => time::OffsetDateTime::now_utc(),
    };
    let report = match jwks_source(args.jwks, &receipt) {
        Ok(source) => {
            let jwks = load_jwks(&source).await?;
            if !args.json {
                outln!("jwks:   {source}");
            }
            verify_receipt(&receipt, &jwks, now.unix_timestamp())
        }
        // Undecodable: the report says why, without a JWKS.
        Err(_) => verify_receipt(
            &receipt,
            &serde_json::json!({"keys": []}),
            now.unix_timestamp(),
        ),
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if let Some(kid) = &report.kid {
            outln!("kid:    {kid}");
        }
        if let Some(claims) = &report.claims {
            outln!("claims: {}", serde_json::to_string(claims)?);
        }
        print_checks(&report.checks);
    }
    match report.failure() {
        None => {
            if !args.json {
                outln!("result: the receipt is valid");
            }
            Ok(())
        }
        Some(reason) => anyhow::bail!("Invalid receipt: {reason}"),
    }
}

/// `atlas verify-dpop`: prints every check; fails when one fails.
pub fn verify_dpop(args: VerifyDpopArgs) -> anyhow::Result<()> {
    let proof = value(&args.proof)?;
    let token = args.token.as_deref().map(value).transpose()?;
    let token = token
        .as_deref()
        .map(|t| t.strip_prefix("DPoP ").unwrap_or(t));
    let method = args.method.map(|m| m.to_ascii_uppercase());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let report = inspect_proof(
        &proof,
        &Inspection {
            token,
            method: method.as_deref(),
            url: args.url.as_deref(),
            now,
            window: IatWindow::default(),
        },
    );
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if let Some(header) = &report.header {
            outln!("header: {header}");
        }
        if let Some(claims) = &report.claims {
            outln!("claims: {claims}");
        }
        if let Some(jkt) = &report.jkt {
            outln!("jkt:    {jkt}");
        }
        print_checks(&report.checks);
    }
    let failed = atlas_crypto::checks::failed(&report.checks);
    if failed.is_empty() {
        if !args.json {
            outln!("result: the proof is valid for what was checked");
        }
        Ok(())
    } else {
        anyhow::bail!("Invalid DPoP proof: failed {}", failed.join(", "))
    }
}
