//! The driver: runs a [`RawNode`] with a ticker, a [`Storage`], a [`Transport`] and an apply
//! channel, behind the classic course API.
//!
//! The core sits behind a mutex so that [`Node::start`] can append a proposal at once and
//! return its index. Two threads of the node's own share it:
//!
//! * the **event loop** waits (never spins) for a message, a tick or a wake-up, steps it into
//!   the core, and takes every `Ready`: it sends at once what may precede the write (a
//!   leader's AppendEntries), hands what is committed to the service, and queues the rest;
//! * the **log writer** persists the queued `Ready`s in order, then sends what had to wait for
//!   the write (acknowledgements, votes) and advances the core.
//!
//! Taking a `Ready` is not reserved to the event loop: a thread that proposes, or (when the
//! transport's [`inline_delivery`](Transport::inline_delivery) allows) the transport thread
//! that delivers a message, steps and takes the `Ready` itself, which saves waking the loop.
//! Whoever takes `Ready`s holds the driving lock, so they go out in the order taken; a thread
//! that finds the lock held wakes the loop instead.
//!
//! The event loop never waits for the disk: while the writer syncs, a leader keeps counting
//! acknowledgements, committing and sending new entries, and a follower keeps receiving them.
//! Whatever queued up during one write goes into the next as a single append and a single
//! fsync (group commit), so the busier the node, the more each fsync carries.
//!
//! If the storage fails, the node stops ([`Node::failure`] says why), except when the disk is
//! full ([`StorageError::is_no_space`](crate::StorageError::is_no_space)): the writer then
//! retries the same write, after 10 ms, doubling up to a second, until it succeeds, and sends,
//! delivers and advances nothing that depends on it meanwhile ([`Node::storage_stall`]).
//!
//! # Ticks
//!
//! The core counts time in ticks, and a leader's lease is a number of ticks (see
//! [`Config::lease_reads`]), so a leader must never count fewer ticks than the time that
//! passed: a late event loop would make its lease outlive what is safe. The driver keeps a
//! schedule of tick instants on the monotonic clock ([`Instant`]) and, whenever it looks
//! (each turn of the event loop, before a message is stepped on the transport's thread, and
//! before [`Node::read_index`]), ticks a leader once for every scheduled instant that has
//! passed: ticks that fall due while the loop is blocked are caught up, not lost. A leader
//! catches up at most `election_ticks` at once: by then every lease and CheckQuorum round that
//! started before has run out, so older time no longer matters.
//!
//! A node that does not lead ticks once however many instants passed. Its count of time since
//! it last heard from the leader is a promise to that leader (CheckQuorum), which it must not
//! count faster than time passes; ticks caught up after a message that was stepped late (or on
//! the transport's thread while the loop was blocked) would partly count time from before that
//! message. Counting fewer ticks only keeps the promise longer and delays an election.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, select};
use log::warn;
use parking_lot::Mutex;

use crate::config::{Config, ConfigError};
use crate::error::{Error, Result};
use crate::message::{Message, Rejected};
use crate::raw_node::{RawNode, Role, Status};
use crate::ready::{Apply, ReadState};
use crate::snapshot::SnapshotData;
use crate::storage::Storage;
use crate::transport::{Inbox, Transport};
use crate::types::{Entry, HardState, Index, Snapshot, Term};

/// What a node delivers to its service, in log order.
///
/// Exhaustive on purpose: a service must act on every kind of item (each moves its applied
/// index), so a new kind is a breaking change that its match statements must notice.
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
    /// Whoever holds this takes `Ready`s: the event loop, or a thread that just stepped a
    /// message or made a proposal.
    driving: Mutex<Driving>,
    wake: Sender<()>,
    killed: AtomicBool,
    transport: Box<dyn Transport>,
    thread: Mutex<Option<JoinHandle<()>>>,
    failure: Mutex<Option<String>>,
    /// Why the log writer is holding back: the last persist failed for lack of space and is
    /// being retried. `None` while writes succeed.
    stalled: Mutex<Option<String>>,
    /// Persists that failed for lack of space since start.
    no_space_errors: AtomicU64,
    /// The storage's `raft_state_size` after the last persist.
    state_size: AtomicU64,
    /// When the core is due its next tick. Ticks are caught up with `core` locked, and `clock`
    /// is locked after it (never the other way round).
    clock: Mutex<Clock>,
    /// When a refused message was last logged, and how many were refused since without a word.
    rejected_log: Mutex<(Option<Instant>, u64)>,
}

