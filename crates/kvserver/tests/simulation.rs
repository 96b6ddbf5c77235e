//! Seeded simulation of the key-value service in virtual time: simulated clerks issue
//! concurrent operations while the network partitions, loses and reorders messages and servers
//! crash and restart; every seed's history goes through the linearizability checker.
//!
//! Each server is a Raft [`RawNode`] driven by labrpc's virtual clock, with a
//! `KvStateMachine` on an in-memory disk (or a `MemStateMachine` with
//! `RAFTKV_STATE_MACHINE=memory`): the same state machine the real server runs, and
//! the same request path (writes through the log, reads through ReadIndex, or a lease in half
//! the seeds). Clerks and servers talk in one-way messages over the simulated network; a clerk
//! that hears nothing within 300 ms retries elsewhere with the same sequence number. A crash
//! keeps only what was durable (the Raft storage as persisted, the disk as synced). Every
//! random choice comes from the seed: `LABRPC_SEED=<seed> cargo test -p raftkv-kvserver --test
//! simulation` replays one exactly. `TEST_SEEDS=<n>` sets how many seeds the sweep runs
//! (default 200).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kvclient::proto::{Op, Outcome, Reply, Request};
use kvserver::{ReadMode, ReadPath, ServerConfig, StateMachine};
use labrpc::{ClientEnd, ClockMode, Network, Rng, Server, Service};
use linearizability::saved::TestCheck;
use linearizability::{KvInput, KvOutput, Operation};
use lsm::MemFs;
use raft::{Apply, Config, MemStorage, Message, RawNode, Storage};
use serde::{Deserialize, Serialize};

const TICK: Duration = Duration::from_millis(10);
const FAULT_TIME: Duration = Duration::from_secs(8);
const CLIENTS: usize = 4;
const RETRY_AFTER: Duration = Duration::from_millis(300);
/// After the faults stop, the clerks keep going this long (virtual time) before they stop.
const QUIET_TIME: Duration = Duration::from_secs(2);
/// Operations every clerk must complete in [`QUIET_TIME`]. The faults may leave the cluster
/// without a quorum for most of [`FAULT_TIME`] (a crash takes 1 step in 100, a restart 3 in 100
/// and only if the node it picks is down: a seed can crash two of three servers in its first
/// 250 ms and restart them only 7 s later), so only the quiet time promises progress. In it
/// every server is up, every link works and nothing is lost: an election takes 150 to 300 ms
/// (a split vote another as much), a clerk that asks a follower is pointed to the leader 20 ms
/// later, and one that asks the old leader hears nothing for at most 300 ms; an operation then
/// takes a few ms (fsyncs of up to 3 ms, no network delay). Well under a second is lost, and
/// each of the remaining seconds holds dozens of operations per clerk: 5 is a floor far below
/// what a working service does, and far above what a stuck clerk does.
const MIN_QUIET_OPS: usize = 5;
/// Client sessions expire after this long without a write (virtual time).
const SESSION_TTL_MS: u64 = 1000;
/// A clerk registers a new session (leaving the old one to expire) after this many writes.
const WRITES_PER_SESSION: u64 = 8;
/// Snapshot once the Raft state passes this many bytes.
const MAX_RAFT_STATE: u64 = 2000;

/// A clerk's request, tagged so that its answer finds the attempt it belongs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Envelope {
    client: usize,
    attempt: u64,
    request: Request,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Answer {
    attempt: u64,
    reply: Reply,
}

/// A write waiting for its entry: (term, clerk, attempt, client id, seq).
type WaitingWrite = (u64, usize, u64, u64, u64);

struct Peer {
    core: Option<RawNode>,
    storage: MemStorage,
    disk: MemFs,
    machine: Option<Box<dyn StateMachine>>,
    incarnation: u64,
    persisting: bool,
    /// Writes waiting for their entry, by index.
    writes: BTreeMap<u64, Vec<WaitingWrite>>,
    /// Reads waiting for their read index: ctx -> (client, attempt, op).
    reads: BTreeMap<u64, (usize, u64, Op)>,
    /// Confirmed reads by read index.
    confirmed: BTreeMap<u64, Vec<u64>>,
}

struct Clerk {
    /// Names the clerk's reads and registrations.
    client_id: u64,
    /// Numbers the clerk's reads and registrations.
    request_seq: u64,
    /// The session its writes go under, and the number of its last write.
    session: Option<u64>,
    seq: u64,
    attempt: u64,
    /// The operation in flight: (request, call time, target server).
    current: Option<(Request, u64, usize)>,
    leader: usize,
    /// Operations answered (reads and writes, not registrations).
    completed: usize,
}

