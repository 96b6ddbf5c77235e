//! The server: takes requests, puts writes through Raft, answers reads through ReadIndex (or a
//! lease, or the log), applies what commits, and snapshots when the Raft log grows too big.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use kvproto::proto::{Op, Outcome, Reply, Request};
use parking_lot::Mutex;
use raft::{ApplyMsg, Index, Node, SnapshotSpool, Storage, Term, Transport};

use crate::command::Command;
use crate::state_machine::StateMachine;
use crate::{Error, Result};

/// How the server answers reads (`Get` and `Scan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// As commands through the log: an entry and an fsync per read. The simplest and slowest.
    Log,
    /// ReadIndex (Raft thesis §6.4): the leader notes its commit index, confirms with one
    /// heartbeat round that it still leads, waits until it has applied that index, and reads
    /// its own state. No log entry. Reads arriving together share a round.
    #[default]
    ReadIndex,
    /// Leader lease: as ReadIndex, but while a majority answered a heartbeat within the last
    /// election timeout (less a margin for clock drift) no round is needed. Needs CheckQuorum
    /// and clocks whose rates differ by less than the margin (see
    /// [`raft::Config::lease_reads`]); the Raft configuration must have `lease_reads` on.
    Lease,
    /// **Broken on purpose, never use it:** any server answers reads from its own state at
    /// once, with no check that it leads or is up to date. It exists, with the test-only
    /// feature `unsafe-reads` only, so that tests can show the linearizability checker
    /// catching the stale reads this allows.
    #[cfg(feature = "unsafe-reads")]
    UnsafeLocal,
}

/// What a server does with a read (`Get`, `Scan`) it receives: [`ServerConfig::read_path`].
/// The server's own request path follows it, and so does the service's simulation
/// (`tests/simulation.rs`), which runs the same decision in virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPath {
    /// Through the log, as a write ([`ReadMode::Log`]).
    Log,
    /// Ask Raft for a read index (the leader confirms it, or a follower asks the leader), and
    /// answer once it is applied.
    ReadIndex,
    /// Answer "wrong leader": a follower without follower reads.
    WrongLeader,
    /// Answer from this server's own state at once ([`ReadMode::UnsafeLocal`], test only).
    #[cfg(feature = "unsafe-reads")]
    Local,
}

/// How a server behaves.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Snapshot (and let Raft discard its log) once the Raft state passes this many bytes;
    /// `None` never snapshots.
    pub max_raft_state: Option<u64>,
    /// How reads are answered.
    pub read_mode: ReadMode,
    /// With `ReadIndex` or `Lease`, a follower answers reads too: it asks the leader for a
    /// read index, waits until it has applied that index itself, and reads its own state.
    /// Still linearizable; spreads reads over the replicas. Off: followers answer reads with
    /// "wrong leader", as writes.
    pub follower_reads: bool,
    /// How long a request may wait for its entry to apply (or its read to be confirmed)
    /// before the server answers [`Reply::Timeout`] and the clerk tries elsewhere.
    pub request_timeout: Duration,
    /// A follower hands writes (and log reads) to the leader through Raft (proposal
    /// forwarding) and answers them when they apply, instead of answering "wrong leader": any
    /// replica then serves any request. Exactly-once still holds, through the dedup table,
    /// when a forwarded write is lost and retried.
    pub forward_writes: bool,
    /// How long a client session may go without an applied write before it expires (on the
    /// log clock, from the leader's stamps). The leader writes its TTL into each
    /// registration, so a session keeps the TTL it was registered with whatever the other
    /// nodes are configured with. See `docs/kv.md` ("Sessions") for the default.
    pub session_ttl: Duration,
}

/// The default [`ServerConfig::session_ttl`]: one hour (LogCabin's default too). It must
/// exceed by far how long a client retries one request (seconds, across a leader change), and
/// bounds how long a crashed client's entry stays in the table.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(3600);

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            max_raft_state: None,
            read_mode: ReadMode::ReadIndex,
            follower_reads: false,
            request_timeout: Duration::from_millis(500),
            forward_writes: false,
            session_ttl: DEFAULT_SESSION_TTL,
        }
    }
}

impl ServerConfig {
    /// What a server with this configuration does with a read, when it `leads` or not.
    pub fn read_path(&self, leads: bool) -> ReadPath {
        match self.read_mode {
            ReadMode::Log => ReadPath::Log,
            #[cfg(feature = "unsafe-reads")]
            ReadMode::UnsafeLocal => ReadPath::Local,
            ReadMode::ReadIndex | ReadMode::Lease if leads || self.follower_reads => {
                ReadPath::ReadIndex
            }
            ReadMode::ReadIndex | ReadMode::Lease => ReadPath::WrongLeader,
        }
    }
}

/// At most this many delivered messages are applied in one batch.
const MAX_APPLY_BATCH: usize = 1024;

/// How often a request waiting on another node checks whether the term changed.
const TERM_CHECK: Duration = Duration::from_millis(20);

