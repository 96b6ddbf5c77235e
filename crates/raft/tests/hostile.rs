//! Messages no correct peer sends: each is refused by `RawNode::step` with a reason, leaves the
//! node as it was, and the cluster keeps committing afterwards. Before these checks, the first
//! two below panicked the leader (`prev entry is held`) and the third made a follower append
//! and commit entries numbered wrongly.

mod harness;

use bytes::Bytes;
use harness::Cluster;
use raft::{
    AppendOutcome, Body, Config, Entry, Error, Message, MessageKind, PersistedState, ProposalCheck,
    RawNode, Role, SnapshotMeta,
};

/// A three-node cluster led by node 1, settled, with one command committed.
fn settled() -> (Cluster, u64) {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, "before").unwrap();
    c.stabilize();
    let term = c.node(1).current_term();
    (c, term)
}

/// The cluster still commits: a new command reaches every node's state machine.
fn still_commits(c: &mut Cluster, data: &str) {
    let leader = c.leader().expect("a leader");
    c.propose(leader, data).unwrap();
    c.stabilize();
    for id in 1..=3 {
        assert_eq!(c.applied_commands(id).last().map(String::as_str), Some(data), "node {id}");
    }
}

fn msg(from: u64, to: u64, term: u64, body: Body) -> Message {
    Message { from, to, term, body }
}

fn entry(index: u64, term: u64, data: &'static str) -> Entry {
    Entry { index, term, data: Bytes::from_static(data.as_bytes()) }
}

#[test]
fn a_match_index_beyond_what_was_sent_is_refused() {
    let (mut c, term) = settled();
    let before = c.node(1).status();
    let forged = msg(
        2,
        1,
        term,
        Body::AppendEntriesResponse {
            outcome: AppendOutcome::Success { match_index: 1_000_000 },
            read_round: 0,
        },
    );
    let err = c.node_mut(1).step(forged).unwrap_err();
    assert_eq!(err.kind, MessageKind::AppendEntriesResponse);
    assert!(err.reason.contains("1000000"), "{err}");
    let after = c.node(1).status();
    assert_eq!(after.rejected_messages, before.rejected_messages + 1);
    assert_eq!((after.commit_index, after.last_index), (before.commit_index, before.last_index));
    still_commits(&mut c, "after");
}

#[test]
fn a_conflict_hint_beyond_what_was_sent_is_refused() {
    let (mut c, term) = settled();
    let forged = msg(
        3,
        1,
        term,
        Body::AppendEntriesResponse {
            outcome: AppendOutcome::Conflict {
                prev_log_index: 900,
                conflict_term: None,
                conflict_index: 800,
            },
            read_round: 0,
        },
    );
    assert!(c.node_mut(1).step(forged).is_err());
    // A hint that points after the entry it answers is refused before any state is consulted.
    let inverted = msg(
        3,
        1,
        term,
        Body::AppendEntriesResponse {
            outcome: AppendOutcome::Conflict {
                prev_log_index: 1,
                conflict_term: None,
                conflict_index: 5,
            },
            read_round: 0,
        },
    );
    assert!(c.node_mut(1).step(inverted).unwrap_err().reason.contains("conflict_index"));
    still_commits(&mut c, "after");
}

#[test]
fn a_lying_append_with_misnumbered_entries_changes_nothing() {
    let (mut c, term) = settled();
    let before = c.node(2).status();
    // A "leader" of a higher term whose entries skip an index.
    let lie = msg(
        3,
        2,
        term + 1,
        Body::AppendEntries {
            prev_log_index: before.last_index,
            prev_log_term: term,
            entries: vec![entry(before.last_index + 1, term + 1, "x"), entry(99, term + 1, "y")],
            leader_commit: 99,
            read_round: 0,
        },
    );
    let err = c.node_mut(2).step(lie).unwrap_err();
    assert!(err.reason.contains("expected"), "{err}");
    let after = c.node(2).status();
    assert_eq!(after.current_term, before.current_term, "the refused message's term is ignored");
    assert_eq!((after.last_index, after.commit_index), (before.last_index, before.commit_index));
    assert_eq!(after.role, Role::Follower);
    still_commits(&mut c, "after");
}

