//! Peer messages, decoded from arbitrary bytes by the TCP transport's codec and stepped into a
//! live three-node cluster, interleaved with honest traffic over a faulty network.
//!
//! The cluster is three [`RawNode`]s on [`MemStorage`], driven deterministically in one thread
//! (as `benches/benches/raft.rs` drives them). The input is a program of operations: ticks,
//! proposals, snapshots and restarts of nodes; delivering, dropping, duplicating, reordering
//! and replaying honest messages; and forged messages, whose bytes go through
//! [`raft_tcp::decode_payload`] and then [`RawNode::step`].
//!
//! Checked after every operation:
//!
//! * nothing panics (the core's assertions included);
//! * on every node, entries are applied in index order, each once per life of the node, and
//!   a snapshot is applied only past what the node applied; no node's term or commit index
//!   ever goes back;
//! * while no forged message that speaks for a leader or a voter has been accepted: at most one
//!   leader per term, and every node applies the same entry at the same index and the same
//!   state at the same snapshot index (committed entries never change);
//! * nodes never answer each other forever without a tick in between (a message storm);
//! * at the end, if nothing forged was accepted except messages that cannot break Raft's safety
//!   on their own, the network is healed and the cluster must still commit an honest proposal
//!   on every node within a bounded number of ticks.
//!
//! Raft tolerates crashes, not lies: a forged vote or acknowledgement that a node accepts can
//! break agreement (a peer that lies that way can only be kept out by authentication). Such a
//! message turns the cross-node checks off for the rest of the input; the per-node checks and
//! "no panic" stay on.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};

use bytes::Bytes;
use raft::{AppendOutcome, Apply, Body, Config, MemStorage, Message, RawNode, Role, Storage, Term};

const NODES: u64 = 3;
/// Messages kept for replaying later (a slow network delivering an old copy).
const HISTORY: usize = 64;
/// Ticks of every node allowed for the final honest proposal to commit everywhere.
const LIVENESS_TICKS: usize = 2_000;
/// Messages the nodes may exchange with no tick in between before it counts as a storm: far
/// above what a round of replication among three nodes takes.
const MAX_MESSAGES_PER_TICK: usize = 10_000;

/// The input, read as a stream of operations.
struct Program<'a> {
    data: &'a [u8],
    at: usize,
}

impl Program<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let end = (self.at + n).min(self.data.len());
        let out = &self.data[self.at..end];
        self.at = end;
        out
    }
}

/// A chain hash over a node's applied entries: equal chains at an index mean equal entries up
/// to it.
fn chain(prev: u64, term: Term, data: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    (prev, term, data).hash(&mut h);
    h.finish()
}

struct Cluster {
    nodes: Vec<RawNode>,
    storage: Vec<MemStorage>,
    seeds: u64,
    /// Honest messages in flight, in delivery order.
    queue: VecDeque<Message>,
    /// Honest messages delivered, the newest last, for replays.
    history: VecDeque<Message>,
    /// Per node: the last index applied in this life, and the chain hash there.
    applied: Vec<(u64, u64)>,
    /// Per node: the highest term and commit index seen.
    seen: Vec<(Term, u64)>,
    /// Index -> chain hash, as the first node to apply it had it.
    committed: BTreeMap<u64, u64>,
    /// Term -> its leader.
    leaders: BTreeMap<Term, u64>,
    /// A forged message that speaks for a leader or a voter was accepted.
    byzantine: bool,
    proposals: u64,
}

fn config(id: u64) -> Config {
    let mut c = Config::new(id, (0..NODES).collect());
    c.max_append_bytes = 4 << 10;
    c
}

impl Cluster {
    fn new(seed: u64) -> Cluster {
        let nodes = (0..NODES)
            .map(|id| {
                RawNode::new(
                    raft::Config { seed: seed ^ (id + 1), ..config(id) },
                    Default::default(),
                )
                .expect("a fresh node starts")
            })
            .collect();
        Cluster {
            nodes,
            storage: (0..NODES).map(|_| MemStorage::new()).collect(),
            seeds: seed,
            queue: VecDeque::new(),
            history: VecDeque::new(),
            applied: vec![(0, 0); NODES as usize],
            seen: vec![(0, 0); NODES as usize],
            committed: BTreeMap::new(),
            leaders: BTreeMap::new(),
            byzantine: false,
            proposals: 0,
        }
    }

