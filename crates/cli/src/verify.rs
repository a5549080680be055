//! Offline verification tools for operators: `atlas verify-dpop`.
use anyhow::Context;
use atlas_crypto::dpop::IatWindow;
use atlas_crypto::dpop_inspect::{Inspection, inspect_proof};

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

/// Reads `@FILE` arguments; anything else is the value itself.
fn value(arg: &str) -> anyhow::Result<String> {
    match arg.strip_prefix('@') {
        Some(path) => Ok(std::fs::read_to_string(path)
            .with_context(|| format!("reading {path}"))?
            .trim()
            .to_owned()),
        None => Ok(arg.trim().to_owned()),
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
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if let Some(header) = &report.header {
            println!("header: {header}");
        }
        if let Some(claims) = &report.claims {
            println!("claims: {claims}");
        }
        if let Some(jkt) = &report.jkt {
            println!("jkt:    {jkt}");
        }
        for c in &report.checks {
            let mark = match c.ok {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "SKIP",
            };
            println!("{mark} {:<14} {}", c.name, c.detail);
        }
    }
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.ok == Some(false))
        .map(|c| c.name)
        .collect();
    if failed.is_empty() {
        if !args.json {
            println!("result: the proof is valid for what was checked");
        }
        Ok(())
    } else {
        anyhow::bail!("Invalid DPoP proof: failed {}", failed.join(", "))
    }
}
