//! Test only (feature `planted-bugs`): bugs planted in [`RawNode`](crate::RawNode) on purpose,
//! one at a time, so that a test can show the simulation's checkers catch a wrong core.
//!
//! Nothing here is compiled without the feature, and a node carries no bug unless
//! [`RawNode::plant_bug`](crate::RawNode::plant_bug) is called. Only the crate's own tests
//! enable the feature (through a dev-dependency on itself).

/// One bug a test can plant in a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// (Pre-)votes are granted without the §5.4.1 check that the candidate's log is at least as
    /// up to date as the voter's.
    VoteWithoutLogCheck,
    /// The leader commits the highest index a majority holds whatever its term, so an entry of
    /// an earlier term commits by counting replicas (the Figure 8 bug, §5.4.2).
    CommitEarlierTermByCounting,
    /// A granted vote is sent before it is persisted: the `Ready` carrying the response holds
    /// the hard state without the vote, which is written with the next `Ready` only.
    UnpersistedVote,
    /// Responses (to votes, appends, snapshots) skip the term rules: one from an older term is
    /// counted as if current, and one from a newer term does not make the node step down.
    NoTermCheckOnResponses,
    /// A follower that accepts an AppendEntries drops every entry after the last one it
    /// carried, even entries that matched the leader's and were acknowledged before.
    TruncateMatchingSuffix,
    /// A leader's read index is its commit index alone, without the floor of the index it
    /// was elected at (thesis §6.4: a new leader may not yet know what its predecessor
    /// committed).
    ReadIndexWithoutTermStart,
    /// A follower skips the AppendEntries consistency check on the previous entry's term
    /// (Figure 2, receiver step 2): holding any entry at `prev_log_index` is taken as a match,
    /// so a stale entry of another term stays below the leader's new ones.
    AppendWithoutPrevTermCheck,
}
