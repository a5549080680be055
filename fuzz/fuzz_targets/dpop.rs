//! `cargo fuzz run dpop`: see `atlas_fuzzing::dpop`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atlas_fuzzing::dpop(data));
