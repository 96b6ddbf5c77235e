//! `kvreadbench`: read throughput of the key-value service on an in-process 3-node cluster,
//! with reads through the log, through ReadIndex, and through a leader lease.
//!
//! ```text
//! cargo run --release -p benches --bin kvreadbench -- --clients 16 --seconds 5
//! ```
//!
//! Three `KvServer`s on a reliable labrpc network (real time), each with `FileStorage` for its
//! Raft log (fsync on) and an LSM database, in a fresh temporary directory per mode. The keys
//! are loaded first; then `--clients` clerks read random keys for `--seconds`, and the line for
//! each mode gives reads per second and the p50 and p99 latency.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use kvclient::Clerk;
use kvserver::{KvServer, KvStateMachine, ReadMode, ServerConfig};
use labrpc::{ClockMode, Network, Rng, Server};
use raft::{Config as RaftConfig, FileStorage};
use testkit::LabrpcTransport;
use testkit::kv::LabrpcServers;

#[derive(Parser, Debug)]
#[command(about = "Read throughput: through the log vs ReadIndex vs lease, 3 in-process nodes")]
struct Args {
    /// Concurrent clerks, each issuing one read at a time.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds of reads per mode.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Keys loaded before the reads (each read picks one at random).
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Modes to run, comma-separated: log, readindex, lease.
    #[arg(long, default_value = "log,readindex,lease")]
    modes: String,
    /// Where the servers' files go (a subdirectory per mode, deleted afterwards).
    #[arg(long, default_value = "/tmp/kvreadbench")]
    dir: PathBuf,
}

const TICK: Duration = Duration::from_millis(10);

struct Cluster {
    net: Arc<Network>,
    servers: Vec<KvServer>,
}

fn start(dir: &std::path::Path, mode: ReadMode) -> Cluster {
    let n = 3usize;
    let net = Arc::new(Network::new(ClockMode::RealTime));
    let mut servers = Vec::new();
    for i in 0..n {
        let mut ends = BTreeMap::new();
        for j in 0..n {
            let name = format!("{i}->{j}");
            let end = net.make_end(&name);
            net.connect(&name, &j.to_string());
            net.enable(&name, true);
            if j != i {
                ends.insert(j as u64, end);
            }
        }
        let storage = FileStorage::open(dir.join(format!("raft-{i}"))).expect("raft storage");
        let options = lsm::Options::default();
        let db = lsm::Db::open(dir.join(format!("kv-{i}")), options).expect("open the LSM");
        let machine = KvStateMachine::new(db).expect("state machine");
        let (transport, raft_service) = LabrpcTransport::new(ends);
        let mut raft = RaftConfig::new(i as u64, (0..n as u64).collect());
        raft.heartbeat_ticks = 10;
        raft.election_ticks = 30;
        raft.lease_reads = mode == ReadMode::Lease;
        raft.seed = i as u64;
        let config = ServerConfig { read_mode: mode, ..ServerConfig::default() };
        let server = KvServer::start(raft, TICK, storage, transport, Box::new(machine), config)
            .expect("start a server");
        net.add_server(
            &i.to_string(),
            Server::new().with_service(raft_service).with_service(testkit::kv::service(&server)),
        );
        servers.push(server);
    }
    Cluster { net, servers }
}

fn clerk(c: &Cluster, id: usize) -> Clerk<LabrpcServers> {
    let ends = (0..c.servers.len())
        .map(|j| {
            let name = format!("clerk{id}->{j}");
            let end = c.net.make_end(&name);
            c.net.connect(&name, &j.to_string());
            c.net.enable(&name, true);
            end
        })
        .collect();
    Clerk::new(LabrpcServers::new(ends))
}

fn key(i: u64) -> String {
    format!("key{i:08}")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn run(args: &Args, name: &str, mode: ReadMode) {
    let dir = args.dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let cluster = start(&dir, mode);
    let mut loader = clerk(&cluster, 1_000_000);
    let value = "v".repeat(args.value_size);
    for i in 0..args.keys {
        loader.put(key(i), value.clone());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..args.clients)
        .map(|c| {
            let mut ck = clerk(&cluster, c);
            let (stop, keys) = (Arc::clone(&stop), args.keys);
            std::thread::spawn(move || {
                let mut rng = Rng::new(c as u64 + 1);
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let got = ck.get(key(rng.below(keys)));
                    latencies.push(t.elapsed());
                    assert!(got.is_some(), "a loaded key is missing");
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<10} {:>9.0} reads/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} reads, {} clients, \
         {:.1} s)",
        all.len() as f64 / secs,
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
        all.len(),
        args.clients,
        secs
    );
    for s in &cluster.servers {
        s.kill();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let args = Args::parse();
    println!(
        "kvreadbench: 3 nodes in one process, FileStorage (fsync) + LSM, {} keys of {} bytes",
        args.keys, args.value_size
    );
    for mode in args.modes.split(',') {
        match mode.trim() {
            "log" => run(&args, "log", ReadMode::Log),
            "readindex" => run(&args, "readindex", ReadMode::ReadIndex),
            "lease" => run(&args, "lease", ReadMode::Lease),
            other => {
                eprintln!("kvreadbench: unknown mode {other:?} (log, readindex, lease)");
                std::process::exit(2);
            }
        }
    }
}
