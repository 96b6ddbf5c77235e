//! Seeded simulation of whole Raft clusters in virtual time.
//!
//! Every node is a [`RawNode`] driven on one thread by labrpc's virtual clock: ticks, message
//! deliveries and storage writes are events in one queue, and every random choice (faults,
//! delays, which node to crash, what to propose) comes from the network's seeded generator. A
//! seed therefore replays exactly:
//! `LABRPC_SEED=<seed> cargo test -p raftkv-raft --test simulation`.
//!
//! Faults: partitions (including one-way links), crashes that lose whatever was not yet
//! persisted (a `Ready` is made durable only after a random "fsync" delay), restarts from what
//! was persisted, message loss, delay and long reordering, and snapshots taken by the service.
//! After every step five checkers run, one per property of the paper (§5.4, Figure 3):
//! election safety, log matching, leader completeness, state machine safety, and commit
//! indexes that never move back. Election safety also sees every node's role after every call
//! into its core, so a leader that lasts one step is seen. Then a liveness phase: faults stop,
//! and a new command must commit within 10 s of virtual time. Every seed must commit at least
//! 50 commands under faults, so a sweep that checks nothing fails.
//!
//! `TEST_SEEDS=<n>` (set by `cargo xtask test-all --seeds N`) chooses how many seeds the sweep
//! runs; the default, 500, is what `test-all` runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use labrpc::{ClientEnd, ClockMode, Network, Server, Service};
use raft::planted::PlantedBug;
use raft::{
    Apply, Config, Entry, MemStorage, Message, NodeId, PersistedState, RawNode, Role, Storage,
};

const TICK: Duration = Duration::from_millis(10);
const FAULT_TIME: Duration = Duration::from_secs(60);
const LIVENESS_BOUND: Duration = Duration::from_secs(10);
/// Each seed must commit at least this many proposed commands under faults: proof that the
/// checkers had something to check. (About 680 are proposed; the fewest committed in a seed
/// over three 500-seed sweeps was 232.)
const MIN_COMMITTED_UNDER_FAULTS: usize = 50;
/// On average over a sweep, each seed commits at least this many entries (about 490 do).
const MIN_COMMITTED_PER_SEED: u64 = 200;
/// The service snapshots every this many applied entries.
const SNAPSHOT_EVERY: u64 = 25;

/// One node's volatile world: its core (if up), its storage, its service state.
struct Peer {
    core: Option<RawNode>,
    storage: MemStorage,
    /// Bumped at each crash, so events scheduled for an old instance do nothing.
    incarnation: u64,
    /// A `Ready` is being made durable; the next waits for it.
    persisting: bool,
    /// The service's state: the commands applied so far, in order (index -> command).
    applied: Vec<Bytes>,
    applied_index: u64,
    /// For the monotonicity checker: the highest commit index this incarnation reported.
    last_commit: u64,
}

/// Everything the simulation and its checkers share.
struct World {
    n: usize,
    peers: Vec<Peer>,
    ends: Vec<Vec<Option<ClientEnd>>>,
    /// Checker state.
    leaders_by_term: BTreeMap<u64, NodeId>,
    /// index -> (term, command, the highest term in the cluster when it was first applied).
    committed: BTreeMap<u64, (u64, Bytes, u64)>,
    proposals: u64,
    violations: Vec<String>,
    /// Leaders use leases for reads (half the seeds) rather than a heartbeat round each.
    lease_reads: bool,
    /// Reads asked for and not yet confirmed: ctx -> the highest commit index anywhere in
    /// the cluster when the read was asked. A confirmed read index below it is a stale read.
    reads: BTreeMap<u64, u64>,
    reads_asked: u64,
    reads_confirmed: u64,
    /// Test only: the bug planted in every node's core, to show the checkers catch it.
    bug: Option<PlantedBug>,
    /// A targeted fault: a node that has just sent a granted vote crashes at once and restarts.
    crash_after_vote: bool,
    /// Targeted faults: a leader's outgoing links are cut (so others elect a new one), then
    /// restored except those from newer leaders to it (so it hears of no newer term directly).
    zombie_leaders: bool,
}

type Shared = Arc<Mutex<World>>;

impl World {
    /// `n` peers, none started yet, with empty storage.
    fn new(n: usize) -> World {
        let peers = (0..n)
            .map(|_| Peer {
                core: None,
                storage: MemStorage::new(),
                incarnation: 0,
                persisting: false,
                applied: Vec::new(),
                applied_index: 0,
                last_commit: 0,
            })
            .collect();
        World {
            n,
            peers,
            ends: vec![vec![None; n]; n],
            leaders_by_term: BTreeMap::new(),
            committed: BTreeMap::new(),
            proposals: 0,
            violations: Vec::new(),
            lease_reads: false,
            reads: BTreeMap::new(),
            reads_asked: 0,
            reads_confirmed: 0,
            bug: None,
            crash_after_vote: false,
            zombie_leaders: false,
        }
    }
}

