//! `raft`: the consensus layer (planned; this crate holds no code yet).
//!
//! **Status:** not built. This page records the intended design so the crates around it can be
//! written against it; the work is tracked by the Raft issue. Nothing here is usable.
//!
//! # Planned design
//!
//! The heart is a pure state machine with no threads, no clock and no I/O. Its inputs are
//! `tick()`, `step(message)`, `propose(data)` and later `read_index(ctx)`,
//! `propose_conf_change` and `transfer_leader`; its output is a `Ready` holding the messages to
//! send, the entries and hard state to persist, a snapshot to install and the committed entries
//! to apply. The caller performs that I/O in a fixed order (persist and fsync, then send, then
//! apply) and then calls `advance()`. Field names follow Figure 2 of the Raft paper
//! (`current_term`, `voted_for`, `commit_index`, `next_index`, `match_index`).
//!
//! A thin driver, `Node`, runs the core on its own thread with a ticker, a `Storage`, a
//! `Transport` and an apply channel, and offers the classic course API: `start(command)`
//! returning the index and term or "not leader", `state()`, `snapshot(index, data)` and
//! `kill()`.
//!
//! # Planned public API
//!
//! * `RawNode`, `Ready`, `Message`, `Entry`, `HardState`, `Config`: the pure core.
//! * `Node`, `ApplyMsg`: the driver and what it delivers to the service.
//! * `Storage` (log, hard state, snapshot metadata) with `MemStorage` and `FileStorage`.
//! * `Transport` (messages between peers) with implementations over `labrpc` and TCP.
//! * `testing`: conformance suites that every `Storage` and `Transport` implementation runs.
