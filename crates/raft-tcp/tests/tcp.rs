//! Raft over real TCP: three `Node`s on 127.0.0.1 elect a leader and replicate commands; when
//! the leader is killed the other two carry on, and the old leader, restarted on its address
//! from what it persisted, catches up.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use labrpc::watchdog::Watchdog;
use parking_lot::Mutex;
use raft::{ApplyMsg, Config, Index, MemStorage, Node, NodeId};
use raft_tcp::{TcpConfig, TcpTransport};

/// How long anything that should happen may take, on a loaded machine.
const WAIT: Duration = Duration::from_secs(10);
/// How long one test may run before its watchdog ends the test process with a message naming
/// it (`LAB_TEST_LIMIT_MS` overrides it).
const TEST_LIMIT: Duration = Duration::from_secs(120);
const TICK: Duration = Duration::from_millis(10);
const IDS: [NodeId; 3] = [1, 2, 3];

/// One running member: its node, what it persisted, and the commands it applied, in order
/// (including the leaders' empty no-ops).
struct Member {
    node: Node,
    storage: MemStorage,
    applied: Arc<Mutex<Vec<(Index, Bytes)>>>,
}

struct Cluster {
    addrs: BTreeMap<NodeId, SocketAddr>,
    /// Each member's TLS, when the cluster runs over mutual TLS.
    tls: Option<BTreeMap<NodeId, raft_tcp::PeerTls>>,
    members: BTreeMap<NodeId, Member>,
    /// Fails the test, rather than hanging CI, if it is still running at [`TEST_LIMIT`].
    _watchdog: Watchdog,
}

impl Cluster {
    /// Three members, over mutual TLS if `tls` (a CA and a certificate per member made here).
    fn new(tls: bool) -> Cluster {
        let listeners: Vec<_> =
            IDS.iter().map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let addrs = IDS.iter().zip(&listeners).map(|(&id, l)| (id, l.local_addr().unwrap()));
        let mut cluster = Cluster {
            addrs: addrs.collect(),
            tls: tls.then(member_certificates),
            members: BTreeMap::new(),
            _watchdog: Watchdog::start(TEST_LIMIT),
        };
        for (id, listener) in IDS.into_iter().zip(listeners) {
            cluster.start(id, listener, MemStorage::new());
        }
        cluster
    }

    /// Starts node `id` on `listener` from `storage`; an applier thread records what it applies.
    fn start(&mut self, id: NodeId, listener: TcpListener, storage: MemStorage) {
        let mut config = TcpConfig::new(id, self.addrs.clone());
        config.tls = self.tls.as_ref().map(|tls| tls[&id].clone());
        let transport =
            TcpTransport::from_listener(listener, config).expect("valid transport configuration");
        let (tx, rx) = crossbeam_channel::unbounded();
        let node = Node::new(
            Config { seed: id * 7919, ..Config::new(id, IDS.to_vec()) },
            TICK,
            storage.clone(),
            transport,
            tx,
        )
        .expect("valid raft configuration");
        let applied = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&applied);
        // Ends when the node is killed and drops its end of the channel.
        thread::spawn(move || {
            for msg in rx {
                if let ApplyMsg::Command { index, data, .. } = msg {
                    record.lock().push((index, data));
                }
            }
        });
        self.members.insert(id, Member { node, storage, applied });
    }

    /// Kills node `id`, as a crash would; returns what it had persisted.
    fn crash(&mut self, id: NodeId) -> MemStorage {
        let member = self.members.remove(&id).expect("running");
        member.node.kill();
        member.storage.crash_copy()
    }

    /// Restarts node `id` on its old address from `storage`.
    fn restart(&mut self, id: NodeId, storage: MemStorage) {
        let listener = TcpListener::bind(self.addrs[&id]).expect("the killed node freed its port");
        self.start(id, listener, storage);
    }

    /// The running node that leads in the highest term, once there is one.
    fn leader(&self) -> NodeId {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self
                .members
                .iter()
                .map(|(&id, m)| (m.node.state(), id))
                .filter(|&((_, is_leader), _)| is_leader)
                .max()
                .map(|(_, id)| id);
            if let Some(id) = leader {
                return id;
            }
            assert!(Instant::now() < deadline, "no leader within {WAIT:?}");
            thread::sleep(TICK);
        }
    }

    /// Proposes `command` on the leader until every running node has applied it, and returns
    /// its index. A proposal is lost if leadership changes before it commits: then another entry
    /// takes its index, and it is proposed again (never twice while it might still commit).
    fn replicate(&self, command: &str) -> Index {
        let data = Bytes::copy_from_slice(command.as_bytes());
        let deadline = Instant::now() + WAIT;
        'propose: while Instant::now() < deadline {
            let leader = self.leader();
            let Ok((index, _)) = self.members[&leader].node.start(data.clone()) else {
                thread::sleep(TICK);
                continue;
            };
            while Instant::now() < deadline {
                let at_index: Vec<_> = self
                    .members
                    .values()
                    .map(|m| m.applied.lock().iter().find(|(i, _)| *i == index).cloned())
                    .collect();
                if at_index.iter().all(|applied| applied.as_ref().is_some_and(|(_, d)| *d == data))
                {
                    return index;
                }
                if at_index.iter().flatten().any(|(_, d)| *d != data) {
                    continue 'propose;
                }
                thread::sleep(TICK);
            }
        }
        panic!("{command:?} was not applied everywhere within {WAIT:?}");
    }

    /// The commands node `id` applied, without the no-ops.
    fn commands(&self, id: NodeId) -> Vec<Bytes> {
        self.applied(id).into_iter().map(|(_, data)| data).filter(|d| !d.is_empty()).collect()
    }

    /// What node `id` has applied.
    fn applied(&self, id: NodeId) -> Vec<(Index, Bytes)> {
        self.members[&id].applied.lock().clone()
    }

    /// Every running node applied the same commands at the same indexes, up to the shortest
    /// history (state machine safety).
    fn check_agreement(&self) {
        let histories: Vec<_> = self.members.keys().map(|&id| (id, self.applied(id))).collect();
        for (id, history) in &histories[1..] {
            let (first, reference) = &histories[0];
            let common = history.len().min(reference.len());
            assert_eq!(history[..common], reference[..common], "nodes {first} and {id} disagree");
        }
    }

    fn shutdown(self) {
        for member in self.members.values() {
            member.node.kill();
        }
    }
}

