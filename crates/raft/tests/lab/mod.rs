//! The classic lab harness (`raft/config.go`), re-created on labrpc in real time.
//!
//! Each peer runs a [`Node`] on its own thread over a [`LabrpcTransport`]. The harness checks
//! every applied command as it arrives (same value at the same index on every peer, strictly in
//! order), models a crash as "delete the server, kill the node, keep a copy of what it
//! persisted", and offers the helpers the tests are written in: `check_one_leader`, `one`,
//! `wait`, `n_committed`, RPC and byte counters.
//!
//! At most two tests of one binary run at once (a semaphore, whatever `--test-threads` says).
//! The tests spend nearly all their time sleeping (one test keeps well under a tenth of a core
//! busy), so two side by side still leave the machine nearly idle, which is what their timing
//! bounds assume; and the whole classic suite runs in under three minutes.

#![allow(dead_code, unreachable_pub)] // Each test file uses a different part of the harness.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use labrpc::watchdog::Watchdog;
use labrpc::{ClockMode, Network, Rng, Server};
use raft::{ApplyMsg, Config as RaftConfig, MemStorage, Node, Storage};
use testkit::LabrpcTransport;
use testkit::lab::Slot;

/// "The tester generously allows solutions to complete elections in one second."
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);
/// The tester snapshots every this many applied commands (2D).
pub const SNAPSHOT_INTERVAL: u64 = 10;
/// The driver's tick.
const TICK: Duration = Duration::from_millis(10);
/// Per-test limit, enforced by a [`Watchdog`] from the cluster's creation: a test still
/// running then fails with a message naming it (`LAB_TEST_LIMIT_MS` overrides the limit).
const TEST_LIMIT: Duration = Duration::from_secs(120);

/// The raft configuration every lab peer uses: ticks of 10 ms, heartbeats every 100 ms (the
/// handout's limit of ten per second), elections after 300–600 ms of silence, and no election
/// no-op (the tests expect exact indexes).
pub fn lab_raft_config(id: u64, n: u64) -> RaftConfig {
    let mut c = RaftConfig::new(id, (0..n).collect());
    c.heartbeat_ticks = 10;
    c.election_ticks = 30;
    c.no_op_on_election = false;
    c.announce_commit = false; // The classic tests count RPCs.
    c
}

/// What the appliers have seen, shared by all peers.
#[derive(Default)]
struct Applied {
    /// Per peer: index -> command, everything it applied (or ingested from a snapshot).
    logs: Vec<BTreeMap<u64, Bytes>>,
    /// Per peer: the last index applied, for the strict in-order check.
    last_applied: Vec<u64>,
    /// Per peer: which instance's service is alive, counting crashes. A crash kills the
    /// service with the node: an applier of an earlier instance drops what it still holds.
    incarnation: Vec<u64>,
    max_index: u64,
    /// The first error an applier found; checked by the helpers.
    error: Option<String>,
    /// Per peer: whether its appliers are held (see [`Config::hold_applies`]).
    held: Vec<bool>,
    /// Per peer: how many of its appliers wait at the hold with a message in hand.
    waiting: Vec<usize>,
}

/// A snapshot as the tester makes it: the index and every command up to it.
#[derive(serde::Serialize, serde::Deserialize)]
struct TesterSnapshot {
    index: u64,
    commands: Vec<Vec<u8>>,
}

pub struct Config {
    pub net: Arc<Network>,
    pub n: usize,
    rafts: Arc<Mutex<Vec<Option<Node>>>>,
    saved: Vec<MemStorage>,
    pub connected: Vec<bool>,
    end_names: Vec<Vec<String>>,
    applied: Arc<Mutex<Applied>>,
    /// Signalled when a hold on the appliers ends, and when an applier leaves it.
    hold: Arc<Condvar>,
    /// Per peer: dropped on a crash, which stops the running instance's applier.
    applier_stops: Vec<Option<crossbeam_channel::Sender<()>>>,
    snapshot: bool,
    rng: Rng,
    restarts: u64,
    _watchdog: Watchdog,
    // Figures for end().
    t0: Instant,
    rpcs0: u64,
    bytes0: u64,
    cmds0: u64,
    _slot: Slot,
}

