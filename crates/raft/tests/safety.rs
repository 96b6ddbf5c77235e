//! Safety, §5.4 of the Raft paper: the commit rule, leader completeness, state machine safety.

mod harness;

use bytes::Bytes;
use harness::Cluster;
use labrpc::Rng;
use quickcheck::{Arbitrary, Gen, QuickCheck};
use raft::planted::PlantedBug;
use raft::{
    AppendOutcome, Body, Config, Entry, Message, MessageKind, PersistedState, RawNode, Role,
    SnapshotMeta,
};

/// §5.4.2 and Figure 8: a leader never commits an entry of an earlier term by counting
/// replicas, even once a majority stores it; it commits it only together with an entry of its
/// own term.
#[test]
fn old_term_entries_are_not_committed_by_counting_replicas() {
    let mut c = figure_8_until_an_old_entry_is_on_a_majority(None);
    assert_eq!(c.node(1).status().commit_index, 0, "term-1 entry committed by counting");
    // Once node 1 appends an entry of its own term and that reaches a majority, both commit.
    c.propose(1, "c").unwrap();
    c.stabilize();
    assert_eq!(c.node(1).status().commit_index, 2);
}

/// The check above can fail: with the Figure 8 bug planted in the leader (it commits the
/// highest index a majority holds, whatever its term), the term-1 entry commits by counting
/// (issue 20: the random sweep does not reach this five-node sequence, this script does).
#[test]
fn the_figure_8_script_catches_commitment_by_counting() {
    let c =
        figure_8_until_an_old_entry_is_on_a_majority(Some(PlantedBug::CommitEarlierTermByCounting));
    assert_eq!(c.node(1).status().commit_index, 1, "the planted bug went unseen");
}

/// Figure 8 up to (c): node 1 leads term 3 or later, and its term-1 entry 1 is on a majority
/// (nodes 1, 2 and 3), while node 5 holds a term-2 entry at index 1. `bug` is planted in node 1
/// for that last term.
fn figure_8_until_an_old_entry_is_on_a_majority(bug: Option<PlantedBug>) -> Cluster {
    // The scenario needs elections the lease of CheckQuorum and PreVote would refuse.
    let mut c = Cluster::with_config(5, |cfg: &mut Config| {
        cfg.no_op_on_election = false;
        cfg.pre_vote = false;
        cfg.check_quorum = false;
    });
    // Term 1: node 1 leads and replicates entry 1 ("a") to node 2 only.
    c.elect(1);
    for id in [3, 4, 5] {
        c.cut(1, id);
    }
    c.propose(1, "a").unwrap();
    c.stabilize();
    c.heal();
    // Node 5 leads term 2 (votes from 3 and 4) and appends entry 1 ("b") only locally.
    c.isolate(1);
    c.cut(5, 2);
    c.campaign(5);
    assert_eq!(c.node(5).role(), Role::Leader);
    c.isolate(5);
    c.propose(5, "b").unwrap();
    c.stabilize();
    c.heal();
    // Node 1 leads term 3 and replicates its term-1 entry to node 3: now on a majority (1, 2, 3).
    c.isolate(5);
    c.cut(1, 4);
    c.restart(1); // Node 1 still thinks it leads term 1; a restart makes it a follower.
    if let Some(bug) = bug {
        c.node_mut(1).plant_bug(bug);
    }
    for _ in 0..3 {
        if c.node(1).role() != Role::Leader {
            c.campaign(1); // Node 3 voted in term 2 already; term 3 gets its vote.
        }
    }
    assert_eq!(c.node(1).role(), Role::Leader);
    assert!(c.node(1).current_term() >= 3);
    c.stabilize();
    assert_eq!(c.node(3).term_at(1), Some(1), "entry 1 reached node 3");
    c
}

/// Leader completeness (§5.4): committed entries survive any sequence of leader changes. Every
/// round must elect a leader and commit its command, so no round passes having tested nothing.
#[test]
fn committed_entries_survive_leader_changes() {
    let mut c = Cluster::new(5);
    let mut committed: Vec<String> = Vec::new();
    for round in 0..10u64 {
        let leader = 1 + round % 5;
        c.heal();
        c.run_ticks(1);
        if c.leader() != Some(leader) {
            c.isolate(c.leader().unwrap_or(leader));
            c.heal();
            c.campaign(leader);
            c.run_ticks(25);
        }
        let leader = c.leader().unwrap_or_else(|| panic!("round {round}: no leader elected"));
        let cmd = format!("r{round}");
        let (index, _) = c
            .propose(leader, &cmd)
            .unwrap_or_else(|e| panic!("round {round}: leader {leader} refused {cmd}: {e:?}"));
        c.stabilize();
        c.run_ticks(1);
        let commit = c.node(leader).status().commit_index;
        assert!(commit >= index, "round {round}: {cmd} (index {index}) not committed: {commit}");
        committed.push(cmd);
        // Crash a random follower each round; it restarts from what it persisted.
        let victim = 1 + (round * 3 + 1) % 5;
        if victim != leader {
            c.restart(victim);
        }
    }
    c.run_ticks(30);
    assert_eq!(committed.len(), 10);
    for id in 1..=5 {
        let applied = c.applied_commands(id);
        for cmd in &committed {
            assert!(applied.contains(cmd), "node {id} lost committed {cmd}: {applied:?}");
        }
    }
}

