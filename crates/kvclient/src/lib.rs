//! `kvclient`: the Clerk, the client of the replicated key-value service, and the protocol it
//! speaks to the servers.
//!
//! A [`Clerk`] sends each operation to the server it believes leads, and moves on to the next
//! server when that one says it does not lead (taking its hint about who does), does not answer
//! in time, or cannot be reached. It never gives up: an operation returns once it has taken
//! effect.
//!
//! **Exactly once.** Every clerk has a random 64-bit client id and numbers its operations. A
//! retried write carries the same (client id, sequence number), and the service keeps, per
//! client, the last sequence number it applied and its reply, in the same atomic write as the
//! data. So a write that took effect before its reply was lost is answered from that table when
//! it comes again, not applied twice. A clerk must be used by one thread at a time (its methods
//! take `&mut self`): the table holds one operation per client.
//!
//! The protocol ([`proto`]) is a request naming the client, its sequence number and an [`Op`];
//! the reply is an [`Outcome`] or a reason to try another server. [`Servers`] abstracts how a
//! request reaches server `i`; [`LabrpcServers`] does it over the simulated network.
//!
//! [`resp`] is the codec for RESP2, the Redis protocol, which the server speaks to clients
//! (redis-cli, redis-benchmark, any Redis library) and our client will speak to the server.
//!
//! ```
//! use kvclient::{proto::{Reply, Request, Outcome, Op}, Clerk, Servers};
//! use std::collections::BTreeMap;
//! use std::sync::Mutex;
//!
//! /// A one-server "cluster" in memory, for the example.
//! struct Memory(Mutex<BTreeMap<Vec<u8>, Vec<u8>>>);
//!
//! impl Servers for Memory {
//!     fn count(&self) -> usize { 1 }
//!     fn call(&self, _server: usize, request: &Request) -> Option<Reply> {
//!         let mut map = self.0.lock().unwrap();
//!         Some(Reply::Done(match &request.op {
//!             Op::Put { key, value } => {
//!                 map.insert(key.to_vec(), value.to_vec());
//!                 Outcome::Written
//!             }
//!             Op::Get { key } => Outcome::Value(map.get(&key[..]).map(|v| v.clone().into())),
//!             _ => unimplemented!(),
//!         }))
//!     }
//! }
//!
//! let mut clerk = Clerk::new(Memory(Mutex::default()));
//! clerk.put("k", "v");
//! assert_eq!(clerk.get("k").as_deref(), Some(&b"v"[..]));
//! ```

pub mod proto;
pub mod resp;

use std::time::Duration;

use bytes::Bytes;
use labrpc::ClientEnd;

pub use proto::{Op, Outcome, Reply, Request};

/// How a clerk reaches the servers of one cluster.
pub trait Servers {
    /// How many servers there are; they are numbered `0..count()`.
    fn count(&self) -> usize;

    /// Sends `request` to server `server` and waits for its reply; `None` if there is none
    /// (the request or reply was lost, the server is down or unreachable).
    fn call(&self, server: usize, request: &Request) -> Option<Reply>;
}

/// Servers on the simulated network: one [`ClientEnd`] per server, method `KVServer.Request`.
#[derive(Debug)]
pub struct LabrpcServers {
    ends: Vec<ClientEnd>,
}

impl LabrpcServers {
    /// The servers reached through `ends`, in server order.
    pub fn new(ends: Vec<ClientEnd>) -> LabrpcServers {
        LabrpcServers { ends }
    }
}

impl Servers for LabrpcServers {
    fn count(&self) -> usize {
        self.ends.len()
    }

    fn call(&self, server: usize, request: &Request) -> Option<Reply> {
        self.ends[server].call(proto::METHOD, request).ok()
    }
}

/// After trying every server once without success, wait this long before the next round.
const ROUND_PAUSE: Duration = Duration::from_millis(20);

/// The most pairs a [`Clerk::scan`] asks for in one request.
const SCAN_PAGE: u32 = 1000;