fn lock(w: &Shared) -> MutexGuard<'_, World> {
    w.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sim_config(id: u64, n: u64, lease_reads: bool) -> Config {
    let mut c = Config::new(id, (0..n).collect());
    c.lease_reads = lease_reads;
    c.election_ticks = 15;
    c.heartbeat_ticks = 3;
    c.max_inflight_appends = 8;
    c.snapshot_chunk_bytes = 256;
    c
}

/// Drives one node: takes its `Ready` and schedules the "fsync" that makes it durable.
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
    // What may go before the write goes now (a leader replicating while it writes, thesis
    // §10.2.1); a crash before the "fsync" completes then loses the leader's own copy only.
    let (early, late): (Vec<_>, Vec<_>) = std::mem::take(&mut ready.messages)
        .into_iter()
        .partition(raft::Message::may_precede_persist);
    ready.messages = late;
    for m in early {
        if let Some(end) = &w.ends[id][m.to as usize] {
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
            check_read(&mut w, id, read.ctx, read.index);
        }
    }
    drop(w);
    let fsync = Duration::from_micros(net.random_below(3000));
    // Queued events hold the network weakly, so dropping the simulation drops the network
    // (which prints the seed if a checker panicked).
    let (net2, world2) = (Arc::downgrade(net), Arc::clone(world));
    net.schedule(fsync, move || {
        let Some(net2) = net2.upgrade() else { return };
        let mut w = lock(&world2);
        if w.peers[id].incarnation != incarnation {
            return; // Crashed before the write completed: it never happened.
        }
        let peer = &mut w.peers[id];
        peer.storage.persist(ready.hard_state, ready.snapshot.as_ref(), &ready.entries).unwrap();
        let voted = ready.messages.iter().any(|m| {
            matches!(
                m.body,
                raft::Body::RequestVoteResponse { pre_vote: false, vote_granted: true }
            )
        });
        for m in ready.messages {
            let to = m.to as usize;
            if let Some(end) = &w.ends[id][to] {
                let _ = end.call_with("Raft.Step", &m, |_: labrpc::Result<()>| {});
            }
        }
        for a in ready.to_apply {
            apply(&mut w, id, a);
        }
        for read in ready.read_states {
            check_read(&mut w, id, read.ctx, read.index);
        }
        if voted && w.crash_after_vote {
            // The targeted fault: crash right after the vote went out, then restart.
            let n = w.n;
            drop(w);
            let sim = Sim { net: net2, world: world2, n };
            sim.crash(id);
            sim.start(id);
            return;
        }
        let peer = &mut w.peers[id];
        peer.persisting = false;
        if let Some(core) = peer.core.as_mut() {
            core.advance();
        }
        drop(w);
        pump(&net2, &world2, id);
    });
}

/// The service: applies one committed entry or snapshot, and snapshots now and then.
fn apply(w: &mut World, id: usize, a: Apply) {
    let max_term = w
        .peers
        .iter()
        .filter_map(|p| p.core.as_ref())
        .map(RawNode::current_term)
        .max()
        .unwrap_or(0);
    match a {
        Apply::Entry(e) => {
            let peer = &mut w.peers[id];
            if e.index != peer.applied_index + 1 {
                w.violations
                    .push(format!("node {id} applied {} after {}", e.index, peer.applied_index));
                return;
            }
            peer.applied.push(e.data.clone());
            peer.applied_index = e.index;
            check_state_machine_safety(w, id, &e, max_term);
            let peer = &mut w.peers[id];
            if e.index.is_multiple_of(SNAPSHOT_EVERY)
                && let Some(core) = peer.core.as_mut()
            {
                let data = encode_commands(&peer.applied);
                core.snapshot(e.index, data).unwrap();
            }
        }
        Apply::Snapshot(s) => {
            let peer = &mut w.peers[id];
            peer.applied = decode_commands(&s.data.to_bytes().unwrap());
            peer.applied_index = s.meta.last_included_index;
            if peer.applied.len() as u64 != peer.applied_index {
                w.violations.push(format!(
                    "node {id}: snapshot at {} holds {} commands",
                    peer.applied_index,
                    peer.applied.len()
                ));
            }
        }
    }
}

fn encode_commands(commands: &[Bytes]) -> Bytes {
    let mut out = Vec::new();
    for c in commands {
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
        out.extend_from_slice(c);
    }
    Bytes::from(out)
}

