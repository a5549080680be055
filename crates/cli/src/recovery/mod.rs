//! `atlas verify-recovery` (seed 004 §4.2): the post-recovery checklist as
//! code. Every line is PASS, FAIL or SKIP with its evidence; any FAIL makes
//! the command exit non-zero.
//!
//! Order matters: the server's facts (row counts, audit log) are read before
//! the probes run, so the probes' own rows and admin acts are not mistaken for
//! the restored data or for intrusions.
mod data;
mod perf;
mod probes;

use crate::admin::ServerArgs;
use crate::output::outln;
use anyhow::Context;
use atlas_dr::verify::{Check, Outcome};
use atlas_proto::recovery::{FactsRequest, RecoveryFacts};
use reqwest::Method;
use serde::Serialize;
use std::path::PathBuf;

/// `atlas verify-recovery`.
#[derive(clap::Args)]
pub struct VerifyRecoveryArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The backup that was restored: its signed manifest is what the data is checked against.
    #[arg(long, requires = "from")]
    backup: Option<String>,
    /// Where that backup is: a directory or s3://BUCKET/PREFIX (used with --backup).
    #[arg(long, env = "ATLAS_DR_LOCATION")]
    from: Option<String>,
    /// Performance figures saved with --save-baseline before the incident.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Save this run's performance figures as the baseline for later runs.
    #[arg(long)]
    save_baseline: Option<PathBuf>,
    /// Where the server's metrics are (default: SERVER/metrics).
    #[arg(long)]
    metrics_url: Option<String>,
    /// Seconds each probe step may take.
    #[arg(long, default_value_t = 20)]
    probe_timeout: u64,
}

/// A line of the checklist, under its section of the runbook.
#[derive(Debug, Serialize)]
pub(crate) struct Line {
    section: &'static str,
    #[serde(flatten)]
    check: Check,
}

/// The lines so far.
#[derive(Default)]
pub(crate) struct Checklist(Vec<Line>);

impl Checklist {
    /// Adds a line.
    pub(crate) fn add(
        &mut self,
        section: &'static str,
        name: &str,
        outcome: Outcome,
        detail: impl Into<String>,
    ) {
        self.0.push(Line {
            section,
            check: Check {
                name: name.into(),
                outcome,
                detail: detail.into(),
            },
        });
    }

    /// PASS when `ok`, else FAIL.
    pub(crate) fn check(
        &mut self,
        section: &'static str,
        name: &str,
        ok: bool,
        detail: impl Into<String>,
    ) {
        let outcome = if ok { Outcome::Pass } else { Outcome::Fail };
        self.add(section, name, outcome, detail);
    }
}

/// Section titles, as the runbook's checklist has them.
pub(crate) const CORE: &str = "Core functions";
pub(crate) const DATA: &str = "Data integrity";
pub(crate) const SECURITY: &str = "Security";
pub(crate) const PERFORMANCE: &str = "Performance";

/// `atlas verify-recovery …`.
pub async fn verify_recovery(args: VerifyRecoveryArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let server = args.server.server.trim_end_matches('/').to_owned();
    let published: atlas_proto::audit::CheckpointView = atlas_client::http_client()?
        .get(format!("{server}/.well-known/atlas/audit-checkpoint"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("reaching {server}"))?
        .json()
        .await
        .context("the audit checkpoint answer is not JSON")?;
    let mut list = Checklist::default();
    let manifest = match (&args.backup, &args.from) {
        (Some(name), Some(from)) => {
            let location = atlas_dr::location::parse(from)?;
            // The manifest must be signed by the audit key the server publishes.
            match atlas_dr::verify::fetch_manifest(location.as_ref(), name, Some(&published.key))
                .await
            {
                Ok(m) => Some(m),
                Err(why) => {
                    list.add(DATA, "backup manifest", Outcome::Fail, why);
                    None
                }
            }
        }
        _ => None,
    };
    let request = FactsRequest {
        since: manifest.as_ref().and_then(|m| {
            atlas_proto::timestamp::parse_rfc3339(&m.created_at)
                .ok()
                .map(Into::into)
        }),
        message_sample: manifest
            .as_ref()
            .map(|m| m.message_sample.clone())
            .unwrap_or_default(),
        audit_checkpoint: manifest
            .as_ref()
            .and_then(|m| m.audit.as_ref().map(|a| a.checkpoint.clone())),
    };
    let facts: RecoveryFacts = client
        .call_with(Method::POST, "/admin/recovery/facts", Some(&request))
        .await
        .context("reading the server's recovery facts (the token needs scope recovery)")?;
    let since = request.since;
    let audit_entries = data::audit_since(&client, since.as_ref()).await;

    let jwks = crate::verify::load_jwks(&format!("{server}/.well-known/jwks.json")).await;
    let timeout = std::time::Duration::from_secs(args.probe_timeout);
    probes::run(&mut list, &server, &client, jwks.as_ref().ok(), timeout).await;
    data::integrity(&mut list, manifest.as_ref(), &facts, jwks.as_ref().ok());
    data::security(&mut list, &facts, since.as_ref(), audit_entries);
    let metrics_url = args
        .metrics_url
        .clone()
        .unwrap_or_else(|| format!("{server}/metrics"));
    let figures = perf::measure(&mut list, &metrics_url, args.baseline.as_deref()).await;
    if let (Some(path), Some(figures)) = (&args.save_baseline, &figures) {
        std::fs::write(path, serde_json::to_vec_pretty(figures)?)
            .with_context(|| format!("writing the baseline {}", path.display()))?;
    }
    print(&list, args.server.json)?;
    let failed = list
        .0
        .iter()
        .filter(|l| l.check.outcome == Outcome::Fail)
        .count();
    anyhow::ensure!(
        failed == 0,
        "{failed} check(s) failed: the recovery is not complete"
    );
    Ok(())
}

fn print(list: &Checklist, json: bool) -> anyhow::Result<()> {
    let mut lines: Vec<&Line> = list.0.iter().collect();
    let order = [CORE, DATA, SECURITY, PERFORMANCE];
    lines.sort_by_key(|l| order.iter().position(|s| *s == l.section));
    if json {
        let passed = lines.iter().all(|l| l.check.outcome != Outcome::Fail);
        let out = serde_json::json!({ "passed": passed, "checks": lines });
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mut section = "";
    for line in &lines {
        if line.section != section {
            section = line.section;
            outln!("{section}:");
        }
        outln!(
            "  [{}] {}: {}",
            line.check.outcome.as_str(),
            line.check.name,
            line.check.detail
        );
    }
    let count = |o: Outcome| lines.iter().filter(|l| l.check.outcome == o).count();
    outln!(
        "{} passed, {} failed, {} skipped",
        count(Outcome::Pass),
        count(Outcome::Fail),
        count(Outcome::Skip)
    );
    Ok(())
}
