#![doc = include_str!("../README.md")]
//!
//! # Design
//!
//! `raft`: the Raft consensus algorithm as a pure state machine.
//!
//! The heart of this crate is [`RawNode`]: Raft with no threads, no clock and no I/O. It is
//! driven entirely by its inputs, and everything it wants done comes out as a [`Ready`]. That
//! makes every behaviour reproducible from a sequence of calls, which is how the tests (and the
//! seeded simulations) exercise it.
//!
//! # Driving a node
//!
//! 1. Call [`RawNode::tick`] at a fixed interval (the driver's clock; the core counts ticks).
//!    A leader with lease reads must be ticked for every interval that passed, never fewer:
//!    a driver that falls behind catches up (as [`Node`] does) rather than dropping ticks.
//! 2. Feed it every message from a peer with [`RawNode::step`], and client commands with
//!    [`RawNode::propose`] (leader only).
//! 3. When [`RawNode::has_ready`], take [`RawNode::ready`] and, **in this order**:
//!    1. persist `snapshot`, `entries` and `hard_state`, and make them durable (fsync);
//!    2. send `messages` (a vote or an acknowledgement may only leave once what it promises is
//!       durable);
//!    3. apply `to_apply` to the state machine, in order;
//!    4. call [`RawNode::advance`].
//! 4. When the service has snapshotted its state through some applied index, call
//!    [`RawNode::snapshot`] to compact the log; the snapshot comes back in a `Ready` to persist.
//!
//! Other calls may come between `ready` and `advance`; their output waits for the next `Ready`.
//! [`Ready`] documents what may be reordered: messages that promise nothing about this node's
//! disk may leave before the write, committed entries may be applied before it, and several
//! `Ready`s may be out at once if they are persisted and advanced in the order taken.
//!
//! ```
//! use raft::{Apply, Config, PersistedState, RawNode, Role};
//!
//! // A single-node cluster elects itself and commits a proposal.
//! let mut node = RawNode::new(Config::new(1, vec![1]), PersistedState::default()).unwrap();
//! while node.role() != Role::Leader {
//!     node.tick();
//! }
//! let (index, _term) = node.propose("hello".into()).unwrap();
//! let mut applied = Vec::new();
//! while node.has_ready() {
//!     let ready = node.ready();
//!     // (persist ready.snapshot, ready.entries, ready.hard_state; send ready.messages)
//!     for a in ready.to_apply {
//!         if let Apply::Entry(e) = a {
//!             applied.push(e);
//!         }
//!     }
//!     node.advance();
//! }
//! assert_eq!(applied.last().unwrap().index, index);
//! assert_eq!(&applied.last().unwrap().data[..], b"hello");
//! ```
//!
//! # What is implemented
//!
//! * Leader election with randomized timeouts drawn from a generator seeded by
//!   [`Config::seed`] (§5.2), the up-to-date check (§5.4.1), **PreVote** and **CheckQuorum**
//!   (Raft thesis §9.6 and §6.2): a node rejoining after a partition cannot depose a healthy
//!   leader, and a leader that loses its majority steps down.
//! * Log replication (§5.3) with the fast conflict backup (conflict term and index), pipelined
//!   appends per follower, and the commit rule of §5.4.2 (only entries of the leader's own term
//!   are committed by counting replicas).
//! * Log compaction when the service snapshots (§7) and snapshots sent in chunks to followers
//!   behind the leader's first index.
//!
//! Around the core:
//!
//! * [`Node`] runs a `RawNode` with a ticker, a [`Storage`], a [`Transport`] and an apply
//!   channel of [`ApplyMsg`]s, behind the classic API (`start`, `state`, `snapshot`, `kill`).
//!   An event loop steps the core and never waits for the disk; a log writer thread persists
//!   its `Ready`s in order, everything queued during one fsync going into the next (group
//!   commit).
//! * [`MemStorage`] (a crash keeps exactly what was persisted) and [`FileStorage`] (framed,
//!   checksummed log segments, a snapshot file, one fsync per write, torn-tail recovery)
//!   implement [`Storage`], whose contract is written on the trait and checked by
//!   `testing::storage_suite` (feature `testing`).
//! * The workspace's `testkit` crate (never published) adapts the simulated `labrpc` network
//!   to [`Transport`], one labrpc call per request with the response as its reply; it passes
//!   `testing::transport_suite`.
//! * The `raft-tcp` crate's `TcpTransport` carries them between real processes (one outbound
//!   connection per peer, checksummed frames, batched writes, mutual TLS); it passes the same
//!   suite. The core has no networking of its own.
//!
//! `docs/raft.md` in the repository walks through the design, every invariant and the tests
//! that check it.
//!
//! Names follow Figure 2 of the paper: `current_term`, `voted_for`, `commit_index`,
//! `last_applied`, `next_index`, `match_index`.
//!
//! # Invariants checked at run time
//!
//! * Election safety: a node that receives an AppendEntries from another leader of its own term
//!   while leading panics ("election safety violated").
//! * Committed entries are never overwritten (the log panics rather than truncate them).
//! * Every request message gets exactly one response, in order per peer.

#![deny(missing_docs)]

mod config;
mod error;
mod file_storage;
mod message;
mod node;
#[cfg(feature = "planted-bugs")]
#[doc(hidden)]
pub mod planted;
mod progress;
mod raft_log;
mod raw_node;
mod ready;
mod rng;
mod snapshot;
mod storage;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod transport;
mod types;

pub use config::{Config, ConfigError, MESSAGE_OVERHEAD_BYTES, ProposalCheck};
/// The channel crate of [`Node::new`]'s apply channel and [`Inbox::new`]'s receiver, re-exported
/// so that a service uses the same version.
pub use crossbeam_channel;
pub use error::{Error, Result};
pub use file_storage::{DEFAULT_SEGMENT_BYTES, FileStorage};
pub use message::{AppendOutcome, Body, Message, MessageKind, Rejected};
pub use node::{ApplyMsg, Node};
pub use raw_node::{RawNode, Role, Status};
pub use ready::{Apply, PersistedState, ReadState, Ready};
pub use snapshot::{SnapshotData, SnapshotReader, SnapshotSpool, SnapshotWriter};
pub use storage::{MemStorage, Storage, StorageError};
pub use transport::{Inbox, Transport};
pub use types::{
    Entry, HardState, Index, MAX_TERM_OR_INDEX, MAX_VOTERS, NodeId, Snapshot, SnapshotMeta, Term,
};
