//! What a key backup costs the device: `cargo bench -p atlas-crypto --bench backup [-- --sizes 64,1024,8192]`.
//! Key derivation (Argon2id, 19 MiB, 2 passes: the same cost for an attacker
//! per passphrase guess), then sealing and opening key states of the given
//! sizes in KiB (a device with a few sessions is tens of KiB; MLS state for a
//! 1,000-member group about 1 MiB).
#![allow(clippy::unwrap_used, missing_docs)]

use atlas_crypto::backup::{derive_keys, new_kdf};
use std::time::Instant;

fn main() {
    let mut sizes = vec![64usize, 1024, 8192];
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--sizes") {
        sizes = args[i + 1].split(',').map(|s| s.parse().unwrap()).collect();
    }
    let kdf = new_kdf();
    let mut derive = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        derive_keys(&kdf, b"correct horse battery staple").unwrap();
        derive.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    derive.sort_by(f64::total_cmp);
    println!(
        "argon2id m={} KiB t={} p={}: derive {:.1} ms (median of 5, min {:.1})",
        kdf.m_kib, kdf.t, kdf.p, derive[2], derive[0]
    );
    let keys = derive_keys(&kdf, b"correct horse battery staple").unwrap();
    for kib in sizes {
        let state = vec![7u8; kib * 1024];
        let start = Instant::now();
        let sealed = keys.seal("backup-alice-1", &state);
        let seal_ms = start.elapsed().as_secs_f64() * 1000.0;
        let start = Instant::now();
        let opened = keys.open("backup-alice-1", &sealed).unwrap();
        let open_ms = start.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(opened.len(), state.len());
        println!(
            "state {kib} KiB: seal {seal_ms:.2} ms, open {open_ms:.2} ms, blob {} KiB (base64url)",
            sealed.len() / 1024
        );
    }
}
