//! The `Node` driver: batching, kill, apply delivery, storage failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use raft::{
    AppendOutcome, ApplyMsg, Body, Config, Entry, Error, HardState, Inbox, MemStorage, Message,
    Node, PersistedState, Snapshot, Storage, StorageError, Transport,
};

/// A transport that records what is sent and delivers nothing.
#[derive(Clone, Default)]
struct Recorder {
    sent: Arc<Mutex<Vec<Message>>>,
    stopped: Arc<AtomicBool>,
}

impl Transport for Recorder {
    fn start(&self, _inbox: Inbox) {}
    fn send(&self, message: Message) {
        assert!(!self.stopped.load(Ordering::SeqCst), "send after stop");
        self.sent.lock().push(message);
    }
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

/// Storage that counts persist calls, takes its time, and can be told to fail.
#[derive(Clone, Default)]
struct Slow {
    inner: MemStorage,
    calls: Arc<AtomicUsize>,
    fail: Arc<AtomicBool>,
    /// Fail every persist with `ENOSPC`, changing nothing (as `FileStorage` does).
    full: Arc<AtomicBool>,
}

impl Storage for Slow {
    fn initial_state(&self) -> Result<PersistedState, StorageError> {
        self.inner.initial_state()
    }
    fn persist(
        &mut self,
        hard_state: Option<HardState>,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StorageError::Io(std::io::Error::other("disk on fire")));
        }
        if self.full.load(Ordering::SeqCst) {
            let e = std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left");
            return Err(StorageError::Io(e));
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(5));
        self.inner.persist(hard_state, snapshot, entries)
    }
    fn raft_state_size(&self) -> u64 {
        self.inner.raft_state_size()
    }
}

fn single(storage: Slow, transport: Recorder) -> (Node, crossbeam_channel::Receiver<ApplyMsg>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let node = Node::new(
        Config { seed: 1, ..Config::new(1, vec![1]) },
        Duration::from_millis(2),
        storage,
        transport,
        tx,
    )
    .unwrap();
    while !node.state().1 {
        thread::sleep(Duration::from_millis(2));
    }
    (node, rx)
}

/// Proposals that arrive while a write is in progress go out together: far fewer persists than
/// proposals, and every proposal applied once, in order.
#[test]
fn proposals_arriving_together_share_one_persist() {
    let storage = Slow::default();
    let (node, rx) = single(storage.clone(), Recorder::default());
    let before = storage.calls.load(Ordering::SeqCst);
    let mut last = 0;
    for i in 0..200 {
        last = node.start(Bytes::from(format!("c{i}"))).unwrap().0;
    }
    let mut seen = Vec::new();
    while seen.last() != Some(&last) {
        match rx.recv_timeout(Duration::from_secs(10)).expect("applied") {
            ApplyMsg::Command { index, data, .. } if !data.is_empty() => seen.push(index),
            _ => {}
        }
    }
    let persists = storage.calls.load(Ordering::SeqCst) - before;
    assert!(persists < 50, "{persists} persists for 200 proposals");
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "applied out of order");
    assert_eq!(seen.len(), 200);
    node.kill();
}

/// After kill the node's thread is gone and it sends nothing more, though it led a cluster
/// that would otherwise get a heartbeat every tick.
#[test]
fn a_killed_node_sends_nothing() {
    let transport = Recorder::default();
    let (tx, _rx) = crossbeam_channel::unbounded();
    let mut config = Config::new(1, vec![1, 2, 3]);
    config.election_ticks = 4;
    config.heartbeat_ticks = 1;
    config.seed = 3;
    let node =
        Node::new(config, Duration::from_millis(1), MemStorage::new(), transport.clone(), tx)
            .unwrap();
    // It campaigns (sending vote requests) within a few ticks.
    while transport.sent.lock().is_empty() {
        thread::sleep(Duration::from_millis(1));
    }
    node.kill();
    assert!(node.is_killed());
    let count = transport.sent.lock().len();
    thread::sleep(Duration::from_millis(100));
    assert_eq!(transport.sent.lock().len(), count, "sent after kill");
    assert_eq!(node.start(Bytes::from_static(b"x")), Err(Error::Stopped));
    assert_eq!(node.snapshot(1, Bytes::new()), Err(Error::Stopped));
    node.kill(); // Twice is fine.
}

/// A storage failure stops the node instead of letting it send what it could not persist.
#[test]
fn a_storage_failure_stops_the_node() {
    let storage = Slow::default();
    let (node, _rx) = single(storage.clone(), Recorder::default());
    storage.fail.store(true, Ordering::SeqCst);
    let _ = node.start(Bytes::from_static(b"doomed"));
    for _ in 0..500 {
        if node.failure().is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(2));
    }
    let failure = node.failure().expect("the node noticed");
    assert!(failure.contains("disk on fire"), "{failure}");
    assert!(node.is_killed());
    node.kill();
}

