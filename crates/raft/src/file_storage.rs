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
//! A segment's records end at its *logical end*. The newest segment's file is normally longer and
//! holds zeros from there to its end (see Durability); a record's length is at least 1, so zeros
//! are never read as a record.
//!
//! # Durability
//!
//! One [`Storage::persist`] call is one positioned write of all its records at the logical end
//! and one `fdatasync` (plus, now and then, the extension described below): the driver merges
//! everything queued during one write into the next call, so many appends share one fsync
//! (group commit). A snapshot is written to a temporary file,
//! synced, renamed into place, and the directory synced, before the log records that depend on
//! it.
//!
//! The newest segment is preallocated: its file is kept filled with zeros, really written, ahead
//! of the logical end, so the records of a persist overwrite bytes that already exist and its
//! `fdatasync` changes no file size. On ext4 an `fdatasync` that changes the size must also
//! write the inode; measured on the project's machine, a 400-byte write and `fdatasync` took
//! 0.20 ms (median) appending and 0.13–0.15 ms overwriting. When a write would pass the zeros,
//! the file is first extended with zeros to the next multiple of 4 MiB past the write (but not
//! past `segment_bytes`) and synced: one `fdatasync` that changes the size per 4 MiB instead of
//! one per write. A new segment is filled the same way when it is created. (`fallocate` alone
//! would not do: its unwritten extents need a metadata update when first written.) The write
//! that fills a segment may run past the zeros; the segment rolls right after it.
//!
//! # Recovery
//!
//! Opening replays every segment in order. Zeros from the end of the last valid record to the
//! end of the file are free space, not damage: in the newest segment they are kept, the logical
//! end is set where the records end, and the next write overwrites them. An older segment
//! normally has none (it is truncated to its logical end before the next one starts), but is
//! accepted with them all the same.
//!
//! In the newest segment, a bad record is a torn write if nothing valid follows it (a record cut
//! short, or partly written over the zeros), or if a 512-byte disk sector it lies in holds only
//! zeros from the record's start (or the sector's, if later) to the sector's end. Records are
//! written over zeros and reach the disk sector by sector in no set order, so a crash during an
//! unsynced write can keep later sectors of it but not an earlier one, which then reads as the
//! zeros it held; and since an `fdatasync` makes every earlier write durable, nothing from such
//! a record on was synced. Either way the segment is truncated at the bad record (everything
//! before it is kept) and the loss is logged to stderr. Any other bad record is
//! [`StorageError::Corruption`], naming the file and offset: damage before the tail means
//! acknowledged data is gone, and guessing would be worse than stopping. (A damaged record in
//! the newest segment that happens to hold zeros to the end of one of its sectors is taken for a
//! torn write: the price of reading zeros as "not yet written".)
//!
//! # A full disk
//!
//! A persist that fails for lack of space (`ENOSPC`, `EDQUOT`; see
//! [`StorageError::is_no_space`]) changes nothing: the in-memory image and the logical end move
//! only once the records are written and synced, a partial snapshot file is removed, and bytes
//! the failed write may have left past the logical end are covered with zeros by the next write.
//! The caller may retry the same call. If the zeros of a preallocation do not fit, the file is
//! cut back and the records extend it instead. Segment deletion and rollover come after the
//! write is durable; if they fail for space they are tried again after the next write. Any
//! other error leaves the storage refusing writes until it is reopened.
//!
//! # Segments
//!
//! A new segment starts once the current one passes `segment_bytes`. The current one is first
//! truncated to its logical end and synced; the new one begins with a copy of the hard state and
//! snapshot mark, so older segments whose entries are all covered by the snapshot can be
//! deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::ready::PersistedState;
use crate::snapshot::SnapshotData;
use crate::storage::{Image, Storage, StorageError};
use crate::types::{
    Entry, HardState, Index, MAX_TERM_OR_INDEX, NodeId, Snapshot, SnapshotMeta, Term,
};

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_SNAPSHOT_MARK: u8 = 3;
const HEADER_BYTES: usize = 8;
/// Records larger than this are refused on write and treated as damage on read.
const MAX_RECORD_BYTES: usize = 1 << 30;
const SNAPSHOT_MAGIC: &[u8; 8] = b"RAFTSNAP";
const SNAPSHOT_VERSION: u32 = 1;
const SNAPSHOT_FILE: &str = "snapshot";
/// Snapshot data is copied and checksummed in pieces of this size, never loaded whole.
const COPY_CHUNK: usize = 1 << 20;
/// The newest segment is filled with zeros ahead of its logical end up to a multiple of this
/// (or to the segment size, if less).
const PREALLOC_STEP: u64 = 4 << 20;
/// The unit a disk writes atomically at best; a crash can keep any subset of the sectors of an
/// unsynced write.
const SECTOR_BYTES: usize = 512;

