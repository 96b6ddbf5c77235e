//! Three [`RawNode`]s on one thread, wired together by channels: they elect a leader, the
//! leader replicates two commands, and every node applies them in the same order.
//!
//! This is the whole contract between the pure core and whatever drives it, in one loop:
//! `tick` on a timer, `step` every message that arrives, and for each `Ready`: persist, then
//! send, then apply, then `advance`. `Node` does the same with threads, a real clock, a
//! `Storage` on disk and a `Transport`; here the "disk" is a `MemStorage` and the "network" a
//! channel per node.
//!
//! `cargo run -p raftkv-raft --example three_nodes`

use std::collections::BTreeMap;

use bytes::Bytes;
use raft::crossbeam_channel::{Receiver, Sender, unbounded};
use raft::{Apply, Config, MemStorage, Message, NodeId, PersistedState, RawNode, Role, Storage};

/// One member: the core, its storage, its inbox, and what it has applied.
struct Member {
    core: RawNode,
    storage: MemStorage,
    inbox: Receiver<Message>,
    applied: Vec<String>,
}

fn main() {
    let ids: Vec<NodeId> = vec![1, 2, 3];
    let mut outboxes: BTreeMap<NodeId, Sender<Message>> = BTreeMap::new();
    let mut members: BTreeMap<NodeId, Member> = BTreeMap::new();
    for &id in &ids {
        let (tx, rx) = unbounded();
        outboxes.insert(id, tx);
        // A fixed seed per node: the run is the same every time.
        let config = Config { seed: id, ..Config::new(id, ids.clone()) };
        let core = RawNode::new(config, PersistedState::default()).expect("a valid configuration");
        let member = Member { core, storage: MemStorage::new(), inbox: rx, applied: Vec::new() };
        members.insert(id, member);
    }

    let commands = ["x = 1", "y = 2"];
    let mut proposed = false;
    for round in 1..=1_000 {
        for member in members.values_mut() {
            member.core.tick();
            while let Ok(message) = member.inbox.try_recv() {
                // A message the core rejects (malformed, or from a stranger) is dropped.
                let _ = member.core.step(message);
            }
            drive(member, &outboxes);
        }
        if !proposed
            && let Some(leader) = members.values_mut().find(|m| m.core.role() == Role::Leader)
        {
            println!(
                "round {round}: node {} leads term {}",
                leader.core.id(),
                leader.core.current_term()
            );
            for command in commands {
                let (index, term) =
                    leader.core.propose(Bytes::from(command)).expect("the leader accepts");
                println!("round {round}: proposed {command:?} at index {index} (term {term})");
            }
            drive(leader, &outboxes);
            proposed = true;
        }
        if members.values().all(|m| m.applied == commands) {
            for (id, member) in &members {
                println!("node {id} applied {:?}", member.applied);
            }
            println!(
                "all three nodes applied the same commands in the same order by round {round}"
            );
            return;
        }
    }
    panic!("the cluster did not replicate both commands in 1,000 rounds");
}

/// Handles every `Ready` the member has: persist, send, apply, advance.
fn drive(member: &mut Member, outboxes: &BTreeMap<NodeId, Sender<Message>>) {
    while member.core.has_ready() {
        let ready = member.core.ready();
        // 1. Persist first: a vote or an acknowledgement may only leave once it is durable.
        member
            .storage
            .persist(ready.hard_state, ready.snapshot.as_ref(), &ready.entries)
            .expect("memory storage does not fail");
        // 2. Send.
        for message in ready.messages {
            let _ = outboxes[&message.to].send(message);
        }
        // 3. Apply, in log order. A new leader's empty no-op entry is not a command.
        for item in ready.to_apply {
            match item {
                Apply::Entry(entry) if !entry.data.is_empty() => {
                    member.applied.push(String::from_utf8_lossy(&entry.data).into_owned());
                }
                Apply::Entry(_) => {}
                Apply::Snapshot(_) => unreachable!("nothing here takes a snapshot"),
            }
        }
        // 4. Tell the core the Ready is done.
        member.core.advance();
    }
}
