//! The classic Part 2A tests: leader election.

mod lab;

use std::thread;

use lab::{Config, ELECTION_TIMEOUT};

#[test]
fn initial_election_2a() {
    let servers = 3;
    let mut cfg = Config::new(servers, false, false);
    cfg.begin("Test (2A): initial election");
    cfg.check_one_leader();
    // Sleep a bit to avoid racing with followers learning of the election, then check that all
    // peers agree on the term.
    thread::sleep(std::time::Duration::from_millis(50));
    let term1 = cfg.check_terms();
    assert!(term1 >= 1, "term is {term1}, but should be at least 1");
    // Does the leader+term stay the same if there is no network failure?
    thread::sleep(2 * ELECTION_TIMEOUT);
    let term2 = cfg.check_terms();
    if term1 != term2 {
        println!("warning: term changed even though there were no failures");
    }
    // There should still be a leader.
    cfg.check_one_leader();
    cfg.end();
}

#[test]
fn re_election_2a() {
    let servers = 3;
    let mut cfg = Config::new(servers, false, false);
    cfg.begin("Test (2A): election after network failure");
    let leader1 = cfg.check_one_leader();
    // If the leader disconnects, a new one should be elected.
    cfg.disconnect(leader1);
    cfg.check_one_leader();
    // If the old leader rejoins, that shouldn't disturb the new leader.
    cfg.connect(leader1);
    let leader2 = cfg.check_one_leader();
    // If there's no quorum, no new leader should be elected.
    cfg.disconnect(leader2);
    cfg.disconnect((leader2 + 1) % servers);
    thread::sleep(2 * ELECTION_TIMEOUT);
    // Check that the one connected server does not think it is the leader.
    cfg.check_no_leader();
    // If a quorum arises, it should elect a leader.
    cfg.connect((leader2 + 1) % servers);
    cfg.check_one_leader();
    // Re-join of last node shouldn't prevent leader from existing.
    cfg.connect(leader2);
    cfg.check_one_leader();
    cfg.end();
}

#[test]
fn many_elections_2a() {
    let servers = 7;
    let mut cfg = Config::new(servers, false, false);
    cfg.begin("Test (2A): multiple elections");
    cfg.check_one_leader();
    let iters = 10;
    for _ in 1..iters {
        // Disconnect three nodes.
        let i1 = cfg.random(servers as u64) as usize;
        let i2 = cfg.random(servers as u64) as usize;
        let i3 = cfg.random(servers as u64) as usize;
        cfg.disconnect(i1);
        cfg.disconnect(i2);
        cfg.disconnect(i3);
        // Either the current leader should still be alive, or the remaining four should elect
        // a new one.
        cfg.check_one_leader();
        cfg.connect(i1);
        cfg.connect(i2);
        cfg.connect(i3);
    }
    cfg.check_one_leader();
    cfg.end();
}

/// The watchdog: a test that never finishes fails past its limit with a message naming it,
/// instead of hanging the suite. The hanging test runs in a child process (this test binary,
/// with a limit of 1.5 s).
#[test]
fn a_hung_test_fails_at_its_limit() {
    let hung = "a_test_that_never_finishes";
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args(["--exact", hung, "--ignored", "--test-threads=1"])
        .env(labrpc::watchdog::LIMIT_ENV, "1500")
        .output()
        .expect("run the test binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(labrpc::watchdog::WATCHDOG_EXIT), "{stderr}");
    let wanted = format!("WATCHDOG: test {hung} is still running after its limit of 1.5s");
    assert!(stderr.contains(&wanted), "{stderr}");
}

#[test]
#[ignore = "hangs on purpose: a_hung_test_fails_at_its_limit runs it in a child process"]
fn a_test_that_never_finishes() {
    let cfg = Config::new(3, false, false);
    // Waits for an event that never comes, as a test stuck on a liveness bug would.
    let (_never, rx) = std::sync::mpsc::channel::<()>();
    let _ = rx.recv();
    drop(cfg);
    panic!("the channel's sender is alive: recv cannot return");
}
