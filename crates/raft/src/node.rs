//! The driver: runs a [`RawNode`] on its own thread with a ticker, a [`Storage`], a
//! [`Transport`] and an apply channel, behind the classic course API.
//!
//! One thread owns the loop; the core sits behind a mutex so that [`Node::start`] can append a
//! proposal at once and return its index. The loop waits (never spins) for a message, a tick or
//! a wake-up, then handles every `Ready` in the documented order: persist, send, apply, advance.
//! Proposals that arrive while a `Ready` is being persisted wait in the core and go out
//! together in the next one: one append, one persist, one AppendEntries per follower.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, select};
use labrpc::Rng;
use parking_lot::Mutex;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::raw_node::{RawNode, Status};
use crate::ready::Apply;
use crate::snapshot::SnapshotData;
use crate::storage::Storage;
use crate::transport::{Inbox, Transport};
use crate::types::{Index, Term};

/// What a node delivers to its service, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyMsg {
    /// A committed command.
    Command {
        /// Its log index.
        index: Index,
        /// The term it was proposed in.
        term: Term,
        /// The command as proposed (empty for a leader's election no-op).
        data: Bytes,
    },
    /// A read asked for with [`Node::read_index`] is confirmed: answer it once every command
    /// up to `index` has been applied. It comes after the commands applied so far, not
    /// necessarily after `index`.
    Read {
        /// What was passed to `read_index`.
        ctx: u64,
        /// The read index.
        index: Index,
    },
    /// A snapshot from the leader: the service replaces its state with it.
    Snapshot {
        /// The last log index it covers.
        index: Index,
        /// The term of that entry.
        term: Term,
        /// The service's state, as the leader's service snapshotted it (read it as a stream:
        /// it may be larger than memory).
        data: SnapshotData,
    },
}

struct Shared {
    core: Mutex<RawNode>,
    wake: Sender<()>,
    killed: AtomicBool,
    transport: Box<dyn Transport>,
    thread: Mutex<Option<JoinHandle<()>>>,
    failure: Mutex<Option<String>>,
    /// The storage's `raft_state_size` after the last persist.
    state_size: AtomicU64,
}

/// A running Raft node. Cheap to clone; clones control the same node.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

