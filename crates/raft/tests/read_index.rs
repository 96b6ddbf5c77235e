//! Reads without log writes (Raft thesis §6.4): ReadIndex confirmed by a heartbeat round, and
//! leader leases. A read is answered only by a node that can prove it still leads.

mod harness;

use harness::Cluster;
use raft::{Body, Config, Error, ReadState};

fn appends_sent(c: &Cluster) -> usize {
    c.count_sent(|m| matches!(m.body, Body::AppendEntries { .. }))
}

#[test]
fn a_read_is_confirmed_by_one_heartbeat_round_and_writes_nothing() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, "x").unwrap();
    c.stabilize();
    let (last, commit) = (c.node(1).status().last_index, c.node(1).status().commit_index);
    let before = appends_sent(&c);
    c.node_mut(1).read_index(7).unwrap();
    c.node_mut(1).read_index(8).unwrap(); // Reads close together share the round.
    c.stabilize();
    assert_eq!(
        c.reads[&1],
        vec![ReadState { ctx: 7, index: commit }, ReadState { ctx: 8, index: commit }]
    );
    assert_eq!(appends_sent(&c) - before, 2, "one heartbeat to each of the two followers");
    assert_eq!(c.node(1).status().last_index, last, "a read wrote to the log");
}

#[test]
fn a_deposed_leader_never_confirms_a_read() {
    let mut c = Cluster::new(5);
    c.elect(1);
    c.propose(1, "old").unwrap();
    c.stabilize();
    c.isolate(1);
    c.node_mut(1).read_index(1).unwrap();
    // The majority elects a new leader and writes; the old leader keeps trying to confirm.
    c.run_ticks(30);
    let new = c.leader().expect("the majority elects a leader");
    assert_ne!(new, 1);
    c.propose(new, "new").unwrap();
    c.run_ticks(5);
    assert!(c.reads.get(&1).is_none_or(Vec::is_empty), "an isolated leader answered a read");
    c.heal();
    c.run_ticks(5);
    assert!(c.reads.get(&1).is_none_or(Vec::is_empty), "the read was dropped with leadership");
    // The new leader answers reads at an index that includes the new write.
    c.node_mut(new).read_index(2).unwrap();
    c.stabilize();
    let read = c.reads[&new][0];
    assert_eq!(read.ctx, 2);
    assert!(read.index >= c.node(new).status().commit_index);
}

#[test]
fn a_leader_with_a_minority_cannot_confirm() {
    let mut c = Cluster::new(5);
    c.elect(1);
    for id in [3, 4, 5] {
        c.cut(1, id);
    }
    c.node_mut(1).read_index(9).unwrap();
    c.run_ticks(3); // Node 2 answers every round; that is two of five.
    assert!(c.reads.get(&1).is_none_or(Vec::is_empty));
}

#[test]
fn a_new_leader_reads_at_least_at_the_end_of_the_log_it_inherited() {
    let mut c = Cluster::with_config(3, |cfg: &mut Config| {
        cfg.no_op_on_election = false;
        cfg.check_quorum = false; // So that node 2 can win while node 3 still heard from 1.
        cfg.announce_commit = false; // So that node 1 can commit "b" without telling anyone.
    });
    c.elect(1);
    c.propose(1, "a").unwrap();
    c.stabilize();
    // Node 1's entry reaches node 2 but node 1 dies before telling anyone it committed...
    c.propose(1, "b").unwrap();
    c.process_readies();
    c.isolate(1);
    while c.deliver_one() {}
    let inherited = c.node(2).status().last_index;
    c.campaign(2);
    assert_eq!(c.node(2).role(), raft::Role::Leader);
    c.node_mut(2).read_index(5).unwrap();
    c.stabilize();
    // ...so the new leader may not know "b" is committed, but a read must wait for it anyway.
    assert_eq!(c.reads[&2], vec![ReadState { ctx: 5, index: inherited }]);
    assert!(c.node(2).status().commit_index < inherited, "test setup: b not known committed");
}

#[test]
fn a_single_node_answers_at_once() {
    let mut c = Cluster::new(1);
    c.elect(1);
    c.node_mut(1).read_index(3).unwrap();
    c.process_readies();
    assert_eq!(c.reads[&1].len(), 1);
}

fn lease_cluster() -> Cluster {
    Cluster::with_config(3, |cfg: &mut Config| cfg.lease_reads = true)
}

#[test]
fn a_leader_in_its_lease_answers_without_a_round() {
    let mut c = lease_cluster();
    c.elect(1);
    c.run_ticks(2);
    let before = appends_sent(&c);
    c.node_mut(1).read_index(4).unwrap();
    c.process_readies();
    assert_eq!(c.reads[&1].len(), 1, "the lease holds: answered at once");
    assert_eq!(appends_sent(&c), before, "no heartbeat was needed");
}

