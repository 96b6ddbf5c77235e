//! Leader election, §5.2 and §5.4.1 of the Raft paper, at the message level.

mod harness;

use harness::Cluster;
use raft::{Body, Config, Message, PersistedState, RawNode, Role};

fn without_prevote(c: &mut Config) {
    c.pre_vote = false;
}

/// §5.2: a follower that hears nothing for an election timeout becomes a candidate, increments
/// its term, votes for itself and asks every other server for its vote.
#[test]
fn follower_times_out_and_becomes_candidate() {
    let mut c = Cluster::with_config(3, without_prevote);
    let mut ticks = 0;
    while c.node(1).role() == Role::Follower {
        c.tick(1);
        ticks += 1;
    }
    assert!((10..20).contains(&ticks), "election timeout {ticks} outside [10, 20)");
    let s = c.node(1).status();
    assert_eq!((s.role, s.current_term, s.voted_for), (Role::Candidate, 1, Some(1)));
    c.process_readies();
    let votes: Vec<&Message> = c.in_transit.iter().collect();
    assert_eq!(votes.len(), 2);
    assert!(votes.iter().all(|m| m.term == 1
        && matches!(m.body, Body::RequestVote { pre_vote: false, last_log_index: 0, .. })));
}

/// §5.2: randomized timeouts: different seeds give different timeouts, all in [T, 2T).
#[test]
fn election_timeouts_are_randomized_by_the_seed() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..40 {
        let config = harness::config(1, 3);
        let mut node = RawNode::new(Config { seed, ..config }, PersistedState::default()).unwrap();
        let mut ticks = 0;
        while node.role() == Role::Follower {
            node.tick();
            ticks += 1;
        }
        assert!((10..20).contains(&ticks));
        seen.insert(ticks);
    }
    assert!(seen.len() >= 5, "timeouts barely vary: {seen:?}");
}

/// §5.2: a candidate that receives votes from a majority becomes leader and asserts itself with
/// heartbeats; the others follow it in its term.
#[test]
fn candidate_with_majority_becomes_leader() {
    let mut c = Cluster::with_config(5, without_prevote);
    c.elect(3);
    for id in [1, 2, 4, 5] {
        let s = c.node(id).status();
        assert_eq!((s.role, s.current_term, s.leader_id), (Role::Follower, 1, Some(3)));
    }
}

/// §5.2: each server votes for at most one candidate per term, first come first served.
#[test]
fn one_vote_per_term() {
    let mut c = Cluster::with_config(3, without_prevote);
    // Nodes 1 and 2 both campaign in term 1; node 3 hears node 1 first.
    c.campaign(1);
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(3).status().voted_for, Some(1));
    let vote = Message {
        from: 2,
        to: 3,
        term: 1,
        body: Body::RequestVote { pre_vote: false, last_log_index: 0, last_log_term: 0 },
    };
    c.node_mut(3).step(vote).unwrap();
    c.process_readies();
    let reply = c.in_transit.pop_back().unwrap();
    assert_eq!(reply.body, Body::RequestVoteResponse { pre_vote: false, vote_granted: false });
}

/// §5.2: a candidate that learns of a leader of its term (an AppendEntries) steps down.
#[test]
fn candidate_steps_down_for_leader_of_same_term() {
    let mut c = Cluster::with_config(3, without_prevote);
    c.isolate(2);
    c.campaign(2); // Term 1, no votes arrive.
    assert_eq!(c.node(2).role(), Role::Candidate);
    c.heal();
    // Node 1 campaigns in term 1 too, but node 2 has voted for itself: node 3 elects node 1.
    c.isolate(2);
    c.campaign(1);
    assert_eq!(c.node(1).status().current_term, 1);
    c.heal();
    c.run_ticks(2);
    assert_eq!(c.node(2).status().role, Role::Follower);
    assert_eq!(c.node(2).status().leader_id, Some(1));
}

/// §5.4.1: a voter denies its vote to a candidate whose log is less up to date than its own.
#[test]
fn vote_denied_to_candidate_with_stale_log() {
    let mut c = Cluster::with_config(3, without_prevote);
    c.elect(1);
    c.propose(1, "x").unwrap();
    c.isolate(3); // Node 3 misses the entry.
    c.stabilize();
    c.heal();
    c.isolate(1); // The leader vanishes; node 3 campaigns with a shorter log.
    c.campaign(3);
    assert_ne!(c.node(3).role(), Role::Leader, "stale candidate won");
    // Only node 2, which has the entry, can win: node 3 never gets its vote.
    c.run_ticks(60);
    assert_eq!(c.leader(), Some(2));
    assert!(c.node(2).current_term() >= 2);
}

