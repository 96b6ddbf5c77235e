//! `testkit`: what the workspace's tests, labs, examples and benchmarks share, kept out of the
//! published crates. It is never published, and no library depends on it.
//!
//! - [`raft_transport`]: [`LabrpcTransport`], Raft's [`raft::Transport`] over the simulated
//!   `labrpc` network, as the classic labs run it. It passes `raft::testing::transport_suite`.
//! - [`kv`] (feature `kv`): the key-value service over the same network, [`kv::LabrpcServers`]
//!   for the clerk and [`kv::service`] for each replica.
//! - [`lab`]: what the two lab harnesses share (how many lab tests run at once).
//! - [`tcp`] (feature `kv`): replicas over real TCP in one process, as the `kvserver` program
//!   configures them, with a watchdog for the tests that run them.
//!
//! The consensus core, the engine and the service know nothing of `labrpc`: this crate adapts
//! it to their traits (`Transport`, `kvclient::Servers`) from the outside, as any other network
//! would be. The `kv` part is a feature so that Raft's own tests need not build the service.

#[cfg(feature = "kv")]
pub mod kv;
pub mod lab;
pub mod raft_transport;
#[cfg(feature = "kv")]
pub mod tcp;

pub use raft_transport::{LABRPC_METHOD, LabrpcTransport};