/// A full disk stalls the node instead of stopping it: nothing that depends on the failed
/// write is applied or acknowledged, the write is retried, and once space is back everything
/// goes on (no restart).
#[test]
fn a_full_disk_stalls_the_node_until_space_is_back() {
    let storage = Slow::default();
    let (node, rx) = single(storage.clone(), Recorder::default());
    node.start(Bytes::from_static(b"before")).unwrap();
    let applied = |rx: &Receiver<ApplyMsg>, want: &[u8]| loop {
        match rx.recv_timeout(Duration::from_secs(10)).expect("applied in time") {
            ApplyMsg::Command { data, .. } if data == want => return,
            _ => {}
        }
    };
    applied(&rx, b"before");
    storage.full.store(true, Ordering::SeqCst);
    let (index, _) = node.start(Bytes::from_static(b"while full")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.storage_no_space_errors() < 3 {
        assert!(Instant::now() < deadline, "the persist is not retried");
        thread::sleep(Duration::from_millis(2));
    }
    let stall = node.storage_stall().expect("the node says it is stalled");
    assert!(stall.contains("no space left"), "{stall}");
    assert!(node.failure().is_none() && !node.is_killed(), "a full disk stopped the node");
    assert!(node.state().1, "still the leader");
    assert!(node.status().commit_index < index, "committed without its own write");
    assert!(rx.try_recv().is_err(), "applied an entry that is not durable");
    storage.full.store(false, Ordering::SeqCst);
    applied(&rx, b"while full");
    assert_eq!(node.storage_stall(), None);
    node.start(Bytes::from_static(b"after")).unwrap();
    applied(&rx, b"after");
    let persisted = storage.inner.initial_state().unwrap().entries;
    assert!(persisted.iter().any(|e| e.data == "while full" && e.index == index));
    node.kill();
}

/// The service can snapshot from the apply loop, and the snapshot is persisted.
#[test]
fn snapshots_from_the_apply_loop_are_persisted() {
    let storage = Slow::default();
    let (node, rx) = single(storage.clone(), Recorder::default());
    let mut last = 0;
    for i in 0..20 {
        last = node.start(Bytes::from(format!("c{i}"))).unwrap().0;
    }
    loop {
        if let ApplyMsg::Command { index, .. } = rx.recv_timeout(Duration::from_secs(10)).unwrap()
            && index == last
        {
            node.snapshot(index, Bytes::from_static(b"state")).unwrap();
            break;
        }
    }
    for _ in 0..500 {
        if storage.inner.snapshot().is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(storage.inner.snapshot().unwrap().meta.last_included_index, last);
    assert_eq!(node.status().snapshot_index, last);
    node.kill();
}

/// Peers 2 and 3 of a three-node cluster, played by the test for node 1: they grant every
/// (pre-)vote and, while `answering`, acknowledge every AppendEntries (echoing its read round).
/// [`block_loop`](Self::block_loop) makes the node's event loop block in its next send (a
/// leader's appends and heartbeats go out from the event loop, before the write) until
/// [`release`](Self::release).
#[derive(Clone)]
struct Peers {
    inbox: Arc<Mutex<Option<Inbox>>>,
    answering: Arc<AtomicBool>,
    block: Arc<AtomicBool>,
    /// One message each time the event loop blocks.
    blocked: (Sender<()>, Receiver<()>),
    /// One message releases the blocked event loop.
    release: (Sender<()>, Receiver<()>),
    /// The event loop's sends, one batch per call, in order.
    loop_sends: Arc<Mutex<Vec<Vec<Message>>>>,
}

impl Peers {
    fn new() -> Peers {
        Peers {
            inbox: Arc::default(),
            answering: Arc::new(AtomicBool::new(true)),
            block: Arc::default(),
            blocked: crossbeam_channel::unbounded(),
            release: crossbeam_channel::unbounded(),
            loop_sends: Arc::default(),
        }
    }

    /// Blocks the event loop in its next send; returns once it is blocked.
    fn block_loop(&self) {
        self.block.store(true, Ordering::SeqCst);
        self.blocked.1.recv_timeout(Duration::from_secs(10)).expect("the event loop sends");
    }

    fn release(&self) {
        self.release.0.send(()).unwrap();
    }

    /// How many batches the event loop has sent (or started to send).
    fn loop_batches(&self) -> usize {
        self.loop_sends.lock().len()
    }

    /// Waits until the event loop has started its `n`th batch.
    fn await_loop_batches(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.loop_batches() < n {
            assert!(Instant::now() < deadline, "the event loop sent no more");
            thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Transport for Peers {
    fn start(&self, inbox: Inbox) {
        *self.inbox.lock() = Some(inbox);
    }

    fn send(&self, message: Message) {
        self.send_all(vec![message]);
    }

    fn send_all(&self, messages: Vec<Message>) {
        if thread::current().name() == Some("raft-node-1") {
            self.loop_sends.lock().push(messages.clone());
            if self.block.swap(false, Ordering::SeqCst) {
                self.blocked.0.send(()).unwrap();
                self.release.1.recv().unwrap();
            }
        }
        let inbox = self.inbox.lock().clone().expect("started");
        for m in messages {
            let body = match m.body {
                Body::RequestVote { pre_vote, .. } => {
                    Body::RequestVoteResponse { pre_vote, vote_granted: true }
                }
                Body::AppendEntries { prev_log_index, entries, read_round, .. }
                    if self.answering.load(Ordering::SeqCst) =>
                {
                    let match_index = prev_log_index + entries.len() as u64;
                    Body::AppendEntriesResponse {
                        outcome: AppendOutcome::Success { match_index },
                        read_round,
                    }
                }
                _ => continue,
            };
            inbox.deliver(Message { from: m.to, to: m.from, term: m.term, body });
        }
    }

    fn stop(&self) {}
}

/// 10 ms ticks, elections after 10 ticks, heartbeats every tick.
const TICK: Duration = Duration::from_millis(10);
const ELECTION_TICKS: u32 = 10;

/// Node 1 of three, with `peers` for the others, elected leader. With `lease`, CheckQuorum and
/// lease reads with a 2-tick margin; without, neither.
fn leader(peers: &Peers, lease: bool) -> (Node, Receiver<ApplyMsg>) {
    let mut config = Config::new(1, vec![1, 2, 3]);
    config.election_ticks = ELECTION_TICKS;
    config.heartbeat_ticks = 1;
    config.check_quorum = lease;
    config.lease_reads = lease;
    config.lease_margin_ticks = 2;
    let (tx, rx) = crossbeam_channel::unbounded();
    let config = Config { seed: 5, ..config };
    let node = Node::new(config, TICK, MemStorage::new(), peers.clone(), tx).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.state().1 {
        assert!(Instant::now() < deadline, "node 1 was not elected");
        thread::sleep(Duration::from_millis(2));
    }
    (node, rx)
}

/// Waits for the answer to read `ctx`.
fn await_read(rx: &Receiver<ApplyMsg>, ctx: u64) {
    loop {
        match rx.recv_timeout(Duration::from_secs(10)).expect("read answered") {
            ApplyMsg::Read { ctx: c, .. } if c == ctx => return,
            _ => {}
        }
    }
}

/// Ticks that fall due while the event loop is blocked are not lost: when it runs again, the
/// leader ticks for the time that passed (up to an election timeout), so it sends a
/// heartbeat for each of those ticks at once, not one. (Without CheckQuorum, which could
/// rightly step the leader down partway, depending on where its round stood.)
#[test]
fn a_leader_catches_up_the_ticks_its_blocked_loop_missed() {
    let peers = Peers::new();
    let (node, rx) = leader(&peers, false);
    node.read_index(1).unwrap();
    await_read(&rx, 1);
    peers.block_loop();
    let released_at = peers.loop_batches();
    // Time itself is what the test is about: three election timeouts pass while it is blocked.
    thread::sleep(TICK * 3 * ELECTION_TICKS);
    peers.release();
    let heartbeats = |batch: &[Message]| {
        batch.iter().filter(|m| m.to == 2 && matches!(m.body, Body::AppendEntries { .. })).count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let batch = peers.loop_sends.lock()[released_at..]
            .iter()
            .find(|batch| heartbeats(batch) > 0)
            .cloned();
        if let Some(batch) = batch {
            break batch;
        }
        assert!(Instant::now() < deadline, "no heartbeat after the loop was released");
        thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(
        heartbeats(&first),
        ELECTION_TICKS as usize,
        "a heartbeat per tick caught up (capped at an election timeout): {first:?}"
    );
    assert!(node.state().1, "still the leader");
    node.kill();
}

/// A leader's lease is counted in ticks. If its event loop is late, the ticks that fell due
/// meanwhile must still count: a read asked once the lease has run out in real time is not
/// answered from the lease, however late the loop is (here it is blocked, and the peers went
/// silent, so nothing else can confirm the read either).
#[test]
fn a_late_event_loop_does_not_stretch_the_lease() {
    let peers = Peers::new();
    let (node, rx) = leader(&peers, true);
    node.read_index(1).unwrap();
    await_read(&rx, 1);
    peers.answering.store(false, Ordering::SeqCst);
    peers.block_loop();
    let released_at = peers.loop_batches();
    // Time itself is what the test is about: the lease (8 ticks from a round the peers
    // answered before they went silent) runs out while the loop is blocked.
    thread::sleep(TICK * 3 * ELECTION_TICKS);
    let asked = node.read_index(2);
    peers.release();
    if asked.is_ok() {
        // The Ready holding a lease answer to read 2 would be the one after the blocked send:
        // once the loop starts the send after that, the answer would have been delivered.
        peers.await_loop_batches(released_at + 2);
        let answered: Vec<ApplyMsg> =
            rx.try_iter().filter(|m| matches!(m, ApplyMsg::Read { ctx: 2, .. })).collect();
        assert!(answered.is_empty(), "read 2 answered from an expired lease: {answered:?}");
    } else {
        // Catching up, CheckQuorum found no answers and stepped down: also no lease read.
        assert!(matches!(asked, Err(Error::NotLeader { .. })), "{asked:?}");
    }
    node.kill();
}
