//! `FileStorage`: the storage contract, torn tails, corruption, segments, snapshots.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use raft::{Entry, FileStorage, HardState, Snapshot, SnapshotMeta, Storage, StorageError};

/// A directory under the target's temp area, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("raft-fs-{}-{name}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn entry(index: u64, term: u64) -> Entry {
    Entry { term, index, data: Bytes::from(format!("command number {index}")) }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// Writes `n` entries, one persist each (so one record each), plus a hard state; returns the
/// segment's bytes and the offset where the last entry's record starts.
fn write_entries(dir: &Path, n: u64) -> (Vec<u8>, usize) {
    let mut s = FileStorage::open(dir).unwrap();
    s.persist(Some(HardState { current_term: 1, voted_for: Some(0), commit_index: 0 }), None, &[])
        .unwrap();
    for i in 1..n {
        s.persist(None, None, &[entry(i, 1)]).unwrap();
    }
    let before_last = fs::metadata(&segments(dir)[0]).unwrap().len() as usize;
    s.persist(None, None, &[entry(n, 1)]).unwrap();
    drop(s);
    (fs::read(&segments(dir)[0]).unwrap(), before_last)
}

#[test]
fn a_torn_last_record_is_dropped_at_every_cut() {
    let src = TempDir::new("torn-src");
    let (bytes, last_start) = write_entries(src.path(), 5);
    for cut in last_start..bytes.len() {
        let dir = TempDir::new("torn");
        fs::write(dir.path().join("log-00000001.seg"), &bytes[..cut]).unwrap();
        let s = FileStorage::open(dir.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let state = s.initial_state().unwrap();
        assert_eq!(state.entries.len(), 4, "cut at {cut} of {}", bytes.len());
        assert_eq!(state.hard_state.current_term, 1);
        // The torn bytes are gone from the file, and new writes land after the good records.
        assert_eq!(
            fs::metadata(dir.path().join("log-00000001.seg")).unwrap().len() as usize,
            last_start
        );
        let mut s = s;
        s.persist(None, None, &[entry(5, 2)]).unwrap();
        let reopened = FileStorage::open(dir.path()).unwrap();
        assert_eq!(reopened.initial_state().unwrap().entries.last(), Some(&entry(5, 2)));
    }
    // Uncut, all five are there.
    let dir = TempDir::new("whole");
    fs::write(dir.path().join("log-00000001.seg"), &bytes).unwrap();
    assert_eq!(FileStorage::open(dir.path()).unwrap().initial_state().unwrap().entries.len(), 5);
}

#[test]
fn a_flipped_byte_before_the_tail_is_reported_as_corruption() {
    let src = TempDir::new("flip-src");
    let (bytes, last_start) = write_entries(src.path(), 6);
    for at in 0..last_start {
        let dir = TempDir::new("flip");
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x40;
        fs::write(dir.path().join("log-00000001.seg"), &damaged).unwrap();
        match FileStorage::open(dir.path()) {
            Err(StorageError::Corruption(msg)) => {
                assert!(msg.contains("log-00000001.seg"), "{msg}");
            }
            Ok(s) => panic!(
                "flip at {at}: opened with {} entries",
                s.initial_state().unwrap().entries.len()
            ),
            Err(e) => panic!("flip at {at}: wrong error {e}"),
        }
    }
}

#[test]
fn segments_roll_over_and_snapshots_delete_covered_ones() {
    let dir = TempDir::new("segments");
    let mut s = FileStorage::open_with_segment_bytes(dir.path(), 300).unwrap();
    for i in 1..=60 {
        s.persist(
            Some(HardState { current_term: 1, voted_for: None, commit_index: i - 1 }),
            None,
            &[entry(i, 1)],
        )
        .unwrap();
    }
    let many = s.segment_count();
    assert!(many > 5, "only {many} segments");
    let meta =
        SnapshotMeta { last_included_index: 50, last_included_term: 1, voters: vec![1, 2, 3] };
    let snap = Snapshot { meta, data: Bytes::from_static(b"state at 50").into() };
    s.persist(None, Some(&snap), &[]).unwrap();
    // Covered segments go once a newer segment starts with the snapshot's mark.
    for i in 61..=70 {
        s.persist(None, None, &[entry(i, 1)]).unwrap();
    }
    assert!(s.segment_count() < many, "no segment deleted");
    assert_eq!(segments(dir.path()).len(), s.segment_count());
    drop(s);
    let s = FileStorage::open_with_segment_bytes(dir.path(), 300).unwrap();
    let state = s.initial_state().unwrap();
    assert_eq!(state.snapshot, Some(snap));
    assert_eq!(state.entries.first().map(|e| e.index), Some(51));
    assert_eq!(state.entries.last().map(|e| e.index), Some(70));
    assert_eq!(state.hard_state.commit_index, 59);
}

#[test]
fn a_crash_between_snapshot_file_and_log_mark_keeps_the_snapshot() {
    let dir = TempDir::new("snapcrash");
    let mut s = FileStorage::open(dir.path()).unwrap();
    s.persist(None, None, &[entry(1, 1), entry(2, 1), entry(3, 1)]).unwrap();
    let len_before = fs::metadata(&segments(dir.path())[0]).unwrap().len();
    let meta = SnapshotMeta { last_included_index: 2, last_included_term: 1, voters: vec![] };
    let snap = Snapshot { meta, data: Bytes::from_static(b"two").into() };
    s.persist(None, Some(&snap), &[]).unwrap();
    drop(s);
    // Lose the log append (the mark) but keep the renamed snapshot file.
    let seg = &segments(dir.path())[0];
    fs::OpenOptions::new().write(true).open(seg).unwrap().set_len(len_before).unwrap();
    let state = FileStorage::open(dir.path()).unwrap().initial_state().unwrap();
    assert_eq!(state.snapshot, Some(snap));
    assert_eq!(state.entries, vec![entry(3, 1)]);
}

#[test]
fn a_damaged_snapshot_file_is_reported() {
    let dir = TempDir::new("snapdamage");
    let mut s = FileStorage::open(dir.path()).unwrap();
    let meta = SnapshotMeta { last_included_index: 4, last_included_term: 2, voters: vec![7] };
    s.persist(None, Some(&Snapshot { meta, data: Bytes::from_static(b"data").into() }), &[])
        .unwrap();
    drop(s);
    let path = dir.path().join("snapshot");
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let err = FileStorage::open(dir.path()).unwrap_err();
    assert!(matches!(&err, StorageError::Corruption(m) if m.contains("checksum")), "{err}");
    // A missing snapshot file that the log refers to is corruption too.
    fs::remove_file(&path).unwrap();
    let err = FileStorage::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn a_refused_write_changes_nothing_on_disk() {
    let dir = TempDir::new("refused");
    let mut s = FileStorage::open(dir.path()).unwrap();
    s.persist(None, None, &[entry(1, 1)]).unwrap();
    assert!(s.persist(None, None, &[entry(5, 1)]).is_err());
    drop(s);
    let state = FileStorage::open(dir.path()).unwrap().initial_state().unwrap();
    assert_eq!(state.entries, vec![entry(1, 1)]);
}

/// A snapshot larger than the copy buffer, built in a spool file, is streamed to disk and comes
/// back on reopen read from the file, not loaded into memory.
#[test]
fn a_large_snapshot_streams_through_files() {
    use std::io::Write;
    let dir = TempDir::new("bigsnap");
    let spool_dir = TempDir::new("bigsnap-spool");
    let spool = raft::SnapshotSpool::Dir(spool_dir.path().to_path_buf());
    let mut w = spool.writer().unwrap();
    let pattern: Vec<u8> = (0..=250u8).collect();
    let mut expected = Vec::new();
    while expected.len() < 5 << 20 {
        w.write_all(&pattern).unwrap();
        expected.extend_from_slice(&pattern);
    }
    let data = w.finish().unwrap();
    assert!(!data.is_in_memory());
    let meta = SnapshotMeta { last_included_index: 9, last_included_term: 3, voters: vec![1, 2] };
    let snap = Snapshot { meta, data };
    let mut s = FileStorage::open(dir.path()).unwrap();
    s.persist(None, Some(&snap), &[]).unwrap();
    drop(s);
    let state = FileStorage::open(dir.path()).unwrap().initial_state().unwrap();
    let back = state.snapshot.unwrap();
    assert!(!back.data.is_in_memory(), "reopened snapshot was loaded into memory");
    assert_eq!(back.meta, snap.meta);
    assert_eq!(back.data.to_bytes().unwrap(), expected);
    // Cutting the file short is caught before anything is used.
    let path = dir.path().join("snapshot");
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 1).unwrap();
    let err = FileStorage::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
}