/// The schedule of ticks on the monotonic clock (see the module documentation, Ticks).
struct Clock {
    /// How long one tick is.
    tick: Duration,
    /// The instant the next tick is due.
    next: Instant,
    /// The most ticks a leader catches up at once: its `election_ticks`.
    max_catch_up: u32,
}

/// Refused messages are logged at most once per this interval (a flood must not flood the log).
const REJECTED_LOG_INTERVAL: Duration = Duration::from_secs(1);

impl Shared {
    /// Logs a message the core refused, at a limited rate: the first at once, later ones at
    /// most once per [`REJECTED_LOG_INTERVAL`], with the count of those not logged between.
    fn note_rejected(&self, stepped: std::result::Result<(), Rejected>) {
        let Err(rejected) = stepped else { return };
        let mut log = self.rejected_log.lock();
        let now = Instant::now();
        if log.0.is_some_and(|last| now.duration_since(last) < REJECTED_LOG_INTERVAL) {
            log.1 += 1;
            return;
        }
        let unlogged = std::mem::replace(&mut log.1, 0);
        *log = (Some(now), 0);
        drop(log);
        if unlogged > 0 {
            warn!("raft: {rejected} ({unlogged} more refused since the last report)");
        } else {
            warn!("raft: {rejected}");
        }
    }

    /// Ticks `core` for the tick instants that have passed since it was last ticked: all of
    /// them (up to `election_ticks`) if it leads, else one. Call with `core` locked from
    /// `self.core`.
    fn catch_up(&self, core: &mut RawNode) {
        let mut clock = self.clock.lock();
        let now = Instant::now();
        if now < clock.next {
            return;
        }
        let tick = clock.tick.as_nanos().max(1);
        let due = 1 + (now - clock.next).as_nanos() / tick;
        let due = u32::try_from(due).unwrap_or(u32::MAX);
        // Whole tick intervals from the schedule, so that the phase is kept.
        let interval = clock.tick;
        clock.next += interval.saturating_mul(due);
        let mut ticked = 0;
        loop {
            let leading = core.role() == Role::Leader;
            core.tick();
            ticked += 1;
            if !leading || core.role() != Role::Leader || ticked >= due.min(clock.max_catch_up) {
                break;
            }
        }
    }

    /// How long until the next tick is due (zero if it is due).
    fn until_next_tick(&self) -> Duration {
        self.clock.lock().next.saturating_duration_since(Instant::now())
    }
}

/// A running Raft node. Cheap to clone; clones control the same node.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

