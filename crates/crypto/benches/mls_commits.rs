//! MLS costs that bound the delivery service and clients, per group size:
//! `cargo bench -p atlas-crypto --bench mls_commits [-- --sizes 10,100,1000]`.
//! - client: one commit adding N members (KeyPackages ready), and its Welcome;
//! - service: validating and applying one member's update commit in a group of
//!   N, including restoring the stored public state and snapshotting the new one
//!   (what `POST /groups/{id}/commits` does besides the database transaction).
#![allow(clippy::unwrap_used, missing_docs)]

use atlas_crypto::mls::MlsDevice;
use atlas_crypto::mls_ds::DsGroup;
use atlas_proto::{DeviceId, UserId};
use std::time::{Duration, Instant};

fn device(i: usize) -> MlsDevice {
    MlsDevice::new(
        &UserId::new(format!("user{i}")).unwrap(),
        &DeviceId::new("D").unwrap(),
    )
    .unwrap()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1000]);
    println!("mls_commits (release, one core; medians)");
    for n in sizes {
        let creator = device(0);
        let info = creator.create_group("bench").unwrap();
        let mut ds = DsGroup::from_group_info("bench", &info).unwrap();
        let members: Vec<MlsDevice> = (1..n).map(device).collect();
        let packages: Vec<Vec<u8>> = members
            .iter()
            .map(|m| m.key_package(false).unwrap())
            .collect();

        let started = Instant::now();
        let add = creator.add("bench", &packages).unwrap();
        let add_time = started.elapsed();
        let welcome_kib = add.welcome.as_ref().map_or(0, Vec::len) / 1024;
        ds.apply_commit(&add.commit).unwrap();
        creator.confirm_commit("bench").unwrap();
        let joiner = &members[members.len() / 2];
        joiner.join(add.welcome.as_ref().unwrap()).unwrap();

        let state = ds.snapshot().unwrap();
        let rounds = if n >= 1000 { 5 } else { 15 };
        let mut validate = Vec::new();
        for _ in 0..rounds {
            let update = joiner.self_update("bench").unwrap();
            let started = Instant::now();
            let mut fresh = DsGroup::restore(&state).unwrap();
            fresh.apply_commit(&update.commit).unwrap();
            fresh.check_group_info(&update.group_info).unwrap();
            let _ = fresh.snapshot().unwrap();
            validate.push(started.elapsed());
            joiner.discard_commit("bench").unwrap();
        }
        println!(
            "  N = {n:>5}: client add {:>5} members in one commit {:>9.1} ms (Welcome {welcome_kib} KiB); \
             service validates an update (no DB) {:>8.2} ms (state {} KiB)",
            n - 1,
            add_time.as_secs_f64() * 1e3,
            median(validate).as_secs_f64() * 1e3,
            state.len() / 1024
        );
    }
}
