//! The database handle: writes through the WAL into the memtable, reads from the memtable.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use crate::batch::{Op, WriteBatch};
use crate::error::{Error, Result};
use crate::format::{RECORD_KIND_BATCH, WAL_PREFIX, WAL_SUFFIX};
use crate::fs::{FileSystem, OsFs};
use crate::memtable::{Lookup, Memtable, Value};
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
}

impl Default for Options {
    fn default() -> Options {
        Options { fs: Arc::new(OsFs), sync_writes: false }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options").field("sync_writes", &self.sync_writes).finish_non_exhaustive()
    }
}

/// Per-write durability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Sync the WAL before returning.
    pub sync: bool,
}

/// A point-in-time view: reads through it see exactly the writes made before it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    seq: u64,
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

struct Inner {
    dir: PathBuf,
    options: Options,
    memtable: Memtable,
    /// Writes with a sequence number at most this are complete in the memtable and visible.
    visible_seq: AtomicU64,
    queue: Mutex<WriteQueue>,
    queue_changed: Condvar,
    /// Only the group-commit leader touches the WAL.
    wal: Mutex<WalWriter>,
}

/// An open database.
///
/// Cheap to clone; clones share the database. Reads never wait for writes. Writes from many
/// threads are committed in groups: one leader appends every waiting batch to the WAL in one
/// write, syncs once if any of them asked for it, inserts them into the memtable in order, and
/// wakes the others (group commit).
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

impl Db {
    /// Opens the database in `dir`, creating it if needed and replaying its WAL.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be used, [`Error::Corruption`] if the WAL is damaged
    /// before its tail.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        let dir = dir.as_ref().to_path_buf();
        let fs = Arc::clone(&options.fs);
        fs.create_dir_all(&dir)?;
        let mut wals: Vec<u64> = fs.list(&dir)?.iter().filter_map(|n| wal_number(n)).collect();
        wals.sort_unstable();
        let memtable = Memtable::new();
        let mut last_seq = 0;
        for &number in &wals {
            let path = dir.join(wal_name(number));
            for (offset, kind, payload) in wal::read_all(fs.as_ref(), &path)? {
                let decoded =
                    (kind == RECORD_KIND_BATCH).then(|| WriteBatch::decode(&payload)).flatten();
                let Some((seq, batch)) = decoded else {
                    return Err(Error::Corruption {
                        file: path,
                        offset: offset as u64,
                        detail: format!("record of kind {kind} does not decode as a write batch"),
                    });
                };
                apply_to_memtable(&memtable, seq, &batch);
                last_seq = last_seq.max(seq + batch.len() as u64 - 1);
            }
        }
        let wal = match wals.last() {
            Some(&n) => WalWriter::open(fs.as_ref(), &dir.join(wal_name(n)))?,
            None => {
                let w = WalWriter::create(fs.as_ref(), &dir.join(wal_name(1)))?;
                fs.sync_dir(&dir)?;
                w
            }
        };
        let inner = Inner {
            dir,
            options,
            memtable,
            visible_seq: AtomicU64::new(last_seq),
            queue: Mutex::new(WriteQueue {
                waiting: VecDeque::new(),
                leader_active: false,
                next_seq: last_seq + 1,
                poisoned: None,
            }),
            queue_changed: Condvar::new(),
            wal: Mutex::new(wal),
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

    /// The group-commit leader's work: one WAL append, at most one sync, then the memtable.
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
        let mut wal = inner.wal.lock();
        let written = wal
            .append(&framed)
            .and_then(|()| if group.iter().any(|p| p.sync) { wal.sync() } else { Ok(()) });
        if let Err(e) = written {
            return Err(format!("writing {} failed: {e}", wal.path().display()));
        }
        drop(wal);
        let mut seq = first_seq;
        for p in group {
            apply_to_memtable(&inner.memtable, seq, &p.batch);
            seq += p.batch.len() as u64;
        }
        // Publish only now: a reader never sees part of a batch.
        inner.visible_seq.store(seq - 1, Ordering::Release);
        Ok(())
    }

    /// The current value of `key`.
    ///
    /// # Errors
    /// None yet (reads come from memory); the signature leaves room for table reads.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.get_at(key, &self.snapshot())
    }

    /// The value of `key` as of `snapshot`.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn get_at(&self, key: &[u8], snapshot: &Snapshot) -> Result<Option<Bytes>> {
        Ok(match self.inner.memtable.get(key, snapshot.seq) {
            Lookup::Found(v) => Some(v),
            Lookup::Deleted | Lookup::Absent => None,
        })
    }

    /// A point-in-time view of everything written so far.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { seq: self.inner.visible_seq.load(Ordering::Acquire) }
    }

    /// The live pairs with `start <= key < end` (no upper bound if `end` is `None`) as of
    /// `snapshot`, in key order.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        snapshot: &Snapshot,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        Ok(self.inner.memtable.scan(start, end, snapshot.seq))
    }

    /// Makes every write so far durable, then closes this handle.
    ///
    /// # Errors
    /// [`Error::Io`] if the final sync fails; [`Error::Poisoned`] after an earlier failure.
    pub fn close(self) -> Result<()> {
        if let Some(why) = &self.inner.queue.lock().poisoned {
            return Err(Error::Poisoned(why.clone()));
        }
        self.inner.wal.lock().sync()?;
        Ok(())
    }

    /// The directory the database lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Bytes held in the memtable, roughly.
    pub fn memtable_bytes(&self) -> usize {
        self.inner.memtable.approximate_bytes()
    }
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
