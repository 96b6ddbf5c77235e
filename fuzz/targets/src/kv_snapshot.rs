//! The KV state machine's snapshot restore, as a follower meets a leader's snapshot.

use std::sync::Arc;

use kvserver::{KvStateMachine, StateMachine};
use lsm::{Db, MemFs, Options};

fn machine(fs: &MemFs) -> KvStateMachine {
    let options = Options { fs: Arc::new(fs.clone()), wal: false, ..Options::default() };
    let db = Db::open("/kv", options).expect("a MemFs database opens");
    KvStateMachine::new(db).expect("an empty state machine starts")
}

/// Restores `data` as a snapshot taken at index 7 into a state machine that already holds some
/// state. Invariants: no panic, and no allocation in proportion to a length the snapshot only
/// claims (libFuzzer's malloc limit, and the replay test's counting allocator, catch one); a
/// snapshot that restores reports index 7 as applied, and re-snapshots to bytes that restore to
/// the same state and snapshot to the same bytes again.
pub fn kv_snapshot(data: &[u8]) {
    let fs = MemFs::new();
    let mut sm = machine(&fs);
    // Some state to replace: a snapshot of one pair, restored first.
    let mut seed = Vec::new();
    seed.extend_from_slice(&2u32.to_le_bytes());
    seed.extend_from_slice(b"dk");
    seed.extend_from_slice(&1u32.to_le_bytes());
    seed.extend_from_slice(b"v");
    seed.extend_from_slice(&u32::MAX.to_le_bytes());
    seed.extend_from_slice(&1u64.to_le_bytes());
    sm.restore(3, &mut &seed[..]).expect("the harness's own snapshot restores");

    if sm.restore(7, &mut &data[..]).is_err() {
        return;
    }
    assert_eq!(sm.applied_index(), 7, "a restored snapshot's index is the applied index");
    let mut first = Vec::new();
    sm.snapshot(&mut first).expect("a restored state snapshots");

    let other = MemFs::new();
    let mut copy = machine(&other);
    copy.restore(9, &mut &first[..]).expect("a snapshot of a restored state restores");
    let mut second = Vec::new();
    copy.snapshot(&mut second).expect("a restored copy snapshots");
    assert_eq!(first, second, "snapshot and restore do not round-trip");
}