struct World {
    n: usize,
    lease: bool,
    peers: Vec<Peer>,
    /// server_ends[i][j]: server i to server j.
    server_ends: Vec<Vec<Option<ClientEnd>>>,
    /// To each server from each clerk, and back.
    to_server: Vec<Vec<ClientEnd>>,
    to_client: Vec<Vec<ClientEnd>>,
    clerks: Vec<Clerk>,
    history: Vec<Operation<KvInput, KvOutput>>,
    next_ctx: u64,
    stop_clients: bool,
    /// How many sessions the clerks registered.
    registered: usize,
    /// How the servers answer reads: the real server's decision ([`ServerConfig::read_path`]),
    /// with follower reads (a follower asks the leader for a read index).
    server: ServerConfig,
    /// Broken on purpose (for the check of the checker): the servers run the real server's
    /// broken read path, `ReadMode::UnsafeLocal`, and clerks send reads to any server.
    broken_reads: bool,
}

type Shared = Arc<Mutex<World>>;

fn lock(w: &Shared) -> MutexGuard<'_, World> {
    w.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

fn config(id: u64, n: u64, lease: bool) -> Config {
    let mut c = Config::new(id, (0..n).collect());
    c.election_ticks = 15;
    c.heartbeat_ticks = 3;
    c.lease_reads = lease;
    c.snapshot_chunk_bytes = 512;
    c
}

/// Drives one server: takes its `Ready` and schedules the "fsync" that makes it durable.
fn pump(net: &Arc<Network>, world: &Shared, id: usize) {
    let mut w = lock(world);
    let peer = &mut w.peers[id];
    let Some(core) = peer.core.as_mut() else { return };
    if peer.persisting || !core.has_ready() {
        return;
    }
    let mut ready = core.ready();
    peer.persisting = true;
    let incarnation = peer.incarnation;
    // What may precede the write goes now, as the real driver sends it (thesis §10.2.1).
    let (early, late): (Vec<_>, Vec<_>) = std::mem::take(&mut ready.messages)
        .into_iter()
        .partition(raft::Message::may_precede_persist);
    ready.messages = late;
    for m in early {
        if let Some(end) = &w.server_ends[id][m.to as usize] {
            let _ = end.call_with("Raft.Step", &m, |_: labrpc::Result<()>| {});
        }
    }
    // What is committed is durable on a majority already: applied while we write, as the
    // real driver does (unless a snapshot from the leader must be persisted first).
    if ready.snapshot.is_none() {
        for a in std::mem::take(&mut ready.to_apply) {
            apply(&mut w, id, a);
        }
        for read in std::mem::take(&mut ready.read_states) {
            w.peers[id].confirmed.entry(read.index).or_default().push(read.ctx);
        }
        answer_reads(&mut w, id);
        maybe_snapshot(&mut w, id);
    }
    drop(w);
    let fsync = Duration::from_micros(net.random_below(3000));
    let (net2, world2) = (Arc::downgrade(net), Arc::clone(world));
    net.schedule(fsync, move || {
        let Some(net2) = net2.upgrade() else { return };
        let mut w = lock(&world2);
        if w.peers[id].incarnation != incarnation {
            return; // Crashed before the write completed: it never happened.
        }
        let peer = &mut w.peers[id];
        peer.storage.persist(ready.hard_state, ready.snapshot.as_ref(), &ready.entries).unwrap();
        for m in ready.messages {
            if let Some(end) = &w.server_ends[id][m.to as usize] {
                let _ = end.call_with("Raft.Step", &m, |_: labrpc::Result<()>| {});
            }
        }
        for a in ready.to_apply {
            apply(&mut w, id, a);
        }
        for read in ready.read_states {
            w.peers[id].confirmed.entry(read.index).or_default().push(read.ctx);
        }
        answer_reads(&mut w, id);
        maybe_snapshot(&mut w, id);
        let peer = &mut w.peers[id];
        peer.persisting = false;
        if let Some(core) = peer.core.as_mut() {
            core.advance();
        }
        drop(w);
        pump(&net2, &world2, id);
    });
}

fn reply(w: &World, server: usize, client: usize, attempt: u64, reply: Reply) {
    let answer = Answer { attempt, reply };
    let _ =
        w.to_client[server][client].call_with("Clerk.Answer", &answer, |_: labrpc::Result<()>| {});
}

