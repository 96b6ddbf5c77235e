//! `kvclient`: the Clerk, the client of the replicated key-value service (planned; no code yet).
//!
//! **Status:** not built. This page records the intended design; the work is tracked by the KV
//! service issue. Nothing here is usable.
//!
//! # Planned design
//!
//! The Clerk finds the leader and remembers it, and retries each operation with the same client
//! id and sequence number until it has taken effect, so a retried write applies exactly once.
//! It works over `labrpc` in tests and over TCP, speaking the Redis protocol, in deployment.
//!
//! # Planned public API
//!
//! * `Clerk::new(servers)`, `get`, `put`, `append`, `delete`, `scan(start, end, limit)`: each
//!   blocks until the operation has taken effect exactly once.
//! * A `kvcli` binary: `get`, `put`, `delete`, `scan` and `status` from the command line.
