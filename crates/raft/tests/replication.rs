//! Log replication, §5.3 of the Raft paper, at the message level.

mod harness;

use harness::Cluster;
use raft::{AppendOutcome, Body, Config, Error, Role};

/// §5.3: the leader appends a command, replicates it, commits it once a majority has it, and
/// every server applies it.
#[test]
fn leader_replicates_commits_and_everyone_applies() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let (index, term) = c.propose(1, "set x=1").unwrap();
    assert_eq!((index, term), (2, 1), "index 1 is the election no-op");
    c.stabilize();
    assert_eq!(c.node(1).status().commit_index, 2);
    c.run_ticks(1); // The next heartbeat carries the commit index to followers.
    for id in 1..=3 {
        assert_eq!(c.applied_commands(id), ["set x=1"], "node {id}");
    }
}

/// Followers refuse proposals and name the leader.
#[test]
fn followers_refuse_proposals() {
    let mut c = Cluster::new(3);
    c.elect(2);
    assert_eq!(c.propose(1, "x"), Err(Error::NotLeader { leader_hint: Some(2) }));
}

/// Proposals made before the `Ready` is taken travel in one AppendEntries per follower.
/// Proposal forwarding: a follower hands commands to the leader in one message; they commit
/// and apply everywhere in the order forwarded. Without a known leader, or on the leader,
/// forwarding is refused; a node that no longer leads drops forwarded commands.
#[test]
fn followers_forward_proposals_to_the_leader() {
    // Without CheckQuorum, so that node 2 can depose node 1 below.
    let mut c = Cluster::with_config(3, |cfg: &mut Config| {
        cfg.check_quorum = false;
        cfg.pre_vote = false;
    });
    assert_eq!(
        c.node_mut(2).forward("early".into()),
        Err(Error::NotLeader { leader_hint: None }),
        "no leader known yet"
    );
    c.elect(1);
    assert_eq!(c.node_mut(1).forward("x".into()), Err(Error::NotLeader { leader_hint: None }));
    assert_eq!(c.node_mut(2).forward("a".into()), Ok(1));
    assert_eq!(c.node_mut(2).forward("b".into()), Ok(1));
    c.process_readies();
    let forwarded = c.count_sent(|m| matches!(&m.body, Body::Propose { data } if data.len() == 2));
    assert_eq!(forwarded, 1, "two forwards in a row travel in one message");
    c.stabilize();
    c.run_ticks(1); // The next heartbeat carries the commit index to followers.
    for id in 1..=3 {
        assert_eq!(c.applied_commands(id), ["a", "b"], "node {id}");
    }
    // Node 3 still believes 1 leads, but 1 was deposed (by 2, which 3 has not heard from):
    // the commands 3 forwards to 1 are dropped.
    c.isolate(3);
    c.elect(2);
    c.heal();
    c.cut(3, 2);
    c.run_ticks(1);
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(c.node(3).status().leader_id, Some(1));
    assert_eq!(c.node_mut(3).forward("lost".into()), Ok(1));
    c.stabilize();
    assert!(!c.applied_commands(1).contains(&"lost".to_string()));
}

#[test]
fn proposals_arriving_together_are_batched() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let entries_of = |m: &raft::Message| match &m.body {
        Body::AppendEntries { entries, .. } => Some(entries.len()),
        _ => None,
    };
    let carrying = |m: &raft::Message| entries_of(m).is_some_and(|n| n > 0);
    let empty = |m: &raft::Message| entries_of(m) == Some(0);
    let (before, empty_before) = (c.count_sent(carrying), c.count_sent(empty));
    for i in 0..10 {
        c.propose(1, &format!("cmd{i}")).unwrap();
    }
    c.process_readies();
    let appends: Vec<_> =
        c.in_transit.iter().filter(|m| matches!(m.body, Body::AppendEntries { .. })).collect();
    assert_eq!(appends.len(), 2);
    assert!(
        appends
            .iter()
            .all(|m| matches!(&m.body, Body::AppendEntries { entries, .. } if entries.len() == 10))
    );
    c.stabilize();
    assert_eq!(c.count_sent(carrying) - before, 2, "one append per follower");
    assert_eq!(c.count_sent(empty) - empty_before, 2, "and one commit announcement each");
}

