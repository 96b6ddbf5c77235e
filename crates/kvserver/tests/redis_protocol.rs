//! The Redis front end (`kvserver::redis`) in process, over real TCP: three replicas on
//! 127.0.0.1, each with a `RedisServer`, spoken to in raw RESP2 (commands written with
//! `kvclient::resp::write_command`, replies read with `kvclient::resp::Decoder`, and hand-made
//! bytes for the protocol's edge cases). Every reply is checked exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kvclient::proto::{Op, Outcome, Reply, Request};
use kvclient::resp::{self, Decoder, Limits, Value};
use kvserver::KvServer;
use kvserver::auth::{AccessControl, PasswordHash};
use kvserver::redis::{AUTH_FAILURE_DELAY, RedisConfig, RedisServer};
use labrpc::watchdog::Watchdog;
use raft::NodeId;

use testkit::tcp::{IDS, TICK, WAIT, bind, start_replica, start_replica_with};

/// One replica and its Redis front end.
struct Replica {
    id: NodeId,
    addr: SocketAddr,
    server: KvServer,
    redis: RedisServer,
}

struct Cluster {
    replicas: Vec<Replica>,
    /// Fails the test, rather than hanging CI, if it is still running at its limit.
    _watchdog: Watchdog,
}

impl Cluster {
    /// Three replicas, each serving the Redis protocol with an extra `INFO` section
    /// (`# Test` / `test_node:<id>`), on listeners bound before any starts.
    fn start() -> Cluster {
        let raft_listeners: Vec<TcpListener> = IDS.iter().map(|_| bind()).collect();
        let client_listeners: Vec<TcpListener> = IDS.iter().map(|_| bind()).collect();
        let peers: BTreeMap<NodeId, SocketAddr> =
            IDS.iter().zip(&raft_listeners).map(|(&id, l)| (id, l.local_addr().unwrap())).collect();
        let mut replicas = Vec::new();
        for ((id, raft_listener), client_listener) in
            IDS.into_iter().zip(raft_listeners).zip(client_listeners)
        {
            let server = start_replica(id, raft_listener, &peers, Duration::from_secs(1));
            let addr = client_listener.local_addr().unwrap();
            let info: kvserver::redis::InfoSource =
                Arc::new(move || format!("# Test\r\ntest_node:{id}\r\n"));
            let config = RedisConfig { info: Some(info), ..RedisConfig::default() };
            let redis =
                RedisServer::start(client_listener, server.clone(), config).expect("serve clients");
            replicas.push(Replica { id, addr, server, redis });
        }
        Cluster { replicas, _watchdog: testkit::tcp::watchdog() }
    }

    fn replica(&self, id: NodeId) -> &Replica {
        self.replicas.iter().find(|r| r.id == id).expect("a member")
    }

    /// Waits, asking each node's `INFO`, until exactly one node says it leads and every node
    /// names it as leader in the same term; returns (leader, the two followers).
    fn settled(&self) -> (NodeId, [NodeId; 2]) {
        let deadline = Instant::now() + WAIT;
        loop {
            let infos: Vec<BTreeMap<String, String>> =
                self.replicas.iter().map(|r| info(&mut Client::connect(r.addr))).collect();
            let leaders: Vec<&String> =
                infos.iter().filter(|i| i["role"] == "leader").map(|i| &i["node_id"]).collect();
            if let [leader] = leaders[..]
                && infos.iter().all(|i| &i["leader_id"] == leader && i["term"] == infos[0]["term"])
            {
                let leader: NodeId = leader.parse().unwrap();
                let followers: Vec<NodeId> = IDS.into_iter().filter(|&id| id != leader).collect();
                return (leader, [followers[0], followers[1]]);
            }
            assert!(Instant::now() < deadline, "no settled leader within {WAIT:?}: {infos:?}");
            thread::sleep(TICK);
        }
    }

    /// Each node's Raft term and whether it leads, read from the node itself (not from `INFO`).
    fn raft_states(&self) -> Vec<(u64, bool)> {
        self.replicas.iter().map(|r| r.server.node().state()).collect()
    }

    /// Runs `observe` on fresh clusters until one keeps its settled leader, in the same term on
    /// every node, from before `observe` until after it: the premise "no election happens
    /// meanwhile" is checked, not assumed, and what is retried is the set-up and the
    /// observation, never an assertion (`observe` only gathers; the caller asserts). Returns
    /// the cluster, its (leader, followers) and what `observe` saw.
    fn with_stable_leader<T>(
        mut observe: impl FnMut(&Cluster, NodeId, [NodeId; 2]) -> T,
    ) -> (Cluster, (NodeId, [NodeId; 2]), T) {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let cluster = Cluster::start();
            let roles = cluster.settled();
            let before = cluster.raft_states();
            let seen = observe(&cluster, roles.0, roles.1);
            let after = cluster.raft_states();
            let leader_index = IDS.iter().position(|&id| id == roles.0).unwrap();
            let stable = before == after
                && after[leader_index].1
                && after.iter().all(|&(term, _)| term == after[0].0);
            if stable {
                return (cluster, roles, seen);
            }
            eprintln!(
                "attempt {attempt}: an election happened during the observation ({before:?} \
                 became {after:?}); starting a fresh cluster"
            );
        }
        panic!("in {ATTEMPTS} fresh clusters an election happened during the observation")
    }

    /// A new connection to node `id`.
    fn client(&self, id: NodeId) -> Client {
        Client::connect(self.replica(id).addr)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &self.replicas {
            r.redis.stop();
            r.server.kill();
        }
    }
}

/// A raw RESP2 client.
struct Client {
    stream: TcpStream,
    /// Bytes received and not yet decoded.
    input: BytesMut,
    decoder: Decoder,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream, input: BytesMut::new(), decoder: Decoder::new(Limits::default()) }
    }

    /// Sends one command, as an array of bulk strings.
    fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        let mut out = BytesMut::new();
        resp::write_command(&mut out, args);
        self.send_raw(&out);
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// The next reply; fails if the connection closes first.
    fn reply(&mut self) -> Value {
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            if let Some((value, used)) = self.decoder.decode(&self.input).expect("a valid reply") {
                let _ = self.input.split_to(used);
                return value;
            }
            let n = self.stream.read(&mut chunk).expect("a reply in time");
            assert!(n > 0, "the connection closed; undecoded: {:?}", self.input);
            self.input.extend_from_slice(&chunk[..n]);
        }
    }

    fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Value {
        self.send(args);
        self.reply()
    }

    /// Asserts that nothing more arrives and the server has closed the connection.
    fn assert_closed(&mut self) {
        assert!(self.input.is_empty(), "unread bytes: {:?}", self.input);
        let mut buf = [0u8; 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Ok(n) => panic!("bytes after the end: {:?}", Bytes::copy_from_slice(&buf[..n])),
            Err(e) => panic!("the connection did not close: {e}"),
        }
    }
}

fn bulk(s: &str) -> Value {
    Value::bulk(Bytes::copy_from_slice(s.as_bytes()))
}

fn simple(s: &str) -> Value {
    Value::Simple(s.to_owned())
}

fn error(s: &str) -> Value {
    Value::Error(s.to_owned())
}

fn int(n: i64) -> Value {
    Value::Integer(n)
}

fn array(items: Vec<Value>) -> Value {
    Value::Array(Some(items))
}

fn bulks(items: &[&str]) -> Value {
    array(items.iter().map(|s| bulk(s)).collect())
}

/// The text of a bulk string reply.
fn text(v: Value) -> String {
    match v {
        Value::Bulk(Some(b)) => String::from_utf8(b.to_vec()).expect("UTF-8"),
        other => panic!("expected a bulk string, got {other:?}"),
    }
}