/// The client of the key-value service. See the crate documentation.
#[derive(Debug)]
pub struct Clerk<S> {
    servers: S,
    client_id: u64,
    seq: u64,
    leader: usize,
}

impl<S: Servers> Clerk<S> {
    /// A clerk with a fresh random client id.
    pub fn new(servers: S) -> Clerk<S> {
        Clerk::with_client_id(servers, rand::random())
    }

    /// A clerk with a chosen client id (it must be unique among the service's clients).
    pub fn with_client_id(servers: S, client_id: u64) -> Clerk<S> {
        Clerk { servers, client_id, seq: 0, leader: 0 }
    }

    /// This clerk's client id.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The server the clerk believes leads.
    pub fn leader(&self) -> usize {
        self.leader
    }

    /// The value of `key`, if it has one.
    pub fn get(&mut self, key: impl Into<Bytes>) -> Option<Bytes> {
        match self.run(Op::Get { key: key.into() }) {
            Outcome::Value(v) => v,
            other => panic!("a get was answered with {other:?}"),
        }
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.run(Op::Put { key: key.into(), value: value.into() });
    }

    /// Appends `value` to the value of `key` (to nothing, if it has none).
    pub fn append(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.run(Op::Append { key: key.into(), value: value.into() });
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: impl Into<Bytes>) {
        self.run(Op::Delete { key: key.into() });
    }

    /// Up to `limit` pairs with `start <= key < end` (no upper bound if `end` is `None`), in
    /// key order, fetched in pages. Each page is a linearizable read; the pages together are
    /// not one atomic snapshot.
    pub fn scan(
        &mut self,
        start: impl Into<Bytes>,
        end: Option<Bytes>,
        limit: usize,
    ) -> Vec<(Bytes, Bytes)> {
        let mut out = Vec::new();
        let mut from = start.into();
        while out.len() < limit {
            let want = (limit - out.len()).min(SCAN_PAGE as usize) as u32;
            let op = Op::Scan { start: from.clone(), end: end.clone(), limit: want };
            let Outcome::Page { pairs, next } = self.run(op) else {
                panic!("a scan was answered with something else");
            };
            out.extend(pairs);
            match next {
                Some(key) => from = key,
                None => break,
            }
        }
        out.truncate(limit);
        out
    }