fn decode_commands(mut data: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        out.push(Bytes::copy_from_slice(&data[4..4 + len]));
        data = &data[4 + len..];
    }
    out
}

// ----- Checkers, one per property --------------------------------------------------------------

/// State machine safety (§5.4.3): no two nodes apply different commands at one index.
fn check_state_machine_safety(w: &mut World, id: usize, e: &Entry, max_term: u64) {
    match w.committed.get(&e.index) {
        Some((term, data, _)) if *term != e.term || *data != e.data => {
            w.violations.push(format!(
                "state machine safety: node {id} applied ({}, term {}) where another applied \
                 term {term}",
                e.index, e.term
            ));
        }
        Some(_) => {}
        None => {
            w.committed.insert(e.index, (e.term, e.data.clone(), max_term));
        }
    }
}

/// Election safety (§5.2): at most one leader per term, ever.
fn check_election_safety(w: &mut World) {
    for id in 0..w.n {
        observe_role(w, id);
    }
}

/// Records node `id`'s role for the election safety checker. Called (through [`observe`]) after
/// every call into a core that can change its role (`tick`, `step`, `propose`, `read_index`),
/// so a leader that lasts a single step between two check points is seen too.
fn observe_role(w: &mut World, id: usize) {
    let Some(core) = &w.peers[id].core else { return };
    if core.role() != Role::Leader {
        return;
    }
    let term = core.current_term();
    match w.leaders_by_term.insert(term, id as NodeId) {
        Some(other) if other != id as NodeId => {
            w.violations
                .push(format!("election safety: nodes {other} and {id} both led term {term}"));
        }
        _ => {}
    }
}

/// After a call into node `id`'s core: records its role, and fails at once on a violation, at
/// the step that caused it (before a later message makes another node refuse to go on).
fn observe(w: &mut World, id: usize) {
    observe_role(w, id);
    if let Some(v) = w.violations.first() {
        panic!("{v}");
    }
}

/// Log matching (§5.3): two logs with an entry of the same index and term agree on every entry
/// up to it. Checked on what each node has persisted.
fn check_log_matching(w: &mut World, logs: &[PersistedState]) {
    for a in 0..logs.len() {
        for b in a + 1..logs.len() {
            let (la, lb) = (&logs[a].entries, &logs[b].entries);
            let by_index: BTreeMap<u64, &Entry> = lb.iter().map(|e| (e.index, e)).collect();
            // Find the highest common (index, term); every entry below it held by both must match.
            let Some(top) =
                la.iter().rev().find(|e| by_index.get(&e.index).is_some_and(|o| o.term == e.term))
            else {
                continue;
            };
            for e in la.iter().filter(|e| e.index <= top.index) {
                if let Some(o) = by_index.get(&e.index)
                    && (o.term != e.term || o.data != e.data)
                {
                    w.violations.push(format!(
                        "log matching: nodes {a} and {b} agree at ({}, {}) but differ at {}",
                        top.index, top.term, e.index
                    ));
                    return;
                }
            }
        }
    }
}

/// Leader completeness (§5.4): a leader of a term that began after an entry was committed holds
/// that entry (in its log, or in its snapshot).
fn check_leader_completeness(w: &mut World, logs: &[PersistedState]) {
    for (id, log) in logs.iter().enumerate().take(w.n) {
        let Some(core) = &w.peers[id].core else { continue };
        if core.role() != Role::Leader {
            continue;
        }
        let term = core.current_term();
        let status = core.status();
        for (&index, (entry_term, _, committed_by)) in &w.committed {
            if term <= *committed_by || index <= status.snapshot_index {
                continue;
            }
            let held = core.term_at(index);
            if held != Some(*entry_term) {
                let persisted = log.entries.iter().any(|e| e.index == index);
                w.violations.push(format!(
                    "leader completeness: leader {id} of term {term} lacks committed entry {index} \
                     (term {entry_term}); holds {held:?}, persisted: {persisted}"
                ));
                return;
            }
        }
    }
}

/// Commit indexes never move back within one incarnation of a node.
fn check_commit_monotonic(w: &mut World) {
    for id in 0..w.n {
        let peer = &mut w.peers[id];
        let Some(core) = &peer.core else { continue };
        let commit = core.status().commit_index;
        if commit < peer.last_commit {
            let last = peer.last_commit;
            w.violations
                .push(format!("commit index of node {id} moved back from {last} to {commit}"));
        }
        w.peers[id].last_commit = commit;
    }
}

