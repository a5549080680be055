//! `atlas bench connections`: `--connections N` devices each open their push
//! socket and hold it idle (answering the server's pings) for the run; the
//! report gives the server's resident memory before and with them open, per
//! 10,000 sockets, and how many were still open at the end.
use super::device::Socket;
use super::proc_stat::rss_bytes;
use super::report::{Latency, Report, Sockets, mib};
use super::window::Window;
use super::{BenchArgs, Setup};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

/// Sockets being opened at once.
const OPENING_AT_ONCE: usize = 64;

/// Runs the scenario and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let Setup {
        servers, devices, ..
    } = Setup::new(&args).await?;
    let count = args.senders as usize;
    let rss_before = total_rss(&args.server_pid);

    let opening = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let opened = Arc::new(AtomicU64::new(0));
    let mut openers = Vec::with_capacity(count);
    for (i, (device, token)) in devices.into_iter().enumerate() {
        let (servers, opening, opened) = (servers.clone(), opening.clone(), opened.clone());
        openers.push(tokio::spawn(async move {
            let _turn = opening.acquire_owned().await;
            let started = Instant::now();
            let socket = device.open_socket(&servers, servers.home(i), &token).await;
            let took = started.elapsed().as_micros() as u32;
            let n = opened.fetch_add(1, Ordering::Relaxed) + 1;
            if n % 256 == 0 || n as usize == count {
                eprint!("\ropening sockets {n}/{count}   ");
            }
            socket.map(|s| (s, took)).map_err(|e| format!("{e:#}"))
        }));
    }
    let mut sockets = Vec::with_capacity(count);
    let mut open_us = Vec::with_capacity(count);
    let mut errors = BTreeMap::new();
    for opener in openers {
        match opener.await? {
            Ok((socket, took)) => {
                sockets.push(socket);
                open_us.push(took);
            }
            Err(e) => {
                let code = if e.contains("429") {
                    "socket_refused_429"
                } else {
                    "socket_failed"
                };
                *errors.entry(code.to_owned()).or_default() += 1;
            }
        }
    }
    eprintln!();

    let window = Window::new(args.warmup, args.duration);
    let open = Arc::new(AtomicU64::new(sockets.len() as u64));
    let holders: Vec<_> = sockets
        .into_iter()
        .map(|socket| tokio::spawn(hold(socket, window, open.clone())))
        .collect();
    window.watch(&open, "open", &args.server_pid).await;
    let mut still_open = Vec::with_capacity(holders.len());
    for holder in holders {
        still_open.extend(holder.await?);
    }
    // Read while the sockets are still held: the memory they cost.
    let rss_open = total_rss(&args.server_pid);
    let open_at_end = still_open.len() as u64;
    drop(still_open);

    let opened = open_us.len() as u64;
    let per_10k = match (rss_before, rss_open) {
        (Some(before), Some(after)) if opened > 0 => {
            Some(mib(after.saturating_sub(before)) / opened as f64 * 10_000.0)
        }
        _ => None,
    };
    let report = Report {
        latency_ms: Latency::of(open_us),
        errors,
        sockets: Some(Sockets {
            opened,
            open_at_end,
            server_rss_before_mib: rss_before.map(mib),
            server_rss_open_mib: rss_open.map(mib),
            server_mib_per_10k: per_10k,
        }),
        ..Report::new("connections", &servers, &args, 0)
    };
    report.emit(args.json)
}

/// The resident memory of the servers together; `None` unless all can be read.
fn total_rss(pids: &[u32]) -> Option<u64> {
    pids.iter()
        .map(|&pid| rss_bytes(pid))
        .sum::<Option<u64>>()
        .filter(|_| !pids.is_empty())
}

/// Holds a socket until the window ends (pongs go out as frames are read);
/// the socket if it was still open then.
async fn hold(mut socket: Socket, window: Window, open: Arc<AtomicU64>) -> Option<Socket> {
    let end = tokio::time::sleep_until(window.end.into());
    tokio::pin!(end);
    loop {
        tokio::select! {
            frame = socket.next() => match frame {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    open.fetch_sub(1, Ordering::Relaxed);
                    return None;
                }
                Some(Ok(_)) => {}
            },
            () = &mut end => return Some(socket),
        }
    }
}