/// The answer to a request Raft refused.
fn not_leader(e: raft::Error) -> Reply {
    match e {
        raft::Error::NotLeader { leader_hint } => Reply::WrongLeader { leader_hint },
        e @ (raft::Error::EntryTooLarge { .. } | raft::Error::InvalidProposal(_)) => {
            Reply::Refused(e.to_string())
        }
        _ => Reply::WrongLeader { leader_hint: None },
    }
}

/// Whether a disk alarm refuses `op`: every write but deletes, which give space back (as
/// under etcd's `NOSPACE` alarm), and the session bookkeeping a delete needs: registering a
/// session (a record of a few dozen bytes) and ending one.
pub(crate) fn blocked_by_alarm(op: &Op) -> bool {
    op.is_write()
        && !matches!(
            op,
            Op::Delete { .. } | Op::DeleteMany { .. } | Op::Register { .. } | Op::EndSession { .. }
        )
}

/// Whether `e` is a lack of space on the disk.
fn is_no_space(e: &Error) -> bool {
    match e {
        Error::Lsm(e) => e.is_no_space(),
        Error::Io(e) => {
            matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        }
        Error::Raft(raft::Error::Storage(why)) => why.contains("No space left"),
        _ => false,
    }
}

/// The leader's check of every proposal: alarm entries must decode, requests too (see
/// [`crate::command::check`]), and no write but a delete (or a session registration or end)
/// passes while a disk alarm is active.
fn proposal_check(
    alarms: Arc<Mutex<crate::disk::Alarms>>,
    session_ttl: Duration,
) -> raft::ProposalCheck {
    let ttl_ms = u64::try_from(session_ttl.as_millis()).unwrap_or(u64::MAX);
    raft::ProposalCheck::new(move |entry| {
        if let Some(alarm) = crate::disk::decode(entry) {
            return alarm.map(drop);
        }
        let command = crate::command::decode(entry)?;
        if blocked_by_alarm(&command.request.op)
            && let Some(why) = crate::disk::refusal(&alarms.lock().current())
        {
            return Err(why);
        }
        Ok(())
    })
    .stamping(move |entry| {
        // An alarm entry carries no clock; a command gets the leader's (crate::command).
        if crate::disk::decode(entry).is_some() {
            return Ok(bytes::Bytes::copy_from_slice(entry));
        }
        crate::command::stamp(entry, crate::command::wall_clock_ms(), ttl_ms, rand::random::<u64>)
    })
}

/// A write waiting for the entry at its index to apply.
struct WaitingWrite {
    term: Term,
    client_id: u64,
    seq: u64,
    reply: Sender<Reply>,
}

/// Requests waiting for the apply loop, and reads confirmed but not yet answerable.
#[derive(Default)]
struct Waiting {
    writes: BTreeMap<Index, Vec<WaitingWrite>>,
    reads: HashMap<u64, (Op, Sender<Reply>)>,
    /// Confirmed reads by read index, to answer once that index is applied.
    confirmed: BTreeMap<Index, Vec<u64>>,
    /// Requests this follower forwarded to the leader, by (client id, sequence number),
    /// answered when an entry with that request applies.
    forwarded: HashMap<(u64, u64), (u64, Sender<Reply>)>,
}

/// What a [`Pending`] request must undo if it gives up waiting.
#[derive(Debug)]
enum Registration {
    /// Nothing: a write waiting by log index is cleared when a later index applies.
    None,
    /// A read waiting for its read index, by context.
    Read(u64),
    /// A forwarded request, by (client id, sequence number).
    /// (The token tells this registration from a later one for the same request.)
    Forwarded(u64, u64, u64),
}

/// A request submitted with [`KvServer::submit`]: [`wait`](Pending::wait) for its reply.
#[must_use = "a submitted request is answered through wait()"]
pub struct Pending {
    inner: Option<Arc<Inner>>,
    reply: std::result::Result<Receiver<Reply>, Reply>,
    registration: Registration,
    /// When the request was submitted: the timeout counts from here, so that waiting for a
    /// batch one request after another takes one timeout, not one per request.
    submitted: Instant,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("registration", &self.registration).finish()
    }
}

impl Pending {
    fn done(reply: Reply) -> Pending {
        Pending {
            inner: None,
            reply: Err(reply),
            registration: Registration::None,
            submitted: Instant::now(),
        }
    }

    /// Blocks until the request is answered, or answers [`Reply::Timeout`] once the server's
    /// `request_timeout` has passed since it was submitted.
    ///
    /// A request that depends on another node (a forwarded write, a read waiting for its read
    /// index) gives up early, with [`Reply::Timeout`], once this node sees a new term: the
    /// leader it relied on is gone, and resubmitting reaches the new one sooner.
    pub fn wait(self) -> Reply {
        let rx = match self.reply {
            Ok(rx) => rx,
            Err(reply) => return reply,
        };
        let inner = self.inner.expect("a waiting request knows its server");
        let deadline = self.submitted + inner.config.request_timeout;
        let watch_term = !matches!(self.registration, Registration::None);
        let term = inner.node.state().0;
        let answer = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let slice = if watch_term { TERM_CHECK.min(left) } else { left };
            match rx.recv_timeout(slice) {
                Ok(reply) => break Some(reply),
                Err(RecvTimeoutError::Disconnected) => break None,
                Err(RecvTimeoutError::Timeout) => {
                    if Instant::now() >= deadline || inner.node.state().0 != term {
                        break None;
                    }
                }
            }
        };
        match answer {
            Some(reply) => reply,
            None => {
                let mut waiting = inner.waiting.lock();
                match self.registration {
                    Registration::None => {}
                    Registration::Read(ctx) => {
                        waiting.reads.remove(&ctx);
                    }
                    Registration::Forwarded(client, seq, token) => {
                        // Only our own registration: a retry may have replaced it.
                        if waiting.forwarded.get(&(client, seq)).is_some_and(|(t, _)| *t == token) {
                            waiting.forwarded.remove(&(client, seq));
                        }
                    }
                }
                drop(waiting);
                // The reply may have arrived while we gave up.
                rx.try_recv().unwrap_or(Reply::Timeout)
            }
        }
    }
}