/// Linearizable reads: a confirmed read index covers every entry committed anywhere before the
/// read was asked.
fn check_read(w: &mut World, id: usize, ctx: u64, index: u64) {
    let Some(required) = w.reads.remove(&ctx) else { return };
    w.reads_confirmed += 1;
    if index < required {
        w.violations.push(format!(
            "stale read: node {id} confirmed read {ctx} at index {index}, but {required} was \
             already committed when it was asked"
        ));
    }
}

fn check_all(world: &Shared) {
    let mut w = lock(world);
    let logs: Vec<PersistedState> =
        w.peers.iter().map(|p| p.storage.initial_state().unwrap()).collect();
    check_election_safety(&mut w);
    check_log_matching(&mut w, &logs);
    check_leader_completeness(&mut w, &logs);
    check_commit_monotonic(&mut w);
    if let Some(v) = w.violations.first() {
        panic!("{v}");
    }
}

// ----- The simulated cluster ------------------------------------------------------------------

/// Ticks node `i` every `TICK` for as long as this incarnation lives.
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
                observe(&mut w, i);
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
    fn new(seed: u64) -> Sim {
        Sim::with_bug(seed, None, Targeted::None)
    }

    /// A cluster whose cores all carry `bug`, under the random faults plus `targeted` ones.
    fn with_bug(seed: u64, bug: Option<PlantedBug>, targeted: Targeted) -> Sim {
        let net = Arc::new(Network::with_seed(ClockMode::Virtual, seed));
        let n = 3 + 2 * net.random_below(2) as usize; // 3 or 5 nodes.
        let lease_reads = seed % 2 == 1;
        let crash_after_vote = targeted == Targeted::CrashAfterVote;
        let zombie_leaders = targeted == Targeted::ZombieLeaders;
        let world = World { lease_reads, bug, crash_after_vote, zombie_leaders, ..World::new(n) };
        let world = Arc::new(Mutex::new(world));
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    let name = format!("{i}->{j}");
                    let end = net.make_end(&name);
                    net.connect(&name, &j.to_string());
                    lock(&world).ends[i][j] = Some(end);
                }
            }
        }
        let sim = Sim { net, world, n };
        for i in 0..n {
            sim.start(i);
        }
        sim
    }

    /// Starts node `i` from what it persisted: a new core, a server, and its ticker.
    fn start(&self, i: usize) {
        let seed = self.net.random_below(u64::MAX);
        let (incarnation, state) = {
            let mut w = lock(&self.world);
            let peer = &mut w.peers[i];
            peer.incarnation += 1;
            peer.persisting = false;
            peer.last_commit = 0;
            let state = peer.storage.initial_state().unwrap();
            // The service restarts from the persisted snapshot.
            match &state.snapshot {
                Some(s) => {
                    peer.applied = decode_commands(&s.data.to_bytes().unwrap());
                    peer.applied_index = s.meta.last_included_index;
                }
                None => {
                    peer.applied.clear();
                    peer.applied_index = 0;
                }
            }
            (peer.incarnation, state)
        };
        let (lease, bug) = {
            let w = lock(&self.world);
            (w.lease_reads, w.bug)
        };
        let config = sim_config(i as u64, self.n as u64, lease);
        let mut core = RawNode::new(Config { seed, ..config }, state).unwrap();
        if let Some(bug) = bug {
            core.plant_bug(bug);
        }
        lock(&self.world).peers[i].core = Some(core);
        let (net, world) = (Arc::downgrade(&self.net), Arc::clone(&self.world));
        let service = Service::new("Raft").method("Step", move |m: Message| {
            let Some(net) = net.upgrade() else { return };
            let mut w = lock(&world);
            let alive = w.peers[i].incarnation == incarnation;
            if let Some(core) = w.peers[i].core.as_mut().filter(|_| alive)
                && let Err(e) = core.step(m)
            {
                panic!("node {i} refused a correct node's message: {e}");
            }
            observe(&mut w, i);
            drop(w);
            pump(&net, &world, i);
        });
        self.net.add_server(&i.to_string(), Server::new().with_service(service));
        schedule_tick(&self.net, &self.world, i, incarnation);
    }

    /// Crashes node `i`: what it had not persisted is lost.
    fn crash(&self, i: usize) {
        self.net.delete_server(&i.to_string());
        let mut w = lock(&self.world);
        let peer = &mut w.peers[i];
        peer.incarnation += 1;
        peer.core = None;
        peer.storage = peer.storage.crash_copy();
    }

    fn is_up(&self, i: usize) -> bool {
        lock(&self.world).peers[i].core.is_some()
    }

    /// Proposes a new command on every node that believes it leads; returns the command.
    fn propose(&self) -> Bytes {
        let mut w = lock(&self.world);
        w.proposals += 1;
        let cmd = Bytes::from(format!("cmd-{}", w.proposals));
        let mut proposed = Vec::new();
        for i in 0..w.n {
            if let Some(core) = w.peers[i].core.as_mut()
                && core.propose(cmd.clone()).is_ok()
            {
                proposed.push(i);
            }
            observe(&mut w, i);
        }
        drop(w);
        for i in proposed {
            pump(&self.net, &self.world, i);
        }
        cmd
    }

    /// Asks every node for a linearizable read: leaders confirm their own, followers forward
    /// theirs to the leader they know.
    fn read(&self) {
        let mut w = lock(&self.world);
        let applied = w.committed.keys().next_back().copied().unwrap_or(0);
        let committed = w.peers.iter().filter_map(|p| p.core.as_ref());
        let required = committed.map(|c| c.status().commit_index).max().unwrap_or(0).max(applied);
        let mut asked = Vec::new();
        for i in 0..w.n {
            w.reads_asked += 1;
            let ctx = w.reads_asked;
            if let Some(core) = w.peers[i].core.as_mut()
                && core.read_index(ctx).is_ok()
            {
                w.reads.insert(ctx, required);
                asked.push(i);
            }
            observe(&mut w, i);
        }
        drop(w);
        for i in asked {
            pump(&self.net, &self.world, i);
        }
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

    fn zombie_leaders(&self) -> bool {
        lock(&self.world).zombie_leaders
    }

    /// The nodes that believe they lead, with their terms, newest term first.
    fn leaders(&self) -> Vec<(u64, usize)> {
        let w = lock(&self.world);
        let mut leaders: Vec<(u64, usize)> = (0..self.n)
            .filter_map(|i| w.peers[i].core.as_ref().map(|c| (c, i)))
            .filter(|(c, _)| c.role() == Role::Leader)
            .map(|(c, i)| (c.current_term(), i))
            .collect();
        leaders.sort_unstable_by(|a, b| b.cmp(a));
        leaders
    }

    /// Targeted fault: nobody hears from the newest leader until the others have elected a
    /// new one; then every link comes back up except the new leader's to the old, which hears
    /// of the newer term only through the answers of the others (and steps down on the first,
    /// if it checks their terms). Gives up if the old leader steps down first.
    fn depose_quietly(&self) {
        let Some(&(term, old)) = self.leaders().first() else { return };
        for j in (0..self.n).filter(|&j| j != old) {
            self.set_link(old, j, false);
        }
        let cut = self.net.now();
        while self.net.now() - cut < Duration::from_secs(1) {
            self.net.sleep(Duration::from_millis(5));
            let leaders = self.leaders();
            if !leaders.contains(&(term, old)) {
                break; // It stepped down (CheckQuorum).
            }
            if let Some(&(_, new)) = leaders.iter().find(|&&(t, _)| t > term) {
                self.heal();
                self.set_link(new, old, false);
                return;
            }
        }
        self.heal();
    }

    /// The fault phase: random faults for `duration` of virtual time, checking after every step.
    fn run_faults(&self, duration: Duration) {
        let n = self.n as u64;
        while self.net.now() < duration {
            match self.net.random_below(100) {
                0..=2 => {
                    // A random partition: each link up or down, asymmetric ones included.
                    for i in 0..self.n {
                        for j in 0..self.n {
                            if i != j {
                                self.set_link(i, j, self.net.random_below(3) > 0);
                            }
                        }
                    }
                }
                3..=5 => self.heal(),
                6 => {
                    let i = self.net.random_below(n) as usize;
                    if self.is_up(i) {
                        self.crash(i);
                    }
                }
                7..=9 => {
                    let i = self.net.random_below(n) as usize;
                    if !self.is_up(i) {
                        self.start(i);
                    }
                }
                10 => self.net.set_reliable(self.net.random_below(2) == 0),
                11 => self.net.set_long_reordering(self.net.random_below(4) == 0),
                12..=40 => {
                    self.propose();
                }
                41..=50 => self.read(),
                51..=53 if self.zombie_leaders() => self.depose_quietly(),
                _ => {}
            }
            let step = Duration::from_millis(1 + self.net.random_below(50));
            self.net.sleep(step);
            check_all(&self.world);
        }
    }

    /// The liveness phase: no more faults; a new command must commit within the bound.
    fn check_liveness(&self) {
        self.heal();
        self.net.set_reliable(true);
        self.net.set_long_reordering(false);
        for i in 0..self.n {
            if !self.is_up(i) {
                self.start(i);
            }
        }
        let healed = self.net.now();
        let mut fresh = BTreeSet::new();
        while self.net.now() - healed < LIVENESS_BOUND {
            fresh.insert(self.propose());
            self.net.sleep(Duration::from_millis(200));
            check_all(&self.world);
            let w = lock(&self.world);
            if w.committed.values().any(|(_, data, _)| fresh.contains(data)) {
                return;
            }
        }
        panic!("liveness: no new command committed within {LIVENESS_BOUND:?} of healing");
    }

    /// Proposed commands committed (applied by some node) so far; leaders' no-ops not counted.
    fn commands_committed(&self) -> usize {
        let w = lock(&self.world);
        w.committed.values().filter(|(_, data, _)| data.starts_with(b"cmd-")).count()
    }
}