/// The keys of a `KEYS` or `SCAN` reply's key array, sorted.
fn key_set(v: Value) -> BTreeSet<String> {
    match v {
        Value::Array(Some(items)) => items.into_iter().map(text).collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

/// `INFO`'s fields, by name.
fn info(client: &mut Client) -> BTreeMap<String, String> {
    text(client.call(&["INFO"]))
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn number(info: &BTreeMap<String, String>, field: &str) -> u64 {
    info[field].parse().unwrap_or_else(|_| panic!("{field} is a number: {info:?}"))
}

/// Polls `f` until it holds, failing after [`WAIT`].
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        thread::sleep(TICK);
    }
}

/// A second Redis front end on `server`, with its own configuration.
fn extra_front_end(server: &KvServer, config: RedisConfig) -> (RedisServer, SocketAddr) {
    let listener = bind();
    let addr = listener.local_addr().unwrap();
    (RedisServer::start(listener, server.clone(), config).expect("serve clients"), addr)
}

#[test]
fn every_command_answers_as_documented() {
    let cluster = Cluster::start();
    let (leader, [follower, _]) = cluster.settled();
    let mut c = cluster.client(leader);

    assert_eq!(c.call(&["PING"]), simple("PONG"));
    assert_eq!(c.call(&["ping", "hi there"]), bulk("hi there"));
    assert_eq!(c.call(&["ECHO", "x\r\ny"]), bulk("x\r\ny"));

    // GET and SET, binary-safe; names in any case.
    assert_eq!(c.call(&["GET", "k"]), Value::NULL);
    assert_eq!(c.call(&["SET", "k", "v1"]), simple("OK"));
    assert_eq!(c.call(&["get", "k"]), bulk("v1"));
    assert_eq!(c.call(&["sEt", "k", "v2"]), simple("OK"));
    assert_eq!(c.call(&["GET", "k"]), bulk("v2"));
    let binary: &[u8] = b"\0\xff\r\n$1\r\n";
    assert_eq!(c.call(&[&b"SET"[..], b"bin", binary]), simple("OK"));
    assert_eq!(c.call(&["GET", "bin"]), Value::bulk(Bytes::from_static(binary)));
    // A value far larger than one read from the socket, sent from a follower too.
    let large: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    assert_eq!(c.call(&[&b"SET"[..], b"large", &large]), simple("OK"));
    assert_eq!(c.call(&["GET", "large"]), Value::bulk(large.clone()));
    assert_eq!(cluster.client(follower).call(&["STRLEN", "large"]), int(3 << 20));
    assert_eq!(c.call(&["DEL", "large"]), int(1));
    assert_eq!(c.call(&["SET", "empty", ""]), simple("OK"));
    assert_eq!(c.call(&["GET", "empty"]), bulk(""));
    assert_eq!(
        c.call(&["SET", "k", "v3", "EX", "10"]),
        error("ERR syntax error (SET options such as EX, PX, NX and XX are not supported)")
    );
    assert_eq!(c.call(&["GET", "k"]), bulk("v2"), "a refused SET changes nothing");

    // MSET and MGET.
    assert_eq!(
        c.call(&["MSET", "a", "1", "b"]),
        error("ERR wrong number of arguments for 'mset' command")
    );
    assert_eq!(c.call(&["GET", "a"]), Value::NULL, "a refused MSET changes nothing");
    assert_eq!(c.call(&["MSET", "a", "1", "b", "2", "a", "3"]), simple("OK"));
    assert_eq!(
        c.call(&["MGET", "a", "missing", "b", "a"]),
        array(vec![bulk("3"), Value::NULL, bulk("2"), bulk("3")])
    );

    // EXISTS counts each key named, duplicates too; DEL and UNLINK count the keys that existed.
    assert_eq!(c.call(&["EXISTS", "a", "a", "missing", "b"]), int(3));
    assert_eq!(c.call(&["EXISTS", "missing"]), int(0));
    assert_eq!(c.call(&["DEL", "a", "a", "missing"]), int(1));
    assert_eq!(c.call(&["EXISTS", "a"]), int(0));
    assert_eq!(c.call(&["DEL", "a"]), int(0));
    assert_eq!(c.call(&["UNLINK", "b", "empty"]), int(2));
    assert_eq!(c.call(&["MGET", "b", "empty"]), array(vec![Value::NULL, Value::NULL]));

    // APPEND returns the new length; STRLEN a value's length (0 for a missing key).
    assert_eq!(c.call(&["APPEND", "log", "abc"]), int(3));
    assert_eq!(c.call(&["APPEND", "log", "de"]), int(5));
    assert_eq!(c.call(&["GET", "log"]), bulk("abcde"));
    assert_eq!(c.call(&["STRLEN", "log"]), int(5));
    assert_eq!(c.call(&["STRLEN", "missing"]), int(0));

    // k, bin, log.
    assert_eq!(c.call(&["DBSIZE"]), int(3));

    assert_eq!(c.call(&["SELECT", "0"]), simple("OK"));
    assert_eq!(
        c.call(&["SELECT", "1"]),
        error("ERR DB index is out of range (this store has only database 0)")
    );

    // What clients send when they connect.
    assert_eq!(c.call(&["COMMAND"]), array(vec![]));
    assert_eq!(c.call(&["COMMAND", "DOCS"]), array(vec![]));
    assert_eq!(c.call(&["CONFIG", "GET", "save"]), array(vec![]));
    assert_eq!(c.call(&["CLIENT", "SETNAME", "tester"]), simple("OK"));
    assert_eq!(c.call(&["HELLO", "3"]), error("NOPROTO this server speaks RESP2 only"));
    assert_eq!(
        c.call(&["HELLO", "two"]),
        error("ERR Protocol version is not an integer or out of range")
    );
    assert_eq!(
        c.call(&["HELLO", "2", "AUTH", "default"]),
        error("ERR Syntax error in HELLO option 'AUTH'")
    );
    assert_hello(c.call(&["HELLO"]));
    assert_hello(c.call(&["HELLO", "2", "SETNAME", "tester"]));
    // Without a password configured, AUTH <password> is a mistake (Redis's words), while the
    // user `default` takes any password, as Redis's `default` user without one does.
    assert_eq!(
        c.call(&["AUTH", "pw"]),
        error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?"
        )
    );
    assert_eq!(c.call(&["AUTH", "default", "anything"]), simple("OK"));
    assert_eq!(c.call(&["HELLO", "2", "AUTH", "default", "anything"]).to_bytes()[0], b'*');

    assert_eq!(c.call(&["FLUSHALL"]), error("ERR unknown command 'FLUSHALL'"));
    let long = "x".repeat(300);
    assert_eq!(c.call(&[long.as_str()]), error(&format!("ERR unknown command '{}'", &long[..128])));

    // Wrong arity, command by command.
    let arity = |name: &str| error(&format!("ERR wrong number of arguments for '{name}' command"));
    let wrong: &[&[&str]] = &[
        &["PING", "a", "b"],
        &["ECHO"],
        &["ECHO", "a", "b"],
        &["GET"],
        &["GET", "a", "b"],
        &["STRLEN"],
        &["SET", "k"],
        &["APPEND", "k"],
        &["DEL"],
        &["UNLINK"],
        &["EXISTS"],
        &["MGET"],
        &["MSET"],
        &["DBSIZE", "x"],
        &["SCAN"],
        &["KEYS"],
        &["KEYS", "a", "b"],
        &["SELECT"],
        &["RAFTKV.REQUEST"],
    ];
    for args in wrong {
        assert_eq!(c.call(args), arity(&args[0].to_ascii_lowercase()), "{args:?}");
    }
    assert_eq!(c.call(&["GET", "k"]), bulk("v2"), "the connection still works");

    // QUIT: +OK, then the connection closes.
    assert_eq!(c.call(&["QUIT"]), simple("OK"));
    c.assert_closed();
    assert_eq!(cluster.client(leader).call(&["GET", "k"]), bulk("v2"));
}

