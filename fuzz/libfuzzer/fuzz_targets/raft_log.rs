//! libFuzzer entry point for `fuzz_targets::raft_log` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_targets::raft_log(data));
