//! `atlas bench groups`: MLS groups of `--group-size` members, each member a
//! full client (its own profile, MLS state and push socket) of a user of its
//! own. Members send application messages carrying their send time; of each
//! member's sends, every `--commit-every`th is a key update instead (a commit:
//! a new epoch that every member processes). A member reads its pushes as
//! real clients do: a nudge makes it sync the group's log (fetch, decrypt,
//! acknowledge its epoch, report outcomes). Fan-out latency is send →
//! decrypted, once per message and receiving member.
use super::conversation::{GRACE, Tally, sent_at, stamped_body};
use super::report::{GroupsRun, Latency, Report};
use super::window::{Pacer, Window};
use super::{BenchArgs, Servers, hex_prefix};
use anyhow::{Context, bail};
use atlas_client::{Client, ClientError, GroupReceived, PushSocket};
use atlas_proto::UserId;
use atlas_proto::api::PushEvent;
use futures_util::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Flags of `atlas bench groups`.
#[derive(clap::Args)]
pub struct GroupsArgs {
    #[command(flatten)]
    common: BenchArgs,
    /// Members per group; --senders is split into groups of this size.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(2..=100))]
    group_size: u32,
    /// Of each member's sends, every this-many-th is a key update (an MLS
    /// commit, a new epoch) instead of a message; 0 for none.
    #[arg(long, default_value_t = 50)]
    commit_every: u64,
}

/// Profiles of the run's clients, removed when the run ends.
struct Profiles(PathBuf);

impl Drop for Profiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the scenario and prints its report.
pub async fn run(args: GroupsArgs) -> anyhow::Result<()> {
    let GroupsArgs {
        common: args,
        group_size,
        commit_every,
    } = args;
    if args.senders % group_size != 0 {
        bail!(
            "--senders {} is not a multiple of --group-size {group_size}",
            args.senders
        );
    }
    if args.public_url.is_some() {
        bail!(
            "groups: --public-url is not supported (its clients name the address they connect to)"
        );
    }
    let servers = Arc::new(args.servers()?);
    let prefix = format!("bench-{}", hex_prefix());
    let profiles = Profiles(std::env::temp_dir().join(format!("atlas-{prefix}")));
    let clients = register_all(&servers, &profiles.0, &prefix, args.senders as usize).await?;
    let groups = form_groups(&prefix, clients, group_size as usize).await?;

    let window = Window::new(args.warmup, args.duration);
    let interval = args.interval();
    let read = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(args.senders as usize);
    let size = u64::from(group_size);
    for (name, members) in groups {
        for (i, (client, socket)) in (0..).zip(members) {
            let member = Member {
                client,
                group: name.clone(),
                // Spread over the group's members: were their turns at once,
                // every commit would race all the others of its group.
                commit_turn: commit_every * i / size,
                window,
                read: read.clone(),
                tally: Tally::default(),
            };
            let bytes = args.body_bytes as usize;
            tasks.push(tokio::spawn(member.run(
                socket,
                interval,
                commit_every,
                bytes,
            )));
        }
    }
    let cpu = window.watch(&read, "decrypted", &args.server_pid).await;

    let mut all = Tally::default();
    for task in tasks {
        all.add(task.await?);
    }
    drop(profiles);
    let messages = all.send_us.len() as u64;
    let (server_cpu, client_cpu) = cpu.per(messages);
    let report = Report {
        latency_ms: Latency::of(all.send_us),
        push_latency_ms: Some(Latency::of(all.push_us)),
        groups: Some(GroupsRun {
            groups: args.senders / group_size,
            group_size,
            commits: all.commits,
            decrypted: all.acknowledged,
        }),
        errors: all.errors,
        server_cpu_us_per_message: server_cpu,
        client_cpu_us_per_message: client_cpu,
        ..Report::new("groups", &servers, &args, messages)
    };
    report.emit(args.json)
}

/// Registrations in flight at once.
const REGISTERING_AT_ONCE: usize = 16;

/// Registers `count` clients, each a new user with one device and a profile
/// under `dir`, at its home replica, a few at a time; a registration refused
/// by the server's per-address limit is retried after a pause as a new user.
async fn register_all(
    servers: &Arc<Servers>,
    dir: &Path,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<Client>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..REGISTERING_AT_ONCE.min(count) {
        let (servers, dir, prefix, next) = (
            servers.clone(),
            dir.to_owned(),
            prefix.to_owned(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(mine);
                }
                let server = servers.url(servers.home(i));
                mine.push((i, register(server, &dir, &prefix, i).await?));
                if (i + 1) % 16 == 0 {
                    eprint!("\rregistering {}/{count}{}", i + 1, " ".repeat(40));
                }
            }
        }));
    }
    let mut all = Vec::with_capacity(count);
    for worker in workers {
        all.extend(worker.await??);
    }
    eprintln!();
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, c)| c).collect())
}

/// Registers client `i`; after a 429 (which may come from any request of
/// the registration) it waits and starts again as a new user.
async fn register(server: &str, dir: &Path, prefix: &str, i: usize) -> anyhow::Result<Client> {
    let mut attempt = 0;
    loop {
        let user = UserId::new(format!("{prefix}-{i}-{attempt}"))?;
        let profile = dir.join(user.as_str());
        std::fs::create_dir_all(&profile)
            .with_context(|| format!("creating {}", profile.display()))?;
        match Client::register(&profile, server, user, None).await {
            Ok(client) => return Ok(client),
            Err(ClientError::Api { status: 429, .. }) => {
                eprint!(
                    "\rregistering: a per-address limit of the server, waiting 5 s (serve --registrations-per-minute / --tokens-per-minute raise it)   "
                );
                tokio::time::sleep(Duration::from_secs(5)).await;
                attempt += 1;
            }
            Err(e) => return Err(e).with_context(|| format!("registering client {i}")),
        }
    }
}