fn apply(w: &mut World, id: usize, a: Apply) {
    let peer = &mut w.peers[id];
    let Some(machine) = peer.machine.as_mut() else { return };
    match a {
        Apply::Entry(e) => {
            if e.index <= machine.applied_index() {
                return;
            }
            let applied = if e.data.is_empty() {
                machine.skip(e.index).unwrap();
                None
            } else {
                let command = kvserver::command::decode(&e.data).unwrap();
                let outcome = machine.apply(e.index, &command).unwrap();
                Some((command.request, outcome))
            };
            let later = peer.writes.split_off(&(e.index + 1));
            let done = std::mem::replace(&mut peer.writes, later);
            let mut answers = Vec::new();
            for (at, waiting) in done {
                for (term, client, attempt, client_id, seq) in waiting {
                    let r = match &applied {
                        Some((req, outcome))
                            if at == e.index
                                && term == e.term
                                && req.seq == seq
                                && req.client_id == client_id =>
                        {
                            Reply::Done(outcome.clone())
                        }
                        _ => Reply::WrongLeader { leader_hint: None },
                    };
                    answers.push((client, attempt, r));
                }
            }
            for (client, attempt, r) in answers {
                reply(w, id, client, attempt, r);
            }
        }
        Apply::Snapshot(s) => {
            if s.meta.last_included_index > machine.applied_index() {
                machine.restore(s.meta.last_included_index, &mut s.data.reader()).unwrap();
            }
        }
    }
}

fn answer_reads(w: &mut World, id: usize) {
    let peer = &mut w.peers[id];
    let Some(machine) = peer.machine.as_ref() else { return };
    let applied = machine.applied_index();
    let later = peer.confirmed.split_off(&(applied + 1));
    let ready = std::mem::replace(&mut peer.confirmed, later);
    let mut answers = Vec::new();
    for ctx in ready.into_values().flatten() {
        if let Some((client, attempt, op)) = peer.reads.remove(&ctx) {
            answers.push((client, attempt, Reply::Done(machine.read(&op).unwrap())));
        }
    }
    for (client, attempt, r) in answers {
        reply(w, id, client, attempt, r);
    }
}

fn maybe_snapshot(w: &mut World, id: usize) {
    let peer = &mut w.peers[id];
    let (Some(core), Some(machine)) = (peer.core.as_mut(), peer.machine.as_mut()) else { return };
    let applied = machine.applied_index();
    if peer.storage.raft_state_size() < MAX_RAFT_STATE || applied <= core.status().snapshot_index {
        return;
    }
    machine.sync().unwrap();
    let mut data = Vec::new();
    machine.snapshot(&mut data).unwrap();
    let _ = core.snapshot(applied, data);
}

/// A server's request handler: writes go through the log, reads through ReadIndex (or lease).
fn handle(world: &Shared, id: usize, env: Envelope) {
    let mut w = lock(world);
    let (client, attempt) = (env.client, env.attempt);
    let ctx = w.next_ctx;
    w.next_ctx += 1;
    if !env.request.op.is_write() {
        let leads = w.peers[id].core.as_ref().is_some_and(|c| c.role() == raft::Role::Leader);
        match w.server.read_path(leads) {
            ReadPath::ReadIndex => {}
            ReadPath::Local => {
                let Some(machine) = w.peers[id].machine.as_ref() else { return };
                let outcome = machine.read(&env.request.op).unwrap();
                reply(&w, id, client, attempt, Reply::Done(outcome));
                return;
            }
            path => panic!("the simulation's servers have follower reads, not {path:?}"),
        }
    }
    let peer = &mut w.peers[id];
    let Some(core) = peer.core.as_mut() else { return };
    let result = if env.request.op.is_write() {
        let data = kvserver::command::encode(&env.request);
        core.propose(data).map(|(index, term)| {
            let (id, seq) = (env.request.client_id, env.request.seq);
            peer.writes.entry(index).or_default().push((term, client, attempt, id, seq));
        })
    } else {
        core.read_index(ctx).map(|()| {
            peer.reads.insert(ctx, (client, attempt, env.request.op.clone()));
        })
    };
    if let Err(raft::Error::NotLeader { leader_hint }) = result {
        reply(&w, id, client, attempt, Reply::WrongLeader { leader_hint });
    }
}

fn schedule_tick(net: &Arc<Network>, world: &Shared, i: usize, incarnation: u64) {
    let (net2, world2) = (Arc::downgrade(net), Arc::clone(world));
    net.schedule(TICK, move || {
        let Some(net2) = net2.upgrade() else { return };
        {
            let mut w = lock(&world2);
            if w.peers[i].incarnation != incarnation {
                return;
            }
            if let Some(core) = w.peers[i].core.as_mut() {
                core.tick();
            }
        }
        pump(&net2, &world2, i);
        schedule_tick(&net2, &world2, i, incarnation);
    });
}

struct Sim {
    net: Arc<Network>,
    world: Shared,
    n: usize,
}