impl Node {
    /// Starts a node: reads `storage`, builds the core from `config`, attaches
    /// `transport`, and runs the loop on a new thread, ticking every `tick`. Committed entries
    /// and installed snapshots are sent to `apply`.
    ///
    /// `apply` is a `crossbeam_channel` sender (re-exported as [`crate::crossbeam_channel`]):
    /// the classic labs' apply channel, and the one channel type the node's own loop selects
    /// over, so a service can `select!` on it beside its own channels. Give it an unbounded
    /// channel: the node's loop sends without waiting, and a full bounded channel would stall
    /// it.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad configuration, or one whose largest message
    /// ([`Config::max_message_bytes`]) the transport cannot carry; [`Error::Storage`] if
    /// storage cannot be read.
    ///
    /// # Panics
    /// If the operating system cannot start a thread.
    pub fn new<S, T>(
        config: Config,
        tick: Duration,
        storage: S,
        transport: T,
        apply: Sender<ApplyMsg>,
    ) -> Result<Node>
    where
        S: Storage + 'static,
        T: Transport,
    {
        if let Some(max) = transport.max_message_bytes()
            && config.max_message_bytes() > max
        {
            return Err(ConfigError::MessageTooLarge { needed: config.max_message_bytes(), max })?;
        }
        let state = storage.initial_state().map_err(|e| Error::Storage(e.to_string()))?;
        let max_catch_up = config.election_ticks;
        let core = RawNode::new(config, state)?;
        let inline = transport.inline_delivery();
        let (wake, wake_rx) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            driving: Mutex::new(Driving { jobs: None, apply, snapshot_out: false }),
            wake,
            killed: AtomicBool::new(false),
            transport: Box::new(transport),
            thread: Mutex::new(None),
            failure: Mutex::new(None),
            stalled: Mutex::new(None),
            no_space_errors: AtomicU64::new(0),
            state_size: AtomicU64::new(storage.raft_state_size()),
            rejected_log: Mutex::new((None, 0)),
            clock: Mutex::new(Clock { tick, next: Instant::now() + tick, max_catch_up }),
        });
        let inbox_rx = if inline {
            // Step each message on the transport's thread, and take the Ready it makes there.
            let weak = Arc::downgrade(&shared);
            shared.transport.start(Inbox::with_handler(move |message| {
                let Some(shared) = weak.upgrade() else { return false };
                if shared.killed.load(Ordering::Acquire) {
                    return false;
                }
                let mut core = shared.core.lock();
                // A leader's lease is checked against its ticks: let them be up to date.
                shared.catch_up(&mut core);
                let stepped = core.step(message);
                drop(core);
                shared.note_rejected(stepped);
                drive(&shared);
                true
            }));
            crossbeam_channel::never()
        } else {
            let (inbox, inbox_rx) = Inbox::new();
            shared.transport.start(inbox);
            inbox_rx
        };
        let driver = Driver { shared: Arc::clone(&shared) };
        let id = shared.core.lock().id();
        let handle = thread::Builder::new()
            .name(format!("raft-node-{id}"))
            .spawn(move || driver.run(storage, &inbox_rx, &wake_rx))
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
        drive(&self.shared);
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
        drive(&self.shared);
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
        drive(&self.shared);
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
        let mut core = self.shared.core.lock();
        // A lease read is decided here, against the leader's ticks: let them be up to date
        // even if the event loop is late.
        self.shared.catch_up(&mut core);
        core.read_index(ctx)?;
        drop(core);
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

    /// Why the log writer is stalled, if it is: its last persist failed for lack of space
    /// (see [`StorageError::is_no_space`](crate::StorageError::is_no_space)) and is retried
    /// until it succeeds. Meanwhile the node sends nothing that depends on that write (no
    /// acknowledgement of its entries, no vote), so the cluster goes on without it while a
    /// majority can.
    pub fn storage_stall(&self) -> Option<String> {
        self.shared.stalled.lock().clone()
    }

    /// How many persists failed for lack of space since the node started.
    pub fn storage_no_space_errors(&self) -> u64 {
        self.shared.no_space_errors.load(Ordering::Relaxed)
    }

    fn wake(&self) {
        let _ = self.shared.wake.try_send(());
    }
}

/// The longest the log writer waits before retrying a persist that failed for lack of space.
const MAX_STALL_WAIT: Duration = Duration::from_secs(1);

/// At most this many `Ready`s are out at once (taken, not yet written and advanced).
const MAX_READIES_IN_FLIGHT: usize = 32;

/// One `Ready`'s share of the writer's work: what to persist, then what to send and deliver.
struct Job {
    hard_state: Option<HardState>,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    /// Messages that promise what this write makes durable.
    late: Vec<Message>,
    /// Entries, snapshot and reads to deliver after the write (a `Ready` with a snapshot);
    /// `None` if they were delivered when the `Ready` was taken.
    deliver: Option<Delivery>,
}

/// What a `Ready` hands the service: entries and snapshots to apply, confirmed reads.
type Delivery = (Vec<Apply>, Vec<ReadState>);

/// The event loop: steps ticks (and messages, unless the transport delivers them inline) into
/// the core and takes its `Ready`s.
struct Driver {
    shared: Arc<Shared>,
}

/// What taking `Ready`s needs; held (in [`Shared::driving`]) by the one thread taking them,
/// so that they are sent, delivered and queued for the writer in the order taken.
struct Driving {
    /// The log writer's queue; `None` before the event loop starts and after it stops.
    jobs: Option<Sender<Job>>,
    apply: Sender<ApplyMsg>,
    /// A `Ready` with a snapshot is out: take no other until it is written, so that nothing
    /// is delivered ahead of that snapshot.
    snapshot_out: bool,
}

