//! What the core hands to its driver: [`Ready`], and the state a node starts from.

use crate::message::Message;
use crate::types::{Entry, HardState, Snapshot};

/// Everything the core needs done, produced by [`RawNode::ready`](crate::RawNode::ready).
///
/// The driver must handle it in this order, then call
/// [`RawNode::advance`](crate::RawNode::advance):
///
/// 1. **Persist**, durably (fsync), in one write if it can: `snapshot` (replacing the log
///    prefix it covers), then `entries` (discarding any stored entries from `entries[0].index`
///    on, then appending), then `hard_state`.
/// 2. **Send** `messages`. Only now: a vote or an acknowledgement may go out only after the
///    state it promises is durable. The exception: messages for which
///    [`Message::may_precede_persist`] holds (a leader's AppendEntries and InstallSnapshot,
///    forwarded proposals and reads) promise nothing about this node's disk, and may be sent
///    before or while persisting, so that the leader writes its log in parallel with its
///    followers (Raft thesis §10.2.1). The leader counts itself toward a commit only once its
///    own write is done.
/// 3. **Apply** `to_apply` to the state machine, in order, and answer `read_states`. This step
///    may also come first, before or while persisting, unless `snapshot` is set: every entry
///    in `to_apply` is already durable on a majority (the leader counts itself only once its
///    own write is done), so applying it never depends on this node's write. A node that
///    crashes before its write completes may thus restart with a state machine ahead of its
///    log; the entries it lacks are committed, so they come back unchanged.
/// 4. **Advance**.
///
/// A driver may take the next `Ready` before advancing the last (to write on another thread
/// while the core carries on): it persists them in the order taken and advances them in that
/// order. A later `Ready`'s entries may replace entries of an earlier one that is still being
/// written (a follower whose log conflicted with a new leader's); storage applies them in
/// order, so the later entries win.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[must_use = "a Ready must be persisted, sent, applied and then advanced"]
pub struct Ready {
    /// The hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// A snapshot to persist: one the service just took, or one received from the leader.
    pub snapshot: Option<Snapshot>,
    /// Log entries to persist, contiguous and ascending.
    pub entries: Vec<Entry>,
    /// Messages to send once the above is durable.
    pub messages: Vec<Message>,
    /// Committed entries (and installed snapshots) to apply, in log order.
    pub to_apply: Vec<Apply>,
    /// Reads confirmed since the last `Ready` (see
    /// [`RawNode::read_index`](crate::RawNode::read_index)), in the order they were asked.
    pub read_states: Vec<ReadState>,
}

/// A confirmed linearizable read: answer it from the state machine once it has applied
/// `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    /// What the caller passed to `read_index`.
    pub ctx: u64,
    /// The read index: the leader's commit index when the read arrived (or, early in its term,
    /// the last index it inherited, whichever is larger).
    pub index: crate::types::Index,
}

impl Ready {
    /// True if there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.to_apply.is_empty()
            && self.read_states.is_empty()
    }
}

/// One thing for the service to apply.
///
/// Exhaustive on purpose, like [`ApplyMsg`](crate::ApplyMsg): a driver must act on every kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apply {
    /// A committed entry; entries arrive in index order, each exactly once per life of the node.
    Entry(Entry),
    /// A snapshot from the leader: replace the whole state with it. Entries after its last
    /// included index follow.
    Snapshot(Snapshot),
}

/// What a node's storage held at start-up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PersistedState {
    /// The last persisted hard state.
    pub hard_state: HardState,
    /// The last persisted snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// The log entries after the snapshot, contiguous and ascending.
    pub entries: Vec<Entry>,
}
