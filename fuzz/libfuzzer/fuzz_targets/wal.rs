//! libFuzzer entry point for `fuzz_targets::wal` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_targets::wal(data));