impl Config {
    /// `make_config(n, unreliable, snapshot)`.
    pub fn new(n: usize, unreliable: bool, snapshot: bool) -> Config {
        let slot = Slot::acquire();
        let net = Network::new(ClockMode::RealTime);
        net.set_reliable(!unreliable);
        net.set_long_delays(true);
        let seed = net.seed();
        let applied = Applied {
            logs: vec![BTreeMap::new(); n],
            last_applied: vec![0; n],
            incarnation: vec![0; n],
            held: vec![false; n],
            waiting: vec![0; n],
            ..Applied::default()
        };
        let mut cfg = Config {
            net: Arc::new(net),
            n,
            rafts: Arc::new(Mutex::new((0..n).map(|_| None).collect())),
            saved: (0..n).map(|_| MemStorage::new()).collect(),
            connected: vec![false; n],
            end_names: vec![Vec::new(); n],
            applied: Arc::new(Mutex::new(applied)),
            hold: Arc::new(Condvar::new()),
            applier_stops: (0..n).map(|_| None).collect(),
            snapshot,
            rng: Rng::new(seed ^ 0x5eed),
            restarts: 0,
            _watchdog: Watchdog::start(TEST_LIMIT),
            t0: Instant::now(),
            rpcs0: 0,
            bytes0: 0,
            cmds0: 0,
            _slot: slot,
        };
        for i in 0..n {
            cfg.start1(i);
        }
        for i in 0..n {
            cfg.connect(i);
        }
        cfg
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, Applied> {
        lock(&self.applied)
    }

    fn rafts(&self) -> std::sync::MutexGuard<'_, Vec<Option<Node>>> {
        lock(&self.rafts)
    }

    /// A handle for client threads: `start` and `n_committed` while the test changes the
    /// cluster.
    pub fn handle(&self) -> Handle {
        Handle { rafts: Arc::clone(&self.rafts), applied: Arc::clone(&self.applied), n: self.n }
    }

    /// Whether peer `i` is running (not crashed).
    pub fn is_up(&self, i: usize) -> bool {
        self.rafts()[i].is_some()
    }

    /// A random number in `0..n` from the test's seeded generator.
    pub fn random(&mut self, n: u64) -> u64 {
        self.rng.below(n)
    }

    /// A random command (as the tests' `rand.Int()`).
    pub fn random_cmd(&mut self) -> Bytes {
        Bytes::from(format!("{}", self.rng.next_u64() >> 1))
    }

    /// Kills peer `i` as a crash would: its server disappears from the network, its node stops,
    /// its service dies with what it had not applied yet, and it keeps a copy of exactly what
    /// it had persisted.
    pub fn crash1(&mut self, i: usize) {
        self.disconnect(i);
        self.net.delete_server(&i.to_string());
        // A copy, so the killed instance can no longer change what the next one starts from.
        self.saved[i] = self.saved[i].crash_copy();
        let node = self.rafts()[i].take();
        if let Some(node) = node {
            node.kill();
        }
        // The service goes with the node. Its applier may still hold messages the node
        // delivered before it stopped; from now on it drops them instead of applying them
        // after (or in between) those of the next instance, which starts again from its
        // snapshot. Under the lock, so no message of the old instance is checked after this.
        self.applied().incarnation[i] += 1;
        self.applier_stops[i] = None;
    }

