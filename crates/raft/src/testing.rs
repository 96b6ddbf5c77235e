//! Conformance suites: contract tests that every implementation of a trait must pass.
//!
//! Compiled for this crate's tests and, for other crates, with the `testing` feature.

use bytes::Bytes;

use crate::storage::Storage;
use crate::types::{Entry, HardState, Snapshot, SnapshotMeta};

fn entry(index: u64, term: u64) -> Entry {
    Entry { term, index, data: Bytes::from(format!("cmd-{index}-{term}")) }
}

fn entries(from: u64, terms: &[u64]) -> Vec<Entry> {
    terms.iter().enumerate().map(|(i, &t)| entry(from + i as u64, t)).collect()
}

fn snapshot(index: u64, term: u64) -> Snapshot {
    let meta = SnapshotMeta {
        last_included_index: index,
        last_included_term: term,
        voters: vec![1, 2, 3],
    };
    Snapshot { meta, data: Bytes::from(vec![7u8; 100]).into() }
}

/// Runs the [`Storage`] contract tests. `make` creates empty storage; `restart` models a crash
/// and restart (it must return storage holding exactly what was durable).
///
/// # Panics
/// On the first contract violation, naming it.
pub fn storage_suite<S: Storage>(make: impl Fn() -> S, restart: impl Fn(S) -> S) {
    // A new storage is empty.
    let s = make();
    let state = s.initial_state().unwrap();
    assert_eq!(state.hard_state, HardState::default(), "new storage has a hard state");
    assert!(state.entries.is_empty() && state.snapshot.is_none(), "new storage is not empty");

    // Entries and hard state survive a restart.
    let mut s = make();
    let hs = HardState { current_term: 2, voted_for: Some(3), commit_index: 1 };
    s.persist(Some(hs), None, &entries(1, &[1, 1, 2])).unwrap();
    let s = restart(s);
    let state = s.initial_state().unwrap();
    assert_eq!(state.hard_state, hs, "hard state not durable");
    assert_eq!(state.entries, entries(1, &[1, 1, 2]), "entries not durable");

    // A later batch replaces the suffix from its first index; None keeps the hard state.
    let mut s = s;
    s.persist(None, None, &entries(2, &[3, 3, 3])).unwrap();
    let state = restart(s).initial_state().unwrap();
    assert_eq!(state.entries, entries(1, &[1, 3, 3, 3]), "suffix not replaced");
    assert_eq!(state.hard_state, hs, "hard state changed without being given");

    // A snapshot whose last entry matches keeps the entries after it.
    let mut s = make();
    s.persist(None, None, &entries(1, &[1, 1, 2, 2, 2])).unwrap();
    let size_before = s.raft_state_size();
    s.persist(None, Some(&snapshot(3, 2)), &[]).unwrap();
    assert!(s.raft_state_size() < size_before, "snapshot did not shrink the raft state");
    let s = restart(s);
    let state = s.initial_state().unwrap();
    assert_eq!(state.snapshot, Some(snapshot(3, 2)), "snapshot not durable");
    assert_eq!(state.entries, entries(4, &[2, 2]), "matching suffix not kept");

    // Entries may continue right after the snapshot.
    let mut s = s;
    s.persist(None, None, &entries(6, &[3])).unwrap();
    assert_eq!(restart(s).initial_state().unwrap().entries, entries(4, &[2, 2, 3]));

    // A snapshot that does not match the log drops it all; entries after it may come along.
    let mut s = make();
    s.persist(None, None, &entries(1, &[1, 1])).unwrap();
    s.persist(None, Some(&snapshot(5, 4)), &entries(6, &[4])).unwrap();
    let state = restart(s).initial_state().unwrap();
    assert_eq!(state.entries, entries(6, &[4]), "conflicting log not dropped");

    // Requests that would leave a hole are refused and change nothing.
    let mut s = make();
    s.persist(None, None, &entries(1, &[1, 1])).unwrap();
    let gap = s.persist(None, None, &entries(4, &[1]));
    assert!(gap.is_err(), "a hole in the log was accepted");
    let mut broken = entries(3, &[1, 1]);
    broken[1].index = 9;
    assert!(s.persist(None, None, &broken).is_err(), "non-contiguous entries accepted");
    assert!(s.persist(None, Some(&snapshot(1, 1)), &entries(1, &[1])).is_err());
    let state = restart(s).initial_state().unwrap();
    assert_eq!(state.entries, entries(1, &[1, 1]), "a refused request changed the log");
    assert!(state.snapshot.is_none(), "a refused request stored its snapshot");

    // raft_state_size is the log's size (plus the hard state's) through every kind of change,
    // and after a restart.
    let size_of = |s: &S| {
        let state = s.initial_state().unwrap();
        24 + state.entries.iter().map(Entry::size_bytes).sum::<u64>()
    };
    let mut s = make();
    let steps: [(Option<Snapshot>, Vec<Entry>); 5] = [
        (None, entries(1, &[1, 1, 1, 1, 1, 1])),
        (None, entries(4, &[2, 2])),
        (Some(snapshot(2, 1)), vec![]),
        (Some(snapshot(9, 3)), entries(10, &[3, 3])),
        (None, entries(12, &[3])),
    ];
    for (snap, new) in steps {
        s.persist(None, snap.as_ref(), &new).unwrap();
        assert_eq!(s.raft_state_size(), size_of(&s), "raft_state_size is off");
    }
    let s = restart(s);
    assert_eq!(s.raft_state_size(), size_of(&s), "raft_state_size is off after a restart");
}

