//! The classic KV lab harness (`kvraft/config.go` and `test_test.go`'s helpers), re-created on
//! labrpc in real time.
//!
//! Each server is a [`KvServer`] (a Raft node and an LSM-backed state machine on an in-memory
//! disk) registered with its Raft service on one labrpc server. A crash deletes the server from
//! the network, kills it, and keeps a copy of exactly what it had made durable: its Raft
//! storage (as the classic persister) and its disk (`MemFs::crash_copy`: unsynced LSM writes
//! are lost, as in a power cut). Clerks get fresh ends to every server; which of them work is
//! set per clerk, independent of partitions between servers.
//!
//! Every operation a test's clerks perform is recorded with its call and return times, and
//! [`Config::end`] checks the whole history with the linearizability checker, in every test,
//! and prints one line (operations checked, verdict, time). Only `Linearizable` passes: an
//! inconclusive check fails the test like a violation does, and either saves the history for
//! replay (the failure message says where). The checker's budget is `CHECK_BUDGET_MS` when
//! set; with `0` every test that checks a history fails.
//!
//! A watchdog fails a test that is still running at its limit (120 s, or `LAB_TEST_LIMIT_MS`)
//! by ending the test process with a message naming the test: a clerk that retries forever
//! must not hang the suite.
//!
//! At most two tests of one binary run at once, as in the Raft lab harness.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvclient::Clerk;
use kvserver::{KvServer, ReadMode, ServerConfig};
use labrpc::watchdog::Watchdog;
use labrpc::{ClockMode, Network, Rng, Server};
use linearizability::saved::TestCheck;
use linearizability::{KvInput, KvOutput, Operation, Outcome};
use lsm::MemFs;
use raft::{Config as RaftConfig, MemStorage, Storage};
use testkit::LabrpcTransport;
use testkit::kv::LabrpcServers;
use testkit::lab::Slot;

/// "The tester generously allows solutions to complete elections in one second."
pub const ELECTION_TIMEOUT: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(10);
/// Per-test limit, enforced by a [`Watchdog`] (`LAB_TEST_LIMIT_MS` overrides it).
const TEST_LIMIT: Duration = Duration::from_secs(120);
/// The checker's budget per history unless `CHECK_BUDGET_MS` says otherwise. The checker
/// decides the classic tests' histories in milliseconds; this leaves room for slow machines.
const CHECK_BUDGET: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Ticks of 10 ms, heartbeats every 100 ms, elections after 300–600 ms of silence.
fn raft_config(id: u64, n: u64) -> RaftConfig {
    let mut c = RaftConfig::new(id, (0..n).collect());
    c.heartbeat_ticks = 10;
    c.election_ticks = 30;
    c
}