struct Inner {
    node: Node,
    machine: Mutex<Box<dyn StateMachine>>,
    waiting: Mutex<Waiting>,
    config: ServerConfig,
    /// The next read context (and forwarded-write token). Starts at a random value in every
    /// incarnation: a `ReadIndexResponse` still on its way to the previous incarnation of this
    /// server must not find a read of this one waiting under the same context, or it would
    /// answer it with an index from before the restart (a stale read).
    next_ctx: AtomicU64,
    killed: AtomicBool,
    /// Where snapshots are built (the Raft configuration's spool).
    spool: SnapshotSpool,
    /// The index of the last snapshot handed to Raft.
    snapshot_index: AtomicU64,
    failure: Mutex<Option<String>>,
    /// Raft's `max_entry_bytes`: a write whose entry would be larger is refused at once.
    max_entry_bytes: u64,
    /// The disk alarms applied from the log (shared with the leader's proposal check).
    alarms: Arc<Mutex<crate::disk::Alarms>>,
    /// This node's own disk, as its monitor last reported it.
    local_disk: Mutex<crate::disk::Local>,
    /// Whether the disk has room for a snapshot now (see [`KvServer::set_snapshot_guard`]).
    snapshot_guard: Mutex<Option<SnapshotGuard>>,
    /// The last snapshot was deferred for want of room.
    snapshot_deferred: AtomicBool,
}

/// Says whether the disk has room for a snapshot now (see [`KvServer::set_snapshot_guard`]).
pub type SnapshotGuard = Box<dyn Fn() -> bool + Send>;

/// One replica of the key-value service. Cheap to clone; clones are the same server.
#[derive(Clone)]
pub struct KvServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KvServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvServer").field("node", &self.inner.node.status()).finish()
    }
}