/// Runs the [`Transport`](crate::Transport) contract tests. `make(n)` builds transports for
/// nodes `0..n` that reach each other over a network without injected faults (the suite checks
/// delivery, so it cannot tolerate loss).
///
/// # Panics
/// On the first contract violation, naming it.
pub fn transport_suite<T: crate::Transport>(make: impl Fn(usize) -> Vec<T>) {
    use std::time::Duration;

    use crate::message::{AppendOutcome, Body, Message};
    use crate::transport::Inbox;

    let wait = Duration::from_secs(5);
    let transports = make(3);
    let inboxes: Vec<_> = transports
        .iter()
        .map(|t| {
            let (inbox, rx) = Inbox::new();
            t.start(inbox);
            rx
        })
        .collect();

    // A request reaches its addressee, unaltered, and no one else.
    let vote = Message {
        from: 0,
        to: 1,
        term: 3,
        body: Body::RequestVote { pre_vote: false, last_log_index: 7, last_log_term: 2 },
    };
    transports[0].send(vote.clone());
    let got = inboxes[1].recv_timeout(wait).expect("request not delivered");
    assert_eq!(got, vote, "request altered in transit");
    assert!(inboxes[2].try_recv().is_err(), "request delivered to the wrong node");

    // The response goes back to the requester.
    let answer = Message {
        from: 1,
        to: 0,
        term: 3,
        body: Body::RequestVoteResponse { pre_vote: false, vote_granted: true },
    };
    transports[1].send(answer.clone());
    let got = inboxes[0].recv_timeout(wait).expect("response not delivered");
    assert_eq!(got, answer, "response altered in transit");

    // Many requests, with their data, all arrive (in any order), and are answered.
    let mut sent = Vec::new();
    for i in 0..50u64 {
        let entries = vec![Entry { term: 3, index: i + 1, data: Bytes::from(vec![i as u8; 100]) }];
        let m = Message {
            from: 2,
            to: 1,
            term: 3,
            body: Body::AppendEntries {
                prev_log_index: i,
                prev_log_term: 3,
                entries,
                leader_commit: 0,
                read_round: i,
            },
        };
        transports[2].send(m.clone());
        sent.push(m);
    }
    let mut received = Vec::new();
    for _ in 0..sent.len() {
        let m = inboxes[1].recv_timeout(wait).expect("an append was lost");
        let Body::AppendEntries { prev_log_index, read_round, .. } = m.body else {
            panic!("unexpected {m:?}")
        };
        let outcome = AppendOutcome::Success { match_index: prev_log_index + 1 };
        transports[1].send(Message {
            from: 1,
            to: 2,
            term: 3,
            body: Body::AppendEntriesResponse { outcome, read_round },
        });
        received.push(m);
    }
    for m in &sent {
        assert!(received.contains(m), "append {m:?} lost or altered");
    }
    for _ in 0..sent.len() {
        let m = inboxes[2].recv_timeout(wait).expect("an append response was lost");
        assert!(matches!(m.body, Body::AppendEntriesResponse { .. }) && m.from == 1);
    }

    // A message for a node that does not exist is dropped quietly.
    transports[0].send(Message { from: 0, to: 99, ..vote.clone() });

    // After stop, a transport neither sends nor delivers.
    transports[0].stop();
    transports[0].send(Message { from: 0, to: 1, ..vote.clone() });
    transports[2].send(Message { from: 2, to: 0, ..vote.clone() });
    std::thread::sleep(Duration::from_millis(200));
    assert!(inboxes[1].try_recv().is_err(), "a stopped transport sent");
    assert!(inboxes[0].try_recv().is_err(), "a stopped transport delivered");
}