/// What one seed did; the same seed gives the same outcome.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// The hash of the network's trace.
    trace: u64,
    /// Entries committed in the whole run.
    committed: usize,
    /// Proposed commands committed during the fault phase.
    committed_under_faults: usize,
    /// Terms that had a leader.
    terms: u64,
    /// Linearizable reads confirmed and checked.
    reads: u64,
}

/// Faults aimed at one kind of bug, added to the random ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Targeted {
    None,
    /// A node that has just sent a granted vote crashes at once and restarts.
    CrashAfterVote,
    /// See [`World::zombie_leaders`].
    ZombieLeaders,
}

/// Breaks the cycle between the network's servers (whose handlers hold the world) and the world
/// (whose ends hold the network) when a run ends, by a checker's panic too.
struct BreakCycle(Shared);

impl Drop for BreakCycle {
    fn drop(&mut self) {
        let mut w = lock(&self.0);
        w.ends.clear();
        w.peers.iter_mut().for_each(|p| p.core = None);
    }
}

fn run_seed(seed: u64, fault_time: Duration) -> Outcome {
    run_sim(Sim::new(seed), fault_time)
}

fn run_sim(sim: Sim, fault_time: Duration) -> Outcome {
    let _break_cycle = BreakCycle(Arc::clone(&sim.world));
    sim.run_faults(fault_time);
    let committed_under_faults = sim.commands_committed();
    sim.check_liveness();
    // Roles are observed on every step: a violation after the last check point counts too.
    check_all(&sim.world);
    let w = lock(&sim.world);
    Outcome {
        trace: sim.net.trace_hash(),
        committed: w.committed.len(),
        committed_under_faults,
        terms: w.leaders_by_term.len() as u64,
        reads: w.reads_confirmed,
    }
}