    /// Starts (or restarts) peer `i` from what it persisted, with fresh end names so the old
    /// instance can never send again. Does not connect it.
    pub fn start1(&mut self, i: usize) {
        self.crash1(i);
        self.restarts += 1;
        // Fresh outgoing ends.
        let mut ends = BTreeMap::new();
        self.end_names[i] = (0..self.n).map(|_| random_name(&mut self.rng)).collect();
        for j in 0..self.n {
            let name = &self.end_names[i][j];
            let end = self.net.make_end(name);
            self.net.connect(name, &j.to_string());
            if j != i {
                ends.insert(j as u64, end);
            }
        }
        let storage = self.saved[i].crash_copy();
        self.saved[i] = storage.clone();
        let incarnation;
        {
            let mut applied = self.applied();
            incarnation = applied.incarnation[i];
            applied.last_applied[i] = 0;
            // The service reads its snapshot at boot.
            if let Some(snap) = storage.initial_state().unwrap().snapshot
                && let Err(e) = ingest_snapshot(
                    &mut applied,
                    i,
                    &snap.data.to_bytes().unwrap(),
                    snap.meta.last_included_index,
                )
            {
                applied.error.get_or_insert(e);
            }
        }
        let (transport, service) = LabrpcTransport::new(ends);
        let (tx, rx) = crossbeam_channel::unbounded();
        let seed = self.net.seed().wrapping_add(self.restarts.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let config = lab_raft_config(i as u64, self.n as u64);
        let node = Node::new(raft::Config { seed, ..config }, TICK, storage, transport, tx)
            .expect("lab configuration is valid");
        let applier = Applier {
            me: i,
            node: node.clone(),
            applied: Arc::clone(&self.applied),
            hold: Arc::clone(&self.hold),
            snapshot: self.snapshot,
            incarnation,
        };
        let (stop, stopped) = crossbeam_channel::bounded(0);
        self.applier_stops[i] = Some(stop);
        thread::Builder::new()
            .name(format!("applier-{i}"))
            .spawn(move || applier.run(&rx, &stopped))
            .unwrap();
        self.rafts()[i] = Some(node);
        self.net.add_server(&i.to_string(), Server::new().with_service(service));
    }

    /// Attaches peer `i` to the network: its ends to connected peers and theirs to it.
    pub fn connect(&mut self, i: usize) {
        self.connected[i] = true;
        for j in 0..self.n {
            if self.connected[j] {
                self.net.enable(&self.end_names[i][j], true);
                self.net.enable(&self.end_names[j][i], true);
            }
        }
    }

    /// Detaches peer `i`: no end to or from it works.
    pub fn disconnect(&mut self, i: usize) {
        self.connected[i] = false;
        for j in 0..self.n {
            if let Some(name) = self.end_names[i].get(j) {
                self.net.enable(name, false);
            }
            if let Some(name) = self.end_names[j].get(i) {
                self.net.enable(name, false);
            }
        }
    }

    /// Holds back what peer `i`'s appliers (of this instance and any other) do with the
    /// messages they receive, until [`release_applies`](Self::release_applies): its node
    /// delivers as usual, and the messages wait as a slow service would leave them.
    pub fn hold_applies(&self, i: usize) {
        self.applied().held[i] = true;
    }

    /// Ends [`hold_applies`](Self::hold_applies) on peer `i`, and returns once every applier
    /// that waited there with a message has dealt with it.
    pub fn release_applies(&self, i: usize) {
        let mut applied = self.applied();
        applied.held[i] = false;
        self.hold.notify_all();
        while applied.waiting[i] > 0 {
            applied = self.hold.wait(applied).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    pub fn node(&self, i: usize) -> Option<Node> {
        self.rafts()[i].clone()
    }

    /// `Start(cmd)` on peer `i`: `Some((index, term))` if it accepted as leader.
    pub fn start(&self, i: usize, cmd: &Bytes) -> Option<(u64, u64)> {
        self.handle().start(i, cmd)
    }

    pub fn state(&self, i: usize) -> (u64, bool) {
        self.node(i).map_or((0, false), |n| n.state())
    }

    fn check_error(&self) {
        if let Some(e) = &self.applied().error {
            panic!("apply error: {e}");
        }
    }

    /// Exactly one connected peer leads the highest term; returns it (within about 5 s).
    pub fn check_one_leader(&mut self) -> usize {
        for _ in 0..10 {
            let ms = 450 + self.random(100);
            thread::sleep(Duration::from_millis(ms));
            let mut leaders: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
            for i in 0..self.n {
                if self.connected[i] {
                    let (term, leader) = self.state(i);
                    if leader {
                        leaders.entry(term).or_default().push(i);
                    }
                }
            }
            for (term, ids) in &leaders {
                assert!(ids.len() <= 1, "term {term} has {} (>1) leaders: {ids:?}", ids.len());
            }
            if let Some((_, ids)) = leaders.last_key_value() {
                return ids[0];
            }
        }
        panic!("expected one leader, got none");
    }

    /// All connected peers agree on the term; returns it.
    pub fn check_terms(&self) -> u64 {
        let mut term = None;
        for i in 0..self.n {
            if self.connected[i] {
                let t = self.state(i).0;
                match term {
                    None => term = Some(t),
                    Some(x) => assert_eq!(x, t, "servers disagree on term"),
                }
            }
        }
        term.unwrap_or(0)
    }

    /// No connected peer thinks it is the leader.
    pub fn check_no_leader(&self) {
        for i in 0..self.n {
            if self.connected[i] {
                assert!(
                    !self.state(i).1,
                    "expected no leader among connected servers, but {i} claims to be leader"
                );
            }
        }
    }

    /// How many peers think the entry at `index` is committed, and its command.
    pub fn n_committed(&self, index: u64) -> (usize, Option<Bytes>) {
        self.handle().n_committed(index)
    }

    /// Waits for at least `n` peers to commit `index`; `None` if someone moved past
    /// `start_term` (the caller should retry).
    pub fn wait(&self, index: u64, n: usize, start_term: Option<u64>) -> Option<Bytes> {
        let mut to = Duration::from_millis(10);
        for _ in 0..30 {
            let (nd, _) = self.n_committed(index);
            if nd >= n {
                break;
            }
            thread::sleep(to);
            if to < Duration::from_secs(1) {
                to *= 2;
            }
            if let Some(term) = start_term {
                for r in self.rafts().iter().flatten() {
                    if r.state().0 > term {
                        return None; // Someone has moved on; can no longer guarantee we'll "win".
                    }
                }
            }
        }
        let (nd, cmd) = self.n_committed(index);
        assert!(nd >= n, "only {nd} decided for index {index}; wanted {n}");
        cmd
    }

    /// Does a complete agreement on `cmd` (with at least `expected` peers committing it), trying
    /// every connected peer as leader for up to 10 s; returns its index.
    pub fn one(&self, cmd: Bytes, expected: usize, retry: bool) -> u64 {
        let t0 = Instant::now();
        let mut starts = 0;
        while t0.elapsed() < Duration::from_secs(10) {
            let mut index = None;
            for _ in 0..self.n {
                starts = (starts + 1) % self.n;
                if self.connected[starts]
                    && let Some((i, _)) = self.start(starts, &cmd)
                {
                    index = Some(i);
                    break;
                }
            }
            if let Some(index) = index {
                // Somebody claimed to be the leader and submitted our command.
                let t1 = Instant::now();
                while t1.elapsed() < Duration::from_secs(2) {
                    let (nd, got) = self.n_committed(index);
                    if nd > 0 && nd >= expected && got.as_ref() == Some(&cmd) {
                        return index;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                assert!(retry, "one({}) failed to reach agreement", show(&cmd));
            } else {
                thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("one({}) failed to reach agreement", show(&cmd));
    }

    /// RPCs delivered to peer `i`'s handlers.
    pub fn rpc_count(&self, i: usize) -> u64 {
        self.net.count(&i.to_string())
    }

    pub fn rpc_total(&self) -> u64 {
        self.net.total_count()
    }

    pub fn bytes_total(&self) -> u64 {
        self.net.total_bytes()
    }

    /// The largest persisted Raft state (log and hard state, without the snapshot).
    pub fn log_size(&self) -> u64 {
        self.saved.iter().map(Storage::raft_state_size).max().unwrap_or(0)
    }

    pub fn set_unreliable(&self, unreliable: bool) {
        self.net.set_reliable(!unreliable);
    }

    pub fn set_long_reordering(&self, on: bool) {
        self.net.set_long_reordering(on);
    }

    pub fn begin(&mut self, title: &str) {
        println!("{title} ...");
        self.t0 = Instant::now();
        self.rpcs0 = self.rpc_total();
        self.bytes0 = self.bytes_total();
        let max_index = self.applied().max_index;
        self.cmds0 = max_index;
    }

    pub fn end(&self) {
        self.check_error();
        let secs = self.t0.elapsed().as_secs_f64();
        let rpcs = self.rpc_total() - self.rpcs0;
        let bytes = self.bytes_total() - self.bytes0;
        let cmds = self.applied().max_index - self.cmds0;
        println!("  ... Passed --  {secs:4.1}  {} {rpcs:4} {bytes:7} {cmds:4}", self.n);
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        let nodes: Vec<Node> = self.rafts().iter().flatten().cloned().collect();
        for node in nodes {
            node.kill();
        }
    }
}

/// What client threads of a test may do while the main thread changes the cluster.
#[derive(Clone)]
pub struct Handle {
    rafts: Arc<Mutex<Vec<Option<Node>>>>,
    applied: Arc<Mutex<Applied>>,
    pub n: usize,
}

impl Handle {
    /// `Start(cmd)` on peer `i`, if it is running: `Some((index, term))` if it accepted.
    pub fn start(&self, i: usize, cmd: &Bytes) -> Option<(u64, u64)> {
        let node = lock(&self.rafts)[i].clone();
        node.and_then(|n| n.start(cmd.clone()).ok())
    }

    /// How many peers think the entry at `index` is committed, and its command.
    pub fn n_committed(&self, index: u64) -> (usize, Option<Bytes>) {
        let applied = lock(&self.applied);
        if let Some(e) = &applied.error {
            panic!("apply error: {e}");
        }
        let mut count = 0;
        let mut cmd: Option<Bytes> = None;
        for log in &applied.logs {
            if let Some(c) = log.get(&index) {
                if let Some(prev) = &cmd {
                    assert_eq!(prev, c, "committed values do not match: index {index}");
                }
                count += 1;
                cmd = Some(c.clone());
            }
        }
        (count, cmd)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn random_name(rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..20).map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize] as char).collect()
}

fn show(cmd: &Bytes) -> String {
    let text = String::from_utf8_lossy(cmd);
    if text.len() > 40 { format!("{}...", &text[..40]) } else { text.into_owned() }
}

fn ingest_snapshot(applied: &mut Applied, i: usize, data: &[u8], index: u64) -> Result<(), String> {
    let snap: TesterSnapshot =
        postcard::from_bytes(data).map_err(|e| format!("server {i}: bad snapshot: {e}"))?;
    if snap.index != index {
        return Err(format!("server {i} snapshot doesn't match SnapshotIndex"));
    }
    let log: BTreeMap<u64, Bytes> = snap
        .commands
        .into_iter()
        .enumerate()
        .map(|(j, c)| (j as u64 + 1, Bytes::from(c)))
        .collect();
    applied.logs[i] = log;
    applied.last_applied[i] = index;
    applied.max_index = applied.max_index.max(index);
    Ok(())
}

/// One peer's apply loop: checks every command, snapshots every `SNAPSHOT_INTERVAL` (2D).
struct Applier {
    me: usize,
    node: Node,
    applied: Arc<Mutex<Applied>>,
    hold: Arc<Condvar>,
    snapshot: bool,
    /// Which instance of the peer this applier serves (see [`Applied::incarnation`]).
    incarnation: u64,
}

impl Applier {
    /// Applies what `rx` brings until the peer crashes (`stopped` disconnects, or a message
    /// arrives after the crash).
    fn run(
        self,
        rx: &crossbeam_channel::Receiver<ApplyMsg>,
        stopped: &crossbeam_channel::Receiver<()>,
    ) {
        loop {
            let msg = crossbeam_channel::select! {
                recv(rx) -> msg => match msg {
                    Ok(msg) => msg,
                    Err(_) => return,
                },
                recv(stopped) -> _ => return,
            };
            let mut applied = lock(&self.applied);
            if applied.held[self.me] {
                applied.waiting[self.me] += 1;
                while applied.held[self.me] {
                    applied =
                        self.hold.wait(applied).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                applied.waiting[self.me] -= 1;
                // `release_applies` returns once this message is dealt with (the lock dropped).
                self.hold.notify_all();
            }
            if applied.incarnation[self.me] != self.incarnation {
                return; // The peer crashed: its service is gone, with what it had not applied.
            }
            let result = match msg {
                ApplyMsg::Command { index, data, .. } => {
                    self.apply_command(&mut applied, index, data)
                }
                ApplyMsg::Read { ctx, .. } => {
                    Err(format!("server {} confirmed a read {ctx} nobody asked for", self.me))
                }
                ApplyMsg::Snapshot { index, data, .. } => {
                    if self.snapshot {
                        ingest_snapshot(&mut applied, self.me, &data.to_bytes().unwrap(), index)
                    } else {
                        Err(format!("server {} got a snapshot without snapshots on", self.me))
                    }
                }
            };
            if let Err(e) = result {
                applied.error.get_or_insert(e);
            }
        }
    }

    fn apply_command(&self, applied: &mut Applied, index: u64, data: Bytes) -> Result<(), String> {
        let i = self.me;
        if index != applied.last_applied[i] + 1 {
            return Err(format!(
                "server {i} apply out of order, expected index {}, got {index}",
                applied.last_applied[i] + 1
            ));
        }
        for (j, log) in applied.logs.iter().enumerate() {
            if let Some(old) = log.get(&index)
                && *old != data
            {
                return Err(format!(
                    "commit index={index} server={i} {} != server={j} {}",
                    show(&data),
                    show(old)
                ));
            }
        }
        applied.logs[i].insert(index, data);
        applied.last_applied[i] = index;
        applied.max_index = applied.max_index.max(index);
        if self.snapshot && (index + 1).is_multiple_of(SNAPSHOT_INTERVAL) {
            let commands = (1..=index)
                .map(|k| applied.logs[i].get(&k).map_or_else(Vec::new, |c| c.to_vec()))
                .collect();
            let bytes = postcard::to_allocvec(&TesterSnapshot { index, commands }).unwrap();
            let _ = self.node.snapshot(index, Bytes::from(bytes));
        }
        Ok(())
    }
}
