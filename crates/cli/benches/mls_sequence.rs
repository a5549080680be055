//! The delivery service end to end: how long `POST /groups/{id}/commits` takes
//! for one member's update in a group of N — DPoP check, restoring the group's
//! public state, validating the commit, the compare-and-set transaction with
//! its fsync (SQLite, `synchronous = FULL`) — and the client's time to add
//! N−1 members in one commit, sent through the same route.
//!
//! `cargo bench -p atlas-cli --bench mls_sequence -- [--sizes 10,100,1000] [--rounds 20]`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)] // A benchmark: fail loudly.

use atlas_crypto::mls::MlsDevice;
use atlas_proto::{DeviceId, UserId, b64};
use atlas_store::testdb::TempDir;
use atlas_testing::RawDevice;
use serde_json::json;
use std::time::{Duration, Instant};

fn commit_body(out: &atlas_crypto::mls::CommitOut) -> serde_json::Value {
    let mut body = json!({
        "commit": b64::encode_std(&out.commit),
        "group_info": b64::encode_std(&out.group_info),
    });
    if let Some(w) = &out.welcome {
        body["welcome"] = json!(b64::encode_std(w));
    }
    body
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1000]);
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let dir = TempDir::new("atlas-bench-mls").unwrap();
    let mut config = atlas_server::ServerConfig::new(dir.sqlite_url("atlas.db"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    // Every simulated device registers and authenticates from this one address.
    config.limits.registrations_per_address = (u32::MAX, u32::MAX);
    config.limits.tokens_per_address = (u32::MAX, u32::MAX);
    let server = atlas_server::start(config).await.unwrap();
    let base = server.public_url.clone();
    println!("mls_sequence: in-process server, SQLite (synchronous = FULL), medians of {rounds}");
    for (g, n) in sizes.into_iter().enumerate() {
        let creator_http = RawDevice::register(&base, &format!("creator{g}")).await;
        let creator_token = creator_http.token().await;
        let creator = MlsDevice::new(&creator_http.user_id, &creator_http.device_id).unwrap();
        let committer_http = RawDevice::register(&base, &format!("committer{g}")).await;
        let committer_token = committer_http.token().await;
        let committer = MlsDevice::new(&committer_http.user_id, &committer_http.device_id).unwrap();
        let name = format!("bench{g}");
        let info = creator.create_group(&name).unwrap();
        let (status, _) = creator_http
            .call(
                &creator_token,
                "POST",
                "/groups",
                Some(json!({"group_id": name, "group_info": b64::encode_std(&info)})),
            )
            .await;
        assert_eq!(status, 201);
        // The other members need no accounts: the service validates the MLS
        // tree, and only the committer talks to it.
        let mut packages = vec![committer.key_package(false).unwrap()];
        for i in 2..n {
            let m = MlsDevice::new(
                &UserId::new(format!("m{g}x{i}")).unwrap(),
                &DeviceId::new("D").unwrap(),
            )
            .unwrap();
            packages.push(m.key_package(false).unwrap());
        }
        let started = Instant::now();
        let add = creator.add(&name, &packages).unwrap();
        let add_client = started.elapsed();
        let started = Instant::now();
        let (status, body) = creator_http
            .call(
                &creator_token,
                "POST",
                &format!("/groups/{name}/commits"),
                Some(commit_body(&add)),
            )
            .await;
        let add_server = started.elapsed();
        assert_eq!(status, 201, "{body}");
        creator.confirm_commit(&name).unwrap();
        committer.join(add.welcome.as_ref().unwrap()).unwrap();

        let mut times = Vec::new();
        for _ in 0..rounds {
            let update = committer.self_update(&name).unwrap();
            let body = commit_body(&update);
            let started = Instant::now();
            let (status, answer) = committer_http
                .call(
                    &committer_token,
                    "POST",
                    &format!("/groups/{name}/commits"),
                    Some(body),
                )
                .await;
            times.push(started.elapsed());
            assert_eq!(status, 201, "{answer}");
            committer.confirm_commit(&name).unwrap();
        }
        times.sort();
        let median: Duration = times[times.len() / 2];
        println!(
            "  N = {n:>5}: sequence one update {:>8.2} ms (p50 over HTTP); add {:>5} members: client {:>7.1} ms, server {:>7.1} ms",
            median.as_secs_f64() * 1e3,
            n - 1,
            add_client.as_secs_f64() * 1e3,
            add_server.as_secs_f64() * 1e3,
        );
    }
    server.stop().await;
}