/// A follower that keeps up receives appends without waiting for answers (pipelining), up to the
/// in-flight limit.
#[test]
fn appends_are_pipelined_up_to_the_inflight_limit() {
    let mut c = Cluster::with_config(3, |cfg: &mut Config| cfg.max_inflight_appends = 3);
    c.elect(1);
    c.stabilize();
    for i in 0..5 {
        c.propose(1, &format!("cmd{i}")).unwrap();
        c.process_readies(); // Send without delivering anything.
    }
    let to_2 = c
        .in_transit
        .iter()
        .filter(|m| m.to == 2 && matches!(m.body, Body::AppendEntries { .. }))
        .count();
    assert_eq!(to_2, 3, "three appends in flight, the rest wait");
    c.stabilize();
    c.run_ticks(1);
    assert_eq!(c.applied_commands(2).len(), 5);
}

/// §5.3 and Figure 7: a follower whose log diverges from the leader's has its conflicting
/// suffix replaced, and the fast backup takes one round trip per term, not per entry.
#[test]
fn conflicting_suffix_is_replaced_with_few_round_trips() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.stabilize();
    // Node 1 leads term 1 alone and piles up 50 uncommitted entries.
    c.isolate(1);
    for i in 0..50 {
        c.propose(1, &format!("lost{i}")).unwrap();
    }
    c.stabilize();
    // Nodes 2 and 3 elect one of themselves, which commits 50 other entries.
    let mut leader = None;
    for _ in 0..60 {
        for id in [2, 3] {
            c.tick(id);
        }
        c.stabilize();
        leader = [2, 3].into_iter().find(|&id| c.node(id).role() == Role::Leader);
        if leader.is_some() {
            break;
        }
    }
    let leader = leader.expect("nodes 2 and 3 elect a leader");
    for i in 0..50 {
        c.propose(leader, &format!("kept{i}")).unwrap();
    }
    c.stabilize();
    c.heal();
    let conflicts_before = c.count_sent(|m| {
        matches!(
            m.body,
            Body::AppendEntriesResponse { outcome: AppendOutcome::Conflict { .. }, .. }
        )
    });
    c.run_ticks(3);
    let conflicts = c.count_sent(|m| {
        matches!(
            m.body,
            Body::AppendEntriesResponse { outcome: AppendOutcome::Conflict { .. }, .. }
        )
    }) - conflicts_before;
    assert!(conflicts <= 3, "{conflicts} conflict round trips for one divergent term");
    assert_eq!(c.node(1).role(), Role::Follower);
    let expected: Vec<String> = (0..50).map(|i| format!("kept{i}")).collect();
    for id in 1..=3 {
        assert_eq!(c.applied_commands(id), expected, "node {id}");
    }
}

/// §5.3: a follower that is far behind is caught up, and probing backs off a term at a time.
#[test]
fn lagging_follower_catches_up() {
    let mut c = Cluster::new(5);
    c.elect(1);
    c.isolate(5);
    for i in 0..100 {
        c.propose(1, &format!("c{i}")).unwrap();
        c.stabilize();
    }
    c.heal();
    c.run_ticks(5);
    assert_eq!(c.applied_commands(5).len(), 100);
    assert_eq!(c.node(5).status().commit_index, c.node(1).status().commit_index);
}

/// Lost messages are repaired by heartbeats: a follower whose appends were all dropped still
/// converges once the link works again.
#[test]
fn lost_appends_are_recovered_by_heartbeats() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.stabilize();
    c.cut_oneway(1, 3);
    for i in 0..5 {
        c.propose(1, &format!("c{i}")).unwrap();
        c.stabilize();
    }
    assert!(c.applied_commands(3).is_empty());
    c.heal();
    c.run_ticks(3);
    assert_eq!(c.applied_commands(3).len(), 5);
}

/// Entries are applied in index order, each once, on every node.
#[test]
fn apply_order_is_the_log_order() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for i in 0..30 {
        c.propose(1, &format!("c{i}")).unwrap();
        if i % 7 == 0 {
            c.stabilize();
        }
    }
    c.stabilize();
    c.run_ticks(1);
    for id in 1..=3 {
        let indexes: Vec<u64> = c.applied_entries(id).iter().map(|e| e.index).collect();
        assert_eq!(indexes, (1..=31).collect::<Vec<_>>(), "node {id}");
    }
}

