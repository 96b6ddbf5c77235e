#![doc = include_str!("../README.md")]
//!
//! # Design
//!
//! `kvclient`: the Clerk, the client of the replicated key-value service, and the protocol it
//! speaks to the servers.
//!
//! A [`Clerk`] sends each operation to the server it believes leads, and moves on to the next
//! server when that one says it does not lead (taking its hint about who does), does not answer
//! in time, or cannot be reached. It never gives up: an operation returns once it has taken
//! effect.
//!
//! **Exactly once.** A clerk's writes go under a *session* it registers with the service
//! ([`Op::Register`]) before its first write: the leader draws the session's random 64-bit id
//! and records it in the log. The clerk numbers the session's writes 1, 2, 3, …; a retried
//! write carries the same (session, sequence number), and the service keeps, per session, the
//! last sequence number it applied and its reply, in the same atomic write as the data. So a
//! write that took effect before its reply was lost is answered from that table when it comes
//! again, not applied twice. A clerk must be used by one thread at a time (its methods take
//! `&mut self`): the table holds one operation per session.
//!
//! A session idle for longer than the service's TTL expires. A write whose only attempt finds
//! its session gone was not applied: the clerk registers again and resends it. After a write
//! the clerk gave up on ([`Clerk::try_run`]'s timeout), the next write starts a new session
//! that retires the old one in the same log entry, so the abandoned write can never take
//! effect after it.
//!
//! The protocol ([`proto`]) is a request naming the client, its sequence number and an [`Op`];
//! the reply is an [`Outcome`] or a reason to try another server. [`Servers`] abstracts how a
//! request reaches server `i`: [`RespServers`] does it over TCP to a real cluster (the
//! never-published `testkit` crate has one over the simulated network, for the labs). A
//! server that does not lead may name the node it believes does; [`Servers::server_for_node`]
//! says which server that node is.
//!
//! [`Clerk::run`] never gives up, as the lab clients must not. A program with a person
//! waiting uses [`Clerk::try_run`], which gives up at a deadline with an [`Error`].
//!
//! [`resp`] is the codec for RESP2, the Redis protocol, which the server speaks to clients
//! (redis-cli, redis-benchmark, any Redis library) and [`RespServers`] speaks to the server.
//! The `kvcli` command-line client is built on it, in the `raftkv` crate.
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
//!             Op::Register { .. } => Outcome::Registered { id: 1 },
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

pub mod tcp;
pub mod tls;

use std::time::{Duration, Instant};

use bytes::Bytes;

/// The protocol types, from `kvproto`; re-exported so that a client needs only this crate.
pub use kvproto::{proto, resp};
pub use proto::{Op, Outcome, Reply, Request};
pub use tcp::{Credentials, RespConfig, RespServers};
pub use tls::TlsConfig;

/// How a clerk reaches the servers of one cluster.
pub trait Servers {
    /// How many servers there are; they are numbered `0..count()`.
    fn count(&self) -> usize;

    /// Sends `request` to server `server` and waits for its reply; `None` if there is none
    /// (the request or reply was lost, the server is down or unreachable).
    fn call(&self, server: usize, request: &Request) -> Option<Reply>;

    /// As [`call`](Self::call), but gives up (`None`) once `deadline` passes. The default
    /// ignores the deadline and calls `call`, which is right for transports whose calls are
    /// bounded anyway (the simulated network's are); [`RespServers`] honours it.
    fn call_until(&self, server: usize, request: &Request, deadline: Instant) -> Option<Reply> {
        let _ = deadline;
        self.call(server, request)
    }

    /// The server that is Raft node `node_id`, if it is one of these: how a clerk follows a
    /// [`Reply::WrongLeader`] hint, which names a node. The default takes server `i` to be
    /// node `i`, as in the lab clusters, whose nodes are numbered from 0; in a real cluster
    /// the node ids are whatever its configuration says ([`RespServers`] knows them).
    fn server_for_node(&self, node_id: u64) -> Option<usize> {
        usize::try_from(node_id).ok().filter(|&i| i < self.count())
    }
}

/// Why the last attempt at an operation did not finish it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// No reply came: the server is down, unreachable, too slow, or answered with an error.
    NoReply,
    /// The server does not lead and could not serve the request (it knows no leader, or is
    /// not allowed to forward).
    WrongLeader,
    /// The server took the request but could not finish it in time (for example, it lost
    /// its leader meanwhile).
    Timeout,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Failure::NoReply => "no reply from the server",
            Failure::WrongLeader => "the server knew of no leader",
            Failure::Timeout => "the server could not finish it in time",
        })
    }
}