impl KvServer {
    /// Starts a replica: brings `machine` up to the snapshot in `storage` if it is behind it,
    /// starts the Raft node, and starts applying.
    ///
    /// # Errors
    /// [`Error::Raft`] if the node cannot start, [`Error::Corrupt`] or [`Error::Lsm`] if
    /// the snapshot cannot be restored.
    pub fn start<S: Storage + 'static, T: Transport>(
        mut raft_config: raft::Config,
        tick: Duration,
        storage: S,
        transport: T,
        mut machine: Box<dyn StateMachine>,
        config: ServerConfig,
    ) -> Result<KvServer> {
        let persisted = storage
            .initial_state()
            .map_err(|e| Error::Raft(raft::Error::Storage(e.to_string())))?;
        let snapshot_index = persisted.snapshot.as_ref().map_or(0, |s| s.meta.last_included_index);
        if let Some(snapshot) = persisted.snapshot
            && snapshot.meta.last_included_index > machine.applied_index()
        {
            machine.restore(snapshot.meta.last_included_index, &mut snapshot.data.reader())?;
        }
        // The leader appends only what every replica can apply, stamped with its clock, and no
        // write while a disk alarm is active (a follower checks before forwarding; this catches
        // the rest).
        let alarms: Arc<Mutex<crate::disk::Alarms>> = Arc::default();
        raft_config.proposal_check = Some(proposal_check(Arc::clone(&alarms), config.session_ttl));
        let max_entry_bytes = raft_config.max_entry_bytes;
        let spool = raft_config.snapshot_spool.clone();
        let (tx, rx) = crossbeam_channel::unbounded();
        let node = Node::new(raft_config, tick, storage, transport, tx)?;
        let inner = Arc::new(Inner {
            node,
            machine: Mutex::new(machine),
            waiting: Mutex::default(),
            config,
            next_ctx: AtomicU64::new(first_ctx()),
            killed: AtomicBool::new(false),
            spool,
            snapshot_index: AtomicU64::new(snapshot_index),
            failure: Mutex::new(None),
            max_entry_bytes,
            alarms,
            local_disk: Mutex::default(),
            snapshot_guard: Mutex::new(None),
            snapshot_deferred: AtomicBool::new(false),
        });
        let applier = Arc::clone(&inner);
        std::thread::Builder::new()
            .name(format!("kv-apply-{}", inner.node.status().id))
            .spawn(move || applier.apply_loop(&rx))
            .map_err(|e| Error::Corrupt(format!("cannot start the apply thread: {e}")))?;
        Ok(KvServer { inner })
    }

    /// Answers one request, blocking until it is done or the request times out.
    pub fn handle(&self, request: Request) -> Reply {
        self.submit(vec![request]).pop().expect("one request, one answer").wait()
    }

    /// Starts every request without waiting for any; each [`Pending`] answers its request.
    /// Writes are proposed together (one log append, one AppendEntries); reads each get a
    /// read index (reads asked together share a heartbeat round). The writes and reads of one
    /// call are concurrent: a caller that needs a read to see an earlier write (as a pipelined
    /// Redis connection does) waits for the write before submitting the read.
    pub fn submit(&self, requests: Vec<Request>) -> Vec<Pending> {
        let inner = &self.inner;
        if inner.killed.load(Ordering::Acquire) {
            return requests
                .iter()
                .map(|_| Pending::done(Reply::WrongLeader { leader_hint: None }))
                .collect();
        }
        // Whether reads go through the log depends on the mode alone, not on who leads.
        let reads_through_log = inner.config.read_path(true) == ReadPath::Log;
        let through_log = |r: &Request| r.op.is_write() || reads_through_log;
        let mut pending: Vec<Option<Pending>> = (0..requests.len()).map(|_| None).collect();
        let mut writes = Vec::new();
        for (i, request) in requests.into_iter().enumerate() {
            if through_log(&request) {
                writes.push((i, request));
            } else {
                pending[i] = Some(self.submit_read(request));
            }
        }
        if !writes.is_empty() {
            for (i, p) in self.submit_writes(writes) {
                pending[i] = Some(p);
            }
        }
        pending.into_iter().map(|p| p.expect("every request was submitted")).collect()
    }

    fn pending(&self, rx: Receiver<Reply>, registration: Registration) -> Pending {
        Pending {
            inner: Some(Arc::clone(&self.inner)),
            reply: Ok(rx),
            registration,
            submitted: Instant::now(),
        }
    }

    /// Proposes `writes` on the leader, or forwards them to it from a follower.
    fn submit_writes(&self, writes: Vec<(usize, Request)>) -> Vec<(usize, Pending)> {
        let inner = &self.inner;
        let mut refused = Vec::new();
        let (writes, nospace): (Vec<_>, Vec<_>) = match self.disk_refusal() {
            Some(_) => writes.into_iter().partition(|(_, r)| !blocked_by_alarm(&r.op)),
            None => (writes, Vec::new()),
        };
        if !nospace.is_empty() {
            let reason = self.disk_refusal().unwrap_or_default();
            for (i, _) in nospace {
                refused.push((i, Pending::done(Reply::Refused(reason.clone()))));
            }
        }
        let mut data: Vec<bytes::Bytes> = Vec::with_capacity(writes.len());
        if writes.is_empty() {
            return refused;
        }
        let mut accepted = Vec::with_capacity(writes.len());
        for (i, request) in writes {
            let entry = crate::command::encode(&request);
            if entry.len() as u64 > inner.max_entry_bytes {
                let reason = format!(
                    "request of {} bytes exceeds the limit of {} bytes",
                    entry.len(),
                    inner.max_entry_bytes
                );
                refused.push((i, Pending::done(Reply::Refused(reason))));
            } else {
                data.push(entry);
                accepted.push((i, request));
            }
        }
        if accepted.is_empty() {
            return refused;
        }
        let mut out = self.propose_or_forward(accepted, data);
        out.extend(refused);
        out
    }

    /// Proposes `writes` (encoded as `data`) on the leader, or forwards them from a follower.
    fn propose_or_forward(
        &self,
        writes: Vec<(usize, Request)>,
        data: Vec<bytes::Bytes>,
    ) -> Vec<(usize, Pending)> {
        let inner = &self.inner;
        // Hold the table while proposing, so the apply loop cannot miss these waiters.
        let mut waiting = inner.waiting.lock();
        let err = match inner.node.start_batch(data.clone()) {
            Ok(proposed) => {
                let mut out = Vec::with_capacity(writes.len());
                for ((i, request), (index, term)) in writes.into_iter().zip(proposed) {
                    let (tx, rx) = crossbeam_channel::bounded(1);
                    let (client_id, seq) = (request.client_id, request.seq);
                    let write = WaitingWrite { term, client_id, seq, reply: tx };
                    waiting.writes.entry(index).or_default().push(write);
                    out.push((i, self.pending(rx, Registration::None)));
                }
                return out;
            }
            Err(e) => e,
        };
        if inner.config.forward_writes && matches!(err, raft::Error::NotLeader { .. }) {
            let mut receivers = Vec::with_capacity(writes.len());
            for (_, request) in &writes {
                let (tx, rx) = crossbeam_channel::bounded(1);
                let token = inner.next_ctx.fetch_add(1, Ordering::Relaxed);
                waiting.forwarded.insert((request.client_id, request.seq), (token, tx));
                receivers.push((rx, token));
            }
            if inner.node.forward(data).is_ok() {
                return writes
                    .into_iter()
                    .zip(receivers)
                    .map(|((i, r), (rx, token))| {
                        (i, self.pending(rx, Registration::Forwarded(r.client_id, r.seq, token)))
                    })
                    .collect();
            }
            for (_, request) in &writes {
                waiting.forwarded.remove(&(request.client_id, request.seq));
            }
        }
        let reply = not_leader(err);
        writes.into_iter().map(|(i, _)| (i, Pending::done(reply.clone()))).collect()
    }

    fn submit_read(&self, request: Request) -> Pending {
        let inner = &self.inner;
        match inner.config.read_path(inner.node.state().1) {
            ReadPath::ReadIndex => {}
            ReadPath::WrongLeader => {
                let leader_hint = inner.node.status().leader_id;
                return Pending::done(Reply::WrongLeader { leader_hint });
            }
            #[cfg(feature = "unsafe-reads")]
            ReadPath::Local => {
                let outcome = inner.machine.lock().read(&request.op);
                return Pending::done(outcome.map_or(Reply::Timeout, Reply::Done));
            }
            ReadPath::Log => {
                // `submit` sends these with the writes; answered the same way if one came here.
                let mut pending = self.submit_writes(vec![(0, request)]);
                return pending.pop().map_or(Pending::done(Reply::Timeout), |(_, p)| p);
            }
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let ctx = inner.next_ctx.fetch_add(1, Ordering::Relaxed);
        let mut waiting = inner.waiting.lock();
        waiting.reads.insert(ctx, (request.op, tx));
        if let Err(e) = inner.node.read_index(ctx) {
            waiting.reads.remove(&ctx);
            return Pending::done(not_leader(e));
        }
        drop(waiting);
        self.pending(rx, Registration::Read(ctx))
    }

    /// How this server was configured.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The Raft node underneath.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// Why writes are refused now, if they are: this node's own disk is in trouble, or a disk
    /// alarm is active in the cluster (see [`crate::disk`]). Starts with
    /// [`NOSPACE`](crate::disk::NOSPACE).
    pub fn disk_refusal(&self) -> Option<String> {
        let me = self.inner.node.status().id;
        let mut alarms = self.inner.alarms.lock().current();
        if let Some(why) = &self.inner.local_disk.lock().problem
            && !alarms.iter().any(|(node, _)| *node == me)
        {
            alarms.insert(0, (me, why.clone()));
        }
        crate::disk::refusal(&alarms)
    }

    /// Installs the check run just before each snapshot: whether the disk has room for one
    /// now (a snapshot is written twice, to the spool and into Raft's storage, so it needs
    /// about twice the state free). Without room the snapshot is deferred, and the log grows
    /// meanwhile, rather than fill the disk; the [`DiskMonitor`](crate::disk::DiskMonitor)
    /// installs one.
    pub fn set_snapshot_guard(&self, guard: SnapshotGuard) {
        *self.inner.snapshot_guard.lock() = Some(guard);
    }

    /// The nodes whose disk alarm is active, as this node has applied them.
    pub fn disk_alarms(&self) -> Vec<raft::NodeId> {
        self.inner.alarms.lock().current().into_iter().map(|(node, _)| node).collect()
    }

    /// Reports this node's own disk: `Some(why)` if it is full or over its limits, `None` if
    /// it is fine. Called by the [`DiskMonitor`](crate::disk::DiskMonitor) (or a test) from
    /// time to time: while in trouble this node refuses writes itself, and raises its alarm
    /// through the log (again every [`REASSERT`](crate::disk::REASSERT)); once fine, it clears
    /// the alarm.
    pub fn set_disk_problem(&self, problem: Option<String>) {
        let inner = &self.inner;
        let me = inner.node.status().id;
        let raised_at = inner.alarms.lock().raised_at(me);
        let due = {
            let mut local = inner.local_disk.lock();
            local.problem = problem;
            local.due(me, raised_at)
        };
        let Some(entry) = due else { return };
        let data = crate::disk::encode(&entry);
        // Proposed like any command, or handed to the leader; if neither works now (no
        // leader), the next report tries again.
        let proposed = match inner.node.start(data.clone()) {
            Err(raft::Error::NotLeader { .. }) => inner.node.forward(vec![data]).map(drop),
            other => other.map(drop),
        };
        if let Err(e) = proposed {
            log::debug!("the disk alarm could not be proposed yet: {e}");
        }
    }

    /// The last index the state machine applied.
    pub fn applied_index(&self) -> Index {
        self.inner.machine.lock().applied_index()
    }

    /// How many client sessions the state machine holds, and its log clock (see
    /// [`StateMachine::session_stats`]).
    pub fn session_stats(&self) -> (usize, u64) {
        self.inner.machine.lock().session_stats()
    }

    /// Why the server stopped by itself (its state machine or storage failed), if it did.
    pub fn failure(&self) -> Option<String> {
        self.inner.failure.lock().clone().or_else(|| self.inner.node.failure())
    }

    /// Stops the server: its node stops, waiting requests are told to go elsewhere.
    pub fn kill(&self) {
        self.inner.killed.store(true, Ordering::Release);
        self.inner.node.kill();
        let mut waiting = self.inner.waiting.lock();
        for write in std::mem::take(&mut waiting.writes).into_values().flatten() {
            let _ = write.reply.send(Reply::WrongLeader { leader_hint: None });
        }
        for (_, (_, reply)) in waiting.reads.drain() {
            let _ = reply.send(Reply::WrongLeader { leader_hint: None });
        }
        for (_, (_, reply)) in waiting.forwarded.drain() {
            let _ = reply.send(Reply::WrongLeader { leader_hint: None });
        }
    }
}

