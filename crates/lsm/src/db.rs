//! The database handle: the write path (WAL, memtable, flush to level-0 tables, manifest) and
//! the read path (memtables, then tables, newest first).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::batch::{Op, WriteBatch};
use crate::compaction::{self, CompactionOptions, CompactionTask, Retention};
use crate::error::{Error, Result, io_is_no_space};
use crate::format::{
    MANIFEST_FILE, MANIFEST_TMP_FILE, MAX_FILE_NUMBER, MAX_SEQ, RECORD_KIND_BATCH,
    RECORD_KIND_EDIT, TABLE_SUFFIX, WAL_PREFIX, WAL_SUFFIX,
};
use crate::fs::{FileSystem, OsFs, SyncEvery, WritableFile};
use crate::iter::MergeIter;
use crate::manifest::{TableMeta, Version, VersionEdit};
use crate::memtable::{Lookup, Memtable, Value};
use crate::table::{Table, TableBuilder, split_key};
use crate::wal::{self, WalWriter};

/// How a database is opened.
#[derive(Clone)]
pub struct Options {
    /// Where every file goes through; [`OsFs`] unless a test substitutes
    /// [`MemFs`](crate::MemFs).
    pub fs: Arc<dyn FileSystem>,
    /// Whether a write waits for its WAL record to be synced before returning (unless its
    /// [`WriteOptions`] say otherwise). Off: a crash of the machine may lose the last writes,
    /// never corrupt older ones. On: a returned write survives any crash.
    pub sync_writes: bool,
    /// Size at which the memtable is written out as a table (bytes of keys and values). Larger
    /// means fewer, bigger tables and more memory.
    pub memtable_bytes: usize,
    /// How many full memtables may wait to be written out before writes wait for them.
    pub max_frozen_memtables: usize,
    /// The shape of the tree of tables, and when to compact.
    pub compaction: CompactionOptions,
    /// While a table is written (a flush or a compaction), sync it every this many bytes
    /// (0: only once, at its end). Writing a table otherwise leaves megabytes of dirty data
    /// that the next sync of any file on the disk (a WAL, or another program's log) must
    /// wait behind.
    pub table_bytes_per_sync: usize,
    /// Whether writes go to a write-ahead log. Off, for a user that keeps its own log (a
    /// replicated state machine replays Raft's): a write lives in the memtable until it is
    /// flushed, a crash loses what was not, and a write with `sync` flushes the memtable (and
    /// so everything written before it) to a table before returning.
    pub wal: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            fs: Arc::new(OsFs),
            sync_writes: false,
            memtable_bytes: 4 << 20,
            max_frozen_memtables: 2,
            compaction: CompactionOptions::default(),
            table_bytes_per_sync: 1 << 20,
            wal: true,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("sync_writes", &self.sync_writes)
            .field("memtable_bytes", &self.memtable_bytes)
            .finish_non_exhaustive()
    }
}

/// Per-write durability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Sync the WAL before returning.
    pub sync: bool,
}

/// A point-in-time view: reads through it see exactly the writes made before it was taken.
/// While it (or a clone) lives, compaction keeps the versions it sees.
#[derive(Debug, Clone)]
pub struct Snapshot {
    seq: u64,
    _hold: Arc<Hold>,
}

/// The live snapshots, by sequence number, with a count each.
type LiveSnapshots = Mutex<BTreeMap<u64, usize>>;

/// Registers one snapshot for as long as it lives.
#[derive(Debug)]
struct Hold {
    seq: u64,
    live: Arc<LiveSnapshots>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut live = self.live.lock();
        if let Some(n) = live.get_mut(&self.seq) {
            *n -= 1;
            if *n == 0 {
                live.remove(&self.seq);
            }
        }
    }
}

impl Snapshot {
    /// The sequence number of the last write it sees.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// Why a group of writes failed.
#[derive(Debug, Clone)]
enum Failure {
    /// The engine no longer knows what is durable: every later write fails too.
    Poisoned(String),
    /// No space on the disk: this group failed, later ones may succeed.
    NoSpace(String),
}

impl Failure {
    /// The failure `error` is, met while `doing` something.
    fn of(doing: &str, error: &Error) -> Failure {
        let why = format!("{doing} failed: {error}");
        if error.is_no_space() { Failure::NoSpace(why) } else { Failure::Poisoned(why) }
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        match f {
            Failure::Poisoned(why) => Error::Poisoned(why),
            Failure::NoSpace(why) => Error::NoSpace(why),
        }
    }
}

/// One writer waiting in the group-commit queue.
struct Pending {
    batch: WriteBatch,
    sync: bool,
    done: Mutex<Option<std::result::Result<(), Failure>>>,
}

struct WriteQueue {
    waiting: VecDeque<Arc<Pending>>,
    leader_active: bool,
    next_seq: u64,
    poisoned: Option<String>,
}

/// A full memtable waiting to be written out, and the WALs that hold its writes.
#[derive(Clone)]
struct Frozen {
    mem: Arc<Memtable>,
    /// The WALs to delete once it is in a table.
    wals: Vec<u64>,
    /// The WAL the writes after it went to: the first one still needed once it is flushed.
    next_wal: u64,
}

/// What reads look at, swapped as a whole (readers clone the `Arc` and never wait on writes).
struct ReadState {
    mem: Arc<Memtable>,
    /// Memtables waiting to be written out, newest first.
    imm: Vec<Frozen>,
    version: Arc<Version>,
    tables: Arc<BTreeMap<u64, Arc<Table>>>,
}

impl ReadState {
    /// Every memtable, newest first.
    fn memtables(&self) -> impl Iterator<Item = &Arc<Memtable>> {
        std::iter::once(&self.mem).chain(self.imm.iter().map(|f| &f.mem))
    }
}

/// The WAL the active memtable's writes go to; only the group-commit leader touches it.
struct WalFile {
    writer: WalWriter,
    /// Every WAL holding writes of the active memtable (more than one only after recovery),
    /// the last being `writer`'s.
    numbers: Vec<u64>,
    /// An append or sync ran out of space: the WAL may end in a torn record, so nothing more
    /// is appended to it. The next group starts a new WAL (and memtable) first.
    broken: bool,
}

/// The manifest, the first WAL it says is still needed, and the files its last edit retired.
struct ManifestFile {
    file: Box<dyn WritableFile>,
    log_number: u64,
    /// Files the last edit made obsolete. They are deleted only once a later edit is durable,
    /// so that if the last record is ever lost (a torn or damaged tail is cut off on open),
    /// what it retired is still there for the edit before it.
    retired: Vec<PathBuf>,
    /// An edit failed to append for lack of space: the file may end in a torn record, so the
    /// next edit first rewrites the manifest whole (see [`Inner::rewrite_manifest`]).
    broken: bool,
    /// Tables whose edit failed (it may yet be on disk): deleted once the rewrite is durable.
    orphans: Vec<PathBuf>,
}

/// The background worker's inbox.
#[derive(Default)]
struct Background {
    /// Something may need flushing or compacting.
    pending: bool,
    /// The last handle is gone: finish the current step and exit.
    stop: bool,
    /// Why the worker gave up, if it did (the database is poisoned).
    error: Option<String>,
    /// Failed attempts for lack of space in a row (the wait before the next grows with it).
    no_space_retries: u32,
    /// The last job failed for lack of space, and why; the worker retries it. Cleared when a
    /// job succeeds.
    no_space: Option<String>,
}

/// Counters of the engine's background work and of writes held back for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Memtables written out as level-0 tables.
    pub flushes: u64,
    /// Compactions run (by the worker or by [`Db::compact_range`]).
    pub compactions: u64,
    /// Groups of writes slowed down because level 0 held `level0_slowdown` tables.
    pub slowed_writes: u64,
    /// Groups of writes that waited for a flush or a compaction.
    pub stalled_writes: u64,
    /// Operations that failed for lack of space (`ENOSPC`, `EDQUOT`): writes refused with
    /// [`Error::NoSpace`], and background flushes or compactions, which are retried.
    pub no_space_errors: u64,
}

