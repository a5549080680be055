//! `atlas bench`: a load generator in a process of its own, against any
//! running server, so the server's cost is measured apart from the client's.
//! It registers its own users (a unique prefix), warms up, then measures.
mod device;
mod proc_stat;
mod report;
mod send;

use crate::keys_cmd::parse_duration;

/// Scenarios of `atlas bench`.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// 1:1 sends, a fresh DPoP proof each, every sender to another sender.
    Send(SendArgs),
}

/// Flags of `atlas bench send`.
#[derive(clap::Args)]
pub struct SendArgs {
    /// The server to load.
    #[arg(long, env = "ATLAS_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Concurrent sending devices (each a user of its own).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
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
    /// The server's process id: report its CPU per message and peak RSS (Linux /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Ciphertext bytes per send.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(4..=65_536))]
    body_bytes: u32,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
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
    }
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