/// State machine safety: whatever happens, no two nodes apply different entries at one index.
#[test]
fn no_two_nodes_apply_different_entries_at_an_index() {
    let mut c = Cluster::new(3);
    let mut rng = Rng::new(2026);
    for step in 0..400 {
        match rng.below(10) {
            0 => {
                let id = 1 + rng.below(3);
                c.isolate(id);
            }
            1 | 2 => c.heal(),
            3 => {
                let id = 1 + rng.below(3);
                c.restart(id);
            }
            _ => {
                if let Some(l) = c.leader() {
                    let _ = c.propose(l, &format!("s{step}"));
                }
            }
        }
        c.run_ticks(1 + rng.below(4) as u32);
    }
    c.heal();
    c.run_ticks(40);
    let logs: Vec<Vec<Entry>> = (1..=3).map(|id| c.applied_entries(id)).collect();
    for a in &logs {
        for b in &logs {
            for (x, y) in a.iter().zip(b) {
                assert_eq!(x.index, y.index);
                assert_eq!(x, y, "different entries applied at index {}", x.index);
            }
        }
    }
    assert!(logs.iter().all(|l| l.len() > 20), "too little progress to mean anything");
}

/// A message in the quickcheck model of inbound traffic.
#[derive(Clone, Debug)]
struct Inbound(Message);

impl Arbitrary for Inbound {
    fn arbitrary(g: &mut Gen) -> Inbound {
        let from = *g.choose(&[2u64, 3]).unwrap();
        let term = u64::arbitrary(g) % 4;
        let index = u64::arbitrary(g) % 6;
        let term_at = u64::arbitrary(g) % 4;
        let body = match u8::arbitrary(g) % 6 {
            0 => Body::RequestVote {
                pre_vote: bool::arbitrary(g),
                last_log_index: index,
                last_log_term: term_at,
            },
            1 => Body::RequestVoteResponse {
                pre_vote: bool::arbitrary(g),
                vote_granted: bool::arbitrary(g),
            },
            2 => {
                let n = u64::arbitrary(g) % 3;
                let entries = (0..n)
                    .map(|i| Entry {
                        term: term_at.max(1),
                        index: index + 1 + i,
                        data: Bytes::new(),
                    })
                    .collect();
                Body::AppendEntries {
                    prev_log_index: index,
                    prev_log_term: term_at,
                    entries,
                    leader_commit: 0,
                    read_round: 0,
                }
            }
            3 => Body::AppendEntriesResponse {
                outcome: AppendOutcome::Success { match_index: index },
                read_round: 0,
            },
            4 => Body::InstallSnapshot {
                meta: SnapshotMeta {
                    last_included_index: index + 1,
                    last_included_term: term_at,
                    voters: vec![],
                },
                offset: 0,
                total_len: 2,
                data: Bytes::from_static(b"ab"),
            },
            _ => Body::InstallSnapshotResponse {
                last_included_index: index,
                received_bytes: 0,
                done: bool::arbitrary(g),
            },
        };
        Inbound(Message { from, to: 1, term, body })
    }
}

/// The transport contract: every request gets exactly one response, to its sender, in order.
#[test]
fn every_request_gets_exactly_one_response_in_order() {
    fn prop(inbound: Vec<Inbound>, ticks: Vec<u8>) -> bool {
        let mut node =
            RawNode::new(Config { seed: 1, ..harness::config(1, 3) }, PersistedState::default())
                .unwrap();
        let mut expected: Vec<(u64, MessageKind)> = Vec::new();
        let mut got: Vec<(u64, MessageKind)> = Vec::new();
        for (i, Inbound(m)) in inbound.into_iter().enumerate() {
            if let Some(resp) = m.kind().response() {
                expected.push((m.from, resp));
            }
            // Refused or not, a request is answered.
            let _ = node.step(m);
            for _ in 0..ticks.get(i).copied().unwrap_or(0) % 3 {
                node.tick();
            }
            while node.has_ready() {
                let ready = node.ready();
                for out in ready.messages {
                    if !out.kind().is_request() {
                        got.push((out.to, out.kind()));
                    }
                }
                node.advance();
            }
        }
        got == expected
    }
    QuickCheck::new().tests(500).quickcheck(prop as fn(Vec<Inbound>, Vec<u8>) -> bool);
}