struct Inner {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    options: Options,
    state: RwLock<Arc<ReadState>>,
    /// Writes with a sequence number at most this are complete in the memtable and visible.
    visible_seq: AtomicU64,
    queue: Mutex<WriteQueue>,
    queue_changed: Condvar,
    wal: Mutex<WalFile>,
    manifest: Mutex<ManifestFile>,
    next_file: AtomicU64,
    snapshots: Arc<LiveSnapshots>,
    background: Mutex<Background>,
    /// Signalled when background work changes the state (or fails) and when work arrives.
    background_changed: Condvar,
    /// Held for each flush or compaction, so that one runs at a time.
    jobs: Mutex<()>,
    stats: Mutex<Stats>,
}

/// The longest the background worker waits before retrying work that failed for lack of space.
const MAX_SPACE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Stops the background worker when the last handle is dropped.
struct Worker {
    inner: Arc<Inner>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.inner.background.lock().stop = true;
        self.inner.background_changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An open database.
///
/// Cheap to clone; clones share the database. Reads never wait for writes. Writes from many
/// threads are committed in groups: one leader appends every waiting batch to the WAL in one
/// write, syncs once if any of them asked for it, inserts them into the memtable in order, and
/// wakes the others (group commit). When the memtable passes `memtable_bytes` the leader
/// freezes it and starts a new one; a background thread writes frozen memtables out as
/// level-0 tables and compacts. Dropping the last handle stops that thread (after its current
/// step) without syncing; [`close`](Db::close) syncs first.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
    _worker: Arc<Worker>,
}

fn wal_name(number: u64) -> String {
    format!("{WAL_PREFIX}{number:08}{WAL_SUFFIX}")
}

/// The number of a WAL named `name`, if it is one of the engine's (see [`MAX_FILE_NUMBER`]).
fn wal_number(name: &str) -> Option<u64> {
    let number = name.strip_prefix(WAL_PREFIX)?.strip_suffix(WAL_SUFFIX)?.parse().ok()?;
    (number <= MAX_FILE_NUMBER).then_some(number)
}

/// The number of a table named `name`, if it is one of the engine's (see [`MAX_FILE_NUMBER`]).
fn table_number(name: &str) -> Option<u64> {
    let number = name.strip_suffix(TABLE_SUFFIX)?.parse().ok()?;
    (number <= MAX_FILE_NUMBER).then_some(number)
}

/// Why a version edit read back from the manifest cannot be believed, if it cannot: a file
/// number past [`MAX_FILE_NUMBER`] or a sequence number past [`MAX_SEQ`].
fn implausible_edit(edit: &VersionEdit) -> Option<String> {
    let files = edit.added.iter().map(|t| t.file).chain(edit.removed.iter().map(|r| r.1));
    if let Some(file) = std::iter::once(edit.log_number).chain(files).max()
        && file > MAX_FILE_NUMBER
    {
        return Some(format!("file number {file} is past the largest, {MAX_FILE_NUMBER}"));
    }
    // `next_file` is one past every number in use.
    if edit.next_file > MAX_FILE_NUMBER + 1 {
        return Some(format!("next file number {} is past the largest", edit.next_file));
    }
    (edit.last_seq > MAX_SEQ)
        .then(|| format!("sequence number {} is past the largest, {MAX_SEQ}", edit.last_seq))
}

fn table_name(number: u64) -> String {
    format!("{number:08}{TABLE_SUFFIX}")
}

fn corruption(file: &Path, offset: usize, detail: String) -> Error {
    Error::Corruption { file: file.to_path_buf(), offset: offset as u64, detail }
}

impl Db {
    /// Opens the database in `dir`, creating it if needed: replays the manifest, opens the
    /// tables it lists, replays the WALs not yet flushed, and starts the background worker.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be used, [`Error::Corruption`] if the manifest, a
    /// table or a WAL is damaged (other than a torn tail).
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        let dir = dir.as_ref().to_path_buf();
        let fs = Arc::clone(&options.fs);
        fs.create_dir_all(&dir)?;
        let names = fs.list(&dir)?;

