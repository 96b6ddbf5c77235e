//! `lsm`: an embedded log-structured merge-tree storage engine (planned; no code yet).
//!
//! **Status:** not built. This page records the intended design; the work is tracked by the LSM
//! issue. Nothing here is usable.
//!
//! # Planned design
//!
//! Writes go to a write-ahead log (records framed with length and crc32, group commit) and to a
//! concurrent skiplist memtable in which readers never wait on writers. A full memtable is
//! flushed to an SSTable: prefix-compressed data blocks with restart points, an index block, a
//! bloom filter and a checksummed footer. Background leveled compaction merges tables level by
//! level; compaction planning is a pure function over the current version, and every change to
//! the set of live tables is a version edit appended to a manifest and replayed on open. All
//! file access goes through a small file-system trait, with an in-memory implementation whose
//! `crash()` drops unsynced data, so crash recovery is tested exhaustively.
//!
//! # Planned public API
//!
//! * `Db::open(path, Options)`, `get`, `put`, `delete`, `write(WriteBatch)`, `flush`,
//!   `compact_range`, `close`.
//! * `Db::iter(range)` for ordered range scans; `Db::snapshot()` for point-in-time reads by
//!   sequence number.
//! * `Options` (memtable size, level sizes, durability: sync the WAL per write or not) and one
//!   `Error` type; a failed fsync poisons the engine so every later write fails clearly.
