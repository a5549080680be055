//! The core-function lines: two throwaway probe users register, message each
//! other 1:1 (delivered over the push socket) and in an MLS group, and check
//! the signed receipt against the server's JWKS. The server reserves their
//! ids (they register whatever the registration mode) and erases them, with
//! everything stored about them, afterwards.
use super::{CORE, Checklist};
use atlas_client::Client;
use atlas_client::operator::OperatorClient;
use atlas_dr::verify::Outcome;
use atlas_proto::UserId;
use atlas_proto::recovery::{ProbeErasure, ProbeList, ProbeReservation};
use reqwest::Method;
use std::time::{Duration, Instant};

/// A step that took too long or failed, as evidence.
type Step<T> = Result<T, String>;

async fn within<T, E: std::fmt::Display>(
    timeout: Duration,
    what: &str,
    step: impl std::future::Future<Output = Result<T, E>>,
) -> Step<T> {
    match tokio::time::timeout(timeout, step).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer in {} s", timeout.as_secs())),
    }
}

/// Runs the probes and adds their lines.
pub(super) async fn run(
    list: &mut Checklist,
    server: &str,
    admin: &OperatorClient,
    jwks: Option<&serde_json::Value>,
    timeout: Duration,
) {
    health(list, server).await;
    // The probes' profiles hold their keys: a private directory, gone afterwards.
    let dir = match atlas_dr::scratch::Scratch::new() {
        Ok(d) => d,
        Err(e) => {
            list.add(CORE, "users can authenticate", Outcome::Fail, e.to_string());
            return;
        }
    };
    let stale = erase_stale(admin).await;
    let reserve = admin.call::<ProbeReservation>(Method::POST, "/admin/recovery/probes");
    let reserved = match within(timeout, "reserving probe user ids", reserve).await {
        Ok(r) => r.user_ids,
        Err(why) => {
            list.add(CORE, "users can authenticate", Outcome::Fail, why);
            Vec::new()
        }
    };
    let mut probes = Vec::new();
    for (n, user) in reserved.iter().enumerate() {
        let register = async {
            let profile = dir.path(&n.to_string());
            std::fs::create_dir_all(&profile).map_err(|e| e.to_string())?;
            Client::register_with(&profile, server, user.clone(), None, None)
                .await
                .map_err(|e| e.to_string())
        };
        match within(timeout, "registering a probe user", register).await {
            Ok(client) => probes.push(client),
            Err(why) => {
                list.add(CORE, "users can authenticate", Outcome::Fail, why);
                break;
            }
        }
    }
    if let [alice, bob] = &probes[..] {
        list.add(
            CORE,
            "users can authenticate",
            Outcome::Pass,
            format!(
                "probe users {} and {} registered and got DPoP-bound access tokens",
                alice.user_id(),
                bob.user_id()
            ),
        );
        direct(list, alice, bob, jwks, timeout).await;
        group(list, alice, bob, timeout).await;
    } else {
        for name in [
            "messages sent and received (1:1)",
            "peer connections establishing (push)",
            "proofs generating and verifying",
            "messages sent and received (group)",
        ] {
            list.add(CORE, name, Outcome::Skip, "no probe users");
        }
    }
    cleanup(list, admin, &reserved, stale).await;
}

/// A probe erased, or why not.
type Erasure = Result<ProbeErasure, String>;

/// Probes reserved more than [`STALE`] ago are an interrupted run's: erased
/// first, so they never pile up to the server's limit.
const STALE: time::Duration = time::Duration::hours(1);

async fn erase(admin: &OperatorClient, user: &UserId) -> Erasure {
    let path = format!("/admin/recovery/probes/{user}");
    admin
        .call::<ProbeErasure>(Method::DELETE, &path)
        .await
        .map_err(|e| format!("{user}: {e}"))
}

async fn erase_stale(admin: &OperatorClient) -> Vec<Erasure> {
    let listed = match admin
        .call::<ProbeList>(Method::GET, "/admin/recovery/probes")
        .await
    {
        Ok(l) => l.probes,
        Err(e) => return vec![Err(format!("listing reserved probes: {e}"))],
    };
    let cutoff = time::OffsetDateTime::now_utc() - STALE;
    let mut erased = Vec::new();
    for probe in listed.iter().filter(|p| p.reserved_at.0 < cutoff) {
        erased.push(erase(admin, &probe.user_id).await);
    }
    erased
}

