//! The messages between a clerk and the servers.
//!
//! A [`Request`] carries the clerk's client id and sequence number with the [`Op`]; writes with
//! a (client id, sequence number) the service has already applied are answered from its
//! table rather than applied again.
//!
//! **Sessions.** A write must name a *session*: a client id the service handed out in answer
//! to [`Op::Register`] (a random 64-bit number chosen by the leader and recorded in the log).
//! A session's writes are numbered 1, 2, 3, …; the service applies a write only if it is the
//! next number (a retry of an applied one is answered from the table), so nobody can skip a
//! session's numbers ahead and turn its later writes into no-ops, and an id nobody was given
//! is refused ([`Outcome::NoSession`]). A session idle for longer than the service's TTL
//! expires and is forgotten; its writes are then refused with [`Outcome::NoSession`] too.
//! Reads need no session: their client id and number only tell retries apart.
//!
//! The [`Reply`] either answers ([`Reply::Done`]) or tells the clerk to try elsewhere.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The labrpc method servers answer requests on.
pub const METHOD: &str = "KVServer.Request";

/// One operation on the store. Keys and values are arbitrary bytes.
///
/// Exhaustive on purpose: a server must handle every operation, so a new one is a breaking
/// change of the protocol (and of the log format) that every match must notice.
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
    /// Start a new session (see the module documentation): answered with
    /// [`Outcome::Registered`] and the new session's id. The request's own client id is any
    /// number unique to the asker (it tells retries apart), its sequence number 0.
    Register {
        /// Filled in by the leader (a random id); what a client puts here is replaced.
        id: u64,
        /// Filled in by the leader (its session TTL, in milliseconds); replaced likewise.
        ttl_ms: u64,
        /// A session of this client to end in the same step: its writes not applied yet can
        /// no longer apply, so a write given up on can never take effect after the new
        /// session's first write. Only the session's owner knows its id.
        retire: Option<u64>,
    },
    /// End a session (a client done writing, such as a closing Redis connection), so that
    /// its entry leaves the table now rather than when it expires: its writes not applied yet
    /// can no longer apply. Answered [`Outcome::Written`], whether or not the session was
    /// still live. Only the session's owner knows its id.
    EndSession {
        /// The session.
        id: u64,
    },
}

impl Op {
    /// Whether the operation changes the store (or the session table): it goes through the
    /// log.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Op::Put { .. }
                | Op::Append { .. }
                | Op::Delete { .. }
                | Op::PutMany { .. }
                | Op::DeleteMany { .. }
                | Op::Register { .. }
                | Op::EndSession { .. }
        )
    }

    /// Whether the operation is a write that needs a session ([`is_write`](Self::is_write)
    /// and not [`Op::Register`] or [`Op::EndSession`]).
    pub fn needs_session(&self) -> bool {
        self.is_write() && !matches!(self, Op::Register { .. } | Op::EndSession { .. })
    }
}

/// A clerk's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// For a write, the session's id (from [`Outcome::Registered`]); for a read or a
    /// registration, any number unique to the client.
    pub client_id: u64,
    /// The client's number for this operation: 1, 2, 3, … (a retry repeats it). A session's
    /// writes are numbered on their own, with no gaps.
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
///
/// Exhaustive on purpose, like [`Op`].
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
    /// A write numbered past the session's next number (the previous write was not applied
    /// yet, or the number skips ahead): it changed nothing. An
    /// [`ordered`](Request::ordered) write sends it again once its predecessor applied; for a
    /// client with one write at a time it means a bug, or a write given up on.
    OutOfOrder,
    /// A retry of a write applied long ago (a later write of the client has been applied
    /// since), whose outcome depended on the data and is no longer kept: it took effect once.
    Forgotten,
    /// A new session: use this id as the client id of its writes.
    Registered {
        /// The session's id.
        id: u64,
    },
    /// The write names no live session: it was never registered, expired (idle past the
    /// TTL), or was retired. This entry changed nothing. A client whose only attempt of the
    /// write got this knows it was not applied and may register again and resend; after
    /// earlier attempts went unanswered, an earlier one may have applied.
    NoSession,
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
        /// `kvclient::Servers::server_for_node`.
        leader_hint: Option<u64>,
    },
    /// The server leads but could not finish the operation in time (it may have lost its
    /// leadership meanwhile); retrying is safe.
    Timeout,
    /// The service will never apply this request, on any server: it is larger than the
    /// service's request limit, for example. The reason says why. Retrying is pointless.
    Refused(String),
}