/// Why a clerk gave up on an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The deadline passed before any server finished the operation. A write may or may not
    /// have taken effect (see [`Clerk::try_run`]).
    #[error(
        "no server finished the operation within {waited:.1?} ({attempts} attempts; the last: \
         {last})"
    )]
    Timeout {
        /// How long the clerk tried.
        waited: Duration,
        /// How many requests it sent (counting retries).
        attempts: u64,
        /// What happened to the last one.
        last: Failure,
    },
    /// The clerk's session ended (it expired) while a write was being retried: an earlier
    /// attempt may or may not have taken effect. The clerk registers a new session for its
    /// next write.
    #[error("the session expired while a write was retried; it may or may not have taken effect")]
    SessionEnded,
    /// A server answered with an outcome of the wrong kind for the operation (a server of
    /// another version, or a bug).
    #[error("the server answered with an outcome of the wrong kind: {0:?}")]
    Unexpected(Outcome),
    /// The service refused the operation for good ([`Reply::Refused`]): it took no effect.
    #[error("the service refused the operation: {0}")]
    Refused(String),
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// After trying every server once without success, wait this long before the next round.
const ROUND_PAUSE: Duration = Duration::from_millis(20);

/// The most pairs a [`Clerk::scan`] asks for in one request.
const SCAN_PAGE: u32 = 1000;

/// The client of the key-value service. See the crate documentation.
#[derive(Debug)]
pub struct Clerk<S> {
    servers: S,
    /// Tells this clerk's reads and registrations apart from other clients' (not a session).
    client_id: u64,
    /// The number of this clerk's last read or registration.
    request_seq: u64,
    /// The session its writes go under, once registered.
    session: Option<u64>,
    /// The number of the session's last write.
    seq: u64,
    /// A write under the session was given up on: the next write starts a new session,
    /// retiring this one.
    stale: bool,
    leader: usize,
}

impl<S: Servers> Clerk<S> {
    /// A clerk with a fresh random client id.
    pub fn new(servers: S) -> Clerk<S> {
        Clerk::with_client_id(servers, rand::random())
    }

    /// A clerk with a chosen client id (it must be unique among the service's clients). The
    /// id names the clerk's reads and registrations; its writes go under the session id the
    /// service hands out ([`session`](Self::session)).
    pub fn with_client_id(servers: S, client_id: u64) -> Clerk<S> {
        Clerk { servers, client_id, request_seq: 0, session: None, seq: 0, stale: false, leader: 0 }
    }

    /// This clerk's client id.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The session this clerk's writes go under, once its first write registered one.
    pub fn session(&self) -> Option<u64> {
        self.session
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
        match self.scan_until(start.into(), end, limit, None) {
            Ok(pairs) => pairs,
            Err(e) => panic!("a scan failed without a deadline: {e}"),
        }
    }

    /// As [`scan`](Self::scan), but gives up once `deadline` passes (the whole scan, every
    /// page, must be done by then).
    ///
    /// # Errors
    /// [`Error::Timeout`] if the deadline passed; [`Error::Unexpected`] if a server answered a
    /// page with something else.
    pub fn try_scan(
        &mut self,
        start: impl Into<Bytes>,
        end: Option<Bytes>,
        limit: usize,
        deadline: Instant,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        self.scan_until(start.into(), end, limit, Some(deadline))
    }

