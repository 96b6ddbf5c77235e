//! libFuzzer entry point for `fuzz_targets::peer_step` (docs/fuzzing.md).
#![no_main]

/// An allocation above `fuzz_targets::MAX_ALLOCATION` aborts: a crash libFuzzer reports.
#[global_allocator]
static ALLOCATOR: fuzz_targets::CappedAllocator = fuzz_targets::CappedAllocator;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_targets::peer_step(data));
