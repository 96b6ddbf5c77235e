//! Reads without log writes, under a partition that strands the old leader: ReadIndex and
//! lease reads never return a stale value, and a deliberately broken read path (any server
//! answering from its own state) does, which the linearizability checker catches. That last
//! test stays in the suite as a check of the checker.

mod lab;

use std::sync::mpsc;
use std::time::Duration;

use kvserver::ReadMode;
use lab::{Config, ELECTION_TIMEOUT};
use linearizability::Outcome;

/// Puts 1, strands the leader in a minority, puts 2 through the majority, then reads through
/// a clerk that can reach only the old leader. Returns what the read returned, if it returned
/// within two seconds, and the checker's verdict on the history (only `Linearizable` passes;
/// an inconclusive verdict fails the test as a violation does). A read that did not return
/// then is not left out: once the partition heals its clerk can reach every server, the read
/// must complete (or the test fails), and it goes into the checked history like any other.
fn stale_read_attempt(mode: ReadMode) -> (Option<String>, Outcome) {
    let mut cfg = Config::with_read_mode(5, false, None, mode);
    let all: Vec<usize> = (0..5).collect();
    let mut ck = cfg.make_client(&all);
    ck.put("k", "1");
    ck.check("k", "1");
    let old = cfg.leader().expect("a leader after a completed put");
    let (p1, p2) = cfg.make_partition();
    assert!(p2.contains(&old));
    cfg.partition(&p1, &p2);
    let mut majority = cfg.make_client(&p1);
    majority.put("k", "2");
    let mut stranded = cfg.make_client(&[old]);
    let stranded_ends = stranded.end_names.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let v = stranded.get("k");
        let _ = tx.send(v);
    });
    let read = rx.recv_timeout(2 * ELECTION_TIMEOUT).ok();
    // Heal so that a blocked read can finish and the history is complete. (Under the broken
    // read mode any server answers from its own state: wait until all have caught up, or the
    // final check could itself read a stale value.)
    cfg.connect_all();
    if mode == ReadMode::UnsafeLocal {
        cfg.wait_converged();
    }
    let mut rest = cfg.make_client(&all);
    rest.check("k", "2");
    if read.is_none() {
        // The old leader is a follower now; let the stranded clerk find the new leader.
        cfg.connect_client_ends(&stranded_ends, &all);
        let late = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the stranded read never returned after the partition healed");
        assert_eq!(late, "2", "the stranded read returned after healing, with a stale value");
    }
    let history = cfg.history_len();
    assert_eq!(history, 5, "put, get, put, the stranded get, the final get: {history} ops");
    (read, cfg.check_outcome())
}

#[test]
fn read_index_never_reads_from_a_stranded_leader() {
    let (read, verdict) = stale_read_attempt(ReadMode::ReadIndex);
    assert_eq!(read, None, "the stranded leader answered a read");
    assert_eq!(verdict, Outcome::Linearizable);
}

#[test]
fn lease_reads_never_read_from_a_stranded_leader() {
    let (read, verdict) = stale_read_attempt(ReadMode::Lease);
    assert_eq!(read, None, "the stranded leader answered a read on an expired lease");
    assert_eq!(verdict, Outcome::Linearizable);
}

#[test]
fn reads_through_the_log_never_read_from_a_stranded_leader() {
    let (read, verdict) = stale_read_attempt(ReadMode::Log);
    assert_eq!(read, None);
    assert_eq!(verdict, Outcome::Linearizable);
}

/// The check of the checker: a server answering reads from local state returns the old value,
/// and the checker says so, naming the read.
#[test]
fn a_broken_read_path_is_caught_by_the_checker() {
    let (read, verdict) = stale_read_attempt(ReadMode::UnsafeLocal);
    assert_eq!(read.as_deref(), Some("1"), "the broken server should have read stale data");
    let Outcome::Violation(why) = verdict else { panic!("the checker missed a stale read") };
    assert!(why.to_string().contains("Value(\"1\")"), "{why}");
}

/// Follower reads: a clerk that can reach only one follower of the majority reads the newest
/// value through it (the follower asks the leader for the read index); a clerk that can reach
/// only a follower stranded with the old leader gets nothing until the partition heals.
#[test]
fn follower_reads_are_linearizable_on_both_sides_of_a_partition() {
    let mut cfg = Config::with_read_mode(5, false, None, ReadMode::ReadIndex);
    cfg.follower_reads = true;
    for i in 0..5 {
        cfg.shutdown_server(i);
        cfg.start_server(i);
    }
    cfg.connect_all();
    let all: Vec<usize> = (0..5).collect();
    let mut ck = cfg.make_client(&all);
    ck.put("k", "1");
    let old = cfg.leader().expect("a leader");
    let (p1, p2) = cfg.make_partition();
    cfg.partition(&p1, &p2);
    let mut majority = cfg.make_client(&p1);
    majority.put("k", "2");
    let new = cfg.leader_among(&p1).expect("the majority elects a leader");
    let follower = *p1.iter().find(|&&i| i != new).unwrap();
    let mut through_follower = cfg.make_client(&[follower]);
    through_follower.check("k", "2");
    let stranded_follower = *p2.iter().find(|&&i| i != old).unwrap();
    let mut stranded = cfg.make_client(&[stranded_follower]);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let v = stranded.get("k");
        let _ = tx.send(v);
    });
    assert!(rx.recv_timeout(2 * ELECTION_TIMEOUT).is_err(), "a stranded follower answered");
    cfg.connect_all();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "2");
    cfg.check_history();
}

/// Proposal forwarding: each clerk can reach only one server, and most of them only a
/// follower, on an unreliable network (requests and replies lost, so clerks retry with the
/// same sequence number). Every append still applies exactly once, in order, and the history is
/// linearizable.
#[test]
fn forwarded_writes_apply_exactly_once_on_an_unreliable_network() {
    let mut cfg = Config::with_read_mode(3, true, None, ReadMode::ReadIndex);
    cfg.follower_reads = true;
    cfg.forward_writes = true;
    for i in 0..3 {
        cfg.shutdown_server(i);
        cfg.start_server(i);
    }
    cfg.connect_all();
    const APPENDS: u64 = 15;
    let workers: Vec<_> = (0..3)
        .map(|c| {
            let mut ck = cfg.make_client(&[c]);
            std::thread::spawn(move || {
                for j in 0..APPENDS {
                    ck.append(&c.to_string(), &format!("x {c} {j} y"));
                }
                ck.get(&c.to_string())
            })
        })
        .collect();
    for (c, w) in workers.into_iter().enumerate() {
        let value = w.join().unwrap();
        lab::check_client_appends(c, &value, APPENDS);
    }
    cfg.check_history();
}