    /// Persists, queues messages and applies, for every node, until no node has a `Ready`.
    fn settle(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            for id in 0..self.nodes.len() {
                while self.nodes[id].has_ready() {
                    moved = true;
                    let ready = self.nodes[id].ready();
                    self.storage[id]
                        .persist(ready.hard_state, ready.snapshot.as_ref(), &ready.entries)
                        .expect("MemStorage persists");
                    self.queue.extend(ready.messages);
                    for a in ready.to_apply {
                        self.apply(id, a);
                    }
                    self.nodes[id].advance();
                }
            }
            self.check();
            if !moved {
                return;
            }
        }
    }

    fn apply(&mut self, id: usize, apply: Apply) {
        let (last, hash) = self.applied[id];
        let (index, hash) = match apply {
            Apply::Entry(e) => {
                assert_eq!(e.index, last + 1, "node {id} applied {} after {last}", e.index);
                (e.index, chain(hash, e.term, &e.data))
            }
            Apply::Snapshot(s) => {
                let index = s.meta.last_included_index;
                assert!(index > last, "node {id} applied a snapshot through {index} after {last}");
                let data = s.data.to_bytes().expect("snapshot data is in memory");
                // Snapshots the harness takes hold (index, chain hash); others are forged.
                let hash = match <[u8; 16]>::try_from(&data[..]) {
                    Ok(b) if u64::from_le_bytes(b[..8].try_into().expect("8")) == index => {
                        u64::from_le_bytes(b[8..].try_into().expect("8"))
                    }
                    _ => {
                        assert!(self.byzantine, "node {id} applied a snapshot no node took");
                        chain(0, s.meta.last_included_term, &data)
                    }
                };
                (index, hash)
            }
        };
        self.applied[id] = (index, hash);
        if !self.byzantine {
            let first = *self.committed.entry(index).or_insert(hash);
            assert_eq!(first, hash, "node {id} applied a different state at index {index}");
        }
    }

    fn check(&mut self) {
        for (id, node) in self.nodes.iter().enumerate() {
            let status = node.status();
            let (term, commit) = self.seen[id];
            assert!(status.current_term >= term, "node {id}'s term went back from {term}");
            assert!(status.commit_index >= commit, "node {id}'s commit went back from {commit}");
            self.seen[id] = (status.current_term, status.commit_index);
            if status.role == Role::Leader && !self.byzantine {
                let leader = *self.leaders.entry(status.current_term).or_insert(id as u64);
                assert_eq!(leader, id as u64, "two leaders in term {}", status.current_term);
            }
        }
    }

    fn deliver(&mut self, m: Message) {
        let to = m.to as usize;
        if to < self.nodes.len() {
            // A correct node's message may still be refused when it arrives late or twice
            // (a refusal changes nothing); it must never panic.
            let _ = self.nodes[to].step(m);
        }
    }

    /// Steps a message from the fuzzer's bytes, addressed to one of the nodes.
    fn forge(&mut self, to: u8, bytes: &[u8]) {
        let Some(mut m) = raft_tcp::decode_payload(bytes) else { return };
        m.to = u64::from(to) % NODES;
        let speaks_for_others = match &m.body {
            Body::AppendEntries { .. } | Body::InstallSnapshot { .. } => true,
            Body::RequestVoteResponse { vote_granted, .. } => *vote_granted,
            Body::AppendEntriesResponse { outcome, .. } => {
                matches!(outcome, AppendOutcome::Success { .. })
            }
            Body::InstallSnapshotResponse { done, .. } => *done,
            // Votes asked for, conflicts, refusals, reads and proposals assert nothing that
            // Raft's safety rests on.
            _ => false,
        };
        let to = m.to as usize;
        if self.nodes[to].step(m).is_ok() && speaks_for_others {
            self.byzantine = true;
        }
    }

    fn restart(&mut self, id: usize) {
        let state = self.storage[id].initial_state().expect("MemStorage reports its state");
        self.seeds = self.seeds.wrapping_mul(6364136223846793005).wrapping_add(1);
        self.nodes[id] =
            RawNode::new(raft::Config { seed: self.seeds, ..config(id as u64) }, state)
                .expect("a node restarts from its own storage");
        // The service restarts from its snapshot, if any: applying starts over there.
        let snapshot = self.storage[id].initial_state().expect("state").snapshot;
        self.applied[id] = match snapshot {
            None => (0, 0),
            Some(s) => {
                let data = s.data.to_bytes().expect("in memory");
                match <[u8; 16]>::try_from(&data[..]) {
                    Ok(b) => (
                        s.meta.last_included_index,
                        u64::from_le_bytes(b[8..].try_into().expect("8")),
                    ),
                    Err(_) => (s.meta.last_included_index, chain(0, 0, &data)),
                }
            }
        };
        // Volatile: the commit index is relearned.
        self.seen[id].1 = 0;
    }

    fn propose(&mut self, id: usize) -> Option<u64> {
        self.proposals += 1;
        let data = Bytes::from(format!("p{}", self.proposals));
        self.nodes[id].propose(data).ok().map(|(index, _)| index)
    }

    fn snapshot(&mut self, id: usize) {
        let (index, hash) = self.applied[id];
        if index == 0 {
            return;
        }
        let mut data = index.to_le_bytes().to_vec();
        data.extend_from_slice(&hash.to_le_bytes());
        let _ = self.nodes[id].snapshot(index, Bytes::from(data));
    }

    /// Delivers every message in flight, and those they cause, until none is left. A bounded
    /// number of messages must do: nodes that answer each other forever without a tick in
    /// between (a livelock, burning CPU and network) are a bug.
    fn deliver_all(&mut self) {
        let mut delivered = 0;
        while let Some(m) = self.queue.pop_front() {
            delivered += 1;
            assert!(
                delivered <= MAX_MESSAGES_PER_TICK,
                "message storm: {delivered} messages \
                     without a tick, the last {m:?}"
            );
            self.deliver(m);
            self.settle();
        }
    }

    /// Heals the network and checks that an honest proposal commits everywhere.
    fn liveness(&mut self) {
        let mut target = None;
        for _ in 0..LIVENESS_TICKS {
            for id in 0..self.nodes.len() {
                self.nodes[id].tick();
            }
            self.settle();
            self.deliver_all();
            if target.is_none()
                && let Some(leader) =
                    (0..self.nodes.len()).find(|&i| self.nodes[i].role() == Role::Leader)
            {
                target = self.propose(leader);
            }
            if let Some(t) = target
                && self.applied.iter().all(|&(a, _)| a >= t)
            {
                return;
            }
            if target.is_some() && self.byzantine {
                return;
            }
        }
        if self.byzantine {
            return; // A liar accepted may have wedged it; only "no panic" is asked then.
        }
        panic!(
            "the healed cluster did not commit an honest proposal in {LIVENESS_TICKS} ticks \
             (target {target:?}, applied {:?}, roles {:?})",
            self.applied.iter().map(|a| a.0).collect::<Vec<_>>(),
            self.nodes.iter().map(|n| (n.role(), n.current_term())).collect::<Vec<_>>()
        );
    }
}

