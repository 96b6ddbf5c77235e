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

/// Opens with 64 KiB segments, so that a write after recovery preallocates 64 KiB of zeros rather
/// than 4 MiB: the tests that recover one image per byte offset keep their disk writes small.
fn open_small(dir: &Path) -> Result<FileStorage, StorageError> {
    FileStorage::open_with_segment_bytes(dir, 64 << 10)
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

/// The bytes of a segment up to its logical end, dropping the preallocated zeros after it. Only
/// for segments whose last record ends in a nonzero byte (the entries here end in a digit or a
/// letter of their data).
fn logical(path: &Path) -> Vec<u8> {
    let mut bytes = fs::read(path).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    bytes.truncate(end);
    bytes
}

/// Writes a hard state, then `entries`, one persist each (so one record each); returns the
/// segment's logical bytes and the offset where each entry's record starts.
fn write_each(dir: &Path, entries: &[Entry]) -> (Vec<u8>, Vec<usize>) {
    let mut s = FileStorage::open(dir).unwrap();
    s.persist(Some(HardState { current_term: 1, voted_for: Some(0), commit_index: 0 }), None, &[])
        .unwrap();
    let mut starts = Vec::new();
    for e in entries {
        starts.push(logical(&segments(dir)[0]).len());
        s.persist(None, None, std::slice::from_ref(e)).unwrap();
    }
    drop(s);
    (logical(&segments(dir)[0]), starts)
}

/// Writes `n` entries, one persist each (so one record each), plus a hard state; returns the
/// segment's logical bytes and the offset where the last entry's record starts.
fn write_entries(dir: &Path, n: u64) -> (Vec<u8>, usize) {
    let entries: Vec<Entry> = (1..=n).map(|i| entry(i, 1)).collect();
    let (bytes, starts) = write_each(dir, &entries);
    (bytes, starts[starts.len() - 1])
}

#[test]
fn a_torn_last_record_is_dropped_at_every_cut() {
    let src = TempDir::new("torn-src");
    let (bytes, last_start) = write_entries(src.path(), 5);
    for cut in last_start..bytes.len() {
        let dir = TempDir::new("torn");
        fs::write(dir.path().join("log-00000001.seg"), &bytes[..cut]).unwrap();
        let s = open_small(dir.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
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
    let seg = segments(dir.path())[0].clone();
    let len_before = logical(&seg).len();
    let meta = SnapshotMeta { last_included_index: 2, last_included_term: 1, voters: vec![] };
    let snap = Snapshot { meta, data: Bytes::from_static(b"two").into() };
    s.persist(None, Some(&snap), &[]).unwrap();
    drop(s);
    // Lose the log write (the mark: its bytes are still the preallocated zeros) but keep the
    // renamed snapshot file.
    let mut bytes = fs::read(&seg).unwrap();
    let mark_end = logical(&seg).len();
    assert!(mark_end > len_before, "no mark written");
    bytes[len_before..mark_end].fill(0);
    fs::write(&seg, &bytes).unwrap();
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

/// The active segment is longer than its records (zeros ahead of them); reopening finds the end
/// of the records, keeps the zeros, and writes the next record over them, not after them.
#[test]
fn reopening_keeps_every_entry_and_writes_over_the_zeros() {
    let dir = TempDir::new("reopen-zeros");
    let (bytes, _) = write_entries(dir.path(), 10);
    let seg = segments(dir.path())[0].clone();
    let file_len = fs::metadata(&seg).unwrap().len();
    assert!(file_len > bytes.len() as u64, "not preallocated: {file_len} bytes");
    assert!(fs::read(&seg).unwrap()[bytes.len()..].iter().all(|&b| b == 0));

    let mut s = FileStorage::open(dir.path()).unwrap();
    let want: Vec<Entry> = (1..=10).map(|i| entry(i, 1)).collect();
    assert_eq!(s.initial_state().unwrap().entries, want);
    assert_eq!(fs::metadata(&seg).unwrap().len(), file_len, "the zeros were cut on open");
    s.persist(None, None, &[entry(11, 2)]).unwrap();
    drop(s);
    // The new record sits right after the old ones; the file did not grow.
    let after = logical(&seg);
    assert_eq!(after[..bytes.len()], bytes[..]);
    assert_eq!(after.len() - bytes.len(), 8 + 1 + 16 + entry(11, 2).data.len());
    assert_eq!(fs::metadata(&seg).unwrap().len(), file_len);
    let state = FileStorage::open(dir.path()).unwrap().initial_state().unwrap();
    assert_eq!(state.entries.len(), 11);
    assert_eq!(state.entries.last(), Some(&entry(11, 2)));
}

/// A crash image where the tail holds part of a record and then the preallocated zeros (the
/// header written, the payload partly or not at all): recovery keeps the records before it, at
/// every cut. Zeros alone are free space and stay.
#[test]
fn a_torn_record_followed_by_zeros_is_dropped_at_every_cut() {
    const FILE_LEN: usize = 64 << 10;
    let src = TempDir::new("torn-zeros-src");
    let (bytes, last_start) = write_entries(src.path(), 5);
    for cut in last_start..bytes.len() {
        let dir = TempDir::new("torn-zeros");
        let path = dir.path().join("log-00000001.seg");
        let mut image = bytes[..cut].to_vec();
        image.resize(FILE_LEN, 0);
        fs::write(&path, &image).unwrap();
        let mut s = open_small(dir.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let state = s.initial_state().unwrap();
        assert_eq!(state.entries.len(), 4, "cut at {cut} of {}", bytes.len());
        assert_eq!(state.hard_state.current_term, 1);
        let len = fs::metadata(&path).unwrap().len() as usize;
        if cut == last_start {
            assert_eq!(len, FILE_LEN, "zeros alone are not a torn write");
        } else {
            assert_eq!(len, last_start, "cut at {cut}: torn bytes kept");
        }
        s.persist(None, None, &[entry(5, 2)]).unwrap();
        drop(s);
        assert_eq!(logical(&path).len(), bytes.len(), "cut at {cut}: written elsewhere");
        let state = FileStorage::open(dir.path()).unwrap().initial_state().unwrap();
        assert_eq!(state.entries.len(), 5);
        assert_eq!(state.entries.last(), Some(&entry(5, 2)));
    }
}

/// Records written over zeros reach the disk sector by sector in no set order: a crash during an
/// unsynced write can keep later records of it but lose a sector before them, which then reads
/// as the zeros it held. That is a torn write, not damage. A bad record with no zeroed sector
/// and valid records after it is still corruption.
#[test]
fn an_unsynced_write_with_a_lost_sector_is_dropped() {
    let src = TempDir::new("lost-sector-src");
    let big = |i: u64| Entry { term: 1, index: i, data: Bytes::from(vec![b'x'; 700]) };
    let entries: Vec<Entry> = (1..=8).map(big).collect();
    let (bytes, starts) = write_each(src.path(), &entries);
    // The write of entry 5 onwards did not complete: either the sector holding the start of
    // its record, or a whole sector inside its payload, never reached the disk.
    let at = starts[4];
    let first_sector_end = (at / 512 + 1) * 512;
    let inner_sector = first_sector_end..first_sector_end + 512;
    assert!(inner_sector.end < starts[5], "the test expects a sector inside record 5");
    for lost in [at..first_sector_end, inner_sector] {
        let dir = TempDir::new("lost-sector");
        let path = dir.path().join("log-00000001.seg");
        let mut image = bytes.clone();
        image[lost.clone()].fill(0);
        image.resize(64 << 10, 0);
        fs::write(&path, &image).unwrap();
        let mut s = open_small(dir.path()).unwrap_or_else(|e| panic!("{lost:?}: {e}"));
        assert_eq!(s.initial_state().unwrap().entries, entries[..4], "lost {lost:?}");
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, at);
        s.persist(None, None, &[big(5)]).unwrap();
        drop(s);
        let state = FileStorage::open(dir.path()).unwrap().initial_state().unwrap();
        assert_eq!(state.entries, entries[..5]);
    }
    // The same record damaged without a zeroed sector, with valid records after it.
    let dir = TempDir::new("lost-sector-flip");
    let mut image = bytes.clone();
    image[at + 100] ^= 0x40;
    fs::write(dir.path().join("log-00000001.seg"), &image).unwrap();
    let err = FileStorage::open(dir.path()).unwrap_err();
    assert!(matches!(&err, StorageError::Corruption(m) if m.contains(&format!("{at}"))), "{err}");
}

/// Segments other than the newest may end in zeros (a crash after the segment stopped being
/// written but before it was cut to its logical end): not damage.
#[test]
fn an_older_segment_with_a_zero_tail_opens() {
    let dir = TempDir::new("older-zeros");
    let mut s = FileStorage::open_with_segment_bytes(dir.path(), 300).unwrap();
    for i in 1..=30 {
        s.persist(None, None, &[entry(i, 1)]).unwrap();
    }
    drop(s);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "only {} segments", segs.len());
    for seg in &segs[..segs.len() - 1] {
        let mut bytes = fs::read(seg).unwrap();
        bytes.resize(bytes.len() + 5000, 0);
        fs::write(seg, &bytes).unwrap();
    }
    let mut s = FileStorage::open_with_segment_bytes(dir.path(), 300).unwrap();
    let want: Vec<Entry> = (1..=30).map(|i| entry(i, 1)).collect();
    assert_eq!(s.initial_state().unwrap().entries, want);
    s.persist(None, None, &[entry(31, 1)]).unwrap();
    drop(s);
    let state = FileStorage::open_with_segment_bytes(dir.path(), 300).unwrap();
    assert_eq!(state.initial_state().unwrap().entries.len(), 31);
    // Zeros with something else after them in an older segment are still damage.
    let mut bytes = fs::read(&segs[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] = 1;
    fs::write(&segs[0], &bytes).unwrap();
    let err = FileStorage::open_with_segment_bytes(dir.path(), 300).unwrap_err();
    assert!(matches!(&err, StorageError::Corruption(m) if m.contains("log-00000001")), "{err}");
}

/// When a new segment starts, the old one is cut to its logical end; the new one is
/// preallocated (here up to `segment_bytes`, which is below the preallocation step).
#[test]
fn rolling_cuts_the_old_segment_to_its_logical_end() {
    let dir = TempDir::new("roll-cut");
    write_entries(dir.path(), 3);
    let first = segments(dir.path())[0].clone();
    let preallocated = fs::metadata(&first).unwrap().len();
    assert!(preallocated > 1000, "first segment not preallocated: {preallocated} bytes");
    let mut s = FileStorage::open_with_segment_bytes(dir.path(), 1000).unwrap();
    let mut i = 4;
    while s.segment_count() < 2 {
        s.persist(None, None, &[entry(i, 1)]).unwrap();
        i += 1;
    }
    let cut = fs::read(&first).unwrap();
    assert!(cut.len() >= 1000 && cut.len() < 1100, "old segment is {} bytes", cut.len());
    assert_ne!(cut.last(), Some(&0), "old segment still ends in zeros");
    assert_eq!(fs::metadata(&segments(dir.path())[1]).unwrap().len(), 1000);
    drop(s);
    let state = FileStorage::open_with_segment_bytes(dir.path(), 1000).unwrap();
    let want: Vec<Entry> = (1..i).map(|i| entry(i, 1)).collect();
    assert_eq!(state.initial_state().unwrap().entries, want);
}