#[test]
fn entries_whose_terms_go_backwards_or_pass_the_message_term_are_refused() {
    let (mut c, term) = settled();
    let last = c.node(2).status().last_index;
    for entries in [
        vec![entry(last + 1, term + 5, "from the future")],
        vec![entry(last + 1, term, "a"), entry(last + 2, term - 1, "older")],
    ] {
        let m = msg(
            1,
            2,
            term,
            Body::AppendEntries {
                prev_log_index: last,
                prev_log_term: term,
                entries,
                leader_commit: 0,
                read_round: 0,
            },
        );
        assert!(c.node_mut(2).step(m).is_err());
    }
    assert_eq!(c.node(2).status().last_index, last);
}

#[test]
fn an_append_that_would_overwrite_committed_entries_is_refused() {
    let (mut c, term) = settled();
    let status = c.node(2).status();
    assert!(status.commit_index >= 2);
    // A "leader" of a later term claims other entries from index 1 on.
    let rewrite = msg(
        3,
        2,
        term + 1,
        Body::AppendEntries {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![entry(1, term + 1, "rewritten"), entry(2, term + 1, "rewritten")],
            leader_commit: 2,
            read_round: 0,
        },
    );
    let err = c.node_mut(2).step(rewrite).unwrap_err();
    assert!(err.reason.contains("committed"), "{err}");
    assert_eq!(c.node(2).status().current_term, term);
    still_commits(&mut c, "after");
}

/// Found by the `peer_step` fuzz target (fuzz/regressions/peer_step/conflict-livelock-*): a
/// follower whose log a forged append had overwritten kept answering the leader's probe with a
/// conflict at an index it had acknowledged, the leader re-sent the same probe at once, and the
/// two exchanged the same pair of messages forever without a tick.
#[test]
fn a_conflict_at_an_acknowledged_index_draws_no_immediate_probe() {
    let (mut c, term) = settled();
    let acked = c.node(1).status().last_index;
    assert!(!c.node(1).has_ready());
    let contradiction = msg(
        2,
        1,
        term,
        Body::AppendEntriesResponse {
            outcome: AppendOutcome::Conflict {
                prev_log_index: acked,
                conflict_term: Some(term),
                conflict_index: acked,
            },
            read_round: 0,
        },
    );
    c.node_mut(1).step(contradiction).unwrap();
    assert!(!c.node(1).has_ready(), "the leader answered a contradiction with a new probe");
    still_commits(&mut c, "after");
}

/// Found by `peer_step` (fuzz/regressions/peer_step/snapshot-livelock-*): a follower holding
/// part of a snapshot ignored a first chunk of the same snapshot with another length, answered
/// "not done" to every chunk of it, and the leader re-sent at once, forever.
#[test]
fn a_snapshot_restarted_with_another_length_is_taken_whole() {
    let (mut c, term) = settled();
    let index = c.node(3).status().commit_index + 5;
    let meta =
        SnapshotMeta { last_included_index: index, last_included_term: term, voters: vec![] };
    let chunk = |total_len, data: &'static [u8]| {
        let data = Bytes::from_static(data);
        msg(1, 3, term, Body::InstallSnapshot { meta: meta.clone(), offset: 0, total_len, data })
    };
    c.node_mut(3).step(chunk(100, b"0123456789")).unwrap();
    assert!(c.node(3).status().snapshot_index < index);
    c.node_mut(3).step(chunk(3, b"abc")).unwrap();
    assert_eq!(c.node(3).status().snapshot_index, index, "the whole 3-byte snapshot arrived");
}

#[test]
fn a_second_leader_of_the_same_term_is_refused_not_asserted_on() {
    let (mut c, term) = settled();
    let claim = msg(
        2,
        1,
        term,
        Body::AppendEntries {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![],
            leader_commit: 0,
            read_round: 0,
        },
    );
    let err = c.node_mut(1).step(claim).unwrap_err();
    assert!(err.reason.contains("leads term"), "{err}");
    assert_eq!(c.node(1).role(), Role::Leader);
    still_commits(&mut c, "after");
}

