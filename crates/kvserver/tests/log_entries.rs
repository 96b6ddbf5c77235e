//! Committed log entries never halt the state machine: an entry that is not a request (written
//! by a faulty or forged leader, or in a format this release does not know) is skipped by the
//! replica, which applies the entries around it and keeps serving. Before, the apply thread
//! stopped the replica with "log entry N is not a request", and did so again on every restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kvclient::proto::{Op, Outcome, Reply, Request};
use kvserver::{KvServer, KvStateMachine, ServerConfig, command};
use lsm::MemFs;
use raft::{Entry, HardState, MemStorage, Storage};
use testkit::LabrpcTransport;

fn put(seq: u64, key: &str, value: &str) -> Request {
    Request {
        client_id: 42,
        seq,
        op: Op::Put { key: Bytes::from(key.to_string()), value: Bytes::from(value.to_string()) },
        ordered: false,
    }
}

/// The leader's clock (entries stamped long ago would find their session expired).
fn now() -> u64 {
    command::wall_clock_ms()
}

/// Session 42's registration, as a leader would append it.
fn register_42() -> Bytes {
    let op = Op::Register { id: 42, ttl_ms: 3_600_000, retire: None };
    command::encode_stamped(&Request { client_id: 1, seq: 0, op, ordered: false }, now())
}

/// Registers a session through `server` and returns its id.
fn register(server: &KvServer) -> u64 {
    let op = Op::Register { id: 0, ttl_ms: 0, retire: None };
    match server.handle(Request { client_id: 1, seq: 0, op, ordered: false }) {
        Reply::Done(Outcome::Registered { id }) => id,
        other => panic!("{other:?}"),
    }
}

/// A single-node replica whose storage already holds `entries`, all committed.
fn replica_over(entries: Vec<Bytes>) -> KvServer {
    let mut storage = MemStorage::new();
    let entries: Vec<Entry> = entries
        .into_iter()
        .enumerate()
        .map(|(i, data)| Entry { term: 1, index: i as u64 + 1, data })
        .collect();
    let hard_state =
        HardState { current_term: 1, voted_for: Some(1), commit_index: entries.len() as u64 };
    storage.persist(Some(hard_state), None, &entries).unwrap();
    let (transport, _service) = LabrpcTransport::new(BTreeMap::new());
    let options = lsm::Options { fs: Arc::new(MemFs::new()), wal: false, ..Default::default() };
    let db = lsm::Db::open("/kv", options).unwrap();
    KvServer::start(
        raft::Config { seed: 1, ..raft::Config::new(1, vec![1]) },
        Duration::from_millis(10),
        storage,
        transport,
        Box::new(KvStateMachine::new(db).unwrap()),
        ServerConfig::default(),
    )
    .unwrap()
}

/// Waits until the single node has elected itself.
fn wait_leader(server: &KvServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.node().state().1 {
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn get(server: &KvServer, seq: u64, key: &str) -> Reply {
    let op = Op::Get { key: Bytes::from(key.to_string()) };
    server.handle(Request { client_id: 7, seq, op, ordered: false })
}

#[test]
fn entries_that_are_not_requests_are_skipped_and_the_replica_keeps_serving() {
    let mut unknown_version = command::encode(&put(3, "c", "3")).to_vec();
    unknown_version[0] = command::FORMAT_VERSION + 1;
    let v1_put = Request { client_id: 43, ..put(1, "v1", "old") };
    let server = replica_over(vec![
        register_42(),
        command::encode_stamped(&put(1, "a", "1"), now()),
        Bytes::from_static(&[0xff]),
        Bytes::from(unknown_version),
        Bytes::from_static(&[command::FORMAT_VERSION, 0xff, 0xff]),
        command::encode_stamped(&put(2, "b", "2"), now()),
        // The previous release's format is still read.
        command::encode_v1(&v1_put),
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.applied_index() < 7 {
        assert!(server.failure().is_none(), "the replica stopped: {:?}", server.failure());
        assert!(Instant::now() < deadline, "stuck at index {}", server.applied_index());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.failure(), None);
    wait_leader(&server);
    let value = |v: &str| Reply::Done(Outcome::Value(Some(Bytes::from(v.to_string()))));
    assert_eq!(get(&server, 1, "a"), value("1"));
    assert_eq!(get(&server, 2, "b"), value("2"));
    assert_eq!(get(&server, 3, "c"), Reply::Done(Outcome::Value(None)), "never applied");
    assert_eq!(get(&server, 5, "v1"), value("old"));
    // New writes go on after the skipped entries.
    assert_eq!(server.handle(put(3, "d", "4")), Reply::Done(Outcome::Written));
    assert_eq!(get(&server, 4, "d"), value("4"));
    server.kill();
}

#[test]
fn a_write_over_the_entry_limit_is_refused_at_once() {
    let server = replica_over(vec![]);
    wait_leader(&server);
    let id = register(&server);
    let big = "x".repeat(17 << 20); // Over the default max_entry_bytes of 16 MiB.
    // Refused, not proposed: no timeout, no "wrong leader" that would send the client round.
    match server.handle(Request { client_id: id, ..put(1, "big", &big) }) {
        Reply::Refused(reason) => assert!(reason.contains("exceeds the limit"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let small = Request { client_id: id, ..put(1, "small", "v") };
    assert_eq!(server.handle(small), Reply::Done(Outcome::Written));
    server.kill();
}
