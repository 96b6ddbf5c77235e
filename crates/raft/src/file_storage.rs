//! [`FileStorage`]: a Raft log, hard state and snapshot on disk.
//!
//! # Layout
//!
//! A directory holds numbered log segments (`log-00000001.seg`, …) and at most one `snapshot`
//! file. The log is a stream of records; the newest segment is the one appended to. Every
//! record is framed and checksummed:
//!
//! ```text
//! record   := length:u32le  crc:u32le  kind:u8  payload     (length = 1 + |payload|;
//!                                                            crc = crc32(kind ‖ payload))
//! entry    := kind 1: term:u64le  index:u64le  data:bytes    (an entry at index i replaces
//!                                                            every stored entry from i on)
//! hard     := kind 2: current_term:u64le  has_vote:u8  voted_for:u64le  commit_index:u64le
//! snapmark := kind 3: index:u64le  term:u64le                (a snapshot was persisted here)
//! snapshot file := magic "RAFTSNAP"  version:u32le  index:u64le  term:u64le
//!                  n:u32le  voters:u64le{n}  len:u64le  data{len}  crc:u32le (of all before)
//! ```
//!
//! # Durability
//!
//! One [`Storage::persist`] call is one `write` of all its records and one `fdatasync`: the
//! driver batches every proposal that arrived together into one call, so many appends share one
//! fsync (group commit). A snapshot is written to a temporary file, synced, renamed into place,
//! and the directory synced, before the log records that depend on it.
//!
//! # Recovery
//!
//! Opening replays every segment in order. A record cut short at the end of the newest segment,
//! or a bad record that ends exactly at its end, or zeros to its end, is a torn write: the
//! segment is truncated there (everything before it is kept) and the loss is logged to stderr.
//! Any other bad record is [`StorageError::Corruption`], naming the file and offset: damage
//! before the tail means acknowledged data is gone, and guessing would be worse than stopping.
//!
//! # Segments
//!
//! A new segment starts once the current one passes `segment_bytes`, and begins with a copy of
//! the hard state and snapshot mark, so older segments whose entries are all covered by the
//! snapshot can be deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::ready::PersistedState;
use crate::storage::{Storage, StorageError, apply_persist};
use crate::types::{Entry, HardState, Index, NodeId, Snapshot, SnapshotMeta, Term};

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_SNAPSHOT_MARK: u8 = 3;
const HEADER_BYTES: usize = 8;
/// Records larger than this are refused on write and treated as damage on read.
const MAX_RECORD_BYTES: usize = 1 << 30;
const SNAPSHOT_MAGIC: &[u8; 8] = b"RAFTSNAP";
const SNAPSHOT_VERSION: u32 = 1;
const SNAPSHOT_FILE: &str = "snapshot";

/// Default size at which a new segment is started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Durable Raft storage in a directory. See the module documentation for the format.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
    /// What is durable, as [`Storage::initial_state`] returns it.
    image: PersistedState,
    /// Segments, oldest first.
    segments: Vec<Segment>,
    active: File,
    active_len: u64,
    segment_bytes: u64,
    /// A write failed: the image may be ahead of the disk, so refuse further writes.
    failed: bool,
}

/// What recovery and compaction need to know of one segment file.
#[derive(Debug, Clone, Copy)]
struct Segment {
    seq: u64,
    /// The highest entry index written in it (0 if none). Once the snapshot covers it, and it
    /// is not the newest segment, the file can go.
    max_index: Index,
}