/// Three nodes, node 1 elected and everything delivered; and node 1's term.
fn led_by_node_1() -> (Cluster, u64) {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.stabilize();
    let term = c.node(1).current_term();
    (c, term)
}

fn ack(from: u64, term: u64, match_index: u64) -> raft::Message {
    raft::Message {
        from,
        to: 1,
        term,
        body: Body::AppendEntriesResponse {
            outcome: AppendOutcome::Success { match_index },
            read_round: 0,
        },
    }
}

/// Pipelined `Ready`s on a leader: a second `Ready` taken while the first is still being
/// written carries only the new entries. The leader does not count its own unwritten copy,
/// but two followers are a majority without it: their acknowledgements commit both entries,
/// and the next `Ready` delivers them while the leader's writes are still out.
#[test]
fn a_leader_with_writes_out_commits_on_its_followers_acknowledgements() {
    let (mut c, term) = led_by_node_1();
    let leader = c.node_mut(1);
    let (x, _) = leader.propose("x".into()).unwrap();
    let first = leader.ready();
    assert_eq!(first.entries.iter().map(|e| e.index).collect::<Vec<_>>(), [x]);
    let (y, _) = leader.propose("y".into()).unwrap();
    let second = leader.ready();
    assert_eq!(
        second.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        [y],
        "the second Ready carries only what the first did not"
    );
    assert_eq!(leader.readies_in_flight(), 2);

    leader.step(ack(2, term, y)).unwrap();
    assert!(leader.status().commit_index < x, "one follower and an unwritten leader: no majority");
    leader.step(ack(3, term, y)).unwrap();
    assert_eq!(leader.status().commit_index, y, "two followers are a majority");
    let third = leader.ready();
    let delivered: Vec<u64> = third
        .to_apply
        .iter()
        .filter_map(|a| match a {
            raft::Apply::Entry(e) => Some(e.index),
            raft::Apply::Snapshot(_) => None,
        })
        .collect();
    assert_eq!(delivered, [x, y]);
    for _ in 0..3 {
        leader.advance();
    }
    assert_eq!(leader.readies_in_flight(), 0);
    assert!(!leader.has_ready() || leader.ready().entries.is_empty(), "nothing is written twice");
}

/// A leader's own write counts once advanced: with one follower's acknowledgement and its own
/// write done, the entry commits; before the advance it does not.
#[test]
fn a_leader_counts_its_own_write_only_once_advanced() {
    let (mut c, term) = led_by_node_1();
    let leader = c.node_mut(1);
    let (x, _) = leader.propose("x".into()).unwrap();
    let _first = leader.ready();
    leader.step(ack(2, term, x)).unwrap();
    assert!(leader.status().commit_index < x);
    leader.advance();
    assert_eq!(leader.status().commit_index, x);
}

/// A follower with a write out receives a new leader's conflicting entries: the next `Ready`
/// carries the replacement from the conflicting index on, and after both writes (in order)
/// storage holds the new leader's entries.
#[test]
fn a_later_ready_replaces_entries_of_one_still_being_written() {
    use raft::{MemStorage, PersistedState, RawNode, Storage};
    let mut follower = RawNode::new(
        Config { seed: 1, ..Config::new(2, vec![1, 2, 3]) },
        PersistedState::default(),
    )
    .unwrap();
    let mut storage = MemStorage::new();
    let entry = |index, term, data: &str| raft::Entry {
        index,
        term,
        data: bytes::Bytes::copy_from_slice(data.as_bytes()),
    };
    let append = |from, term, prev: (u64, u64), entries: Vec<raft::Entry>| raft::Message {
        from,
        to: 2,
        term,
        body: Body::AppendEntries {
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries,
            leader_commit: 0,
            read_round: 0,
        },
    };
    follower.step(append(1, 1, (0, 0), vec![entry(1, 1, "a"), entry(2, 1, "b")])).unwrap();
    let first = follower.ready();
    assert_eq!(first.entries.len(), 2);
    // A new leader (node 3, term 2) has another entry at index 2.
    follower.step(append(3, 2, (1, 1), vec![entry(2, 2, "c")])).unwrap();
    let second = follower.ready();
    assert_eq!(second.entries, [entry(2, 2, "c")], "only the replacement, from index 2 on");
    assert_eq!(follower.readies_in_flight(), 2);
    for r in [first, second] {
        storage.persist(r.hard_state, r.snapshot.as_ref(), &r.entries).unwrap();
        follower.advance();
    }
    let stored = storage.initial_state().unwrap();
    assert_eq!(stored.entries, [entry(1, 1, "a"), entry(2, 2, "c")]);
    assert_eq!(stored.hard_state.current_term, 2);
    assert!(!follower.has_ready(), "nothing left to write");
}

