//! The classic part 3B tests (`kvraft/test_test.go`): the key-value service with snapshots
//! (`maxraftstate` = 1000 bytes unless noted). Every test's history is checked for
//! linearizability.

mod lab;

use lab::{Config, Generic, generic_test, generic_test_speed};

const MAX_RAFT_STATE: u64 = 1000;

fn snapshots(clients: usize, servers: usize) -> Generic {
    Generic { clients, servers, max_raft_state: Some(MAX_RAFT_STATE), ..Generic::default() }
}

/// A server cut off while the others trim their logs catches up through InstallSnapshot.
#[test]
fn snapshot_rpc_3b() {
    let mut cfg = Config::new(3, false, Some(MAX_RAFT_STATE));
    let all: Vec<usize> = (0..3).collect();
    let mut ck = cfg.make_client(&all);
    cfg.begin("Test: InstallSnapshot RPC (3B)");
    ck.put("a", "A");
    ck.check("a", "A");
    // A bunch of puts into the majority partition.
    cfg.partition(&[0, 1], &[2]);
    {
        let mut ck1 = cfg.make_client(&[0, 1]);
        for i in 0..50 {
            ck1.put(&i.to_string(), &i.to_string());
        }
        std::thread::sleep(lab::ELECTION_TIMEOUT);
        ck1.put("b", "B");
    }
    // Check that the majority partition has thrown away most of its log entries.
    let size = cfg.log_size();
    assert!(size <= 8 * MAX_RAFT_STATE, "logs were not trimmed ({size} > 8*{MAX_RAFT_STATE})");
    // Now make a group that requires participation of the lagging server, so that it has to
    // catch up via InstallSnapshot.
    cfg.partition(&[0, 2], &[1]);
    {
        let mut ck1 = cfg.make_client(&[0, 2]);
        ck1.put("c", "C");
        ck1.put("d", "D");
        ck1.check("a", "A");
        ck1.check("b", "B");
        ck1.check("1", "1");
        ck1.check("49", "49");
    }
    // Now everybody.
    cfg.partition(&all, &[]);
    ck.put("e", "E");
    ck.check("c", "C");
    ck.check("e", "E");
    ck.check("1", "1");
    cfg.end();
}

/// The snapshot holds only the data and the dedup table, not the log.
#[test]
fn snapshot_size_3b() {
    const MAX_SNAPSHOT_STATE: u64 = 500;
    let mut cfg = Config::new(3, false, Some(MAX_RAFT_STATE));
    let all: Vec<usize> = (0..3).collect();
    let mut ck = cfg.make_client(&all);
    cfg.begin("Test: snapshot size is reasonable (3B)");
    for _ in 0..200 {
        ck.put("x", "0");
        ck.check("x", "0");
        ck.put("x", "1");
        ck.check("x", "1");
    }
    let size = cfg.log_size();
    assert!(size <= 8 * MAX_RAFT_STATE, "logs were not trimmed ({size} > 8*{MAX_RAFT_STATE})");
    let snapshot = cfg.snapshot_size();
    assert!(
        snapshot <= MAX_SNAPSHOT_STATE,
        "snapshot too large ({snapshot} > {MAX_SNAPSHOT_STATE})"
    );
    cfg.end();
}

#[test]
fn speed_3b() {
    generic_test_speed("3B", Some(MAX_RAFT_STATE));
}

#[test]
fn snapshot_recover_3b() {
    generic_test("3B", Generic { crash: true, ..snapshots(1, 5) });
}

#[test]
fn snapshot_recover_many_clients_3b() {
    generic_test("3B", Generic { crash: true, ..snapshots(20, 5) });
}

#[test]
fn snapshot_unreliable_3b() {
    generic_test("3B", Generic { unreliable: true, ..snapshots(5, 5) });
}

#[test]
fn snapshot_unreliable_recover_3b() {
    generic_test("3B", Generic { unreliable: true, crash: true, ..snapshots(5, 5) });
}

#[test]
fn snapshot_unreliable_recover_concurrent_partition_3b() {
    let g = Generic { unreliable: true, crash: true, partitions: true, ..snapshots(5, 5) };
    generic_test("3B", g);
}

#[test]
fn snapshot_unreliable_recover_concurrent_partition_linearizable_3b() {
    let g = Generic {
        unreliable: true,
        crash: true,
        partitions: true,
        random_keys: true,
        ..snapshots(15, 7)
    };
    generic_test("3B", g);
}
