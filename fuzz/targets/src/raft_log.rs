//! Raft's [`FileStorage`]: a log segment or a snapshot file from the fuzzer, opened.

use raft::{FileStorage, Storage};

use crate::{ScratchDir, frame_records};

/// Input: `mode rest`. Bit 0 of `mode`: frame `rest` as checksummed records
/// ([`frame_records`]) so the record decoders are reached; bit 1: the bytes are the `snapshot`
/// file rather than the first log segment (`log-00000001.seg`).
///
/// Invariants: no panic; storage that opens reports a log that is contiguous and starts right
/// after its snapshot, and opens again to the same state (recovery is idempotent); a node
/// started on that state starts or returns an error, and never panics.
pub fn raft_log(data: &[u8]) {
    let [mode, rest @ ..] = data else { return };
    let bytes = if mode & 1 == 1 { frame_records(rest) } else { rest.to_vec() };
    let dir = ScratchDir::new("raft-log");
    let name = if mode & 2 == 2 { "snapshot" } else { "log-00000001.seg" };
    std::fs::write(dir.path().join(name), &bytes).expect("the scratch file is written");

    let Ok(storage) = FileStorage::open(dir.path()) else { return };
    let Ok(state) = storage.initial_state() else { return };
    let floor = state.snapshot.as_ref().map_or(0, |s| s.meta.last_included_index);
    for (i, e) in state.entries.iter().enumerate() {
        assert_eq!(e.index, floor + 1 + i as u64, "the log is not contiguous after {floor}");
    }
    drop(storage);
    let again = FileStorage::open(dir.path())
        .expect("storage that opened reopens")
        .initial_state()
        .expect("storage that opened reports its state again");
    assert_eq!(again, state, "reopening changed the recovered state");
    let config = raft::Config::new(1, vec![1, 2, 3]);
    if let Ok(mut node) = raft::RawNode::new(raft::Config { seed: 1, ..config }, state) {
        for _ in 0..3 {
            node.tick();
            while node.has_ready() {
                let _ = node.ready();
                node.advance();
            }
        }
    }
}