fn seeds_to_run() -> u64 {
    std::env::var("TEST_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(500)
}

/// The sweep: every seed runs the fault phase for 60 s of virtual time, then the liveness phase.
#[test]
fn seeded_simulation_sweep() {
    if std::env::var_os(labrpc::SEED_ENV).is_some() {
        let seed = labrpc::seed_from_env();
        let o = run_seed(seed, FAULT_TIME);
        println!(
            "seed {seed}: trace {:016x}, {} entries committed ({} under faults) over {} terms, \
             {} reads confirmed",
            o.trace, o.committed, o.committed_under_faults, o.terms, o.reads
        );
        return;
    }
    let base = labrpc::seed_from_env();
    let seeds = seeds_to_run();
    let started = std::time::Instant::now();
    let (mut committed_total, mut reads_total, mut idle_seeds) = (0, 0, Vec::new());
    let mut fewest_under_faults = usize::MAX;
    for i in 0..seeds {
        let seed = base.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let o = run_seed(seed, FAULT_TIME);
        committed_total += o.committed;
        fewest_under_faults = fewest_under_faults.min(o.committed_under_faults);
        reads_total += o.reads;
        if o.committed_under_faults < MIN_COMMITTED_UNDER_FAULTS {
            idle_seeds.push((seed, o.committed_under_faults));
        }
    }
    assert!(reads_total > seeds, "only {reads_total} reads confirmed in {seeds} seeds");
    // A sweep whose clusters commit (almost) nothing under faults checks (almost) nothing.
    assert!(
        idle_seeds.is_empty(),
        "seeds that committed fewer than {MIN_COMMITTED_UNDER_FAULTS} commands in the fault \
         phase (seed, commands): {idle_seeds:?}"
    );
    assert!(
        committed_total as u64 >= seeds * MIN_COMMITTED_PER_SEED,
        "only {committed_total} entries committed in {seeds} seeds"
    );
    let wall = started.elapsed().as_secs_f64();
    let virtual_secs = seeds as f64 * (FAULT_TIME.as_secs_f64() + 2.0);
    println!(
        "{seeds} seeds from base {base}: {committed_total} entries committed, \
         {reads_total} linearizable reads checked, at least {fewest_under_faults} commands \
         committed under faults in every seed; \
         {:.0} virtual seconds per wall second",
        virtual_secs / wall
    );
}

/// The same seed gives the same run: the trace hash of a seed is the same twice.
#[test]
fn a_seed_replays_exactly() {
    let seed = labrpc::seed_from_env();
    let first = run_seed(seed, Duration::from_secs(20));
    let second = run_seed(seed, Duration::from_secs(20));
    assert_eq!(first, second, "seed {seed} did not replay");
    let other = run_seed(seed.wrapping_add(1), Duration::from_secs(20));
    assert_ne!(first.trace, other.trace, "seeds {seed} and {} ran alike", seed.wrapping_add(1));
}

// ----- The checkers can fail ----------------------------------------------------------------

/// A single-voter node that has elected itself (term 1).
fn lone_leader(id: u64) -> RawNode {
    let mut core =
        RawNode::new(Config { seed: id, ..Config::new(id, vec![id]) }, PersistedState::default())
            .unwrap();
    while core.role() != Role::Leader {
        core.tick();
    }
    core
}

fn entry(index: u64, term: u64, data: &'static str) -> Entry {
    Entry { term, index, data: Bytes::from_static(data.as_bytes()) }
}

#[test]
fn checker_election_safety_catches_two_leaders_in_a_term() {
    let mut w = World::new(2);
    w.peers[0].core = Some(lone_leader(0));
    w.peers[1].core = Some(lone_leader(1));
    check_election_safety(&mut w);
    assert!(w.violations[0].starts_with("election safety"), "{:?}", w.violations);
}

#[test]
fn checker_log_matching_catches_divergent_prefixes() {
    let mut w = World::new(2);
    let a =
        PersistedState { entries: vec![entry(1, 1, "x"), entry(2, 2, "y")], ..Default::default() };
    let b =
        PersistedState { entries: vec![entry(1, 1, "z"), entry(2, 2, "y")], ..Default::default() };
    check_log_matching(&mut w, &[a.clone(), a.clone()]);
    assert!(w.violations.is_empty());
    check_log_matching(&mut w, &[a, b]);
    assert!(w.violations[0].starts_with("log matching"), "{:?}", w.violations);
}

#[test]
fn checker_leader_completeness_catches_a_missing_entry() {
    let mut w = World::new(1);
    w.peers[0].core = Some(lone_leader(0)); // Term 1; its log holds only the no-op at 1.
    w.committed.insert(2, (1, Bytes::from_static(b"x"), 0)); // Committed before term 1.
    check_leader_completeness(&mut w, &[PersistedState::default()]);
    assert!(w.violations[0].starts_with("leader completeness"), "{:?}", w.violations);
}

#[test]
fn checker_state_machine_safety_catches_different_applies() {
    let mut w = World::new(2);
    check_state_machine_safety(&mut w, 0, &entry(1, 1, "x"), 1);
    check_state_machine_safety(&mut w, 1, &entry(1, 1, "x"), 1);
    assert!(w.violations.is_empty());
    check_state_machine_safety(&mut w, 1, &entry(1, 2, "y"), 2);
    assert!(w.violations[0].starts_with("state machine safety"), "{:?}", w.violations);
}

#[test]
fn checker_commit_monotonicity_catches_a_step_back() {
    let mut w = World::new(1);
    w.peers[0].core = Some(lone_leader(0));
    w.peers[0].last_commit = 5;
    check_commit_monotonic(&mut w);
    assert!(w.violations[0].starts_with("commit index of node 0 moved back"), "{:?}", w.violations);
}

#[test]
fn checker_reads_catches_a_stale_read_index() {
    let mut w = World::new(3);
    w.reads.insert(7, 12); // Asked when index 12 was committed somewhere.
    w.reads.insert(8, 12);
    check_read(&mut w, 1, 7, 12);
    assert!(w.violations.is_empty());
    check_read(&mut w, 2, 8, 11);
    assert!(w.violations[0].starts_with("stale read: node 2"), "{:?}", w.violations);
    assert_eq!(w.reads_confirmed, 2);
}

// ----- A failing seed tells how to replay it --------------------------------------------------

const RUN_HELPER: &str = "RAFT_SIM_RUN_FAILING_HELPER";

#[test]
#[ignore = "helper that fails on purpose; run by a_failing_seed_prints_its_replay_command"]
fn deliberately_failing_simulation() {
    if std::env::var_os(RUN_HELPER).is_none() {
        return; // Selected by --include-ignored, not by the check.
    }
    let sim = Sim::new(labrpc::seed_from_env());
    sim.run_faults(Duration::from_secs(2));
    panic!("deliberate checker failure");
}

#[test]
fn a_failing_seed_prints_its_replay_command() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "deliberately_failing_simulation", "--nocapture"])
        .env(RUN_HELPER, "1")
        .env(labrpc::SEED_ENV, "77")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("deliberate checker failure"), "{stderr}");
    assert!(stderr.contains("replay it with LABRPC_SEED=77"), "no replay hint in:\n{stderr}");
}

