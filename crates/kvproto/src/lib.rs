#![doc = include_str!("../README.md")]
//!
//! # Design
//!
//! `kvproto`: what the key-value service's clients and servers say to each other, and nothing
//! else. Both `kvclient` and `kvserver` depend on this crate; neither depends on the other.
//!
//! Two protocols live here:
//!
//! - [`proto`]: the clerk's requests and the servers' replies, as Rust types with serde
//!   derives. A [`Request`] names a client session, a sequence number and an [`Op`]; a
//!   [`Reply`] is either an [`Outcome`] or a reason to try another server. The server encodes
//!   requests into its Raft log, so these types are also the log's entry format (with
//!   postcard); see `docs/formats/`.
//! - [`resp`]: RESP2, the Redis serialization protocol, which the server speaks to every
//!   client (redis-cli, any Redis library, our `RespServers`). Its decoders are incremental,
//!   bounded by [`resp::Limits`], and never panic on any input: they face the network.
//!
//! The crate does no I/O and starts no threads. Its dependencies are `bytes`, `serde` (for the
//! derives) and `thiserror`.

pub mod proto;
pub mod resp;

pub use proto::{Op, Outcome, Reply, Request};