/// A random first read context for a new incarnation (from the operating system's entropy,
/// not from the Raft seed, which tests set the same way in every incarnation). Two
/// incarnations' contexts meet only if one issues about 2^63 reads on average.
fn first_ctx() -> u64 {
    rand::random()
}

impl Inner {
    fn apply_loop(&self, rx: &Receiver<ApplyMsg>) {
        while let Ok(first) = rx.recv() {
            // Everything delivered meanwhile is applied together: one database write for a run
            // of commands.
            let mut msgs = vec![first];
            msgs.extend(rx.try_iter().take(MAX_APPLY_BATCH - 1));
            if self.killed.load(Ordering::Acquire) {
                return;
            }
            if let Err(e) = self.apply_all(msgs) {
                *self.failure.lock() = Some(e.to_string());
                self.killed.store(true, Ordering::Release);
                self.node.kill();
                return;
            }
        }
    }

    fn apply_all(&self, msgs: Vec<ApplyMsg>) -> Result<()> {
        let mut machine = self.machine.lock();
        let mut commands: Vec<(Index, Term, Option<Command>)> = Vec::new();
        for msg in msgs {
            match msg {
                ApplyMsg::Command { index, term, data } => {
                    if index <= machine.applied_index() {
                        continue; // Applied before a restart; Raft delivers it again.
                    }
                    if let Some(alarm) = crate::disk::decode(&data) {
                        // The state machine sees a no-op; the alarm goes to the alarm table.
                        self.apply_alarm(index, alarm);
                        commands.push((index, term, None));
                        continue;
                    }
                    let request = if data.is_empty() {
                        None
                    } else {
                        match crate::command::decode(&data) {
                            Ok(request) => Some(request),
                            Err(e) => {
                                // Every replica skips it alike: applied as a no-op at `index`,
                                // so all stay at the same applied index and state.
                                log::warn!("log entry {index} (term {term}) is skipped: {e}");
                                None
                            }
                        }
                    };
                    commands.push((index, term, request));
                }
                ApplyMsg::Snapshot { index, data, .. } => {
                    self.apply_commands(machine.as_mut(), std::mem::take(&mut commands))?;
                    if index > machine.applied_index() {
                        machine.restore(index, &mut data.reader())?;
                        // The alarms raised before it are not in it: their nodes raise them
                        // again within REASSERT.
                        self.alarms.lock().clear();
                        // Forwarded writes the snapshot covers will never apply here one by
                        // one: let them all resubmit now (the dedup table answers those that
                        // took effect) rather than wait out their timeout.
                        let forwarded = std::mem::take(&mut self.waiting.lock().forwarded);
                        log::info!(
                            "installed a snapshot from the leader at index {index}; {} \
                             forwarded writes resubmit",
                            forwarded.len()
                        );
                        for (_, (_, reply)) in forwarded {
                            let _ = reply.send(Reply::Timeout);
                        }
                    }
                    self.answer_writes(index, 0, None);
                }
                ApplyMsg::Read { ctx, index } => {
                    self.waiting.lock().confirmed.entry(index).or_default().push(ctx);
                }
            }
        }
        self.apply_commands(machine.as_mut(), commands)?;
        self.answer_reads(machine.as_ref())?;
        match self.maybe_snapshot(machine.as_mut()) {
            // A snapshot that does not fit on the disk is tried again later; the log stays.
            Err(e) if is_no_space(&e) => {
                log::warn!("cannot snapshot for lack of space ({e}); trying again later");
                Ok(())
            }
            other => other,
        }
    }