// ----- The sweep catches a wrong core ---------------------------------------------------------

/// How checkers (not the core's own guards, nor the liveness phase) begin their reports.
const CHECKER_REPORTS: [&str; 6] = [
    "election safety: nodes",
    "log matching:",
    "leader completeness:",
    "state machine safety:",
    "commit index of node",
    "stale read:",
];

/// Runs seeds of the sweep (shorter fault phases) with `bug` planted in every core until a
/// checker reports a violation; returns the seeds run and that report, or panics past
/// `max_seeds`. A seed that fails otherwise (the core's own assertions, the liveness phase)
/// does not count, and the search goes on.
fn seeds_to_catch(bug: PlantedBug, targeted: Targeted, max_seeds: u64) -> (u64, String) {
    let base = planted_base_seed();
    let mut other_failures = Vec::new();
    for i in 0..max_seeds {
        let seed = base.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let run = std::panic::catch_unwind(|| {
            run_sim(Sim::with_bug(seed, Some(bug), targeted), PLANTED_FAULT_TIME)
        });
        let Err(panic) = run else { continue };
        let report = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_default();
        if CHECKER_REPORTS.iter().any(|p| report.starts_with(p)) {
            return (i + 1, report);
        }
        other_failures.push((seed, report));
    }
    panic!(
        "no checker caught {bug:?} in {max_seeds} seeds; other failures (seed, panic): \
         {other_failures:?}"
    );
}