        // 1. The manifest: which tables are live, which WALs are still needed.
        let manifest_path = dir.join(MANIFEST_FILE);
        let mut version = Version::default();
        let (mut log_number, mut next_file, mut last_seq) = (0, 1, 0);
        let manifest_exists = names.iter().any(|n| n == MANIFEST_FILE);
        if manifest_exists {
            for (offset, kind, payload) in wal::read_all(fs.as_ref(), &manifest_path)? {
                let edit =
                    (kind == RECORD_KIND_EDIT).then(|| VersionEdit::decode(&payload)).flatten();
                let edit = edit.ok_or_else(|| {
                    corruption(
                        &manifest_path,
                        offset,
                        format!("record of kind {kind} is not a version edit"),
                    )
                })?;
                if let Some(detail) = implausible_edit(&edit) {
                    return Err(corruption(&manifest_path, offset, detail));
                }
                version = version.apply(&edit);
                log_number = log_number.max(edit.log_number);
                next_file = next_file.max(edit.next_file);
                last_seq = last_seq.max(edit.last_seq);
            }
        }
        let mut tables = BTreeMap::new();
        for t in version.tables() {
            // A new file must not take a live table's number, whatever the edits said.
            next_file = next_file.max(t.file + 1);
            tables
                .insert(t.file, Arc::new(Table::open(fs.as_ref(), &dir.join(table_name(t.file)))?));
        }
        // Files no version needs: a table written by a flush or compaction that crashed (or
        // was stopped) before its manifest edit, tables and WALs retired by the last edits.
        // They go once the checkpoint edit below is durable (see `ManifestFile::retired`).
        let mut obsolete = Vec::new();
        for name in &names {
            if let Some(number) = table_number(name)
                && !tables.contains_key(&number)
            {
                obsolete.push(dir.join(name));
                next_file = next_file.max(number + 1);
            }
        }

        // 2. The WALs not yet flushed, in order, into one memtable.
        let mut wals: Vec<u64> = names.iter().filter_map(|n| wal_number(n)).collect();
        wals.sort_unstable();
        let memtable = Memtable::new();
        let mut kept = Vec::new();
        for &number in &wals {
            let path = dir.join(wal_name(number));
            if number < log_number {
                obsolete.push(path); // Flushed before a crash that came before its deletion.
                continue;
            }
            kept.push(number);
            for (offset, kind, payload) in wal::read_all(fs.as_ref(), &path)? {
                let decoded =
                    (kind == RECORD_KIND_BATCH).then(|| WriteBatch::decode(&payload)).flatten();
                let Some((seq, batch)) = decoded else {
                    let detail = format!("record of kind {kind} does not decode as a write batch");
                    return Err(corruption(&path, offset, detail));
                };
                // A batch takes the sequence numbers seq..=last; an empty one is never written.
                let last = (batch.len() as u64).checked_sub(1).and_then(|n| seq.checked_add(n));
                let Some(last) = last.filter(|&l| seq >= 1 && l <= MAX_SEQ) else {
                    let detail = format!(
                        "a batch of {} operations cannot start at sequence number {seq}",
                        batch.len()
                    );
                    return Err(corruption(&path, offset, detail));
                };
                apply_to_memtable(&memtable, seq, &batch);
                last_seq = last_seq.max(last);
            }
        }
        next_file = next_file.max(wals.last().map_or(0, |n| n + 1));
        // A new WAL below `log_number` would count as flushed, and be deleted, at the next open.
        next_file = next_file.max(log_number);

        // 3. The files to append to, and a checkpoint edit, so that the last edit replayed is
        //    no longer the last record before the files it retired are deleted.
        let writer = match kept.last() {
            Some(&n) => WalWriter::open(fs.as_ref(), &dir.join(wal_name(n)))?,
            None => {
                if next_file > MAX_FILE_NUMBER {
                    let detail = format!("file numbers are exhausted (next {next_file})");
                    return Err(corruption(&manifest_path, 0, detail));
                }
                kept.push(next_file);
                next_file += 1;
                WalWriter::create(fs.as_ref(), &dir.join(wal_name(kept[0])))?
            }
        };
        let mut manifest = if manifest_exists {
            fs.open_append(&manifest_path)?
        } else {
            fs.create(&manifest_path)?
        };
        let checkpoint = VersionEdit { log_number, next_file, last_seq, ..VersionEdit::default() };
        append_edit(manifest.as_mut(), &checkpoint)?;
        for path in &obsolete {
            fs.remove(path)?;
        }
        fs.sync_dir(&dir)?;