    /// Applies an alarm entry at `index` to the alarm table (a malformed one is skipped, by
    /// every replica alike).
    fn apply_alarm(
        &self,
        index: Index,
        alarm: std::result::Result<crate::disk::AlarmEntry, String>,
    ) {
        match alarm {
            Ok(alarm) => {
                let mut alarms = self.alarms.lock();
                let was = alarms.raised_at(alarm.node).is_some();
                if alarm.raised && !was {
                    log::warn!(
                        "disk alarm raised by node {} (entry {index}): {}; writes are refused",
                        alarm.node,
                        alarm.reason
                    );
                    // The leader refuses forwarded writes from now on, silently: let those
                    // waiting resubmit now (and be refused here) rather than time out.
                    let forwarded = std::mem::take(&mut self.waiting.lock().forwarded);
                    for (_, (_, reply)) in forwarded {
                        let _ = reply.send(Reply::Timeout);
                    }
                } else if !alarm.raised && was {
                    log::info!("disk alarm of node {} cleared (entry {index})", alarm.node);
                }
                alarms.apply(alarm);
            }
            Err(e) => log::warn!("log entry {index} is skipped: {e}"),
        }
    }

    /// Applies a run of consecutive commands in one batch, then answers their writers.
    fn apply_commands(
        &self,
        machine: &mut dyn StateMachine,
        commands: Vec<(Index, Term, Option<Command>)>,
    ) -> Result<()> {
        if commands.is_empty() {
            return Ok(());
        }
        let entries: Vec<(Index, Option<&Command>)> =
            commands.iter().map(|(index, _, c)| (*index, c.as_ref())).collect();
        let mut outcomes = machine.apply_batch(&entries)?.into_iter();
        for (index, term, command) in commands {
            let applied =
                command.map(|c| (c.request, outcomes.next().expect("an outcome per command")));
            self.answer_writes(index, term, applied.as_ref());
        }
        Ok(())
    }

