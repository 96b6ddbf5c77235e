//! labrpc throughput: calls per second on a reliable, real-time network with small messages.
//!
//! Run with `cargo bench -p benches --bench labrpc`. Each element is one completed call (an
//! 8-byte request, an 8-byte reply, encoded, routed, handled on a pool thread and answered).
//! `sequential` is one client waiting for each reply in turn, so it measures latency as a rate;
//! `concurrent/N` spreads the calls over N client threads, each with its own end.

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use labrpc::{ClientEnd, ClockMode, Network, Server, Service};

fn network(clients: usize) -> (Network, Vec<ClientEnd>) {
    let net = Network::with_seed(ClockMode::RealTime, 1);
    let echo = Service::new("Echo").method("Echo", |x: u64| x);
    net.add_server("server", Server::new().with_service(echo));
    let ends = (0..clients)
        .map(|i| {
            let name = format!("client-{i}");
            let end = net.make_end(&name);
            net.connect(&name, "server");
            end
        })
        .collect();
    (net, ends)
}

fn sequential(c: &mut Criterion) {
    let (_net, ends) = network(1);
    let mut group = c.benchmark_group("labrpc");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sequential", |b| {
        b.iter(|| ends[0].call::<u64, u64>("Echo.Echo", &black_box(7)).unwrap())
    });
    group.finish();
}

fn concurrent(c: &mut Criterion) {
    let mut group = c.benchmark_group("labrpc");
    group.throughput(Throughput::Elements(1));
    for clients in [4usize, 16] {
        let (_net, ends) = network(clients);
        group.bench_function(format!("concurrent/{clients}"), |b| {
            b.iter_custom(|iters| {
                let per_client = iters.div_ceil(clients as u64);
                let started = Instant::now();
                thread::scope(|s| {
                    for end in &ends {
                        s.spawn(move || {
                            for i in 0..per_client {
                                end.call::<u64, u64>("Echo.Echo", &black_box(i)).unwrap();
                            }
                        });
                    }
                });
                // Report time per call actually made, so elements/s is the aggregate call rate.
                started.elapsed().mul_f64(iters as f64 / (per_client * clients as u64) as f64)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = sequential, concurrent
}
criterion_main!(benches);
