//! What the in-process TCP tests share (feature `kv`): a replica started as the `kvserver`
//! program starts one (Raft over `raft_tcp::TcpTransport`, 50 ms heartbeats, elections after
//! 0.5 to 1 s, the LSM without a WAL, follower reads and forwarded writes), with its storage in
//! memory.
//!
//! Each test that runs a cluster holds a [`watchdog`] for as long as the cluster lives: a test
//! still running at [`TEST_LIMIT`] ends the test process with a message naming it, so no test
//! can hang CI.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use kvserver::redis::{RedisConfig, RedisServer};
use kvserver::{KvServer, KvStateMachine, ServerConfig};
use labrpc::watchdog::Watchdog;
use lsm::MemFs;
use raft::{MemStorage, NodeId};
use raft_tcp::{TcpConfig, TcpTransport};

/// How long anything that should happen may take, on a loaded machine.
pub const WAIT: Duration = Duration::from_secs(60);
/// How long one test that runs a cluster may take before its [`watchdog`] ends the process
/// (`LAB_TEST_LIMIT_MS` overrides it).
pub const TEST_LIMIT: Duration = Duration::from_secs(300);
/// The Raft tick.
pub const TICK: Duration = Duration::from_millis(10);
/// The members' ids.
pub const IDS: [NodeId; 3] = [1, 2, 3];

/// Starts the calling test's watchdog (see the module's description); it watches until dropped.
pub fn watchdog() -> Watchdog {
    Watchdog::start(TEST_LIMIT)
}

/// A listener on a free port of 127.0.0.1.
pub fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("a free port")
}

/// Starts replica `id` of a cluster whose Raft peers listen at `peers`.
pub fn start_replica(
    id: NodeId,
    raft_listener: TcpListener,
    peers: &BTreeMap<NodeId, SocketAddr>,
    request_timeout: Duration,
) -> KvServer {
    let config = ServerConfig {
        follower_reads: true,
        forward_writes: true,
        request_timeout,
        ..ServerConfig::default()
    };
    start_replica_with(id, raft_listener, peers, config)
}

/// [`start_replica`] with another server configuration.
pub fn start_replica_with(
    id: NodeId,
    raft_listener: TcpListener,
    peers: &BTreeMap<NodeId, SocketAddr>,
    config: ServerConfig,
) -> KvServer {
    let transport = TcpTransport::from_listener(raft_listener, TcpConfig::new(id, peers.clone()))
        .expect("a valid transport configuration");
    let mut raft = raft::Config::new(id, peers.keys().copied().collect());
    raft.heartbeat_ticks = 5;
    raft.election_ticks = 50;
    raft.seed = id * 7919;
    let options =
        lsm::Options { fs: Arc::new(MemFs::new()), wal: false, ..lsm::Options::default() };
    let db = lsm::Db::open("/kv", options).expect("open the database");
    let machine = KvStateMachine::new(db).expect("read the applied index");
    KvServer::start(raft, TICK, MemStorage::new(), transport, Box::new(machine), config)
        .expect("start the replica")
}

/// A cluster of `n` replicas in this process, nodes 1 to `n`, each behind its own Redis front
/// end on 127.0.0.1; every replica stops when it is dropped. For examples and benchmarks that
/// need a cluster to talk to; the tests build their own, to kill and restart members.
pub struct LocalCluster {
    nodes: Vec<(NodeId, SocketAddr)>,
    running: Vec<(KvServer, RedisServer)>,
}

impl LocalCluster {
    /// Starts the replicas (they elect a leader on their own shortly after).
    ///
    /// # Panics
    /// If a port cannot be bound or a replica cannot start.
    pub fn start(n: u64) -> LocalCluster {
        let ids: Vec<NodeId> = (1..=n).collect();
        let raft: Vec<TcpListener> = ids.iter().map(|_| bind()).collect();
        let clients: Vec<TcpListener> = ids.iter().map(|_| bind()).collect();
        let peers: BTreeMap<NodeId, SocketAddr> =
            ids.iter().zip(&raft).map(|(&id, l)| (id, l.local_addr().expect("bound"))).collect();
        let mut nodes = Vec::new();
        let mut running = Vec::new();
        for ((id, raft), client) in ids.into_iter().zip(raft).zip(clients) {
            nodes.push((id, client.local_addr().expect("bound")));
            let server = start_replica(id, raft, &peers, Duration::from_secs(2));
            let redis = RedisServer::start(client, server.clone(), RedisConfig::default())
                .expect("serve clients");
            running.push((server, redis));
        }
        LocalCluster { nodes, running }
    }

    /// Each node's id and client (Redis protocol) address.
    pub fn nodes(&self) -> Vec<(NodeId, SocketAddr)> {
        self.nodes.clone()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for (server, redis) in self.running.drain(..) {
            redis.stop();
            server.kill();
        }
    }
}