/// Every clerk operation of a test, for the linearizability checker.
#[derive(Default)]
pub struct History {
    ops: Mutex<Vec<Operation<KvInput, KvOutput>>>,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A clerk whose every operation is recorded.
pub struct TestClerk {
    clerk: Clerk<LabrpcServers>,
    pub id: u64,
    pub end_names: Vec<String>,
    history: Arc<History>,
    t0: Instant,
    ops: Arc<std::sync::atomic::AtomicU64>,
}

impl TestClerk {
    fn record(&self, input: KvInput, output: KvOutput, call: Instant) {
        let at = |t: Instant| t.duration_since(self.t0).as_nanos() as u64;
        let op =
            Operation { client: self.id, input, output, call: at(call), ret: at(Instant::now()) };
        lock(&self.history.ops).push(op);
        self.ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Get; a missing key reads as "" (as in the classic labs).
    pub fn get(&mut self, key: &str) -> String {
        let call = Instant::now();
        let value = self.clerk.get(key.to_owned()).map_or_else(String::new, |v| text(&v));
        self.record(KvInput::Get { key: key.into() }, KvOutput::Value(value.clone()), call);
        value
    }

    pub fn put(&mut self, key: &str, value: &str) {
        let call = Instant::now();
        self.clerk.put(key.to_owned(), value.to_owned());
        let input = KvInput::Put { key: key.into(), value: value.into() };
        self.record(input, KvOutput::Done, call);
    }

    pub fn append(&mut self, key: &str, value: &str) {
        let call = Instant::now();
        self.clerk.append(key.to_owned(), value.to_owned());
        let input = KvInput::Append { key: key.into(), value: value.into() };
        self.record(input, KvOutput::Done, call);
    }

    /// Checks that a get of `key` reads `value`.
    pub fn check(&mut self, key: &str, value: &str) {
        let got = self.get(key);
        assert_eq!(got, value, "Get({key}): expected:\n{value}\nreceived:\n{got}");
    }
}

/// One server's pieces that outlive its incarnations.
struct Slot2 {
    storage: MemStorage,
    disk: MemFs,
}

/// A test's cluster.
pub struct Config {
    pub net: Arc<Network>,
    pub n: usize,
    servers: Vec<Option<KvServer>>,
    saved: Vec<Slot2>,
    /// end_names[i][j]: server i's end to server j.
    end_names: Vec<Vec<String>>,
    connected: Vec<bool>,
    max_raft_state: Option<u64>,
    read_mode: ReadMode,
    /// Followers answer reads (through the leader's read index).
    pub follower_reads: bool,
    /// Followers forward writes to the leader through Raft.
    pub forward_writes: bool,
    rng: Rng,
    history: Arc<History>,
    ops: Arc<std::sync::atomic::AtomicU64>,
    next_clerk: u64,
    restarts: u64,
    origin: Instant,
    t0: Instant,
    rpcs0: u64,
    ops0: u64,
    _watchdog: Watchdog,
    _slot: Slot,
}

impl Config {
    /// `make_config(n, unreliable, maxraftstate)`; -1 (no snapshots) is `None`.
    pub fn new(n: usize, unreliable: bool, max_raft_state: Option<u64>) -> Config {
        Config::with_read_mode(n, unreliable, max_raft_state, ReadMode::ReadIndex)
    }

    pub fn with_read_mode(
        n: usize,
        unreliable: bool,
        max_raft_state: Option<u64>,
        read_mode: ReadMode,
    ) -> Config {
        let slot = Slot::acquire();
        let net = Network::new(ClockMode::RealTime);
        net.set_long_delays(false);
        let seed = net.seed();
        let mut cfg = Config {
            net: Arc::new(net),
            n,
            servers: (0..n).map(|_| None).collect(),
            saved: (0..n)
                .map(|_| Slot2 { storage: MemStorage::new(), disk: MemFs::new() })
                .collect(),
            end_names: vec![Vec::new(); n],
            connected: vec![false; n],
            max_raft_state,
            read_mode,
            follower_reads: false,
            forward_writes: false,
            rng: Rng::new(seed ^ 0x6b76),
            history: Arc::default(),
            ops: Arc::default(),
            next_clerk: 0,
            restarts: 0,
            origin: Instant::now(),
            t0: Instant::now(),
            rpcs0: 0,
            ops0: 0,
            _watchdog: Watchdog::start(TEST_LIMIT),
            _slot: slot,
        };
        for i in 0..n {
            cfg.start_server(i);
        }
        for i in 0..n {
            cfg.connect(i, &(0..n).collect::<Vec<_>>());
        }
        cfg.net.set_reliable(!unreliable);
        cfg
    }

    fn random_name(&mut self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..20).map(|_| ALPHABET[self.rng.below(ALPHABET.len() as u64) as usize] as char).collect()
    }

    pub fn random(&mut self, n: u64) -> u64 {
        self.rng.below(n)
    }