fn corruption(path: &Path, offset: u64, what: &str) -> StorageError {
    StorageError::Corruption(format!("{}: at byte {offset}: {what}", path.display()))
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("log-{seq:08}.seg"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Appends one framed record to `out`.
fn frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let length = (1 + payload.len()) as u32;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(payload);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

fn encode_entry(out: &mut Vec<u8>, e: &Entry) {
    let mut payload = Vec::with_capacity(16 + e.data.len());
    payload.extend_from_slice(&e.term.to_le_bytes());
    payload.extend_from_slice(&e.index.to_le_bytes());
    payload.extend_from_slice(&e.data);
    frame(out, KIND_ENTRY, &payload);
}

fn encode_hard_state(out: &mut Vec<u8>, hs: &HardState) {
    let mut payload = Vec::with_capacity(25);
    payload.extend_from_slice(&hs.current_term.to_le_bytes());
    payload.push(u8::from(hs.voted_for.is_some()));
    payload.extend_from_slice(&hs.voted_for.unwrap_or(0).to_le_bytes());
    payload.extend_from_slice(&hs.commit_index.to_le_bytes());
    frame(out, KIND_HARD_STATE, &payload);
}

fn encode_mark(out: &mut Vec<u8>, index: Index, term: Term) {
    let mut payload = Vec::with_capacity(16);
    payload.extend_from_slice(&index.to_le_bytes());
    payload.extend_from_slice(&term.to_le_bytes());
    frame(out, KIND_SNAPSHOT_MARK, &payload);
}

/// One decoded record.
enum Record {
    Entry(Entry),
    HardState(HardState),
    Mark(Index, Term),
}

/// Reads the record at `at`. `Ok(None)` means "no valid record here" (the caller decides
/// between torn tail and corruption); `Err` is a record that is whole and checksummed but
/// does not parse.
fn read_record(buf: &[u8], at: usize) -> Result<Option<(Record, usize)>, String> {
    if buf.len() - at < HEADER_BYTES {
        return Ok(None);
    }
    let length = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
    let crc = u32::from_le_bytes([buf[at + 4], buf[at + 5], buf[at + 6], buf[at + 7]]);
    if length == 0 || length > MAX_RECORD_BYTES || buf.len() - at - HEADER_BYTES < length {
        return Ok(None);
    }
    let body = &buf[at + HEADER_BYTES..at + HEADER_BYTES + length];
    if crc32fast::hash(body) != crc {
        return Ok(None);
    }
    let (kind, p) = (body[0], &body[1..]);
    let record = match kind {
        KIND_ENTRY if p.len() >= 16 => Record::Entry(Entry {
            term: u64_at(p, 0),
            index: u64_at(p, 8),
            data: Bytes::copy_from_slice(&p[16..]),
        }),
        KIND_HARD_STATE if p.len() == 25 => Record::HardState(HardState {
            current_term: u64_at(p, 0),
            voted_for: (p[8] == 1).then(|| u64_at(p, 9)),
            commit_index: u64_at(p, 17),
        }),
        KIND_SNAPSHOT_MARK if p.len() == 16 => Record::Mark(u64_at(p, 0), u64_at(p, 8)),
        _ => return Err(format!("record of kind {kind} with {} payload bytes", p.len())),
    };
    Ok(Some((record, at + HEADER_BYTES + length)))
}

impl FileStorage {
    /// Opens (or creates) storage in `dir`, recovering what is durable.
    ///
    /// # Errors
    /// [`StorageError::Io`] if the directory cannot be read or written;
    /// [`StorageError::Corruption`] if stored data is damaged anywhere but at the torn tail.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStorage, StorageError> {
        FileStorage::open_with_segment_bytes(dir, DEFAULT_SEGMENT_BYTES)
    }

    /// Like [`open`](Self::open), starting a new segment every `segment_bytes` (for tests of
    /// segment rollover).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with_segment_bytes(
        dir: impl AsRef<Path>,
        segment_bytes: u64,
    ) -> Result<FileStorage, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let mut seqs: Vec<u64> = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name.strip_prefix("log-").and_then(|r| r.strip_suffix(".seg")) {
                let seq = seq.parse().map_err(|_| {
                    StorageError::Corruption(format!(
                        "{}: unexpected segment name {name}",
                        dir.display()
                    ))
                })?;
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();

        // The snapshot file covers everything up to its index; segments holding only such
        // entries may have been deleted, so the log may start anywhere up to just after it.
        let snapshot = read_snapshot(&dir)?;
        let floor = snapshot.as_ref().map_or(0, |s| s.meta.last_included_index);
        let mut replay =
            Replay { entries: Vec::new(), hard_state: HardState::default(), mark: 0, floor };
        let mut segments = Vec::new();
        for (i, &seq) in seqs.iter().enumerate() {
            let last = i + 1 == seqs.len();
            let max_index = replay.segment(&segment_path(&dir, seq), last)?;
            segments.push(Segment { seq, max_index });
        }
        match &snapshot {
            None if replay.mark > 0 => {
                let what = "the log marks a snapshot that is missing";
                return Err(corruption(&dir.join(SNAPSHOT_FILE), 0, what));
            }
            None => {}
            Some(_) if replay.mark > floor => {
                let what = "the log marks a newer snapshot than the snapshot file holds";
                return Err(corruption(&dir.join(SNAPSHOT_FILE), 0, what));
            }
            Some(snap) => {
                // Also covers a crash after the snapshot file was renamed but before its mark
                // was appended (contract: the state after the first step of the call).
                apply_mark(&mut replay.entries, floor, snap.meta.last_included_term);
                if replay.entries.first().is_some_and(|e| e.index != floor + 1) {
                    return Err(corruption(&dir, 0, "the log does not continue the snapshot"));
                }
            }
        }
        let image =
            PersistedState { hard_state: replay.hard_state, snapshot, entries: replay.entries };

        if segments.is_empty() {
            segments.push(Segment { seq: 1, max_index: 0 });
            File::create(segment_path(&dir, 1))?;
            sync_dir(&dir)?;
        }
        let active_seq = segments.last().map_or(1, |s| s.seq);
        let active = OpenOptions::new().append(true).open(segment_path(&dir, active_seq))?;
        let active_len = active.metadata()?.len();
        Ok(FileStorage { dir, image, segments, active, active_len, segment_bytes, failed: false })
    }

    /// The directory this storage lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of segment files (for tests and monitoring).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn write_snapshot(&self, snap: &Snapshot) -> Result<(), StorageError> {
        let mut out = Vec::with_capacity(64 + snap.data.len());
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&snap.meta.last_included_index.to_le_bytes());
        out.extend_from_slice(&snap.meta.last_included_term.to_le_bytes());
        out.extend_from_slice(&(snap.meta.voters.len() as u32).to_le_bytes());
        for v in &snap.meta.voters {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(snap.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&snap.data);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        let tmp = self.dir.join("snapshot.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&out)?;
        file.sync_all()?;
        fs::rename(&tmp, self.dir.join(SNAPSHOT_FILE))?;
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// Writes one persist call: the snapshot file first, then one append of every record and one
    /// fsync.
    fn write(
        &mut self,
        hard_state: Option<HardState>,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        if let Some(snap) = snapshot {
            self.write_snapshot(snap)?;
        }
        let mut out = Vec::new();
        if let Some(snap) = snapshot {
            encode_mark(&mut out, snap.meta.last_included_index, snap.meta.last_included_term);
        }
        for e in entries {
            encode_entry(&mut out, e);
        }
        if let Some(hs) = &hard_state {
            encode_hard_state(&mut out, hs);
        }
        self.active.write_all(&out)?;
        self.active.sync_data()?;
        self.active_len += out.len() as u64;
        if let Some(last) = entries.last()
            && let Some(seg) = self.segments.last_mut()
        {
            seg.max_index = seg.max_index.max(last.index);
        }
        if snapshot.is_some() {
            self.delete_covered_segments()?;
        }
        if self.active_len >= self.segment_bytes {
            self.roll_segment()?;
        }
        Ok(())
    }

    /// Starts a new segment beginning with the current hard state and snapshot mark (so that
    /// once older segments are gone it is self-contained), then deletes the old segments the
    /// snapshot covers entirely.
    fn roll_segment(&mut self) -> Result<(), StorageError> {
        let seq = self.segments.last().map_or(0, |s| s.seq) + 1;
        let path = segment_path(&self.dir, seq);
        let mut file = OpenOptions::new().create_new(true).append(true).open(&path)?;
        let mut head = Vec::new();
        encode_hard_state(&mut head, &self.image.hard_state);
        if let Some(s) = &self.image.snapshot {
            encode_mark(&mut head, s.meta.last_included_index, s.meta.last_included_term);
        }
        // The live entries must all be in segments that are kept; copy none, keep their files.
        file.write_all(&head)?;
        file.sync_data()?;
        sync_dir(&self.dir)?;
        self.active = file;
        self.active_len = head.len() as u64;
        self.segments.push(Segment { seq, max_index: 0 });
        self.delete_covered_segments()
    }

    /// Deletes the oldest segments while every entry in them is covered by the snapshot. Never
    /// the newest segment, which is appended to.
    fn delete_covered_segments(&mut self) -> Result<(), StorageError> {
        let covered = self.image.snapshot.as_ref().map_or(0, |s| s.meta.last_included_index);
        let n = self.segments.len();
        let gone = self.segments[..n - 1].iter().take_while(|s| s.max_index <= covered).count();
        let deleted = gone > 0;
        for old in self.segments.drain(..gone) {
            fs::remove_file(segment_path(&self.dir, old.seq))?;
        }
        if deleted {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// The effect of a snapshot mark at (`index`, `term`) on the log (contract rule 5): the
/// entries after it stay unless the log holds a different entry at `index`, in which case
/// the log belonged to another history and goes entirely. (An entry at `index` can only be
/// missing because the log is shorter, or because it was compacted into an earlier snapshot
/// and so matched.)
fn apply_mark(entries: &mut Vec<Entry>, index: Index, term: Term) {
    if entries.iter().any(|e| e.index == index && e.term != term) {
        entries.clear();
    } else {
        entries.retain(|e| e.index > index);
    }
}

/// The state rebuilt while replaying segments in order.
struct Replay {
    entries: Vec<Entry>,
    hard_state: HardState,
    /// The newest snapshot mark seen.
    mark: Index,
    /// The snapshot file's index: the log may start anywhere up to just after it.
    floor: Index,
}

impl Replay {
    /// Replays one segment; returns the highest entry index it holds. In the newest segment a
    /// torn tail is truncated away.
    fn segment(&mut self, path: &Path, newest: bool) -> Result<Index, StorageError> {
        let mut buf = Vec::new();
        File::open(path)?.read_to_end(&mut buf)?;
        let mut at = 0;
        let mut max_index = 0;
        while at < buf.len() {
            match read_record(&buf, at) {
                Ok(Some((record, next))) => {
                    match record {
                        Record::Entry(e) => {
                            let next_index = match self.entries.last() {
                                Some(last) => last.index + 1,
                                None => self.mark.max(self.floor) + 1,
                            };
                            if e.index > next_index || e.index <= self.mark {
                                return Err(corruption(
                                    path,
                                    at as u64,
                                    &format!(
                                        "entry {} does not continue the log (next is {next_index})",
                                        e.index
                                    ),
                                ));
                            }
                            max_index = max_index.max(e.index);
                            let keep = self.entries.partition_point(|x| x.index < e.index);
                            self.entries.truncate(keep);
                            self.entries.push(e);
                        }
                        Record::HardState(hs) => self.hard_state = hs,
                        Record::Mark(index, term) => {
                            apply_mark(&mut self.entries, index, term);
                            self.mark = self.mark.max(index);
                        }
                    }
                    at = next;
                }
                Ok(None) => {
                    // A torn write leaves nothing valid after it; damage in the middle does.
                    if newest && !valid_record_after(&buf, at) {
                        eprintln!(
                            "raft storage: {}: dropping a torn write of {} bytes at byte {at} \
                             (never acknowledged)",
                            path.display(),
                            buf.len() - at
                        );
                        let file = OpenOptions::new().write(true).open(path)?;
                        file.set_len(at as u64)?;
                        file.sync_all()?;
                        break;
                    }
                    let what = "bad length or checksum before the end of the log";
                    return Err(corruption(path, at as u64, what));
                }
                Err(what) => return Err(corruption(path, at as u64, &what)),
            }
        }
        Ok(max_index)
    }
}

/// Whether any whole, checksummed record starts after byte `at`.
fn valid_record_after(buf: &[u8], at: usize) -> bool {
    (at + 1..buf.len()).any(|p| matches!(read_record(buf, p), Ok(Some(_))))
}

fn read_snapshot(dir: &Path) -> Result<Option<Snapshot>, StorageError> {
    let path = dir.join(SNAPSHOT_FILE);
    let buf = match fs::read(&path) {
        Ok(buf) => buf,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let bad = |what: &str| corruption(&path, 0, what);
    if buf.len() < 8 + 4 + 8 + 8 + 4 + 8 + 4 || &buf[..8] != SNAPSHOT_MAGIC {
        return Err(bad("not a snapshot file (bad magic or too short)"));
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(bad("checksum mismatch"));
    }
    let version = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
    if version != SNAPSHOT_VERSION {
        return Err(bad(&format!("unknown snapshot format version {version}")));
    }
    let index = u64_at(body, 12);
    let term = u64_at(body, 20);
    let n = u32::from_le_bytes([body[28], body[29], body[30], body[31]]) as usize;
    let voters_end = 32 + 8 * n;
    if body.len() < voters_end + 8 {
        return Err(bad("truncated voter list"));
    }
    let voters: Vec<NodeId> = (0..n).map(|i| u64_at(body, 32 + 8 * i)).collect();
    let len = u64_at(body, voters_end) as usize;
    if body.len() != voters_end + 8 + len {
        return Err(bad("data length does not match the file"));
    }
    let data = Bytes::copy_from_slice(&body[voters_end + 8..]);
    let meta = SnapshotMeta { last_included_index: index, last_included_term: term, voters };
    Ok(Some(Snapshot { meta, data }))
}

impl Storage for FileStorage {
    fn initial_state(&self) -> Result<PersistedState, StorageError> {
        Ok(self.image.clone())
    }

    fn persist(
        &mut self,
        hard_state: Option<HardState>,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::Invalid(
                "an earlier write failed; reopen the storage".into(),
            ));
        }
        if hard_state.is_none() && snapshot.is_none() && entries.is_empty() {
            return Ok(());
        }
        if let Some(e) = entries.iter().find(|e| e.data.len() + 17 > MAX_RECORD_BYTES) {
            return Err(StorageError::Invalid(format!("entry {} is too large", e.index)));
        }
        // Checks the request, then updates the image; a refused request changes nothing.
        apply_persist(&mut self.image, hard_state, snapshot, entries)?;
        let written = self.write(hard_state, snapshot, entries);
        if written.is_err() {
            // The image is now ahead of the disk; only reopening tells what is durable.
            self.failed = true;
        }
        written
    }

    fn raft_state_size(&self) -> u64 {
        24 + self.image.entries.iter().map(Entry::size_bytes).sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_storage_passes_the_conformance_suite() {
        let base = std::env::temp_dir().join(format!("raft-fs-suite-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let counter = std::sync::atomic::AtomicU64::new(0);
        crate::testing::storage_suite(
            || {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                FileStorage::open(base.join(n.to_string())).unwrap()
            },
            |s| FileStorage::open(s.dir()).unwrap(),
        );
        let _ = fs::remove_dir_all(&base);
    }
}