#[test]
fn messages_from_strangers_misaddressed_or_from_far_terms_are_refused() {
    let (mut c, term) = settled();
    let vote = |from, to, term| {
        msg(from, to, term, Body::RequestVoteResponse { pre_vote: false, vote_granted: true })
    };
    assert!(c.node_mut(1).step(vote(9, 1, term)).unwrap_err().reason.contains("not a voter"));
    assert!(c.node_mut(1).step(vote(2, 3, term)).unwrap_err().reason.contains("addressed"));
    assert!(c.node_mut(1).step(vote(1, 1, term)).is_err());
    let huge = vote(2, 1, u64::MAX);
    assert!(c.node_mut(1).step(huge).unwrap_err().reason.contains("out of range"));
    assert_eq!(c.node(1).current_term(), term, "no term was adopted");
    assert_eq!(c.node(1).status().rejected_messages, 4);
    still_commits(&mut c, "after");
}

#[test]
fn snapshot_chunks_outside_their_snapshot_and_bad_voter_lists_are_refused() {
    let (mut c, term) = settled();
    let chunk = |meta: SnapshotMeta, offset: u64, total_len: u64| {
        msg(
            1,
            2,
            term,
            Body::InstallSnapshot { meta, offset, total_len, data: Bytes::from_static(b"abcd") },
        )
    };
    let meta = |voters: Vec<u64>| SnapshotMeta {
        last_included_index: 50,
        last_included_term: term,
        voters,
    };
    for bad in [
        chunk(meta(vec![1, 2, 3]), 0, 2), // 4 bytes of a 2-byte snapshot
        chunk(meta(vec![1, 2, 3]), u64::MAX - 1, 10), // an offset that overflows
        chunk(meta(vec![1, 1, 2, 3]), 0, 4), // a repeated voter
        chunk(meta(vec![1, 3]), 0, 4),    // the receiver is not a voter
        chunk(SnapshotMeta { last_included_term: term + 1, ..meta(vec![]) }, 0, 4),
    ] {
        assert!(c.node_mut(2).step(bad).is_err());
    }
    assert_eq!(c.node(2).status().snapshot_index, 0);
    still_commits(&mut c, "after");
}

#[test]
fn a_snapshot_acknowledgement_beyond_what_was_sent_is_refused() {
    let (mut c, term) = settled();
    let ack = msg(
        2,
        1,
        term,
        Body::InstallSnapshotResponse { last_included_index: 500, received_bytes: 0, done: true },
    );
    assert!(c.node_mut(1).step(ack).is_err());
    still_commits(&mut c, "after");
}

#[test]
fn a_refused_request_is_still_answered_once() {
    let (mut c, term) = settled();
    c.stabilize();
    let last = c.node(2).status().last_index;
    let lie = msg(
        1,
        2,
        term,
        Body::AppendEntries {
            prev_log_index: last,
            prev_log_term: term,
            entries: vec![entry(last + 7, term, "x")],
            leader_commit: 0,
            read_round: 4,
        },
    );
    assert!(c.node_mut(2).step(lie).is_err());
    let ready = c.node_mut(2).ready();
    let answers: Vec<&Message> = ready.messages.iter().filter(|m| m.to == 1).collect();
    assert_eq!(answers.len(), 1);
    assert!(matches!(
        answers[0].body,
        Body::AppendEntriesResponse { outcome: AppendOutcome::StaleTerm, read_round: 4 }
    ));
    c.node_mut(2).advance();
}

