//! The messages Raft nodes exchange (Figure 2's RPCs, as one-way messages).
//!
//! Every request gets exactly one response, sent back to the requester in the order the requests
//! were stepped into the core. A transport that carries request and response as one RPC (such as
//! the `labrpc` transport) relies on this to pair them up.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::{Entry, Index, NodeId, SnapshotMeta, Term};

/// A message between two Raft nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's `current_term` (for a pre-vote request: the term it would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: Body,
}

/// The content of a [`Message`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// RequestVote (§5.2), or with `pre_vote` the PreVote probe (thesis §9.6): "would you vote
    /// for me if I started an election?", which changes no one's term.
    RequestVote {
        /// True for a PreVote probe.
        pre_vote: bool,
        /// Index of the candidate's last log entry (§5.4).
        last_log_index: Index,
        /// Term of the candidate's last log entry (§5.4).
        last_log_term: Term,
    },
    /// The answer to a [`Body::RequestVote`].
    RequestVoteResponse {
        /// Echoes the request's `pre_vote`.
        pre_vote: bool,
        /// True means the candidate received the vote (or the pre-vote).
        vote_granted: bool,
    },
    /// AppendEntries (§5.3): new entries, or none as a heartbeat.
    AppendEntries {
        /// Index of the entry immediately preceding the new ones.
        prev_log_index: Index,
        /// Term of that entry.
        prev_log_term: Term,
        /// The entries to store (empty for a heartbeat).
        entries: Vec<Entry>,
        /// The leader's `commit_index`.
        leader_commit: Index,
        /// The leader's read round when it sent this: a follower's answer echoes it, and
        /// confirms to the leader that it still led when every read registered in that round
        /// (or earlier) arrived (ReadIndex, thesis §6.4).
        read_round: u64,
    },
    /// The answer to a [`Body::AppendEntries`].
    AppendEntriesResponse {
        /// How the entries fit the follower's log.
        outcome: AppendOutcome,
        /// The request's `read_round`, echoed.
        read_round: u64,
    },
    /// InstallSnapshot (§7): one chunk of the leader's snapshot.
    InstallSnapshot {
        /// Which snapshot this chunk belongs to.
        meta: SnapshotMeta,
        /// Byte offset of this chunk in the snapshot's data.
        offset: u64,
        /// Total length of the snapshot's data.
        total_len: u64,
        /// The chunk.
        data: Bytes,
    },
    /// A follower asks the leader for a read index on behalf of its own reader (follower
    /// reads, thesis §6.4).
    ReadIndex {
        /// The follower's tag for the read, echoed in the answer.
        ctx: u64,
    },
    /// The answer to a [`Body::ReadIndex`]: the confirmed read index, or `None` if the
    /// receiver does not lead (or lost its leadership before confirming).
    ReadIndexResponse {
        /// The request's tag.
        ctx: u64,
        /// The read index, once confirmed.
        index: Option<Index>,
    },
    /// A follower hands commands to its leader to propose (proposal forwarding). One-way: no
    /// response. The follower's service learns the outcome when the entries apply, and retries
    /// after a timeout if they never do (the message was lost, or the leader was deposed).
    Propose {
        /// The commands, in the order the follower received them.
        data: Vec<Bytes>,
    },
    /// The answer to a [`Body::InstallSnapshot`].
    InstallSnapshotResponse {
        /// Which snapshot is being acknowledged.
        last_included_index: Index,
        /// How many bytes of it the follower holds: the offset of the next chunk it wants.
        received_bytes: u64,
        /// True once the follower has the whole snapshot (installed, or already past it).
        done: bool,
    },
}

/// How a follower answered an AppendEntries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// The follower's log matches the leader's up to and including `match_index`.
    Success {
        /// The last index known to match.
        match_index: Index,
    },
    /// The entry at `prev_log_index` was missing or had another term. The hint lets the leader
    /// skip a whole term of entries per round trip instead of one entry (the "fast backup" of
    /// the extended paper, end of §5.3).
    Conflict {
        /// The `prev_log_index` of the rejected request (to recognize stale answers).
        prev_log_index: Index,
        /// The term of the follower's entry at `prev_log_index`, if it has one.
        conflict_term: Option<Term>,
        /// The first index of `conflict_term` in the follower's log, or, if the follower's log
        /// is too short, its last index + 1.
        conflict_index: Index,
    },
    /// The request came from a stale leader; the response's term tells it to step down.
    StaleTerm,
}

/// The kind of a message, ignoring its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageKind {
    /// [`Body::RequestVote`] (including pre-votes).
    RequestVote,
    /// [`Body::RequestVoteResponse`].
    RequestVoteResponse,
    /// [`Body::AppendEntries`].
    AppendEntries,
    /// [`Body::AppendEntriesResponse`].
    AppendEntriesResponse,
    /// [`Body::InstallSnapshot`].
    InstallSnapshot,
    /// [`Body::InstallSnapshotResponse`].
    InstallSnapshotResponse,
    /// [`Body::ReadIndex`].
    ReadIndex,
    /// [`Body::ReadIndexResponse`].
    ReadIndexResponse,
    /// [`Body::Propose`] (one-way: neither a request nor a response).
    Propose,
}

impl MessageKind {
    /// For a request kind, the kind of its response; `None` for responses.
    pub fn response(self) -> Option<MessageKind> {
        match self {
            MessageKind::RequestVote => Some(MessageKind::RequestVoteResponse),
            MessageKind::AppendEntries => Some(MessageKind::AppendEntriesResponse),
            MessageKind::InstallSnapshot => Some(MessageKind::InstallSnapshotResponse),
            MessageKind::ReadIndex => Some(MessageKind::ReadIndexResponse),
            _ => None,
        }
    }

    /// True for the request kinds.
    pub fn is_request(self) -> bool {
        self.response().is_some()
    }

    /// True for the kinds that are sent without expecting an answer.
    pub fn is_one_way(self) -> bool {
        self == MessageKind::Propose
    }

    /// True for the response kinds.
    pub fn is_response(self) -> bool {
        !self.is_request() && !self.is_one_way()
    }
}

impl Message {
    /// True if this message may be sent before the `Ready` it came in is persisted: it states
    /// nothing about this node's durable state. A leader's AppendEntries and InstallSnapshot
    /// carry its log, which the followers persist themselves, and it counts its own copy only
    /// once written; proposals and reads forwarded to the leader promise nothing. Votes and
    /// every response must wait.
    pub fn may_precede_persist(&self) -> bool {
        matches!(
            self.body,
            Body::AppendEntries { .. }
                | Body::InstallSnapshot { .. }
                | Body::Propose { .. }
                | Body::ReadIndex { .. }
        )
    }

    /// The message's kind.
    pub fn kind(&self) -> MessageKind {
        match &self.body {
            Body::RequestVote { .. } => MessageKind::RequestVote,
            Body::RequestVoteResponse { .. } => MessageKind::RequestVoteResponse,
            Body::AppendEntries { .. } => MessageKind::AppendEntries,
            Body::AppendEntriesResponse { .. } => MessageKind::AppendEntriesResponse,
            Body::InstallSnapshot { .. } => MessageKind::InstallSnapshot,
            Body::InstallSnapshotResponse { .. } => MessageKind::InstallSnapshotResponse,
            Body::ReadIndex { .. } => MessageKind::ReadIndex,
            Body::ReadIndexResponse { .. } => MessageKind::ReadIndexResponse,
            Body::Propose { .. } => MessageKind::Propose,
        }
    }
}