        let state = ReadState {
            mem: Arc::new(memtable),
            imm: Vec::new(),
            version: Arc::new(version),
            tables: Arc::new(tables),
        };
        let inner = Arc::new(Inner {
            fs,
            dir,
            options,
            state: RwLock::new(Arc::new(state)),
            visible_seq: AtomicU64::new(last_seq),
            queue: Mutex::new(WriteQueue {
                waiting: VecDeque::new(),
                leader_active: false,
                next_seq: last_seq + 1,
                poisoned: None,
            }),
            queue_changed: Condvar::new(),
            wal: Mutex::new(WalFile { writer, numbers: kept, broken: false }),
            manifest: Mutex::new(ManifestFile {
                file: manifest,
                log_number,
                retired: Vec::new(),
                broken: false,
                orphans: Vec::new(),
            }),
            next_file: AtomicU64::new(next_file),
            snapshots: Arc::default(),
            // Level 0 may already be due for compaction.
            background: Mutex::new(Background { pending: true, ..Background::default() }),
            background_changed: Condvar::new(),
            jobs: Mutex::new(()),
            stats: Mutex::default(),
        });
        let worker_inner = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("lsm-background".into())
            .spawn(move || worker_inner.background_loop())?;
        let worker = Worker { inner: Arc::clone(&inner), thread: Some(thread) };
        Ok(Db { inner, _worker: Arc::new(worker) })
    }

    /// Sets `key` to `value`.
    ///
    /// # Errors
    /// [`Error::NoSpace`] if the disk is full (nothing is poisoned); [`Error::Io`] if the WAL
    /// write fails; [`Error::Poisoned`] after an earlier failure.
    pub fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(key, value);
        self.write(batch)
    }

    /// Removes `key` (a no-op if it is absent).
    ///
    /// # Errors
    /// As [`put`](Self::put).
    pub fn delete(&self, key: impl Into<Bytes>) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(key);
        self.write(batch)
    }

    /// Applies `batch` atomically, with the database's default durability.
    ///
    /// # Errors
    /// As [`put`](Self::put).
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        let sync = self.inner.options.sync_writes;
        self.write_opt(batch, WriteOptions { sync })
    }

    /// Applies `batch` atomically; with `options.sync`, returns only once it is durable.
    ///
    /// A write may wait (it never fails for this) while memtables wait to be written out or
    /// level 0 is too full; see [`CompactionOptions`].
    ///
    /// # Errors
    /// As [`put`](Self::put).
    pub fn write_opt(&self, batch: WriteBatch, options: WriteOptions) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write_group(batch, options)?;
        if options.sync && !self.inner.options.wal {
            self.flush()?;
        }
        Ok(())
    }

    /// Commits `batch` with whatever other writes are waiting (group commit).
    fn write_group(&self, batch: WriteBatch, options: WriteOptions) -> Result<()> {
        let me = Arc::new(Pending { batch, sync: options.sync, done: Mutex::new(None) });
        let inner = &self.inner;
        let mut q = inner.queue.lock();
        if let Some(why) = &q.poisoned {
            return Err(Error::Poisoned(why.clone()));
        }
        // Recovery refuses sequence numbers past MAX_SEQ, so none may be written.
        let queued: u64 = q.waiting.iter().map(|p| p.batch.len() as u64).sum();
        let needed = queued + me.batch.len() as u64;
        if q.next_seq.saturating_add(needed) > MAX_SEQ + 1 {
            return Err(Error::SequenceExhausted { last: q.next_seq - 1, needed });
        }
        q.waiting.push_back(Arc::clone(&me));
        loop {
            if let Some(result) = me.done.lock().take() {
                return result.map_err(Error::from);
            }
            if q.leader_active {
                inner.queue_changed.wait(&mut q);
                continue;
            }
            // Lead a group: everything waiting now, including this write.
            q.leader_active = true;
            let group: Vec<Arc<Pending>> = q.waiting.drain(..).collect();
            let first_seq = q.next_seq;
            q.next_seq += group.iter().map(|p| p.batch.len() as u64).sum::<u64>();
            drop(q);
            let result = inner.commit_group(&group, first_seq);
            q = inner.queue.lock();
            q.leader_active = false;
            match &result {
                Err(Failure::Poisoned(why)) => {
                    q.poisoned.get_or_insert_with(|| why.clone());
                }
                Err(Failure::NoSpace(_)) => inner.stats.lock().no_space_errors += 1,
                Ok(()) => {}
            }
            for p in &group {
                *p.done.lock() = Some(result.clone());
            }
            inner.queue_changed.notify_all();
        }
    }

    /// Writes everything in memory out as level-0 tables and returns once they are live.
    ///
    /// # Errors
    /// [`Error::Io`] if a file cannot be written; [`Error::Poisoned`] after an earlier failure.
    pub fn flush(&self) -> Result<()> {
        let inner = &self.inner;
        inner.check_poisoned()?;
        let mut waiting_for: Vec<Arc<Memtable>> = {
            let mut wal = inner.wal.lock();
            if !inner.state.read().mem.is_empty() {
                inner.rotate(&mut wal).map_err(|e| inner.fail("flushing", e))?;
            }
            inner.state.read().imm.iter().map(|f| Arc::clone(&f.mem)).collect()
        };
        let mut background = inner.background.lock();
        loop {
            if let Some(why) = &background.error {
                return Err(Error::Poisoned(why.clone()));
            }
            let state = Arc::clone(&inner.state.read());
            waiting_for.retain(|m| state.imm.iter().any(|f| Arc::ptr_eq(&f.mem, m)));
            if waiting_for.is_empty() {
                return Ok(());
            }
            inner.background_changed.wait(&mut background);
        }
    }

    /// Flushes, then compacts every table holding keys in `start..=end` (unbounded where
    /// `None`) down to the deepest level that holds data, dropping overwritten versions and,
    /// there, tombstones that no snapshot needs. Returns when done.
    ///
    /// # Errors
    /// As [`flush`](Self::flush).
    pub fn compact_range(&self, start: Option<&[u8]>, end: Option<&[u8]>) -> Result<()> {
        self.flush()?;
        let inner = &self.inner;
        let job = inner.jobs.lock();
        let version = Arc::clone(&inner.state.read().version);
        let bottom = (1..version.levels.len()).rev().find(|&l| !version.level(l).is_empty());
        let bottom = bottom.unwrap_or(1);
        // Each level into the next, then the bottom level rewritten in place.
        for (level, output) in (0..bottom).map(|l| (l, l + 1)).chain([(bottom, bottom)]) {
            let version = Arc::clone(&inner.state.read().version);
            if let Some(task) = compaction::range_task(&version, level, output, start, end) {
                inner.compact(&task).map_err(|e| inner.fail("compacting", e))?;
            }
        }
        drop(job);
        // The result may leave a level over its budget, and waiters want to know.
        inner.background.lock().pending = true;
        inner.background_changed.notify_all();
        Ok(())
    }

    /// Waits until the background worker has nothing to do: no memtable waits to be written
    /// out and no compaction is due (db_bench's `waitforcompaction`).
    ///
    /// # Errors
    /// [`Error::Poisoned`] if the background work failed.
    pub fn wait_idle(&self) -> Result<()> {
        let inner = &self.inner;
        let mut background = inner.background.lock();
        loop {
            if let Some(why) = &background.error {
                return Err(Error::Poisoned(why.clone()));
            }
            // No job may be half done: hold the job lock while looking.
            if let Some(_job) = inner.jobs.try_lock() {
                let state = Arc::clone(&inner.state.read());
                if state.imm.is_empty()
                    && compaction::pick(&state.version, &inner.options.compaction).is_none()
                {
                    return Ok(());
                }
            }
            inner.background_changed.wait(&mut background);
        }
    }

    /// Why the engine is short of space now, if it is: a flush or compaction that failed for
    /// lack of space and waits to be retried, or a WAL that ran out of space and is replaced
    /// by the next write. `None` once that work has succeeded.
    pub fn no_space(&self) -> Option<String> {
        if let Some(why) = &self.inner.background.lock().no_space {
            return Some(why.clone());
        }
        let wal = self.inner.wal.lock();
        wal.broken.then(|| format!("{} ran out of space", wal.writer.path().display()))
    }

    /// Counters of background work and write stalls since open.
    pub fn stats(&self) -> Stats {
        *self.inner.stats.lock()
    }

    /// The current value of `key`.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Corruption`] if a table cannot be read.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.get_at(key, &self.snapshot())
    }

    /// The value of `key` as of `snapshot`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn get_at(&self, key: &[u8], snapshot: &Snapshot) -> Result<Option<Bytes>> {
        let state = Arc::clone(&self.inner.state.read());
        let decided = |lookup: Lookup| match lookup {
            Lookup::Found(v) => Some(Some(v)),
            Lookup::Deleted => Some(None),
            Lookup::Absent => None,
        };
        for mem in state.memtables() {
            if let Some(answer) = decided(mem.get(key, snapshot.seq)) {
                return Ok(answer);
            }
        }
        for meta in state.version.tables() {
            if meta.smallest.as_ref() > key || meta.largest.as_ref() < key {
                continue;
            }
            if let Some(table) = state.tables.get(&meta.file)
                && let Some(answer) = decided(table.get(key, snapshot.seq)?)
            {
                return Ok(answer);
            }
        }
        Ok(None)
    }

    /// A point-in-time view of everything written so far.
    pub fn snapshot(&self) -> Snapshot {
        let mut live = self.inner.snapshots.lock();
        // Read the sequence number under the lock, so compaction never misses this snapshot.
        let seq = self.inner.visible_seq.load(Ordering::Acquire);
        *live.entry(seq).or_insert(0) += 1;
        drop(live);
        Snapshot { seq, _hold: Arc::new(Hold { seq, live: Arc::clone(&self.inner.snapshots) }) }
    }

    /// An iterator over the live pairs with `start <= key < end` (no upper bound if `end` is
    /// `None`) as of `snapshot`, in key order. It holds one block per table level in memory,
    /// not the range.
    ///
    /// # Errors
    /// As [`get`](Self::get), from positioning on the first key.
    pub fn iter(&self, start: &[u8], end: Option<&[u8]>, snapshot: &Snapshot) -> Result<Iter> {
        let state = Arc::clone(&self.inner.state.read());
        let memories: Vec<Arc<Memtable>> = state.memtables().cloned().collect();
        let open = |meta: &TableMeta| Arc::clone(&state.tables[&meta.file]);
        let level0: Vec<Arc<Table>> = state.version.level(0).iter().map(open).collect();
        let deeper: Vec<Vec<Arc<Table>>> = (1..state.version.levels.len())
            .map(|l| state.version.level(l).iter().map(open).collect())
            .collect();
        let end = end.map(Bytes::copy_from_slice);
        let merge = MergeIter::new(memories, level0, deeper, start, end, snapshot.seq)?;
        Ok(Iter { merge, _snapshot: snapshot.clone() })
    }

    /// The live pairs with `start <= key < end` (no upper bound if `end` is `None`) as of
    /// `snapshot`, in key order, gathered.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        snapshot: &Snapshot,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        self.iter(start, end, snapshot)?.collect()
    }

    /// Makes every write so far durable, then closes this handle (the background worker
    /// stops, after its current step, when the last handle is gone).
    ///
    /// # Errors
    /// [`Error::Io`] if the final sync fails; [`Error::Poisoned`] after an earlier failure.
    pub fn close(self) -> Result<()> {
        self.inner.check_poisoned()?;
        if self.inner.options.wal {
            self.inner.wal.lock().writer.sync()?;
        } else {
            self.flush()?;
        }
        Ok(())
    }

    /// The directory the database lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Bytes held in the active memtable, roughly.
    pub fn memtable_bytes(&self) -> usize {
        self.inner.state.read().mem.approximate_bytes()
    }

    /// Number of live tables.
    pub fn table_count(&self) -> usize {
        self.inner.state.read().version.tables().count()
    }
}

