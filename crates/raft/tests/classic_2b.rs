//! The classic Part 2B tests: log replication.

mod lab;

use std::sync::mpsc;
use std::thread;

use bytes::Bytes;
use lab::{Config, ELECTION_TIMEOUT};

fn cmd(x: u64) -> Bytes {
    Bytes::from(x.to_string())
}

#[test]
fn basic_agree_2b() {
    let servers = 3;
    let mut cfg = Config::new(servers, false, false);
    cfg.begin("Test (2B): basic agreement");
    for index in 1..=3u64 {
        let (nd, _) = cfg.n_committed(index);
        assert_eq!(nd, 0, "some have committed before Start()");
        let xindex = cfg.one(cmd(index * 100), servers, false);
        assert_eq!(xindex, index, "got index {xindex} but expected {index}");
    }
    cfg.end();
}

/// Each command should be sent to each peer just once.
#[test]
fn rpc_bytes_2b() {
    let servers = 3;
    let mut cfg = Config::new(servers, false, false);
    cfg.begin("Test (2B): RPC byte count");
    cfg.one(cmd(99), servers, false);
    let bytes0 = cfg.bytes_total();
    let iters = 10;
    let mut sent = 0;
    for index in 2..iters + 2 {
        let text: String = (0..5000).map(|_| (b'a' + cfg.random(26) as u8) as char).collect();
        let xindex = cfg.one(Bytes::from(text), servers, false);
        assert_eq!(xindex, index, "got index {xindex} but expected {index}");
        sent += 5000;
    }
    let got = cfg.bytes_total() - bytes0;
    let expected = servers as u64 * sent;
    assert!(got <= expected + 50_000, "too many RPC bytes; got {got}, expected {expected}");
    cfg.end();
}

#[test]
fn follower_failure_2b() {
    let servers = 3;
    let mut cfg = Config::new(servers, false, false);
    cfg.begin("Test (2B): test progressive failure of followers");
    cfg.one(cmd(101), servers, false);
    // Disconnect one follower from the network.
    let leader1 = cfg.check_one_leader();
    cfg.disconnect((leader1 + 1) % servers);
    // The leader and remaining follower should be able to agree despite the disconnection.
    cfg.one(cmd(102), servers - 1, false);
    thread::sleep(ELECTION_TIMEOUT);
    cfg.one(cmd(103), servers - 1, false);
    // Disconnect the remaining follower.
    let leader2 = cfg.check_one_leader();
    cfg.disconnect((leader2 + 1) % servers);
    cfg.disconnect((leader2 + 2) % servers);
    // Submit a command.
    let (index, _) = cfg.start(leader2, &cmd(104)).expect("leader rejected Start()");
    assert_eq!(index, 4, "expected index 4, got {index}");
    thread::sleep(2 * ELECTION_TIMEOUT);
    // Check that command 104 did not commit.
    let (n, _) = cfg.n_committed(index);
    assert_eq!(n, 0, "{n} committed but no majority");
    cfg.end();
}

#[test]
fn leader_failure_2b() {
    let servers = 3;
    let mut cfg = Config::new(servers, false, false);
    cfg.begin("Test (2B): test failure of leaders");
    cfg.one(cmd(101), servers, false);
    // Disconnect the first leader.
    let leader1 = cfg.check_one_leader();
    cfg.disconnect(leader1);
    // The remaining followers should elect a new leader.
    cfg.one(cmd(102), servers - 1, false);
    thread::sleep(ELECTION_TIMEOUT);
    cfg.one(cmd(103), servers - 1, false);
    // Disconnect the new leader.
    let leader2 = cfg.check_one_leader();
    cfg.disconnect(leader2);
    // Submit a command to each server.
    for i in 0..servers {
        cfg.start(i, &cmd(104));
    }
    thread::sleep(2 * ELECTION_TIMEOUT);
    // Check that command 104 did not commit.
    let (n, _) = cfg.n_committed(4);
    assert_eq!(n, 0, "{n} committed but no majority");
    cfg.end();
}

