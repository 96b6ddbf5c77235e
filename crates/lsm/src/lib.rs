//! `lsm`: an embedded log-structured merge-tree storage engine (in progress).
//!
//! **Status.** Built so far, and tested: the file layer (a [`FileSystem`] trait with the real
//! [`OsFs`] and an in-memory [`MemFs`] whose `crash()` keeps only synced data), the write-ahead
//! log (framed, checksummed records; torn-tail recovery; corruption reported with file and
//! offset), atomic [`WriteBatch`]es with group commit, a concurrent skiplist memtable, SSTables
//! (prefix-compressed blocks with restart points, an index block, a bloom filter, a checksummed
//! footer), flushing a full memtable to a level-0 table, leveled compaction (planned by a pure
//! function of the version, dropping versions no live snapshot can see and tombstones at the
//! bottom of the tree), a manifest of version edits replayed on open, reads at point-in-time
//! [`Snapshot`]s, and streaming ordered iterators ([`Db::iter`]). **Not built yet:** flushing
//! and compacting in the background (today the writer that fills the memtable does both, so
//! that write waits), write slow-downs, backward iteration and `compact_range`; the engine is
//! not yet as fast as RocksDB on every workload (`docs/lsm.md` has the figures). The LSM issue
//! tracks the rest.
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
//! [`Error::Poisoned`] until the database is reopened.
//!
//! When the memtable passes [`Options::memtable_bytes`], the write that filled it starts a new
//! WAL, writes the memtable out as a table (synced), appends a version edit to the manifest
//! (synced), and only then deletes the old WAL. On open, the manifest is replayed to find the
//! live tables, and the WALs written since the last flush are replayed into a memtable: a torn
//! last record (a write that never finished) is cut off, any other damage is
//! [`Error::Corruption`]. Formats: `docs/formats/wal.md` and `docs/formats/sstable.md`; the
//! manifest's grammar is in the `manifest` module's source.
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