    fn scan_until(
        &mut self,
        start: Bytes,
        end: Option<Bytes>,
        limit: usize,
        deadline: Option<Instant>,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let mut out = Vec::new();
        let mut from = start;
        while out.len() < limit {
            let want = (limit - out.len()).min(SCAN_PAGE as usize) as u32;
            let op = Op::Scan { start: from.clone(), end: end.clone(), limit: want };
            let (pairs, next) = match self.run_until(op, deadline)? {
                Outcome::Page { pairs, next } => (pairs, next),
                other => return Err(Error::Unexpected(other)),
            };
            out.extend(pairs);
            match next {
                Some(key) => from = key,
                None => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Sends `op` until a server answers it, and returns the answer.
    ///
    /// # Panics
    /// If the service refuses the operation for good ([`Error::Refused`]: larger than its
    /// request limit, for example), or its session expired while a write was retried
    /// ([`Error::SessionEnded`]): this API has no way to report it. Use
    /// [`try_run`](Self::try_run) for operations that may be refused.
    pub fn run(&mut self, op: Op) -> Outcome {
        match self.run_until(op, None) {
            Ok(outcome) => outcome,
            Err(Error::Refused(reason)) => panic!("the service refused the operation: {reason}"),
            Err(Error::SessionEnded) => panic!("{}", Error::SessionEnded),
            Err(Error::Unexpected(outcome)) => panic!("{}", Error::Unexpected(outcome)),
            Err(e) => unreachable!("without a deadline the clerk never gives up, yet: {e}"),
        }
    }

    /// Sends `op` until a server answers it or `deadline` passes. At least one attempt is
    /// made, however early the deadline (though a transport may fail it at once).
    ///
    /// After an error the clerk is still usable. A write it gave up on may still take effect,
    /// until the clerk's next write starts a new session retiring the one it was sent under,
    /// never after: to the rest of the world it is an operation that was still in flight.
    ///
    /// # Errors
    /// [`Error::Timeout`] if no server finished the operation in time.
    pub fn try_run(&mut self, op: Op, deadline: Instant) -> Result<Outcome> {
        self.run_until(op, Some(deadline))
    }

    fn run_until(&mut self, op: Op, deadline: Option<Instant>) -> Result<Outcome> {
        if !op.needs_session() {
            self.request_seq += 1;
            let request =
                Request { client_id: self.client_id, seq: self.request_seq, op, ordered: false };
            return self.send(&request, deadline).map(|(outcome, _)| outcome);
        }
        let mut op = op;
        loop {
            let id = self.session_until(deadline)?;
            self.seq += 1;
            let request = Request { client_id: id, seq: self.seq, op, ordered: false };
            match self.send(&request, deadline) {
                Ok((Outcome::NoSession, attempts)) => {
                    self.session = None;
                    if attempts > 1 {
                        return Err(Error::SessionEnded);
                    }
                    // Its only attempt found the session gone (it expired while the clerk was
                    // idle): not applied, so it is sent again under a new session.
                    op = request.op;
                }
                Ok((Outcome::OutOfOrder, _)) => {
                    self.stale = true;
                    return Err(Error::Unexpected(Outcome::OutOfOrder));
                }
                Ok((outcome, _)) => return Ok(outcome),
                Err(e) => {
                    if matches!(e, Error::Timeout { .. }) {
                        self.stale = true;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// The session for the next write: the current one, or a new one (retiring the current
    /// one if a write under it was given up on).
    fn session_until(&mut self, deadline: Option<Instant>) -> Result<u64> {
        if let Some(id) = self.session
            && !self.stale
        {
            return Ok(id);
        }
        let retire = self.session.filter(|_| self.stale);
        loop {
            self.request_seq += 1;
            let op = Op::Register { id: 0, ttl_ms: 0, retire };
            let request =
                Request { client_id: self.client_id, seq: self.request_seq, op, ordered: false };
            match self.send(&request, deadline)?.0 {
                Outcome::Registered { id } => {
                    (self.session, self.seq, self.stale) = (Some(id), 0, false);
                    return Ok(id);
                }
                // The leader drew an id already taken (odds 2^-64): ask again.
                Outcome::NoSession => {}
                other => return Err(Error::Unexpected(other)),
            }
        }
    }

    /// Sends `request` until a server answers it or `deadline` passes; returns the outcome and
    /// how many attempts it took.
    fn send(&mut self, request: &Request, deadline: Option<Instant>) -> Result<(Outcome, u64)> {
        let n = self.servers.count();
        let started = Instant::now();
        let mut attempts: u64 = 0;
        loop {
            let reply = match deadline {
                Some(deadline) => self.servers.call_until(self.leader, request, deadline),
                None => self.servers.call(self.leader, request),
            };
            attempts += 1;
            let next = (self.leader + 1) % n;
            let last = match reply {
                Some(Reply::Done(outcome)) => return Ok((outcome, attempts)),
                Some(Reply::Refused(reason)) => return Err(Error::Refused(reason)),
                Some(Reply::WrongLeader { leader_hint }) => {
                    // Follow the hint, unless it names the server just asked or none of ours.
                    self.leader = leader_hint
                        .and_then(|node| self.servers.server_for_node(node))
                        .filter(|&i| i != self.leader && i < n)
                        .unwrap_or(next);
                    Failure::WrongLeader
                }
                Some(Reply::Timeout) => {
                    self.leader = next;
                    Failure::Timeout
                }
                None => {
                    self.leader = next;
                    Failure::NoReply
                }
            };
            if attempts.is_multiple_of(n as u64) {
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                std::thread::sleep(left.map_or(ROUND_PAUSE, |left| left.min(ROUND_PAUSE)));
            }
            // Checked after the pause, so that no attempt starts with no time left.
            if let Some(deadline) = deadline {
                let now = Instant::now();
                if now >= deadline {
                    return Err(Error::Timeout { waited: now - started, attempts, last });
                }
            }
        }
    }

    /// The servers this clerk talks to (for diagnostics, such as
    /// [`RespServers::last_error`]).
    pub fn servers(&self) -> &S {
        &self.servers
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
                Op::Register { .. } => Outcome::Registered { id: 100 + *answered as u64 },
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
        // The registration asked server 0, then went where it pointed; the put followed.
        assert_eq!(calls, vec![(0, 1), (2, 1), (2, 1)]);
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
    fn try_run_gives_up_at_the_deadline_and_the_clerk_carries_on() {
        // Server 5 leads, and there is no server 5: every server refuses, without a hint.
        let mut clerk = Clerk::new(cluster(5, false, 0));
        let deadline = Instant::now() + Duration::from_millis(100);
        let result = clerk.try_run(Op::Put { key: "k".into(), value: "v".into() }, deadline);
        assert!(Instant::now() >= deadline);
        let Err(Error::Timeout { attempts, last, .. }) = result else {
            panic!("expected a timeout, got {result:?}");
        };
        assert_eq!(last, Failure::WrongLeader);
        let calls = clerk.servers.state.lock().unwrap().1.clone();
        assert_eq!(calls.len() as u64, attempts);
        assert!(attempts >= 3, "every server was tried: {calls:?}");
        // The next operation has the next sequence number; a deadline already past still
        // makes one attempt.
        let result = clerk.try_run(Op::Get { key: "k".into() }, Instant::now());
        assert!(matches!(result, Err(Error::Timeout { attempts: 1, .. })), "{result:?}");
        assert_eq!(clerk.servers.state.lock().unwrap().1.last().map(|c| c.1), Some(2));
        let message = result.unwrap_err().to_string();
        assert!(
            message.contains("1 attempts; the last: the server knew of no leader"),
            "{message}"
        );
    }

    #[test]
    fn try_scan_and_try_run_answer_like_scan_and_run() {
        let mut clerk = Clerk::new(cluster(1, true, 0));
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..1500u32 {
            let op = Op::Put { key: format!("k{i:04}").into(), value: "v".into() };
            assert_eq!(clerk.try_run(op, deadline), Ok(Outcome::Written));
        }
        let pairs = clerk.try_scan("k0100", None, 1200, deadline).unwrap();
        assert_eq!(pairs.len(), 1200);
        assert_eq!(pairs[0].0, "k0100");
        assert_eq!(pairs.last().unwrap().0, "k1299");
    }

    /// A cluster whose nodes are numbered 10, 20, 30: node 10 names node 30 as the leader.
    struct Renumbered(Scripted);

    impl Servers for Renumbered {
        fn count(&self) -> usize {
            self.0.count()
        }

        fn call(&self, server: usize, request: &Request) -> Option<Reply> {
            match self.0.call(server, request) {
                Some(Reply::WrongLeader { leader_hint: Some(i) }) => {
                    Some(Reply::WrongLeader { leader_hint: Some((i + 1) * 10) })
                }
                other => other,
            }
        }

        fn server_for_node(&self, node_id: u64) -> Option<usize> {
            [10, 20, 30].iter().position(|&id| id == node_id)
        }
    }

    #[test]
    fn a_hint_is_taken_to_a_server_through_server_for_node() {
        let mut clerk = Clerk::new(Renumbered(cluster(2, true, 0)));
        clerk.put("a", "1");
        assert_eq!(clerk.leader(), 2);
        assert_eq!(clerk.servers.0.state.lock().unwrap().1, vec![(0, 1), (2, 1), (2, 1)]);
        // With the default mapping, node 30 is no server: the clerk would try the next one.
        let plain = cluster(2, true, 0);
        assert_eq!(plain.server_for_node(2), Some(2));
        assert_eq!(plain.server_for_node(30), None);
    }

    /// One server with real sessions: registrations, retirement, and expiry on demand.
    #[derive(Default)]
    struct SessionServer {
        state: Mutex<SessionState>,
    }

    #[derive(Default)]
    struct SessionState {
        /// Live sessions: id -> last applied seq.
        live: BTreeMap<u64, u64>,
        next_id: u64,
        /// Every write that reached the server: (session, seq, applied).
        writes: Vec<(u64, u64, bool)>,
        /// Registrations seen: the session each retired.
        retired: Vec<Option<u64>>,
        /// Answer nothing to the next this many calls (the request still applies).
        lose: usize,
    }

    impl Servers for SessionServer {
        fn count(&self) -> usize {
            1
        }

        fn call(&self, _server: usize, request: &Request) -> Option<Reply> {
            let mut s = self.state.lock().unwrap();
            let outcome = match request.op {
                Op::Register { retire, .. } => {
                    if let Some(old) = retire {
                        s.live.remove(&old);
                    }
                    s.retired.push(retire);
                    s.next_id += 1;
                    let id = s.next_id;
                    s.live.insert(id, 0);
                    Outcome::Registered { id }
                }
                Op::Get { .. } => Outcome::Value(None),
                _ => {
                    let last = s.live.get(&request.client_id).copied();
                    let applied = last.is_some_and(|last| request.seq == last + 1);
                    s.writes.push((request.client_id, request.seq, applied));
                    match last {
                        None => Outcome::NoSession,
                        Some(last) if request.seq <= last => Outcome::Written,
                        Some(_) if !applied => Outcome::OutOfOrder,
                        Some(_) => {
                            s.live.insert(request.client_id, request.seq);
                            Outcome::Written
                        }
                    }
                }
            };
            if s.lose > 0 {
                s.lose -= 1;
                return None;
            }
            Some(Reply::Done(outcome))
        }
    }

    fn put(clerk: &mut Clerk<SessionServer>) {
        clerk.put("k", "v");
    }

    #[test]
    fn writes_go_under_a_registered_session_and_reads_need_none() {
        let mut clerk = Clerk::new(SessionServer::default());
        assert_eq!(clerk.get("k"), None);
        assert_eq!(clerk.session(), None, "a read registers nothing");
        put(&mut clerk);
        put(&mut clerk);
        assert_eq!(clerk.session(), Some(1));
        let s = clerk.servers.state.lock().unwrap();
        assert_eq!(s.writes, vec![(1, 1, true), (1, 2, true)]);
        assert_eq!(s.retired, vec![None]);
    }

    #[test]
    fn a_write_whose_session_expired_while_idle_is_sent_again_under_a_new_one() {
        let mut clerk = Clerk::new(SessionServer::default());
        put(&mut clerk);
        clerk.servers.state.lock().unwrap().live.clear(); // The session expires.
        put(&mut clerk);
        assert_eq!(clerk.session(), Some(2));
        let s = clerk.servers.state.lock().unwrap();
        assert_eq!(s.writes, vec![(1, 1, true), (1, 2, false), (2, 1, true)]);
    }

    #[test]
    fn a_session_that_ended_while_a_write_was_retried_is_an_error() {
        let mut clerk = Clerk::new(SessionServer::default());
        put(&mut clerk);
        {
            let mut s = clerk.servers.state.lock().unwrap();
            s.live.clear();
            s.lose = 1; // The first attempt's answer is lost: it may have applied.
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let result = clerk.try_run(Op::Put { key: "k".into(), value: "w".into() }, deadline);
        assert_eq!(result, Err(Error::SessionEnded));
        put(&mut clerk);
        assert_eq!(clerk.session(), Some(2), "the next write registered again");
    }

    #[test]
    fn after_a_write_given_up_on_the_next_session_retires_the_old_one() {
        let mut clerk = Clerk::new(SessionServer::default());
        put(&mut clerk);
        clerk.servers.state.lock().unwrap().lose = usize::MAX;
        let deadline = Instant::now() + Duration::from_millis(50);
        let result = clerk.try_run(Op::Put { key: "k".into(), value: "w".into() }, deadline);
        assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
        clerk.servers.state.lock().unwrap().lose = 0;
        put(&mut clerk);
        let s = clerk.servers.state.lock().unwrap();
        assert_eq!(s.retired, vec![None, Some(1)], "the new session retired the old one");
        assert!(!s.live.contains_key(&1));
        assert_eq!(s.writes.last(), Some(&(2, 1, true)));
    }

    #[test]
    fn only_writes_are_writes() {
        assert!(Op::Put { key: "k".into(), value: "v".into() }.is_write());
        assert!(!Op::Get { key: "k".into() }.is_write());
    }
}