/// Input: `seed` (8 bytes, or fewer), then operations until the input ends. Each operation is
/// one byte `op` (its low 4 bits pick it) and its arguments:
///
/// | op | operation                                                                     |
/// |----|-------------------------------------------------------------------------------|
/// | 0  | tick node `op >> 4` (mod 3)                                                   |
/// | 1  | propose on node `op >> 4`                                                     |
/// | 2  | deliver the first honest message in flight                                    |
/// | 3  | drop it                                                                       |
/// | 4  | duplicate it (a copy goes last)                                               |
/// | 5  | move it last (reordering)                                                     |
/// | 6  | replay an old honest message: `pick:u8`                                       |
/// | 7  | snapshot node `op >> 4` at what it applied                                    |
/// | 8  | restart node `op >> 4` from its storage                                       |
/// | 9  | deliver every message in flight                                               |
/// | 10+| forged: `to:u8 len:u8 payload{len}`, decoded as the TCP reader does, stepped   |
///
/// See the module docs for the invariants.
pub fn peer_step(data: &[u8]) {
    let mut program = Program { data, at: 0 };
    let mut seed = [0u8; 8];
    let given = program.bytes(8);
    seed[..given.len()].copy_from_slice(given);
    let mut cluster = Cluster::new(u64::from_le_bytes(seed));
    let node = |op: u8| usize::from(op >> 4) % NODES as usize;
    let mut ops = 0;
    while let Some(op) = program.byte() {
        ops += 1;
        if ops > 2_000 {
            break;
        }
        match op & 0x0f {
            0 => cluster.nodes[node(op)].tick(),
            1 => {
                cluster.propose(node(op));
            }
            2 => {
                if let Some(m) = cluster.queue.pop_front() {
                    cluster.history.push_back(m.clone());
                    if cluster.history.len() > HISTORY {
                        cluster.history.pop_front();
                    }
                    cluster.deliver(m);
                }
            }
            3 => {
                cluster.queue.pop_front();
            }
            4 => {
                if let Some(m) = cluster.queue.front().cloned() {
                    cluster.queue.push_back(m);
                }
            }
            5 => {
                if let Some(m) = cluster.queue.pop_front() {
                    cluster.queue.push_back(m);
                }
            }
            6 => {
                let pick = usize::from(program.byte().unwrap_or(0));
                if !cluster.history.is_empty() {
                    let m = cluster.history[pick % cluster.history.len()].clone();
                    cluster.deliver(m);
                }
            }
            7 => cluster.snapshot(node(op)),
            8 => cluster.restart(node(op)),
            9 => cluster.deliver_all(),
            _ => {
                let to = program.byte().unwrap_or(0);
                let len = usize::from(program.byte().unwrap_or(0));
                let payload = program.bytes(len).to_vec();
                cluster.forge(to, &payload);
            }
        }
        cluster.settle();
    }
    cluster.liveness();
}
