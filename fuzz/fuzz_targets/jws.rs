//! `cargo fuzz run jws`: see `atlas_fuzzing::jws`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atlas_fuzzing::jws(data));