#[test]
fn keys_and_scan_walk_the_store() {
    let cluster = Cluster::start();
    let (leader, [follower, _]) = cluster.settled();
    let mut c = cluster.client(leader);
    let names = ["hello", "hallo", "hxllo", "hllo", "heeello", "user:1:name", "user:2:name"];
    let mut mset = vec!["MSET".to_owned()];
    for name in names {
        mset.extend([name.to_owned(), format!("value of {name}")]);
    }
    // More keys than one page of KEYS (1000) reads.
    for i in 0..1200 {
        mset.extend([format!("bulk:{i:04}"), i.to_string()]);
    }
    assert_eq!(c.call(&mset), simple("OK"));
    assert_eq!(c.call(&["DBSIZE"]), int(1207));

    let set = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(key_set(c.call(&["KEYS", "h?llo"])), set(&["hello", "hallo", "hxllo"]));
    assert_eq!(
        key_set(c.call(&["KEYS", "h*llo"])),
        set(&["hello", "hallo", "hxllo", "hllo", "heeello"])
    );
    assert_eq!(key_set(c.call(&["KEYS", "h[ae]llo"])), set(&["hello", "hallo"]));
    assert_eq!(key_set(c.call(&["KEYS", "user:*:name"])), set(&["user:1:name", "user:2:name"]));
    assert_eq!(c.call(&["KEYS", "nothing*"]), array(vec![]));
    let all = key_set(c.call(&["KEYS", "*"]));
    assert_eq!(all.len(), 1207);
    let bulk_keys = key_set(c.call(&["KEYS", "bulk:*"]));
    assert_eq!(bulk_keys, (0..1200).map(|i| format!("bulk:{i:04}")).collect());
    // The same on a follower.
    assert_eq!(key_set(cluster.client(follower).call(&["KEYS", "*"])), all);

    // SCAN, 50 keys a step: every key exactly once, over many steps, ending at cursor 0.
    let scan = |c: &mut Client, args: &[&str]| -> (String, Value) {
        match c.call(args) {
            Value::Array(Some(mut parts)) if parts.len() == 2 => {
                let keys = parts.pop().unwrap();
                (text(parts.pop().unwrap()), keys)
            }
            other => panic!("SCAN answered {other:?}"),
        }
    };
    let mut cursor = "0".to_owned();
    let mut seen = Vec::new();
    let mut steps = 0;
    loop {
        let (next, keys) = scan(&mut c, &["SCAN", &cursor, "COUNT", "50"]);
        let Value::Array(Some(keys)) = keys else { panic!("keys are an array") };
        assert!(keys.len() <= 50);
        seen.extend(keys.into_iter().map(text));
        steps += 1;
        if next == "0" {
            break;
        }
        assert_ne!(next, cursor, "each step issues a new cursor");
        cursor = next;
    }
    assert!(steps >= 25, "{steps} steps for 1207 keys, 50 at a time");
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no key twice");
    assert_eq!(unique, all);

    // MATCH filters each step's keys: the matches come over several steps.
    let (mut cursor, mut matched, mut steps_with_matches) = ("0".to_owned(), BTreeSet::new(), 0);
    loop {
        let (next, keys) = scan(&mut c, &["scan", &cursor, "match", "bulk:*7", "count", "300"]);
        let keys = key_set(keys);
        assert!(keys.iter().all(|k| k.starts_with("bulk:") && k.ends_with('7')), "{keys:?}");
        steps_with_matches += usize::from(!keys.is_empty());
        matched.extend(keys);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert_eq!(
        matched,
        (0..1200).filter(|i| i % 10 == 7).map(|i| format!("bulk:{i:04}")).collect()
    );
    assert!(steps_with_matches >= 4, "{steps_with_matches}");
    // COUNT above the cap is capped, not refused; without COUNT a step reads 10.
    let (_, keys) = scan(&mut c, &["SCAN", "0", "COUNT", "5000"]);
    assert_eq!(key_set(keys).len(), 1000);
    let (first_cursor, keys) = scan(&mut c, &["SCAN", "0"]);
    assert_eq!(key_set(keys).len(), 10);

    // Bad cursors and options.
    let unknown = error("ERR invalid cursor (unknown here, or expired)");
    assert_eq!(c.call(&["SCAN", "987654321"]), unknown);
    assert_eq!(c.call(&["SCAN", "abc"]), error("ERR invalid cursor"));
    assert_eq!(c.call(&["SCAN", "-1"]), error("ERR invalid cursor"));
    // A cursor is known only on the node that issued it.
    assert_eq!(cluster.client(follower).call(&["SCAN", &first_cursor]), unknown);
    let not_int = error("ERR value is not an integer or out of range");
    assert_eq!(c.call(&["SCAN", "0", "COUNT", "0"]), not_int);
    assert_eq!(c.call(&["SCAN", "0", "COUNT", "-3"]), not_int);
    assert_eq!(c.call(&["SCAN", "0", "COUNT", "many"]), not_int);
    assert_eq!(c.call(&["SCAN", "0", "MATCH"]), error("ERR syntax error"));
    assert_eq!(c.call(&["SCAN", "0", "TYPE", "string"]), error("ERR syntax error"));
    // The cursor still works after all that.
    let (_, keys) = scan(&mut c, &["SCAN", &first_cursor, "COUNT", "1"]);
    assert_eq!(key_set(keys).len(), 1);
}

#[test]
fn info_reports_the_node_and_its_raft_state() {
    // What INFO says of roles, leader and term is compared with what the nodes say of
    // themselves, so the observation is made while no election happens (checked, and made
    // again on a fresh cluster if one did).
    let (cluster, (leader, followers), (mut on_leader, before, set, raw, after, infos)) =
        Cluster::with_stable_leader(|cluster, leader, followers| {
            let mut on_leader = cluster.client(leader);
            let before = info(&mut on_leader);
            let set = on_leader.call(&["SET", "k", "v"]);
            let raw = text(on_leader.call(&["INFO", "server"]));
            let after = info(&mut on_leader);
            let infos: Vec<_> = followers.map(|id| info(&mut cluster.client(id))).into();
            (on_leader, before, set, raw, after, infos)
        });
    assert_eq!(set, simple("OK"));
    let sections: Vec<&str> = raw.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(sections, ["# Server", "# Clients", "# Security", "# Raft", "# Test"], "{raw}");
    assert_eq!((&after["auth_required"][..], &after["auth_failures"][..]), ("0", "0"));
    assert_eq!(after["raftkv_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(after["tcp_port"], cluster.replica(leader).addr.port().to_string());
    assert_eq!(after["node_id"], leader.to_string());
    assert_eq!(after["role"], "leader");
    assert_eq!(after["leader_id"], leader.to_string());
    assert_eq!(after["test_node"], leader.to_string());
    assert!(number(&after, "term") >= 1);
    // The SET is committed and applied on the leader before it answers.
    assert!(number(&after, "commit_index") > number(&before, "commit_index"), "{after:?}");
    assert!(number(&after, "applied_index") > number(&before, "commit_index"), "{after:?}");
    assert!(number(&after, "last_log_index") >= number(&after, "commit_index"));
    assert!(number(&after, "raft_log_bytes") > 0);
    assert_eq!(number(&after, "snapshot_index"), 0);
    // The SET registered the connection's session, stamped with the leader's clock.
    assert_eq!(number(&before, "client_sessions"), 0);
    assert_eq!(number(&after, "client_sessions"), 1);
    assert!(number(&after, "log_clock_ms") >= number(&before, "log_clock_ms"));
    assert!(number(&after, "log_clock_ms") > 1_600_000_000_000, "{after:?}");
    // INFO, SET, INFO, INFO: counted before this INFO answers.
    assert!(
        number(&after, "total_commands_processed")
            >= number(&before, "total_commands_processed") + 3
    );

    // Followers: their own role and id, the leader's id and term, and the SET applied soon.
    let commit = number(&after, "commit_index");
    for (id, i) in followers.into_iter().zip(infos) {
        let mut c = cluster.client(id);
        assert_eq!(i["role"], "follower");
        assert_eq!(i["node_id"], id.to_string());
        assert_eq!(i["leader_id"], leader.to_string());
        assert_eq!(i["term"], after["term"]);
        assert_eq!(i["test_node"], id.to_string());
        wait_until("the follower applies the SET", || {
            number(&info(&mut c), "applied_index") >= commit
        });
    }

    // connected_clients and clients() count this node's open connections.
    let redis = &cluster.replica(leader).redis;
    wait_until("only one connection is left", || redis.clients() == 1);
    assert_eq!(info(&mut on_leader)["connected_clients"], "1");
    let mut more: Vec<Client> = (0..2).map(|_| cluster.client(leader)).collect();
    for c in &mut more {
        assert_eq!(c.call(&["PING"]), simple("PONG"));
    }
    assert_eq!(redis.clients(), 3);
    assert_eq!(info(&mut on_leader)["connected_clients"], "3");
    drop(more);
    wait_until("closed connections are no longer counted", || redis.clients() == 1);
    assert_eq!(info(&mut on_leader)["connected_clients"], "1");
}

#[test]
fn followers_forward_writes_and_serve_reads() {
    let cluster = Cluster::start();
    let (leader, [f1, f2]) = cluster.settled();
    let (mut l, mut a, mut b) = (cluster.client(leader), cluster.client(f1), cluster.client(f2));

    assert_eq!(a.call(&["SET", "k", "from follower"]), simple("OK"));
    // Reads are linearizable wherever they are served: each node sees the write at once.
    assert_eq!(a.call(&["GET", "k"]), bulk("from follower"));
    assert_eq!(l.call(&["GET", "k"]), bulk("from follower"));
    assert_eq!(b.call(&["GET", "k"]), bulk("from follower"));

    assert_eq!(b.call(&["APPEND", "k", "!"]), int(14));
    assert_eq!(a.call(&["STRLEN", "k"]), int(14));
    assert_eq!(b.call(&["MSET", "x", "1", "y", "2"]), simple("OK"));
    assert_eq!(
        a.call(&["MGET", "x", "y", "k"]),
        array(vec![bulk("1"), bulk("2"), bulk("from follower!")])
    );
    assert_eq!(a.call(&["EXISTS", "x", "y", "z"]), int(2));
    assert_eq!(b.call(&["DBSIZE"]), int(3));
    assert_eq!(a.call(&["DEL", "x", "z"]), int(1));
    assert_eq!(l.call(&["DBSIZE"]), int(2));
    assert_eq!(b.call(&["KEYS", "*"]), bulks(&["k", "y"]));
    assert_eq!(a.call(&["SCAN", "0"]), array(vec![bulk("0"), bulks(&["k", "y"])]));
    assert_eq!(l.call(&["SET", "y", "leader's"]), simple("OK"));
    assert_eq!(b.call(&["GET", "y"]), bulk("leader's"));
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let cluster = Cluster::start();
    let (leader, [follower, _]) = cluster.settled();
    for id in [leader, follower] {
        let mut c = cluster.client(id);
        // 100 SETs then 100 GETs in one write.
        let mut out = BytesMut::new();
        for i in 0..100 {
            resp::write_command(
                &mut out,
                &["SET".to_owned(), format!("p{id}:{i}"), format!("v{i}")],
            );
        }
        for i in 0..100 {
            resp::write_command(&mut out, &["GET".to_owned(), format!("p{id}:{i}")]);
        }
        c.send_raw(&out);
        for _ in 0..100 {
            assert_eq!(c.reply(), simple("OK"));
        }
        for i in 0..100 {
            assert_eq!(c.reply(), bulk(&format!("v{i}")));
        }

        // Writes and reads of one key interleaved: each read sees the write just before it.
        let key = format!("same{id}");
        let mut out = BytesMut::new();
        for i in 0..50 {
            resp::write_command(&mut out, &["SET".to_owned(), key.clone(), format!("{i}")]);
            resp::write_command(&mut out, &["GET".to_owned(), key.clone()]);
            resp::write_command(&mut out, &["APPEND".to_owned(), key.clone(), "+".to_owned()]);
            resp::write_command(&mut out, &["STRLEN".to_owned(), key.clone()]);
            resp::write_command(&mut out, &["PING".to_owned(), format!("after {i}")]);
        }
        c.send_raw(&out);
        for i in 0..50 {
            let value = i.to_string();
            assert_eq!(c.reply(), simple("OK"));
            assert_eq!(c.reply(), bulk(&value));
            assert_eq!(c.reply(), int(value.len() as i64 + 1));
            assert_eq!(c.reply(), int(value.len() as i64 + 1));
            assert_eq!(c.reply(), bulk(&format!("after {i}")));
        }
        assert_eq!(c.call(&["GET", &key]), bulk("49+"));

        // Commands after a QUIT in the same write are not run.
        let mut out = BytesMut::new();
        resp::write_command(&mut out, &["SET", "quit", "before"]);
        resp::write_command(&mut out, &["QUIT"]);
        resp::write_command(&mut out, &["SET", "quit", "after"]);
        c.send_raw(&out);
        assert_eq!(c.reply(), simple("OK"));
        assert_eq!(c.reply(), simple("OK"));
        c.assert_closed();
        assert_eq!(cluster.client(id).call(&["GET", "quit"]), bulk("before"));
    }
}

/// Writes sent one by one without waiting for replies are in flight together (more of them
/// than a connection keeps in flight at once): they take effect in the order sent, and their
/// replies come back in that order, through the leader and through a follower.
#[test]
fn writes_sent_without_waiting_take_effect_in_order() {
    let cluster = Cluster::start();
    let (leader, [follower, _]) = cluster.settled();
    for id in [leader, follower] {
        let mut c = cluster.client(id);
        let key = format!("stream{id}");
        let n = 3 * kvserver::redis::MAX_WRITES_IN_FLIGHT;
        for _ in 0..n {
            let mut out = BytesMut::new();
            resp::write_command(&mut out, &["APPEND".to_owned(), key.clone(), "x".to_owned()]);
            c.send_raw(&out);
        }
        for i in 1..=n {
            assert_eq!(c.reply(), int(i as i64), "the {i}th append's reply");
        }
        assert_eq!(c.call(&["STRLEN", &key]), int(n as i64));
    }
}

#[test]
fn inline_commands_work() {
    let cluster = Cluster::start();
    let (leader, [follower, _]) = cluster.settled();
    let mut c = cluster.client(leader);
    c.send_raw(b"PING\r\n");
    assert_eq!(c.reply(), simple("PONG"));
    c.send_raw(b"set a b\r\n");
    assert_eq!(c.reply(), simple("OK"));
    // A bare \n ends a line too; blank lines are skipped; quotes group words.
    c.send_raw(b"get a\n\r\n\r\n  \r\nECHO \"two words\" \r\nset 'x y' \"1\\t2\"\r\n");
    assert_eq!(c.reply(), bulk("b"));
    assert_eq!(c.reply(), bulk("two words"));
    assert_eq!(c.reply(), simple("OK"));
    // Inline and array commands mix on one connection.
    c.send(&["GET", "x y"]);
    c.send_raw(b"EXISTS a nothing 'x y'\r\n");
    assert_eq!(c.reply(), bulk("1\t2"));
    assert_eq!(c.reply(), int(2));
    // A command split over several writes is answered once it is whole.
    c.send_raw(b"APP");
    c.send_raw(b"END a cd");
    c.send_raw(b"\r");
    c.send_raw(b"\n");
    assert_eq!(c.reply(), int(3));
    let mut f = cluster.client(follower);
    f.send_raw(b"get a\r\n");
    assert_eq!(f.reply(), bulk("bcd"));
}

#[test]
fn a_protocol_error_closes_only_that_connection() {
    let cluster = Cluster::start();
    let (leader, _) = cluster.settled();
    let mut bystander = cluster.client(leader);
    assert_eq!(bystander.call(&["SET", "k", "v"]), simple("OK"));
    let cases: &[(&[u8], &str)] = &[
        (b"*x\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*99999999999\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$x\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$999999999999\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*2\r\n$3\r\nGET\r\n:1\r\n", "ERR Protocol error: expected '$', got ':'"),
        (b"*1\r\n$4\r\nPINGxx", "ERR Protocol error: expected '\\r\\n'"),
        (b"ECHO \"unclosed\r\n", "ERR Protocol error: unbalanced quotes in request"),
    ];
    for &(garbage, reply) in cases {
        let mut c = cluster.client(leader);
        c.send_raw(garbage);
        assert_eq!(c.reply(), error(reply), "{:?}", Bytes::from_static(garbage));
        c.assert_closed();
    }
    // Commands before the bad frame in the same write are answered first.
    let mut c = cluster.client(leader);
    c.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv2\r\nPING\r\n*1\r\n$-5\r\n");
    assert_eq!(c.reply(), simple("OK"));
    assert_eq!(c.reply(), simple("PONG"));
    assert_eq!(c.reply(), error("ERR Protocol error: invalid bulk length"));
    c.assert_closed();

    // After QUIT nothing more is answered, not even a protocol error.
    let mut c = cluster.client(leader);
    c.send_raw(b"QUIT\r\n*x\r\n");
    assert_eq!(c.reply(), simple("OK"));
    c.assert_closed();

    // The other connection, and new ones, carry on.
    assert_eq!(bystander.call(&["GET", "k"]), bulk("v2"));
    assert_eq!(cluster.client(leader).call(&["GET", "k"]), bulk("v2"));
    let redis = &cluster.replica(leader).redis;
    wait_until("closed connections are no longer counted", || redis.clients() == 1);
}

#[test]
fn query_buffer_and_client_limits() {
    let cluster = Cluster::start();
    let (leader, _) = cluster.settled();
    let server = &cluster.replica(leader).server;

    // A connection whose unparsed input passes max_query_buffer is closed.
    let config = RedisConfig { max_query_buffer: 1024, ..RedisConfig::default() };
    let (small, addr) = extra_front_end(server, config);
    let mut c = Client::connect(addr);
    let mut big = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n".to_vec();
    big.resize(big.len() + 2000, b'v');
    c.send_raw(&big);
    assert_eq!(c.reply(), error("ERR query buffer limit reached; closing the connection"));
    c.assert_closed();
    // So is one sending a line that never ends.
    let mut c = Client::connect(addr);
    c.send_raw(&[b'a'; 2000]);
    assert_eq!(c.reply(), error("ERR query buffer limit reached; closing the connection"));
    c.assert_closed();
    // The limit is on unparsed input: a pipeline of small commands, longer in all, is fine.
    let mut c = Client::connect(addr);
    let mut out = BytesMut::new();
    for i in 0..200 {
        resp::write_command(&mut out, &["ECHO".to_owned(), format!("{i:04}")]);
    }
    assert!(out.len() > 4 * 1024);
    c.send_raw(&out);
    for i in 0..200 {
        assert_eq!(c.reply(), bulk(&format!("{i:04}")));
    }
    assert_eq!(c.call(&["GET", "k"]), Value::NULL, "the oversized SET never ran");
    drop(c);
    small.stop();

    // With max_clients 2, a third connection is refused with an error and closed.
    let config = RedisConfig { max_clients: 2, ..RedisConfig::default() };
    let (two, addr) = extra_front_end(server, config);
    let mut a = Client::connect(addr);
    let mut b = Client::connect(addr);
    assert_eq!(a.call(&["PING"]), simple("PONG"));
    assert_eq!(b.call(&["PING"]), simple("PONG"));
    assert_eq!(two.clients(), 2);
    let mut refused = Client::connect(addr);
    assert_eq!(refused.reply(), error("ERR max number of clients reached"));
    refused.assert_closed();
    assert_eq!(a.call(&["ECHO", "still here"]), bulk("still here"));
    assert_eq!(two.clients(), 2);
    // Once one leaves, a new connection is served.
    drop(a);
    wait_until("the closed connection is no longer counted", || two.clients() == 1);
    let mut c = Client::connect(addr);
    assert_eq!(c.call(&["PING"]), simple("PONG"));
    assert_eq!(b.call(&["PING"]), simple("PONG"));
    two.stop();
}

/// Asserts that `reply` is `HELLO`'s for RESP2: the server's description as a flat array of
/// names and values, in Redis's order.
fn assert_hello(reply: Value) {
    let Value::Array(Some(fields)) = reply else { panic!("HELLO answered {reply:?}") };
    assert_eq!(fields.len(), 14, "{fields:?}");
    assert_eq!(
        fields[..6],
        [
            bulk("server"),
            bulk("raftkv"),
            bulk("version"),
            bulk(env!("CARGO_PKG_VERSION")),
            bulk("proto"),
            int(2)
        ]
    );
    assert_eq!(fields[6], bulk("id"));
    assert_eq!(
        fields[8..],
        [bulk("mode"), bulk("standalone"), bulk("role"), bulk("master")]
            .into_iter()
            .chain([bulk("modules"), array(vec![])])
            .collect::<Vec<_>>()[..]
    );
}

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Issue 15: with a password set, a connection runs nothing but AUTH, HELLO, PING and QUIT
/// until it authenticates; a wrong password is answered WRONGPASS after a delay that slows
/// only that connection, and counted in INFO.
#[test]
fn a_password_is_required_until_the_connection_authenticates() {
    let cluster = Cluster::start();
    let (leader, _) = cluster.settled();
    let access = AccessControl::with_password(b"s3cret");
    let config = RedisConfig { access: Some(Arc::new(access)), ..RedisConfig::default() };
    let (_redis, addr) = extra_front_end(&cluster.replica(leader).server, config);
    let (noauth, wrongpass) = (error(NOAUTH), error(WRONGPASS));

    let mut c = Client::connect(addr);
    assert_eq!(c.call(&["PING"]), simple("PONG"), "health checks need no password");
    for args in [
        &["GET", "k"][..],
        &["SET", "k", "v"],
        &["MSET", "k", "v"],
        &["DEL", "k"],
        &["INFO"],
        &["SCAN", "0"],
        &["KEYS", "*"],
        &["RAFTKV.REQUEST", "x"],
        &["CLIENT", "SETNAME", "x"],
        &["FLUSHALL"],
    ] {
        assert_eq!(c.call(args), noauth, "{args:?}");
    }
    assert_eq!(
        c.call(&["HELLO"]),
        error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client \
             and select the RESP protocol version at the same time"
        )
    );

    // Wrong passwords and unknown users: WRONGPASS, after the delay; still not authenticated.
    let started = Instant::now();
    assert_eq!(c.call(&["AUTH", "wrong"]), wrongpass);
    assert!(started.elapsed() >= AUTH_FAILURE_DELAY, "answered after {:?}", started.elapsed());
    assert_eq!(c.call(&["AUTH", "default", "wrong"]), wrongpass);
    assert_eq!(c.call(&["AUTH", "nobody", "s3cret"]), wrongpass);
    assert_eq!(c.call(&["AUTH", "a", "b", "c"]), error("ERR syntax error"));
    assert_eq!(c.call(&["AUTH"]), error("ERR wrong number of arguments for 'auth' command"));
    assert_eq!(c.call(&["GET", "k"]), noauth);

    // The right password: everything works.
    assert_eq!(c.call(&["AUTH", "s3cret"]), simple("OK"));
    assert_eq!(c.call(&["SET", "k", "v"]), simple("OK"));
    assert_eq!(c.call(&["GET", "k"]), bulk("v"));
    let i = info(&mut c);
    assert_eq!((number(&i, "auth_required"), number(&i, "auth_failures")), (1, 3));
    // A failed AUTH later leaves the connection as it was, and counts.
    assert_eq!(c.call(&["AUTH", "wrong"]), wrongpass);
    assert_eq!(c.call(&["GET", "k"]), bulk("v"));

    // Pipelined: a command before the AUTH is refused, the ones after it run.
    let mut p = Client::connect(addr);
    let mut out = BytesMut::new();
    for args in [&["SET", "k", "early"][..], &["AUTH", "s3cret"], &["SET", "k", "late"]] {
        resp::write_command(&mut out, args);
    }
    p.send_raw(&out);
    assert_eq!([p.reply(), p.reply(), p.reply()], [noauth.clone(), simple("OK"), simple("OK")]);
    assert_eq!(p.call(&["GET", "k"]), bulk("late"));

    // AUTH default <password>, and HELLO 2 AUTH, on other connections. HELLO 3 is refused
    // before its AUTH is tried (as Redis refuses a version it does not speak).
    let mut d = Client::connect(addr);
    assert_eq!(d.call(&["AUTH", "default", "s3cret"]), simple("OK"));
    assert_eq!(d.call(&["GET", "k"]), bulk("late"));
    let mut h = Client::connect(addr);
    assert_eq!(
        h.call(&["HELLO", "3", "AUTH", "default", "s3cret"]),
        error("NOPROTO this server speaks RESP2 only")
    );
    assert_eq!(h.call(&["GET", "k"]), noauth);
    assert_eq!(h.call(&["HELLO", "2", "AUTH", "default", "wrong"]), wrongpass);
    assert_eq!(h.call(&["GET", "k"]), noauth);
    assert_hello(h.call(&["HELLO", "2", "AUTH", "default", "s3cret", "SETNAME", "me"]));
    assert_eq!(h.call(&["GET", "k"]), bulk("late"));

    // The delay holds up only the guessing connection: 20 wrong passwords in one pipeline
    // take 20 delays to answer, while another connection is answered meanwhile.
    const GUESSES: usize = 20;
    let mut g = Client::connect(addr);
    let mut out = BytesMut::new();
    for _ in 0..GUESSES {
        resp::write_command(&mut out, &["AUTH", "guess"]);
    }
    let started = Instant::now();
    g.send_raw(&out);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(d.call(&["GET", "k"]), bulk("late"));
    let other = started.elapsed();
    for _ in 0..GUESSES {
        assert_eq!(g.reply(), wrongpass);
    }
    let guessing = started.elapsed();
    assert!(guessing >= AUTH_FAILURE_DELAY * GUESSES as u32, "{guessing:?}");
    assert!(other < guessing / 2, "the other connection waited {other:?} of {guessing:?}");
    assert_eq!(number(&info(&mut d), "auth_failures"), 3 + 1 + 1 + GUESSES as u64);

    // QUIT needs no password.
    let mut q = Client::connect(addr);
    assert_eq!(q.call(&["QUIT"]), simple("OK"));
    q.assert_closed();
}

/// Issue 15: a read-only user reads (through a follower too) but every write is refused with
/// NOPERM and writes nothing: the Redis commands that write, and a RAFTKV.REQUEST carrying a
/// write or a session registration.
#[test]
fn a_read_only_user_reads_but_cannot_write() {
    let cluster = Cluster::start();
    let (leader, [follower, _]) = cluster.settled();
    let mut access = AccessControl::with_password(b"admin-pw");
    let (reader, writer) = (PasswordHash::new(b"r-pw"), PasswordHash::new(b"w-pw"));
    access.add_users_file(&format!("user reader ro {reader}\nuser writer rw {writer}\n")).unwrap();
    let config = RedisConfig { access: Some(Arc::new(access)), ..RedisConfig::default() };
    let (_on_leader, leader_addr) =
        extra_front_end(&cluster.replica(leader).server, config.clone());
    let (_on_follower, addr) = extra_front_end(&cluster.replica(follower).server, config);

    let mut w = Client::connect(leader_addr);
    assert_eq!(w.call(&["AUTH", "writer", "w-pw"]), simple("OK"));
    assert_eq!(w.call(&["MSET", "a", "1", "b", "2"]), simple("OK"));

    let mut r = Client::connect(addr);
    assert_eq!(r.call(&["AUTH", "reader", "w-pw"]), error(WRONGPASS));
    assert_eq!(r.call(&["AUTH", "reader", "r-pw"]), simple("OK"));
    // Reads.
    assert_eq!(r.call(&["GET", "a"]), bulk("1"));
    assert_eq!(r.call(&["MGET", "a", "b", "c"]), array(vec![bulk("1"), bulk("2"), Value::NULL]));
    assert_eq!(r.call(&["EXISTS", "a", "c"]), int(1));
    assert_eq!(r.call(&["STRLEN", "b"]), int(1));
    assert_eq!(r.call(&["DBSIZE"]), int(2));
    assert_eq!(key_set(r.call(&["KEYS", "*"])), ["a", "b"].map(String::from).into());
    assert_eq!(r.call(&["SCAN", "0"]), array(vec![bulk("0"), bulks(&["a", "b"])]));
    assert_eq!(info(&mut r)["role"], "follower");
    // Writes: NOPERM, Redis's words, naming the user and the command.
    let noperm = |cmd: &str| {
        error(&format!("NOPERM User reader has no permissions to run the '{cmd}' command"))
    };
    assert_eq!(r.call(&["SET", "a", "x"]), noperm("set"));
    assert_eq!(r.call(&["set", "c", "x"]), noperm("set"));
    assert_eq!(r.call(&["MSET", "a", "x", "c", "y"]), noperm("mset"));
    assert_eq!(r.call(&["DEL", "a"]), noperm("del"));
    assert_eq!(r.call(&["UNLINK", "a", "b"]), noperm("unlink"));
    assert_eq!(r.call(&["APPEND", "a", "x"]), noperm("append"));
    // A wrong arity is reported first, as Redis does.
    assert_eq!(r.call(&["SET", "a"]), error("ERR wrong number of arguments for 'set' command"));
    // Pipelined among reads.
    let mut out = BytesMut::new();
    for args in [&["GET", "a"][..], &["SET", "a", "z"], &["GET", "a"]] {
        resp::write_command(&mut out, args);
    }
    r.send_raw(&out);
    assert_eq!([r.reply(), r.reply(), r.reply()], [bulk("1"), noperm("set"), bulk("1")]);
    // Our clerk's requests: reads pass, writes and session registrations do not.
    let get = Request { client_id: 5, seq: 1, op: Op::Get { key: "a".into() }, ordered: false };
    assert_eq!(clerk_request(&mut r, &get), Reply::Done(Outcome::Value(Some("1".into()))));
    let mut raftkv = |op: Op| {
        let request = Request { client_id: 5, seq: 2, op, ordered: false };
        clerk_request_raw(&mut r, &request)
    };
    assert_eq!(raftkv(Op::Put { key: "a".into(), value: "x".into() }), noperm("raftkv.request"));
    let register = Op::Register { id: 0, ttl_ms: 0, retire: None };
    assert_eq!(raftkv(register), noperm("raftkv.request"));
    assert_eq!(raftkv(Op::DeleteMany { keys: vec!["a".into()] }), noperm("raftkv.request"));
    assert_eq!(raftkv(Op::EndSession { id: 1 }), noperm("raftkv.request"));

    // Nothing was written, and the reader never registered a session.
    assert_eq!(w.call(&["MGET", "a", "b", "c"]), array(vec![bulk("1"), bulk("2"), Value::NULL]));
    assert_eq!(w.call(&["DBSIZE"]), int(2));
    assert_eq!(number(&info(&mut w), "client_sessions"), 1, "the writer's only");
    // The same connection may authenticate as another user, and then write.
    assert_eq!(r.call(&["AUTH", "writer", "w-pw"]), simple("OK"));
    assert_eq!(r.call(&["SET", "a", "9"]), simple("OK"));
    // The --requirepass user, `default`, reads and writes.
    let mut admin = Client::connect(addr);
    assert_eq!(admin.call(&["AUTH", "admin-pw"]), simple("OK"));
    assert_eq!(admin.call(&["DEL", "b"]), int(1));
    assert_eq!(admin.call(&["MGET", "a", "b"]), array(vec![bulk("9"), Value::NULL]));
}

/// Sends `RAFTKV.REQUEST` with `request` and returns the raw reply (an error, for example).
fn clerk_request_raw(c: &mut Client, request: &Request) -> Value {
    let payload = postcard::to_allocvec(request).expect("requests encode");
    c.call(&[&b"RAFTKV.REQUEST"[..], &payload])
}

/// Sends `RAFTKV.REQUEST` with `request` and decodes the `Reply`.
fn clerk_request(c: &mut Client, request: &Request) -> Reply {
    let answer = clerk_request_raw(c, request);
    let Value::Bulk(Some(bytes)) = answer else { panic!("RAFTKV.REQUEST answered {answer:?}") };
    postcard::from_bytes(&bytes).expect("a postcard-encoded Reply")
}

#[test]
fn raftkv_request_carries_clerk_requests() {
    let cluster = Cluster::start();
    let (leader, [follower, _]) = cluster.settled();
    let mut c = cluster.client(leader);
    let malformed = |v: Value| match v {
        Value::Error(e) => assert!(e.starts_with("ERR malformed RAFTKV.REQUEST: "), "{e}"),
        other => panic!("a malformed request answered {other:?}"),
    };
    malformed(c.call(&["RAFTKV.REQUEST", "garbage"]));
    malformed(c.call(&["raftkv.request", ""]));
    assert_eq!(c.call(&["PING"]), simple("PONG"), "the connection carries on");

    let session = register(&mut c, None);
    let put = |seq, value: &'static str| Request {
        client_id: session,
        seq,
        op: Op::Put { key: Bytes::from_static(b"rk"), value: Bytes::from_static(value.as_bytes()) },
        ordered: false,
    };
    assert_eq!(clerk_request(&mut c, &put(1, "first")), Reply::Done(Outcome::Written));
    assert_eq!(c.call(&["GET", "rk"]), bulk("first"));
    // The request keeps the clerk's session and sequence number: a repeat is not applied.
    assert_eq!(clerk_request(&mut c, &put(1, "again")), Reply::Done(Outcome::Written));
    assert_eq!(c.call(&["GET", "rk"]), bulk("first"));

    // Through a follower: its write is forwarded, its read served.
    let mut f = cluster.client(follower);
    let append = Request {
        client_id: session,
        seq: 2,
        op: Op::Append { key: "rk".into(), value: "+".into() },
        ordered: false,
    };
    assert_eq!(clerk_request(&mut f, &append), Reply::Done(Outcome::Length(6)));
    let get = Request { client_id: 78, seq: 1, op: Op::Get { key: "rk".into() }, ordered: false };
    assert_eq!(clerk_request(&mut f, &get), Reply::Done(Outcome::Value(Some("first+".into()))));
    let scan = Request {
        client_id: 78,
        seq: 2,
        op: Op::Scan { start: Bytes::new(), end: None, limit: 10 },
        ordered: false,
    };
    let page = Outcome::Page { pairs: vec![("rk".into(), "first+".into())], next: None };
    assert_eq!(clerk_request(&mut c, &scan), Reply::Done(page));
}

/// Registers a session with `RAFTKV.REQUEST` (retiring `retire`) and returns its id.
fn register(c: &mut Client, retire: Option<u64>) -> u64 {
    let op = Op::Register { id: 0, ttl_ms: 0, retire };
    let request = Request { client_id: rand::random(), seq: 0, op, ordered: false };
    match clerk_request(c, &request) {
        Reply::Done(Outcome::Registered { id }) => id,
        other => panic!("a registration answered {other:?}"),
    }
}

/// Issue 14: `RAFTKV.REQUEST` took any client id, so a client could write as another, or jump
/// another's sequence number to `u64::MAX` and turn its later writes into no-ops. Now writes
/// need a session the leader handed out (a random id), registering cannot choose the id, and
/// a number past the session's next is refused; the victim carries on unharmed.
#[test]
fn raftkv_request_cannot_hijack_another_clients_session() {
    let cluster = Cluster::start();
    let (leader, [follower, _]) = cluster.settled();
    let mut victim = cluster.client(leader);
    let mut attacker = cluster.client(follower);
    let put = |id: u64, seq: u64, value: &'static str| Request {
        client_id: id,
        seq,
        op: Op::Put { key: "hk".into(), value: Bytes::from_static(value.as_bytes()) },
        ordered: true,
    };
    let id = register(&mut victim, None);
    assert_eq!(clerk_request(&mut victim, &put(id, 1, "mine")), Reply::Done(Outcome::Written));

    // An id nobody was given (the old clerk's way: pick one at random) writes nothing.
    let made_up = put(id.wrapping_add(1), 1, "forged");
    assert_eq!(clerk_request(&mut attacker, &made_up), Reply::Done(Outcome::NoSession));
    // Asking to register under the victim's id gets a fresh id instead.
    let op = Op::Register { id, ttl_ms: u64::MAX, retire: None };
    let chosen = Request { client_id: 5, seq: 0, op, ordered: false };
    let Reply::Done(Outcome::Registered { id: given }) = clerk_request(&mut attacker, &chosen)
    else {
        panic!("registration failed");
    };
    assert_ne!(given, id, "the leader chose the id");
    // The jump to u64::MAX, with the victim's id (ordered or not), is refused.
    let jump = put(id, u64::MAX, "jumped");
    assert_eq!(clerk_request(&mut attacker, &jump), Reply::Done(Outcome::OutOfOrder));
    let unordered = Request { ordered: false, ..jump };
    assert_eq!(clerk_request(&mut attacker, &unordered), Reply::Done(Outcome::OutOfOrder));
    assert_eq!(victim.call(&["GET", "hk"]), bulk("mine"));
    // The victim's next write still applies.
    assert_eq!(
        clerk_request(&mut victim, &put(id, 2, "still mine")),
        Reply::Done(Outcome::Written)
    );
    assert_eq!(attacker.call(&["GET", "hk"]), bulk("still mine"));
}