impl Sim {
    fn new(seed: u64, broken_reads: bool) -> Sim {
        let net = Arc::new(Network::with_seed(ClockMode::Virtual, seed));
        let n = 3 + 2 * net.random_below(2) as usize;
        let clerks = (0..CLIENTS)
            .map(|c| Clerk {
                client_id: 1000 + c as u64,
                request_seq: 0,
                session: None,
                seq: 0,
                attempt: 0,
                current: None,
                leader: 0,
                completed: 0,
            })
            .collect();
        let peers = (0..n)
            .map(|_| Peer {
                core: None,
                storage: MemStorage::new(),
                disk: MemFs::new(),
                machine: None,
                incarnation: 0,
                persisting: false,
                writes: BTreeMap::new(),
                reads: BTreeMap::new(),
                confirmed: BTreeMap::new(),
            })
            .collect();
        let end = |name: String, to: String| {
            let e = net.make_end(&name);
            net.connect(&name, &to);
            net.enable(&name, true);
            e
        };
        let mut server_ends = vec![vec![None; n]; n];
        for (i, row) in server_ends.iter_mut().enumerate() {
            for (j, slot) in row.iter_mut().enumerate() {
                if i != j {
                    *slot = Some(end(format!("{i}->{j}"), j.to_string()));
                }
            }
        }
        let to_server = (0..CLIENTS)
            .map(|c| (0..n).map(|j| end(format!("c{c}->{j}"), j.to_string())).collect())
            .collect();
        let to_client = (0..n)
            .map(|i| (0..CLIENTS).map(|c| end(format!("{i}->c{c}"), format!("c{c}"))).collect())
            .collect();
        let lease = seed % 2 == 1;
        let read_mode = match (broken_reads, lease) {
            (true, _) => ReadMode::UnsafeLocal,
            (false, true) => ReadMode::Lease,
            (false, false) => ReadMode::ReadIndex,
        };
        let server = ServerConfig { read_mode, follower_reads: true, ..ServerConfig::default() };
        let world = World {
            n,
            lease,
            peers,
            server_ends,
            to_server,
            to_client,
            clerks,
            history: Vec::new(),
            next_ctx: 1,
            stop_clients: false,
            registered: 0,
            server,
            broken_reads,
        };
        let sim = Sim { net, world: Arc::new(Mutex::new(world)), n };
        for c in 0..CLIENTS {
            let (net, world) = (Arc::downgrade(&sim.net), Arc::clone(&sim.world));
            let service = Service::new("Clerk").method("Answer", move |a: Answer| {
                if let Some(net) = net.upgrade() {
                    on_answer(&net, &world, c, a);
                }
            });
            sim.net.add_server(&format!("c{c}"), Server::new().with_service(service));
        }
        for i in 0..n {
            sim.start(i);
        }
        for c in 0..CLIENTS {
            next_op(&sim.net, &sim.world, c);
        }
        sim
    }

    fn start(&self, i: usize) {
        let seed = self.net.random_below(u64::MAX);
        let incarnation = {
            let mut w = lock(&self.world);
            let lease = w.lease;
            let peer = &mut w.peers[i];
            peer.incarnation += 1;
            peer.persisting = false;
            peer.storage = peer.storage.crash_copy();
            peer.disk = peer.disk.crash_copy();
            let options = lsm::Options {
                fs: Arc::new(peer.disk.clone()),
                wal: false,
                ..lsm::Options::default()
            };
            let mut machine = testkit::kv::state_machine(|| lsm::Db::open("/kv", options).unwrap());
            let state = peer.storage.initial_state().unwrap();
            if let Some(s) = &state.snapshot
                && s.meta.last_included_index > machine.applied_index()
            {
                machine.restore(s.meta.last_included_index, &mut s.data.reader()).unwrap();
            }
            let mut config = config(i as u64, self.n as u64, lease);
            // The leader stamps entries with the virtual clock and draws session ids from a
            // generator seeded from the run's seed.
            let net = Arc::downgrade(&self.net);
            let clock = move || net.upgrade().map_or(0, |net| net.now().as_millis() as u64);
            let ids = Mutex::new(Rng::new(seed ^ 0x5e55_1015));
            let ids =
                move || ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next_u64();
            config.proposal_check = Some(kvserver::command::check_with(clock, SESSION_TTL_MS, ids));
            let core = RawNode::new(Config { seed, ..config }, state);
            peer.core = Some(core.unwrap());
            peer.machine = Some(machine);
            peer.incarnation
        };
        let (net, world) = (Arc::downgrade(&self.net), Arc::clone(&self.world));
        let (net_b, world_b) = (Arc::downgrade(&self.net), Arc::clone(&self.world));
        let raft = Service::new("Raft").method("Step", move |m: Message| {
            let Some(net) = net.upgrade() else { return };
            let mut w = lock(&world);
            let alive = w.peers[i].incarnation == incarnation;
            if let Some(core) = w.peers[i].core.as_mut().filter(|_| alive)
                && let Err(e) = core.step(m)
            {
                panic!("node {i} refused a correct node's message: {e}");
            }
            drop(w);
            pump(&net, &world, i);
        });
        let kv = Service::new("KV").method("Request", move |env: Envelope| {
            let Some(net) = net_b.upgrade() else { return };
            if lock(&world_b).peers[i].incarnation == incarnation {
                handle(&world_b, i, env);
                pump(&net, &world_b, i);
            }
        });
        self.net.add_server(&i.to_string(), Server::new().with_service(raft).with_service(kv));
        schedule_tick(&self.net, &self.world, i, incarnation);
    }

