#![doc = include_str!("../README.md")]
//!
//! # Design
//!
//! `lsm`: an embedded log-structured merge-tree storage engine.
//!
//! A [`Db`] stores arbitrary byte keys and values: `get`, `put`, `delete`, atomic
//! [`WriteBatch`]es, point-in-time [`Snapshot`]s, ordered iterators over key ranges
//! ([`Db::iter`]), `flush`, `compact_range`, and explicit durability per write. Everything goes
//! through a small [`FileSystem`] trait: [`OsFs`] for real files, [`MemFs`] for tests (its
//! `crash()` keeps only what was synced). `docs/lsm.md` in the repository describes the
//! architecture, the compaction policy and the recovery rules; `docs/formats/` the bytes on disk.
//!
//! # Design
//!
//! A write is a [`WriteBatch`]. Writers queue up; the first becomes the leader of a group,
//! assigns each batch its sequence numbers, appends the whole group to the WAL in one write,
//! syncs once if any writer asked for durability, inserts the batches into the memtable in
//! order, and only then publishes the last sequence number. Readers take that published number
//! as their snapshot, so they never see part of a batch, and never wait for writers: the
//! memtable is a lock-free skiplist (`crossbeam-skiplist`) keyed by (key, sequence number
//! descending).
//!
//! Durability is explicit: [`Options::sync_writes`] sets the default, and
//! [`WriteOptions::sync`] chooses per write. If a WAL write or sync fails, the engine is
//! poisoned: it cannot know what reached the disk, so every later write fails with
//! [`Error::Poisoned`] until the database is reopened. A full disk (`ENOSPC`, `EDQUOT`) is the
//! exception: the write that met it fails with [`Error::NoSpace`], the next one starts a new
//! WAL, and flushes and compactions that fail for space clean up and retry by themselves
//! (`docs/lsm.md`, "A full disk").
//!
//! When the memtable passes [`Options::memtable_bytes`], the write that filled it syncs the WAL,
//! starts a new WAL and memtable, and hands the full one to a background thread, which writes it
//! out as a level-0 table (synced), appends a version edit to the manifest (synced), and then
//! compacts: level 0 into level 1 once it holds `level0_trigger` tables, and any level over its
//! size budget into the next ([`CompactionOptions`]; the choice is a pure function of the
//! version). Compaction drops versions no live snapshot can see, and tombstones at the bottom of
//! the tree. Writes are held back, never failed, while the background work is behind: they wait
//! while memtables queue up or level 0 is full, and slow down as it fills.
//!
//! Tables are read through `mmap` ([`OsFs`]): data blocks are checked against their checksums
//! the first time an open table reads them, then served without copying. Only the index and the
//! bloom filter of each table are held in memory.
//!
//! On open, the manifest is replayed to find the live tables, and the WALs written since the
//! last flush are replayed into a memtable: a torn last record (a write that never finished) is
//! cut off, any other damage is [`Error::Corruption`]. Files an edit retires are deleted only
//! after a later edit is durable, so a damaged last manifest record can be cut off safely too.
//!
//! ```
//! use lsm::{Db, MemFs, Options, WriteBatch};
//! use std::sync::Arc;
//!
//! let fs = MemFs::new();
//! let options = Options { fs: Arc::new(fs.clone()), sync_writes: true, ..Options::default() };
//! let db = Db::open("/data", options.clone()).unwrap();
//! db.put("apple", "red").unwrap();
//! let before = db.snapshot();
//! let mut batch = WriteBatch::new();
//! batch.put("banana", "yellow").delete("apple");
//! db.write(batch).unwrap();
//! assert_eq!(db.get(b"apple").unwrap(), None);
//! assert_eq!(db.get_at(b"apple", &before).unwrap().as_deref(), Some(&b"red"[..]));
//!
//! drop(db); // The process dies (its background thread with it)...
//! fs.crash(); // ...and the power fails: synced writes survive.
//! let db = Db::open("/data", options).unwrap();
//! assert_eq!(db.get(b"banana").unwrap().as_deref(), Some(&b"yellow"[..]));
//! ```

#![deny(missing_docs)]

mod batch;
mod compaction;
mod db;
mod error;
mod format;
mod fs;
mod iter;
mod manifest;
mod memtable;
mod table;
mod wal;

pub use batch::{Op, WriteBatch};
pub use compaction::CompactionOptions;
pub use db::{Db, Iter, Options, Snapshot, Stats, WriteOptions};
pub use error::{Error, Result};
pub use fs::{FileSystem, MemFs, OsFs, RandomAccessFile, WritableFile};