/// Takes the `Ready`s made by what this thread just did (stepped a message, proposed), so that
/// what they send goes out without waking the event loop: one hand-off less. If another thread
/// is taking `Ready`s already, the event loop is woken in case that thread was just finishing.
fn drive(shared: &Shared) {
    match shared.driving.try_lock() {
        Some(mut driving) if driving.jobs.is_some() => take_readies(shared, &mut driving),
        _ => {
            let _ = shared.wake.try_send(());
        }
    }
}

/// The log writer: persists `Ready`s in the order taken, sends what waited for them, and
/// advances the core.
struct Writer<S> {
    shared: Arc<Shared>,
    storage: S,
    apply: Sender<ApplyMsg>,
}

impl Driver {
    fn run<S: Storage + 'static>(self, storage: S, inbox: &Receiver<Message>, wake: &Receiver<()>) {
        let (jobs, queued) = crossbeam_channel::unbounded();
        let apply = self.shared.driving.lock().apply.clone();
        let writer = Writer { shared: Arc::clone(&self.shared), storage, apply };
        let id = self.shared.core.lock().id();
        let writer = thread::Builder::new()
            .name(format!("raft-log-{id}"))
            .spawn(move || writer.run(&queued))
            .expect("raft: cannot spawn the log writer thread");
        self.shared.driving.lock().jobs = Some(jobs);
        while !self.killed() {
            let mut message = None;
            select! {
                recv(inbox) -> m => message = m.ok(),
                recv(wake) -> _ => {}
                default(self.shared.until_next_tick()) => {}
            }
            let mut core = self.shared.core.lock();
            // Ticks first, then the messages that waited meanwhile: a leader then counts an
            // acknowledgement as no later than it was, so its lease can only come out shorter.
            self.shared.catch_up(&mut core);
            if let Some(m) = message {
                self.shared.note_rejected(core.step(m));
            }
            // Step everything else that arrived meanwhile before producing a Ready.
            while let Ok(m) = inbox.try_recv() {
                self.shared.note_rejected(core.step(m));
            }
            drop(core);
            take_readies(&self.shared, &mut self.shared.driving.lock());
        }
        self.shared.driving.lock().jobs = None;
        let _ = writer.join();
        self.shared.transport.stop();
    }

    fn killed(&self) -> bool {
        self.shared.killed.load(Ordering::Acquire)
    }
}

/// Takes every `Ready` the core has: sends what may precede the write, delivers what is
/// committed, and queues the rest for the writer.
fn take_readies(shared: &Shared, driving: &mut Driving) {
    let Some(jobs) = driving.jobs.clone() else { return };
    loop {
        let ready = {
            let mut core = shared.core.lock();
            let out = core.readies_in_flight();
            if out == 0 {
                driving.snapshot_out = false;
            }
            if driving.snapshot_out || out >= MAX_READIES_IN_FLIGHT || !core.has_ready() {
                return;
            }
            core.ready()
        };
        if shared.killed.load(Ordering::Acquire) {
            return;
        }
        // Replicate while writing (thesis §10.2.1): what promises nothing about our disk
        // goes out now; the rest waits for the write.
        let (early, late): (Vec<Message>, Vec<Message>) =
            ready.messages.into_iter().partition(Message::may_precede_persist);
        shared.transport.send_all(early);
        // What is committed is already durable on a majority: the service may apply it
        // while we write (see `Ready`). A snapshot from the leader is written first.
        let delivery = (ready.to_apply, ready.read_states);
        let deliver = if ready.snapshot.is_some() {
            driving.snapshot_out = true;
            Some(delivery)
        } else {
            deliver(&driving.apply, delivery);
            None
        };
        let job = Job {
            hard_state: ready.hard_state,
            snapshot: ready.snapshot,
            entries: ready.entries,
            late,
            deliver,
        };
        if jobs.send(job).is_err() {
            return; // The writer stopped on a storage failure.
        }
    }
}

