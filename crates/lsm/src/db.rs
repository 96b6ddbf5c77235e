//! The database handle: the write path (WAL, memtable, flush to level-0 tables, manifest) and
//! the read path (memtables, then tables, newest first).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::batch::{Op, WriteBatch};
use crate::compaction::{self, CompactionOptions, CompactionTask};
use crate::error::{Error, Result};
use crate::format::{
    MANIFEST_FILE, RECORD_KIND_BATCH, RECORD_KIND_EDIT, TABLE_SUFFIX, WAL_PREFIX, WAL_SUFFIX,
};
use crate::fs::{FileSystem, OsFs, WritableFile};
use crate::iter::MergeIter;
use crate::manifest::{TableMeta, Version, VersionEdit};
use crate::memtable::{Lookup, Memtable, Value};
use crate::table::{Table, TableBuilder};
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
    /// The shape of the tree of tables, and when to compact.
    pub compaction: CompactionOptions,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            fs: Arc::new(OsFs),
            sync_writes: false,
            memtable_bytes: 4 << 20,
            compaction: CompactionOptions::default(),
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

/// One writer waiting in the group-commit queue.
struct Pending {
    batch: WriteBatch,
    sync: bool,
    done: Mutex<Option<std::result::Result<(), String>>>,
}

struct WriteQueue {
    waiting: VecDeque<Arc<Pending>>,
    leader_active: bool,
    next_seq: u64,
    poisoned: Option<String>,
}

/// What reads look at, swapped as a whole (readers clone the `Arc` and never wait on writes).
struct ReadState {
    mem: Arc<Memtable>,
    /// Memtables being written out, newest first.
    imm: Vec<Arc<Memtable>>,
    version: Arc<Version>,
    tables: Arc<BTreeMap<u64, Arc<Table>>>,
}

/// The files only the group-commit leader (or a flush) touches.
struct Files {
    wal: WalWriter,
    wal_number: u64,
    manifest: Box<dyn WritableFile>,
    next_file: u64,
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
    files: Mutex<Files>,
    snapshots: Arc<LiveSnapshots>,
}

/// An open database.
///
/// Cheap to clone; clones share the database. Reads never wait for writes. Writes from many
/// threads are committed in groups: one leader appends every waiting batch to the WAL in one
/// write, syncs once if any of them asked for it, inserts them into the memtable in order, and
/// wakes the others (group commit). When the memtable passes `memtable_bytes` the leader writes
/// it out as a level-0 table.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

fn wal_name(number: u64) -> String {
    format!("{WAL_PREFIX}{number:08}{WAL_SUFFIX}")
}

fn wal_number(name: &str) -> Option<u64> {
    name.strip_prefix(WAL_PREFIX)?.strip_suffix(WAL_SUFFIX)?.parse().ok()
}

fn table_name(number: u64) -> String {
    format!("{number:08}{TABLE_SUFFIX}")
}

fn corruption(file: &Path, offset: usize, detail: String) -> Error {
    Error::Corruption { file: file.to_path_buf(), offset: offset as u64, detail }
}

