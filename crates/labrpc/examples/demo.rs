//! A tour of labrpc: three nodes ping each other through a lossy network in virtual time, one is
//! partitioned away and healed, and the run's seed and trace hash show that it replays.
//!
//! `cargo run -p raftkv-labrpc --example demo` (add `LABRPC_SEED=<n>` to replay a run).

use std::time::Duration;

use labrpc::{ClockMode, Network, Server, Service};

const NODES: usize = 3;

fn main() {
    let net = Network::new(ClockMode::Virtual);
    println!("labrpc demo: {NODES} nodes, virtual time, seed {}", net.seed());
    for n in 0..NODES {
        let service = Service::new("Node")
            .method("Ping", move |from: usize| format!("node {n} heard node {from}"));
        net.add_server(&format!("node{n}"), Server::new().with_service(service));
    }
    let mut ends = Vec::new();
    for from in 0..NODES {
        for to in (0..NODES).filter(|&to| to != from) {
            let name = format!("{from}->{to}");
            ends.push((from, to, net.make_end(&name)));
            net.connect(&name, &format!("node{to}"));
        }
    }

    let round = |label: &str| {
        let started = net.now();
        let mut ok = 0;
        for (from, _, end) in &ends {
            if end.call::<usize, String>("Node.Ping", from).is_ok() {
                ok += 1;
            }
        }
        let took = net.now() - started;
        println!(
            "{label:<38} {ok}/{} calls answered, {:>7.3}s of virtual time",
            ends.len(),
            took.as_secs_f64()
        );
    };

    round("reliable network:");
    net.set_reliable(false);
    for _ in 0..3 {
        round("unreliable (10% loss each way):");
    }
    net.set_long_delays(true);
    for (from, to, end) in &ends {
        if *from == 2 || *to == 2 {
            net.enable(end.name(), false);
        }
    }
    round("node 2 partitioned, long delays on:");
    for (_, _, end) in &ends {
        net.enable(end.name(), true);
    }
    net.set_reliable(true);
    round("healed, reliable again:");
    net.sleep(Duration::from_secs(1));

    let delivered: Vec<u64> = (0..NODES).map(|n| net.count(&format!("node{n}"))).collect();
    println!(
        "RPCs delivered per node {delivered:?}; {} calls, {} bytes in all",
        net.total_count(),
        net.total_bytes()
    );
    println!(
        "trace hash {:016x}: run again with LABRPC_SEED={} to get the same hash",
        net.trace_hash(),
        net.seed()
    );
}