/// A leader announces a new commit index at once (`announce_commit`), but when the same
/// `Ready` also sends new entries, the announcement rides on those appends: one
/// AppendEntries per follower, carrying both, and no extra heartbeat.
#[test]
fn a_commit_announcement_rides_on_the_appends_sent_with_it() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.stabilize();
    let (x, _) = c.propose(1, "x").unwrap();
    // Replicate x and bring the acknowledgements back, without letting the leader take the
    // Ready that would announce the commit.
    c.process_readies();
    while c.deliver_one() {}
    for id in [2, 3] {
        let follower = c.node_mut(id);
        let r = follower.ready();
        follower.advance();
        for m in r.messages {
            c.node_mut(1).step(m).unwrap();
        }
    }
    assert_eq!(c.node(1).status().commit_index, x);
    let (y, _) = c.propose(1, "y").unwrap();
    let ready = c.node_mut(1).ready();
    for id in [2, 3] {
        let to: Vec<_> = ready.messages.iter().filter(|m| m.to == id).collect();
        assert_eq!(to.len(), 1, "one message to node {id}: {to:?}");
        match &to[0].body {
            Body::AppendEntries { entries, leader_commit, .. } => {
                assert_eq!(entries.iter().map(|e| e.index).collect::<Vec<_>>(), [y]);
                assert_eq!(*leader_commit, x, "the new commit index rides along");
            }
            other => panic!("expected an AppendEntries, got {other:?}"),
        }
    }
}

/// A leader whose commit index moves on an acknowledgement has a `Ready` at once, holding the
/// newly committed entry to apply, even when commits are not announced to the followers
/// (`announce_commit` off, as the classic labs count messages) and nothing else is pending.
#[test]
fn a_commit_alone_makes_a_ready_with_the_entry_to_apply() {
    let mut c = Cluster::with_config(3, |config| config.announce_commit = false);
    c.elect(1);
    c.stabilize();
    c.propose(1, "x").unwrap();
    c.process_readies(); // The leader writes and sends its append; the followers get it.
    while c.in_transit.iter().any(|m| m.to != 1) {
        c.deliver_one();
        c.process_readies();
    }
    // Only the acknowledgements remain, all to the leader; it has nothing else to do.
    assert!(!c.node(1).has_ready());
    let before = c.node(1).status().commit_index;
    let ack = c.in_transit.pop_front().expect("an acknowledgement");
    assert!(matches!(ack.body, Body::AppendEntriesResponse { .. }), "{ack:?}");
    c.node_mut(1).step(ack).unwrap();
    assert!(c.node(1).status().commit_index > before, "one acknowledgement makes a majority");
    assert!(c.node(1).has_ready(), "the commit alone is something to hand out");
    assert_eq!(commands_to_apply(&c.node_mut(1).ready()), ["x"]);
}

/// A node restarted with committed entries in its log hands them to the service at once:
/// nothing else is pending (its hard state is as persisted), yet it has a `Ready`.
#[test]
fn a_restarted_node_reapplies_its_committed_entries_at_once() {
    let entry = |index: u64, data: &'static str| raft::Entry {
        index,
        term: 1,
        data: bytes::Bytes::from_static(data.as_bytes()),
    };
    let state = raft::PersistedState {
        hard_state: raft::HardState { current_term: 1, voted_for: Some(1), commit_index: 2 },
        snapshot: None,
        entries: vec![entry(1, "a"), entry(2, "b"), entry(3, "not committed")],
    };
    let mut node = raft::RawNode::new(harness::config(2, 3), state).unwrap();
    assert!(node.has_ready(), "committed entries wait to be applied");
    let ready = node.ready();
    assert_eq!(ready.hard_state, None, "nothing new to persist");
    assert_eq!(commands_to_apply(&ready), ["a", "b"]);
}