/// §5.2: a leader sends heartbeats every heartbeat interval, and followers that receive them
/// never start an election.
#[test]
fn heartbeats_keep_followers_from_campaigning() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let before = c.count_sent(|m| matches!(m.body, Body::AppendEntries { .. }));
    c.run_ticks(100);
    let heartbeats = c.count_sent(|m| matches!(m.body, Body::AppendEntries { .. })) - before;
    assert_eq!(heartbeats, 200, "one heartbeat per tick per follower");
    assert_eq!(c.leader(), Some(1));
    assert_eq!(c.node(2).current_term(), 1);
}

/// A single-node cluster elects itself at once.
#[test]
fn single_node_elects_itself() {
    let mut c = Cluster::new(1);
    c.elect(1);
    assert_eq!(c.node(1).current_term(), 1);
}

/// §5.2: when votes split, a new election after another timeout resolves it.
#[test]
fn split_vote_is_resolved_by_a_later_election() {
    let mut c = Cluster::with_config(4, without_prevote);
    // 1 and 2 campaign at once in term 1; 3 votes for 1 and 4 for 2: no majority of 3.
    c.cut(1, 4);
    c.cut(2, 3);
    for id in [1, 2] {
        while c.node(id).role() == Role::Follower {
            c.tick(id);
        }
    }
    c.stabilize();
    assert_eq!(c.leader(), None, "the vote should have split");
    c.heal();
    c.run_ticks(60);
    let leader = c.leader().expect("a later election elects a leader");
    assert!(c.node(leader).current_term() >= 2);
}

/// §5.2 with Figure 2's rule that state is persisted before responding: the `Ready` that
/// carries a granted vote also carries the hard state recording it.
#[test]
fn a_granted_vote_is_persisted_in_the_ready_that_sends_it() {
    let config = Config { pre_vote: false, ..harness::config(2, 3) };
    let mut node = RawNode::new(config, PersistedState::default()).unwrap();
    let request = Message {
        from: 1,
        to: 2,
        term: 5,
        body: Body::RequestVote { pre_vote: false, last_log_index: 0, last_log_term: 0 },
    };
    node.step(request).unwrap();
    assert!(node.has_ready());
    let ready = node.ready();
    let granted = ready.messages.iter().any(|m| {
        m.to == 1
            && matches!(m.body, Body::RequestVoteResponse { pre_vote: false, vote_granted: true })
    });
    assert!(granted, "the vote is granted: {:?}", ready.messages);
    let hard_state = ready.hard_state.expect("the vote changes the hard state");
    assert_eq!((hard_state.current_term, hard_state.voted_for), (5, Some(1)));
}

/// A pre-vote is granted only for a term ahead of the voter's and a log at least as up to
/// date as the voter's (§9.6 of the thesis): neither condition alone is enough.
#[test]
fn a_pre_vote_needs_both_a_later_term_and_an_up_to_date_log() {
    let entry = |index| raft::Entry { index, term: 1, data: bytes::Bytes::from_static(b"x") };
    let state = PersistedState {
        hard_state: raft::HardState { current_term: 1, voted_for: None, commit_index: 0 },
        snapshot: None,
        entries: vec![entry(1), entry(2), entry(3)],
    };
    // No CheckQuorum, so no lease stands in the way of granting.
    let config = Config { check_quorum: false, ..harness::config(2, 3) };
    let mut node = RawNode::new(config, state).unwrap();
    let mut pre_vote = |term, last_log_index| {
        let body = Body::RequestVote { pre_vote: true, last_log_index, last_log_term: 1 };
        node.step(Message { from: 1, to: 2, term, body }).unwrap();
        let ready = node.ready();
        node.advance();
        let reply = ready.messages.into_iter().find(|m| m.to == 1).expect("an answer");
        matches!(reply.body, Body::RequestVoteResponse { pre_vote: true, vote_granted: true })
    };
    assert!(!pre_vote(5, 2), "a later term with a log behind ours");
    assert!(!pre_vote(1, 3), "an up-to-date log for our own term");
    assert!(pre_vote(5, 3), "a later term and an up-to-date log");
    assert_eq!(node.current_term(), 1, "pre-votes change no state");
}

/// §5.2: a candidate stays one until a majority decides: in a cluster of three, one refusal
/// leaves the election open, and the other voter's grant then wins it.
#[test]
fn one_refusal_of_three_does_not_end_an_election() {
    let mut c = Cluster::with_config(3, without_prevote);
    while c.node(1).role() != Role::Candidate {
        c.tick(1); // Nothing is delivered: the vote requests stay in transit.
    }
    let term = c.node(1).current_term();
    let answer = |from, granted| Message {
        from,
        to: 1,
        term,
        body: Body::RequestVoteResponse { pre_vote: false, vote_granted: granted },
    };
    c.node_mut(1).step(answer(2, false)).unwrap();
    assert_eq!(c.node(1).role(), Role::Candidate, "one refusal is not a majority");
    c.node_mut(1).step(answer(3, true)).unwrap();
    assert_eq!(c.node(1).role(), Role::Leader, "itself and node 3 are a majority");
}