/// The service's check refuses a command that could not be applied: proposed on the leader,
/// forwarded from a follower, or arriving forwarded in a (forged) message.
#[test]
fn commands_the_proposal_check_refuses_never_reach_the_log() {
    let check = ProposalCheck::new(|command: &[u8]| {
        if command.starts_with(b"ok") { Ok(()) } else { Err("not an ok command".into()) }
    });
    let mut c = Cluster::with_config(3, |config| config.proposal_check = Some(check.clone()));
    c.elect(1);
    c.stabilize();
    let term = c.node(1).current_term();
    let last = c.node(1).status().last_index;
    assert!(matches!(c.propose(1, "bad"), Err(Error::InvalidProposal(_))));
    assert!(matches!(
        c.node_mut(2).forward(Bytes::from_static(b"bad")),
        Err(Error::InvalidProposal(_))
    ));
    let forged = msg(
        2,
        1,
        term,
        Body::Propose { data: vec![Bytes::from_static(b"ok 1"), Bytes::from_static(b"bad")] },
    );
    let err = c.node_mut(1).step(forged).unwrap_err();
    assert!(err.reason.contains("not an ok command"), "{err}");
    assert_eq!(c.node(1).status().last_index, last, "nothing of the refused message was appended");
    c.node_mut(2).forward(Bytes::from_static(b"ok forwarded")).unwrap();
    c.stabilize();
    assert_eq!(c.applied_commands(3).last().map(String::as_str), Some("ok forwarded"));
}

/// A stamping check rewrites what the leader appends, whether proposed there or forwarded,
/// and every node applies the leader's stamp; a follower forwards the command as proposed.
#[test]
fn a_stamping_check_rewrites_what_the_leader_appends() {
    let leader_clock = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(41));
    let clock = std::sync::Arc::clone(&leader_clock);
    let check = ProposalCheck::new(|_: &[u8]| Ok(())).stamping(move |command: &[u8]| {
        let now = clock.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let text = String::from_utf8_lossy(command);
        if text == "too big" {
            return Ok(Bytes::from("x".repeat(200)));
        }
        Ok(Bytes::from(format!("{text} @{now}")))
    });
    let mut c = Cluster::with_config(3, |config| {
        config.proposal_check = Some(check.clone());
        config.max_entry_bytes = 100;
    });
    c.elect(1);
    c.stabilize();
    c.propose(1, "local").unwrap();
    c.node_mut(2).forward(Bytes::from_static(b"forwarded")).unwrap();
    c.stabilize();
    assert!(matches!(c.propose(1, "too big"), Err(Error::EntryTooLarge { len: 200, max: 100 })));
    for id in 1..=3 {
        let applied = c.applied_commands(id);
        assert_eq!(applied[applied.len() - 2..], ["local @42", "forwarded @43"], "node {id}");
    }
}

#[test]
fn commands_over_max_entry_bytes_are_refused() {
    let mut c = Cluster::with_config(3, |config| config.max_entry_bytes = 100);
    c.elect(1);
    c.stabilize();
    let big = "x".repeat(101);
    match c.propose(1, &big) {
        Err(Error::EntryTooLarge { len: 101, max: 100 }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.node_mut(2).forward(Bytes::from(big.clone())),
        Err(Error::EntryTooLarge { .. })
    ));
    c.propose(1, &big[..100]).unwrap();
    c.stabilize();
    assert_eq!(c.applied_commands(3).last().map(String::len), Some(100));
}

/// Commands forwarded in a row share a message only up to `max_append_bytes`, so that a
/// forwarded batch fits wherever an append does.
#[test]
fn forwarded_batches_stay_within_max_append_bytes() {
    let mut c = Cluster::with_config(3, |config| config.max_append_bytes = 200);
    c.elect(1);
    c.stabilize();
    for i in 0..10 {
        c.node_mut(2).forward(Bytes::from(format!("{i:0>60}"))).unwrap();
    }
    let ready = c.node_mut(2).ready();
    let batches: Vec<usize> = ready
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            Body::Propose { data } => Some(data.len()),
            _ => None,
        })
        .collect();
    // 60-byte commands count 90 bytes each: two to a message.
    assert_eq!(batches, [2, 2, 2, 2, 2]);
    c.node_mut(2).advance();
}

#[test]
fn the_largest_message_follows_from_the_config() {
    let mut config = Config::new(1, vec![1, 2, 3]);
    config.max_append_bytes = 1 << 20;
    config.max_entry_bytes = 8 << 20;
    config.snapshot_chunk_bytes = 1 << 20;
    let needed = config.max_message_bytes();
    assert!(needed > 8 << 20 && needed < (8 << 20) + 4096, "{needed}");
    config.max_entry_bytes = 1 << 40;
    assert!(config.validate().is_ok());
    config.max_entry_bytes = (1 << 40) + 1;
    assert!(config.validate().is_err());
    let node =
        RawNode::new(Config { seed: 1, ..Config::new(1, vec![1]) }, PersistedState::default());
    assert_eq!(node.unwrap().status().rejected_messages, 0);
}

