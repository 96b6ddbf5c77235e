//! Snapshots on real disks, as the server binary runs them: Raft's log in `FileStorage`, the
//! state in an LSM database on the file system, and snapshots built, sent, received and
//! restored through spool files, a chunk at a time. A replica that starts empty after the
//! others compacted their logs catches up through such a snapshot, and ends with every pair.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kvclient::Clerk;
use kvclient::proto::{Op, Outcome};
use kvserver::{KvServer, KvStateMachine, ServerConfig, StateMachine};
use labrpc::{ClockMode, Network, Server};
use raft::{Config, FileStorage, SnapshotSpool, Storage};
use testkit::LabrpcTransport;
use testkit::kv::LabrpcServers;

const N: usize = 3;
const KEYS: usize = 300;
const VALUE_BYTES: usize = 4096;

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open_machine(dir: &Path) -> KvStateMachine {
    let db = lsm::Db::open(dir.join("data"), lsm::Options::default()).unwrap();
    KvStateMachine::new(db).unwrap()
}

fn start(net: &Network, i: usize, dir: &Path) -> KvServer {
    let mut ends = BTreeMap::new();
    for j in (0..N).filter(|&j| j != i) {
        let name = format!("{i}->{j}");
        let end = net.make_end(&name);
        net.connect(&name, &j.to_string());
        net.enable(&name, true);
        ends.insert(j as u64, end);
    }
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let mut config = Config::new(i as u64, (0..N as u64).collect());
    config.heartbeat_ticks = 5;
    config.election_ticks = 20;
    config.snapshot_chunk_bytes = 64 << 10;
    config.snapshot_spool = SnapshotSpool::Dir(spool);
    config.seed = 7 + i as u64;
    let (transport, raft_service) = LabrpcTransport::new(ends);
    let server = KvServer::start(
        config,
        Duration::from_millis(10),
        FileStorage::open(dir.join("raft")).unwrap(),
        transport,
        Box::new(open_machine(dir)),
        ServerConfig { max_raft_state: Some(256 << 10), ..ServerConfig::default() },
    )
    .unwrap();
    let services =
        Server::new().with_service(raft_service).with_service(testkit::kv::service(&server));
    net.add_server(&i.to_string(), services);
    server
}

fn value(i: usize) -> Vec<u8> {
    format!("{i:06}").into_bytes().repeat(VALUE_BYTES / 6)
}