/// A CA, and for each member a certificate naming it (`raftkv-node-<id>`), as [`PeerTls`].
fn member_certificates() -> BTreeMap<NodeId, raft_tcp::PeerTls> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    IDS.into_iter()
        .map(|id| {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec![raft_tcp::tls::node_name(id)]).unwrap();
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            let (cert, key) = (cert.pem(), key.serialize_pem());
            let tls =
                raft_tcp::PeerTls::from_pem(cert.as_bytes(), key.as_bytes(), ca.pem().as_bytes());
            (id, tls.unwrap())
        })
        .collect()
}

#[test]
fn a_cluster_replicates_over_tcp() {
    replicates(false);
}

#[test]
fn a_cluster_replicates_over_tls() {
    replicates(true);
}

fn replicates(tls: bool) {
    let cluster = Cluster::new(tls);
    let mut last = 0;
    for i in 0..20 {
        let index = cluster.replicate(&format!("command {i}"));
        assert!(index > last, "indexes must grow");
        last = index;
    }
    cluster.check_agreement();
    for id in IDS {
        let expected: Vec<_> = (0..20).map(|i| Bytes::from(format!("command {i}"))).collect();
        assert_eq!(cluster.commands(id), expected, "node {id} applied something else");
    }
    cluster.shutdown();
}

#[test]
fn a_killed_leader_is_replaced_and_catches_up_after_restart() {
    leader_killed_and_restarted(false);
}

#[test]
fn over_tls_a_killed_leader_is_replaced_and_catches_up_after_restart() {
    leader_killed_and_restarted(true);
}

fn leader_killed_and_restarted(tls: bool) {
    let mut cluster = Cluster::new(tls);
    for i in 0..5 {
        cluster.replicate(&format!("before {i}"));
    }
    let old_leader = cluster.leader();
    let saved = cluster.crash(old_leader);

    // The other two elect one of themselves and keep committing.
    for i in 0..5 {
        cluster.replicate(&format!("during {i}"));
    }
    assert_ne!(cluster.leader(), old_leader);

    // The old leader comes back on its address and learns everything it missed.
    cluster.restart(old_leader, saved);
    let last = cluster.replicate("after");
    cluster.check_agreement();
    let caught_up = cluster.applied(old_leader);
    assert_eq!(caught_up.last().map(|(index, _)| *index), Some(last));
    let expected: Vec<_> = (0..5)
        .map(|i| format!("before {i}"))
        .chain((0..5).map(|i| format!("during {i}")))
        .chain(["after".to_string()])
        .map(Bytes::from)
        .collect();
    assert_eq!(cluster.commands(old_leader), expected);
    cluster.shutdown();
}
