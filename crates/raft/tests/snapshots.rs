//! Log compaction and InstallSnapshot, §7 of the Raft paper.

mod harness;

use bytes::Bytes;
use harness::Cluster;
use raft::Storage;
use raft::{Apply, Body, Config, Error, SnapshotSpool};

/// The snapshot a test service takes: its applied commands, joined with ','.
fn take_snapshot(c: &mut Cluster, id: u64) -> u64 {
    let applied = c.applied_entries(id);
    let index = applied.last().map_or(0, |e| e.index);
    let data = c.applied_commands(id).join(",");
    c.node_mut(id).snapshot(index, Bytes::from(data)).unwrap();
    c.process_readies();
    index
}

#[test]
fn compaction_drops_the_log_prefix_and_persists_the_snapshot() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for i in 0..20 {
        c.propose(1, &format!("c{i}")).unwrap();
    }
    c.stabilize();
    let size_before = c.storage[&1].raft_state_size();
    let index = take_snapshot(&mut c, 1);
    assert_eq!(index, 21);
    let s = c.node(1).status();
    assert_eq!(s.snapshot_index, 21);
    assert_eq!(c.node(1).term_at(5), None, "compacted entries are gone");
    let snap = c.persisted_snapshot(1).expect("snapshot persisted");
    assert_eq!(snap.meta.last_included_index, 21);
    assert!(c.storage[&1].raft_state_size() < size_before);
    // Snapshotting an index already covered is a no-op; one not yet applied is refused.
    assert_eq!(c.node_mut(1).snapshot(10, Bytes::new()), Ok(()));
    assert_eq!(
        c.node_mut(1).snapshot(50, Bytes::new()),
        Err(Error::SnapshotNotApplied { index: 50, last_applied: 21 })
    );
}

/// A follower behind the leader's first index receives the snapshot in chunks, installs it,
/// applies it, and then the entries after it.
#[test]
fn lagging_follower_installs_a_chunked_snapshot() {
    lagging_follower_installs(SnapshotSpool::Memory);
}

/// As above, with the follower assembling the chunks in a spool file: what it applies and
/// persists is read from that file, never held whole in memory.
#[test]
fn lagging_follower_spools_a_chunked_snapshot_to_a_file() {
    let dir = std::env::temp_dir().join(format!("raft-snap-spool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    lagging_follower_installs(SnapshotSpool::Dir(dir.clone()));
    std::fs::remove_dir_all(dir).unwrap();
}

fn lagging_follower_installs(spool: SnapshotSpool) {
    let in_memory = spool == SnapshotSpool::Memory;
    let mut c = Cluster::with_config(3, |cfg: &mut Config| {
        cfg.snapshot_chunk_bytes = 16;
        cfg.snapshot_spool = spool.clone();
    });
    c.elect(1);
    c.isolate(3);
    for i in 0..30 {
        c.propose(1, &format!("cmd{i}")).unwrap();
    }
    c.stabilize();
    take_snapshot(&mut c, 1);
    c.propose(1, "after").unwrap();
    c.stabilize();
    c.heal();
    c.run_ticks(30);
    let chunks = c.count_sent(|m| matches!(m.body, Body::InstallSnapshot { .. }));
    let snapshot_len = c.persisted_snapshot(1).unwrap().data.len() as usize;
    assert!(chunks >= snapshot_len / 16, "{chunks} chunks for {snapshot_len} bytes");
    // Node 3 may have applied the election no-op before it was cut off; no command before
    // the snapshot.
    let at = c.applied[&3].iter().position(|a| matches!(a, Apply::Snapshot(_)));
    let at = at.expect("node 3 installed a snapshot");
    for earlier in &c.applied[&3][..at] {
        assert!(matches!(earlier, Apply::Entry(e) if e.data.is_empty()), "{earlier:?}");
    }
    let Apply::Snapshot(s) = &c.applied[&3][at] else { unreachable!() };
    assert_eq!(s.data.is_in_memory(), in_memory, "{:?}", s.data);
    let mut expected: Vec<String> = (0..30).map(|i| format!("cmd{i}")).collect();
    expected.push("after".into());
    assert_eq!(c.applied_commands(3), expected);
    assert_eq!(c.persisted_snapshot(3), c.persisted_snapshot(1), "follower persisted it");
}

/// A snapshot survives a restart, and the node carries on from it.
#[test]
fn restart_from_a_snapshot() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for i in 0..10 {
        c.propose(1, &format!("c{i}")).unwrap();
    }
    c.stabilize();
    c.run_ticks(1);
    for id in 1..=3 {
        take_snapshot(&mut c, id);
    }
    for id in 1..=3 {
        c.restart(id);
    }
    c.run_ticks(40);
    let leader = c.leader().expect("a leader after restarting everyone");
    c.propose(leader, "later").unwrap();
    c.stabilize();
    c.run_ticks(2);
    for id in 1..=3 {
        let applied = c.applied_commands(id);
        assert_eq!(applied.len(), 11, "node {id}: {applied:?}");
        assert_eq!(applied.last().unwrap(), "later");
    }
}

/// Lost chunks are re-sent: the transfer completes even when every other chunk is dropped.
#[test]
fn snapshot_transfer_survives_lost_chunks() {
    let mut c = Cluster::with_config(3, |cfg: &mut Config| cfg.snapshot_chunk_bytes = 8);
    c.elect(1);
    c.isolate(3);
    for i in 0..10 {
        c.propose(1, &format!("v{i}")).unwrap();
    }
    c.stabilize();
    take_snapshot(&mut c, 1);
    c.heal();
    let mut dropped = 0;
    for _ in 0..200 {
        c.tick_all();
        c.process_readies();
        let mut keep = std::collections::VecDeque::new();
        while let Some(m) = c.in_transit.pop_front() {
            if matches!(m.body, Body::InstallSnapshot { .. }) && dropped % 2 == 0 {
                dropped += 1;
                continue;
            }
            if matches!(m.body, Body::InstallSnapshot { .. }) {
                dropped += 1;
            }
            keep.push_back(m);
        }
        c.in_transit = keep;
        c.stabilize();
        if c.applied_commands(3).len() == 10 {
            break;
        }
    }
    assert_eq!(c.applied_commands(3).len(), 10);
}

/// A follower being sent a snapshot that acknowledges entries through the snapshot's index by
/// an AppendEntries response (it caught up some other way, or the response was in flight)
/// leaves the snapshot state: the leader goes on with appends after that index.
#[test]
fn an_append_acknowledgement_through_the_snapshot_ends_the_snapshot_transfer() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    for i in 0..20 {
        c.propose(1, &format!("c{i}")).unwrap();
    }
    c.stabilize();
    let index = take_snapshot(&mut c, 1);
    c.heal();
    c.in_transit.clear();
    // A heartbeat round: node 3 answers it; the leader then finds it behind the snapshot.
    while !c.in_transit.iter().any(|m| m.to == 3 && matches!(m.body, Body::InstallSnapshot { .. }))
    {
        c.tick(1);
        c.process_readies();
        while c.deliver_one() {
            c.process_readies();
            if c.in_transit.iter().any(|m| matches!(m.body, Body::InstallSnapshot { .. })) {
                break;
            }
        }
    }
    c.in_transit.clear(); // The chunk is lost; instead an acknowledgement arrives:
    let term = c.node(1).current_term();
    let ack = raft::Message {
        from: 3,
        to: 1,
        term,
        body: Body::AppendEntriesResponse {
            outcome: raft::AppendOutcome::Success { match_index: index },
            read_round: 0,
        },
    };
    c.node_mut(1).step(ack).unwrap();
    c.process_readies();
    let next = c.in_transit.iter().find(|m| m.to == 3).expect("the leader goes on with node 3");
    assert!(
        matches!(next.body, Body::AppendEntries { prev_log_index, .. } if prev_log_index == index),
        "appends after the snapshot, not more of it: {next:?}"
    );
}