async fn health(list: &mut Checklist, server: &str) {
    let started = Instant::now();
    let answer = async {
        let response = atlas_client::http_client()
            .map_err(|e| e.to_string())?
            .get(format!("{server}/health"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body: atlas_proto::api::HealthResponse =
            response.json().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((status, body))
    };
    match answer.await {
        Ok((status, body)) => list.check(
            CORE,
            "health endpoint",
            status.is_success() && body.status == "ok",
            format!(
                "HTTP {} status {} ({} storage ok={}) in {} ms",
                status.as_u16(),
                body.status,
                body.storage.backend,
                body.storage.ok,
                started.elapsed().as_millis()
            ),
        ),
        Err(why) => list.add(CORE, "health endpoint", Outcome::Fail, why),
    }
}

/// Alice sends Bob a 1:1 message while Bob listens on his push socket.
async fn direct(
    list: &mut Checklist,
    alice: &Client,
    bob: &Client,
    jwks: Option<&serde_json::Value>,
    timeout: Duration,
) {
    let text = format!("verify-recovery probe {}", atlas_crypto::random_id());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listen = bob.listen(
        move |r| {
            let _ = tx.send(r);
        },
        std::future::pending(),
    );
    tokio::pin!(listen);
    let started = Instant::now();
    let messages = alice.messages();
    let sent = tokio::select! {
        ended = &mut listen => Err(format!("the push socket closed at once: {ended:?}")),
        sent = within(timeout, "sending", messages.send_text(bob.user_id(), &text)) => sent,
    };
    let sent = match sent {
        Ok(sent) => sent,
        Err(why) => {
            list.add(CORE, "messages sent and received (1:1)", Outcome::Fail, why);
            list.add(
                CORE,
                "peer connections establishing (push)",
                Outcome::Skip,
                "nothing was sent",
            );
            list.add(
                CORE,
                "proofs generating and verifying",
                Outcome::Skip,
                "nothing was sent",
            );
            return;
        }
    };
    let pushed = tokio::select! {
        ended = &mut listen => Err(format!("the push socket closed: {ended:?}")),
        got = rx.recv() => got.ok_or_else(|| "the listener stopped".to_owned()),
        () = tokio::time::sleep(timeout) => Err(format!("nothing pushed in {} s", timeout.as_secs())),
    };
    match pushed {
        Ok(got) => {
            let ms = started.elapsed().as_millis();
            list.check(
                CORE,
                "messages sent and received (1:1)",
                got.text.as_deref() == Some(text.as_str()),
                format!(
                    "{} from {} decrypted {} in {ms} ms",
                    got.message_id,
                    got.sender_id,
                    if got.text.as_deref() == Some(text.as_str()) {
                        "to the text sent".to_owned()
                    } else {
                        format!("wrongly ({:?})", got.error)
                    }
                ),
            );
            list.add(
                CORE,
                "peer connections establishing (push)",
                Outcome::Pass,
                format!("{} arrived on the recipient's WebSocket", got.message_id),
            );
        }
        Err(why) => {
            list.add(
                CORE,
                "messages sent and received (1:1)",
                Outcome::Fail,
                why.clone(),
            );
            list.add(
                CORE,
                "peer connections establishing (push)",
                Outcome::Fail,
                why,
            );
        }
    }
    let receipt = serde_json::to_string(&sent.receipt.jws).unwrap_or_default();
    match jwks {
        Some(jwks) => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let report = atlas_crypto::receipt_inspect::verify_receipt(&receipt, jwks, now);
            list.check(
                CORE,
                "proofs generating and verifying",
                report.failure().is_none(),
                match report.failure() {
                    None => format!(
                        "the accepted receipt of {} ({}) verifies against the JWKS",
                        sent.message_id, sent.receipt.kid
                    ),
                    Some(why) => why,
                },
            );
        }
        None => list.add(
            CORE,
            "proofs generating and verifying",
            Outcome::Fail,
            "the server's JWKS could not be read",
        ),
    }
}

/// Alice makes a group, adds Bob, sends; Bob joins from the Welcome and reads it.
async fn group(list: &mut Checklist, alice: &Client, bob: &Client, timeout: Duration) {
    // The group is named after its creator: probe names are unique.
    let name = alice.user_id().to_string();
    let text = format!("verify-recovery group probe {}", atlas_crypto::random_id());
    let steps = async {
        let created = alice
            .groups()
            .create(&name)
            .await
            .map_err(|e| e.to_string())?;
        alice
            .groups()
            .add(&name, bob.user_id())
            .await
            .map_err(|e| format!("adding the second probe: {e}"))?;
        bob.groups()
            .accept_welcomes()
            .await
            .map_err(|e| format!("joining from the Welcome: {e}"))?;
        let sent = alice
            .groups()
            .send(&name, &text)
            .await
            .map_err(|e| format!("sending: {e}"))?;
        let read = bob.groups().sync(&name).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((created, sent.answer, read))
    };
    match within(timeout, "group", steps).await {
        Ok((_, sent, read)) => {
            let got = read
                .iter()
                .find(|r| r.text.as_deref() == Some(text.as_str()));
            list.check(
                CORE,
                "messages sent and received (group)",
                got.is_some(),
                match got {
                    Some(r) => format!(
                        "group {name}: message {} in epoch {} read by the second member",
                        r.seq, r.epoch
                    ),
                    None => format!("group {name}: message {} not read back", sent.seq),
                },
            );
        }
        Err(why) => list.add(
            CORE,
            "messages sent and received (group)",
            Outcome::Fail,
            why,
        ),
    }
}

/// Erases the probe users (reserved ones that never registered too), as
/// though they never were: their devices, keys, messages, receipts and group.
async fn cleanup(
    list: &mut Checklist,
    admin: &OperatorClient,
    probes: &[UserId],
    stale: Vec<Erasure>,
) {
    if probes.is_empty() && stale.is_empty() {
        return;
    }
    let mut ours = Vec::new();
    for user in probes {
        ours.push(erase(admin, user).await);
    }
    let problems: Vec<&str> = ours
        .iter()
        .chain(&stale)
        .filter_map(|e| e.as_ref().err().map(String::as_str))
        .collect();
    let erased: Vec<&ProbeErasure> = ours.iter().filter_map(|e| e.as_ref().ok()).collect();
    let stale_erased = stale.iter().filter(|e| e.is_ok()).count();
    list.check(
        CORE,
        "probe users cleaned up",
        problems.is_empty(),
        if problems.is_empty() {
            let mut detail = format!(
                "{} probe users erased: {} devices, {} group, {} rows",
                erased.len(),
                erased.iter().map(|e| e.devices).sum::<u64>(),
                erased.iter().map(|e| e.groups).sum::<u64>(),
                erased.iter().map(|e| e.rows).sum::<u64>()
            );
            if stale_erased > 0 {
                detail.push_str(&format!("; and {stale_erased} left by an interrupted run"));
            }
            detail
        } else {
            format!(
                "erase by hand (DELETE /admin/recovery/probes/USER, scope recovery): {}",
                problems.join("; ")
            )
        },
    );
}