#[test]
fn stop_closes_connections_and_the_listener() {
    let cluster = Cluster::start();
    let (leader, _) = cluster.settled();
    let (extra, addr) = extra_front_end(&cluster.replica(leader).server, RedisConfig::default());
    let mut a = Client::connect(addr);
    let mut b = Client::connect(addr);
    assert_eq!(a.call(&["SET", "k", "v"]), simple("OK"));
    assert_eq!(b.call(&["PING"]), simple("PONG"));
    assert_eq!(extra.clients(), 2);

    extra.stop();
    a.assert_closed();
    b.assert_closed();
    wait_until("stopped connections are no longer counted", || extra.clients() == 0);
    assert_refused(addr);
    // The replica itself carries on, through its own front end.
    assert_eq!(cluster.client(leader).call(&["GET", "k"]), bulk("v"));
}

/// Asserts that nothing serves `addr`: a connection is refused, or closed at once.
fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect(addr) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
        Ok(stream) => {
            stream.set_read_timeout(Some(WAIT)).unwrap();
            Client { stream, input: BytesMut::new(), decoder: Decoder::new(Limits::default()) }
                .assert_closed();
        }
    }
}

#[test]
fn dropping_the_last_handle_stops_the_server() {
    let cluster = Cluster::start();
    let (leader, _) = cluster.settled();
    let (extra, addr) = extra_front_end(&cluster.replica(leader).server, RedisConfig::default());
    let mut a = Client::connect(addr);
    assert_eq!(a.call(&["PING"]), simple("PONG"));
    let clone = extra.clone();
    drop(extra);
    assert_eq!(a.call(&["PING"]), simple("PONG"), "a clone keeps the server running");
    assert_eq!(Client::connect(addr).call(&["PING"]), simple("PONG"));
    drop(clone);
    a.assert_closed();
    assert_refused(addr);
}