/// Responses and forwarded proposals are judged only by a leader: a follower has no record of
/// what it sent (it may have led earlier in the term and stepped down by CheckQuorum), so such
/// a message is ignored there, not counted as hostile.
#[test]
fn a_follower_ignores_leader_traffic_without_judging_it() {
    let mut c = Cluster::with_config(3, |config| config.max_entry_bytes = 100);
    c.elect(1);
    c.propose(1, "before").unwrap();
    c.stabilize();
    let term = c.node(1).current_term();
    let before = c.node(2).status();
    let late_response = msg(
        3,
        2,
        term,
        Body::AppendEntriesResponse {
            outcome: AppendOutcome::Success { match_index: 1_000 },
            read_round: 0,
        },
    );
    assert_eq!(c.node_mut(2).step(late_response), Ok(()));
    let refused_command = Bytes::from("x".repeat(200)); // Over max_entry_bytes.
    let propose = msg(3, 2, term, Body::Propose { data: vec![refused_command] });
    assert_eq!(c.node_mut(2).step(propose), Ok(()));
    let after = c.node(2).status();
    assert_eq!(after.rejected_messages, before.rejected_messages, "nothing counted as hostile");
    assert_eq!(after.last_index, before.last_index, "and nothing appended");
    assert_eq!(after.role, Role::Follower);
    still_commits(&mut c, "after");
}

/// A stamped command exactly `max_entry_bytes` long is appended; one byte more is refused.
#[test]
fn a_stamped_command_may_reach_max_entry_bytes_exactly() {
    let check = ProposalCheck::new(|_: &[u8]| Ok(()))
        .stamping(|command: &[u8]| Ok(Bytes::from([command, b"@stamp"].concat())));
    let mut c = Cluster::with_config(3, |config| {
        config.proposal_check = Some(check.clone());
        config.max_entry_bytes = 20;
    });
    c.elect(1);
    c.stabilize();
    c.propose(1, "fourteen bytes").unwrap(); // 14 + 6 = 20 bytes once stamped.
    assert!(matches!(
        c.propose(1, "fifteen bytes!!"),
        Err(Error::EntryTooLarge { len: 21, max: 20 })
    ));
    c.stabilize();
    assert_eq!(c.applied_commands(2).last().map(String::as_str), Some("fourteen bytes@stamp"));
}

/// A repeated first chunk of the snapshot being received (a retransmission) does not throw
/// away what arrived after it: the follower still reports everything it holds.
#[test]
fn a_repeated_first_chunk_keeps_the_chunks_after_it() {
    let (mut c, term) = settled();
    let index = c.node(3).status().commit_index + 5;
    let meta =
        SnapshotMeta { last_included_index: index, last_included_term: term, voters: vec![] };
    let chunk = |offset: u64, data: &'static [u8]| {
        let data = Bytes::from_static(data);
        msg(1, 3, term, Body::InstallSnapshot { meta: meta.clone(), offset, total_len: 10, data })
    };
    let received = |c: &mut Cluster| {
        c.process_readies();
        let got = c.in_transit.iter().rev().find_map(|m| match m.body {
            Body::InstallSnapshotResponse { received_bytes, .. } if m.from == 3 => {
                Some(received_bytes)
            }
            _ => None,
        });
        c.in_transit.clear();
        got.expect("an answer")
    };
    c.in_transit.clear();
    c.node_mut(3).step(chunk(0, b"0123")).unwrap();
    assert_eq!(received(&mut c), 4);
    c.node_mut(3).step(chunk(4, b"456")).unwrap();
    assert_eq!(received(&mut c), 7);
    c.node_mut(3).step(chunk(0, b"0123")).unwrap();
    assert_eq!(received(&mut c), 7, "the repeated chunk changes nothing");
    c.node_mut(3).step(chunk(7, b"789")).unwrap();
    assert_eq!(c.node(3).status().snapshot_index, index, "the whole snapshot arrived");
}