/// Default size at which a new segment is started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Durable Raft storage in a directory. See the module documentation for the format.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
    /// What is durable, as [`Storage::initial_state`] returns it.
    image: Image,
    /// Segments, oldest first.
    segments: Vec<Segment>,
    active: File,
    /// The logical end of the newest segment: where the next record is written.
    active_len: u64,
    /// The newest segment's file length; from `active_len` up to it the file holds zeros.
    active_alloc: u64,
    segment_bytes: u64,
    /// A write failed: the image may be ahead of the disk, so refuse further writes.
    failed: bool,
    /// A write that failed for lack of space may have left bytes of its records from
    /// `active_len` up to here, where the file should hold zeros: the next write covers them
    /// with zeros again, so that no stale record follows the ones it writes.
    dirty_until: u64,
    /// The term and vote as of the last sync.
    synced_term_vote: (Term, Option<NodeId>),
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

/// Fault injection for the unit tests: `check` fails the chosen I/O step with `ENOSPC`.
#[cfg(test)]
mod fault {
    use std::cell::Cell;
    use std::io;

    thread_local! {
        /// While set on this thread: (I/O steps to let through, then fail this many).
        pub(super) static PLAN: Cell<Option<(u32, u32)>> = const { Cell::new(None) };
    }

    /// Fails with `ENOSPC` if the plan says this step fails.
    pub(super) fn check(what: &str) -> io::Result<()> {
        PLAN.with(|plan| match plan.get() {
            Some((0, 0)) | None => Ok(()),
            Some((0, fail)) => {
                plan.set(Some((0, fail - 1)));
                Err(io::Error::new(io::ErrorKind::StorageFull, format!("{what}: injected ENOSPC")))
            }
            Some((pass, fail)) => {
                plan.set(Some((pass - 1, fail)));
                Ok(())
            }
        })
    }
}

#[cfg(not(test))]
mod fault {
    /// No faults outside the unit tests.
    #[inline(always)]
    pub(super) fn check(_what: &str) -> std::io::Result<()> {
        Ok(())
    }
}

/// Called after each sync of a segment file. Unit tests record what each sync made durable,
/// to build the disk images a power cut can leave (see `tests::crash_images`).
#[cfg(test)]
fn synced(path: &Path) {
    tests::record_synced(path);
}

