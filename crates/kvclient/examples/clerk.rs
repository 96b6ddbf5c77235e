//! A clerk against a running cluster: writes, reads, appends and a scan, each taking effect
//! exactly once whichever node answers.
//!
//! Against your own cluster (`cargo xtask cluster --plain-peers` prints the client addresses;
//! node ids as in `kvcli --cluster`):
//!
//! ```text
//! cargo run -p raftkv-kvclient --example clerk -- \
//!     1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
//! ```
//!
//! Without an argument it starts a three-replica cluster in this process first (Raft over TCP
//! on 127.0.0.1, each replica behind the Redis protocol), so that it runs anywhere.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kvclient::{Clerk, Op, Outcome, RespServers};
use testkit::tcp::LocalCluster;

fn main() -> Result<(), String> {
    let (nodes, _cluster) = match std::env::args().nth(1) {
        Some(list) => (parse(&list)?, None),
        None => {
            let cluster = LocalCluster::start(3);
            (cluster.nodes(), Some(cluster))
        }
    };
    println!("cluster: {nodes:?}");
    let mut clerk = Clerk::new(RespServers::new(nodes));

    // `put`, `get` and friends retry until they take effect; `try_run` gives up at a deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    let op = Op::Put { key: "greeting".into(), value: "hello".into() };
    clerk.try_run(op, deadline).map_err(|e| format!("the cluster did not answer: {e}"))?;
    clerk.append("greeting", ", world");
    clerk.put("colour", "blue");
    let greeting = clerk.get("greeting").unwrap_or_default();
    println!("greeting = {}", String::from_utf8_lossy(&greeting));
    let pairs = clerk.scan("", None, 100);
    println!("scan: {} keys", pairs.len());
    for (key, value) in &pairs {
        println!("  {} = {}", String::from_utf8_lossy(key), String::from_utf8_lossy(value));
    }
    match clerk.run(Op::DeleteMany { keys: vec!["colour".into(), "nothing".into()] }) {
        Outcome::Count(n) => println!("deleted {n} of the 2 keys named (one never existed)"),
        other => return Err(format!("unexpected outcome of a delete: {other:?}")),
    }
    println!("answered by node {}", clerk.servers().node_id(clerk.leader()));
    Ok(())
}

/// `1=127.0.0.1:7001,2=...` into (node id, address) pairs.
fn parse(list: &str) -> Result<Vec<(u64, SocketAddr)>, String> {
    list.split(',')
        .map(|pair| {
            let (id, addr) = pair.split_once('=').ok_or(format!("{pair:?} is not ID=ADDRESS"))?;
            let id = id.parse().map_err(|e| format!("node id {id:?}: {e}"))?;
            let addr = addr.parse().map_err(|e| format!("address {addr:?}: {e}"))?;
            Ok((id, addr))
        })
        .collect()
}
