//! `atlas`: runs the server, acts as a client device, and carries the operator procedures.
#![forbid(unsafe_code)]

mod admin;
mod audit_cmd;
mod backup_cmd;
mod bench;
mod client_cmd;
mod db_cmd;
mod diagnose_cmd;
mod dpop_cmd;
mod dr_cmd;
mod dr_restore;
mod emergency_cmd;
mod group_cmd;
mod identity_cmd;
mod incident_cmd;
mod keys_cmd;
mod mls_cmd;
mod output;
mod profile;
mod recovery;
mod serve;
mod verify;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Atlas: end-to-end-encrypted messaging.
#[derive(Parser)]
#[command(name = "atlas", version, about, propagate_version = true)]
struct Cli {
    /// Client profile (one device) to act as.
    #[arg(long, global = true, default_value = "default", env = "ATLAS_PROFILE")]
    profile: String,
    /// Where client profiles live (default: the user's data dir, e.g. ~/.local/share/atlas).
    #[arg(long, global = true, env = "ATLAS_HOME")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the delivery server.
    Serve(Box<serve::ServeArgs>),
    /// Register this profile as a new user (or, with --link-code, as a new device of a user).
    Register(client_cmd::RegisterArgs),
    /// Send an end-to-end-encrypted text message.
    Send(client_cmd::SendArgs),
    /// Fetch, decrypt, print and acknowledge new messages.
    Inbox(client_cmd::InboxArgs),
    /// List a user's devices and their key status.
    Devices(identity_cmd::DevicesArgs),
    /// Manage this user's devices: link a new one, approve, remove.
    #[command(subcommand)]
    Device(identity_cmd::DeviceCommand),
    /// Show the safety number with a contact; --confirm marks its identity key verified.
    Verify(identity_cmd::VerifyArgs),
    /// Show this profile's user, device and server.
    Whoami,
    /// MLS groups: create, add, remove, send, update, members.
    #[command(subcommand)]
    Group(group_cmd::GroupCommand),
    /// The signed receipts of a message (with --reissue: signed again with the current key).
    Receipt(client_cmd::ReceiptArgs),
    /// The server's receipt-signing keys: list, rotate, revoke (admin API, operator token).
    #[command(subcommand)]
    Keys(keys_cmd::KeysCommand),
    /// Operator administration on the server host (operator tokens).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// MLS recovery: show a group, send-update, rejoin-member (admin API, operator token).
    #[command(subcommand)]
    Mls(mls_cmd::MlsCommand),
    /// Walk the runbook's diagnosis flow for a message, user or group; --apply starts the recovery.
    #[command(subcommand)]
    Diagnose(diagnose_cmd::DiagnoseCommand),
    /// DPoP by hand: a proof and token of this device, a new DPoP key, the server's replay cache.
    #[command(subcommand)]
    Dpop(dpop_cmd::DpopCommand),
    /// Dissect a DPoP proof: signature, key thumbprint vs the token's cnf.jkt, ath, htm/htu, iat.
    VerifyDpop(verify::VerifyDpopArgs),
    /// Verify a signed receipt: structure, kid in the JWKS, signature, timestamps, expiry.
    VerifyReceipt(verify::VerifyReceiptArgs),
    /// Incidents: declare, update, assign, note, list, show, close (admin API, operator token).
    #[command(subcommand)]
    Incident(incident_cmd::IncidentCommand),
    /// The database schema: applied migrations and which binaries can serve it.
    #[command(subcommand)]
    Db(db_cmd::DbCommand),
    /// Emergency actions: lock the server down, lift the lockdown (admin API, scope emergency).
    #[command(subcommand)]
    Emergency(emergency_cmd::EmergencyCommand),
    /// Disaster recovery: encrypted, signed backups, proven restorable (host side).
    #[command(subcommand)]
    Dr(dr_cmd::DrCommand),
    /// The audit log: list entries, verify its seals and signed checkpoints.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// The post-recovery checklist (seed 004 §4.2) against a running server:
    /// each line PASS, FAIL or SKIP with its evidence.
    VerifyRecovery(Box<recovery::VerifyRecoveryArgs>),
    /// Load a running server and measure it: throughput, latency, errors, server CPU and memory.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn home(cli_home: Option<PathBuf>) -> PathBuf {
    cli_home.unwrap_or_else(|| {
        dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("atlas")
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ATLAS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let json_logs = matches!(&cli.command, Command::Serve(args) if args.log_json);
    // The server keeps its recent log lines for the emergency evidence bundle.
    let ring = matches!(cli.command, Command::Serve(_)).then_some(atlas_server::evidence::LogRing);
    let logs = tracing_subscriber::registry().with(filter).with(ring);
    if json_logs {
        logs.with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr),
        )
        .init();
    } else {
        logs.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init();
    }
    let profile_dir = home(cli.home).join("profiles").join(&cli.profile);
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Register(args) => client_cmd::register(&profile_dir, args).await,
        Command::Send(args) => client_cmd::send(&profile_dir, args).await,
        Command::Inbox(args) => client_cmd::inbox(&profile_dir, args).await,
        Command::Devices(args) => identity_cmd::devices(&profile_dir, args).await,
        Command::Device(cmd) => identity_cmd::device(&profile_dir, cmd).await,
        Command::Verify(args) => identity_cmd::verify(&profile_dir, args).await,
        Command::Whoami => client_cmd::whoami(&profile_dir).await,
        Command::Group(cmd) => group_cmd::group(&profile_dir, cmd).await,
        Command::Receipt(args) => client_cmd::receipt(&profile_dir, args).await,
        Command::Keys(cmd) => keys_cmd::keys(&profile_dir, cmd).await,
        Command::VerifyDpop(args) => verify::verify_dpop(args),
        Command::VerifyReceipt(args) => verify::verify_receipt_cmd(args).await,
        Command::Bench(cmd) => bench::bench(cmd).await,
        Command::Admin(cmd) => admin::admin(cmd).await,
        Command::Dpop(cmd) => dpop_cmd::dpop(&profile_dir, cmd).await,
        Command::Mls(cmd) => mls_cmd::mls(cmd).await,
        Command::Diagnose(cmd) => diagnose_cmd::diagnose(cmd).await,
        Command::Incident(cmd) => incident_cmd::incident(cmd).await,
        Command::Audit(cmd) => audit_cmd::audit(cmd).await,
        Command::Db(cmd) => db_cmd::db(cmd).await,
        Command::Emergency(cmd) => emergency_cmd::emergency(cmd).await,
        Command::Dr(cmd) => dr_cmd::dr(cmd).await,
        Command::VerifyRecovery(args) => recovery::verify_recovery(*args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