#[test]
fn fail_agree_2b() {
    let servers = 3;
    let mut cfg = Config::new(servers, false, false);
    cfg.begin("Test (2B): agreement after follower reconnects");
    cfg.one(cmd(101), servers, false);
    // Disconnect one follower from the network.
    let leader = cfg.check_one_leader();
    cfg.disconnect((leader + 1) % servers);
    // The leader and remaining follower should be able to agree despite the disconnection.
    cfg.one(cmd(102), servers - 1, false);
    cfg.one(cmd(103), servers - 1, false);
    thread::sleep(ELECTION_TIMEOUT);
    cfg.one(cmd(104), servers - 1, false);
    cfg.one(cmd(105), servers - 1, false);
    // Re-connect.
    cfg.connect((leader + 1) % servers);
    // The full set of servers should preserve previous agreements, and be able to agree on new
    // commands.
    cfg.one(cmd(106), servers, true);
    thread::sleep(ELECTION_TIMEOUT);
    cfg.one(cmd(107), servers, true);
    cfg.end();
}

#[test]
fn fail_no_agree_2b() {
    let servers = 5;
    let mut cfg = Config::new(servers, false, false);
    cfg.begin("Test (2B): no agreement if too many followers disconnect");
    cfg.one(cmd(10), servers, false);
    // Three of five followers disconnect.
    let leader = cfg.check_one_leader();
    for k in 1..=3 {
        cfg.disconnect((leader + k) % servers);
    }
    let (index, _) = cfg.start(leader, &cmd(20)).expect("leader rejected Start()");
    assert_eq!(index, 2, "expected index 2, got {index}");
    thread::sleep(2 * ELECTION_TIMEOUT);
    let (n, _) = cfg.n_committed(index);
    assert_eq!(n, 0, "{n} committed but no majority");
    // Repair.
    for k in 1..=3 {
        cfg.connect((leader + k) % servers);
    }
    // The disconnected majority may have chosen a leader from among their own ranks,
    // forgetting index 2.
    let leader2 = cfg.check_one_leader();
    let (index2, _) = cfg.start(leader2, &cmd(30)).expect("leader2 rejected Start()");
    assert!((2..=3).contains(&index2), "unexpected index {index2}");
    cfg.one(cmd(1000), servers, true);
    cfg.end();
}