#[test]
fn without_a_leader_commands_fail_with_tryagain() {
    let _watchdog = testkit::tcp::watchdog();
    // Node 1 of three whose peers never answer: it never learns of a leader.
    let raft_listener = bind();
    let silent: Vec<TcpListener> = (0..2).map(|_| bind()).collect();
    let peers: BTreeMap<NodeId, SocketAddr> = [
        (1, raft_listener.local_addr().unwrap()),
        (2, silent[0].local_addr().unwrap()),
        (3, silent[1].local_addr().unwrap()),
    ]
    .into();
    let server = start_replica(1, raft_listener, &peers, Duration::from_millis(200));
    let config = RedisConfig { retry_for: Duration::from_millis(300), ..RedisConfig::default() };
    let (redis, addr) = extra_front_end(&server, config);
    let mut c = Client::connect(addr);
    let tryagain =
        error("TRYAGAIN no leader answered within 300ms; a write may or may not have taken effect");
    let started = Instant::now();
    assert_eq!(
        c.call(&["SET", "k", "v"]),
        error(
            "TRYAGAIN could not start a client session: no leader answered within 300ms; the \
             write was not applied"
        )
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(c.call(&["GET", "k"]), tryagain);
    assert_eq!(c.call(&["SCAN", "0"]), tryagain);
    assert_eq!(c.call(&["KEYS", "*"]), tryagain);
    // What needs no leader is still answered.
    assert_eq!(c.call(&["PING"]), simple("PONG"));
    let i = info(&mut c);
    assert_eq!(i["leader_id"], "none");
    assert_ne!(i["role"], "leader");
    redis.stop();
    server.kill();
}

/// `MSET a <33 MiB> b <33 MiB>`, past the default `max_request_bytes` (8 MiB), sent to the
/// leader and to a follower between two small commands: its error comes back in its place
/// among the replies, before the client has even finished sending it (so the server decided
/// from the declared lengths, without buffering the values), the rest of its bytes are
/// dropped, and the same connection and others carry on. Nothing of it is written.
#[test]
fn an_oversized_request_is_refused_at_once_on_any_node() {
    let cluster = Cluster::start();
    let (leader, [follower, _]) = cluster.settled();
    let value = vec![b'v'; 33 << 20];
    let mut mset = BytesMut::new();
    resp::write_command(&mut mset, &[&b"MSET"[..], b"a", &value, b"b", &value]);
    // Where the first value's data starts: after `*5`, `$4 MSET`, `$1 a` and `$34603008`.
    let header = "*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$34603008\r\n".len();
    assert_eq!(&mset[..header], b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$34603008\r\n");
    let refusal = error(&format!(
        "ERR request of at least {} bytes exceeds --max-request-bytes (8388608)",
        4 + 1 + (33 << 20)
    ));
    for id in [leader, follower] {
        let mut c = cluster.client(id);
        let mut first = BytesMut::new();
        resp::write_command(&mut first, &["SET", "before", "1"]);
        first.extend_from_slice(&mset[..header + (1 << 20)]);
        c.send_raw(&first);
        assert_eq!(c.reply(), simple("OK"));
        // Only 1 MiB of the first value has been sent: the answer is already there.
        let started = Instant::now();
        assert_eq!(c.reply(), refusal);
        let mut rest = BytesMut::from(&mset[header + (1 << 20)..]);
        resp::write_command(&mut rest, &["SET", "after", "2"]);
        resp::write_command(&mut rest, &["MGET", "a", "b", "before", "after"]);
        c.send_raw(&rest);
        assert_eq!(c.reply(), simple("OK"));
        assert_eq!(c.reply(), array(vec![Value::NULL, Value::NULL, bulk("1"), bulk("2")]));
        eprintln!("node {id}: 65 MiB dropped and two commands answered in {:?}", started.elapsed());
        // Again, on the same connection, sent whole.
        c.send_raw(&mset);
        assert_eq!(c.reply(), refusal);
        assert_eq!(c.call(&["GET", "after"]), bulk("2"));
        // Another connection, meanwhile and after.
        let mut other = cluster.client(id);
        assert_eq!(other.call(&["SET", "other", "x"]), simple("OK"));
        assert_eq!(other.call(&["GET", "other"]), bulk("x"));
    }
    // A command exactly at the limit is served.
    let mut c = cluster.client(leader);
    let exact = vec![b'x'; (8 << 20) - 3 - 5];
    assert_eq!(c.call(&[&b"SET"[..], b"exact", &exact]), simple("OK"));
    assert_eq!(c.call(&["STRLEN", "exact"]), int((8 << 20) - 8));
}

/// A client that pipelines commands and never reads its replies: once more than
/// `max_reply_buffer` bytes of its replies wait to be sent, the server stops reading from it,
/// so what it holds for that client stays bounded while other clients are served; when the
/// client reads, every reply comes, in order.
#[test]
fn a_client_that_never_reads_its_replies_is_paused_not_buffered() {
    let cluster = Cluster::start();
    let (leader, _) = cluster.settled();
    let limit = 1 << 20;
    let config = RedisConfig { max_reply_buffer: limit, ..RedisConfig::default() };
    let (redis, addr) = extra_front_end(&cluster.replica(leader).server, config);
    let mut c = Client::connect(addr);
    // 2000 replies of 64 KiB: 125 MiB in all, far past what the socket buffers take.
    let n = 2000;
    let payload = |i: usize| format!("{i:06}{}", "p".repeat((64 << 10) - 6));
    let mut sender = c.stream.try_clone().unwrap();
    let writer = thread::spawn(move || {
        for i in 0..n {
            let mut out = BytesMut::new();
            resp::write_command(&mut out, &["ECHO".to_owned(), payload(i)]);
            sender.write_all(&out).expect("send");
        }
    });
    wait_until("the connection is paused", || redis.paused_clients() == 1);
    let queued = redis.queued_reply_bytes();
    assert!(queued <= limit + (128 << 10), "{queued} bytes of replies queued");
    assert!(!writer.is_finished(), "every command was read: nothing held the client back");
    // Others are served meanwhile.
    let mut other = Client::connect(addr);
    assert_eq!(other.call(&["SET", "k", "v"]), simple("OK"));
    assert_eq!(other.call(&["GET", "k"]), bulk("v"));
    assert_eq!(info(&mut other)["paused_clients"], "1");
    assert_eq!(redis.paused_clients(), 1);
    let queued = redis.queued_reply_bytes();
    assert!(queued <= limit + (128 << 10), "{queued} bytes of replies queued");
    // The client reads: everything comes, in order.
    for i in 0..n {
        assert_eq!(c.reply(), bulk(&payload(i)), "reply {i}");
    }
    writer.join().unwrap();
    assert_eq!(c.call(&["PING"]), simple("PONG"));
    assert_eq!(redis.paused_clients(), 0);
    wait_until("every reply is sent", || redis.queued_reply_bytes() == 0);
    redis.stop();
}

/// With `idle_timeout`, a connection that sends nothing (or half a command) is closed; one
/// that keeps sending is not.
#[test]
fn idle_connections_are_closed_after_the_timeout() {
    let cluster = Cluster::start();
    let (leader, _) = cluster.settled();
    let timeout = Duration::from_millis(500);
    let config = RedisConfig { idle_timeout: Some(timeout), ..RedisConfig::default() };
    let (redis, addr) = extra_front_end(&cluster.replica(leader).server, config);
    // Taken before either connection's last input, so no earlier than their idle time began.
    let started = Instant::now();
    let mut idle = Client::connect(addr);
    assert_eq!(idle.call(&["PING"]), simple("PONG"));
    let mut half = Client::connect(addr);
    half.send_raw(b"*2\r\n$3\r\nGET\r\n$1");
    idle.assert_closed();
    half.assert_closed();
    assert!(started.elapsed() >= timeout, "closed after {:?}", started.elapsed());
    wait_until("closed connections are no longer counted", || redis.clients() == 0);
    // A connection is idle only while it sends nothing: one that sends a PING every tenth of
    // the timeout lives through three timeouts. The premise, that the test sends each PING
    // well within the timeout of the one before, is checked rather than assumed: if this
    // thread was held up for half the timeout (a loaded machine), the run starts again on a
    // new connection; the assertion is never retried.
    let deadline = Instant::now() + WAIT;
    let pings = 'attempt: loop {
        let mut busy = Client::connect(addr);
        let began = Instant::now();
        let mut sent = began;
        let mut pings = 0;
        while began.elapsed() < 3 * timeout {
            thread::sleep(timeout / 10);
            if sent.elapsed() >= timeout / 2 {
                eprintln!("held up for {:?} between two PINGs: starting again", sent.elapsed());
                assert!(Instant::now() < deadline, "never sent PINGs steadily within {WAIT:?}");
                continue 'attempt;
            }
            sent = Instant::now();
            assert_eq!(busy.call(&["PING"]), simple("PONG"), "PING {pings} on a busy connection");
            pings += 1;
        }
        break pings;
    };
    assert!(pings >= 10, "only {pings} PINGs in three timeouts");
    redis.stop();
}

/// A single-node cluster whose sessions expire after `ttl`, with a Redis front end.
fn single_node_with_ttl(ttl: Duration) -> (KvServer, RedisServer, SocketAddr) {
    let listener = bind();
    let peers: BTreeMap<NodeId, SocketAddr> = [(1, listener.local_addr().unwrap())].into();
    let config = kvserver::ServerConfig { session_ttl: ttl, ..kvserver::ServerConfig::default() };
    let server = start_replica_with(1, listener, &peers, config);
    let (redis, addr) = extra_front_end(&server, RedisConfig::default());
    wait_until("the single node leads", || server.node().state().1);
    (server, redis, addr)
}

/// A session idle past the TTL (on the leader-stamped log clock) is evicted: its writes are
/// refused with `NoSession` and never applied, retries of its last write included. A Redis
/// connection idle that long starts a new session by itself and its writes carry on.
#[test]
fn an_expired_session_is_refused_and_a_redis_connection_starts_afresh() {
    let _watchdog = testkit::tcp::watchdog();
    // The set-up's premise: the session is used before it expires, that is, the machine runs
    // the first three requests within one TTL. Checked: if it did not (a loaded machine), the
    // set-up is done again on a fresh node with a TTL four times as long.
    let put = |id: u64, seq: u64, value: &'static str| Request {
        client_id: id,
        seq,
        op: Op::Put { key: "ek".into(), value: Bytes::from_static(value.as_bytes()) },
        ordered: false,
    };
    let mut ttl = Duration::from_millis(300);
    let (server, redis, mut c, id) = loop {
        let (server, redis, addr) = single_node_with_ttl(ttl);
        let mut c = Client::connect(addr);
        let started = Instant::now();
        let id = register(&mut c, None);
        let first = clerk_request(&mut c, &put(id, 1, "1"));
        let set = c.call(&["SET", "rk", "1"]);
        if started.elapsed() < ttl {
            assert_eq!(first, Reply::Done(Outcome::Written));
            assert_eq!(set, simple("OK"));
            break (server, redis, c, id);
        }
        eprintln!("the set-up took {:?}, past the TTL of {ttl:?}: again", started.elapsed());
        redis.stop();
        server.kill();
        ttl *= 4;
        assert!(ttl < WAIT, "the set-up never ran within a TTL");
    };
    let put = |seq, value| put(id, seq, value);
    // Longer than the TTL: the next stamp is later than the session's expiry.
    thread::sleep(ttl * 2);
    assert_eq!(clerk_request(&mut c, &put(1, "retry")), Reply::Done(Outcome::NoSession));
    assert_eq!(clerk_request(&mut c, &put(2, "2")), Reply::Done(Outcome::NoSession));
    assert_eq!(c.call(&["GET", "ek"]), bulk("1"), "nothing of the expired session applied");
    // The Redis connection's own session expired too; it registers again, unseen.
    assert_eq!(c.call(&["SET", "rk", "2"]), simple("OK"));
    assert_eq!(c.call(&["GET", "rk"]), bulk("2"));
    redis.stop();
    server.kill();
}

