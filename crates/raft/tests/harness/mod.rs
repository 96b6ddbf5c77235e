//! A message-level cluster of `RawNode`s: no threads, no clock, no network. Messages wait in a
//! queue until the test delivers them; links can be cut one way or both.

#![allow(dead_code, unreachable_pub)] // Each test file uses a different part of the harness.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use raft::{
    Apply, Config, Entry, MemStorage, Message, NodeId, RawNode, ReadState, Role, Snapshot, Storage,
};

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, RawNode>,
    pub storage: BTreeMap<NodeId, MemStorage>,
    /// What each node's state machine received, in order.
    pub applied: BTreeMap<NodeId, Vec<Apply>>,
    /// The reads each node confirmed, in order.
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    pub in_transit: VecDeque<Message>,
    /// Every message ever sent (delivered or not), for counting.
    pub sent: Vec<Message>,
    cut: BTreeSet<(NodeId, NodeId)>,
    configs: BTreeMap<NodeId, Config>,
    restarts: u64,
}

pub fn config(id: NodeId, n: u64) -> Config {
    let mut c = Config::new(id, (1..=n).collect());
    c.election_ticks = 10;
    c.heartbeat_ticks = 1;
    c
}

impl Cluster {
    pub fn new(n: u64) -> Cluster {
        Cluster::with_config(n, |_| {})
    }

    pub fn with_config(n: u64, adjust: impl Fn(&mut Config)) -> Cluster {
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            storage: BTreeMap::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            in_transit: VecDeque::new(),
            sent: Vec::new(),
            cut: BTreeSet::new(),
            configs: BTreeMap::new(),
            restarts: 0,
        };
        for id in 1..=n {
            let mut c = config(id, n);
            adjust(&mut c);
            cluster.configs.insert(id, c.clone());
            let storage = MemStorage::new();
            let node =
                RawNode::new(Config { seed: id, ..c }, storage.initial_state().unwrap()).unwrap();
            cluster.nodes.insert(id, node);
            cluster.storage.insert(id, storage);
            cluster.applied.insert(id, Vec::new());
        }
        cluster
    }

    pub fn node(&self, id: NodeId) -> &RawNode {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut RawNode {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Persists, queues the messages of, applies and advances every ready node.
    pub fn process_readies(&mut self) -> bool {
        let mut any = false;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            while self.nodes[&id].has_ready() {
                any = true;
                let node = self.nodes.get_mut(&id).unwrap();
                let ready = node.ready();
                let storage = self.storage.get_mut(&id).unwrap();
                storage.persist(ready.hard_state, ready.snapshot.as_ref(), &ready.entries).unwrap();
                for m in ready.messages {
                    self.sent.push(m.clone());
                    self.in_transit.push_back(m);
                }
                self.applied.get_mut(&id).unwrap().extend(ready.to_apply);
                self.reads.entry(id).or_default().extend(ready.read_states);
                self.nodes.get_mut(&id).unwrap().advance();
            }
        }
        any
    }

    /// Delivers one queued message (dropping it if its link is cut). False if none is queued.
    pub fn deliver_one(&mut self) -> bool {
        let Some(m) = self.in_transit.pop_front() else { return false };
        if !self.cut.contains(&(m.from, m.to))
            && let Some(node) = self.nodes.get_mut(&m.to)
        {
            // Every message here comes from a correct node: none may be refused.
            if let Err(e) = node.step(m) {
                panic!("a correct node's message was refused: {e}");
            }
        }
        true
    }

    /// Runs readies and deliveries until nothing moves.
    pub fn stabilize(&mut self) {
        loop {
            let readied = self.process_readies();
            let mut delivered = false;
            while self.deliver_one() {
                delivered = true;
            }
            if !readied && !delivered {
                return;
            }
        }
    }

    pub fn tick(&mut self, id: NodeId) {
        self.node_mut(id).tick();
    }

    pub fn tick_all(&mut self) {
        for node in self.nodes.values_mut() {
            node.tick();
        }
    }

    /// Ticks everyone `n` times, stabilizing after each tick.
    pub fn run_ticks(&mut self, n: u32) {
        for _ in 0..n {
            self.tick_all();
            self.stabilize();
        }
    }

    /// Makes `id` campaign (ticking only it), then lets the election finish.
    pub fn campaign(&mut self, id: NodeId) {
        let (term, role) = (self.node(id).current_term(), self.node(id).role());
        for _ in 0..100 {
            self.tick(id);
            let n = self.node(id);
            if n.role() != role || n.current_term() != term {
                break;
            }
        }
        self.stabilize();
    }

    pub fn elect(&mut self, id: NodeId) {
        self.campaign(id);
        assert_eq!(self.node(id).role(), Role::Leader, "node {id} did not win");
    }

    pub fn leader(&self) -> Option<NodeId> {
        let leaders: Vec<NodeId> =
            self.nodes.values().filter(|n| n.role() == Role::Leader).map(|n| n.id()).collect();
        leaders.into_iter().max_by_key(|&id| self.node(id).current_term())
    }

    pub fn propose(&mut self, id: NodeId, data: &str) -> raft::Result<(u64, u64)> {
        self.node_mut(id).propose(Bytes::from(data.to_owned()))
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    pub fn cut_oneway(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.nodes.keys().copied().filter(|&o| o != id).collect();
        for o in others {
            self.cut(id, o);
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Crashes `id` and restarts it from what it persisted. Its state machine restarts from
    /// the persisted snapshot, as a service would.
    pub fn restart(&mut self, id: NodeId) {
        self.restarts += 1;
        let storage = self.storage[&id].crash_copy();
        let state = storage.initial_state().unwrap();
        let applied = self.applied.get_mut(&id).unwrap();
        applied.clear();
        if let Some(s) = &state.snapshot {
            applied.push(Apply::Snapshot(s.clone()));
        }
        let seed = id * 1000 + self.restarts;
        let node = RawNode::new(Config { seed, ..self.configs[&id].clone() }, state).unwrap();
        self.nodes.insert(id, node);
        self.storage.insert(id, storage);
        self.in_transit.retain(|m| m.to != id && m.from != id);
    }

    /// The commands `id` applied, as strings, skipping empty (no-op) entries and counting a
    /// snapshot as the commands it covers (by its data, a list of commands joined with ',').
    pub fn applied_commands(&self, id: NodeId) -> Vec<String> {
        let mut out = Vec::new();
        for a in &self.applied[&id] {
            match a {
                Apply::Entry(e) if !e.data.is_empty() => {
                    out.push(String::from_utf8(e.data.to_vec()).unwrap());
                }
                Apply::Entry(_) => {}
                Apply::Snapshot(s) => {
                    out.clear();
                    let text = String::from_utf8(s.data.to_bytes().unwrap().to_vec()).unwrap();
                    out.extend(text.split(',').filter(|c| !c.is_empty()).map(str::to_owned));
                }
            }
        }
        out
    }

    pub fn applied_entries(&self, id: NodeId) -> Vec<Entry> {
        self.applied[&id]
            .iter()
            .filter_map(|a| if let Apply::Entry(e) = a { Some(e.clone()) } else { None })
            .collect()
    }

    pub fn persisted_snapshot(&self, id: NodeId) -> Option<Snapshot> {
        self.storage[&id].snapshot()
    }

    /// Messages sent so far matching `pred`.
    pub fn count_sent(&self, pred: impl Fn(&Message) -> bool) -> usize {
        self.sent.iter().filter(|m| pred(m)).count()
    }
}
