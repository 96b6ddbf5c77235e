//! `kvserver`: the replicated, linearizable key-value service (planned; no code yet).
//!
//! **Status:** not built. This page records the intended design; the work is tracked by the KV
//! service issue. Nothing here is usable.
//!
//! # Planned design
//!
//! A `StateMachine` over the `lsm` engine applies committed commands (Get, Put, Append, Delete
//! and bounded range Scan). The client dedup table (client id, last sequence number, last reply)
//! and the applied index are written in the same atomic batch as the data, so a restart neither
//! loses nor repeats an operation. Reads are served without log writes through ReadIndex or a
//! leader lease. Snapshots are taken from the LSM without holding the whole state in memory and
//! sent in chunks. The server speaks the Redis protocol (RESP) over TCP in deployment and runs
//! over `labrpc` in tests.
//!
//! # Planned public API
//!
//! * `KvServer::start(...)` and `kill()`: one replica, hosting its `Raft` and `KV` services.
//! * `KvStateMachine`: the `StateMachine` implementation, usable alone for model tests.
//! * `testing`: a conformance suite for `StateMachine` implementations.
//! * A `kvserver` binary: one node of a real cluster.
