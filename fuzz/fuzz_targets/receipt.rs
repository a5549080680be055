//! `cargo fuzz run receipt`: see `atlas_fuzzing::receipt`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| atlas_fuzzing::receipt(data));