#[test]
fn concurrent_starts_2b() {
    let servers = 3;
    let mut cfg = Config::new(servers, false, false);
    cfg.begin("Test (2B): concurrent Start()s");
    let mut success = false;
    'attempts: for attempt in 0..5 {
        if attempt > 0 {
            // Give the solution some time to settle.
            thread::sleep(std::time::Duration::from_secs(3));
        }
        let leader = cfg.check_one_leader();
        let Some((_, term)) = cfg.start(leader, &cmd(1)) else {
            continue; // Leader moved on really quickly.
        };
        let node = cfg.node(leader).unwrap();
        let (tx, rx) = mpsc::channel();
        let workers: Vec<_> = (0..5u64)
            .map(|ii| {
                let (node, tx) = (node.clone(), tx.clone());
                thread::spawn(move || {
                    if let Ok((index, term1)) = node.start(cmd(100 + ii))
                        && term1 == term
                    {
                        tx.send(index).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        workers.into_iter().for_each(|w| w.join().unwrap());
        let indices: Vec<u64> = rx.iter().collect();
        for j in 0..servers {
            if cfg.state(j).0 != term {
                continue 'attempts; // Term changed: can't expect low RPC counts.
            }
        }
        let mut cmds = Vec::new();
        for index in indices {
            match cfg.wait(index, servers, Some(term)) {
                Some(c) => cmds.push(c),
                None => continue 'attempts, // Peers have moved on to later terms.
            }
        }
        for ii in 0..5 {
            let x = cmd(100 + ii);
            assert!(cmds.contains(&x), "cmd {ii} missing in {cmds:?}");
        }
        success = true;
        break;
    }
    assert!(success, "term changed too often");
    cfg.end();
}

#[test]
fn rejoin_2b() {
    let servers = 3;
    let mut cfg = Config::new(servers, false, false);
    cfg.begin("Test (2B): rejoin of partitioned leader");
    cfg.one(cmd(101), servers, true);
    // The leader is partitioned off.
    let leader1 = cfg.check_one_leader();
    cfg.disconnect(leader1);
    // Make the old leader try to agree on some entries.
    for x in [102, 103, 104] {
        cfg.start(leader1, &cmd(x));
    }
    // The new leader commits, also for index 2.
    cfg.one(cmd(103), 2, true);
    // The new leader's network fails.
    let leader2 = cfg.check_one_leader();
    cfg.disconnect(leader2);
    // The old leader is connected again.
    cfg.connect(leader1);
    cfg.one(cmd(104), 2, true);
    // All together now.
    cfg.connect(leader2);
    cfg.one(cmd(105), servers, true);
    cfg.end();
}

#[test]
fn backup_2b() {
    let servers = 5;
    let mut cfg = Config::new(servers, false, false);
    cfg.begin("Test (2B): leader backs up quickly over incorrect follower logs");
    let c = cfg.random_cmd();
    cfg.one(c, servers, true);
    // Put the leader and one follower in a partition.
    let leader1 = cfg.check_one_leader();
    for k in 2..=4 {
        cfg.disconnect((leader1 + k) % servers);
    }
    // Submit lots of commands that won't commit.
    for _ in 0..50 {
        let c = cfg.random_cmd();
        cfg.start(leader1, &c);
    }
    thread::sleep(ELECTION_TIMEOUT / 2);
    cfg.disconnect(leader1);
    cfg.disconnect((leader1 + 1) % servers);
    // Allow the other partition to recover.
    for k in 2..=4 {
        cfg.connect((leader1 + k) % servers);
    }
    // Lots of successful commands to the new group.
    for _ in 0..50 {
        let c = cfg.random_cmd();
        cfg.one(c, 3, true);
    }
    // Now another partitioned leader and one follower.
    let leader2 = cfg.check_one_leader();
    let mut other = (leader1 + 2) % servers;
    if leader2 == other {
        other = (leader2 + 1) % servers;
    }
    cfg.disconnect(other);
    // Lots more commands that won't commit.
    for _ in 0..50 {
        let c = cfg.random_cmd();
        cfg.start(leader2, &c);
    }
    thread::sleep(ELECTION_TIMEOUT / 2);
    // Bring the original leader back to life.
    for i in 0..servers {
        cfg.disconnect(i);
    }
    cfg.connect(leader1);
    cfg.connect((leader1 + 1) % servers);
    cfg.connect(other);
    // Lots of successful commands to the new group.
    for _ in 0..50 {
        let c = cfg.random_cmd();
        cfg.one(c, 3, true);
    }
    // Now everyone.
    for i in 0..servers {
        cfg.connect(i);
    }
    let c = cfg.random_cmd();
    cfg.one(c, servers, true);
    cfg.end();
}

#[test]
fn count_2b() {
    let servers = 3;
    let mut cfg = Config::new(servers, false, false);
    cfg.begin("Test (2B): RPC counts aren't too high");
    let rpcs = |cfg: &Config| (0..servers).map(|j| cfg.rpc_count(j)).sum::<u64>();
    cfg.check_one_leader();
    let mut total1 = rpcs(&cfg);
    assert!((1..=30).contains(&total1), "too many or few RPCs ({total1}) to elect initial leader");

    let mut total2 = 0;
    let mut success = false;
    'attempts: for attempt in 0..5 {
        if attempt > 0 {
            thread::sleep(std::time::Duration::from_secs(3));
        }
        let leader = cfg.check_one_leader();
        total1 = rpcs(&cfg);
        let iters = 10u64;
        let Some((starti, term)) = cfg.start(leader, &cmd(1)) else {
            continue; // Leader moved on really quickly.
        };
        let mut cmds = Vec::new();
        for i in 1..iters + 2 {
            let x = cfg.random_cmd();
            cmds.push(x.clone());
            let Some((index1, term1)) = cfg.start(leader, &x) else {
                continue 'attempts; // No longer the leader, so the term has changed.
            };
            if term1 != term {
                continue 'attempts; // The term changed while starting.
            }
            assert_eq!(starti + i, index1, "Start() failed");
        }
        for i in 1..=iters {
            match cfg.wait(starti + i, servers, Some(term)) {
                Some(c) => assert_eq!(
                    c,
                    cmds[(i - 1) as usize],
                    "wrong value committed for index {}",
                    starti + i
                ),
                None => continue 'attempts,
            }
        }
        for j in 0..servers {
            if cfg.state(j).0 != term {
                continue 'attempts; // Term changed: can't expect low RPC counts.
            }
        }
        total2 = rpcs(&cfg);
        let bound = (iters + 1 + 3) * 3;
        assert!(
            total2 - total1 <= bound,
            "too many RPCs ({}) for {iters} entries",
            total2 - total1
        );
        success = true;
        break;
    }
    assert!(success, "term changed too often");
    thread::sleep(ELECTION_TIMEOUT);
    let total3 = rpcs(&cfg);
    assert!(
        total3 - total2 <= 3 * 20,
        "too many RPCs ({}) for 1 second of idleness",
        total3 - total2
    );
    cfg.end();
}
