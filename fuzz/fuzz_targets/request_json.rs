//! `cargo fuzz run request_json`: see `atlas_fuzzing::request_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atlas_fuzzing::request_json(data));