    fn crash(&self, i: usize) {
        self.net.delete_server(&i.to_string());
        let mut w = lock(&self.world);
        let peer = &mut w.peers[i];
        peer.incarnation += 1;
        peer.core = None;
        peer.machine = None; // Its database stops; what it synced survives in the disk copy.
        peer.writes.clear();
        peer.reads.clear();
        peer.confirmed.clear();
    }

    fn is_up(&self, i: usize) -> bool {
        lock(&self.world).peers[i].core.is_some()
    }

    fn set_link(&self, from: usize, to: usize, up: bool) {
        self.net.enable(&format!("{from}->{to}"), up);
    }

    fn heal(&self) {
        for i in 0..self.n {
            for j in 0..self.n {
                if i != j {
                    self.set_link(i, j, true);
                }
            }
        }
    }

    fn run_faults(&self, duration: Duration) {
        let n = self.n as u64;
        while self.net.now() < duration {
            match self.net.random_below(100) {
                0..=2 => {
                    for i in 0..self.n {
                        for j in 0..self.n {
                            if i != j {
                                self.set_link(i, j, self.net.random_below(3) > 0);
                            }
                        }
                    }
                }
                3..=6 => self.heal(),
                7 => {
                    let i = self.net.random_below(n) as usize;
                    if self.is_up(i) {
                        self.crash(i);
                    }
                }
                8..=10 => {
                    let i = self.net.random_below(n) as usize;
                    if !self.is_up(i) {
                        self.start(i);
                    }
                }
                11 => self.net.set_reliable(self.net.random_below(2) == 0),
                12 => self.net.set_long_reordering(self.net.random_below(4) == 0),
                _ => {}
            }
            self.net.sleep(Duration::from_millis(1 + self.net.random_below(50)));
        }
    }

    /// How many operations each clerk has completed.
    fn completed(&self) -> Vec<usize> {
        lock(&self.world).clerks.iter().map(|c| c.completed).collect()
    }

    /// Faults stop; the clerks go on for [`QUIET_TIME`], then every clerk must finish its
    /// operation in flight within 10 s. Returns how many operations each clerk completed in the
    /// quiet time.
    fn settle(&self) -> Vec<usize> {
        self.heal();
        self.net.set_reliable(true);
        self.net.set_long_reordering(false);
        for i in 0..self.n {
            if !self.is_up(i) {
                self.start(i);
            }
        }
        let before = self.completed();
        self.net.sleep(QUIET_TIME);
        let quiet = self.completed().iter().zip(&before).map(|(after, b)| after - b).collect();
        lock(&self.world).stop_clients = true;
        let healed = self.net.now();
        while self.net.now() - healed < Duration::from_secs(10) {
            self.net.sleep(Duration::from_millis(100));
            if lock(&self.world).clerks.iter().all(|c| c.current.is_none()) {
                return quiet;
            }
        }
        panic!("liveness: clerks still waiting 10 s after the faults stopped");
    }
}

impl Sim {
    /// Once every replica has applied the whole log, they all hold the same log clock and the
    /// same sessions: each evicted the same ones, at the same index. Returns a lower bound on
    /// how many sessions were evicted: the registrations the clerks saw answered, less the
    /// sessions still live. (A registration whose answer was lost and which the clerk sent
    /// again applies twice, so the log may hold more sessions than the clerks know of.)
    fn check_sessions_agree(&self) -> usize {
        let started = self.net.now();
        loop {
            self.net.sleep(Duration::from_millis(100));
            let w = lock(&self.world);
            let states: Vec<_> = w
                .peers
                .iter()
                .filter_map(|p| p.machine.as_ref())
                .map(|m| (m.applied_index(), m.session_stats().1, m.sessions()))
                .collect();
            let commit = w
                .peers
                .iter()
                .filter_map(|p| p.core.as_ref())
                .map(|c| c.status().commit_index)
                .max();
            let caught_up = states.iter().all(|s| Some(s.0) == commit);
            if caught_up {
                assert!(states.len() == self.n, "every replica runs after the faults");
                assert!(
                    states.windows(2).all(|w| w[0] == w[1]),
                    "replicas disagree on the log clock or the sessions: {states:?}"
                );
                return w.registered.saturating_sub(states[0].2.len());
            }
            assert!(
                self.net.now() - started < Duration::from_secs(10),
                "replicas did not catch up: {:?}",
                states.iter().map(|s| s.0).collect::<Vec<_>>()
            );
        }
    }
}

