//! PreVote (Raft thesis §9.6) and CheckQuorum (thesis §6.2).

mod harness;

use harness::Cluster;
use raft::{Body, Config, Message, Role};

/// PreVote: a node cut off by a partition keeps its term while it fails to reach anyone, so
/// when it rejoins it does not depose the healthy leader.
#[test]
fn rejoining_node_does_not_depose_a_healthy_leader() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.run_ticks(100); // Node 3 campaigns over and over, alone.
    assert_eq!(c.node(3).current_term(), 1, "PreVote let the isolated node raise its term");
    c.heal();
    c.run_ticks(20);
    assert_eq!(c.leader(), Some(1));
    assert_eq!(c.node(1).current_term(), 1);
    assert_eq!(c.node(3).status().leader_id, Some(1));
}

/// Without PreVote the same partition inflates the isolated node's term, and its return forces
/// an election: the behaviour PreVote exists to prevent.
#[test]
fn without_prevote_a_rejoining_node_forces_an_election() {
    let mut c = Cluster::with_config(3, |cfg: &mut Config| {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
    });
    c.elect(1);
    c.isolate(3);
    c.run_ticks(100);
    assert!(c.node(3).current_term() > 3);
    c.heal();
    c.run_ticks(40);
    assert!(c.node(1).current_term() > 3, "the leader was not disturbed");
}

/// CheckQuorum: a leader that cannot hear from a majority for an election timeout steps down.
#[test]
fn leader_without_a_majority_steps_down() {
    let mut c = Cluster::new(5);
    c.elect(1);
    c.run_ticks(5);
    for id in [3, 4, 5] {
        c.cut(1, id);
    }
    c.run_ticks(25);
    assert_ne!(c.node(1).role(), Role::Leader, "a leader kept leading a minority");
    // The majority side elects a leader of its own.
    let leader = c.leader().expect("the majority elects a leader");
    assert!([3, 4, 5].contains(&leader));
}

/// CheckQuorum's lease: a follower that heard from the leader within the election timeout
/// refuses a vote request from a higher term, without adopting that term.
#[test]
fn follower_in_lease_refuses_disruptive_votes() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.run_ticks(2);
    let disruptive = Message {
        from: 3,
        to: 2,
        term: 9,
        body: Body::RequestVote { pre_vote: false, last_log_index: 99, last_log_term: 9 },
    };
    c.node_mut(2).step(disruptive).unwrap();
    assert_eq!(c.node(2).current_term(), 1);
    c.process_readies();
    let reply = c.in_transit.iter().find(|m| m.from == 2 && m.to == 3).unwrap();
    assert_eq!(reply.term, 1);
    assert_eq!(reply.body, Body::RequestVoteResponse { pre_vote: false, vote_granted: false });
}

/// A pre-vote never changes the voter's term or its vote.
#[test]
fn pre_vote_changes_no_state() {
    let mut c = Cluster::new(3);
    c.isolate(1);
    c.heal();
    let probe = Message {
        from: 3,
        to: 2,
        term: 5,
        body: Body::RequestVote { pre_vote: true, last_log_index: 0, last_log_term: 0 },
    };
    c.node_mut(2).step(probe).unwrap();
    let s = c.node(2).status();
    assert_eq!((s.current_term, s.voted_for), (0, None));
    c.process_readies();
    let reply = c.in_transit.iter().find(|m| m.from == 2).unwrap();
    assert_eq!(reply.term, 5, "a granted pre-vote answers in the probed term");
    assert_eq!(reply.body, Body::RequestVoteResponse { pre_vote: true, vote_granted: true });
}

/// After a leader crash, PreVote and CheckQuorum still let the survivors elect a new leader.
#[test]
fn survivors_elect_a_leader_after_the_leader_crashes() {
    let mut c = Cluster::new(5);
    c.elect(2);
    c.run_ticks(3);
    c.isolate(2);
    c.run_ticks(40);
    let leader = c.leader().expect("survivors elect a leader");
    assert_ne!(leader, 2);
    assert_eq!(c.node(leader).current_term(), 2);
}

/// Node `to`'s answer to a vote request from 3 for `term` (pre-vote or not), stepped in
/// directly; nothing else is delivered.
fn vote_reply(c: &mut Cluster, to: u64, term: u64, pre_vote: bool) -> Message {
    c.in_transit.clear();
    let request = Message {
        from: 3,
        to,
        term,
        // A log far ahead: last term just below the campaign's term (a correct candidate's
        // last entry is never of a later term than the one it campaigns in).
        body: Body::RequestVote { pre_vote, last_log_index: 99, last_log_term: term - 1 },
    };
    c.node_mut(to).step(request).unwrap();
    c.process_readies();
    let replies: Vec<&Message> = c
        .in_transit
        .iter()
        .filter(|m| m.from == to && matches!(m.body, Body::RequestVoteResponse { .. }))
        .collect();
    assert_eq!(replies.len(), 1, "{replies:?}");
    replies[0].clone()
}

/// A follower that restarts has forgotten when it last heard from the leader, whose lease may
/// still count on it: for an election timeout of its own ticks after the restart it refuses
/// (pre-)votes as CheckQuorum's lease does, without adopting the term; after that it grants.
#[test]
fn a_restarted_follower_refuses_votes_for_an_election_timeout() {
    for pre_vote in [true, false] {
        let mut c = Cluster::new(3);
        c.elect(1);
        c.run_ticks(2);
        c.restart(2);
        let election_ticks = harness::config(2, 3).election_ticks;
        for tick in 0..election_ticks {
            let reply = vote_reply(&mut c, 2, 2, pre_vote);
            assert_eq!(
                reply.body,
                Body::RequestVoteResponse { pre_vote, vote_granted: false },
                "pre_vote {pre_vote}: granted {tick} ticks after the restart"
            );
            assert_eq!(reply.term, 1);
            assert_eq!(c.node(2).current_term(), 1, "pre_vote {pre_vote}: term adopted");
            c.tick(2);
        }
        let reply = vote_reply(&mut c, 2, 2, pre_vote);
        assert_eq!(
            reply.body,
            Body::RequestVoteResponse { pre_vote, vote_granted: true },
            "pre_vote {pre_vote}: still refused an election timeout after the restart"
        );
        assert_eq!(reply.term, 2);
    }
}

/// A node that never left term 0 promised no leader anything: it votes at once, so a new
/// cluster's first election is not held up.
#[test]
fn a_node_new_to_the_cluster_votes_at_once() {
    let mut c = Cluster::new(3);
    let reply = vote_reply(&mut c, 2, 1, true);
    assert_eq!(reply.body, Body::RequestVoteResponse { pre_vote: true, vote_granted: true });
}

/// The lease ends exactly an election timeout after the follower last heard from the leader:
/// one tick before, a pre-vote for a later term is refused; at the timeout it is granted.
#[test]
fn the_lease_ends_exactly_at_the_election_timeout() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.stabilize(); // Node 2 has just heard from the leader.
    let election_ticks = harness::config(2, 3).election_ticks;
    for _ in 0..election_ticks - 1 {
        c.tick(2);
    }
    let reply = vote_reply(&mut c, 2, 2, true);
    assert_eq!(reply.body, Body::RequestVoteResponse { pre_vote: true, vote_granted: false });
    c.tick(2);
    assert_eq!(c.node(2).role(), Role::Follower, "its own election timeout is later");
    let reply = vote_reply(&mut c, 2, 2, true);
    assert_eq!(reply.body, Body::RequestVoteResponse { pre_vote: true, vote_granted: true });
}