/// Chunks flow without waiting for ticks: each acknowledgement that gets further draws the
/// next chunk at once; one that does not (a repeat) draws nothing until the next heartbeat.
#[test]
fn each_chunk_acknowledged_draws_the_next_at_once() {
    let mut c = Cluster::with_config(3, |cfg: &mut Config| cfg.snapshot_chunk_bytes = 8);
    c.elect(1);
    c.isolate(3);
    for i in 0..10 {
        c.propose(1, &format!("cmd{i}")).unwrap();
    }
    c.stabilize();
    take_snapshot(&mut c, 1);
    c.heal();
    c.in_transit.clear();
    let first_chunk = |c: &Cluster| {
        c.in_transit.iter().any(|m| m.to == 3 && matches!(m.body, Body::InstallSnapshot { .. }))
    };
    while !first_chunk(&c) {
        c.tick(1);
        c.process_readies();
        while !first_chunk(&c) && c.deliver_one() {
            c.process_readies();
        }
    }
    // From here on nothing ticks: deliver the chunk, then its acknowledgement, and so on.
    let ack = |c: &mut Cluster| loop {
        let m = c.in_transit.pop_front().expect("a message in transit");
        let is_chunk = m.to == 3 && matches!(m.body, Body::InstallSnapshot { .. });
        let to = m.to;
        c.node_mut(to).step(m).unwrap();
        c.process_readies();
        if is_chunk {
            let at = c.in_transit.iter().position(|m| m.from == 3).expect("an acknowledgement");
            return c.in_transit.remove(at).unwrap();
        }
    };
    let first = ack(&mut c);
    c.node_mut(1).step(first.clone()).unwrap();
    c.process_readies();
    let next = c.in_transit.iter().find_map(|m| match m.body {
        Body::InstallSnapshot { offset, .. } if m.to == 3 => Some(offset),
        _ => None,
    });
    assert_eq!(next, Some(8), "the second chunk follows the first acknowledgement at once");
    c.in_transit.clear();
    c.node_mut(1).step(first).unwrap(); // The same acknowledgement again: no progress.
    c.process_readies();
    assert!(!first_chunk(&c), "a repeated acknowledgement draws no chunk before a heartbeat");
}
