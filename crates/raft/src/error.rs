//! Errors of the Raft crate.

use crate::config::ConfigError;
use crate::types::{Index, NodeId};

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a Raft operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Only the leader accepts proposals. `leader_hint` names the leader this node knows of.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader of the current term, if this node knows it.
        leader_hint: Option<NodeId>,
    },
    /// A snapshot was requested at an index the service has not been given yet.
    #[error("cannot snapshot at index {index}: only {last_applied} has been applied")]
    SnapshotNotApplied {
        /// The requested index.
        index: Index,
        /// The highest index handed to the service.
        last_applied: Index,
    },
    /// The node was killed (or stopped itself after a storage failure).
    #[error("the node has stopped")]
    Stopped,
    /// Storage could not be read or written.
    #[error("storage failed: {0}")]
    Storage(String),
    /// A proposed command is larger than [`Config::max_entry_bytes`](crate::Config).
    #[error("a command of {len} bytes is over the limit of {max} bytes")]
    EntryTooLarge {
        /// The command's size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The service's [`ProposalCheck`](crate::ProposalCheck) refused a proposed command.
    #[error("the command is refused: {0}")]
    InvalidProposal(String),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
}
