//! The `Node` driver: batching, kill, apply delivery, storage failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use labrpc::Rng;
use parking_lot::Mutex;
use raft::{
    ApplyMsg, Config, Entry, Error, HardState, Inbox, MemStorage, Message, Node, PersistedState,
    Snapshot, Storage, StorageError, Transport,
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
        Config::new(1, vec![1]),
        Duration::from_millis(2),
        storage,
        transport,
        tx,
        Rng::new(1),
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
    let node = Node::new(
        config,
        Duration::from_millis(1),
        MemStorage::new(),
        transport.clone(),
        tx,
        Rng::new(3),
    )
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