impl Db {
    /// Opens the database in `dir`, creating it if needed: replays the manifest, opens the
    /// tables it lists, and replays the WALs not yet flushed.
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
                version = version.apply(&edit);
                log_number = log_number.max(edit.log_number);
                next_file = next_file.max(edit.next_file);
                last_seq = last_seq.max(edit.last_seq);
            }
        }
        let mut tables = BTreeMap::new();
        for t in version.tables() {
            tables
                .insert(t.file, Arc::new(Table::open(fs.as_ref(), &dir.join(table_name(t.file)))?));
        }
        // A table written by a flush that crashed before its manifest edit is not live: remove it.
        for name in &names {
            let number = name.strip_suffix(TABLE_SUFFIX).and_then(|n| n.parse::<u64>().ok());
            if let Some(number) = number
                && !tables.contains_key(&number)
            {
                fs.remove(&dir.join(name))?;
                next_file = next_file.max(number + 1);
            }
        }

        // 2. The WALs not yet flushed, in order.
        let mut wals: Vec<u64> = names.iter().filter_map(|n| wal_number(n)).collect();
        wals.sort_unstable();
        let memtable = Memtable::new();
        for &number in &wals {
            let path = dir.join(wal_name(number));
            if number < log_number {
                fs.remove(&path)?; // Flushed before a crash that came before its deletion.
                continue;
            }
            for (offset, kind, payload) in wal::read_all(fs.as_ref(), &path)? {
                let decoded =
                    (kind == RECORD_KIND_BATCH).then(|| WriteBatch::decode(&payload)).flatten();
                let Some((seq, batch)) = decoded else {
                    let detail = format!("record of kind {kind} does not decode as a write batch");
                    return Err(corruption(&path, offset, detail));
                };
                apply_to_memtable(&memtable, seq, &batch);
                last_seq = last_seq.max(seq + batch.len() as u64 - 1);
            }
        }
        next_file = next_file.max(wals.last().map_or(0, |n| n + 1));

        // 3. The files to append to.
        let mut created = false;
        let (wal, wal_number) = match wals.iter().copied().filter(|&n| n >= log_number).max() {
            Some(n) => (WalWriter::open(fs.as_ref(), &dir.join(wal_name(n)))?, n),
            None => {
                let n = next_file;
                next_file += 1;
                created = true;
                (WalWriter::create(fs.as_ref(), &dir.join(wal_name(n)))?, n)
            }
        };
        let manifest = if manifest_exists {
            fs.open_append(&manifest_path)?
        } else {
            created = true;
            fs.create(&manifest_path)?
        };
        if created {
            fs.sync_dir(&dir)?;
        }

        let state = ReadState {
            mem: Arc::new(memtable),
            imm: Vec::new(),
            version: Arc::new(version),
            tables: Arc::new(tables),
        };
        let inner = Inner {
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
            files: Mutex::new(Files { wal, wal_number, manifest, next_file }),
            snapshots: Arc::default(),
        };
        Ok(Db { inner: Arc::new(inner) })
    }

    /// Sets `key` to `value`.
    ///
    /// # Errors
    /// [`Error::Io`] if the WAL write fails; [`Error::Poisoned`] after an earlier failure.
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
    /// # Errors
    /// As [`put`](Self::put).
    pub fn write_opt(&self, batch: WriteBatch, options: WriteOptions) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let me = Arc::new(Pending { batch, sync: options.sync, done: Mutex::new(None) });
        let inner = &self.inner;
        let mut q = inner.queue.lock();
        if let Some(why) = &q.poisoned {
            return Err(Error::Poisoned(why.clone()));
        }
        q.waiting.push_back(Arc::clone(&me));
        loop {
            if let Some(result) = me.done.lock().take() {
                return result.map_err(Error::Poisoned);
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
            let result = self.commit_group(&group, first_seq);
            q = inner.queue.lock();
            q.leader_active = false;
            if let Err(why) = &result {
                q.poisoned.get_or_insert_with(|| why.clone());
            }
            for p in &group {
                *p.done.lock() = Some(result.clone());
            }
            inner.queue_changed.notify_all();
        }
    }

    /// The group-commit leader's work: one WAL append, at most one sync, the memtable, and a
    /// flush if the memtable is full.
    fn commit_group(
        &self,
        group: &[Arc<Pending>],
        first_seq: u64,
    ) -> std::result::Result<(), String> {
        let inner = &self.inner;
        let mut framed = Vec::new();
        let mut payload = Vec::new();
        let mut seq = first_seq;
        for p in group {
            payload.clear();
            p.batch.encode(seq, &mut payload);
            wal::frame(&mut framed, RECORD_KIND_BATCH, &payload);
            seq += p.batch.len() as u64;
        }
        let mut files = inner.files.lock();
        let written = files
            .wal
            .append(&framed)
            .and_then(|()| if group.iter().any(|p| p.sync) { files.wal.sync() } else { Ok(()) });
        if let Err(e) = written {
            return Err(format!("writing {} failed: {e}", files.wal.path().display()));
        }
        let mem = Arc::clone(&inner.state.read().mem);
        let mut seq = first_seq;
        for p in group {
            apply_to_memtable(&mem, seq, &p.batch);
            seq += p.batch.len() as u64;
        }
        // Publish only now: a reader never sees part of a batch.
        inner.visible_seq.store(seq - 1, Ordering::Release);
        if mem.approximate_bytes() >= inner.options.memtable_bytes {
            self.flush_locked(&mut files)
                .map_err(|e| format!("flushing the memtable failed: {e}"))?;
        }
        Ok(())
    }

    /// Writes the memtable out as a level-0 table, if it holds anything.
    ///
    /// # Errors
    /// [`Error::Io`] if a file cannot be written; [`Error::Poisoned`] after an earlier failure.
    pub fn flush(&self) -> Result<()> {
        if let Some(why) = &self.inner.queue.lock().poisoned {
            return Err(Error::Poisoned(why.clone()));
        }
        let mut files = self.inner.files.lock();
        self.flush_locked(&mut files)
    }

    /// The flush, with the files held (so no write is in progress):
    /// 1. start a new WAL for the writes that follow;
    /// 2. freeze the memtable (reads still see it) and write it out as a table, synced;
    /// 3. append and sync a manifest edit: the table is live, older WALs are not needed;
    /// 4. swap the table in for the frozen memtable; 5. delete the old WAL.
    fn flush_locked(&self, files: &mut Files) -> Result<()> {
        let inner = &self.inner;
        let old = Arc::clone(&inner.state.read().mem);
        if old.is_empty() {
            return Ok(());
        }
        let fs = inner.fs.as_ref();
        let new_wal = files.next_file;
        let table_file = files.next_file + 1;
        files.next_file += 2;
        let wal = WalWriter::create(fs, &inner.dir.join(wal_name(new_wal)))?;
        fs.sync_dir(&inner.dir)?;
        let old_wal = std::mem::replace(&mut files.wal, wal);
        let old_wal_number = std::mem::replace(&mut files.wal_number, new_wal);
        drop(old_wal);
        self.swap_state(|s| ReadState {
            mem: Arc::new(Memtable::new()),
            imm: std::iter::once(Arc::clone(&s.mem)).chain(s.imm.iter().cloned()).collect(),
            version: Arc::clone(&s.version),
            tables: Arc::clone(&s.tables),
        });

        let entries = old.entries();
        let table_path = inner.dir.join(table_name(table_file));
        let mut builder = TableBuilder::new(fs.create(&table_path)?);
        for (key, seq, value) in &entries {
            builder.add(key, *seq, value)?;
        }
        let (count, bytes) = builder.finish()?;
        fs.sync_dir(&inner.dir)?;
        let meta = TableMeta {
            level: 0,
            file: table_file,
            entries: count,
            bytes,
            smallest: entries.first().map(|e| e.0.clone()).unwrap_or_default(),
            largest: entries.last().map(|e| e.0.clone()).unwrap_or_default(),
        };
        let edit = VersionEdit {
            log_number: new_wal,
            next_file: files.next_file,
            last_seq: inner.visible_seq.load(Ordering::Acquire),
            added: vec![meta],
            removed: Vec::new(),
        };
        let mut record = Vec::new();
        wal::frame(&mut record, RECORD_KIND_EDIT, &edit.encode());
        files.manifest.append(&record)?;
        files.manifest.sync()?;

        let table = Arc::new(Table::open(fs, &table_path)?);
        self.swap_state(|s| {
            let mut tables = (*s.tables).clone();
            tables.insert(table_file, Arc::clone(&table));
            ReadState {
                mem: Arc::clone(&s.mem),
                imm: s.imm.iter().filter(|m| !Arc::ptr_eq(m, &old)).cloned().collect(),
                version: Arc::new(s.version.apply(&edit)),
                tables: Arc::new(tables),
            }
        });
        fs.remove(&inner.dir.join(wal_name(old_wal_number)))?;
        fs.sync_dir(&inner.dir)?;
        loop {
            // Take the version out first: the read guard must not live across the compaction.
            let version = Arc::clone(&self.inner.state.read().version);
            let Some(task) = compaction::pick(&version, &inner.options.compaction) else {
                return Ok(());
            };
            self.compact_locked(files, &task)?;
        }
    }

    /// Runs one compaction with the files held: merge the inputs, write the outputs (cut at
    /// key boundaries near the target size), log the edit, swap the tables, delete the inputs.
    fn compact_locked(&self, files: &mut Files, task: &CompactionTask) -> Result<()> {
        let inner = &self.inner;
        let fs = inner.fs.as_ref();
        let state = Arc::clone(&inner.state.read());
        let mut inputs = Vec::with_capacity(task.inputs.len());
        for meta in &task.inputs {
            let table = state.tables.get(&meta.file).ok_or_else(|| Error::Corruption {
                file: inner.dir.join(table_name(meta.file)),
                offset: 0,
                detail: "a live table is not open".into(),
            })?;
            inputs.push(table.entries()?);
        }
        let merged = compaction::merge(inputs, self.oldest_snapshot(), task.bottommost);

        let mut outputs: Vec<TableMeta> = Vec::new();
        let mut builder: Option<(u64, TableBuilder, Bytes, Bytes)> = None;
        for (i, (key, seq, value)) in merged.iter().enumerate() {
            if builder.is_none() {
                let file = files.next_file;
                files.next_file += 1;
                let b = TableBuilder::new(fs.create(&inner.dir.join(table_name(file)))?);
                builder = Some((file, b, key.clone(), key.clone()));
            }
            let (_, b, _, largest) = builder.as_mut().expect("just made");
            b.add(key, *seq, value)?;
            *largest = key.clone();
            let next_is_new_key = merged.get(i + 1).is_none_or(|n| n.0 != *key);
            if next_is_new_key && b.bytes() >= inner.options.compaction.target_table_bytes {
                let (file, b, smallest, largest) = builder.take().expect("present");
                outputs.push(finish_table(task.output_level, file, b, smallest, largest)?);
            }
        }
        if let Some((file, b, smallest, largest)) = builder.take() {
            outputs.push(finish_table(task.output_level, file, b, smallest, largest)?);
        }
        fs.sync_dir(&inner.dir)?;

        let edit = VersionEdit {
            log_number: files.wal_number,
            next_file: files.next_file,
            last_seq: inner.visible_seq.load(Ordering::Acquire),
            added: outputs.clone(),
            removed: task.inputs.iter().map(|t| (t.level, t.file)).collect(),
        };
        let mut record = Vec::new();
        wal::frame(&mut record, RECORD_KIND_EDIT, &edit.encode());
        files.manifest.append(&record)?;
        files.manifest.sync()?;

        let mut opened = Vec::with_capacity(outputs.len());
        for meta in &outputs {
            opened.push((
                meta.file,
                Arc::new(Table::open(fs, &inner.dir.join(table_name(meta.file)))?),
            ));
        }
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
        for meta in &task.inputs {
            fs.remove(&inner.dir.join(table_name(meta.file)))?;
        }
        fs.sync_dir(&inner.dir)?;
        Ok(())
    }

    fn swap_state(&self, next: impl FnOnce(&ReadState) -> ReadState) {
        let mut state = self.inner.state.write();
        let replaced = Arc::new(next(&state));
        *state = replaced;
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
        for mem in std::iter::once(&state.mem).chain(&state.imm) {
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

    /// The oldest version any reader may still ask for: the oldest live snapshot's, or the
    /// newest write's if there is none.
    fn oldest_snapshot(&self) -> u64 {
        let live = self.inner.snapshots.lock();
        let newest = self.inner.visible_seq.load(Ordering::Acquire);
        live.keys().next().copied().unwrap_or(newest).min(newest)
    }

    /// An iterator over the live pairs with `start <= key < end` (no upper bound if `end` is
    /// `None`) as of `snapshot`, in key order. It holds one block per table level in memory,
    /// not the range.
    ///
    /// # Errors
    /// As [`get`](Self::get), from positioning on the first key.
    pub fn iter(&self, start: &[u8], end: Option<&[u8]>, snapshot: &Snapshot) -> Result<Iter> {
        let state = Arc::clone(&self.inner.state.read());
        let memories: Vec<Arc<Memtable>> =
            std::iter::once(&state.mem).chain(&state.imm).cloned().collect();
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

    /// Makes every write so far durable, then closes this handle.
    ///
    /// # Errors
    /// [`Error::Io`] if the final sync fails; [`Error::Poisoned`] after an earlier failure.
    pub fn close(self) -> Result<()> {
        if let Some(why) = &self.inner.queue.lock().poisoned {
            return Err(Error::Poisoned(why.clone()));
        }
        self.inner.files.lock().wal.sync()?;
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

fn finish_table(
    level: usize,
    file: u64,
    builder: TableBuilder,
    smallest: Bytes,
    largest: Bytes,
) -> Result<TableMeta> {
    let (entries, bytes) = builder.finish()?;
    Ok(TableMeta { level: level as u8, file, entries, bytes, smallest, largest })
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
