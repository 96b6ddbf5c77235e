//! Each fault mode, measured over many calls in virtual time against statistical bounds.
//!
//! Virtual time makes these fast (a 7-second failure delay costs nothing) and exact to replay.
//! Each band is at least five standard deviations wide either side of the expected value, so a
//! correct network fails one only with odds below one in a million per seed; the seed is printed
//! if one does.

use std::sync::Arc;
use std::time::Duration;

use labrpc::{ClientEnd, ClockMode, Error, Network, Server, Service, faults};
use parking_lot::Mutex;

fn echo_net() -> (Network, ClientEnd) {
    let net = Network::new(ClockMode::Virtual);
    net.add_server("s", Server::new().with_service(Service::new("E").method("Echo", |x: u64| x)));
    let end = net.make_end("e");
    net.connect("e", "s");
    (net, end)
}

/// Makes `n` blocking calls and returns each one's outcome and virtual latency.
fn run_calls(net: &Network, end: &ClientEnd, n: u64) -> Vec<(labrpc::Result<u64>, Duration)> {
    (0..n)
        .map(|i| {
            let started = net.now();
            let result = end.call::<u64, u64>("E.Echo", &i);
            if let Ok(x) = &result {
                assert_eq!(*x, i, "reply belongs to another call");
            }
            (result, net.now() - started)
        })
        .collect()
}

fn share(part: usize, whole: usize) -> f64 {
    part as f64 / whole as f64
}

#[test]
fn reliable_network_delivers_everything_at_once() {
    let (net, end) = echo_net();
    let outcomes = run_calls(&net, &end, 1000);
    assert!(outcomes.iter().all(|(r, t)| r.is_ok() && t.is_zero()));
    assert_eq!(net.count("s"), 1000);
    assert_eq!(net.total_count(), 1000);
}

#[test]
fn unreliable_network_loses_about_nineteen_percent() {
    let (net, end) = echo_net();
    net.set_reliable(false);
    let n = 10_000;
    let outcomes = run_calls(&net, &end, n);
    // Success needs both the request (p = 0.9) and the reply (p = 0.9): 81%.
    let failed = outcomes.iter().filter(|(r, _)| r.is_err()).count();
    let rate = share(failed, n as usize);
    assert!((0.165..=0.215).contains(&rate), "failed share {rate} (expected 0.19)");
    assert!(outcomes.iter().all(|(r, _)| matches!(r, Ok(_) | Err(Error::Dropped))));
    // Delivered requests: 90% of calls (sd 0.3%).
    let delivered = share(net.count("s") as usize, n as usize);
    assert!((0.885..=0.915).contains(&delivered), "delivered share {delivered}");
    // Every call waits the short delay, 0..=26 ms, uniform with mean 13 ms.
    let max = faults::SHORT_DELAY_MS;
    assert!(outcomes.iter().all(|(_, t)| *t < Duration::from_millis(max)));
    let mean = outcomes.iter().map(|(_, t)| t.as_secs_f64()).sum::<f64>() / n as f64;
    assert!((0.0124..=0.0136).contains(&mean), "mean delay {mean}s (expected 0.013)");
    assert_eq!(net.total_count(), n);
}

#[test]
fn unreachable_calls_fail_after_short_or_long_delays() {
    let (net, end) = echo_net();
    net.enable("e", false);
    let n = 2000;
    for (long, limit_ms, mean_band) in [
        (false, faults::SHORT_FAIL_MS, (0.0445, 0.0545)),
        (true, faults::LONG_DELAY_MS, (3.2, 3.8)),
    ] {
        net.set_long_delays(long);
        let outcomes = run_calls(&net, &end, n);
        assert!(outcomes.iter().all(|(r, _)| matches!(r, Err(Error::Unreachable { .. }))));
        let limit = Duration::from_millis(limit_ms);
        assert!(outcomes.iter().all(|(_, t)| *t < limit), "a failure took {limit:?} or more");
        let mean = outcomes.iter().map(|(_, t)| t.as_secs_f64()).sum::<f64>() / n as f64;
        assert!(
            (mean_band.0..=mean_band.1).contains(&mean),
            "long delays {long}: mean failure delay {mean}s"
        );
    }
    assert_eq!(net.count("s"), 0, "nothing reached the server");
}

