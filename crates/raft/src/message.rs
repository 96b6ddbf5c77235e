//! The messages Raft nodes exchange (Figure 2's RPCs, as one-way messages).
//!
//! Every request gets exactly one response, sent back to the requester in the order the requests
//! were stepped into the core. A transport that carries request and response as one RPC (such as
//! the `labrpc` transport) relies on this to pair them up.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::{Entry, Index, MAX_TERM_OR_INDEX, MAX_VOTERS, NodeId, SnapshotMeta, Term};

/// Why [`RawNode::step`](crate::RawNode::step) refused a message: it could not have come from a
/// correct peer (a forged, corrupted or buggy sender). The message was dropped whole; nothing
/// in the node changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused a {kind:?} from node {from}: {reason}")]
pub struct Rejected {
    /// The sender the message claims.
    pub from: NodeId,
    /// What kind of message it was.
    pub kind: MessageKind,
    /// What is wrong with it.
    pub reason: String,
}

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
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
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
    /// The checks that need nothing but the message: every term and index within
    /// [`MAX_TERM_OR_INDEX`], entries numbered one after another from `prev_log_index + 1`
    /// with terms that never decrease and never pass the message's term, conflict hints that
    /// point at or before the entry they answer, snapshot chunks that lie within the snapshot,
    /// and voter lists without repeats that name both ends.
    ///
    /// # Errors
    /// The first thing found wrong, as a [`Rejected`].
    pub fn validate(&self) -> Result<(), Rejected> {
        self.check().map_err(|reason| self.rejected(reason))
    }

    /// A [`Rejected`] for this message.
    pub(crate) fn rejected(&self, reason: String) -> Rejected {
        Rejected { from: self.from, kind: self.kind(), reason }
    }

    fn check(&self) -> Result<(), String> {
        let bound = |what: &str, value: u64| {
            if value > MAX_TERM_OR_INDEX {
                Err(format!("{what} {value} is out of range"))
            } else {
                Ok(())
            }
        };
        if self.from == self.to {
            return Err("the sender is the receiver".into());
        }
        bound("term", self.term)?;
        match &self.body {
            Body::RequestVote { last_log_index, last_log_term, .. } => {
                bound("last_log_index", *last_log_index)?;
                if *last_log_term > self.term {
                    return Err(format!(
                        "last_log_term {last_log_term} is after the term {}",
                        self.term
                    ));
                }
            }
            Body::AppendEntries {
                prev_log_index, prev_log_term, entries, leader_commit, ..
            } => {
                bound("prev_log_index", *prev_log_index)?;
                bound("leader_commit", *leader_commit)?;
                if *prev_log_term > self.term || (*prev_log_index == 0 && *prev_log_term != 0) {
                    return Err(format!(
                        "prev_log_term {prev_log_term} at index {prev_log_index} is impossible \
                         in term {}",
                        self.term
                    ));
                }
                let mut last_term = *prev_log_term;
                for (i, e) in entries.iter().enumerate() {
                    let expected = prev_log_index + 1 + i as u64;
                    if e.index != expected {
                        return Err(format!(
                            "entry {i} has index {}, expected {expected} (prev_log_index \
                             {prev_log_index})",
                            e.index
                        ));
                    }
                    if e.term < last_term || e.term > self.term {
                        return Err(format!(
                            "entry {} has term {}, outside {last_term}..={}",
                            e.index, e.term, self.term
                        ));
                    }
                    last_term = e.term;
                }
                bound("last entry index", prev_log_index + entries.len() as u64)?;
            }
            Body::AppendEntriesResponse { outcome, .. } => match outcome {
                AppendOutcome::Success { match_index } => bound("match_index", *match_index)?,
                AppendOutcome::Conflict { prev_log_index, conflict_term, conflict_index } => {
                    bound("prev_log_index", *prev_log_index)?;
                    if *conflict_index == 0 || conflict_index > prev_log_index {
                        return Err(format!(
                            "conflict_index {conflict_index} is not in 1..={prev_log_index}"
                        ));
                    }
                    if conflict_term.is_some_and(|t| t == 0 || t > self.term) {
                        return Err(format!("conflict_term {conflict_term:?} is impossible"));
                    }
                }
                AppendOutcome::StaleTerm => {}
            },
            Body::InstallSnapshot { meta, offset, total_len, data } => {
                bound("last_included_index", meta.last_included_index)?;
                if meta.last_included_index == 0
                    || meta.last_included_term == 0
                    || meta.last_included_term > self.term
                {
                    return Err(format!(
                        "a snapshot through index {} term {} is impossible in term {}",
                        meta.last_included_index, meta.last_included_term, self.term
                    ));
                }
                let end = offset.checked_add(data.len() as u64);
                if end.is_none_or(|end| end > *total_len) {
                    let len = data.len();
                    return Err(format!(
                        "a chunk of {len} bytes at offset {offset} overruns the snapshot's \
                         {total_len} bytes"
                    ));
                }
                check_voters(&meta.voters, self.from, self.to)?;
            }
            Body::InstallSnapshotResponse { last_included_index, .. } => {
                bound("last_included_index", *last_included_index)?;
            }
            Body::ReadIndexResponse { index: Some(index), .. } => bound("read index", *index)?,
            Body::RequestVoteResponse { .. }
            | Body::ReadIndex { .. }
            | Body::ReadIndexResponse { index: None, .. }
            | Body::Propose { .. } => {}
        }
        Ok(())
    }

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

/// A snapshot's voter list: empty (no change), or at most [`MAX_VOTERS`] distinct ids among
/// which are both the sender and the receiver.
fn check_voters(voters: &[NodeId], from: NodeId, to: NodeId) -> Result<(), String> {
    if voters.is_empty() {
        return Ok(());
    }
    let mut sorted = voters.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if voters.len() > MAX_VOTERS
        || sorted.len() != voters.len()
        || !sorted.contains(&from)
        || !sorted.contains(&to)
    {
        return Err(format!(
            "voters {voters:?} must be at most {MAX_VOTERS} distinct ids including {from} and {to}"
        ));
    }
    Ok(())
}
