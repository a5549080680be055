//! `atlas bench`: a load generator in a process of its own, against any
//! running server, so the server's cost is measured apart from the client's.
//! It registers its own users (a unique prefix), warms up, then measures.
mod connections;
mod conversation;
mod device;
mod dr;
mod groups;
mod proc_stat;
mod report;
mod send;
mod servers;
mod verify;
mod window;

use crate::keys_cmd::parse_duration;
use device::BenchDevice;
use servers::Servers;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Scenarios of `atlas bench`.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// 1:1 sends, a fresh DPoP proof each, every sender to another sender.
    Send(BenchArgs),
    /// 1:1 sends to online devices: send → WebSocket push latency, and every
    /// recipient acknowledges what it got (delivered receipts), as clients do.
    Conversation(BenchArgs),
    /// MLS groups of --group-size full clients sending messages and now and
    /// then a key update: send → decrypted-by-each-member (fan-out) latency.
    Groups(groups::GroupsArgs),
    /// Idle authenticated WebSockets held open: the server's memory per 10,000.
    Connections(BenchArgs),
    /// Recovery objectives: back up, verify and restore a scratch database of
    /// --messages messages (no server needed).
    Dr(dr::DrArgs),
}

/// Flags of every scenario.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// The server to load; repeat it (or separate with commas) for the replicas
    /// of one deployment: devices are spread over them and move to the next
    /// when theirs stops answering.
    #[arg(
        long = "server",
        env = "ATLAS_SERVER",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080"
    )]
    server: Vec<String>,
    /// The URL the servers know themselves by (their `serve --public-url`),
    /// when it is not the address loaded: replicas behind one name.
    #[arg(long)]
    public_url: Option<String>,
    /// Devices taking part, each a user of its own (`connections`: one socket each).
    #[arg(long, visible_alias = "connections", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=20_000))]
    senders: u32,
    /// Measured time, after the warm-up: 30s, 2m …
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: u64,
    /// Unmeasured time first, so connections and caches are warm.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: u64,
    /// Sends per second in all, paced evenly (default: as fast as answers come).
    #[arg(long, value_parser = positive_rate, allow_negative_numbers = true)]
    rate: Option<f64>,
    /// The server's process id: report its CPU per message and memory (Linux
    /// /proc). Repeat it for replicas: their CPU is summed, the peak memory is the highest.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Ciphertext bytes per send.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(24..=65_536))]
    body_bytes: u32,
    /// `send`: after the run, check that every answered send is in its
    /// recipient's queue exactly once, with its receipt; exit 1 when not.
    #[arg(long)]
    verify: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

impl BenchArgs {
    /// The servers to load, checked.
    fn servers(&self) -> anyhow::Result<Servers> {
        Servers::new(&self.server, self.public_url.as_deref())
    }

    /// Each sender's pace when `--rate` asks for one: the rate shared by `--senders`.
    fn interval(&self) -> Option<std::time::Duration> {
        self.rate
            .map(|r| std::time::Duration::from_secs_f64(f64::from(self.senders) / r))
    }
}

/// A `--rate`: sends per second, more than none.
fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a rate above 0 (sends per second)")),
    }
}

/// `atlas bench …`.
pub async fn bench(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Send(args) => send::run(args).await,
        BenchCommand::Conversation(args) => conversation::run(args).await,
        BenchCommand::Groups(args) => groups::run(args).await,
        BenchCommand::Connections(args) => connections::run(args).await,
        BenchCommand::Dr(args) => dr::run(args).await,
    }
}

/// Six hex characters, so each run's users are new.
fn hex_prefix() -> String {
    atlas_crypto::random_bytes::<3>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What every scenario starts from: the servers, an HTTP client, this run's
/// user prefix and its `--senders` devices, registered, with their tokens.
struct Setup {
    servers: Arc<Servers>,
    http: reqwest::Client,
    prefix: String,
    devices: Vec<(BenchDevice, String)>,
}

impl Setup {
    /// Registers the run's devices, each at its home replica.
    async fn new(args: &BenchArgs) -> anyhow::Result<Self> {
        let servers = Arc::new(args.servers()?);
        let http = atlas_client::http_client()?;
        let prefix = format!("bench-{}", hex_prefix());
        let devices = register_all(&http, &servers, &prefix, args.senders as usize).await?;
        Ok(Self {
            servers,
            http,
            prefix,
            devices,
        })
    }
}

/// Says the bench waits out a server limit, and which `serve` flag raises it.
fn waiting(what: &str, flag: &str, secs: u64) {
    eprint!(
        "\rregistering: the server's per-address limit on {what}, waiting {secs} s (serve {flag} raises it)   "
    );
}

/// Registrations (and token requests) in flight at once.
const REGISTERING_AT_ONCE: usize = 16;

/// Registers `count` users `PREFIX-0…` with one device each and fetches their
/// tokens, a few at a time, with a progress line; in index order.
async fn register_all(
    http: &reqwest::Client,
    servers: &Arc<Servers>,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<(BenchDevice, String)>> {
    let done = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..REGISTERING_AT_ONCE.min(count) {
        let (http, servers, prefix) = (http.clone(), servers.clone(), prefix.to_owned());
        let (done, next) = (done.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(mine);
                }
                let user = format!("{prefix}-{i}");
                let home = servers.home(i);
                let device = BenchDevice::register(&http, servers.url(home), &user, |wait| {
                    waiting("registrations", "--registrations-per-minute", wait)
                })
                .await?;
                let token = device
                    .token(&http, &servers, home, |wait| {
                        waiting("tokens", "--tokens-per-minute", wait)
                    })
                    .await?;
                mine.push((i, device, token));
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 16 == 0 || n == count {
                    eprint!("\rregistering {n}/{count}{}", " ".repeat(60));
                }
            }
        }));
    }
    let mut all = Vec::with_capacity(count);
    for worker in workers {
        all.extend(worker.await??);
    }
    eprintln!();
    all.sort_by_key(|(i, _, _)| *i);
    Ok(all.into_iter().map(|(_, d, t)| (d, t)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_must_be_positive_numbers() {
        assert_eq!(positive_rate("2000"), Ok(2000.0));
        assert_eq!(positive_rate("0.5"), Ok(0.5));
        for bad in ["0", "-5", "NaN", "inf", "fast"] {
            assert!(positive_rate(bad).is_err(), "{bad}");
        }
    }
}