    /// Starts (or restarts) server `i` from what it made durable. Does not connect it.
    pub fn start_server(&mut self, i: usize) {
        self.restarts += 1;
        let names: Vec<String> = (0..self.n).map(|_| self.random_name()).collect();
        let mut ends = BTreeMap::new();
        for (j, name) in names.iter().enumerate() {
            let end = self.net.make_end(name);
            self.net.connect(name, &j.to_string());
            if j != i {
                ends.insert(j as u64, end);
            }
        }
        self.end_names[i] = names;
        let storage = self.saved[i].storage.crash_copy();
        self.saved[i].storage = storage.clone();
        let disk = self.saved[i].disk.crash_copy();
        self.saved[i].disk = disk.clone();
        let options = lsm::Options { fs: Arc::new(disk), wal: false, ..lsm::Options::default() };
        let machine = testkit::kv::state_machine(|| {
            lsm::Db::open("/kv", options).expect("open the server's database")
        });
        let (transport, raft_service) = LabrpcTransport::new(ends);
        let config = ServerConfig {
            max_raft_state: self.max_raft_state,
            read_mode: self.read_mode,
            follower_reads: self.follower_reads,
            forward_writes: self.forward_writes,
            ..ServerConfig::default()
        };
        let mut raft = raft_config(i as u64, self.n as u64);
        raft.lease_reads = self.read_mode == ReadMode::Lease;
        raft.seed = self.net.seed().wrapping_add(self.restarts.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let server = KvServer::start(raft, TICK, storage, transport, machine, config)
            .expect("start the server");
        let labrpc_server =
            Server::new().with_service(raft_service).with_service(testkit::kv::service(&server));
        self.net.add_server(&i.to_string(), labrpc_server);
        self.servers[i] = Some(server);
    }

    /// `ShutdownServer(i)`: gone from the network, killed; what it made durable is kept.
    pub fn shutdown_server(&mut self, i: usize) {
        self.disconnect(i, &(0..self.n).collect::<Vec<_>>());
        self.net.delete_server(&i.to_string());
        self.saved[i].storage = self.saved[i].storage.crash_copy();
        self.saved[i].disk = self.saved[i].disk.crash_copy();
        if let Some(server) = self.servers[i].take() {
            server.kill();
            assert_eq!(server.failure(), None, "server {i} failed");
        }
    }

    /// Links server `i` with every server in `to`, both ways.
    pub fn connect(&mut self, i: usize, to: &[usize]) {
        for &j in to {
            self.net.enable(&self.end_names[i][j], true);
            self.net.enable(&self.end_names[j][i], true);
        }
    }

    /// Cuts server `i` off from every server in `from`, both ways.
    pub fn disconnect(&mut self, i: usize, from: &[usize]) {
        for &j in from {
            if let Some(name) = self.end_names[i].get(j) {
                self.net.enable(name, false);
            }
            if let Some(name) = self.end_names[j].get(i) {
                self.net.enable(name, false);
            }
        }
    }

    pub fn connect_all(&mut self) {
        for i in 0..self.n {
            self.connect(i, &(0..self.n).collect::<Vec<_>>());
        }
    }

    /// Full connectivity inside each side, none across.
    pub fn partition(&mut self, p1: &[usize], p2: &[usize]) {
        for &i in p1 {
            self.disconnect(i, p2);
            self.connect(i, p1);
        }
        for &i in p2 {
            self.disconnect(i, p1);
            self.connect(i, p2);
        }
    }

    /// A clerk with ends to every server, of which only those to `to` work.
    pub fn make_client(&mut self, to: &[usize]) -> TestClerk {
        let names: Vec<String> = (0..self.n).map(|_| self.random_name()).collect();
        let mut ends = Vec::new();
        for (j, name) in names.iter().enumerate() {
            let end = self.net.make_end(name);
            self.net.connect(name, &j.to_string());
            ends.push(end);
        }
        let id = self.next_clerk;
        self.next_clerk += 1;
        let clerk = Clerk::with_client_id(LabrpcServers::new(ends), self.rng.next_u64());
        let client = TestClerk {
            clerk,
            id,
            end_names: names,
            history: Arc::clone(&self.history),
            t0: self.origin,
            ops: Arc::clone(&self.ops),
        };
        self.connect_client(&client, to);
        client
    }

    /// Makes exactly the clerk's ends to `to` work.
    pub fn connect_client(&self, clerk: &TestClerk, to: &[usize]) {
        self.connect_client_ends(&clerk.end_names, to);
    }

    /// As [`connect_client`](Self::connect_client), for a clerk another thread holds.
    pub fn connect_client_ends(&self, end_names: &[String], to: &[usize]) {
        for (j, name) in end_names.iter().enumerate() {
            self.net.enable(name, to.contains(&j));
        }
    }

    pub fn disconnect_client(&self, clerk: &TestClerk, from: &[usize]) {
        for &j in from {
            self.net.enable(&clerk.end_names[j], false);
        }
    }

    /// Waits (up to ten seconds) until every running server has applied as far as the one
    /// furthest ahead.
    pub fn wait_converged(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let applied: Vec<u64> =
                self.servers.iter().flatten().map(KvServer::applied_index).collect();
            if applied.iter().min() == applied.iter().max() {
                return;
            }
            assert!(Instant::now() < deadline, "servers did not converge: {applied:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Server `i`, which must be running.
    #[allow(dead_code)] // Not every test binary that includes this module uses it.
    pub fn server(&self, i: usize) -> &KvServer {
        self.servers[i].as_ref().expect("server is running")
    }

    /// The first server whose Raft believes it leads.
    pub fn leader(&self) -> Option<usize> {
        self.servers.iter().position(|s| s.as_ref().is_some_and(|s| s.node().state().1))
    }

    /// The first server among `group` whose Raft believes it leads.
    pub fn leader_among(&self, group: &[usize]) -> Option<usize> {
        let deadline = Instant::now() + 5 * ELECTION_TIMEOUT;
        while Instant::now() < deadline {
            let found = group
                .iter()
                .copied()
                .find(|&i| self.servers[i].as_ref().is_some_and(|s| s.node().state().1));
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// `make_partition()`: a majority without the leader, and a minority holding it.
    pub fn make_partition(&self) -> (Vec<usize>, Vec<usize>) {
        let leader = self.leader().unwrap_or(0);
        let others: Vec<usize> = (0..self.n).filter(|&i| i != leader).collect();
        let majority = self.n / 2 + 1;
        let p1 = others[..majority].to_vec();
        let mut p2 = vec![leader];
        p2.extend_from_slice(&others[majority..]);
        (p1, p2)
    }

    /// The largest Raft state (log and hard state) any server holds.
    pub fn log_size(&self) -> u64 {
        self.saved.iter().map(|s| s.storage.raft_state_size()).max().unwrap_or(0)
    }

    /// Each server's Raft state size, snapshot index and status, for failure messages.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (i, saved) in self.saved.iter().enumerate() {
            let snap = saved.storage.snapshot().map_or(0, |s| s.meta.last_included_index);
            let status = self.servers[i].as_ref().map(|s| (s.node().status(), s.applied_index()));
            out += &format!(
                "\n  server {i}: raft state {} bytes, snapshot at {snap}, {status:?}",
                saved.storage.raft_state_size()
            );
        }
        out
    }

    /// The largest snapshot any server holds.
    pub fn snapshot_size(&self) -> u64 {
        self.saved
            .iter()
            .filter_map(|s| s.storage.snapshot())
            .map(|s| s.data.len())
            .max()
            .unwrap_or(0)
    }

    pub fn begin(&mut self, title: &str) {
        println!("{title} ...");
        self.t0 = Instant::now();
        self.rpcs0 = self.net.total_count();
        self.ops0 = self.ops.load(std::sync::atomic::Ordering::Relaxed);
    }

    /// Checks the test's whole history for linearizability (failing the test unless it is
    /// `Linearizable`), then prints the figures.
    pub fn end(&self) {
        self.check_history();
        let secs = self.t0.elapsed().as_secs_f64();
        let rpcs = self.net.total_count() - self.rpcs0;
        let ops = self.ops.load(std::sync::atomic::Ordering::Relaxed) - self.ops0;
        println!("  ... Passed --  {secs:4.1}  {} {rpcs:5} {ops:4}", self.n);
    }

    /// Checks the history so far and prints one line (operations, verdict, time); a history
    /// that is not found linearizable is saved for replay.
    pub fn check(&self) -> TestCheck {
        let ops = lock(&self.history.ops).clone();
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("histories");
        let check = TestCheck::run(&test_name(), &ops, CHECK_BUDGET, &dir);
        println!("  {check}");
        check
    }

    /// The checker's verdict on the history so far (printed, and saved unless linearizable).
    pub fn check_outcome(&self) -> Outcome {
        self.check().outcome
    }

    /// Fails the test unless the history so far is linearizable (an inconclusive check
    /// fails too); the message says where the history was saved.
    pub fn check_history(&self) {
        if let Err(why) = self.check().verdict() {
            panic!("{why}");
        }
    }

    pub fn history_len(&self) -> usize {
        lock(&self.history.ops).len()
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        for server in self.servers.iter().flatten() {
            server.kill();
        }
    }
}

/// The running test's name (the test harness names each test's thread after it).
fn test_name() -> String {
    std::thread::current().name().unwrap_or("unnamed test").to_owned()
}

// ----- The generic tests (`GenericTest`, `GenericTestSpeed`) -------------------------------

use std::sync::atomic::{AtomicBool, Ordering};

/// What a generic test turns on.
#[derive(Clone, Copy, Default)]
pub struct Generic {
    pub clients: usize,
    pub servers: usize,
    pub unreliable: bool,
    pub crash: bool,
    pub partitions: bool,
    pub max_raft_state: Option<u64>,
    pub random_keys: bool,
}

fn title(part: &str, g: &Generic) -> String {
    let mut t = String::from("Test: ");
    if g.unreliable {
        t += "unreliable net, ";
    }
    if g.crash {
        t += "restarts, ";
    }
    if g.partitions {
        t += "partitions, ";
    }
    if g.max_raft_state.is_some() {
        t += "snapshots, ";
    }
    if g.random_keys {
        t += "random keys, ";
    }
    t += if g.clients > 1 { "many clients" } else { "one client" };
    format!("{t} ({part})")
}

/// Every `"x <client> <j> y"` for `j < count` appears exactly once in `value`, in order.
pub fn check_client_appends(client: usize, value: &str, count: u64) {
    let mut last = None;
    for j in 0..count {
        let wanted = format!("x {client} {j} y");
        let Some(at) = value.find(&wanted) else {
            panic!("{client} missing element {wanted} in Append result {value}")
        };
        assert_eq!(value.rfind(&wanted), Some(at), "duplicate element {wanted} in Append result");
        assert!(last.is_none_or(|l| at > l), "wrong order for element {wanted} in Append result");
        last = Some(at);
    }
}

/// One client's loop: appends (and, with random keys, puts) numbered values and reads them
/// back, until told to stop; returns how many values it wrote.
fn client_loop(
    mut ck: TestClerk,
    client: usize,
    g: Generic,
    mut rng: Rng,
    done: &AtomicBool,
) -> u64 {
    let own = client.to_string();
    let mut last = String::new();
    if !g.random_keys {
        ck.put(&own, "");
    }
    let mut j = 0;
    while !done.load(Ordering::Acquire) {
        let key = if g.random_keys { rng.below(g.clients as u64).to_string() } else { own.clone() };
        let value = format!("x {client} {j} y");
        if rng.below(1000) < 500 {
            ck.append(&key, &value);
            if !g.random_keys {
                last += &value;
            }
            j += 1;
        } else if g.random_keys && rng.below(1000) < 100 {
            ck.put(&key, &value);
            j += 1;
        } else {
            let got = ck.get(&key);
            assert!(
                g.random_keys || got == last,
                "get wrong value, key {key}, wanted:\n{last}\n, got\n{got}"
            );
        }
    }
    j
}

/// `GenericTest`: three rounds of clients working for five seconds while the network is
/// unreliable, partitions come and go, or every server restarts, as asked; then checks every
/// client's appends, the size of the Raft state, and the history.
pub fn generic_test(part: &str, g: Generic) {
    let cfg = Arc::new(Mutex::new(Config::new(g.servers, g.unreliable, g.max_raft_state)));
    let all: Vec<usize> = (0..g.servers).collect();
    lock(&cfg).begin(&title(part, &g));
    let mut ck = lock(&cfg).make_client(&all);
    for _ in 0..3 {
        let done_clients = Arc::new(AtomicBool::new(false));
        let done_partitioner = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for client in 0..g.clients {
            let (clerk, seed) = {
                let mut c = lock(&cfg);
                (c.make_client(&all), c.rng.next_u64())
            };
            let done = Arc::clone(&done_clients);
            clients.push(std::thread::spawn(move || {
                client_loop(clerk, client, g, Rng::new(seed), &done)
            }));
        }
        let partitioner = g.partitions.then(|| {
            std::thread::sleep(Duration::from_secs(1));
            let (cfg, done) = (Arc::clone(&cfg), Arc::clone(&done_partitioner));
            std::thread::spawn(move || partitioner(&cfg, &done))
        });
        std::thread::sleep(Duration::from_secs(5));
        done_clients.store(true, Ordering::Release);
        done_partitioner.store(true, Ordering::Release);
        if let Some(p) = partitioner {
            p.join().unwrap();
            lock(&cfg).connect_all();
            // Let requests stuck in a minority find the new term.
            std::thread::sleep(ELECTION_TIMEOUT);
        }
        if g.crash {
            let mut c = lock(&cfg);
            for i in 0..g.servers {
                c.shutdown_server(i);
            }
            drop(c);
            std::thread::sleep(ELECTION_TIMEOUT);
            let mut c = lock(&cfg);
            for i in 0..g.servers {
                c.start_server(i);
            }
            c.connect_all();
        }
        for (client, handle) in clients.into_iter().enumerate() {
            let count = handle.join().expect("a client failed");
            let key = client.to_string();
            let value = ck.get(&key);
            if !g.random_keys {
                check_client_appends(client, &value, count);
            }
        }
        let c = lock(&cfg);
        if let Some(limit) = g.max_raft_state {
            let size = c.log_size();
            assert!(
                size <= 8 * limit,
                "logs were not trimmed ({size} > 8*{limit}): {}",
                c.describe()
            );
        } else {
            assert_eq!(c.snapshot_size(), 0, "snapshot too large without max_raft_state");
        }
    }
    lock(&cfg).end();
}

/// Splits the servers at random into two sides every 1–1.2 s until told to stop.
fn partitioner(cfg: &Arc<Mutex<Config>>, done: &AtomicBool) {
    while !done.load(Ordering::Acquire) {
        {
            let mut c = lock(cfg);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for i in 0..c.n {
                if c.random(2) == 0 { a.push(i) } else { b.push(i) }
            }
            c.partition(&a, &b);
        }
        let pause = 1000 + lock(cfg).random(200);
        std::thread::sleep(Duration::from_millis(pause));
    }
}

/// `GenericTestSpeed`: 1000 appends from one clerk, each within a third of a heartbeat
/// interval on average.
pub fn generic_test_speed(part: &str, max_raft_state: Option<u64>) {
    const OPS: u64 = 1000;
    let mut cfg = Config::new(3, false, max_raft_state);
    let all: Vec<usize> = (0..3).collect();
    let mut ck = cfg.make_client(&all);
    cfg.begin(&format!("Test: ops complete fast enough ({part})"));
    ck.get("x"); // Waits for a leader.
    let started = Instant::now();
    for i in 0..OPS {
        ck.append("x", &format!("x 0 {i} y"));
    }
    let elapsed = started.elapsed();
    let value = ck.get("x");
    check_client_appends(0, &value, OPS);
    // Heartbeats every 100 ms; at least three operations per heartbeat interval.
    let bound = Duration::from_millis(100) / 3 * OPS as u32;
    assert!(elapsed <= bound, "Operations completed too slowly {elapsed:?} > {bound:?}");
    let secs = elapsed.as_secs_f64();
    println!("  {OPS} appends in {secs:.2} s ({:.2} ms each)", secs * 1000.0 / OPS as f64);
    cfg.end();
}
