//! The classic labrpc tests, re-created on the real-time clock with their original numbers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use labrpc::{ClientEnd, ClockMode, Error, Network, Server, Service};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Pair {
    x: i64,
    label: String,
}

/// The "junk" server of the classic tests: a few small handlers.
fn junk_server() -> Server {
    Server::new().with_service(
        Service::new("Junk")
            .method("Handler1", |arg: String| arg.parse::<i64>().unwrap_or(-1))
            .method("Handler2", |arg: i64| format!("handler2-{arg}"))
            .method("Handler3", |p: Pair| Pair { x: -p.x, label: p.label.to_uppercase() })
            .method("Handler6", |arg: String| arg.len() as u64)
            .method("Handler7", |n: u64| "y".repeat(n as usize)),
    )
}

fn setup() -> (Network, ClientEnd) {
    let net = Network::new(ClockMode::RealTime);
    net.add_server("server99", junk_server());
    let end = net.make_end("end1-99");
    net.connect("end1-99", "server99");
    (net, end)
}

#[test]
fn basic() {
    let (_net, end) = setup();
    let reply: String = end.call("Junk.Handler2", &111i64).unwrap();
    assert_eq!(reply, "handler2-111");
    let reply: i64 = end.call("Junk.Handler1", &"9099".to_string()).unwrap();
    assert_eq!(reply, 9099);
}

#[test]
fn types() {
    let (_net, end) = setup();
    let reply: Pair = end.call("Junk.Handler3", &Pair { x: 7, label: "seven".into() }).unwrap();
    assert_eq!(reply, Pair { x: -7, label: "SEVEN".into() });
    // A request of the wrong type is a codec error, not a panic or a hang.
    let err = end.call::<Pair, Pair>("Junk.Handler2", &Pair { x: 1, label: "x".into() });
    assert!(matches!(err, Err(Error::Codec { action: "decode", what: "request", .. })), "{err:?}");
    let err = end.call::<i64, i64>("Junk.NoSuchMethod", &1);
    assert!(matches!(err, Err(Error::UnknownMethod { .. })), "{err:?}");
}

#[test]
fn disconnect() {
    let net = Network::new(ClockMode::RealTime);
    net.add_server("server99", junk_server());
    let end = net.make_end("end1-99");
    // Not connected yet: the call fails.
    let err = end.call::<i64, String>("Junk.Handler2", &111).unwrap_err();
    assert_eq!(err, Error::Unreachable { end: "end1-99".into() });
    net.connect("end1-99", "server99");
    net.enable("end1-99", false);
    assert!(end.call::<i64, String>("Junk.Handler2", &111).is_err());
    net.enable("end1-99", true);
    assert_eq!(end.call::<i64, String>("Junk.Handler2", &111).unwrap(), "handler2-111");
    assert_eq!(net.count("server99"), 1);
    net.disconnect("end1-99");
    assert_eq!(
        end.call::<i64, String>("Junk.Handler2", &111),
        Err(Error::Unreachable { end: "end1-99".into() })
    );
    net.connect("end1-99", "server99");
    assert!(end.call::<i64, String>("Junk.Handler2", &111).is_ok());
    assert_eq!(net.count("server99"), 2);
}

#[test]
fn counts() {
    let (net, end) = setup();
    for i in 0..17i64 {
        let reply: String = end.call("Junk.Handler2", &i).unwrap();
        assert_eq!(reply, format!("handler2-{i}"));
    }
    assert_eq!(net.count("server99"), 17);
    assert_eq!(net.total_count(), 17);
    assert_eq!(net.count("no-such-server"), 0);
}

#[test]
fn bytes() {
    let (net, end) = setup();
    let arg = "x".repeat(284);
    for _ in 0..17 {
        let n: u64 = end.call("Junk.Handler6", &arg).unwrap();
        assert_eq!(n, 284);
    }
    let first = net.total_bytes();
    assert!((4828..=6000).contains(&first), "wrong byte count {first}");
    for _ in 0..17 {
        let reply: String = end.call("Junk.Handler7", &107u64).unwrap();
        assert_eq!(reply.len(), 107);
    }
    let second = net.total_bytes() - first;
    assert!((1800..=2500).contains(&second), "wrong byte count {second}");
}

