//! Replays every input kept under `fuzz/regressions/<target>/` (each once
//! crashed a target, or guards a decoder's edge) and every seed: none may
//! panic. Runs on stable in the ordinary test suite, so a fixed crash stays
//! fixed without a fuzzer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

#[test]
fn every_kept_crash_input_is_handled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    let mut replayed = 0;
    for target in std::fs::read_dir(&root).expect("fuzz/regressions exists") {
        let target = target.unwrap().path();
        let name = target.file_name().unwrap().to_string_lossy().into_owned();
        for input in std::fs::read_dir(&target).unwrap() {
            let input = input.unwrap().path();
            let data = std::fs::read(&input).unwrap();
            assert!(
                atlas_fuzzing::run(&name, &data),
                "{}: no fuzz target {name:?}",
                input.display()
            );
            replayed += 1;
        }
    }
    assert!(
        replayed > 0,
        "no regression inputs under {}",
        root.display()
    );
}

#[test]
fn seeds_exercise_their_decoders() {
    let seeds = atlas_fuzzing::seeds();
    for (target, _, _) in &seeds {
        assert!(
            atlas_fuzzing::TARGETS.iter().any(|(t, _)| t == target),
            "{target}"
        );
    }
    for (target, _) in atlas_fuzzing::TARGETS {
        assert!(
            seeds.iter().any(|(t, _, _)| t == target),
            "no seed for {target}"
        );
    }
    for (target, name, input) in seeds {
        atlas_fuzzing::run(target, &input);
        // The seeds are valid inputs: each must get past the first parse.
        let text = std::str::from_utf8(&input).unwrap_or_default();
        match (target, name) {
            ("jws", "access_token") | ("jws", "dpop_proof") => {
                assert!(atlas_crypto::jws::CompactJws::parse(text).is_ok(), "{name}");
            }
            ("dpop", "proof") => {
                let expected = atlas_crypto::dpop::ExpectedRequest {
                    htm: "POST",
                    htu: "https://atlas.test/messages",
                    access_token: Some("fuzz-access-token"),
                    now: 1_795_996_800,
                };
                atlas_crypto::dpop::verify_proof(text, &expected, Default::default())
                    .expect("the seed proof verifies");
            }
            ("receipt", _) => {
                assert!(
                    atlas_crypto::receipt::decode_receipt(text).is_ok(),
                    "{name}"
                );
            }
            ("mls", "key_package") => {
                atlas_crypto::mls::check_key_package(&input).expect("valid key package");
            }
            ("mls", "commit") | ("mls", "application") => {
                atlas_crypto::mls::parse_message(&input).expect("valid MLS message");
            }
            _ => {}
        }
    }
}
