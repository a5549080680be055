//! `atlas bench send --verify`: after the run every recipient reads its whole
//! queue, as a client syncing would. Every send the server answered must be
//! there exactly once (by message id, and by the send's number in its body, so
//! a retry stored as a second message shows), with its `accepted` receipt.
use super::device::BenchDevice;
use super::send::{Caller, call, tag_of};
use super::servers::Servers;
use atlas_proto::api::InboxResponse;
use reqwest::Method;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// One send the server answered: to which device, as which message.
pub struct Answered {
    /// The recipient's index among the run's devices.
    pub recipient: usize,
    /// The id the server gave it.
    pub message_id: String,
}

/// What the recipients' queues held.
#[derive(Debug, Default, Serialize)]
pub struct Delivery {
    /// Sends answered 200/201 in the whole run (warm-up included).
    pub answered: u64,
    /// Messages in the recipients' queues.
    pub queued: u64,
    /// Answered sends not in their recipient's queue.
    pub missing: u64,
    /// Messages queued more than once (the same id, or the same send twice).
    pub duplicated: u64,
    /// Answered sends whose receipts were fetched (one in [`RECEIPT_SAMPLE`]).
    pub receipts_checked: u64,
    /// Of them, without an `accepted` receipt.
    pub receipts_missing: u64,
}

impl Delivery {
    /// Whether every answered send was delivered once, with its receipt.
    pub fn all_delivered_once(&self) -> bool {
        self.missing == 0 && self.duplicated == 0 && self.receipts_missing == 0
    }
}

/// One answered send in this many has its receipt fetched.
const RECEIPT_SAMPLE: usize = 25;
/// Queue page size.
const PAGE: u32 = 500;

/// Reads every device's queue (through its home replica, the next when it is
/// gone) and compares it with what was answered.
pub async fn verify(
    http: &reqwest::Client,
    servers: &Servers,
    devices: &[Arc<(BenchDevice, String)>],
    answered: Vec<Answered>,
) -> Delivery {
    eprint!("verifying delivery…");
    let mut d = Delivery {
        answered: answered.len() as u64,
        ..Delivery::default()
    };
    let mut expected: HashMap<usize, Vec<&str>> = HashMap::new();
    for a in &answered {
        expected.entry(a.recipient).or_default().push(&a.message_id);
    }
    for (r, pair) in devices.iter().enumerate() {
        let (device, token) = &**pair;
        let caller = Caller { device, token };
        let mut at = servers.home(r);
        let Some(queue) = read_queue(http, servers, &mut at, &caller).await else {
            d.missing += expected.get(&r).map_or(0, |e| e.len() as u64);
            continue;
        };
        d.queued += queue.len() as u64;
        let mut ids = HashSet::new();
        let mut sends = HashSet::new();
        for (id, sender, body) in &queue {
            let twice = !ids.insert(id.as_str())
                || !sends.insert((sender.as_str(), tag_of(body).unwrap_or(body)));
            d.duplicated += u64::from(twice);
        }
        for (k, id) in expected.get(&r).into_iter().flatten().enumerate() {
            if !ids.contains(id) {
                d.missing += 1;
            } else if k % RECEIPT_SAMPLE == 0 {
                d.receipts_checked += 1;
                let accepted = has_accepted_receipt(http, servers, &mut at, &caller, id).await;
                d.receipts_missing += u64::from(!accepted);
            }
        }
    }
    eprintln!(" done");
    d
}

/// `(message id, sender, body)` of every queued message; `None` when no
/// replica answers.
async fn read_queue(
    http: &reqwest::Client,
    servers: &Servers,
    at: &mut usize,
    caller: &Caller<'_>,
) -> Option<Vec<(String, String, String)>> {
    let (mut all, mut after) = (Vec::new(), 0);
    loop {
        let path = format!("/messages?after={after}&limit={PAGE}");
        let (answer, _) = call(http, servers, at, caller, Method::GET, &path, None)
            .await
            .ok()?;
        if answer.status() != 200 {
            return None;
        }
        let page: InboxResponse = answer.json().await.ok()?;
        all.extend(
            page.messages
                .into_iter()
                .map(|m| (m.message_id.to_string(), m.sender_id.to_string(), m.body)),
        );
        if !page.more {
            return Some(all);
        }
        after = page.next_after;
    }
}

/// Whether `GET /receipts/{id}` holds an `accepted` receipt.
async fn has_accepted_receipt(
    http: &reqwest::Client,
    servers: &Servers,
    at: &mut usize,
    caller: &Caller<'_>,
    id: &str,
) -> bool {
    let path = format!("/receipts/{id}");
    let Ok((answer, _)) = call(http, servers, at, caller, Method::GET, &path, None).await else {
        return false;
    };
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    body["receipts"]
        .as_array()
        .is_some_and(|all| all.iter().any(|r| r["receipt_type"] == "accepted"))
}