/// A connection that wrote ends its session when it closes, so that the table holds only the
/// sessions of connections still open (or crashed clients', until they expire).
#[test]
fn a_closed_connection_ends_its_session() {
    let _watchdog = testkit::tcp::watchdog();
    let (server, redis, addr) = single_node_with_ttl(kvserver::DEFAULT_SESSION_TTL);
    let mut observer = Client::connect(addr);
    let mut writer = Client::connect(addr);
    assert_eq!(writer.call(&["SET", "k", "v"]), simple("OK"));
    assert_eq!(number(&info(&mut observer), "client_sessions"), 1);
    assert_eq!(observer.call(&["GET", "k"]), bulk("v"));
    assert_eq!(number(&info(&mut observer), "client_sessions"), 1, "a read registers nothing");
    drop(writer);
    wait_until("the closed connection's session ends", || {
        number(&info(&mut observer), "client_sessions") == 0
    });
    redis.stop();
    server.kill();
}

/// Certificates for the client-TLS test, written to a fresh directory: a CA (`ca.pem`), the
/// server's (`server.pem`, for 127.0.0.1), a client's (`client.pem`), and another CA's
/// (`other-ca.pem`), each with its `-key.pem`.
fn tls_files(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kv-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca = |file: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("ca");
    ca("other-ca");
    for (file, names) in [("server", vec!["127.0.0.1".to_string()]), ("client", vec![])] {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}-key.pem")), key.serialize_pem()).unwrap();
    }
    dir
}