#[test]
fn an_empty_replica_catches_up_through_a_streamed_snapshot() {
    let base = std::env::temp_dir().join(format!("kv-stream-snap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let _cleanup = TempDir(base.clone());
    let dirs: Vec<PathBuf> = (0..N).map(|i| base.join(i.to_string())).collect();
    let net = Network::new(ClockMode::RealTime);
    // Replica 2 stays down while the others take the writes and compact their logs.
    let mut servers: Vec<KvServer> = (0..2).map(|i| start(&net, i, &dirs[i])).collect();
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
    for i in 0..KEYS {
        clerk.put(format!("key{i:04}"), value(i));
    }
    clerk.append("key0000", "!");
    let leader_snapshot = (0..2).map(|i| servers[i].node().status().snapshot_index).max().unwrap();
    assert!(leader_snapshot > 1, "no replica compacted its log");

    servers.push(start(&net, 2, &dirs[2]));
    let target = servers[0].applied_index().max(servers[1].applied_index());
    let deadline = Instant::now() + Duration::from_secs(30);
    while servers[2].applied_index() < target {
        assert!(Instant::now() < deadline, "replica 2 did not catch up to {target}");
        std::thread::sleep(Duration::from_millis(20));
    }
    for s in &servers {
        s.kill();
    }

    // Replica 2 holds a snapshot on disk (it could only have caught up through one) ...
    let storage = FileStorage::open(dirs[2].join("raft")).unwrap();
    let snapshot = storage.initial_state().unwrap().snapshot.expect("a persisted snapshot");
    // (Its snapshot may stop short of the last writes, which then came through the log.)
    assert!(snapshot.data.len() > (KEYS * VALUE_BYTES / 2) as u64, "{:?}", snapshot.data);
    assert!(!snapshot.data.is_in_memory());
    // ... left nothing behind in its spool directory ...
    let spooled: Vec<_> = std::fs::read_dir(dirs[2].join("spool")).unwrap().collect();
    assert!(spooled.is_empty(), "spool files left behind: {spooled:?}");
    // ... and has every pair in its own database.
    let machine = open_machine(&dirs[2]);
    assert!(machine.applied_index() >= target);
    for i in 0..KEYS {
        let key = format!("key{i:04}");
        let Outcome::Value(Some(got)) = machine.read(&Op::Get { key: key.clone().into() }).unwrap()
        else {
            panic!("{key} is missing on the caught-up replica");
        };
        let mut want = value(i);
        if i == 0 {
            want.push(b'!');
        }
        assert!(got == want, "{key} differs on the caught-up replica");
    }
}

/// `RssAnon` (anonymous resident memory: the heap, not mapped files) in bytes.
fn anon_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A state far larger than what a snapshot may hold in memory (256 MiB by default;
/// `KV_SNAPSHOT_MIB` changes it) is snapshotted into a spool file and restored into a fresh
/// machine, while a thread samples the process's anonymous memory: its peak may grow by at
/// most a quarter of the state. Long (about a minute in release): runs with `--long`.
#[test]
#[ignore = "long: cargo xtask test-all --long"]
fn a_large_state_snapshots_and_restores_in_bounded_memory() {
    let mib: usize =
        std::env::var("KV_SNAPSHOT_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let base = std::env::temp_dir().join(format!("kv-big-snap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let _cleanup = TempDir(base.clone());
    let keys = mib * 256; // 4 KiB values.
    let mut source = open_machine(&base.join("source"));
    let t = Instant::now();
    // Session 1, registered as a leader would, then its writes 1, 2, 3, …
    let command = |seq, op| kvserver::command::Command {
        time_ms: Some(1),
        request: kvclient::proto::Request { client_id: 1, seq, op, ordered: false },
    };
    let register = Op::Register { id: 1, ttl_ms: 3_600_000, retire: None };
    assert_eq!(source.apply(1, &command(0, register)).unwrap(), Outcome::Registered { id: 1 });
    for i in 0..keys {
        let put = Op::Put { key: format!("key{i:08}").into(), value: value(i).into() };
        source.apply(i as u64 + 2, &command(i as u64 + 1, put)).unwrap();
    }
    source.sync().unwrap();
    eprintln!("wrote {keys} keys ({mib} MiB of values) in {:?}", t.elapsed());

    let stop = Arc::new(AtomicBool::new(false));
    let baseline = anon_bytes();
    let sampler = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Acquire) {
                peak = peak.max(anon_bytes());
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        })
    };
    let spool = base.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let t = Instant::now();
    let mut out = SnapshotSpool::Dir(spool).writer().unwrap();
    source.snapshot(&mut out).unwrap();
    let data = out.finish().unwrap();
    let took_snapshot = t.elapsed();
    let mut target = open_machine(&base.join("target"));
    let t = Instant::now();
    target.restore(keys as u64, &mut data.reader()).unwrap();
    let took_restore = t.elapsed();
    stop.store(true, Ordering::Release);
    let peak = sampler.join().unwrap();
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "snapshot of {} MiB written in {took_snapshot:?}, restored in {took_restore:?}; anonymous \
         memory: baseline {} MiB, peak {} MiB (+{} MiB)",
        data.len() >> 20,
        baseline >> 20,
        peak >> 20,
        growth >> 20
    );
    assert!(data.len() as usize > mib << 20);
    assert!(growth < (data.len() / 4), "memory grew by {growth} bytes");
    assert_eq!(target.read(&Op::Count).unwrap(), Outcome::Count(keys as u64));
    for i in [0, keys / 2, keys - 1] {
        let Outcome::Value(Some(got)) =
            target.read(&Op::Get { key: format!("key{i:08}").into() }).unwrap()
        else {
            panic!("key {i} missing after restore");
        };
        assert!(got == value(i));
    }
}