#[test]
fn long_reordering_holds_back_two_replies_in_three() {
    let (net, end) = echo_net();
    net.set_long_reordering(true);
    let n = 3000;
    let outcomes = run_calls(&net, &end, n);
    assert!(outcomes.iter().all(|(r, _)| r.is_ok()), "reordering loses nothing");
    let held: Vec<Duration> = outcomes.iter().map(|(_, t)| *t).filter(|t| !t.is_zero()).collect();
    let rate = share(held.len(), n as usize);
    assert!((0.617..=0.717).contains(&rate), "held-back share {rate} (expected 0.667)");
    let (lo, hi) = (faults::REORDER_BASE_MS, faults::REORDER_BASE_MS + faults::REORDER_SPREAD_MS);
    assert!(
        held.iter().all(|t| (Duration::from_millis(lo)..=Duration::from_millis(hi)).contains(t)),
        "held-back reply outside {lo}..={hi} ms"
    );
}

/// With long reordering, a reply to an earlier call often arrives after a later call's reply.
#[test]
fn long_reordering_reorders_concurrent_calls() {
    let (net, end) = echo_net();
    net.set_long_reordering(true);
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    for i in 0..200u64 {
        let arrivals = Arc::clone(&arrivals);
        end.call_with("E.Echo", &i, move |r: labrpc::Result<u64>| arrivals.lock().push(r.unwrap()))
            .unwrap();
    }
    while net.step() {}
    let arrivals = arrivals.lock();
    assert_eq!(arrivals.len(), 200);
    let inversions = arrivals.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(inversions > 20, "only {inversions} reorderings among 200 replies");
}

/// A server deleted while its calls wait in the network: they fail, and nothing is delivered.
#[test]
fn deleting_a_server_mid_call_fails_its_calls() {
    let (net, end) = echo_net();
    net.set_reliable(false); // Requests now wait 0–26 ms before delivery.
    let results = Arc::new(Mutex::new(Vec::new()));
    for i in 0..100u64 {
        let results = Arc::clone(&results);
        end.call_with("E.Echo", &i, move |r: labrpc::Result<u64>| results.lock().push(r)).unwrap();
    }
    net.delete_server("s");
    while net.step() {}
    let results = results.lock();
    assert_eq!(results.len(), 100, "every call completed");
    assert!(results.iter().all(|r| matches!(r, Err(Error::ServerDead { .. } | Error::Dropped))));
    assert_eq!(net.count("s"), 0);
}

#[test]
fn virtual_time_moves_only_when_driven() {
    let (net, end) = echo_net();
    net.set_long_delays(true);
    net.enable("e", false);
    assert_eq!(net.now(), Duration::ZERO);
    let fired = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&fired);
    end.call_with("E.Echo", &1u64, move |r: labrpc::Result<u64>| *slot.lock() = Some(r)).unwrap();
    assert!(fired.lock().is_none(), "nothing happens before the driver steps");
    net.sleep(Duration::from_secs(7));
    assert_eq!(net.now(), Duration::from_secs(7));
    assert!(matches!(*fired.lock(), Some(Err(Error::Unreachable { .. }))));
    let order = Arc::new(Mutex::new(Vec::new()));
    for (tag, ms) in [("late", 20), ("early", 10)] {
        let order = Arc::clone(&order);
        net.schedule(Duration::from_millis(ms), move || order.lock().push(tag));
    }
    assert!(net.step());
    assert_eq!(net.now(), Duration::from_millis(7010));
    assert!(net.step());
    assert!(!net.step());
    assert_eq!(*order.lock(), ["early", "late"]);
}

#[test]
#[should_panic(expected = "use ClientEnd::call_with instead")]
fn blocking_call_inside_a_virtual_handler_panics() {
    let net = Network::new(ClockMode::Virtual);
    let inner_end = net.make_end("inner");
    net.connect("inner", "s");
    let inner_end = Mutex::new(inner_end);
    net.add_server(
        "s",
        Server::new().with_service(Service::new("S").method("Nested", move |x: u64| {
            inner_end.lock().call::<u64, u64>("S.Nested", &x).unwrap_or(0)
        })),
    );
    let end = net.make_end("e");
    net.connect("e", "s");
    let _ = end.call::<u64, u64>("S.Nested", &1);
}

#[test]
fn dropped_virtual_network_fails_blocking_calls_with_closed() {
    let (net, end) = echo_net();
    drop(net);
    assert_eq!(end.call::<u64, u64>("E.Echo", &1), Err(Error::Closed));
}

/// Networks made from one seed draw the same decisions; `Debug` shows the seed.
#[test]
fn one_seed_gives_one_sequence_of_draws() {
    let seed = Network::with_seed(ClockMode::Virtual, 12345).seed();
    assert_eq!(seed, 12345);
    let a = Network::with_seed(ClockMode::Virtual, 1);
    let b = Network::with_seed(ClockMode::Virtual, 1);
    assert_eq!(
        (0..10).map(|_| a.random_below(1000)).collect::<Vec<_>>(),
        (0..10).map(|_| b.random_below(1000)).collect::<Vec<_>>()
    );
    assert!(format!("{a:?}").contains("seed: 1"));
}
