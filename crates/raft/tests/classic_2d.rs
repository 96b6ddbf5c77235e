//! The classic Part 2D tests: log compaction and snapshots.

mod lab;

use lab::{Config, SNAPSHOT_INTERVAL};

/// The 2D bound on persisted Raft state (log and hard state, snapshot excluded).
const MAX_LOG_SIZE: u64 = 2000;

fn snap_common(title: &str, disconnect: bool, reliable: bool, crash: bool) {
    let iters = 30;
    let servers = 3;
    let mut cfg = Config::new(servers, !reliable, true);
    cfg.begin(title);
    let c = cfg.random_cmd();
    cfg.one(c, servers, true);
    let mut leader1 = cfg.check_one_leader();
    for i in 0..iters {
        let (mut victim, mut sender) = ((leader1 + 1) % servers, leader1);
        if i % 3 == 1 {
            sender = (leader1 + 1) % servers;
            victim = leader1;
        }
        if disconnect {
            cfg.disconnect(victim);
            let c = cfg.random_cmd();
            cfg.one(c, servers - 1, true);
        }
        if crash {
            cfg.crash1(victim);
            let c = cfg.random_cmd();
            cfg.one(c, servers - 1, true);
        }
        // Perhaps send enough to get a snapshot.
        let nn = SNAPSHOT_INTERVAL / 2 + cfg.random(SNAPSHOT_INTERVAL);
        for _ in 0..nn {
            let c = cfg.random_cmd();
            cfg.start(sender, &c);
        }
        // Let the applier threads catch up with the Start()s.
        let c = cfg.random_cmd();
        if !disconnect && !crash {
            // Make sure all followers have caught up, so that an InstallSnapshot RPC isn't
            // required for TestSnapshotBasic2D().
            cfg.one(c, servers, true);
        } else {
            cfg.one(c, servers - 1, true);
        }
        let size = cfg.log_size();
        assert!(size < MAX_LOG_SIZE, "Log size too large: {size}");
        if disconnect {
            // Reconnect a follower, who may be behind and need to receive a snapshot to catch up.
            cfg.connect(victim);
            let c = cfg.random_cmd();
            cfg.one(c, servers, true);
            leader1 = cfg.check_one_leader();
        }
        if crash {
            cfg.start1(victim);
            cfg.connect(victim);
            let c = cfg.random_cmd();
            cfg.one(c, servers, true);
            leader1 = cfg.check_one_leader();
        }
    }
    cfg.end();
}

#[test]
fn snapshot_basic_2d() {
    snap_common("Test (2D): snapshots basic", false, true, false);
}

#[test]
fn snapshot_install_2d() {
    snap_common("Test (2D): install snapshots (disconnect)", true, true, false);
}

#[test]
fn snapshot_install_unreliable_2d() {
    snap_common("Test (2D): install snapshots (disconnect+unreliable)", true, false, false);
}

#[test]
fn snapshot_install_crash_2d() {
    snap_common("Test (2D): install snapshots (crash)", false, true, true);
}

#[test]
fn snapshot_install_uncrash_2d() {
    snap_common("Test (2D): install snapshots (unreliable+crash)", false, false, true);
}

/// Do the servers persist the snapshots, and restart using snapshot along with the tail of the
/// log?
#[test]
fn snapshot_all_crash_2d() {
    let servers = 3;
    let iters = 5;
    let mut cfg = Config::new(servers, false, true);
    cfg.begin("Test (2D): crash and restart all servers");
    let c = cfg.random_cmd();
    cfg.one(c, servers, true);
    for _ in 0..iters {
        // Perhaps enough to get a snapshot.
        let nn = SNAPSHOT_INTERVAL / 2 + cfg.random(SNAPSHOT_INTERVAL);
        for _ in 0..nn {
            let c = cfg.random_cmd();
            cfg.one(c, servers, true);
        }
        let c = cfg.random_cmd();
        let index1 = cfg.one(c, servers, true);
        // Crash all.
        for i in 0..servers {
            cfg.crash1(i);
        }
        // Revive all.
        for i in 0..servers {
            cfg.start1(i);
            cfg.connect(i);
        }
        let c = cfg.random_cmd();
        let index2 = cfg.one(c, servers, true);
        assert!(index2 > index1, "index decreased from {index1} to {index2}");
    }
    cfg.end();
}

/// Do servers correctly initialize their in-memory copy of the snapshot, making sure that
/// future writes to persistent state don't lose state?
#[test]
fn snapshot_init_2d() {
    let servers = 3;
    let mut cfg = Config::new(servers, false, true);
    cfg.begin("Test (2D): snapshot initialization after crash");
    let c = cfg.random_cmd();
    cfg.one(c, servers, true);
    // Enough ops to make a snapshot.
    for _ in 0..=SNAPSHOT_INTERVAL {
        let c = cfg.random_cmd();
        cfg.one(c, servers, true);
    }
    for _ in 0..2 {
        // Crash and restart all.
        for i in 0..servers {
            cfg.crash1(i);
        }
        for i in 0..servers {
            cfg.start1(i);
            cfg.connect(i);
        }
        // The first round's single op gets something written back to persistent storage; the
        // second checks that this write kept the snapshot.
        let c = cfg.random_cmd();
        cfg.one(c, servers, true);
    }
    cfg.end();
}
