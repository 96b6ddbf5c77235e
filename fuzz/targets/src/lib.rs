//! Fuzz targets as plain functions, one per decoder or reader that takes bytes from outside a
//! node: a client's RESP, the files of the LSM engine and of Raft's log, a KV snapshot, and
//! peer messages stepped into a live three-node cluster.
//!
//! Each function feeds its input to the real code and asserts invariants: it never panics on
//! its own, so a panic is a bug (in the code under test, or an invariant broken). The functions
//! build on stable; `fuzz/libfuzzer` (nightly, cargo-fuzz) runs them under libFuzzer, and this
//! crate's `replay` test runs every committed corpus file and crash input through them, so
//! `cargo xtask test-all` keeps every bug found fixed. See `docs/fuzzing.md`.

mod files;
mod kv_snapshot;
mod peer_step;
mod raft_log;
mod resp;
mod seeds;

pub use files::{manifest, sstable, wal};
pub use kv_snapshot::kv_snapshot;
pub use peer_step::peer_step;
pub use raft_log::raft_log;
pub use resp::resp;
pub use seeds::seeds;

/// A fuzz target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus directory and its cargo-fuzz binary have.
pub const TARGETS: &[(&str, Target)] = &[
    ("resp", resp),
    ("wal", wal),
    ("sstable", sstable),
    ("manifest", manifest),
    ("raft_log", raft_log),
    ("kv_snapshot", kv_snapshot),
    ("peer_step", peer_step),
];

/// Frames records as the LSM WAL and Raft's log segments both do: `length:u32le crc:u32le
/// kind:u8 payload`, with `length = 1 + |payload|` and `crc = crc32(kind ‖ payload)`.
///
/// The fuzz inputs use it in their *framed* mode: `data` is read as records `kind:u8
/// len:u16le payload{len}` (the last one cut short where `data` ends), and each is framed with
/// a correct checksum, so that the fuzzer reaches the payload decoders behind the checksums.
pub fn frame_records(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 2);
    let mut at = 0;
    while at < data.len() {
        let kind = data[at];
        let len = match data.get(at + 1..at + 3) {
            Some(l) => usize::from(u16::from_le_bytes([l[0], l[1]])),
            None => 0,
        };
        let start = (at + 3).min(data.len());
        let end = start.saturating_add(len).min(data.len());
        frame_one(&mut out, kind, &data[start..end]);
        at = end.max(at + 3);
    }
    out
}

/// Appends one record framed as [`frame_records`] describes.
pub fn frame_one(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(payload);
    out.extend_from_slice(&(1 + payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// The inverse of the input side of [`frame_records`], for writing seeds: `(kind, payload)`
/// records as a framed-mode input.
pub fn unframe_input(records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, payload) in records {
        out.push(*kind);
        let len = u16::try_from(payload.len()).expect("a seed record is under 64 KiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(payload);
    }
    out
}

/// A scratch directory for one input, removed when dropped. In `/dev/shm` where it exists, so
/// that file-backed targets run at memory speed.
pub(crate) struct ScratchDir {
    path: std::path::PathBuf,
}

impl ScratchDir {
    pub(crate) fn new(what: &str) -> ScratchDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("fuzz-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("a scratch directory can be created");
        ScratchDir { path }
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The largest single allocation an input may cause: 256 MiB. A length read from the input must
/// never be trusted that far (it would let a few bytes claim gigabytes).
pub const MAX_ALLOCATION: usize = 256 << 20;

/// The system allocator, aborting the process on an allocation above [`MAX_ALLOCATION`]: the
/// libFuzzer binaries install it, so that such an input is reported as a crash even without a
/// sanitizer (and even when the memory would be zeroed lazily and never touched).
pub struct CappedAllocator;

impl CappedAllocator {
    fn check(size: usize) {
        if size > MAX_ALLOCATION {
            use std::io::Write;
            // Unbuffered, and no formatting: nothing here allocates.
            let _ = std::io::stderr().write_all(b"fuzz: an allocation above 256 MiB\n");
            std::process::abort();
        }
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl std::alloc::GlobalAlloc for CappedAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        CappedAllocator::check(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract, which `System.alloc` shares.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        CappedAllocator::check(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        CappedAllocator::check(new_size);
        // SAFETY: the caller upholds `realloc`'s contract, which `System.realloc` shares.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}
