//! A three-replica key-value cluster in one process, on the simulated network: writes and
//! reads through a clerk, the leader killed, the service carrying on, the old leader restarted
//! and catching up.
//!
//! ```text
//! cargo run -p raftkv-kvserver --example cluster
//! ```
//!
//! Each replica is a `KvServer`: a Raft node (log and hard state in `raft::MemStorage`, the
//! course's in-memory "disk") and an LSM-backed state machine (on `lsm::MemFs`). The real
//! deployment (TCP between peers, the Redis protocol for clients, a server binary) is the next
//! piece of work; this example shows the same service on the simulated network.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvclient::Clerk;
use kvserver::{KvServer, KvStateMachine, ServerConfig};
use labrpc::{ClockMode, Network, Server};
use lsm::MemFs;
use raft::{Config, MemStorage};
use testkit::LabrpcTransport;
use testkit::kv::LabrpcServers;

const N: usize = 3;

/// What a replica keeps across a crash: its Raft storage and its disk.
struct Disk {
    raft: MemStorage,
    fs: MemFs,
}

fn start(net: &Network, i: usize, disk: &mut Disk, incarnation: u64) -> KvServer {
    let mut ends = BTreeMap::new();
    for j in (0..N).filter(|&j| j != i) {
        let name = format!("{i}->{j}#{incarnation}");
        let end = net.make_end(&name);
        net.connect(&name, &j.to_string());
        net.enable(&name, true);
        ends.insert(j as u64, end);
    }
    // A restarted replica sees only what was durable.
    disk.raft = disk.raft.crash_copy();
    disk.fs = disk.fs.crash_copy();
    let options = lsm::Options { fs: Arc::new(disk.fs.clone()), ..lsm::Options::default() };
    let db = lsm::Db::open("/data", options).expect("open the replica's database");
    let machine = KvStateMachine::new(db).expect("read the applied index");
    let (transport, raft_service) = LabrpcTransport::new(ends);
    let mut config = Config::new(i as u64, (0..N as u64).collect());
    config.heartbeat_ticks = 5;
    config.election_ticks = 20;
    config.seed = incarnation * 10 + i as u64;
    let server = KvServer::start(
        config,
        Duration::from_millis(10),
        disk.raft.clone(),
        transport,
        Box::new(machine),
        ServerConfig { max_raft_state: Some(64 << 10), ..ServerConfig::default() },
    )
    .expect("start a replica");
    let services =
        Server::new().with_service(raft_service).with_service(testkit::kv::service(&server));
    net.add_server(&i.to_string(), services);
    server
}

fn main() {
    let net = Network::new(ClockMode::RealTime);
    let mut disks: Vec<Disk> =
        (0..N).map(|_| Disk { raft: MemStorage::new(), fs: MemFs::new() }).collect();
    let mut servers: Vec<KvServer> = (0..N).map(|i| start(&net, i, &mut disks[i], 1)).collect();
    let ends = (0..N)
        .map(|j| {
            let name = format!("clerk->{j}");
            let end = net.make_end(&name);
            net.connect(&name, &j.to_string());
            net.enable(&name, true);
            end
        })
        .collect();
    let mut clerk = Clerk::new(LabrpcServers::new(ends));

    let t = Instant::now();
    clerk.put("greeting", "hello");
    clerk.append("greeting", ", world");
    for i in 0..100 {
        clerk.put(format!("key{i:03}"), format!("value {i}"));
    }
    println!(
        "wrote 102 keys in {:?}; greeting = {:?}",
        t.elapsed(),
        String::from_utf8_lossy(&clerk.get("greeting").unwrap_or_default())
    );
    let leader = (0..N).find(|&i| servers[i].node().state().1).expect("a leader");
    println!("replica {leader} leads; killing it");
    net.delete_server(&leader.to_string());
    servers[leader].kill();

    let t = Instant::now();
    clerk.put("after", "the crash");
    let new_leader = (0..N).find(|&i| i != leader && servers[i].node().state().1);
    println!("the next write went through {:?} later, via replica {new_leader:?}", t.elapsed());
    let page = clerk.scan("key", Some("key005".into()), 10);
    let keys: Vec<String> = page.iter().map(|(k, _)| String::from_utf8_lossy(k).into()).collect();
    println!("scan key..key005: {keys:?}");

    servers[leader] = start(&net, leader, &mut disks[leader], 2);
    let t = Instant::now();
    let target = servers[new_leader.unwrap_or(0)].applied_index();
    while servers[leader].applied_index() < target {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("replica {leader} restarted and caught up to index {target} in {:?}", t.elapsed());
    assert_eq!(clerk.get("after").as_deref(), Some(&b"the crash"[..]));
    println!("every write is there; done");
    for s in &servers {
        s.kill();
    }
}
