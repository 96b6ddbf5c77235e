//! libFuzzer entry point for `fuzz_targets::sstable` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_targets::sstable(data));