/// Starts a clerk's next operation (unless the sweep is winding down).
fn next_op(net: &Arc<Network>, world: &Shared, c: usize) {
    let mut w = lock(world);
    if w.stop_clients {
        return;
    }
    let key = bytes::Bytes::from(format!("k{}", net.random_below(3)));
    let clerk = &mut w.clerks[c];
    if clerk.session.is_none() || clerk.seq >= WRITES_PER_SESSION {
        // A new session; the old one is left to expire.
        clerk.request_seq += 1;
        let op = Op::Register { id: 0, ttl_ms: 0, retire: None };
        let request =
            Request { client_id: clerk.client_id, seq: clerk.request_seq, op, ordered: false };
        clerk.current = Some((request, nanos(net.now()), clerk.leader));
        drop(w);
        send(net, world, c);
        return;
    }
    let value = bytes::Bytes::from(format!("{c}.{}.{};", clerk.request_seq, clerk.seq));
    let op = match net.random_below(10) {
        0..=3 => Op::Append { key, value },
        4..=5 => Op::Put { key, value },
        6 => Op::Delete { key },
        _ => Op::Get { key },
    };
    // With the broken read path, reads go to any server (a follower answers from its own,
    // possibly stale, state).
    let target = if w.broken_reads && !op.is_write() {
        net.random_below(w.n as u64) as usize
    } else {
        w.clerks[c].leader
    };
    let clerk = &mut w.clerks[c];
    let request = if op.is_write() {
        clerk.seq += 1;
        let session = clerk.session.expect("registered above");
        Request { client_id: session, seq: clerk.seq, op, ordered: false }
    } else {
        clerk.request_seq += 1;
        Request { client_id: clerk.client_id, seq: clerk.request_seq, op, ordered: false }
    };
    clerk.current = Some((request, nanos(net.now()), target));
    drop(w);
    send(net, world, c);
}

/// Sends the clerk's operation (again) to its current target, with a retry timer.
fn send(net: &Arc<Network>, world: &Shared, c: usize) {
    let mut w = lock(world);
    let clerk = &mut w.clerks[c];
    let Some((request, _, target)) = clerk.current.clone() else { return };
    clerk.attempt += 1;
    let attempt = clerk.attempt;
    let env = Envelope { client: c, attempt, request };
    let _ = w.to_server[c][target].call_with("KV.Request", &env, |_: labrpc::Result<()>| {});
    drop(w);
    let (net2, world2) = (Arc::downgrade(net), Arc::clone(world));
    net.schedule(RETRY_AFTER, move || {
        let Some(net2) = net2.upgrade() else { return };
        let mut w = lock(&world2);
        let n = w.n;
        let clerk = &mut w.clerks[c];
        if clerk.attempt == attempt && clerk.current.is_some() {
            clerk.leader = (clerk.leader + 1) % n;
            if let Some(cur) = clerk.current.as_mut() {
                cur.2 = clerk.leader;
            }
            drop(w);
            send(&net2, &world2, c);
        }
    });
}

fn on_answer(net: &Arc<Network>, world: &Shared, c: usize, a: Answer) {
    let mut w = lock(world);
    let n = w.n;
    let now = nanos(net.now());
    let clerk = &mut w.clerks[c];
    if clerk.attempt != a.attempt || clerk.current.is_none() {
        return; // An answer to an attempt already given up on.
    }
    match a.reply {
        Reply::Refused(reason) => panic!("the simulation's requests are never refused: {reason}"),
        Reply::Done(outcome) => {
            let (request, call, _) = clerk.current.take().expect("checked");
            let (input, output) = match (&request.op, outcome) {
                (Op::Register { .. }, Outcome::Registered { id }) => {
                    (clerk.session, clerk.seq) = (Some(id), 0);
                    w.registered += 1;
                    drop(w);
                    return next_op(net, world, c);
                }
                (Op::Register { .. }, Outcome::NoSession) => {
                    drop(w);
                    return next_op(net, world, c); // An id already taken: ask again.
                }
                (op, Outcome::NoSession) => {
                    // The session expired while the write waited (a partition longer than the
                    // TTL): an earlier attempt may have applied, none will any more. Unknown,
                    // as a write given up on; the clerk starts a new session.
                    clerk.session = None;
                    let (input, _) = record(op, &Outcome::Written);
                    let output = KvOutput::Done;
                    let op = Operation { client: c as u64, input, output, call, ret: u64::MAX };
                    w.history.push(op);
                    drop(w);
                    return next_op(net, world, c);
                }
                (op, outcome) => record(op, &outcome),
            };
            clerk.completed += 1;
            w.history.push(Operation { client: c as u64, input, output, call, ret: now });
            drop(w);
            next_op(net, world, c);
        }
        Reply::WrongLeader { leader_hint } => {
            clerk.leader = match leader_hint {
                Some(h) if (h as usize) < n && h as usize != clerk.leader => h as usize,
                _ => (clerk.leader + 1) % n,
            };
            if let Some(cur) = clerk.current.as_mut() {
                cur.2 = clerk.leader;
            }
            drop(w);
            // Not at once: a cluster without a leader would be asked in a tight loop.
            let (net2, world2) = (Arc::downgrade(net), Arc::clone(world));
            net.schedule(Duration::from_millis(20), move || {
                if let Some(net2) = net2.upgrade() {
                    send(&net2, &world2, c);
                }
            });
        }
        Reply::Timeout => {}
    }
}