/// Whether a compaction finished or was abandoned because the database is closing.
enum Outcome {
    Done,
    Stopped,
}

impl Inner {
    fn check_poisoned(&self) -> Result<()> {
        match &self.queue.lock().poisoned {
            Some(why) => Err(Error::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// The error to return for a flush or compaction the caller asked for: for lack of space
    /// [`Error::NoSpace`] (nothing is poisoned; the work can be asked for again), otherwise
    /// the engine gives up ([`give_up`](Self::give_up)).
    fn fail(&self, doing: &str, error: Error) -> Error {
        if error.is_no_space() {
            self.stats.lock().no_space_errors += 1;
            Error::NoSpace(format!("{doing} failed: {error}"))
        } else {
            self.give_up(doing, &error);
            error
        }
    }

    /// Records a failed flush or compaction: the engine is poisoned and waiting writers wake.
    fn give_up(&self, doing: &str, error: &Error) {
        let why = format!("{doing} failed: {error}");
        self.queue.lock().poisoned.get_or_insert_with(|| why.clone());
        self.background.lock().error.get_or_insert(why);
        self.background_changed.notify_all();
    }

    /// The group-commit leader's work: wait for room, one WAL append, at most one sync, the
    /// memtable, and a new memtable if this one is full.
    fn commit_group(
        &self,
        group: &[Arc<Pending>],
        first_seq: u64,
    ) -> std::result::Result<(), Failure> {
        self.make_room().map_err(Failure::Poisoned)?;
        let mut framed = Vec::new();
        if self.options.wal {
            let mut payload = Vec::new();
            let mut seq = first_seq;
            for p in group {
                payload.clear();
                p.batch.encode(seq, &mut payload);
                wal::frame(&mut framed, RECORD_KIND_BATCH, &payload);
                seq += p.batch.len() as u64;
            }
        }
        let mut wal = self.wal.lock();
        if wal.broken {
            // A WAL that ran out of space may end in a torn record: start a new one (and a
            // new memtable) before appending anything else.
            self.rotate(&mut wal).map_err(|e| Failure::of("starting a new WAL", &e))?;
        }
        let written = if self.options.wal {
            wal.writer.append(&framed).and_then(|()| {
                if group.iter().any(|p| p.sync) { wal.writer.sync() } else { Ok(()) }
            })
        } else {
            Ok(())
        };
        if let Err(e) = written {
            let doing = format!("writing {}", wal.writer.path().display());
            if io_is_no_space(&e) {
                wal.broken = true;
            }
            return Err(Failure::of(&doing, &Error::Io(e)));
        }
        let mem = Arc::clone(&self.state.read().mem);
        let mut seq = first_seq;
        for p in group {
            apply_to_memtable(&mem, seq, &p.batch);
            seq += p.batch.len() as u64;
        }
        // Publish only now: a reader never sees part of a batch.
        self.visible_seq.store(seq - 1, Ordering::Release);
        if mem.approximate_bytes() >= self.options.memtable_bytes {
            // The group is in the memtable and visible: it succeeded whatever happens now. A
            // rotation that fails for space is tried again by the next group.
            if let Err(e) = self.rotate(&mut wal) {
                match Failure::of("starting a new memtable", &e) {
                    Failure::NoSpace(_) => self.stats.lock().no_space_errors += 1,
                    Failure::Poisoned(why) => return Err(Failure::Poisoned(why)),
                }
            }
        }
        Ok(())
    }

    /// Holds a write back while the background work is behind: waits while the frozen
    /// memtables are at their limit or level 0 holds `level0_stop` tables, and sleeps a
    /// millisecond while it holds `level0_slowdown`.
    fn make_room(&self) -> std::result::Result<(), String> {
        let limits = &self.options.compaction;
        // Level 0 must be allowed to reach the compaction trigger, or nothing would drain it.
        let stop = limits.level0_stop.max(limits.level0_trigger + 1);
        let mut background = self.background.lock();
        let mut stalled = false;
        let slowed = loop {
            if let Some(why) = &background.error {
                return Err(why.clone());
            }
            let state = Arc::clone(&self.state.read());
            let level0 = state.version.level(0).len();
            if state.imm.len() < self.options.max_frozen_memtables.max(1) && level0 < stop {
                break level0 >= limits.level0_slowdown;
            }
            if !stalled {
                stalled = true;
                self.stats.lock().stalled_writes += 1;
            }
            self.background_changed.wait(&mut background);
        };
        drop(background);
        if slowed {
            self.stats.lock().slowed_writes += 1;
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(())
    }

    /// A number for a new file. Refused past [`MAX_FILE_NUMBER`], so that no edit this session
    /// writes names a number the next open refuses (unreachable but by a damaged manifest).
    fn new_file_number(&self) -> Result<u64> {
        let take = |n: u64| (n <= MAX_FILE_NUMBER).then_some(n + 1);
        self.next_file.fetch_update(Ordering::Relaxed, Ordering::Relaxed, take).map_err(|n| {
            let why = format!("file numbers are exhausted (next {n}, largest {MAX_FILE_NUMBER})");
            Error::Io(std::io::Error::other(why))
        })
    }

    /// Freezes the active memtable and starts a new one with a new WAL. The old WAL is synced
    /// first, so a crash never keeps a later write and loses an earlier one.
    fn rotate(&self, wal: &mut WalFile) -> Result<()> {
        let fs = self.fs.as_ref();
        let number = self.new_file_number()?;
        let path = self.dir.join(wal_name(number));
        let writer = WalWriter::create(fs, &path)?;
        let synced = fs.sync_dir(&self.dir).and_then(|()| wal.writer.sync());
        if let Err(e) = synced {
            // The new WAL holds nothing; the old one stays in use (and is synced next time).
            let _ = fs.remove(&path);
            return Err(e.into());
        }
        wal.writer = writer;
        wal.broken = false;
        let wals = std::mem::replace(&mut wal.numbers, vec![number]);
        self.swap_state(|s| ReadState {
            mem: Arc::new(Memtable::new()),
            imm: std::iter::once(Frozen { mem: Arc::clone(&s.mem), wals, next_wal: number })
                .chain(s.imm.iter().cloned())
                .collect(),
            version: Arc::clone(&s.version),
            tables: Arc::clone(&s.tables),
        });
        self.background.lock().pending = true;
        self.background_changed.notify_all();
        Ok(())
    }

    /// The worker thread: waits for work, does it, and exits when the last handle is dropped
    /// or the work fails (poisoning the engine).
    fn background_loop(&self) {
        loop {
            {
                let mut background = self.background.lock();
                while !background.pending && !background.stop {
                    self.background_changed.wait(&mut background);
                }
                if background.stop {
                    return;
                }
                background.pending = false;
            }
            match self.run_jobs() {
                Ok(()) => {}
                Err(e) if e.is_no_space() => {
                    if !self.wait_for_space(&e) {
                        return;
                    }
                }
                Err(e) => {
                    self.give_up("background flush or compaction", &e);
                    return;
                }
            }
        }
    }

    /// After a flush or compaction failed for lack of space (its partial output already
    /// removed): notes it, waits a while (longer each time, up to a second) and marks the
    /// work pending again, so that it is retried once space is freed. Writes meanwhile wait
    /// (see [`make_room`](Self::make_room)) rather than fail. False if the database closed.
    fn wait_for_space(&self, error: &Error) -> bool {
        self.stats.lock().no_space_errors += 1;
        let mut background = self.background.lock();
        let retries = background.no_space_retries;
        background.no_space = Some(format!("background flush or compaction failed: {error}"));
        background.no_space_retries = retries.saturating_add(1);
        self.background_changed.notify_all();
        let pause = std::time::Duration::from_millis(10u64 << retries.min(7)).min(MAX_SPACE_WAIT);
        let until = std::time::Instant::now() + pause;
        while !background.stop {
            if self.background_changed.wait_until(&mut background, until).timed_out() {
                break;
            }
        }
        background.pending = true;
        !background.stop
    }

    /// Flushes frozen memtables (oldest first), then compacts until nothing is due.
    fn run_jobs(&self) -> Result<()> {
        loop {
            if self.background.lock().stop {
                return Ok(());
            }
            let job = self.jobs.lock();
            let state = Arc::clone(&self.state.read());
            if let Some(frozen) = state.imm.last() {
                self.flush_frozen(frozen)?;
            } else if let Some(task) = compaction::pick(&state.version, &self.options.compaction) {
                if let Outcome::Stopped = self.compact(&task)? {
                    return Ok(());
                }
            } else {
                // Idle. Whoever found the job lock taken while looking (`wait_idle`) must hear.
                drop(job);
                let _background = self.background.lock();
                self.background_changed.notify_all();
                return Ok(());
            }
            drop(job);
            let mut background = self.background.lock();
            background.no_space = None;
            background.no_space_retries = 0;
            self.background_changed.notify_all();
        }
    }

    /// Creates a table file, synced as it is written every `table_bytes_per_sync`.
    fn create_table(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        let file = self.fs.create(path)?;
        Ok(Box::new(SyncEvery::new(file, self.options.table_bytes_per_sync)))
    }

    /// Writes a frozen memtable out as a level-0 table (synced), logs the edit that makes it
    /// live and retires its WALs (synced), swaps it in for the memtable, deletes the WALs.
    fn flush_frozen(&self, frozen: &Frozen) -> Result<()> {
        let fs = self.fs.as_ref();
        let file = self.new_file_number()?;
        let path = self.dir.join(table_name(file));
        let entries = frozen.mem.entries();
        let built = (|| -> Result<(u64, u64)> {
            let mut builder = TableBuilder::new(self.create_table(&path)?);
            for (key, seq, value) in &entries {
                builder.add(key, *seq, value)?;
            }
            let finished = builder.finish()?;
            fs.sync_dir(&self.dir)?;
            Ok(finished)
        })();
        let (count, bytes) = built.inspect_err(|_| {
            // A partial table would only take space (the next open would remove it).
            let _ = fs.remove(&path);
        })?;
        let meta = TableMeta {
            level: 0,
            file,
            entries: count,
            bytes,
            smallest: entries.first().map(|e| e.0.clone()).unwrap_or_default(),
            largest: entries.last().map(|e| e.0.clone()).unwrap_or_default(),
        };
        let table = Arc::new(Table::open(fs, &path)?);
        let mut manifest = self.manifest.lock();
        let log_number = manifest.log_number;
        manifest.log_number = log_number.max(frozen.next_wal);
        let retire = frozen.wals.iter().map(|n| self.dir.join(wal_name(*n))).collect();
        let edit =
            self.log_edit(&mut manifest, vec![meta], Vec::new(), retire).inspect_err(|_| {
                // The memtable is not flushed: its WALs are still needed.
                manifest.log_number = log_number;
            })?;
        self.swap_state(|s| {
            let mut tables = (*s.tables).clone();
            tables.insert(file, Arc::clone(&table));
            ReadState {
                mem: Arc::clone(&s.mem),
                imm: s.imm.iter().filter(|f| !Arc::ptr_eq(&f.mem, &frozen.mem)).cloned().collect(),
                version: Arc::new(s.version.apply(&edit)),
                tables: Arc::new(tables),
            }
        });
        drop(manifest);
        self.stats.lock().flushes += 1;
        Ok(())
    }

    /// Appends an edit to the manifest and syncs it; returns the edit to apply.
    /// Then deletes the files the previous edit retired, and keeps `retire` for the next one.
    fn log_edit(
        &self,
        manifest: &mut ManifestFile,
        added: Vec<TableMeta>,
        removed: Vec<(u8, u64)>,
        retire: Vec<PathBuf>,
    ) -> Result<VersionEdit> {
        if manifest.broken {
            self.rewrite_manifest(manifest)?;
        }
        let edit = VersionEdit {
            log_number: manifest.log_number,
            next_file: self.next_file.load(Ordering::Relaxed),
            last_seq: self.visible_seq.load(Ordering::Acquire),
            added,
            removed,
        };
        if let Err(e) = append_edit(manifest.file.as_mut(), &edit) {
            // The record may be torn, or whole and durable: append nothing more after it, and
            // keep its tables until a rewritten manifest has made it moot.
            manifest.broken = true;
            manifest.orphans.extend(edit.added.iter().map(|t| self.dir.join(table_name(t.file))));
            return Err(e);
        }
        let fs = self.fs.as_ref();
        for path in std::mem::replace(&mut manifest.retired, retire) {
            fs.remove(&path)?;
        }
        fs.sync_dir(&self.dir)?;
        Ok(edit)
    }

    /// Replaces a manifest whose last append failed (it may end in a torn record, which must
    /// stay the last) by one edit describing the whole current version: written to a
    /// temporary file, synced, renamed over the manifest, the directory synced. Then the
    /// tables of failed edits and the files the last edit retired can go: no record names
    /// them any more.
    fn rewrite_manifest(&self, manifest: &mut ManifestFile) -> Result<()> {
        let fs = self.fs.as_ref();
        let version = Arc::clone(&self.state.read().version);
        let whole = VersionEdit {
            log_number: manifest.log_number,
            next_file: self.next_file.load(Ordering::Relaxed),
            last_seq: self.visible_seq.load(Ordering::Acquire),
            added: version.tables().cloned().collect(),
            removed: Vec::new(),
        };
        let tmp = self.dir.join(MANIFEST_TMP_FILE);
        let written = fs.create(&tmp).map_err(Error::from).and_then(|mut file| {
            append_edit(file.as_mut(), &whole)?;
            fs.rename(&tmp, &self.dir.join(MANIFEST_FILE))?;
            fs.sync_dir(&self.dir)?;
            Ok(())
        });
        if let Err(e) = written {
            let _ = fs.remove(&tmp);
            return Err(e);
        }
        manifest.file = fs.open_append(&self.dir.join(MANIFEST_FILE))?;
        manifest.broken = false;
        let unused = std::mem::take(&mut manifest.orphans);
        for path in unused.into_iter().chain(std::mem::take(&mut manifest.retired)) {
            let _ = fs.remove(&path);
        }
        Ok(())
    }

    /// Runs one compaction: merge the inputs as a stream, write the outputs (cut at key
    /// boundaries near the target size), log the edit, swap the tables, delete the inputs.
    /// Abandoned (its outputs left for the next open to remove) if the database is closing.
    fn compact(&self, task: &CompactionTask) -> Result<Outcome> {
        let mut created = Vec::new();
        let built = self.write_compaction(task, &mut created);
        let (outputs, opened) = match built {
            Ok(Some(done)) => done,
            Ok(None) => return Ok(Outcome::Stopped),
            Err(e) => {
                // Partial outputs would only take space (the next open would remove them).
                for file in created {
                    let _ = self.fs.remove(&self.dir.join(table_name(file)));
                }
                return Err(e);
            }
        };
        let mut manifest = self.manifest.lock();
        let removed = task.inputs.iter().map(|t| (t.level, t.file)).collect();
        let retire = task.inputs.iter().map(|t| self.dir.join(table_name(t.file))).collect();
        let edit = self.log_edit(&mut manifest, outputs, removed, retire)?;
        self.swap_state(|s| {
            let mut tables = (*s.tables).clone();
            for meta in &task.inputs {
                tables.remove(&meta.file);
            }
            tables.extend(opened.iter().cloned());
            ReadState {
                mem: Arc::clone(&s.mem),
                imm: s.imm.clone(),
                version: Arc::new(s.version.apply(&edit)),
                tables: Arc::new(tables),
            }
        });
        drop(manifest);
        self.stats.lock().compactions += 1;
        Ok(Outcome::Done)
    }

    /// Writes a compaction's output tables (their numbers go into `created` as they are
    /// made) and opens them; `None` if the database is closing.
    #[allow(clippy::type_complexity)]
    fn write_compaction(
        &self,
        task: &CompactionTask,
        created: &mut Vec<u64>,
    ) -> Result<Option<(Vec<TableMeta>, Vec<(u64, Arc<Table>)>)>> {
        let fs = self.fs.as_ref();
        let state = Arc::clone(&self.state.read());
        let open = |meta: &TableMeta| {
            state.tables.get(&meta.file).cloned().ok_or_else(|| Error::Corruption {
                file: self.dir.join(table_name(meta.file)),
                offset: 0,
                detail: "a live table is not open".into(),
            })
        };
        // Each level-0 input is a run of its own; the inputs of a deeper level form one run.
        let mut runs = Vec::new();
        let mut deeper: BTreeMap<u8, Vec<Arc<Table>>> = BTreeMap::new();
        for meta in &task.inputs {
            if meta.level == 0 {
                runs.push(compaction::Run::new(vec![open(meta)?])?);
            } else {
                deeper.entry(meta.level).or_default().push(open(meta)?);
            }
        }
        for tables in deeper.into_values() {
            runs.push(compaction::Run::new(tables)?);
        }
        let mut merged = compaction::MergeRuns::new(runs);
        let mut retention = Retention::new(self.oldest_snapshot(), task.bottommost);
        let target = self.options.compaction.target_table_bytes;

        let mut outputs: Vec<TableMeta> = Vec::new();
        let mut building: Option<Output> = None;
        let mut steps = 0u64;
        while let Some((key, value)) = merged.entry() {
            steps += 1;
            if steps.is_multiple_of(4096) && self.background.lock().stop {
                return Ok(None);
            }
            let Some((user, seq, is_value)) = split_key(key) else {
                return Err(Error::Corruption {
                    file: self.dir.clone(),
                    offset: 0,
                    detail: "a compaction input holds a key shorter than its trailer".into(),
                });
            };
            if retention.keep(user, seq, !is_value) {
                // Cut only between user keys, so each key's versions stay in one table.
                if let Some(out) =
                    building.take_if(|o| o.builder.bytes() >= target && o.largest != user)
                {
                    outputs.push(out.finish(task.output_level)?);
                }
                if building.is_none() {
                    let file = self.new_file_number()?;
                    created.push(file);
                    let builder =
                        TableBuilder::new(self.create_table(&self.dir.join(table_name(file)))?);
                    let first = Bytes::copy_from_slice(user);
                    building =
                        Some(Output { file, builder, smallest: first.clone(), largest: first });
                }
                let out = building.as_mut().expect("just made");
                out.builder.add_internal(key, value)?;
                if out.largest != user {
                    out.largest = Bytes::copy_from_slice(user);
                }
            }
            merged.advance()?;
        }
        if let Some(out) = building.take() {
            outputs.push(out.finish(task.output_level)?);
        }
        fs.sync_dir(&self.dir)?;

        let mut opened = Vec::with_capacity(outputs.len());
        for meta in &outputs {
            let table = Table::open(fs, &self.dir.join(table_name(meta.file)))?;
            opened.push((meta.file, Arc::new(table)));
        }
        Ok(Some((outputs, opened)))
    }

    fn swap_state(&self, next: impl FnOnce(&ReadState) -> ReadState) {
        let mut state = self.state.write();
        let replaced = Arc::new(next(&state));
        *state = replaced;
    }

    /// The oldest version any reader may still ask for: the oldest live snapshot's, or the
    /// newest write's if there is none.
    fn oldest_snapshot(&self) -> u64 {
        let live = self.snapshots.lock();
        let newest = self.visible_seq.load(Ordering::Acquire);
        live.keys().next().copied().unwrap_or(newest).min(newest)
    }
}

/// A compaction output table being written.
struct Output {
    file: u64,
    builder: TableBuilder,
    smallest: Bytes,
    largest: Bytes,
}

impl Output {
    fn finish(self, level: usize) -> Result<TableMeta> {
        let (entries, bytes) = self.builder.finish()?;
        let (file, smallest, largest) = (self.file, self.smallest, self.largest);
        Ok(TableMeta { level: level as u8, file, entries, bytes, smallest, largest })
    }
}

/// An ordered iterator over live key-value pairs at a snapshot (see [`Db::iter`]).
pub struct Iter {
    merge: MergeIter,
    /// Keeps the versions this iterator reads from being compacted away.
    _snapshot: Snapshot,
}

impl Iterator for Iter {
    type Item = Result<(Bytes, Bytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.merge.next_pair().transpose()
    }
}

impl std::fmt::Debug for Iter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter").finish_non_exhaustive()
    }
}

/// Appends one edit to the manifest and syncs it.
fn append_edit(manifest: &mut dyn WritableFile, edit: &VersionEdit) -> Result<()> {
    let mut record = Vec::new();
    wal::frame(&mut record, RECORD_KIND_EDIT, &edit.encode());
    manifest.append(&record)?;
    manifest.sync()?;
    Ok(())
}

fn apply_to_memtable(memtable: &Memtable, first_seq: u64, batch: &WriteBatch) {
    for (i, op) in batch.ops.iter().enumerate() {
        let seq = first_seq + i as u64;
        match op {
            Op::Put { key, value } => memtable.insert(key.clone(), seq, Value::Put(value.clone())),
            Op::Delete { key } => memtable.insert(key.clone(), seq, Value::Tombstone),
        }
    }
}