    /// Answers the writes waiting at `index` (and any at earlier indexes, whose entries were
    /// replaced): those whose request is the one applied get its outcome, the others are told
    /// to retry.
    fn answer_writes(&self, index: Index, term: Term, applied: Option<&(Request, Outcome)>) {
        let mut waiting = self.waiting.lock();
        let later = waiting.writes.split_off(&(index + 1));
        let done = std::mem::replace(&mut waiting.writes, later);
        if let Some((request, outcome)) = applied
            && let Some((_, reply)) = waiting.forwarded.remove(&(request.client_id, request.seq))
        {
            let _ = reply.send(Reply::Done(outcome.clone()));
        }
        drop(waiting);
        for (at, writes) in done {
            for w in writes {
                let reply = match applied {
                    Some((request, outcome))
                        if at == index
                            && w.term == term
                            && request.client_id == w.client_id
                            && request.seq == w.seq =>
                    {
                        Reply::Done(outcome.clone())
                    }
                    _ => Reply::WrongLeader { leader_hint: None },
                };
                let _ = w.reply.send(reply);
            }
        }
    }

    /// Answers the confirmed reads whose read index is applied.
    fn answer_reads(&self, machine: &dyn StateMachine) -> Result<()> {
        let applied = machine.applied_index();
        let mut waiting = self.waiting.lock();
        let later = waiting.confirmed.split_off(&(applied + 1));
        let ready = std::mem::replace(&mut waiting.confirmed, later);
        for ctx in ready.into_values().flatten() {
            if let Some((op, reply)) = waiting.reads.remove(&ctx) {
                let _ = reply.send(Reply::Done(machine.read(&op)?));
            }
        }
        Ok(())
    }