/// The first seed the planted-bug tests run: fixed, so that how many seeds a bug takes is the
/// same on every run, unless `LABRPC_SEED` chooses another.
fn planted_base_seed() -> u64 {
    if std::env::var_os(labrpc::SEED_ENV).is_some() { labrpc::seed_from_env() } else { 1 }
}

/// Fault phase of each seed run with a planted bug.
const PLANTED_FAULT_TIME: Duration = Duration::from_secs(20);

/// Without a planted bug the same seeds pass: what the next test catches is the bug.
#[test]
fn the_planted_bug_seeds_pass_without_a_bug() {
    let base = planted_base_seed();
    for i in 0..PLANTED_CLEAN_SEEDS {
        let seed = base.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for targeted in [Targeted::None, Targeted::CrashAfterVote, Targeted::ZombieLeaders] {
            run_sim(Sim::with_bug(seed, None, targeted), PLANTED_FAULT_TIME);
        }
    }
}

const PLANTED_CLEAN_SEEDS: u64 = 4;

/// Seeds each planted bug may take before a checker reports it. From the fixed base seed, at
/// 458fceb: 5, 2, 7 and 8 seeds for the first four listed below; 5 for the fifth, added later.
const PLANTED_MAX_SEEDS: u64 = 40;

/// Each bug planted in `RawNode`, one at a time, is reported by one of the checkers within
/// `PLANTED_MAX_SEEDS` seeds (issue 20: the sweep fails when the core is wrong). Two need
/// faults aimed at them: an unpersisted vote is lost only if the voter crashes before its next
/// write, and a leader that ignores the terms of responses shows it only if it is deposed
/// without hearing from its successor.
///
/// `CommitEarlierTermByCounting` is planted too, but not listed: no checker catches it in a
/// few hundred seeds, since it takes the whole Figure 8 sequence (five nodes, two crashed
/// leaders, an entry of an earlier term on a minority); `safety.rs`'s scripted Figure 8 test
/// catches it instead. `ReadIndexWithoutTermStart` is not listed either: it was caught in 13
/// seeds when this test was written, but after later changes to the core (issue 14's fuzzing
/// fixes) in none of 40; it needs a schedule aimed at it (a read served right after an
/// election, before the new leader commits in its term) before it can be required.
#[test]
fn the_sweep_catches_each_bug_planted_in_the_core() {
    let bugs = [
        (PlantedBug::VoteWithoutLogCheck, Targeted::None),
        (PlantedBug::UnpersistedVote, Targeted::CrashAfterVote),
        (PlantedBug::NoTermCheckOnResponses, Targeted::ZombieLeaders),
        (PlantedBug::TruncateMatchingSuffix, Targeted::None),
        (PlantedBug::AppendWithoutPrevTermCheck, Targeted::None),
    ];
    for (bug, targeted) in bugs {
        let started = std::time::Instant::now();
        let (seeds, report) = seeds_to_catch(bug, targeted, PLANTED_MAX_SEEDS);
        println!("{bug:?}: caught in {seeds} seed(s), {:.1?}: {report}", started.elapsed());
    }
}