/// A group's name and its members, each with its push socket.
type Group = (String, Vec<(Client, PushSocket)>);

/// Splits `clients` into groups of `size`: the first member of each creates
/// it and adds the others, who join from their Welcomes and open their sockets.
async fn form_groups(
    prefix: &str,
    clients: Vec<Client>,
    size: usize,
) -> anyhow::Result<Vec<Group>> {
    let mut clients = clients.into_iter();
    let mut forming = Vec::new();
    for g in 0.. {
        let members: Vec<Client> = clients.by_ref().take(size).collect();
        if members.is_empty() {
            break;
        }
        let name = format!("{prefix}-g{g}");
        forming.push(tokio::spawn(async move {
            let creator = &members[0];
            creator.groups().create(&name).await?;
            for m in &members[1..] {
                creator.groups().add(&name, m.user_id()).await?;
            }
            let mut ready = Vec::with_capacity(members.len());
            for (i, m) in members.into_iter().enumerate() {
                if i > 0 {
                    m.groups().accept_welcomes().await?;
                    m.groups().sync(&name).await?;
                }
                let socket = m.push_socket().await?;
                ready.push((m, socket));
            }
            anyhow::Ok((name, ready))
        }));
    }
    let mut groups = Vec::with_capacity(forming.len());
    for (n, f) in forming.into_iter().enumerate() {
        groups.push(f.await?.context("forming the groups")?);
        eprint!("\rgroups formed: {}", n + 1);
    }
    eprintln!();
    Ok(groups)
}

/// One member during the run.
struct Member {
    client: Client,
    group: String,
    /// Which of its sends (modulo `--commit-every`) are key updates.
    commit_turn: u64,
    window: Window,
    /// Messages decrypted by any member, for the progress line.
    read: Arc<AtomicU64>,
    tally: Tally,
}

impl Member {
    /// Sends at its pace until the window ends and reads its pushes until the
    /// grace after it: one task, so the client's operations never overlap.
    async fn run(
        mut self,
        mut socket: PushSocket,
        interval: Option<Duration>,
        commit_every: u64,
        bytes: usize,
    ) -> Tally {
        let mut pacer = Pacer::new(interval);
        let mut sending = true;
        let stop = tokio::time::sleep_until((self.window.end + GRACE).into());
        tokio::pin!(stop);
        loop {
            tokio::select! {
                tick = pacer.tick(&self.window), if sending => match tick {
                    Some((n, sent)) if commit_every > 0 && n % commit_every == self.commit_turn => {
                        let outcome = self.client.groups().update(&self.group).await;
                        let counts = self.window.counts(sent);
                        match outcome {
                            Ok(done) => {
                                self.took_in(&done.read);
                                self.tally.commits += u64::from(counts);
                            }
                            Err(e) if counts => self.tally.error(format!("commit_{}", code_of(&e))),
                            Err(_) => {}
                        }
                    }
                    Some((_, sent)) => {
                        let text = stamped_body(&self.window, sent, bytes);
                        let outcome = self.client.groups().send(&self.group, &text).await;
                        let counts = self.window.counts(sent);
                        match outcome {
                            Ok(done) => {
                                self.took_in(&done.read);
                                if counts {
                                    self.tally.send_us.push(sent.elapsed().as_micros() as u32);
                                }
                            }
                            Err(e) if counts => self.tally.error(code_of(&e)),
                            Err(_) => {}
                        }
                    }
                    None => sending = false,
                },
                frame = socket.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        if let Ok(PushEvent::Group(_)) = serde_json::from_str(&text) {
                            match self.client.groups().sync(&self.group).await {
                                Ok(read) => self.took_in(&read),
                                Err(e) => self.tally.error(format!("sync_{}", code_of(&e))),
                            }
                        }
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => {
                        if std::time::Instant::now() < self.window.end {
                            self.tally.error("socket_closed".into());
                        }
                        break;
                    }
                    Some(Ok(_)) => {}
                },
                () = &mut stop => break,
            }
        }
        let _ = socket.close(None).await;
        self.tally
    }

    /// Counts what a sync (or an operation's catching up) read: the latency of
    /// each message sent in the measured part of the window, and failures.
    fn took_in(&mut self, read: &[GroupReceived]) {
        for r in read {
            if let Some(error) = &r.error {
                self.tally.error(format!("decrypt_{}", error.code.as_str()));
                continue;
            }
            let Some(sent) = r.text.as_deref().and_then(|t| sent_at(&self.window, t)) else {
                continue;
            };
            if sent >= self.window.measure_from && sent <= self.window.end {
                self.tally.push_us.push(sent.elapsed().as_micros() as u32);
                self.tally.acknowledged += 1;
                self.read.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A failed operation's error code (the HTTP status, or what failed, when the server gave none).
fn code_of(e: &ClientError) -> String {
    match e {
        ClientError::Api { body, .. } => body.error.as_str().to_owned(),
        ClientError::Protocol { status, .. } => format!("http_{status}"),
        ClientError::Network(e) if e.is_timeout() => "timeout".into(),
        ClientError::Network(_) => "connection".into(),
        ClientError::Mls(_) => "mls".into(),
        _ => "client".into(),
    }
}
