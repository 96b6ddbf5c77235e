#![doc = include_str!("../README.md")]
//!
//! # Design
//!
//! `raftkv`: the store's two programs, and the code behind them.
//!
//! - `kvserver` ([`server`]) runs one replica as a process: Raft's log in `raft::FileStorage`,
//!   the data in an `lsm` database, peers over `raft_tcp` (mutual TLS by default off
//!   loopback), clients over the Redis protocol (`kvserver::redis`).
//! - `kvcli` ([`cli`]) is the command-line client: one operation per run through a
//!   `kvclient::Clerk`, or `status` for every node's view of the cluster.
//!
//! The libraries they are built from take no command line and install no signal handler or
//! logger: that is this crate's job, so that a program embedding a replica or a clerk picks its
//! own. `docs/operations.md` is the operator's guide to both programs.

pub mod cli;
pub mod server;