    /// Sends `op` until a server answers it, and returns the answer.
    pub fn run(&mut self, op: Op) -> Outcome {
        self.seq += 1;
        let request = Request { client_id: self.client_id, seq: self.seq, op };
        let n = self.servers.count();
        let mut tried = 0;
        loop {
            match self.servers.call(self.leader, &request) {
                Some(Reply::Done(outcome)) => return outcome,
                Some(Reply::WrongLeader { leader_hint: Some(hint) }) if (hint as usize) < n => {
                    self.leader = hint as usize;
                }
                _ => self.leader = (self.leader + 1) % n,
            }
            tried += 1;
            if tried % n == 0 {
                std::thread::sleep(ROUND_PAUSE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    /// The scripted cluster's store, the (server, seq) of every call, and how many answered.
    type ScriptState = (BTreeMap<Bytes, Bytes>, Vec<(usize, u64)>, usize);

    /// A scripted cluster: server `leader` answers from a map (applying each (client, seq)
    /// once); the others say who leads, or nothing; the first `drop_first` answers are lost.
    struct Scripted {
        leader: usize,
        hint: bool,
        state: Mutex<ScriptState>,
        drop_first: usize,
    }

    impl Servers for Scripted {
        fn count(&self) -> usize {
            3
        }

        fn call(&self, server: usize, request: &Request) -> Option<Reply> {
            let mut state = self.state.lock().unwrap();
            let (map, calls, answered) = &mut *state;
            calls.push((server, request.seq));
            if server != self.leader {
                let hint = self.hint.then_some(self.leader as u64);
                return Some(Reply::WrongLeader { leader_hint: hint });
            }
            let outcome = match &request.op {
                Op::Get { key } => Outcome::Value(map.get(key).cloned()),
                Op::Put { key, value } => {
                    map.insert(key.clone(), value.clone());
                    Outcome::Written
                }
                Op::Append { key, value } => {
                    let mut v = map.get(key).map(|v| v.to_vec()).unwrap_or_default();
                    v.extend_from_slice(value);
                    map.insert(key.clone(), v.into());
                    Outcome::Written
                }
                Op::Delete { key } => {
                    map.remove(key);
                    Outcome::Written
                }
                Op::Scan { start, end, limit } => {
                    let mut pairs: Vec<(Bytes, Bytes)> = map
                        .range(start.clone()..)
                        .filter(|(k, _)| end.as_ref().is_none_or(|e| *k < e))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .take(*limit as usize + 1)
                        .collect();
                    let next = (pairs.len() > *limit as usize).then(|| pairs.pop().unwrap().0);
                    Outcome::Page { pairs, next }
                }
                other => panic!("the scripted cluster does not serve {other:?}"),
            };
            *answered += 1;
            // A lost reply: the operation took effect, the clerk does not know.
            (*answered > self.drop_first).then_some(Reply::Done(outcome))
        }
    }

    fn cluster(leader: usize, hint: bool, drop_first: usize) -> Scripted {
        Scripted { leader, hint, state: Mutex::default(), drop_first }
    }

    #[test]
    fn follows_the_leader_hint_and_remembers_it() {
        let mut clerk = Clerk::with_client_id(cluster(2, true, 0), 7);
        clerk.put("a", "1");
        assert_eq!(clerk.leader(), 2);
        assert_eq!(clerk.client_id(), 7);
        let calls = clerk.servers.state.lock().unwrap().1.clone();
        assert_eq!(calls, vec![(0, 1), (2, 1)], "asked server 0, then went where it pointed");
        assert_eq!(clerk.get("a").as_deref(), Some(&b"1"[..]));
        assert_eq!(clerk.servers.state.lock().unwrap().1.last(), Some(&(2, 2)));
    }

    #[test]
    fn without_hints_it_tries_every_server_and_retries_with_the_same_seq() {
        let mut clerk = Clerk::new(cluster(1, false, 2));
        clerk.append("k", "x");
        let calls = clerk.servers.state.lock().unwrap().1.clone();
        // Server 0 refuses, server 1's first two answers are lost, then a full round again.
        assert!(calls.iter().all(|&(_, seq)| seq == 1), "{calls:?}");
        assert!(calls.len() >= 4, "{calls:?}");
        clerk.delete("k");
        assert_eq!(clerk.get("k"), None);
    }

    #[test]
    fn scan_follows_pages_up_to_the_limit() {
        let mut clerk = Clerk::new(cluster(0, true, 0));
        for i in 0..2500u32 {
            clerk.put(format!("k{i:05}"), "v");
        }
        let all = clerk.scan("k", None, 10_000);
        assert_eq!(all.len(), 2500);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        let some = clerk.scan("k00100", Some(Bytes::from("k02000")), 1500);
        assert_eq!(some.len(), 1500);
        assert_eq!(some[0].0, "k00100");
        let bounded = clerk.scan("k02400", Some(Bytes::from("k02410")), 100);
        assert_eq!(bounded.len(), 10);
    }

    #[test]
    fn labrpc_servers_carry_requests_over_the_network() {
        use labrpc::{ClockMode, Network, Server, Service};
        let net = Network::new(ClockMode::RealTime);
        let service = Service::new("KVServer").method("Request", |r: Request| {
            Reply::Done(Outcome::Value(Some(Bytes::from(format!("seq {}", r.seq)))))
        });
        net.add_server("s0", Server::new().with_service(service));
        let end = net.make_end("c->s0");
        net.connect("c->s0", "s0");
        net.enable("c->s0", true);
        let mut clerk = Clerk::new(LabrpcServers::new(vec![end]));
        assert_eq!(clerk.get("x").as_deref(), Some(&b"seq 1"[..]));
        assert_eq!(clerk.servers.count(), 1);
        assert!(Op::Put { key: "k".into(), value: "v".into() }.is_write());
        assert!(!Op::Get { key: "k".into() }.is_write());
    }
}