impl<S: Storage> Writer<S> {
    fn run(mut self, queued: &Receiver<Job>) {
        let mut next = None;
        loop {
            let Some(first) = next.take().or_else(|| queued.recv().ok()) else { return };
            // Everything queued meanwhile shares one write and one fsync (group commit); a
            // snapshot is written on its own.
            let mut batch = vec![first];
            while batch[0].snapshot.is_none() {
                match queued.try_recv() {
                    Ok(job) if job.snapshot.is_some() => {
                        next = Some(job);
                        break;
                    }
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if self.shared.killed.load(Ordering::Acquire) || !self.write(&mut batch) {
                return;
            }
            let late = batch.iter_mut().flat_map(|job| std::mem::take(&mut job.late)).collect();
            self.shared.transport.send_all(late);
            for job in &mut batch {
                if let Some(delivery) = job.deliver.take() {
                    deliver(&self.apply, delivery);
                }
            }
            let mut core = self.shared.core.lock();
            for _ in &batch {
                core.advance();
            }
            // Advancing can only matter to the event loop through a new Ready (one held back
            // by the in-flight limit or a snapshot): wake it only then.
            let more = core.has_ready();
            drop(core);
            if more {
                let _ = self.shared.wake.try_send(());
            }
        }
    }

    /// Persists `batch` in one storage call. False (and the node stopped) if storage failed.
    fn write(&mut self, batch: &mut [Job]) -> bool {
        let mut hard_state = None;
        let mut snapshot = None;
        let mut entries: Vec<Entry> = Vec::new();
        for job in batch.iter_mut() {
            hard_state = job.hard_state.or(hard_state);
            snapshot = job.snapshot.take().or(snapshot);
            let new = std::mem::take(&mut job.entries);
            if let (Some(first_new), Some(first)) = (new.first(), entries.first()) {
                // A later Ready's entry at index i replaces everything from i on.
                let keep = first_new.index.saturating_sub(first.index) as usize;
                entries.truncate(keep);
            }
            entries.extend(new);
        }
        let mut failures = 0u32;
        loop {
            let persisted = self.storage.persist(hard_state, snapshot.as_ref(), &entries);
            match persisted {
                Ok(()) => break,
                Err(e) if e.is_no_space() => {
                    // The call changed nothing: hold everything that depends on it back, and
                    // retry until space is freed (or the node is stopped).
                    self.shared.no_space_errors.fetch_add(1, Ordering::Relaxed);
                    if failures == 0 {
                        warn!(
                            "raft: the log cannot be written ({e}); retrying until space is freed"
                        );
                    }
                    *self.shared.stalled.lock() =
                        Some(format!("the Raft log cannot be written: {e}"));
                    let pause = Duration::from_millis(10u64 << failures.min(7)).min(MAX_STALL_WAIT);
                    failures = failures.saturating_add(1);
                    if !self.pause(pause) {
                        return false;
                    }
                }
                Err(e) => {
                    // Nothing is known to be durable: stop rather than send anything that
                    // assumes it.
                    *self.shared.failure.lock() = Some(format!("storage failed: {e}"));
                    self.shared.killed.store(true, Ordering::Release);
                    let _ = self.shared.wake.try_send(());
                    return false;
                }
            }
        }
        if failures > 0 {
            *self.shared.stalled.lock() = None;
            log::info!("raft: the log is written again after {failures} failed attempts");
        }
        self.shared.state_size.store(self.storage.raft_state_size(), Ordering::Release);
        true
    }

    /// Sleeps `pause`, waking early if the node is stopped; false if it was.
    fn pause(&self, pause: Duration) -> bool {
        let until = Instant::now() + pause;
        while !self.shared.killed.load(Ordering::Acquire) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            thread::sleep(left.min(Duration::from_millis(10)));
        }
        false
    }
}

/// Hands committed entries, installed snapshots and confirmed reads to the service.
fn deliver(apply: &Sender<ApplyMsg>, (to_apply, read_states): Delivery) {
    for item in to_apply {
        let msg = match item {
            Apply::Entry(e) => ApplyMsg::Command { index: e.index, term: e.term, data: e.data },
            Apply::Snapshot(s) => ApplyMsg::Snapshot {
                index: s.meta.last_included_index,
                term: s.meta.last_included_term,
                data: s.data,
            },
        };
        if apply.send(msg).is_err() {
            break; // The service is gone; keep running so the cluster keeps its member.
        }
    }
    for read in read_states {
        let _ = apply.send(ApplyMsg::Read { ctx: read.ctx, index: read.index });
    }
}
