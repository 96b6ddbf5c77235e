//! Configuration of one Raft node, in ticks and bytes.

use std::fmt;
use std::sync::Arc;

use crate::snapshot::SnapshotSpool;
use crate::types::NodeId;

/// The service's test of a proposed command: `Err` with a reason if the command could never be
/// applied (it does not decode, or names a format this release cannot read).
///
/// A leader runs it on every proposal, whether the service proposed it locally or a follower
/// forwarded it, and refuses the command rather than append it: a command that reaches the log
/// is applied by every replica, so one that cannot be applied must never get there. A
/// follower runs it before forwarding, so its service learns of a bad command at once.
///
/// A check made with [`stamping`](ProposalCheck::stamping) also rewrites the command: the
/// leader appends what the stamp returns instead of what was proposed (the KV service writes
/// the leader's clock into each entry there, Raft thesis §6.3). Only the leader stamps, once,
/// when it appends; a follower forwards the command as proposed.
#[derive(Clone)]
pub struct ProposalCheck {
    check: Arc<CheckFn>,
    stamp: Option<Arc<StampFn>>,
}

type CheckFn = dyn Fn(&[u8]) -> Result<(), String> + Send + Sync;
type StampFn = dyn Fn(&[u8]) -> Result<bytes::Bytes, String> + Send + Sync;

impl ProposalCheck {
    /// Wraps `check`.
    pub fn new(check: impl Fn(&[u8]) -> Result<(), String> + Send + Sync + 'static) -> Self {
        ProposalCheck { check: Arc::new(check), stamp: None }
    }

    /// A check that also rewrites each command the leader appends: `stamp` gets a command
    /// that passed the check and returns the command to append in its place, or `Err` with a
    /// reason to refuse it.
    pub fn stamping(
        self,
        stamp: impl Fn(&[u8]) -> Result<bytes::Bytes, String> + Send + Sync + 'static,
    ) -> Self {
        ProposalCheck { stamp: Some(Arc::new(stamp)), ..self }
    }

    /// Runs the check on `command`.
    ///
    /// # Errors
    /// The check's reason for refusing `command`.
    pub fn check(&self, command: &[u8]) -> Result<(), String> {
        (self.check)(command)
    }

    /// What the leader appends for `command` (which passed [`check`](Self::check)): the
    /// stamped command, or `command` itself if this check does not stamp.
    ///
    /// # Errors
    /// The stamp's reason for refusing `command`.
    pub fn stamp(&self, command: bytes::Bytes) -> Result<bytes::Bytes, String> {
        match &self.stamp {
            Some(stamp) => stamp(&command),
            None => Ok(command),
        }
    }
}

impl fmt::Debug for ProposalCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProposalCheck(..)")
    }
}

