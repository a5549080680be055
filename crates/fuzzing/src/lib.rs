//! What each fuzz target does with its input, as plain functions: the
//! `cargo fuzz` targets in `fuzz/` call them, and so does this crate's
//! regression test, which replays every input under `fuzz/regressions/` on
//! stable Rust in the ordinary test run. Every decoder that faces the network
//! has a target: compact JWS, DPoP proofs, signed receipts, the MLS messages
//! the delivery service parses, and the JSON bodies of requests.
//!
//! A target must never panic, whatever the bytes; that is the whole oracle,
//! together with the sanitizers `cargo fuzz` builds with.
#![forbid(unsafe_code)]

mod fixtures;
mod seeds;

pub use seeds::seeds;

use atlas_crypto::dpop::{ExpectedRequest, IatWindow};
use atlas_crypto::dpop_inspect::Inspection;
use atlas_crypto::jwk::PublicJwk;
use atlas_crypto::jws::CompactJws;
use atlas_crypto::mls_ds::DsGroup;

/// What a target does with one input.
pub type Target = fn(&[u8]);

/// The fuzz targets, by the name `cargo fuzz run` takes.
pub const TARGETS: &[(&str, Target)] = &[
    ("jws", jws),
    ("dpop", dpop),
    ("receipt", receipt),
    ("mls", mls),
    ("request_json", request_json),
];

/// Runs the named target on `data`; `false` for an unknown name.
pub fn run(target: &str, data: &[u8]) -> bool {
    match TARGETS.iter().find(|(name, _)| *name == target) {
        Some((_, body)) => {
            body(data);
            true
        }
        None => false,
    }
}

/// Compact JWS (access tokens, DPoP proofs): parse, read, verify against a key.
pub fn jws(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(jws) = CompactJws::parse(text) {
        let _ = jws.alg();
        let _ = jws.claims();
        let _ = jws.verify(&fixtures::get().jwk);
    }
    if let Ok(value) = serde_json::from_slice(data) {
        let _ = PublicJwk::from_json(&value);
    }
}

/// A DPoP proof as the server checks it, and as `atlas dpop inspect` explains it.
pub fn dpop(data: &[u8]) {
    let Ok(proof) = std::str::from_utf8(data) else {
        return;
    };
    let f = fixtures::get();
    let expected = ExpectedRequest {
        htm: "POST",
        htu: fixtures::HTU,
        access_token: Some(fixtures::TOKEN),
        now: fixtures::NOW,
    };
    let _ = atlas_crypto::dpop::verify_proof(proof, &expected, IatWindow::default());
    let _ = atlas_crypto::dpop_inspect::inspect_proof(
        proof,
        &Inspection {
            token: Some(fixtures::TOKEN),
            method: Some("POST"),
            url: Some(fixtures::HTU),
            now: fixtures::NOW,
            window: IatWindow::default(),
        },
    );
    let _ = atlas_crypto::dpop_inspect::token_jkt(proof);
    let _ = f.nonces.check(proof, fixtures::NOW);
}

/// A signed receipt, as `atlas verify-receipt` and the server read it.
pub fn receipt(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((jws, _)) = atlas_crypto::receipt::decode_receipt(text) {
        let _ = atlas_crypto::receipt::claims_of(&jws);
    }
    let _ =
        atlas_crypto::receipt_inspect::verify_receipt(text, &fixtures::get().jwks, fixtures::NOW);
}

/// What the delivery service parses from members: key packages, GroupInfos,
/// commits and application messages, the latter against a real group's state.
pub fn mls(data: &[u8]) {
    let _ = atlas_crypto::mls::parse_message(data);
    let _ = atlas_crypto::mls::check_key_package(data);
    let _ = atlas_crypto::mls::verifiable_group_info(data);
    let _ = DsGroup::from_group_info("fuzz", data);
    // `DsGroup::restore` reads the server's own stored state, not the
    // network's; its crash input is a unit test in `atlas_crypto::mls_ds`.
    if let Ok(mut group) = DsGroup::restore(&fixtures::get().group) {
        let _ = group.check_application(data);
        let _ = group.check_group_info(data);
        let _ = group.apply_commit(data);
    }
}

/// Request bodies, as the server's JSON extractor reads them; the first byte
/// picks the type, the rest is the body.
pub fn request_json(data: &[u8]) {
    use atlas_proto::{api, backup, e2ee, mls, repair};
    let Some((which, body)) = data.split_first() else {
        return;
    };
    fn read<T: serde::de::DeserializeOwned>(body: &[u8]) {
        let _ = serde_json::from_slice::<T>(body);
    }
    match which % 16 {
        0 => read::<api::SendRequest>(body),
        1 => read::<api::RegisterRequest>(body),
        2 => read::<api::KeysUploadRequest>(body),
        3 => read::<api::KeyCheckRequest>(body),
        4 => read::<api::KeysClaimRequest>(body),
        5 => read::<api::CertifyRequest>(body),
        6 => read::<e2ee::ReportsRequest>(body),
        7 => read::<mls::CreateGroupRequest>(body),
        8 => read::<mls::CommitRequest>(body),
        9 => read::<mls::KeyPackageUpload>(body),
        10 => read::<mls::GroupMessageRequest>(body),
        11 => read::<mls::EpochAck>(body),
        12 => read::<backup::BackupUpload>(body),
        13 => read::<repair::SessionResetsAck>(body),
        14 => read::<api::AckRequest>(body),
        _ => read::<api::PushEvent>(body),
    }
}