fn record(op: &Op, outcome: &Outcome) -> (KvInput, KvOutput) {
    match (op, outcome) {
        (Op::Get { key }, Outcome::Value(v)) => (
            KvInput::Get { key: text(key) },
            KvOutput::Value(v.as_deref().map(text).unwrap_or_default()),
        ),
        (Op::Put { key, value }, _) => {
            (KvInput::Put { key: text(key), value: text(value) }, KvOutput::Done)
        }
        (Op::Append { key, value }, _) => {
            (KvInput::Append { key: text(key), value: text(value) }, KvOutput::Done)
        }
        (Op::Delete { key }, _) => (KvInput::Delete { key: text(key) }, KvOutput::Done),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// The checker's budget per seed unless `CHECK_BUDGET_MS` says otherwise (a seed's history
/// is decided in milliseconds; this leaves room for slow machines).
const CHECK_BUDGET: Duration = Duration::from_secs(5);

/// What one seed did.
struct SeedRun {
    /// Operations in its history.
    ops: usize,
    /// Operations completed while the faults ran.
    during_faults: usize,
    /// The time the check of its history took (real time).
    took: Duration,
    /// The network's trace hash.
    trace: u64,
    /// Sessions evicted (a lower bound).
    evicted: usize,
    /// The fewest operations a clerk completed in the quiet time after the faults.
    quiet_min: usize,
}

/// Runs one seed and checks its history, or says why the seed failed: a clerk that completed
/// fewer than [`MIN_QUIET_OPS`] operations once the faults stopped, or a history not found
/// linearizable (a violation, with the checker's explanation, or an inconclusive check), with
/// where it was saved.
fn run_seed(seed: u64, broken_reads: bool) -> Result<SeedRun, String> {
    let sim = simulate(seed, broken_reads);
    if let Some((c, n)) = sim.quiet.iter().enumerate().find(|(_, n)| **n < MIN_QUIET_OPS) {
        return Err(format!(
            "seed {seed}: liveness: clerk {c} completed {n} operations in the {QUIET_TIME:?} \
             after the faults stopped (at least {MIN_QUIET_OPS}; all clerks: {:?})",
            sim.quiet
        ));
    }
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("histories");
    let name = format!("kv-simulation-seed-{seed}");
    let check = TestCheck::run(&name, &sim.history, CHECK_BUDGET, &dir);
    check.verdict().map_err(|why| format!("seed {seed}: {why}"))?;
    Ok(SeedRun {
        ops: sim.history.len(),
        during_faults: sim.during_faults,
        took: check.took,
        trace: sim.trace,
        evicted: sim.evicted,
        quiet_min: sim.quiet.iter().copied().min().unwrap_or(0),
    })
}

/// One seed run on the simulated clock. Nothing of it depends on real time, unlike the check
/// of the history.
struct Simulated {
    history: Vec<Operation<KvInput, KvOutput>>,
    /// The network's trace hash.
    trace: u64,
    /// Sessions evicted (a lower bound).
    evicted: usize,
    /// Operations completed while the faults ran.
    during_faults: usize,
    /// Operations each clerk completed in the quiet time after the faults.
    quiet: Vec<usize>,
}

/// Runs one seed on the simulated clock.
fn simulate(seed: u64, broken_reads: bool) -> Simulated {
    let sim = Sim::new(seed, broken_reads);
    sim.run_faults(FAULT_TIME);
    let during_faults = sim.completed().iter().sum();
    let quiet = sim.settle();
    let evicted = sim.check_sessions_agree();
    let trace = sim.net.trace_hash();
    let history = {
        let mut w = lock(&sim.world);
        w.server_ends.clear();
        w.to_server.clear();
        w.to_client.clear();
        w.peers.iter_mut().for_each(|p| {
            p.core = None;
            p.machine = None;
        });
        std::mem::take(&mut w.history)
    };
    Simulated { history, trace, evicted, during_faults, quiet }
}

fn seeds_to_run() -> u64 {
    std::env::var("TEST_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(100)
}

#[test]
fn seeded_kv_simulation_sweep() {
    if std::env::var_os(labrpc::SEED_ENV).is_some() {
        let seed = labrpc::seed_from_env();
        let run = run_seed(seed, false).unwrap_or_else(|e| panic!("{e}"));
        println!(
            "seed {seed}: trace {:016x}, {} operations ({} while the faults ran), \
             Linearizable, in {:.1?}, at least {} sessions evicted",
            run.trace, run.ops, run.during_faults, run.took, run.evicted
        );
        return;
    }
    let base = labrpc::seed_from_env();
    let seeds = seeds_to_run();
    let (mut ops, mut checking, mut slowest, mut evicted) = (0, Duration::ZERO, Duration::ZERO, 0);
    let mut per_seed = Vec::new();
    let mut quiet_min = usize::MAX;
    for i in 0..seeds {
        let seed = base.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        // Every seed must get a conclusive verdict: an inconclusive check fails the sweep.
        let run = run_seed(seed, false).unwrap_or_else(|e| panic!("{e}"));
        ops += run.ops;
        checking += run.took;
        slowest = slowest.max(run.took);
        evicted += run.evicted;
        per_seed.push((run.during_faults, seed));
        quiet_min = quiet_min.min(run.quiet_min);
    }
    per_seed.sort_unstable();
    let at = |q: usize| per_seed[(per_seed.len() - 1) * q / 100].0;
    println!(
        "history check: {seeds} seeds from base {base}: {ops} operations, every seed \
         Linearizable, in {checking:.1?} (slowest seed {slowest:.1?}); at least {evicted} sessions \
         evicted (the same on every replica)"
    );
    println!(
        "operations while the faults ran, per seed: fewest {:?} (operations, seed), 10th \
         percentile {}, median {}, most {}; in the {QUIET_TIME:?} after them every clerk \
         completed at least {quiet_min} (at least {MIN_QUIET_OPS} required)",
        &per_seed[..per_seed.len().min(3)],
        at(10),
        at(50),
        at(100)
    );
    assert!(
        evicted > seeds as usize,
        "only {evicted} sessions were seen to expire in {seeds} seeds (a lower bound)"
    );
    assert!(ops > seeds as usize * 10, "only {ops} operations in {seeds} seeds");
}

/// A seed whose faults left the cluster without a quorum for most of the run (two of three
/// servers crashed in its first 250 ms, back only after 6.8 s): the clerks completed 2
/// operations in all. Every clerk must still make progress once the faults stop.
#[test]
fn a_seed_without_a_quorum_for_most_of_the_run_still_makes_progress() {
    let seed = 17_179_992_461_225_689_089;
    let run = run_seed(seed, false).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "seed {seed}: {} operations while the faults ran, {} in all",
        run.during_faults, run.ops
    );
    assert!(run.ops >= CLIENTS * MIN_QUIET_OPS, "{} operations", run.ops);
}

/// The check of the check: with the server's read path broken (`ReadMode::UnsafeLocal`, built
/// for tests only: every server answers reads from its own state, no ReadIndex), partitions
/// let stale reads through, and the sweep's checker catches them.
#[test]
fn a_broken_read_path_fails_the_sweep() {
    let base = labrpc::seed_from_env();
    let caught = (0..20u64)
        .map(|i| base.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .find_map(|seed| run_seed(seed, true).err());
    let why = caught.expect("20 seeds of stale reads and the checker found nothing");
    let first = why.lines().next().unwrap_or_default();
    println!("history check: broken read path: {first}");
    assert!(why.contains("not linearizable") && why.contains("Get"), "{why}");
    assert!(why.contains("history saved to"), "{why}");
}

/// The same seed gives the same run: the same trace of every message and timer, the same
/// history (every operation, its answer and its simulated times) and the same evictions. Only
/// the simulation is compared: the check of its history runs on real time (its budget), so
/// what it returns is no part of a seed's replay; the sweep checks the histories.
#[test]
fn a_seed_replays_exactly() {
    let seed = labrpc::seed_from_env();
    let first = simulate(seed, false);
    let again = simulate(seed, false);
    println!(
        "replay: seed {seed}: trace {:016x}, {} operations, {} sessions evicted (twice)",
        first.trace,
        first.history.len(),
        first.evicted
    );
    let ops = first.history.len();
    assert!(ops > 10, "only {ops} operations: nothing to compare");
    assert_eq!(first.trace, again.trace, "the trace differs");
    assert_eq!(first.evicted, again.evicted, "the evictions differ");
    assert_eq!(first.quiet, again.quiet, "the operations after the faults differ");
    assert!(first.history == again.history, "the histories differ");
    let other = simulate(seed.wrapping_add(1), false).trace;
    assert_ne!(first.trace, other, "another seed, the same trace");
}