#[cfg(not(test))]
fn synced(_path: &Path) {}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("log-{seq:08}.seg"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Where to fill a segment's zeros up to so that a write ending at `end` fits: the next multiple
/// of [`PREALLOC_STEP`] above `end`, but not past `segment_bytes` (the segment rolls there), and
/// never below `end`.
fn preallocation_end(end: u64, segment_bytes: u64) -> u64 {
    (end / PREALLOC_STEP + 1).saturating_mul(PREALLOC_STEP).min(segment_bytes).max(end)
}

/// Writes zeros over `[from, to)` of `file`, a piece at a time.
fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![0u8; to.saturating_sub(from).min(COPY_CHUNK as u64) as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
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
    // Terms and indexes are bounded (as in messages), so replay's arithmetic on them cannot
    // overflow; a larger one was never written by this code.
    let largest = match &record {
        Record::Entry(e) => e.term.max(e.index),
        Record::HardState(h) => h.current_term.max(h.commit_index),
        Record::Mark(index, term) => (*index).max(*term),
    };
    if largest > MAX_TERM_OR_INDEX {
        return Err(format!(
            "record of kind {kind} holds {largest}, past the largest term or index"
        ));
    }
    if matches!(&record, Record::Entry(e) if e.index == 0) {
        return Err("an entry with index 0".into());
    }
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
        let mut active_len = 0;
        for (i, &seq) in seqs.iter().enumerate() {
            let last = i + 1 == seqs.len();
            let (max_index, end) = replay.segment(&segment_path(&dir, seq), last)?;
            segments.push(Segment { seq, max_index });
            active_len = end;
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
        let image = Image::new(PersistedState {
            hard_state: replay.hard_state,
            snapshot,
            entries: replay.entries,
        });

        if segments.is_empty() {
            segments.push(Segment { seq: 1, max_index: 0 });
            let file = File::create(segment_path(&dir, 1))?;
            write_zeros(&file, 0, preallocation_end(0, segment_bytes))?;
            file.sync_data()?;
            synced(&segment_path(&dir, 1));
            sync_dir(&dir)?;
        }
        let active_seq = segments.last().map_or(1, |s| s.seq);
        // Not in append mode: records are written at `active_len`, over the zeros after it.
        let active = OpenOptions::new().write(true).open(segment_path(&dir, active_seq))?;
        let active_alloc = active.metadata()?.len();
        let synced_term_vote = image.state.hard_state.current_term_vote();
        Ok(FileStorage {
            dir,
            image,
            segments,
            active,
            active_len,
            active_alloc,
            segment_bytes,
            failed: false,
            dirty_until: 0,
            synced_term_vote,
        })
    }

    /// The directory this storage lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of segment files (for tests and monitoring).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Writes `snap` to a temporary file, streaming its data through in chunks, then syncs it
    /// and renames it into place.
    fn write_snapshot(&self, snap: &Snapshot) -> Result<(), StorageError> {
        let tmp = self.dir.join("snapshot.tmp");
        let written = self.write_snapshot_to(snap, &tmp);
        if written.is_err() {
            // A partial snapshot would only take space (a full disk is the likely cause).
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    fn write_snapshot_to(&self, snap: &Snapshot, tmp: &Path) -> Result<(), StorageError> {
        let mut header = Vec::with_capacity(40 + 8 * snap.meta.voters.len());
        header.extend_from_slice(SNAPSHOT_MAGIC);
        header.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        header.extend_from_slice(&snap.meta.last_included_index.to_le_bytes());
        header.extend_from_slice(&snap.meta.last_included_term.to_le_bytes());
        header.extend_from_slice(&(snap.meta.voters.len() as u32).to_le_bytes());
        for v in &snap.meta.voters {
            header.extend_from_slice(&v.to_le_bytes());
        }
        header.extend_from_slice(&snap.data.len().to_le_bytes());
        fault::check("create snapshot")?;
        let mut out = io::BufWriter::with_capacity(COPY_CHUNK, File::create(tmp)?);
        let mut crc = crc32fast::Hasher::new();
        out.write_all(&header)?;
        crc.update(&header);
        let mut offset = 0;
        while offset < snap.data.len() {
            let chunk = snap.data.chunk(offset, COPY_CHUNK)?;
            out.write_all(&chunk)?;
            crc.update(&chunk);
            offset += chunk.len() as u64;
        }
        out.write_all(&crc.finalize().to_le_bytes())?;
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        fault::check("sync snapshot")?;
        file.sync_all()?;
        fs::rename(tmp, self.dir.join(SNAPSHOT_FILE))?;
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// Writes one persist call: the snapshot file first, then one write of every record at the
    /// logical end and one fsync. Returns the records' length; nothing of the call is in the
    /// image or the logical end yet (the caller moves them once this succeeds).
    fn write(
        &mut self,
        hard_state: Option<HardState>,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
    ) -> Result<u64, StorageError> {
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
        let records = out.len() as u64;
        // Zeros over what a write that failed for space may have left after these records.
        let dirty = self.dirty_until.saturating_sub(self.active_len + records);
        out.resize(out.len() + dirty as usize, 0);
        let end = self.active_len + out.len() as u64;
        let written =
            self.write_records(&out, end, snapshot.is_some() || !entries.is_empty(), hard_state);
        if written.is_err() {
            self.dirty_until = self.dirty_until.max(end);
        } else {
            self.dirty_until = 0;
        }
        written.map(|()| records)
    }

    /// Writes `out` at the logical end (preallocating first) and syncs it if the call needs
    /// it: entries, a snapshot, or a new term or vote.
    fn write_records(
        &mut self,
        out: &[u8],
        end: u64,
        must_sync: bool,
        hard_state: Option<HardState>,
    ) -> Result<(), StorageError> {
        self.preallocate(end)?;
        fault::check("write records")?;
        self.active.write_all_at(out, self.active_len)?;
        self.active_alloc = self.active_alloc.max(end);
        // A hard state that only moves the commit index is written but not synced: a node
        // that loses it relearns the commit index from the leader (contract rule 1).
        let term_vote = hard_state.map(|hs| (hs.current_term, hs.voted_for));
        if must_sync || term_vote.is_some_and(|tv| tv != self.synced_term_vote) {
            self.sync_active()?;
            if let Some(tv) = term_vote {
                self.synced_term_vote = tv;
            }
        }
        Ok(())
    }

    /// After a write: deletes the segments a new snapshot covers, and starts a new segment if
    /// this one is full. Lack of space here is no failure of the write, which is durable: it is
    /// logged, and the work is tried again after the next write.
    fn tidy_segments(&mut self, snapshot: bool) -> Result<(), StorageError> {
        let mut tidied = Ok(());
        if snapshot {
            tidied = self.delete_covered_segments();
        }
        if tidied.is_ok() && self.active_len >= self.segment_bytes {
            tidied = self.roll_segment();
        }
        match tidied {
            Err(e) if e.is_no_space() => {
                log::warn!(
                    "raft storage: {}: cannot start a new segment yet ({e}); retrying after the \
                     next write",
                    self.dir.display()
                );
                Ok(())
            }
            other => other,
        }
    }

    /// The newest segment's file.
    fn active_path(&self) -> PathBuf {
        segment_path(&self.dir, self.segments.last().map_or(1, |s| s.seq))
    }

    /// Syncs the newest segment's data.
    fn sync_active(&self) -> io::Result<()> {
        fault::check("sync segment")?;
        self.active.sync_data()?;
        synced(&self.active_path());
        Ok(())
    }

    /// Makes sure the newest segment holds zeros up to at least `end` before records are
    /// written there, so that the write's fsync changes no file size: extends the file with
    /// zeros to [`preallocation_end`] and syncs it. Does nothing if the zeros already reach
    /// `end`, or if the write fills the segment (it rolls right after; the write extends it).
    /// If the disk has no room for the zeros, the file is cut back and the write extends it
    /// instead, by what it needs: a full disk costs speed, not the write.
    fn preallocate(&mut self, end: u64) -> io::Result<()> {
        if end <= self.active_alloc || end >= self.segment_bytes {
            return Ok(());
        }
        let to = preallocation_end(end, self.segment_bytes);
        let filled = fault::check("preallocate segment")
            .and_then(|()| write_zeros(&self.active, self.active_alloc, to))
            .and_then(|()| self.sync_active());
        match filled {
            Ok(()) => {
                self.active_alloc = to;
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                ) =>
            {
                // Give back what the zeros took; the records go after what is allocated.
                self.active.set_len(self.active_alloc.max(self.active_len))?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Truncates the current segment to its logical end, then starts a new, preallocated
    /// segment beginning with the current hard state and snapshot mark (so that once older
    /// segments are gone it is self-contained), then deletes the old segments the snapshot
    /// covers entirely.
    fn roll_segment(&mut self) -> Result<(), StorageError> {
        if self.active_alloc > self.active_len {
            self.active.set_len(self.active_len)?;
        }
        // Sync even if nothing was cut: the last write may not have been synced (a hard state
        // that only moves the commit index), and once this segment is no longer the newest,
        // recovery takes a torn record in it for damage.
        fault::check("sync before a roll")?;
        self.active.sync_all()?;
        synced(&self.active_path());
        self.active_alloc = self.active_len;
        let seq = self.segments.last().map_or(0, |s| s.seq) + 1;
        let path = segment_path(&self.dir, seq);
        let started = self.start_segment(&path);
        if started.is_err() {
            // Not a segment yet (recovery would find only a torn head); it takes space.
            let _ = fs::remove_file(&path);
        }
        let (file, head_len, alloc) = started?;
        self.active = file;
        self.active_len = head_len;
        self.active_alloc = alloc;
        self.segments.push(Segment { seq, max_index: 0 });
        self.delete_covered_segments()
    }

    /// Creates the segment file `path` (replacing what a failed attempt left), beginning with
    /// the hard state and snapshot mark, preallocated and synced. Returns the file, the head's
    /// length and the preallocated length.
    fn start_segment(&self, path: &Path) -> Result<(File, u64, u64), StorageError> {
        fault::check("create segment")?;
        let file = OpenOptions::new().create(true).truncate(true).write(true).open(path)?;
        let mut head = Vec::new();
        encode_hard_state(&mut head, &self.image.state.hard_state);
        if let Some(s) = &self.image.state.snapshot {
            encode_mark(&mut head, s.meta.last_included_index, s.meta.last_included_term);
        }
        // The live entries must all be in segments that are kept; copy none, keep their files.
        let head_len = head.len() as u64;
        let alloc = preallocation_end(head_len, self.segment_bytes);
        file.write_all_at(&head, 0)?;
        write_zeros(&file, head_len, alloc)?;
        file.sync_data()?;
        synced(path);
        sync_dir(&self.dir)?;
        Ok((file, head_len, alloc))
    }

    /// Deletes the oldest segments while every entry in them is covered by the snapshot. Never
    /// the newest segment, which is appended to.
    fn delete_covered_segments(&mut self) -> Result<(), StorageError> {
        let covered = self.image.state.snapshot.as_ref().map_or(0, |s| s.meta.last_included_index);
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
    /// Replays one segment; returns the highest entry index it holds and its logical end (where
    /// its records end; zeros may follow). In the newest segment a torn tail is truncated away.
    fn segment(&mut self, path: &Path, newest: bool) -> Result<(Index, u64), StorageError> {
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
                    // Zeros to the end are free space (preallocated; an older segment is cut to
                    // its records when it stops being written, but zeros there are no damage
                    // either): the records end here.
                    let Some(last_nonzero) = buf[at..].iter().rposition(|&b| b != 0) else {
                        break;
                    };
                    // A torn write leaves nothing valid after it, or a sector never written;
                    // damage in the middle leaves valid records after it and no such sector.
                    if newest && (lost_sector(&buf, at) || !valid_record_after(&buf, at)) {
                        log::warn!(
                            "raft storage: {}: dropping a torn write of {} bytes at byte {at} \
                             (never acknowledged)",
                            path.display(),
                            last_nonzero + 1
                        );
                        let file = OpenOptions::new().write(true).open(path)?;
                        file.set_len(at as u64)?;
                        file.sync_all()?;
                        synced(path);
                        break;
                    }
                    let what = "bad length or checksum before the end of the log";
                    return Err(corruption(path, at as u64, what));
                }
                Err(what) => return Err(corruption(path, at as u64, &what)),
            }
        }
        Ok((max_index, at as u64))
    }
}

/// Whether the bad record at `at` lies in a disk sector that reads as zeros from the record (or
/// the sector's start, if later) to the sector's end: a sector of an unsynced write that never
/// reached the disk, since the bytes it would have overwritten were zeros. The record is taken
/// to span its header, and its body too if its length is plausible and fits the file.
fn lost_sector(buf: &[u8], at: usize) -> bool {
    let mut end = (at + HEADER_BYTES).min(buf.len());
    if buf.len() - at >= HEADER_BYTES {
        let length = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        if (1..=MAX_RECORD_BYTES).contains(&length) && buf.len() - end >= length {
            end += length;
        }
    }
    let mut start = at;
    while start < end {
        let sector_end = ((start / SECTOR_BYTES + 1) * SECTOR_BYTES).min(buf.len());
        if buf[start..sector_end].iter().all(|&b| b == 0) {
            return true;
        }
        start = sector_end;
    }
    false
}

/// Whether any whole, checksummed record starts after byte `at`.
fn valid_record_after(buf: &[u8], at: usize) -> bool {
    (at + 1..buf.len()).any(|p| matches!(read_record(buf, p), Ok(Some(_))))
}

/// Reads and checks the snapshot file, streaming its data through the checksum; the returned
/// snapshot's data is read from the file on demand, not loaded.
fn read_snapshot(dir: &Path) -> Result<Option<Snapshot>, StorageError> {
    let path = dir.join(SNAPSHOT_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let file_len = file.metadata()?.len();
    let bad = |what: &str| corruption(&path, 0, what);
    // magic, version, index, term, voter count; then voters, data length, data, crc.
    const FIXED: u64 = 8 + 4 + 8 + 8 + 4;
    if file_len < FIXED + 8 + 4 {
        return Err(bad("not a snapshot file (too short)"));
    }
    // The checksum covers everything before it: check it first, streaming, so that damage
    // anywhere is reported as damage rather than as a strange header.
    let body_len = file_len - 4;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut offset = 0;
    while offset < body_len {
        let n = (body_len - offset).min(COPY_CHUNK as u64) as usize;
        file.read_exact_at(&mut buf[..n], offset)?;
        crc.update(&buf[..n]);
        offset += n as u64;
    }
    let mut stored = [0u8; 4];
    file.read_exact_at(&mut stored, body_len)?;
    if crc.finalize() != u32::from_le_bytes(stored) {
        return Err(bad("checksum mismatch"));
    }
    let mut fixed = [0u8; FIXED as usize];
    file.read_exact_at(&mut fixed, 0)?;
    if &fixed[..8] != SNAPSHOT_MAGIC {
        return Err(bad("not a snapshot file (bad magic)"));
    }
    let version = u32::from_le_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
    if version != SNAPSHOT_VERSION {
        return Err(bad(&format!("unknown snapshot format version {version}")));
    }
    let n = u64::from(u32::from_le_bytes([fixed[28], fixed[29], fixed[30], fixed[31]]));
    let data_start = FIXED + 8 * n + 8;
    if data_start > body_len {
        return Err(bad("truncated voter list"));
    }
    let mut rest = vec![0u8; (8 * n + 8) as usize];
    file.read_exact_at(&mut rest, FIXED)?;
    let len = u64_at(&rest, 8 * n as usize);
    if data_start.checked_add(len) != Some(body_len) {
        return Err(bad("data length does not match the file"));
    }
    let voters: Vec<NodeId> = (0..n as usize).map(|i| u64_at(&rest, 8 * i)).collect();
    let meta = SnapshotMeta {
        last_included_index: u64_at(&fixed, 12),
        last_included_term: u64_at(&fixed, 20),
        voters,
    };
    if meta.last_included_index.max(meta.last_included_term) > MAX_TERM_OR_INDEX {
        return Err(bad("index or term past the largest"));
    }
    Ok(Some(Snapshot { meta, data: SnapshotData::from_file(file, data_start, len) }))
}

impl Storage for FileStorage {
    fn initial_state(&self) -> Result<PersistedState, StorageError> {
        Ok(self.image.state.clone())
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
        // Checks the request first: a refused request changes nothing.
        self.image.check(snapshot, entries)?;
        let records = match self.write(hard_state, snapshot, entries) {
            Ok(records) => records,
            // Out of space: nothing of the call is in the image or the logical end, and the
            // bytes it may have left past the end are zeroed by the next write. Retry it.
            Err(e) if e.is_no_space() => return Err(e),
            Err(e) => {
                // Only reopening tells what is durable.
                self.failed = true;
                return Err(e);
            }
        };
        self.image.apply(hard_state, snapshot, entries)?;
        self.active_len += records;
        if let Some(last) = entries.last()
            && let Some(seg) = self.segments.last_mut()
        {
            seg.max_index = seg.max_index.max(last.index);
        }
        let tidied = self.tidy_segments(snapshot.is_some());
        if tidied.is_err() {
            self.failed = true;
        }
        tidied
    }

    fn raft_state_size(&self) -> u64 {
        self.image.raft_state_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    thread_local! {
        /// While a crash test runs on this thread: each segment file's bytes as of its last sync.
        static DURABLE: RefCell<Option<BTreeMap<PathBuf, Vec<u8>>>> = const { RefCell::new(None) };
    }

    /// Records what a sync of `path` made durable, if a crash test is recording.
    pub(super) fn record_synced(path: &Path) {
        DURABLE.with(|d| {
            if let Some(durable) = d.borrow_mut().as_mut() {
                durable.insert(path.to_path_buf(), fs::read(path).unwrap());
            }
        });
    }

    /// The disk images a power cut can leave of the segment files in `dir`: of each file, what
    /// its last sync made durable, plus any subset of the 512-byte sectors written since, with
    /// the file's length as of the last sync or as now (the length is metadata, which reaches
    /// the disk apart from the data). Every image is one map from file path to bytes. Files
    /// never synced while recording count as durable.
    fn crash_images(dir: &Path) -> Vec<BTreeMap<PathBuf, Vec<u8>>> {
        let durable = DURABLE.with(|d| d.borrow().clone().expect("not recording"));
        let mut images = vec![BTreeMap::new()];
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "seg") {
                continue;
            }
            let now = fs::read(&path).unwrap();
            let synced = durable.get(&path).cloned().unwrap_or_else(|| now.clone());
            let sectors: Vec<usize> = (0..now.len().max(synced.len()).div_ceil(SECTOR_BYTES))
                .filter(|&i| {
                    let r = i * SECTOR_BYTES..((i + 1) * SECTOR_BYTES);
                    let at = |b: &[u8]| b[r.start.min(b.len())..r.end.min(b.len())].to_vec();
                    at(&now) != at(&synced)
                })
                .collect();
            assert!(sectors.len() <= 10, "{}: {} sectors unsynced", path.display(), sectors.len());
            let mut versions = Vec::new();
            for keep in 0u32..1 << sectors.len() {
                let mut bytes = synced.clone();
                for (bit, &i) in sectors.iter().enumerate() {
                    if keep & (1 << bit) == 0 {
                        continue;
                    }
                    let end = ((i + 1) * SECTOR_BYTES).min(now.len());
                    if bytes.len() < end {
                        bytes.resize(end, 0);
                    }
                    bytes[i * SECTOR_BYTES..end].copy_from_slice(&now[i * SECTOR_BYTES..end]);
                }
                // The file's length is metadata, durable or not apart from the data.
                for len in [synced.len(), now.len()] {
                    let mut version = bytes.clone();
                    version.resize(len, 0);
                    if !versions.contains(&version) {
                        versions.push(version);
                    }
                }
            }
            let mut next = Vec::new();
            for image in &images {
                for v in &versions {
                    let mut image = image.clone();
                    image.insert(path.clone(), v.clone());
                    next.push(image);
                }
            }
            images = next;
        }
        images
    }

    /// A hard state that only moves the commit index is written without a sync. When such a
    /// write fills a segment (it runs past the zeros, so there is nothing to cut), the roll
    /// must still sync the old segment: after a power cut any part of that record may be
    /// missing, and in a segment that is no longer the newest that reads as damage, so the node
    /// would refuse to start. Every image a power cut can leave opens, with every entry.
    #[test]
    fn a_power_cut_after_a_roll_leaves_a_log_that_opens() {
        let base = std::env::temp_dir().join(format!("raft-fs-rollcut-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let dir = base.join("live");
        DURABLE.with(|d| *d.borrow_mut() = Some(BTreeMap::new()));
        let mut s = FileStorage::open_with_segment_bytes(&dir, 1000).unwrap();
        let hs = |commit_index| HardState { current_term: 1, voted_for: Some(1), commit_index };
        s.persist(Some(hs(0)), None, &[]).unwrap();
        let entry = |index| Entry { term: 1, index, data: Bytes::from(vec![b'e'; 100]) };
        let mut index = 0;
        while s.active_len < 800 {
            index += 1;
            s.persist(None, None, &[entry(index)]).unwrap();
        }
        let written = index;
        // Commit-only hard states (42 bytes each) up to and past the segment's end.
        let mut commit = 0;
        while s.segment_count() < 2 {
            commit += 1;
            s.persist(Some(hs(commit.min(written))), None, &[]).unwrap();
        }
        // The write that filled it ran past the zeros: there was nothing to cut.
        assert!(fs::metadata(segment_path(&dir, 1)).unwrap().len() > 1000);
        let images = crash_images(&dir);
        drop(s);
        DURABLE.with(|d| *d.borrow_mut() = None);
        for (n, image) in images.iter().enumerate() {
            let copy = base.join(format!("image-{n}"));
            fs::create_dir_all(&copy).unwrap();
            for (path, bytes) in image {
                fs::write(copy.join(path.file_name().unwrap()), bytes).unwrap();
            }
            let opened = FileStorage::open_with_segment_bytes(&copy, 1000)
                .unwrap_or_else(|e| panic!("image {n} of {}: {e}", images.len()));
            let state = opened.initial_state().unwrap();
            assert_eq!(state.entries.len() as u64, written, "image {n}");
            assert_eq!(state.hard_state.current_term_vote(), (1, Some(1)), "image {n}");
        }
        let _ = fs::remove_dir_all(&base);
    }

    /// One persist call of the full-disk workload below.
    type Call = (Option<HardState>, Option<Snapshot>, Vec<Entry>);

    /// Calls that append, overwrite a suffix, snapshot and roll segments (of 1000 bytes).
    fn full_disk_workload() -> Vec<Call> {
        let hs =
            |term, commit_index| HardState { current_term: term, voted_for: Some(1), commit_index };
        let entry = |index, term| Entry { term, index, data: Bytes::from(vec![b'e'; 100]) };
        let mut calls: Vec<Call> = vec![(Some(hs(1, 0)), None, vec![])];
        for index in 1..=12 {
            calls.push((None, None, vec![entry(index, 1)]));
            calls.push((Some(hs(1, index.saturating_sub(2))), None, vec![]));
        }
        // A new leader overwrites the tail.
        calls.push((Some(hs(2, 10)), None, vec![entry(11, 2), entry(12, 2), entry(13, 2)]));
        let meta = SnapshotMeta { last_included_index: 9, last_included_term: 1, voters: vec![1] };
        let snap = Snapshot { meta, data: Bytes::from(vec![7u8; 300]).into() };
        calls.push((Some(hs(2, 11)), Some(snap), vec![]));
        for index in 14..=20 {
            calls.push((Some(hs(2, index - 1)), None, vec![entry(index, 2)]));
        }
        calls
    }

    /// The disk fills at each I/O step of the workload in turn (the snapshot file, preallocation,
    /// records, syncs, new segments), for one step or three in a row: every failed call says it
    /// is out of space, changes nothing, and succeeds when retried, and what is on disk
    /// afterwards is exactly what was persisted, as the in-memory reference holds it.
    #[test]
    fn a_write_that_runs_out_of_space_changes_nothing_and_can_be_retried() {
        let base = std::env::temp_dir().join(format!("raft-fs-nospace-{}", std::process::id()));
        let calls = full_disk_workload();
        let mut injected = 0;
        for fail in [1, 3] {
            for pass in 0..120 {
                let _ = fs::remove_dir_all(&base);
                let mut s = FileStorage::open_with_segment_bytes(&base, 1000).unwrap();
                let mut reference = crate::MemStorage::new();
                fault::PLAN.with(|p| p.set(Some((pass, fail))));
                for (hard_state, snapshot, entries) in &calls {
                    let mut failures = 0;
                    while let Err(e) = s.persist(*hard_state, snapshot.as_ref(), entries) {
                        assert!(e.is_no_space(), "pass {pass}: {e}");
                        assert_eq!(s.initial_state().unwrap(), reference.initial_state().unwrap());
                        failures += 1;
                        assert!(failures <= fail, "pass {pass}: the retry keeps failing");
                    }
                    injected += failures;
                    reference.persist(*hard_state, snapshot.as_ref(), entries).unwrap();
                    assert_eq!(s.initial_state().unwrap(), reference.initial_state().unwrap());
                }
                fault::PLAN.with(|p| p.set(None));
                drop(s);
                let reopened = FileStorage::open_with_segment_bytes(&base, 1000)
                    .unwrap_or_else(|e| panic!("pass {pass}, fail {fail}: {e}"));
                let (got, want) =
                    (reopened.initial_state().unwrap(), reference.initial_state().unwrap());
                assert_eq!(got.entries, want.entries, "pass {pass}, fail {fail}");
                assert_eq!(got.hard_state, want.hard_state, "pass {pass}, fail {fail}");
                let meta = |s: &PersistedState| s.snapshot.as_ref().map(|s| s.meta.clone());
                assert_eq!(meta(&got), meta(&want), "pass {pass}, fail {fail}");
                assert!(reopened.segment_count() >= 1);
            }
        }
        assert!(injected > 100, "only {injected} failures were injected");
        let _ = fs::remove_dir_all(&base);
    }

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

    /// The file is extended in steps of [`PREALLOC_STEP`], ahead of the records, not on every
    /// write; the logical length stays what was written.
    #[test]
    fn the_active_segment_grows_in_steps_ahead_of_the_records() {
        let dir = std::env::temp_dir().join(format!("raft-fs-steps-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut s = FileStorage::open(&dir).unwrap();
        let path = segment_path(&dir, 1);
        let file_len = || fs::metadata(&path).unwrap().len();
        assert_eq!((s.active_len, file_len()), (0, PREALLOC_STEP), "a new segment is not filled");
        let data = Bytes::from(vec![7u8; 64 << 10]);
        let mut lengths = vec![file_len()];
        let mut written = 0;
        for index in 1..=150 {
            s.persist(None, None, &[Entry { term: 1, index, data: data.clone() }]).unwrap();
            written += (HEADER_BYTES + 1 + 16 + data.len()) as u64;
            assert_eq!(s.active_len, written);
            assert_eq!(s.active_alloc, file_len());
            assert!(file_len() > s.active_len, "write {index} ran past the zeros");
            if lengths.last() != Some(&file_len()) {
                lengths.push(file_len());
            }
        }
        // About 9.6 MiB written in 150 writes: the file was extended twice.
        let steps: Vec<u64> = (1..=3).map(|n| n * PREALLOC_STEP).collect();
        assert_eq!(lengths, steps);
        drop(s);
        let s = FileStorage::open(&dir).unwrap();
        assert_eq!((s.active_len, s.active_alloc), (written, 3 * PREALLOC_STEP));
        assert_eq!(s.initial_state().unwrap().entries.len(), 150);
        drop(s);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn preallocation_stops_at_the_segment_size_but_fits_the_write() {
        assert_eq!(preallocation_end(0, DEFAULT_SEGMENT_BYTES), PREALLOC_STEP);
        assert_eq!(preallocation_end(PREALLOC_STEP, DEFAULT_SEGMENT_BYTES), 2 * PREALLOC_STEP);
        assert_eq!(preallocation_end(PREALLOC_STEP + 1, 1 << 40), 2 * PREALLOC_STEP);
        // A write bigger than a step gets a whole step after it.
        assert_eq!(preallocation_end(9 * PREALLOC_STEP + 5, 1 << 40), 10 * PREALLOC_STEP);
        assert_eq!(preallocation_end(34, 300), 300);
        assert_eq!(preallocation_end(400, 300), 400);
    }

    #[test]
    fn a_lost_sector_is_zeros_from_the_record_to_the_sector_end() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, &Entry { term: 1, index: 1, data: Bytes::from(vec![9u8; 1500]) });
        let at = 100;
        let mut image = vec![1u8; at];
        image.extend_from_slice(&buf);
        image.extend_from_slice(&[1u8; 1100]);
        assert!(!lost_sector(&image, at));
        // The record's header sector, from the record on.
        let mut lost = image.clone();
        lost[at..512].fill(0);
        assert!(lost_sector(&lost, at));
        // A sector inside its body.
        let mut lost = image.clone();
        lost[1024..1536].fill(0);
        assert!(lost_sector(&lost, at));
        // Zeros that stop short of the sector end are data, not a lost sector.
        let mut short = image.clone();
        short[1024..1500].fill(0);
        assert!(!lost_sector(&short, at));
        // A sector past the record's end is not the record's.
        let mut after = image.clone();
        after[2048..2560].fill(0);
        assert!(!lost_sector(&after, at));
    }
}