impl Node {
    /// Starts a node: reads `storage`, builds the core from `config` and `rng`, attaches
    /// `transport`, and runs the loop on a new thread, ticking every `tick`. Committed entries
    /// and installed snapshots are sent to `apply`.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad configuration, [`Error::Storage`] if storage cannot be read.
    ///
    /// # Panics
    /// If the operating system cannot start a thread.
    pub fn new<S, T>(
        config: Config,
        tick: Duration,
        storage: S,
        transport: T,
        apply: Sender<ApplyMsg>,
        rng: Rng,
    ) -> Result<Node>
    where
        S: Storage + 'static,
        T: Transport,
    {
        let state = storage.initial_state().map_err(|e| Error::Storage(e.to_string()))?;
        let core = RawNode::new(config, state, rng)?;
        let (inbox, inbox_rx) = Inbox::new();
        transport.start(inbox);
        let (wake, wake_rx) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            wake,
            killed: AtomicBool::new(false),
            transport: Box::new(transport),
            thread: Mutex::new(None),
            failure: Mutex::new(None),
            state_size: AtomicU64::new(storage.raft_state_size()),
        });
        let driver = Driver { shared: Arc::clone(&shared), storage, apply };
        let id = shared.core.lock().id();
        let handle = thread::Builder::new()
            .name(format!("raft-node-{id}"))
            .spawn(move || driver.run(&inbox_rx, &wake_rx, tick))
            .expect("raft: cannot spawn the node thread");
        *shared.thread.lock() = Some(handle);
        Ok(Node { shared })
    }

    /// Proposes `data` and returns at once with the index and term it will have if it
    /// commits.
    ///
    /// # Errors
    /// [`Error::NotLeader`] on a follower, [`Error::Stopped`] after [`kill`](Self::kill).
    pub fn start(&self, data: Bytes) -> Result<(Index, Term)> {
        if self.shared.killed.load(Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        let proposed = self.shared.core.lock().propose(data)?;
        self.wake();
        Ok(proposed)
    }

    /// Proposes several commands at once: they are appended together, so they reach storage
    /// in one write and followers in one AppendEntries. Returns each one's (index, term).
    ///
    /// # Errors
    /// As [`start`](Self::start); on an error nothing was proposed.
    pub fn start_batch(&self, data: Vec<Bytes>) -> Result<Vec<(Index, Term)>> {
        if self.shared.killed.load(Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        let mut core = self.shared.core.lock();
        let proposed = data.into_iter().map(|d| core.propose(d)).collect::<Result<Vec<_>>>()?;
        drop(core);
        self.wake();
        Ok(proposed)
    }

    /// On a follower, sends `data` to the leader to propose (see [`RawNode::forward`]), all in
    /// one message; returns the leader's id. The entries' outcomes show up on the apply channel
    /// like any other.
    ///
    /// # Errors
    /// [`Error::NotLeader`] if no leader is known or this node leads, [`Error::Stopped`] after
    /// [`kill`](Self::kill); on an error nothing was forwarded.
    pub fn forward(&self, data: Vec<Bytes>) -> Result<crate::NodeId> {
        if self.shared.killed.load(Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        let mut core = self.shared.core.lock();
        let mut leader = Err(Error::NotLeader { leader_hint: None });
        for d in data {
            leader = Ok(core.forward(d)?);
        }
        drop(core);
        self.wake();
        leader
    }

    /// Asks for a linearizable read without a log write (see [`RawNode::read_index`]); the
    /// answer comes on the apply channel as [`ApplyMsg::Read`] with the same `ctx`, or never
    /// if leadership is lost first.
    ///
    /// # Errors
    /// [`Error::NotLeader`] on a follower, [`Error::Stopped`] after [`kill`](Self::kill).
    pub fn read_index(&self, ctx: u64) -> Result<()> {
        if self.shared.killed.load(Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        self.shared.core.lock().read_index(ctx)?;
        self.wake();
        Ok(())
    }

    /// The current term and whether this node believes it is the leader.
    pub fn state(&self) -> (Term, bool) {
        let core = self.shared.core.lock();
        (core.current_term(), core.role() == crate::raw_node::Role::Leader)
    }

    /// A summary of the core's state.
    pub fn status(&self) -> Status {
        self.shared.core.lock().status()
    }

    /// The service has snapshotted its state through `index`; compact the log up to it.
    ///
    /// # Errors
    /// [`Error::SnapshotNotApplied`] if `index` was not delivered yet, [`Error::Stopped`] after
    /// [`kill`](Self::kill).
    pub fn snapshot(&self, index: Index, data: impl Into<SnapshotData>) -> Result<()> {
        if self.shared.killed.load(Ordering::Acquire) {
            return Err(Error::Stopped);
        }
        self.shared.core.lock().snapshot(index, data)?;
        self.wake();
        Ok(())
    }

    /// Stops the node for good: its thread ends, and it sends and applies nothing more. Returns
    /// once the thread has ended. Safe to call more than once.
    pub fn kill(&self) {
        self.shared.killed.store(true, Ordering::Release);
        self.shared.transport.stop();
        self.wake();
        let handle = self.shared.thread.lock().take();
        if let Some(handle) = handle
            && handle.thread().id() != thread::current().id()
        {
            let _ = handle.join();
        }
    }

    /// Bytes of Raft state in storage besides the snapshot (the log and the hard state), as of
    /// the last persist: the service snapshots when this passes its limit.
    pub fn raft_state_size(&self) -> u64 {
        self.shared.state_size.load(Ordering::Acquire)
    }

    /// Whether [`kill`](Self::kill) was called or the node stopped on a storage failure.
    pub fn is_killed(&self) -> bool {
        self.shared.killed.load(Ordering::Acquire)
    }

    /// Why the node stopped by itself (a storage failure), if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.lock().clone()
    }

    fn wake(&self) {
        let _ = self.shared.wake.try_send(());
    }
}

struct Driver<S> {
    shared: Arc<Shared>,
    storage: S,
    apply: Sender<ApplyMsg>,
}

impl<S: Storage> Driver<S> {
    fn run(mut self, inbox: &Receiver<Message>, wake: &Receiver<()>, tick: Duration) {
        let ticker = crossbeam_channel::tick(tick);
        while !self.killed() {
            select! {
                recv(inbox) -> message => {
                    let mut core = self.shared.core.lock();
                    if let Ok(m) = message {
                        core.step(m);
                    }
                    // Step everything else that arrived meanwhile before producing a Ready.
                    while let Ok(m) = inbox.try_recv() {
                        core.step(m);
                    }
                }
                recv(ticker) -> _ => self.shared.core.lock().tick(),
                recv(wake) -> _ => {}
            }
            self.handle_readies();
        }
        self.shared.transport.stop();
    }

    fn killed(&self) -> bool {
        self.shared.killed.load(Ordering::Acquire)
    }

    /// Persist, send, apply, advance, until the core has nothing more to do.
    fn handle_readies(&mut self) {
        loop {
            let ready = {
                let mut core = self.shared.core.lock();
                if !core.has_ready() {
                    return;
                }
                core.ready()
            };
            if self.killed() {
                return;
            }
            // Replicate while writing (thesis §10.2.1): what promises nothing about our disk
            // goes out first; the rest waits for the write.
            let (early, late): (Vec<Message>, Vec<Message>) =
                ready.messages.into_iter().partition(Message::may_precede_persist);
            for message in early {
                self.shared.transport.send(message);
            }
            // What is committed is already durable on a majority: the service may apply it
            // while we write (see `Ready`). A snapshot from the leader is persisted first.
            let apply_first = ready.snapshot.is_none();
            let mut to_apply = Some((ready.to_apply, ready.read_states));
            if apply_first {
                self.deliver(to_apply.take());
            }
            let persisted =
                self.storage.persist(ready.hard_state, ready.snapshot.as_ref(), &ready.entries);
            if let Err(e) = persisted {
                // Nothing is known to be durable: stop rather than send anything that assumes it.
                *self.shared.failure.lock() = Some(format!("storage failed: {e}"));
                self.shared.killed.store(true, Ordering::Release);
                return;
            }
            self.shared.state_size.store(self.storage.raft_state_size(), Ordering::Release);
            for message in late {
                self.shared.transport.send(message);
            }
            self.deliver(to_apply.take());
            self.shared.core.lock().advance();
        }
    }

    /// Hands committed entries, installed snapshots and confirmed reads to the service (if
    /// `what` is there: each `Ready`'s are delivered once).
    fn deliver(&self, what: Option<(Vec<Apply>, Vec<crate::ready::ReadState>)>) {
        let Some((to_apply, read_states)) = what else { return };
        for item in to_apply {
            let msg = match item {
                Apply::Entry(e) => ApplyMsg::Command { index: e.index, term: e.term, data: e.data },
                Apply::Snapshot(s) => ApplyMsg::Snapshot {
                    index: s.meta.last_included_index,
                    term: s.meta.last_included_term,
                    data: s.data,
                },
            };
            if self.apply.send(msg).is_err() {
                break; // The service is gone; keep running so the cluster keeps its member.
            }
        }
        for read in read_states {
            let _ = self.apply.send(ApplyMsg::Read { ctx: read.ctx, index: read.index });
        }
    }
}