#[test]
fn concurrent_many() {
    let net = Network::new(ClockMode::RealTime);
    net.add_server("1000", junk_server());
    let clients: Vec<_> = (0..20)
        .map(|i| {
            let name = format!("end{i}");
            let end = net.make_end(&name);
            net.connect(&name, "1000");
            thread::spawn(move || {
                let mut ok = 0;
                for j in 0..10i64 {
                    let arg = 100 * i + j;
                    let reply: String = end.call("Junk.Handler2", &arg).unwrap();
                    assert_eq!(reply, format!("handler2-{arg}"));
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    let total: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(total, 200);
    assert_eq!(net.count("1000"), 200);
}

#[test]
fn unreliable() {
    let net = Network::new(ClockMode::RealTime);
    net.set_reliable(false);
    net.add_server("1000", junk_server());
    let clients: Vec<_> = (0..300)
        .map(|i| {
            let name = format!("end{i}");
            let end = net.make_end(&name);
            net.connect(&name, "1000");
            thread::spawn(move || match end.call::<i64, String>("Junk.Handler2", &i) {
                Ok(reply) => {
                    assert_eq!(reply, format!("handler2-{i}"));
                    1
                }
                Err(_) => 0,
            })
        })
        .collect();
    let ok: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    // 19% of calls fail on average; "neither all nor none" cannot be missed by chance
    // (0.81^300 and 0.19^300 are below 1e-27).
    assert!(ok > 0 && ok < 300, "{ok} of 300 unreliable calls succeeded");
}

#[test]
fn concurrent_one() {
    let (net, end) = setup();
    let clients: Vec<_> = (0..20i64)
        .map(|i| {
            let end = end.clone();
            thread::spawn(move || {
                let reply: String = end.call("Junk.Handler2", &(100 + i)).unwrap();
                assert_eq!(reply, format!("handler2-{}", 100 + i));
            })
        })
        .collect();
    clients.into_iter().for_each(|c| c.join().unwrap());
    assert_eq!(net.count("server99"), 20);
}

/// Calls made while an end is disabled must not be delivered later, nor slow down the first call
/// after it is enabled again.
#[test]
fn regression1() {
    let (net, end) = setup();
    // Calls on a disabled end fail after a random delay of up to 7 s: long enough that the
    // call below, if it does not wait behind them, returns while some are still pending.
    net.set_long_delays(true);
    net.enable("end1-99", false);
    let failures = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..20i64)
        .map(|i| {
            let end = end.clone();
            let failures = Arc::clone(&failures);
            thread::spawn(move || {
                if end.call::<i64, String>("Junk.Handler2", &i).is_err() {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Wait until all twenty calls are in the network (submitted while disabled).
    while net.total_count() < 20 {
        thread::sleep(Duration::from_millis(5));
    }
    net.enable("end1-99", true);
    let started = Instant::now();
    let reply: String = end.call("Junk.Handler2", &99).unwrap();
    // Not a bound on time, which a loaded machine can break: the order of events. The call
    // made after re-enabling returned before every call made while disabled had failed, so
    // it did not wait behind them.
    let failed = failures.load(Ordering::SeqCst);
    assert_eq!(reply, "handler2-99");
    assert!(
        failed < 20,
        "the call waited until all 20 earlier ones failed ({:?})",
        started.elapsed()
    );
    clients.into_iter().for_each(|c| c.join().unwrap());
    assert_eq!(failures.load(Ordering::SeqCst), 20);
    assert_eq!(net.count("server99"), 1);
}

/// A call stuck in a handler returns (as a failure) as soon as its server is deleted.
#[test]
fn killed() {
    let net = Network::new(ClockMode::RealTime);
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    net.add_server(
        "server99",
        Server::new().with_service(Service::new("Slow").method("Sleep", move |_: ()| {
            // Stands in for the classic 20-second sleep; released when the test ends.
            let _ = release_rx.recv_timeout(Duration::from_secs(20));
            7u32
        })),
    );
    let end = net.make_end("end1-99");
    net.connect("end1-99", "server99");
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || done_tx.send(end.call::<(), u32>("Slow.Sleep", &())).unwrap());

    thread::sleep(Duration::from_secs(1));
    assert!(done_rx.recv_timeout(Duration::from_millis(100)).is_err(), "returned too early");
    net.delete_server("server99");
    // The handler is held until `release_tx` sends (or for 20 s): a return before that is the
    // deletion's doing, however long the machine takes to deliver it.
    let result = done_rx.recv_timeout(Duration::from_secs(15)).expect("no return after delete");
    assert_eq!(result, Err(Error::ServerDead { server: "server99".into() }));
    release_tx.send(()).unwrap();
}

/// Replacing a server (a restart) cuts off calls to the old instance, and the new one answers.
#[test]
fn replaced_server_discards_late_reply() {
    let net = Network::new(ClockMode::RealTime);
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    net.add_server(
        "s",
        Server::new().with_service(Service::new("Svc").method("Get", move |_: ()| {
            let _ = release_rx.recv_timeout(Duration::from_secs(20));
            "old".to_string()
        })),
    );
    let end = net.make_end("e");
    net.connect("e", "s");
    let stuck = {
        let end = end.clone();
        thread::spawn(move || end.call::<(), String>("Svc.Get", &()))
    };
    while net.count("s") < 1 {
        thread::sleep(Duration::from_millis(5)); // Until the call is inside the old handler.
    }
    net.add_server(
        "s",
        Server::new().with_service(Service::new("Svc").method("Get", |_: ()| "new".to_string())),
    );
    assert_eq!(stuck.join().unwrap(), Err(Error::ServerDead { server: "s".into() }));
    release_tx.send(()).unwrap(); // The old handler now returns; its reply must be discarded.
    assert_eq!(end.call::<(), String>("Svc.Get", &()).unwrap(), "new");
    assert_eq!(net.count("s"), 1, "count is per server instance");
}

/// A deleted end is cut off for good, calls in flight included, even if a new end is later
/// created under its name (as a restarted node's would be).
#[test]
fn delete_end_cuts_it_off() {
    let net = Network::new(ClockMode::RealTime);
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    net.add_server(
        "s",
        Server::new().with_service(
            Service::new("S")
                .method("Wait", move |_: ()| {
                    let _ = release_rx.recv_timeout(Duration::from_secs(20));
                })
                .method("Ping", |x: u64| x),
        ),
    );
    let old = net.make_end("e");
    net.connect("e", "s");
    assert_eq!(old.call::<u64, u64>("S.Ping", &1), Ok(1));
    let stuck = {
        let old = old.clone();
        thread::spawn(move || old.call::<(), ()>("S.Wait", &()))
    };
    while net.count("s") < 2 {
        thread::sleep(Duration::from_millis(5));
    }
    net.delete_end("e");
    assert_eq!(stuck.join().unwrap(), Err(Error::ServerDead { server: "s".into() }));
    release_tx.send(()).unwrap();
    let unreachable = Err(Error::Unreachable { end: "e".into() });
    assert_eq!(old.call::<u64, u64>("S.Ping", &1), unreachable);
    // A new end under the same name works; the old handle stays dead.
    let new = net.make_end("e");
    net.connect("e", "s");
    assert_eq!(new.call::<u64, u64>("S.Ping", &2), Ok(2));
    assert_eq!(old.call::<u64, u64>("S.Ping", &1), unreachable);
}

#[test]
fn call_with_delivers_on_a_network_thread() {
    let (_net, end) = setup();
    let (tx, rx) = crossbeam_channel::bounded(1);
    end.call_with("Junk.Handler2", &5i64, move |r: labrpc::Result<String>| tx.send(r).unwrap())
        .unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap(), "handler2-5");
}

/// Dropping the network fails every call in flight with `Closed`, blocked calls and pending
/// callbacks alike; later calls fail at once.
#[test]
fn dropping_the_network_fails_calls_in_flight() {
    // A seed whose first decision (the unconnected call's failure delay, 0–6999 ms) is long, so
    // the callback is still pending when the network is dropped.
    let seed = (0..).find(|&s| labrpc::Rng::new(s).below(7000) >= 2000).unwrap();
    let net = Network::with_seed(ClockMode::RealTime, seed);
    net.set_long_delays(true);
    let end = net.make_end("e");
    let (tx, rx) = crossbeam_channel::bounded(1);
    end.call_with("X.Y", &(), move |r: labrpc::Result<()>| tx.send(r).unwrap()).unwrap();
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    net.add_server(
        "s",
        Server::new().with_service(Service::new("S").method("Wait", move |_: ()| {
            let _ = release_rx.recv_timeout(Duration::from_secs(20));
        })),
    );
    let e2 = net.make_end("e2");
    net.connect("e2", "s");
    let blocked = thread::spawn(move || e2.call::<(), ()>("S.Wait", &()));
    while net.count("s") < 1 {
        thread::sleep(Duration::from_millis(5));
    }
    drop(net);
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), Err(Error::Closed));
    assert_eq!(blocked.join().unwrap(), Err(Error::Closed));
    release_tx.send(()).unwrap();
    assert_eq!(end.call::<(), ()>("X.Y", &()), Err(Error::Closed));
    let never = end.call_with("X.Y", &(), |_: labrpc::Result<()>| panic!("must not run"));
    assert_eq!(never, Err(Error::Closed));
}

/// A callback never runs on the calling thread inside `call_with`, so it may take a lock the
/// caller holds while calling (a node sending RPCs under its own lock).
#[test]
fn callbacks_run_off_the_calling_thread() {
    let net = Network::new(ClockMode::RealTime);
    let end = net.make_end("e"); // Unconnected: fails after 0–99 ms, sometimes 0.
    let lock = Arc::new(parking_lot::Mutex::new(0u32));
    let caller = thread::current().id();
    let (tx, rx) = crossbeam_channel::unbounded();
    for _ in 0..300 {
        let guard = lock.lock();
        let (lock2, tx) = (Arc::clone(&lock), tx.clone());
        end.call_with("X.Y", &(), move |r: labrpc::Result<()>| {
            *lock2.lock() += 1;
            tx.send((thread::current().id(), r)).unwrap();
        })
        .unwrap();
        drop(guard);
    }
    for _ in 0..300 {
        let (thread, result) = rx.recv_timeout(Duration::from_secs(5)).expect("callback ran");
        assert_ne!(thread, caller);
        assert_eq!(result, Err(Error::Unreachable { end: "e".into() }));
    }
    assert_eq!(*lock.lock(), 300);
}

#[test]
fn handler_panic_fails_the_call() {
    let net = Network::new(ClockMode::RealTime);
    net.add_server(
        "s",
        Server::new().with_service(
            Service::new("S")
                .method("Boom", |_: ()| -> u8 { panic!("deliberate test panic in a handler") }),
        ),
    );
    let end = net.make_end("e");
    net.connect("e", "s");
    let err = end.call::<(), u8>("S.Boom", &()).unwrap_err();
    assert_eq!(err, Error::HandlerPanicked { method: "S.Boom".into() });
    assert_eq!(net.background_panics(), 0, "the handler's panic was caught and reported");
}

#[test]
#[should_panic(expected = "panicked on network threads")]
fn panicking_callback_fails_the_test_when_the_network_drops() {
    let (net, end) = setup();
    let (tx, rx) = crossbeam_channel::bounded(1);
    net.schedule(Duration::from_millis(1), move || {
        tx.send(()).unwrap();
        panic!("deliberate test panic in a scheduled task");
    });
    rx.recv().unwrap();
    // The timer thread survives the panic: later calls still work.
    thread::sleep(Duration::from_millis(20));
    assert!(end.call::<i64, String>("Junk.Handler2", &1).is_ok());
    assert_eq!(net.background_panics(), 1);
    drop(net);
}

#[test]
#[should_panic(expected = "already exists")]
fn duplicate_end_name_panics() {
    let net = Network::new(ClockMode::RealTime);
    let _a = net.make_end("same");
    let _b = net.make_end("same");
}

#[test]
#[should_panic(expected = "no client end")]
fn connecting_an_unknown_end_panics() {
    Network::new(ClockMode::RealTime).connect("nobody", "s");
}

#[test]
#[should_panic(expected = "this network is real-time")]
fn stepping_a_real_time_network_panics() {
    Network::new(ClockMode::RealTime).step();
}

/// Many threads, many calls, an unreliable network: every reply that arrives is the right one,
/// and the counters add up.
#[test]
fn stress_many_concurrent_calls_unreliable() {
    const THREADS: u64 = 16;
    const CALLS: u64 = 200;
    let net = Network::new(ClockMode::RealTime);
    net.set_reliable(false);
    net.add_server("s", junk_server());
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let name = format!("end{t}");
            let end = net.make_end(&name);
            net.connect(&name, "s");
            thread::spawn(move || {
                let mut ok = 0u64;
                for c in 0..CALLS {
                    let arg = (t * CALLS + c) as i64;
                    match end.call::<i64, String>("Junk.Handler2", &arg) {
                        Ok(reply) => {
                            assert_eq!(reply, format!("handler2-{arg}"));
                            ok += 1;
                        }
                        Err(e) => assert_eq!(e, Error::Dropped),
                    }
                }
                ok
            })
        })
        .collect();
    let ok: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let total = THREADS * CALLS;
    assert_eq!(net.total_count(), total);
    let delivered = net.count("s");
    assert!(delivered >= ok && delivered <= total, "delivered {delivered}, ok {ok}");
    // 81% expected success; 5 standard deviations of 3200 calls is about 3.5%.
    let rate = ok as f64 / total as f64;
    assert!((0.77..=0.85).contains(&rate), "success rate {rate}");
}
