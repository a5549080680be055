//! `cargo fuzz run mls`: see `atlas_fuzzing::mls`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atlas_fuzzing::mls(data));