/// Issue 15, client TLS: a front end with TLS serves the clerk and a raw client whose
/// pipelined commands and large values cross many TLS records while the connection's reader
/// and reply writer share the session; a plain client gets no plaintext reply; a client that
/// trusts another CA refuses the server; with client certificates required, a client without
/// one gets nothing done and a client with one from the CA does.
#[test]
fn clients_over_tls() {
    use kvclient::{Clerk, RespServers, TlsConfig};
    use kvserver::tls::{ClientAuth, ClientTls};
    let cluster = Cluster::start();
    let (leader, _) = cluster.settled();
    let dir = tls_files("clients");
    let file = |name: &str| dir.join(name);
    let server_tls = |auth| {
        let ca = (auth != ClientAuth::No).then(|| file("ca.pem"));
        ClientTls::from_pem_files(&file("server.pem"), &file("server-key.pem"), ca.as_deref(), auth)
            .unwrap()
    };
    let server = &cluster.replica(leader).server;
    let config = |auth| RedisConfig { tls: Some(server_tls(auth)), ..RedisConfig::default() };
    let (_front, addr) = extra_front_end(server, config(ClientAuth::No));
    let trusting = TlsConfig::new(&file("ca.pem"), None).unwrap();

    // The clerk, over TLS.
    let mut clerk = Clerk::new(RespServers::new([(leader, addr)]).with_tls(trusting.clone()));
    clerk.put("tls-key", "tls-value");
    assert_eq!(clerk.get("tls-key").as_deref(), Some(&b"tls-value"[..]));

    // A raw client: 200 pipelined SETs in one write, then a 1 MiB value each way.
    let connect = |tls: &TlsConfig| {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        tls.connect(sock, addr)
    };
    let mut stream = connect(&trusting).expect("a TLS connection");
    let mut out = BytesMut::new();
    for i in 0..200 {
        resp::write_command(&mut out, &["SET".to_string(), format!("p{i}"), format!("v{i}")]);
    }
    let big = vec![b'x'; 1 << 20];
    resp::write_command(&mut out, &[&b"SET"[..], b"big", &big]);
    resp::write_command(&mut out, &[&b"GET"[..], b"big"]);
    stream.write_all(&out).unwrap();
    stream.flush().unwrap();
    let mut decoder = Decoder::new(Limits::default());
    let (mut input, mut chunk, mut replies) = (BytesMut::new(), vec![0u8; 64 << 10], Vec::new());
    while replies.len() < 202 {
        while let Some((value, used)) = decoder.decode(&input).unwrap() {
            let _ = input.split_to(used);
            replies.push(value);
        }
        if replies.len() < 202 {
            let n = stream.read(&mut chunk).expect("replies in time");
            assert!(n > 0, "closed after {} replies", replies.len());
            input.extend_from_slice(&chunk[..n]);
        }
    }
    assert!(replies[..201].iter().all(|r| *r == simple("OK")), "{:?}", &replies[..3]);
    assert_eq!(replies[201], Value::bulk(Bytes::from(big)));

    // A plain client gets no plaintext answer.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain.write_all(b"PING\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"+PONG"), "a plain client was answered: {answer:?}");

    // A client that trusts another CA refuses the server's certificate.
    let stranger = TlsConfig::new(&file("other-ca.pem"), None).unwrap();
    let refused = connect(&stranger).map(drop).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::InvalidData, "{refused}");

    // Client certificates required.
    let (_strict, addr) = extra_front_end(server, config(ClientAuth::Required));
    let anonymous = RespServers::new([(leader, addr)]).with_tls(trusting);
    let outcome = Clerk::new(anonymous).try_run(
        kvclient::Op::Get { key: Bytes::from_static(b"tls-key") },
        Instant::now() + Duration::from_secs(2),
    );
    assert!(outcome.is_err(), "a client without a certificate got {outcome:?}");
    let with_cert =
        TlsConfig::new(&file("ca.pem"), Some((&file("client.pem"), &file("client-key.pem"))))
            .unwrap();
    let mut clerk = Clerk::new(RespServers::new([(leader, addr)]).with_tls(with_cert));
    assert_eq!(clerk.get("tls-key").as_deref(), Some(&b"tls-value"[..]));
    std::fs::remove_dir_all(dir).unwrap();
}