#[test]
fn the_lease_runs_out_before_anyone_else_can_be_elected() {
    let mut c = lease_cluster();
    c.elect(1);
    c.run_ticks(2);
    c.isolate(1);
    // Election timeout 10 ticks, margin 2: the lease lasts 8 ticks from the last answered
    // round. Followers refuse votes for 10 ticks after they last heard from the leader.
    for _ in 0..7 {
        c.tick(1);
        c.stabilize();
    }
    c.node_mut(1).read_index(5).unwrap();
    c.process_readies();
    assert_eq!(c.reads[&1], vec![ReadState { ctx: 5, index: 1 }], "7 ticks in: still leased");
    c.tick(1);
    c.stabilize();
    c.node_mut(1).read_index(6).unwrap();
    c.run_ticks(1);
    assert_eq!(c.reads[&1].len(), 1, "read on an expired lease");
    // Meanwhile no one else could have been elected yet...
    assert_eq!(c.leader(), Some(1));
    assert!((2..=3).all(|id| c.node(id).current_term() == c.node(1).current_term()));
}

#[test]
fn lease_reads_need_check_quorum() {
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.lease_reads = true;
    cfg.check_quorum = false;
    assert!(cfg.validate().unwrap_err().to_string().contains("lease_reads"));
    cfg.check_quorum = true;
    cfg.lease_margin_ticks = cfg.election_ticks;
    assert!(cfg.validate().unwrap_err().to_string().contains("lease_margin_ticks"));
}

#[test]
fn a_follower_read_is_confirmed_by_the_leader_and_comes_back() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, "x").unwrap();
    c.stabilize();
    let commit = c.node(1).status().commit_index;
    c.node_mut(2).read_index(11).unwrap();
    c.stabilize();
    assert_eq!(c.reads[&2], vec![ReadState { ctx: 11, index: commit }]);
    assert!(c.reads.get(&1).is_none_or(Vec::is_empty), "the leader kept the read for itself");
    let forwarded = c.count_sent(|m| matches!(m.body, Body::ReadIndex { .. }));
    assert_eq!(forwarded, 1);
}

#[test]
fn a_forwarded_read_is_refused_by_a_non_leader_and_dropped_by_a_deposed_one() {
    let mut c = Cluster::new(3);
    c.elect(1);
    // A read index request reaching a follower gets a refusal, not silence.
    let term = c.node(3).current_term();
    let read = raft::Message { from: 2, to: 3, term, body: Body::ReadIndex { ctx: 5 } };
    c.node_mut(3).step(read).unwrap();
    c.process_readies();
    let refused = c.count_sent(|m| {
        matches!(m.body, Body::ReadIndexResponse { ctx: 5, index: None }) && m.to == 2
    });
    assert_eq!(refused, 1);
    // The leader hears node 2's request but reaches no one: it queues the read, then loses
    // its leadership.
    c.cut(1, 3);
    c.cut_oneway(1, 2);
    c.node_mut(2).read_index(6).unwrap();
    c.process_readies();
    while c.deliver_one() {}
    c.run_ticks(40); // Node 1 steps down (CheckQuorum); 2 and 3 elect a new leader.
    let dropped = c.count_sent(|m| {
        matches!(m.body, Body::ReadIndexResponse { ctx: 6, index: None }) && m.from == 1
    });
    assert_eq!(dropped, 1, "the deposed leader answers the forwarded read with a refusal");
    assert!(c.reads.get(&2).is_none_or(|r| r.iter().all(|s| s.ctx != 6)));
    // A follower with no leader refuses at once.
    let mut lone = Cluster::new(3);
    assert!(matches!(lone.node_mut(2).read_index(1), Err(Error::NotLeader { leader_hint: None })));
}

/// The lease needs a majority, not everyone: with one follower of two cut off, the leader and
/// the other follower's acknowledgements still hold it.
#[test]
fn a_lease_needs_only_a_majority_of_acknowledgements() {
    let mut c = lease_cluster();
    c.elect(1);
    c.isolate(3);
    // Heartbeat rounds acknowledged by node 2 only, for longer than a lease: node 3's last
    // acknowledgement no longer counts.
    c.run_ticks(12);
    assert_eq!(c.node(1).role(), raft::Role::Leader, "node 2 keeps CheckQuorum satisfied");
    let before = appends_sent(&c);
    c.node_mut(1).read_index(6).unwrap();
    c.process_readies();
    assert_eq!(c.reads[&1].len(), 1, "the leader and node 2 are a majority: answered at once");
    assert_eq!(appends_sent(&c), before, "no heartbeat was needed");
}

/// A follower's read request from an older term is answered at once with no index, so the
/// follower's reader fails over rather than waiting for an answer that would never come.
#[test]
fn a_read_request_from_an_old_term_is_refused_with_an_answer() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.stabilize();
    let term = c.node(1).current_term();
    c.in_transit.clear();
    let stale = raft::Message { from: 2, to: 1, term: term - 1, body: Body::ReadIndex { ctx: 42 } };
    let _ = c.node_mut(1).step(stale);
    c.process_readies();
    let answer = c.in_transit.iter().find(|m| m.to == 2).expect("an answer to node 2");
    assert_eq!(answer.body, Body::ReadIndexResponse { ctx: 42, index: None });
    assert_eq!(answer.term, term, "carrying the current term");
}
