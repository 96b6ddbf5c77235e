#![doc = include_str!("../README.md")]
//!
//! # Design
//!
//! `kvserver`: a linearizable, replicated key-value service built on [`raft`] and [`lsm`].
//!
//! Each replica ([`KvServer`]) runs a Raft node and a [`StateMachine`]; the one shipped,
//! [`KvStateMachine`], keeps everything in an LSM database. Clients (`kvclient::Clerk`) send
//! [`Request`](kvproto::Request)s carrying a client id and a sequence number. Over a real
//! network, [`redis::RedisServer`] puts the Redis protocol in front of a replica (for any Redis
//! client, and for the clerk's `RAFTKV.REQUEST`), and the `kvserver` binary runs one replica as
//! a process: peers over TCP, Raft's log in `FileStorage`, the data in `lsm`
//! (`docs/operations.md`). With [`ServerConfig::forward_writes`] and
//! [`ServerConfig::follower_reads`], any replica serves any request. [`auth`] is the optional
//! client access control of the Redis front end (passwords, read-only users).
//!
//! # Writes
//!
//! The leader proposes the request as a log entry, stamped with its clock
//! ([`command`]), and waits for it to apply. The state machine applies committed entries in
//! log order; for each write it checks the client's session in the dedup table (last sequence
//! number applied, its outcome, when it expires) and either applies the write or, for a retry
//! of one already applied, answers with the recorded outcome; a write naming no live session
//! (never registered, or expired on the log clock: [`ServerConfig::session_ttl`]) or skipping
//! numbers is refused. The data change, the
//! client's new dedup entry and the new applied index go into **one atomic LSM write batch**:
//! after a crash the state machine is exactly as of some applied index, and Raft delivers
//! every entry after it again, so no write is lost or applied twice. A waiting request is
//! answered when the entry at its index applies: with the outcome if that entry is its request
//! (same term, client and sequence number), otherwise (the leader lost its leadership and the
//! entry was replaced) with "wrong leader", and the clerk retries elsewhere.
//!
//! # Reads
//!
//! [`ReadMode::ReadIndex`] (the default) asks Raft for a read index: the leader's commit index,
//! confirmed by a heartbeat round that a majority answers, so a deposed leader can never
//! confirm one. Once the state machine has applied that index, the read is answered from it.
//! No log entry, no fsync. [`ReadMode::Lease`] skips the round while the leader's lease holds;
//! [`ReadMode::Log`] puts reads through the log like writes.
//!
//! # Snapshots and restarts
//!
//! When the Raft state passes [`ServerConfig::max_raft_state`] bytes, the server syncs the
//! state machine and streams a snapshot of it (every data and dedup pair, read from an LSM
//! snapshot) into a [`raft::SnapshotWriter`], and Raft discards the log behind it. With
//! [`raft::Config::snapshot_spool`] naming a directory, snapshots are built, sent, received and
//! restored through files, a chunk at a time, so no snapshot is ever held whole in memory. A
//! follower too far behind receives the snapshot in chunks and restores it in batches. On
//! restart, the state machine reopens its LSM database (knowing its applied index); if Raft's
//! snapshot is newer, it restores that first.

pub mod auth;
pub mod command;
pub mod disk;
mod mem_state_machine;
pub mod redis;
mod server;
mod state_machine;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;

pub use mem_state_machine::{MAX_MEM_SNAPSHOT_BYTES, MemStateMachine};
pub use server::{
    DEFAULT_SESSION_TTL, KvServer, Pending, ReadMode, ReadPath, ServerConfig, SnapshotGuard,
};
pub use state_machine::{KvStateMachine, MAX_SCAN_PAGE, StateMachine};

/// Why the service failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The LSM engine failed.
    #[error("storage engine: {0}")]
    Lsm(#[from] lsm::Error),
    /// Raft failed.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// A snapshot could not be written or read.
    #[error("snapshot I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Stored or replicated data does not parse.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