/// §5.3's backing up never goes below what the follower acknowledged: a conflict hint below
/// its match index (no correct follower gives one, but hints are only hints) backs `next_index`
/// up to just after the match, and the leader re-sends from there.
#[test]
fn a_conflict_hint_below_the_match_index_backs_up_only_to_the_match() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, "a").unwrap();
    c.stabilize();
    let matched = c.node(1).status().last_index; // Node 2 acknowledged everything so far.
    c.in_transit.clear();
    // Two appends in flight to node 2: entries matched + 1 and matched + 2.
    c.propose(1, "b").unwrap();
    c.process_readies();
    c.propose(1, "c").unwrap();
    c.process_readies();
    c.in_transit.clear();
    let prev = answer_conflict(&mut c, 2, matched + 1, None);
    assert_eq!(prev, matched, "re-sent from just after the match");
}

/// The fast backup at the end of §5.3: a follower's conflicting term that the leader also has
/// sends the leader back to just after its own last entry of that term, in one step.
#[test]
fn a_conflict_term_the_leader_has_backs_up_to_just_after_its_last_entry_of_that_term() {
    // Without PreVote and CheckQuorum, so that node 2 can take over from a live leader.
    let mut c = Cluster::with_config(3, |config| {
        config.pre_vote = false;
        config.check_quorum = false;
    });
    c.elect(1);
    c.propose(1, "a").unwrap();
    c.stabilize(); // Indexes 1 and 2 in term 1 everywhere.
    c.isolate(3);
    c.elect(2);
    c.propose(2, "b").unwrap();
    c.stabilize(); // Indexes 3 and 4 in term 2 on nodes 1 and 2 only.
    c.elect(1); // Term 3; its first probe to node 3 is at index 4.
    c.heal();
    c.in_transit.clear();
    let probe = loop {
        c.tick(1);
        c.process_readies();
        let probe = c.in_transit.iter().find_map(|m| match m.body {
            Body::AppendEntries { prev_log_index, .. } if m.to == 3 => Some(prev_log_index),
            _ => None,
        });
        if let Some(prev_log_index) = probe {
            break prev_log_index;
        }
    };
    c.in_transit.clear();
    let prev = answer_conflict(&mut c, 3, probe, Some(1));
    // The follower's entry at the probe's index is of term 1; the leader's term 1 ends at 2.
    assert_eq!(probe, 4, "the first probe is at the new leader's last entry");
    assert_eq!(prev, 2, "straight to the leader's last entry of term 1");
}

/// The commands of the entries a `Ready` hands to the service.
fn commands_to_apply(ready: &raft::Ready) -> Vec<bytes::Bytes> {
    let entries = ready.to_apply.iter().filter_map(|a| match a {
        raft::Apply::Entry(e) => Some(e.data.clone()),
        raft::Apply::Snapshot(_) => None,
    });
    entries.collect()
}

/// Node `from` answers leader 1's append at `prev_log_index` with a conflict (its term there
/// `conflict_term`, its first index of it 1); returns where the leader's next append to it
/// starts (its `prev_log_index`).
fn answer_conflict(
    c: &mut Cluster,
    from: u64,
    prev_log_index: u64,
    conflict_term: Option<u64>,
) -> u64 {
    let outcome = AppendOutcome::Conflict { prev_log_index, conflict_term, conflict_index: 1 };
    let body = Body::AppendEntriesResponse { outcome, read_round: 0 };
    let term = c.node(1).current_term();
    c.node_mut(1).step(raft::Message { from, to: 1, term, body }).unwrap();
    c.process_readies();
    let next = c.in_transit.iter().find(|m| m.to == from).expect("an append to that node");
    match next.body {
        Body::AppendEntries { prev_log_index, .. } => prev_log_index,
        _ => panic!("not an append: {next:?}"),
    }
}