    /// Snapshots once the Raft state passes its limit and a snapshot would free at least half
    /// of it (the log can be discarded only up to the applied index: a server whose applying
    /// lags would otherwise snapshot after every entry, and lag further). The state machine is
    /// synced first, so the log Raft then discards is never needed again.
    fn maybe_snapshot(&self, machine: &mut dyn StateMachine) -> Result<()> {
        let Some(limit) = self.config.max_raft_state else { return Ok(()) };
        let applied = machine.applied_index();
        let size = self.node.raft_state_size();
        if size < limit || applied <= self.snapshot_index.load(Ordering::Acquire) {
            return Ok(());
        }
        let status = self.node.status();
        if applied > status.commit_index {
            // After a restart the state machine may be ahead of what Raft has delivered again
            // (entries are applied while they are written): its state can only be snapshotted
            // at its own index, so wait until Raft has caught up to it.
            return Ok(());
        }
        let span = status.last_index.saturating_sub(status.snapshot_index).max(1);
        let covered = applied.saturating_sub(status.snapshot_index).min(span);
        if size.saturating_mul(covered) / span < limit / 2 {
            return Ok(());
        }
        let room = self.snapshot_guard.lock().as_ref().is_none_or(|guard| guard());
        let was_deferred = self.snapshot_deferred.swap(!room, Ordering::AcqRel);
        if !room {
            if !was_deferred {
                log::warn!("a snapshot is deferred: the disk has less free than twice the state");
            }
            return Ok(());
        }
        if was_deferred {
            log::info!("the deferred snapshot is taken: the disk has room for it again");
        }
        machine.sync()?;
        let mut out = self.spool.writer()?;
        machine.snapshot(&mut out)?;
        match self.node.snapshot(applied, out.finish()?) {
            Ok(()) => {
                self.snapshot_index.store(applied, Ordering::Release);
                Ok(())
            }
            // Stopped, or not yet delivered again after a restart (see above): later.
            Err(raft::Error::Stopped | raft::Error::SnapshotNotApplied { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kvproto::proto::{Op, Outcome, Request};
    use lsm::{Db, MemFs, Options};
    use raft::{Inbox, MemStorage, Message, Transport};

    use super::*;
    use crate::KvStateMachine;

    /// A transport for a single-node cluster: there is nobody to talk to.
    struct Alone;

    impl Transport for Alone {
        fn start(&self, _inbox: Inbox) {}
        fn send(&self, _message: Message) {}
        fn stop(&self) {}
    }

    /// Starts a one-node server (always the same Raft seed) over `storage` and `fs`.
    fn start(storage: MemStorage, fs: &MemFs) -> KvServer {
        let options = Options { fs: Arc::new(fs.clone()), ..Options::default() };
        let machine = KvStateMachine::new(Db::open("/kv", options).unwrap()).unwrap();
        let mut raft = raft::Config::new(1, vec![1]);
        raft.election_ticks = 4;
        raft.seed = 7;
        let config = ServerConfig { read_mode: ReadMode::ReadIndex, ..ServerConfig::default() };
        let tick = Duration::from_millis(5);
        KvServer::start(raft, tick, storage, Alone, Box::new(machine), config).unwrap()
    }

    /// Waits until `server` leads (a single node elects itself within a few ticks).
    fn await_leadership(server: &KvServer) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.node().state().1 {
            assert!(Instant::now() < deadline, "the single node did not elect itself");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Reads through ReadIndex once; returns the contexts the server's counter stood at before
    /// and after.
    fn read_once(server: &KvServer) -> (u64, u64) {
        let before = server.inner.next_ctx.load(Ordering::Relaxed);
        let op = Op::Get { key: bytes::Bytes::from_static(b"k") };
        let reply = server.handle(Request { client_id: 1, seq: 1, op, ordered: false });
        assert!(matches!(reply, Reply::Done(_)), "{reply:?}");
        (before, server.inner.next_ctx.load(Ordering::Relaxed))
    }

    /// Polls until `done` holds; fails the test after ten seconds.
    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn request(seq: u64, op: Op) -> Request {
        Request { client_id: 9, seq, op, ordered: false }
    }

    /// Registers a session through the log; its id is what writes must carry.
    fn register(server: &KvServer) -> u64 {
        let op = Op::Register { id: 0, ttl_ms: 0, retire: None };
        match server.handle(Request { client_id: 77, seq: 0, op, ordered: false }) {
            Reply::Done(Outcome::Registered { id, .. }) => id,
            other => panic!("registration failed: {other:?}"),
        }
    }

    fn put(key: &'static str) -> Op {
        Op::Put { key: bytes::Bytes::from_static(key.as_bytes()), value: "v".into() }
    }

    /// A node whose disk is in trouble refuses writes at once (before its alarm is even
    /// applied), raises its alarm through the log, serves reads and deletes meanwhile, and
    /// takes writes again once it reports the disk fine.
    #[test]
    fn a_disk_in_trouble_refuses_writes_until_it_is_fine_again() {
        let server = start(MemStorage::new(), &MemFs::new());
        await_leadership(&server);
        let session = register(&server);
        let request = |seq, op| Request { client_id: session, ..request(seq, op) };
        let reply = server.handle(request(1, put("a")));
        assert!(matches!(reply, Reply::Done(Outcome::Written)), "{reply:?}");
        server.set_disk_problem(Some("/data has 5 bytes free".into()));
        let Reply::Refused(why) = server.handle(request(2, put("b"))) else {
            panic!("a write went through with the disk full")
        };
        assert!(why.starts_with("NOSPACE") && why.contains("node 1: /data has 5 bytes"), "{why}");
        // As the monitor does, the node reports its disk again and again.
        eventually("the alarm is applied", || {
            server.set_disk_problem(Some("/data has 5 bytes free".into()));
            server.disk_alarms() == vec![1]
        });
        let get = |key: &'static str| Op::Get { key: bytes::Bytes::from_static(key.as_bytes()) };
        let reply = server.handle(request(3, get("a")));
        assert!(matches!(reply, Reply::Done(Outcome::Value(Some(_)))), "{reply:?}");
        let delete = Op::Delete { key: bytes::Bytes::from_static(b"a") };
        // The refused write took no effect, so its number is free again.
        let reply = server.handle(request(2, delete));
        assert!(matches!(reply, Reply::Done(Outcome::Written)), "deletes pass: {reply:?}");
        // The leader's proposal check refuses a write that got past the node's own check.
        let entry = crate::command::encode(&request(3, put("c")));
        assert!(matches!(server.node().start(entry), Err(raft::Error::InvalidProposal(_))));
        eventually("the alarm is cleared", || {
            server.set_disk_problem(None);
            server.disk_alarms().is_empty()
        });
        assert_eq!(server.disk_refusal(), None);
        let reply = server.handle(request(3, put("d")));
        assert!(matches!(reply, Reply::Done(Outcome::Written)), "{reply:?}");
        server.kill();
    }

    /// A restarted server (same storage, same Raft seed) must not hand out the read contexts
    /// of its previous incarnation: a `ReadIndexResponse` addressed to the old incarnation
    /// would answer the new one's read with an old index. The two incarnations' context ranges
    /// are far apart (this fails by chance with probability about 2^-31).
    #[test]
    fn a_restarted_server_does_not_reuse_read_contexts() {
        let (storage, fs) = (MemStorage::new(), MemFs::new());
        let first = start(storage.clone(), &fs);
        await_leadership(&first);
        let (old_from, old_to) = read_once(&first);
        assert!(old_to > old_from, "the read used no context");
        first.kill();
        let second = start(storage.crash_copy(), &fs);
        await_leadership(&second);
        let (new_from, _) = read_once(&second);
        let apart = |a: u64, b: u64| b.wrapping_sub(a) > 1 << 32 && a.wrapping_sub(b) > 1 << 32;
        assert!(
            apart(old_from, new_from),
            "incarnation contexts start at {old_from} and {new_from}: a stale response to the \
             first can answer a read of the second"
        );
        second.kill();
    }
}
