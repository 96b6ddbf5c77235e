//! Replays every committed corpus file and crash input through its fuzz target, on stable.
//!
//! `fuzz/corpus/<target>/` holds the corpora libFuzzer grew (minimized), and
//! `fuzz/regressions/<target>/` every input that once crashed a target: each is a regression
//! test for the bug it found (docs/fuzzing.md). A counting allocator fails any input that makes
//! one allocation of more than 256 MiB: a length read from the input must never be trusted
//! that far. This file holds one test, so its binary runs nothing else at the same time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, noting the largest block asked for.
struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

use fuzz_targets::MAX_ALLOCATION;

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, which `System.alloc` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (see `alloc` and `realloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: the caller upholds `realloc`'s contract, which `System.realloc` shares.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("fuzz/targets is in fuzz/").into()
}

/// The files of `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a corpus directory lists").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_and_crash_input_replays_clean() {
    let mut replayed = 0;
    let mut failures = Vec::new();
    for &(name, target) in fuzz_targets::TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty: commit a corpus for it");
        let regressions = files(&fuzz_dir().join("regressions").join(name));
        for path in corpus.iter().chain(&regressions) {
            let data = std::fs::read(path).expect("a corpus file reads");
            LARGEST.store(0, Ordering::Relaxed);
            let outcome = std::panic::catch_unwind(|| target(&data));
            let largest = LARGEST.load(Ordering::Relaxed);
            if outcome.is_err() {
                failures.push(format!("{}: panicked", path.display()));
            } else if largest > MAX_ALLOCATION {
                failures.push(format!("{}: allocated {largest} bytes at once", path.display()));
            }
            replayed += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {replayed} inputs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
