//! The values Raft stores and exchanges: terms, indexes, log entries, hard state, snapshots.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::snapshot::SnapshotData;

/// Identifies one member of the cluster. Never 0 in a real cluster; 0 is not reserved, but ids
/// must be unique and stable for the life of the member.
pub type NodeId = u64;

/// A Raft term: a logical clock that increases with every election (§5.1).
pub type Term = u64;

/// A position in the log. The first entry has index 1; index 0 is "before the log".
pub type Index = u64;

/// One log entry: a command proposed by a client, tagged with the term of the leader that
/// created it and its position in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term in which a leader created this entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
    /// The command, opaque to Raft. Empty for the no-op a new leader appends (§8).
    pub data: Bytes,
}

impl Entry {
    /// The most bytes this entry takes once encoded in a message: its data and three varints
    /// (term, index, data length) of at most 10 bytes each. Used to keep messages under their
    /// byte limit.
    pub fn size_bytes(&self) -> u64 {
        Entry::size_bytes_for(self.data.len() as u64)
    }

    /// [`size_bytes`](Self::size_bytes) of an entry holding `data_len` bytes.
    pub fn size_bytes_for(data_len: u64) -> u64 {
        data_len + 30
    }
}

/// The largest term or index a message may carry. Far below `u64::MAX`, so that no arithmetic
/// on a received term or index (`+ 1`, `+ entries.len()`) can overflow.
pub const MAX_TERM_OR_INDEX: u64 = u64::MAX >> 2;

/// The most voters a cluster (or a snapshot's voter list) may have.
pub const MAX_VOTERS: usize = 64;

/// What must survive a crash besides the log (Figure 2, "persistent state on all servers").
///
/// Raft persists this before it sends any message that depends on it: a vote is durable before
/// the vote reply leaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this server has seen.
    pub current_term: Term,
    /// The candidate that received this server's vote in `current_term`, if any.
    pub voted_for: Option<NodeId>,
    /// The highest index known to be committed. Not required by the paper (it can be relearned),
    /// but persisting it lets a restarted node re-apply committed entries without waiting for a
    /// leader. It may lag behind the true commit index.
    pub commit_index: Index,
}

impl HardState {
    /// The part that must be durable before a vote or an acknowledgement goes out: the term
    /// and the vote. (The commit index may lag; it is relearned.)
    pub fn current_term_vote(&self) -> (Term, Option<NodeId>) {
        (self.current_term, self.voted_for)
    }
}

/// The identity of a snapshot: the last log entry it covers and the cluster it was taken in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The index of the last entry the snapshot replaces.
    pub last_included_index: Index,
    /// The term of that entry.
    pub last_included_term: Term,
    /// The voting members at that point of the log.
    pub voters: Vec<NodeId>,
}

/// A snapshot of the service's state machine, replacing the log up to
/// `meta.last_included_index` (§7).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Which prefix of the log this snapshot replaces.
    pub meta: SnapshotMeta,
    /// The service's state at that point, opaque to Raft; in memory or in a file.
    pub data: SnapshotData,
}