impl PartialEq for ProposalCheck {
    fn eq(&self, other: &ProposalCheck) -> bool {
        Arc::ptr_eq(&self.check, &other.check)
            && match (&self.stamp, &other.stamp) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for ProposalCheck {}

/// What a message adds to the bytes of the entries it carries, at most, once encoded: the
/// header fields of an AppendEntries or InstallSnapshot (ids, terms, indexes, lengths, and a
/// snapshot's voter list up to [`MAX_VOTERS`](crate::MAX_VOTERS) ids).
pub const MESSAGE_OVERHEAD_BYTES: u64 = 256 + 10 * crate::MAX_VOTERS as u64;

/// How one node behaves. Times are counted in ticks: the driver calls
/// [`RawNode::tick`](crate::RawNode::tick) at a fixed interval and the core never reads a clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id; must be one of `voters`.
    pub id: NodeId,
    /// The cluster's voting members, used when storage holds no snapshot that says otherwise.
    pub voters: Vec<NodeId>,
    /// A follower that hears nothing from a leader for between `election_ticks` and
    /// `2 * election_ticks - 1` ticks (drawn at random each time) starts an election. Larger is
    /// more stable under message loss; smaller recovers faster from a leader crash.
    pub election_ticks: u32,
    /// Seeds the node's random draws (election timeouts): the same seed, the same draws, so
    /// simulations replay exactly. [`Config::new`] draws one from the operating system; give
    /// every node of a simulated cluster its own.
    pub seed: u64,
    /// A leader sends heartbeats every `heartbeat_ticks` ticks. Must be well below
    /// `election_ticks` so that a lost heartbeat or two does not trigger an election.
    pub heartbeat_ticks: u32,
    /// PreVote (Raft thesis §9.6): before starting an election, ask whether a majority would
    /// vote. A node cut off by a partition then cannot inflate its term and depose a healthy
    /// leader when it rejoins.
    pub pre_vote: bool,
    /// CheckQuorum (thesis §6.2): a leader that has not heard from a majority within an election
    /// timeout steps down, and a follower that has heard from a leader within the minimum
    /// election timeout ignores vote requests.
    pub check_quorum: bool,
    /// A new leader appends an empty entry at once (§8), so entries of earlier terms commit
    /// without waiting for a client command. The classic lab tests expect exact indexes and turn
    /// this off.
    pub no_op_on_election: bool,
    /// Upper bound on the entries' bytes in one AppendEntries (at least one entry is always
    /// sent), and on the commands in one forwarded proposal message. Entries are counted by
    /// [`Entry::size_bytes`](crate::Entry::size_bytes).
    pub max_append_bytes: u64,
    /// The largest command [`RawNode::propose`](crate::RawNode::propose) accepts, in bytes.
    /// Every message then fits in [`max_message_bytes`](Self::max_message_bytes), which the
    /// driver checks against what its transport can carry.
    pub max_entry_bytes: u64,
    /// The service's test of every proposed command (see [`ProposalCheck`]); `None` accepts
    /// any bytes.
    pub proposal_check: Option<ProposalCheck>,
    /// How many AppendEntries may be unanswered at once per follower while it keeps up
    /// (pipelining).
    pub max_inflight_appends: usize,
    /// Size of the chunks a snapshot is sent in.
    pub snapshot_chunk_bytes: u64,
    /// Leader lease reads (thesis §6.4.1): a leader whose lease holds answers
    /// [`read_index`](crate::RawNode::read_index) at once, without a heartbeat round. Needs
    /// `check_quorum`. The lease lasts `election_ticks - lease_margin_ticks` ticks from the
    /// start of the latest heartbeat round a majority answered; it is safe as long as no node's
    /// clock runs faster than the leader's by more than `lease_margin_ticks` per
    /// `election_ticks` (with the defaults, 20%), and as long as the leader is ticked for all
    /// the time that passes ([`Node`](crate::Node) catches up ticks its loop was late for).
    pub lease_reads: bool,
    /// How many ticks of each election timeout the lease gives up to clock drift. A count of
    /// ticks, not a fraction: when changing `election_ticks`, keep it in proportion (2 of the
    /// default 10 is 20%; the `kvserver` binary sets 20% of its `election_ticks`, rounded up).
    pub lease_margin_ticks: u32,
    /// When the commit index advances, the leader tells its followers at once (an empty
    /// AppendEntries) instead of with the next tick. Followers then apply, answer follower
    /// reads and forwarded writes up to a tick sooner, for one extra message per follower per
    /// batch of commits. The classic lab tests count messages and turn this off.
    pub announce_commit: bool,
    /// Where a follower assembles a snapshot arriving in chunks: in memory, or (for states
    /// larger than memory) in a file in a directory.
    pub snapshot_spool: SnapshotSpool,
}

/// Why a [`Config`] was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `voters` is empty, repeats an id, or does not contain `id`.
    #[error(
        "voters {voters:?} must be non-empty, without repeats, and contain this node's id {id}"
    )]
    Voters {
        /// This node's id.
        id: NodeId,
        /// The configured voters.
        voters: Vec<NodeId>,
    },
    /// The transport cannot carry the largest message this configuration can produce.
    #[error(
        "messages of up to {needed} bytes (max_append_bytes, max_entry_bytes, \
         snapshot_chunk_bytes) do not fit the transport's limit of {max} bytes"
    )]
    MessageTooLarge {
        /// [`Config::max_message_bytes`].
        needed: u64,
        /// The transport's [`max_message_bytes`](crate::Transport::max_message_bytes).
        max: u64,
    },
    /// A timing or size field is out of range.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Config {
    /// Defaults for a node `id` in a cluster of `voters`: 10-tick elections, 1-tick heartbeats,
    /// PreVote, CheckQuorum and the election no-op on, 1 MiB appends and snapshot chunks, 16 MiB
    /// commands (room for a service request of 8 MiB of arguments plus its encoding), 64
    /// appends in flight, incoming snapshots assembled in memory, a random seed.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        Config {
            id,
            voters,
            election_ticks: 10,
            seed: rand::random(),
            heartbeat_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            no_op_on_election: true,
            max_append_bytes: 1 << 20,
            max_entry_bytes: 16 << 20,
            proposal_check: None,
            max_inflight_appends: 64,
            snapshot_chunk_bytes: 1 << 20,
            lease_reads: false,
            lease_margin_ticks: 2,
            announce_commit: true,
            snapshot_spool: SnapshotSpool::Memory,
        }
    }

    /// Checks the relations between fields.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first field that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut sorted = self.voters.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.is_empty() || sorted.len() != self.voters.len() || !sorted.contains(&self.id) {
            return Err(ConfigError::Voters { id: self.id, voters: self.voters.clone() });
        }
        let invalid = |field, reason| Err(ConfigError::Invalid { field, reason });
        if self.heartbeat_ticks == 0 {
            return invalid("heartbeat_ticks", "must be at least 1");
        }
        if self.election_ticks < 2 * self.heartbeat_ticks {
            return invalid("election_ticks", "must be at least twice heartbeat_ticks");
        }
        if self.max_inflight_appends == 0 {
            return invalid("max_inflight_appends", "must be at least 1");
        }
        if self.snapshot_chunk_bytes == 0 {
            return invalid("snapshot_chunk_bytes", "must be at least 1");
        }
        if self.voters.len() > crate::MAX_VOTERS {
            return invalid("voters", "at most MAX_VOTERS (64) voters");
        }
        // Sizes stay far from u64::MAX, so that adding overheads cannot overflow.
        for (field, bytes) in [
            ("max_append_bytes", self.max_append_bytes),
            ("max_entry_bytes", self.max_entry_bytes),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
        ] {
            if bytes > 1 << 40 {
                return invalid(field, "must be at most 1 TiB");
            }
        }
        if self.lease_reads && !self.check_quorum {
            return invalid("lease_reads", "needs check_quorum (followers must honour the lease)");
        }
        if self.lease_reads && self.lease_margin_ticks >= self.election_ticks {
            return invalid("lease_margin_ticks", "must be below election_ticks");
        }
        Ok(())
    }

    /// The most bytes any message this node sends can take once encoded: an AppendEntries
    /// carries at most `max_append_bytes` of entries, or one entry of up to `max_entry_bytes`
    /// alone; a forwarded proposal likewise; a snapshot chunk `snapshot_chunk_bytes`. A
    /// transport must carry messages this large.
    pub fn max_message_bytes(&self) -> u64 {
        let one_entry = crate::Entry::size_bytes_for(self.max_entry_bytes);
        self.max_append_bytes.max(one_entry).max(self.snapshot_chunk_bytes) + MESSAGE_OVERHEAD_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::new(1, vec![1, 2, 3]).validate(), Ok(()));
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad_voters = [vec![], vec![2, 3], vec![1, 1, 2]];
        for voters in bad_voters {
            let err = Config::new(1, voters).validate().unwrap_err();
            assert!(matches!(err, ConfigError::Voters { .. }), "{err}");
        }
        let mut c = Config::new(1, vec![1]);
        c.heartbeat_ticks = 0;
        assert!(c.validate().unwrap_err().to_string().starts_with("heartbeat_ticks"));
        let mut c = Config::new(1, vec![1]);
        c.election_ticks = 1;
        assert!(c.validate().unwrap_err().to_string().starts_with("election_ticks"));
        let mut c = Config::new(1, vec![1]);
        c.max_inflight_appends = 0;
        assert!(c.validate().is_err());
        let mut c = Config::new(1, vec![1]);
        c.snapshot_chunk_bytes = 0;
        assert!(c.validate().is_err());
    }
}
