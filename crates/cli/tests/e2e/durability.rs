//! Durability under load: every send the server answered 201 survives a
//! SIGKILL in the middle of a load, with its signed `accepted` receipt, on
//! SQLite and on PostgreSQL. A SIGKILL loses what the process held in memory
//! (a batch not yet written, an answer sent ahead of its commit), not what the
//! kernel already has; that the commit is also synced (`synchronous = FULL`,
//! PostgreSQL's `fsync`) is configuration, checked where it is set.
use atlas_store::testdb::{TempDir, TempPostgres};
use atlas_testing::{RawDevice, serve};
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Concurrent sending devices, so sends share group commits when the server dies.
const SENDERS: usize = 8;
/// Answered sends to see before the kill, so it lands in the middle of the load.
const BEFORE_KILL: usize = 300;

async fn answered_sends_survive_kill_9_mid_load(database_url: Option<&str>) {
    let data = TempDir::new("atlas-durable-load").unwrap();
    let mut extra = Vec::new();
    if let Some(url) = database_url {
        extra.extend(["--database-url", url]);
    }
    let mut server = serve(&data, "127.0.0.1:0", &extra);
    let url = server.url.clone();
    let recipient = RawDevice::register(&url, "recipient").await;
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut load = Vec::new();
    for i in 0..SENDERS {
        let sender = RawDevice::register(&url, &format!("sender{i}")).await;
        let acknowledged = acknowledged.clone();
        load.push(tokio::spawn(async move {
            let token = sender.token().await;
            for n in 0.. {
                let body = json!({
                    "recipient_id": "recipient",
                    "client_message_id": format!("s{i}-{n}"),
                    "envelopes": [{"device_id": "RAW", "msg_type": 1, "body": "AAAA"}],
                });
                match sender
                    .try_call(&token, "POST", "/messages", Some(body))
                    .await
                {
                    Ok((201, answer)) => acknowledged
                        .lock()
                        .unwrap()
                        .push(answer["message_id"].as_str().unwrap().to_owned()),
                    Ok((429, _)) => tokio::time::sleep(Duration::from_millis(10)).await,
                    Ok((status, answer)) => panic!("send refused under load: {status} {answer}"),
                    // The server is gone: what it answered before counts.
                    Err(_) => return n,
                }
            }
            unreachable!("the loop ends when the server dies")
        }));
    }
    atlas_testing::wait_until_answered(&acknowledged, BEFORE_KILL).await;
    server.kill_9();
    let mut attempted = 0;
    for task in load {
        // Each sender's last request was in flight when the server died.
        attempted += task.await.unwrap() + 1;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= BEFORE_KILL);

    let server = serve(&data, url.trim_start_matches("http://"), &extra);
    let token = recipient.token().await;
    let listed = recipient.queued_ids(&token).await;
    let stored: HashSet<&String> = listed.iter().collect();
    assert_eq!(stored.len(), listed.len(), "a message is queued twice");
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} answered sends lost after kill -9: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
    for id in &acknowledged {
        let (status, receipts) = recipient
            .call(&token, "GET", &format!("/receipts/{id}"), None)
            .await;
        assert_eq!(status, 200, "{id}: {receipts}");
        assert_eq!(
            receipts["receipts"][0]["receipt_type"], "accepted",
            "{id}: {receipts}"
        );
    }
    // Sends in flight at the kill may or may not be there; none is there twice.
    assert!(
        stored.len() <= attempted,
        "{} stored of {attempted} attempted",
        stored.len()
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_sends_survive_kill_9_mid_load_on_sqlite() {
    answered_sends_survive_kill_9_mid_load(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_sends_survive_kill_9_mid_load_on_postgres() {
    let pg = TempPostgres::create().await.unwrap();
    answered_sends_survive_kill_9_mid_load(Some(&pg.url)).await;
}
