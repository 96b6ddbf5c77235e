//! The messages between a clerk and the servers.
//!
//! A [`Request`] carries the clerk's client id and sequence number with the [`Op`]; writes with
//! a (client id, sequence number) the service has already applied are answered from its
//! table rather than applied again. The [`Reply`] either answers ([`Reply::Done`]) or tells the
//! clerk to try elsewhere.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The labrpc method servers answer requests on.
pub const METHOD: &str = "KVServer.Request";

/// One operation on the store. Keys and values are arbitrary bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Read a key.
    Get {
        /// The key.
        key: Bytes,
    },
    /// Set a key.
    Put {
        /// The key.
        key: Bytes,
        /// Its new value.
        value: Bytes,
    },
    /// Append to a key's value (to nothing, if it has none).
    Append {
        /// The key.
        key: Bytes,
        /// What to append.
        value: Bytes,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Read several keys at once, at one point in time.
    GetMany {
        /// The keys.
        keys: Vec<Bytes>,
    },
    /// Set several keys at once (atomically).
    PutMany {
        /// The (key, value) pairs; a later pair for the same key wins.
        pairs: Vec<(Bytes, Bytes)>,
    },
    /// Remove several keys at once (atomically); the outcome counts those that existed.
    DeleteMany {
        /// The keys.
        keys: Vec<Bytes>,
    },
    /// Count the keys. Reads the whole store: O(number of keys).
    Count,
    /// Read up to `limit` pairs with `start <= key < end` in key order (no upper bound if
    /// `end` is `None`).
    Scan {
        /// The first key to return, if present.
        start: Bytes,
        /// The first key not to return.
        end: Option<Bytes>,
        /// At most this many pairs (the server may cap it lower).
        limit: u32,
    },
}

impl Op {
    /// Whether the operation changes the store.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Op::Put { .. }
                | Op::Append { .. }
                | Op::Delete { .. }
                | Op::PutMany { .. }
                | Op::DeleteMany { .. }
        )
    }
}

/// A clerk's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The clerk's random id.
    pub client_id: u64,
    /// The clerk's number for this operation: 1, 2, 3, … (a retry repeats it).
    pub seq: u64,
    /// What to do.
    pub op: Op,
    /// For a write: apply it only right after this client's previous write (number
    /// `seq - 1`), else answer [`Outcome::OutOfOrder`] and change nothing. A client with
    /// several writes in flight (a pipelined Redis connection) numbers its writes 1, 2, 3, …
    /// and sets this, so that they take effect in order even if one is lost and resent. A
    /// client with one operation at a time leaves it false.
    pub ordered: bool,
}

/// What an operation produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A get's answer: the value, or `None` for a missing key.
    Value(Option<Bytes>),
    /// A write took effect.
    Written,
    /// An append took effect; the value's new length in bytes.
    Length(u64),
    /// The answer to [`Op::GetMany`]: each key's value, in the order asked.
    Values(Vec<Option<Bytes>>),
    /// A count: of the keys [`Op::DeleteMany`] removed, or of all keys ([`Op::Count`]).
    Count(u64),
    /// A page of a scan, and the key to continue from if the range holds more.
    Page {
        /// The pairs, in key order.
        pairs: Vec<(Bytes, Bytes)>,
        /// Where the next page starts, if there is one.
        next: Option<Bytes>,
    },
    /// An [`ordered`](Request::ordered) write came before the client's previous write was
    /// applied: it changed nothing; send it again once that one is.
    OutOfOrder,
    /// A retry of a write applied long ago (a later write of the client has been applied
    /// since), whose outcome depended on the data and is no longer kept: it took effect once.
    Forgotten,
}

/// A server's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The operation took effect (exactly once) with this outcome.
    Done(Outcome),
    /// This server does not lead (and could not serve the request through the leader);
    /// `leader_hint` is the node it believes does.
    WrongLeader {
        /// The leader's Raft node id, if known. A clerk finds that node's server with
        /// [`Servers::server_for_node`](crate::Servers::server_for_node).
        leader_hint: Option<u64>,
    },
    /// The server leads but could not finish the operation in time (it may have lost its
    /// leadership meanwhile); retrying is safe.
    Timeout,
    /// The service will never apply this request, on any server: it is larger than the
    /// service's request limit, for example. The reason says why. Retrying is pointless.
    Refused(String),
}
