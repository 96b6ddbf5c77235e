//! Real-process fault tests: three `kvserver` processes on 127.0.0.1 with real disks, driven
//! over the Redis protocol, and killed with SIGKILL: the leader (writes resume, the old leader
//! catches up when restarted), all three under load (every acknowledged write survives), a node
//! kept down while the others compact their logs (it catches up through a snapshot), and a node
//! whose data directory was lost (it refuses to rejoin under its old id); and clients
//! authenticating to nodes started with `--requirepass` and `--users-file`. The tests with
//! `redis-cli` fail if it cannot run, unless `RAFTKV_SKIP_REDIS_CLI=1` says to skip them (and
//! `cargo xtask test-all` then lists them as skipped).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kvclient::resp::{self, Limits, Value};
use labrpc::watchdog::Watchdog;

const N: usize = 3;

/// A tool this test needs cannot run. Fails the test, unless `skip_var` is set to `1`: then the
/// test is skipped (the caller returns), saying so on stderr, and the skip is recorded as a file
/// named after the test in `$RAFTKV_SKIPPED_DIR` (set by `cargo xtask test-all`, which lists
/// the skipped tests by name in its summary).
fn missing_tool(test: &str, tool: &str, skip_var: &str, why: &str) {
    if std::env::var(skip_var).as_deref() != Ok("1") {
        panic!(
            "{test} needs {tool}, which cannot run here ({why}); install it (.ci/run does) or \
             set {skip_var}=1 to skip this test"
        );
    }
    let reason = format!("{tool} cannot run ({why}) and {skip_var}=1");
    eprintln!("SKIPPED: {test}: {reason}");
    if let Some(dir) = std::env::var_os("RAFTKV_SKIPPED_DIR") {
        let path = std::path::Path::new(&dir).join(test);
        std::fs::write(&path, reason + "\n").expect("record the skip for test-all");
    }
}

/// A directory removed when dropped (unless the test failed: then it is kept for the logs).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A plain Redis-protocol connection.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: BytesMut::new() })
    }

    fn call(&mut self, args: &[&[u8]]) -> std::io::Result<Value> {
        let mut out = BytesMut::new();
        resp::write_command(&mut out, args);
        self.stream.write_all(&out)?;
        let mut chunk = [0u8; 16 << 10];
        loop {
            match resp::decode(&self.buf, &Limits::default()) {
                Ok(Some((value, used))) => {
                    let _ = self.buf.split_to(used);
                    return Ok(value);
                }
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Three server processes and their data directories.
struct Cluster {
    dir: TempDir,
    client: Vec<SocketAddr>,
    peer: Vec<SocketAddr>,
    procs: Vec<Option<Child>>,
    max_raft_state: u64,
    /// More flags for every node.
    extra: Vec<String>,
    /// Peers talk over mutual TLS, with certificates made in `<dir>/tls` (as a deployment
    /// does); off only where a test plays a peer itself.
    tls: bool,
    /// Clients talk to the nodes over TLS too (each node's certificate, which names
    /// 127.0.0.1); the test's own connections (`Conn`, `info`) do not speak TLS then.
    client_tls: bool,
    /// The password the test's own connections (`info`) authenticate with, if the nodes
    /// require one.
    password: Option<String>,
    /// The ids of the children running now, for the watchdog to kill.
    pids: Arc<Mutex<Vec<u32>>>,
    /// Fails the test (killing its children), rather than hanging CI, past [`TEST_LIMIT`].
    _watchdog: Watchdog,
}

/// How long one test may run before its watchdog kills its nodes and ends the test process
/// with a message naming it (`LAB_TEST_LIMIT_MS` overrides it).
const TEST_LIMIT: Duration = Duration::from_secs(300);

/// How long anything that should happen may take, on a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

/// The cluster id every test cluster is made with.
const CLUSTER_ID: u64 = 0x5eed;

/// A CA (`ca.pem`) and, for each node `i`, `node<i>.pem` and `node<i>-key.pem` naming
/// `raftkv-node-<i>`, in `dir`.
fn make_certificates(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // OpenSSL (redis-cli) cannot chain to an issuer with an empty name: give each one.
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "raftkv test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for i in 1..=N {
        let key = rcgen::KeyPair::generate().unwrap();
        // The peer name, and the address clients reach it by (client TLS).
        let names = vec![format!("raftkv-node-{i}"), "127.0.0.1".into()];
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("raftkv-node-{i}"));
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join(format!("node{i}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("node{i}-key.pem")), key.serialize_pem()).unwrap();
    }
}

/// `n` distinct free addresses on 127.0.0.1. The listeners are all held until every address
/// is chosen: a port released at once could be handed out again by the next bind (two nodes
/// of one cluster were once given the same peer port that way).
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let held: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    held.iter().map(|l| l.local_addr().unwrap()).collect()
}

impl Cluster {
    fn start(name: &str, max_raft_state: u64) -> Cluster {
        Cluster::start_with(name, max_raft_state, &[])
    }

    /// As [`start`](Self::start), with more flags for every node.
    fn start_with(name: &str, max_raft_state: u64, extra: &[&str]) -> Cluster {
        Cluster::start_full(name, max_raft_state, extra, true, false)
    }

    /// As [`start_with`](Self::start_with); `tls` chooses mutual TLS between the peers,
    /// `client_tls` TLS for clients.
    fn start_full(
        name: &str,
        max_raft_state: u64,
        extra: &[&str],
        tls: bool,
        client_tls: bool,
    ) -> Cluster {
        let dir = std::env::temp_dir().join(format!("kv-proc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pids = Arc::new(Mutex::new(Vec::new()));
        let mut c = Cluster {
            dir: TempDir(dir),
            client: Vec::new(),
            peer: Vec::new(),
            procs: (0..N).map(|_| None).collect(),
            max_raft_state,
            extra: extra.iter().map(ToString::to_string).collect(),
            tls,
            client_tls,
            password: None,
            pids: Arc::clone(&pids),
            _watchdog: Watchdog::start_with_cleanup(TEST_LIMIT, move || {
                for pid in pids.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
                    let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
                }
            }),
        };
        if tls || client_tls {
            make_certificates(&c.dir.0.join("tls"));
        }
        let mut addrs = free_addrs(2 * N);
        c.peer = addrs.split_off(N);
        c.client = addrs;
        for i in 0..N {
            c.spawn(i, true);
        }
        c
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.0.join(format!("node{}", i + 1))
    }

    fn command(&self, i: usize, init: bool) -> Command {
        let cluster: Vec<String> =
            self.peer.iter().enumerate().map(|(j, a)| format!("{}={a}", j + 1)).collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvserver"));
        cmd.arg("--id")
            .arg((i + 1).to_string())
            .arg("--cluster")
            .arg(cluster.join(","))
            .arg("--client-addr")
            .arg(self.client[i].to_string())
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .arg("--max-raft-state")
            .arg(self.max_raft_state.to_string())
            .args(&self.extra);
        if init {
            cmd.args(["--init", "--cluster-id", &format!("{CLUSTER_ID:x}")]);
        }
        if self.client_tls {
            let tls = self.dir.0.join("tls");
            let file = |name: String| tls.join(name).display().to_string();
            cmd.args(["--tls-cert-file", &file(format!("node{}.pem", i + 1))])
                .args(["--tls-key-file", &file(format!("node{}-key.pem", i + 1))]);
        }
        if self.tls {
            let tls = self.dir.0.join("tls");
            let file = |name: String| tls.join(name).display().to_string();
            cmd.args(["--peer-cert-file", &file(format!("node{}.pem", i + 1))])
                .args(["--peer-key-file", &file(format!("node{}-key.pem", i + 1))])
                .args(["--peer-trusted-ca-file", &file("ca.pem".into())]);
        }
        cmd
    }

    /// Starts node `i`, its log appended to `<dir>/node<i>.log`.
    fn spawn(&mut self, i: usize, init: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.0.join(format!("node{}.log", i + 1)))
            .unwrap();
        let child = self
            .command(i, init)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start kvserver");
        self.pids.lock().unwrap_or_else(PoisonError::into_inner).push(child.id());
        self.procs[i] = Some(child);
    }

    /// SIGKILL.
    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.procs[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
            self.forget(child.id());
        }
    }

    /// Takes an exited child's id off the watchdog's list (it may be given to another process).
    fn forget(&self, pid: u32) {
        self.pids.lock().unwrap_or_else(PoisonError::into_inner).retain(|&p| p != pid);
    }

    /// Stops every running node with SIGTERM, as an operator would, and checks that each exits
    /// with status 0 after logging "stopped cleanly".
    fn shutdown(&mut self) {
        for i in 0..N {
            let Some(mut child) = self.procs[i].take() else { continue };
            let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            assert!(status.is_ok_and(|s| s.success()), "could not signal node {}", i + 1);
            let deadline = Instant::now() + Duration::from_secs(20);
            let exit = loop {
                if let Some(exit) = child.try_wait().unwrap() {
                    self.forget(child.id());
                    break exit;
                }
                assert!(Instant::now() < deadline, "node {} ignored SIGTERM", i + 1);
                std::thread::sleep(Duration::from_millis(20));
            };
            let log = std::fs::read_to_string(self.dir.0.join(format!("node{}.log", i + 1)));
            let log = log.unwrap_or_default();
            assert!(exit.success(), "node {} exited with {exit}: {log}", i + 1);
            assert!(log.trim_end().ends_with("stopped cleanly"), "node {}: {log}", i + 1);
        }
    }

    fn info(&self, i: usize) -> Option<HashMap<String, String>> {
        let mut conn = Conn::open(self.client[i]).ok()?;
        if let Some(password) = &self.password {
            conn.call(&[b"AUTH", password.as_bytes()]).ok()?;
        }
        let Value::Bulk(Some(text)) = conn.call(&[b"INFO"]).ok()? else { return None };
        let text = String::from_utf8_lossy(&text).into_owned();
        Some(
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect(),
        )
    }

    fn info_u64(&self, i: usize, field: &str) -> Option<u64> {
        self.info(i)?.get(field)?.parse().ok()
    }

    /// Polls until some live node reports itself leader; returns its index.
    fn wait_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            for i in (0..N).filter(|&i| self.procs[i].is_some()) {
                if self
                    .info(i)
                    .is_some_and(|info| info.get("role").map(String::as_str) == Some("leader"))
                {
                    return i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {within:?}; logs in {:?}",
                self.dir.0
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls until the live nodes agree: exactly one says it leads, and every live node names
    /// it as leader in the same term. Returns (its index, that term). Unlike [`wait_leader`],
    /// a node that still believes it leads in an older term is not taken for the leader.
    ///
    /// [`wait_leader`]: Cluster::wait_leader
    fn settled_leader(&self, within: Duration) -> (usize, String) {
        let deadline = Instant::now() + within;
        loop {
            let infos: Vec<(usize, HashMap<String, String>)> = (0..N)
                .filter(|&i| self.procs[i].is_some())
                .filter_map(|i| self.info(i).map(|info| (i, info)))
                .collect();
            let field = |info: &HashMap<String, String>, f: &str| info.get(f).cloned();
            let leaders: Vec<usize> = infos
                .iter()
                .filter(|(_, info)| field(info, "role").as_deref() == Some("leader"))
                .map(|&(i, _)| i)
                .collect();
            let live = (0..N).filter(|&i| self.procs[i].is_some()).count();
            if let [leader] = leaders[..]
                && infos.len() == live
                && let Some(term) = field(&infos[0].1, "term")
                && infos.iter().all(|(_, info)| {
                    field(info, "term").as_ref() == Some(&term)
                        && field(info, "leader_id") == Some((leader + 1).to_string())
                })
            {
                return (leader, term);
            }
            assert!(
                Instant::now() < deadline,
                "no settled leader within {within:?}; logs in {:?}",
                self.dir.0
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls until node `i` has applied at least `index`.
    fn wait_applied(&self, i: usize, index: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.info_u64(i, "applied_index").unwrap_or(0) < index {
            assert!(
                Instant::now() < deadline,
                "node {} did not apply {index} within {within:?}; logs in {:?}",
                i + 1,
                self.dir.0
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..N {
            self.kill(i);
        }
    }
}

fn set(conn: &mut Conn, key: &str, value: &str) -> bool {
    let reply = conn.call(&[b"SET", key.as_bytes(), value.as_bytes()]);
    matches!(reply, Ok(Value::Simple(s)) if s == "OK")
}

fn get(conn: &mut Conn, key: &str) -> Option<Bytes> {
    match conn.call(&[b"GET", key.as_bytes()]) {
        Ok(Value::Bulk(v)) => v,
        other => panic!("GET {key}: {other:?}"),
    }
}

/// `SET key value` on `conn`, sent again (a `SET` may be) while the answer is `-TRYAGAIN`,
/// which a node gives when no leader answered within its retry time (an election on a
/// loaded machine): true once it is acknowledged within `within`.
fn set_until_acknowledged(conn: &mut Conn, key: &str, value: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        match conn.call(&[b"SET", key.as_bytes(), value.as_bytes()]) {
            Ok(Value::Simple(s)) if s == "OK" => return true,
            Ok(Value::Error(e)) if e.starts_with("TRYAGAIN") && Instant::now() < deadline => {
                eprintln!("SET {key}: {e}; sending it again");
            }
            _ => return false,
        }
    }
}

/// Writes until one is acknowledged by some node; returns how long that took.
fn first_write(c: &Cluster, key: &str, within: Duration) -> Duration {
    let t = Instant::now();
    loop {
        for i in (0..N).filter(|&i| c.procs[i].is_some()) {
            if let Ok(mut conn) = Conn::open(c.client[i])
                && set(&mut conn, key, "v")
            {
                return t.elapsed();
            }
        }
        assert!(
            t.elapsed() < within,
            "no write succeeded within {within:?}; logs in {:?}",
            c.dir.0
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_leader_is_replaced_and_catches_up_after_restart() {
    let mut c = Cluster::start("leader", 64 << 20);
    let leader = c.wait_leader(Duration::from_secs(20));
    let mut conn = Conn::open(c.client[(leader + 1) % N]).unwrap();
    // Writes through a follower; an election meanwhile may make one wait past the node's
    // retry time, so each is sent again on -TRYAGAIN (what they test is that they survive).
    for i in 0..50 {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        assert!(set_until_acknowledged(&mut conn, &key, &value, WAIT), "SET {key} failed");
    }
    // The leader is the one found now, agreed on by every node, not the one found before the
    // writes (an election may have happened since).
    let (leader, _) = c.settled_leader(WAIT);
    c.kill(leader);
    let resumed = first_write(&c, "after", Duration::from_secs(10));
    eprintln!("writes resumed {resumed:?} after the leader was killed");
    assert!(resumed < Duration::from_secs(5), "writes took {resumed:?} to resume");
    let new_leader = c.wait_leader(Duration::from_secs(10));
    assert_ne!(new_leader, leader);
    let target = c.info_u64(new_leader, "commit_index").unwrap();
    c.spawn(leader, false);
    c.wait_applied(leader, target, Duration::from_secs(20));
    let mut old = Conn::open(c.client[leader]).unwrap();
    assert_eq!(get(&mut old, "after").as_deref(), Some(&b"v"[..]));
    assert_eq!(get(&mut old, "k49").as_deref(), Some(&b"v49"[..]));
    c.shutdown();
}

/// Sends `signal` (`STOP` or `CONT`) to node `i` and, for `STOP`, waits until the kernel
/// shows it stopped (state `T` in `/proc/<pid>/stat`), so that it handles nothing more.
fn signal(c: &Cluster, i: usize, signal: &str) {
    let pid = c.procs[i].as_ref().expect("a running node").id();
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
    assert!(status.expect("run kill").success(), "kill -{signal} {pid}");
    if signal != "STOP" {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // The state follows the command name, which is in parentheses.
        let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
        if state == Some("T") {
            break;
        }
        assert!(Instant::now() < deadline, "node {} did not stop: {stat}", i + 1);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Issue 14: after a write answered `-TRYAGAIN` that never took effect, the connection's
/// next ordered write waited for it forever (`seq == last + 1`), answering `-TRYAGAIN` for as
/// long as the connection lived. A connection on a follower writes; the leader and the other
/// follower are stopped, so the write (forwarded to the stopped leader, which never reads it)
/// is answered `-TRYAGAIN`; the leader is then killed, so the write is lost for good, and the
/// other follower resumes. The connection's next write must succeed.
#[test]
fn a_connection_carries_on_after_a_write_answered_tryagain() {
    let mut c = Cluster::start("tryagain", 64 << 20);
    // The premise: the stopped node leads and the connection's node does not, so that the
    // write cannot be committed later. Made true by construction: the leader is the one all
    // three agree on, and once the two others are stopped the connection's node is asked
    // whether it still follows that leader in that term (stopped, the others cannot change
    // it); if not, the set-up is done again.
    let deadline = Instant::now() + WAIT;
    let (leader, other, mut conn) = loop {
        let (leader, term) = c.settled_leader(WAIT);
        let (follower, other) = ((leader + 1) % N, (leader + 2) % N);
        let mut conn = Conn::open(c.client[follower]).unwrap();
        assert!(set_until_acknowledged(&mut conn, "a", "1", WAIT), "no first write");
        signal(&c, leader, "STOP");
        signal(&c, other, "STOP");
        let seen = c.info(follower).expect("the follower answers INFO");
        let get = |f: &str| seen.get(f).map(String::as_str);
        if get("role") == Some("follower")
            && get("term") == Some(term.as_str())
            && get("leader_id") == Some((leader + 1).to_string().as_str())
        {
            break (leader, other, conn);
        }
        eprintln!("the leadership moved before the nodes were stopped ({seen:?}); again");
        signal(&c, leader, "CONT");
        signal(&c, other, "CONT");
        assert!(Instant::now() < deadline, "leadership never held still within {WAIT:?}");
    };
    match conn.call(&[b"SET", b"b", b"2"]) {
        Ok(Value::Error(e)) => assert!(e.starts_with("TRYAGAIN"), "{e}"),
        other => panic!("a write without a leader answered {other:?}"),
    }
    c.kill(leader);
    signal(&c, other, "CONT");
    // A new leader (the follower or the other) takes over; the connection's next writes
    // apply.
    assert!(set(&mut conn, "c", "3"), "the connection is stuck after -TRYAGAIN");
    assert!(set(&mut conn, "d", "4"));
    assert_eq!(get(&mut conn, "c").as_deref(), Some(&b"3"[..]));
    assert_eq!(get(&mut conn, "b"), None, "the write answered -TRYAGAIN was lost");
    assert_eq!(get(&mut conn, "a").as_deref(), Some(&b"1"[..]));
    c.shutdown();
}

#[test]
fn every_acknowledged_write_survives_killing_all_three_under_load() {
    let mut c = Cluster::start("allkill", 64 << 20);
    c.wait_leader(Duration::from_secs(20));
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let addr = c.client[w % N];
            let stop = Arc::clone(&stop);
            let acknowledged = Arc::clone(&acknowledged);
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let Ok(mut conn) = Conn::open(addr) else { return acked };
                for j in 0.. {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let key = format!("w{w}-{j}");
                    if !set(&mut conn, &key, &key) {
                        break; // The server died under us; this write's fate is unknown.
                    }
                    acked.push(key);
                    acknowledged.fetch_add(1, Ordering::AcqRel);
                }
                acked
            })
        })
        .collect();
    // Under load: the nodes are killed once the writers have had 100 writes acknowledged
    // (a count, not a guess at how many a second and a half allows).
    let deadline = Instant::now() + WAIT;
    while acknowledged.load(Ordering::Acquire) < 100 {
        assert!(Instant::now() < deadline, "fewer than 100 writes acknowledged in {WAIT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 0..N {
        c.kill(i);
    }
    stop.store(true, Ordering::Release);
    let acked: Vec<String> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(acked.len() >= 100, "only {} writes acknowledged before the kill", acked.len());
    for i in 0..N {
        c.spawn(i, false);
    }
    let leader = c.wait_leader(Duration::from_secs(20));
    let mut conn = Conn::open(c.client[leader]).unwrap();
    for key in &acked {
        assert_eq!(get(&mut conn, key).as_deref(), Some(key.as_bytes()), "{key} was lost");
    }
    eprintln!("{} acknowledged writes all survived SIGKILL of every node", acked.len());
    c.shutdown();
}

#[test]
fn a_node_kept_down_catches_up_through_a_snapshot() {
    let mut c = Cluster::start("snapshot", 32 << 10);
    let leader = c.wait_leader(Duration::from_secs(20));
    let down = (leader + 1) % N;
    c.kill(down);
    let mut conn = Conn::open(c.client[leader]).unwrap();
    let value = "x".repeat(1000);
    for i in 0..300 {
        let key = format!("k{i}");
        assert!(set_until_acknowledged(&mut conn, &key, &value, WAIT), "SET {key} failed");
    }
    let snap = c.info_u64(leader, "snapshot_index").unwrap();
    assert!(snap > 0, "the leader never snapshotted");
    let target = c.info_u64(leader, "commit_index").unwrap();
    c.spawn(down, false);
    c.wait_applied(down, target, Duration::from_secs(30));
    let restored = c.info_u64(down, "snapshot_index").unwrap();
    assert!(restored > 0, "node {} caught up without a snapshot", down + 1);
    let mut conn = Conn::open(c.client[down]).unwrap();
    assert_eq!(get(&mut conn, "k0").as_deref(), Some(value.as_bytes()));
    assert_eq!(get(&mut conn, "k299").as_deref(), Some(value.as_bytes()));
    c.shutdown();
}

#[test]
fn a_node_that_lost_its_data_refuses_to_rejoin() {
    let mut c = Cluster::start("lostdir", 64 << 20);
    c.wait_leader(Duration::from_secs(20));
    first_write(&c, "k", Duration::from_secs(10));
    c.kill(1);
    std::fs::remove_dir_all(c.data_dir(1)).unwrap();
    let out = c.command(1, false).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(stderr.contains("must not rejoin the cluster as node 2"), "{stderr}");
    assert!(stderr.contains("could vote twice"), "{stderr}");
}

/// The one test with `redis-cli` from Debian's `redis-tools` (installed by `.ci/run`).
#[test]
fn redis_cli_sets_and_gets_through_any_node() {
    if let Err(e) = Command::new("redis-cli").arg("--version").output() {
        let test = "kvserver::processes::redis_cli_sets_and_gets_through_any_node";
        missing_tool(test, "redis-cli", "RAFTKV_SKIP_REDIS_CLI", &e.to_string());
        return;
    }
    let mut c = Cluster::start("rediscli", 64 << 20);
    c.wait_leader(Duration::from_secs(20));
    let cli = |i: usize, args: &[&str]| {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(c.client[i].port().to_string())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(0, &["set", "k", "v"]), "OK");
    assert_eq!(cli(1, &["get", "k"]), "v");
    assert_eq!(cli(2, &["append", "k", "w"]), "2");
    assert_eq!(cli(0, &["get", "k"]), "vw");
    assert_eq!(cli(1, &["del", "k", "nothing"]), "1");
    assert_eq!(cli(2, &["exists", "k"]), "0");
    assert!(cli(0, &["info"]).contains("role:"));
    assert!(cli(0, &["nosuchcommand"]).contains("unknown command"));
    c.shutdown();
}

/// Issue 15 on real processes: nodes started with `--requirepass` and a `--users-file` whose
/// hash `kvserver --hash-password` made. redis-cli without a password gets NOAUTH (PING
/// works), with `-a` it reads and writes, with a wrong one it gets WRONGPASS (counted in
/// INFO), and a read-only user (`--user`/`--pass`) reads but gets NOPERM for writes. A
/// malformed users file stops a node at start, naming the line.
#[test]
fn redis_cli_authenticates_to_nodes_with_requirepass_and_users_file() {
    if let Err(e) = Command::new("redis-cli").arg("--version").output() {
        let test =
            "kvserver::processes::redis_cli_authenticates_to_nodes_with_requirepass_and_users_file";
        missing_tool(test, "redis-cli", "RAFTKV_SKIP_REDIS_CLI", &e.to_string());
        return;
    }
    let mut hasher = Command::new(env!("CARGO_BIN_EXE_kvserver"))
        .arg("--hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    hasher.stdin.take().unwrap().write_all(b"r-pw\n").unwrap();
    let hashed = hasher.wait_with_output().unwrap();
    assert!(hashed.status.success(), "{hashed:?}");
    let hash = String::from_utf8(hashed.stdout).unwrap();
    let hash = hash.strip_suffix('\n').expect("one line");
    assert!(hash.starts_with("sha256:") && !hash.contains("r-pw"), "{hash}");
    let dir = std::env::temp_dir().join(format!("kv-proc-users-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = TempDir(dir);
    let users = dir.0.join("users");
    std::fs::write(&users, format!("# who may read\nuser reader ro {hash}")).unwrap();
    let users = users.to_str().unwrap();

    let extra = ["--requirepass", "s3cret", "--users-file", users];
    let mut c = Cluster::start_with("auth", 64 << 20, &extra);
    c.password = Some("s3cret".into());
    c.wait_leader(Duration::from_secs(20));
    // (stdout, stderr) of redis-cli against node i.
    let cli = |i: usize, args: &[&str]| {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(c.client[i].port().to_string())
            .arg("--no-auth-warning")
            .args(args)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        (text(&out.stdout), text(&out.stderr))
    };
    assert_eq!(cli(0, &["ping"]).0, "PONG");
    assert_eq!(cli(0, &["set", "k", "v"]).0, "NOAUTH Authentication required.");
    assert_eq!(cli(1, &["get", "k"]).0, "NOAUTH Authentication required.");
    assert_eq!(cli(2, &["-a", "s3cret", "set", "k", "v"]).0, "OK");
    assert_eq!(cli(0, &["-a", "s3cret", "get", "k"]).0, "v");
    let failures_before = c.info_u64(1, "auth_failures").unwrap();
    let (out, err) = cli(1, &["-a", "wrong", "set", "k", "w"]);
    assert!(err.contains("WRONGPASS invalid username-password pair"), "{out} / {err}");
    assert_eq!(out, "NOAUTH Authentication required.");
    assert_eq!(c.info_u64(1, "auth_failures"), Some(failures_before + 1));
    let reader = ["--user", "reader", "--pass", "r-pw"];
    assert_eq!(cli(1, &[&reader[..], &["get", "k"]].concat()).0, "v");
    assert_eq!(
        cli(2, &[&reader[..], &["set", "k", "w"]].concat()).0,
        "NOPERM User reader has no permissions to run the 'set' command"
    );
    assert_eq!(cli(0, &["-a", "s3cret", "get", "k"]).0, "v", "nothing was written");
    c.shutdown();

    // A malformed users file: the node does not start, and says which line is wrong.
    std::fs::write(dir.0.join("users"), format!("user reader ro {hash}\nuser writer rx {hash}"))
        .unwrap();
    let out = c.command(0, false).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let want = format!("--users-file {users}: line 2: permission \"rx\" of user \"writer\"");
    assert!(stderr.contains(&want), "{stderr}");
}

/// Concurrent clerks (over TCP, with their own client ids and sequence numbers) put, append
/// and get on a few keys while the leader is SIGKILLed and restarted, then a follower, then
/// all three at once; the recorded history must be linearizable. A write whose clerk gave up
/// goes in with an open end (it may take effect at any later point).
#[test]
fn the_history_across_process_faults_is_linearizable() {
    use kvclient::proto::Op;
    use kvclient::{Clerk, RespServers};
    use linearizability::saved::TestCheck;
    use linearizability::{KvInput, KvOutput, Operation};

    let mut c = Cluster::start("history", 64 << 10);
    c.wait_leader(Duration::from_secs(20));
    let nodes: Vec<(u64, SocketAddr)> =
        c.client.iter().enumerate().map(|(i, a)| (i as u64 + 1, *a)).collect();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4u64)
        .map(|client| {
            let (nodes, stop) = (nodes.clone(), Arc::clone(&stop));
            let completed = Arc::clone(&completed);
            std::thread::spawn(move || {
                let mut clerk = Clerk::new(RespServers::new(nodes));
                let mut rng = labrpc::Rng::new(client + 1);
                let at = |t: Instant| t.duration_since(t0).as_nanos() as u64;
                let mut history = Vec::new();
                let mut j = 0;
                while !stop.load(Ordering::Acquire) {
                    let key = format!("k{}", rng.below(3));
                    j += 1;
                    let value = format!("{client}.{j};");
                    let (input, op) = match rng.below(10) {
                        0..=3 => (
                            KvInput::Append { key: key.clone(), value: value.clone() },
                            Op::Append { key: key.clone().into(), value: value.into() },
                        ),
                        4..=5 => (
                            KvInput::Put { key: key.clone(), value: value.clone() },
                            Op::Put { key: key.clone().into(), value: value.into() },
                        ),
                        _ => (KvInput::Get { key: key.clone() }, Op::Get { key: key.into() }),
                    };
                    let call = Instant::now();
                    let result = clerk.try_run(op, call + Duration::from_secs(10));
                    let output = match result {
                        Ok(kvclient::proto::Outcome::Value(v)) => KvOutput::Value(
                            String::from_utf8(v.map(|b| b.to_vec()).unwrap_or_default()).unwrap(),
                        ),
                        Ok(_) => KvOutput::Done,
                        Err(_) if matches!(input, KvInput::Get { .. }) => continue,
                        Err(_) => {
                            // Unknown outcome: it may take effect at any point from now on.
                            let op = Operation {
                                client,
                                input,
                                output: KvOutput::Done,
                                call: at(call),
                                ret: u64::MAX,
                            };
                            history.push(op);
                            continue;
                        }
                    };
                    let ret = at(Instant::now());
                    history.push(Operation { client, input, output, call: at(call), ret });
                    completed.fetch_add(1, Ordering::AcqRel);
                }
                history
            })
        })
        .collect();
    // Each phase lasts until the clerks have completed 25 more operations in it (a count, not
    // a guess at how many a second allows), so every phase has operations in the history.
    let progress = |phase: &str| {
        let target = completed.load(Ordering::Acquire) + 25;
        let deadline = Instant::now() + WAIT;
        while completed.load(Ordering::Acquire) < target {
            assert!(Instant::now() < deadline, "{phase}: 25 operations not completed in {WAIT:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    progress("before any fault");
    let leader = c.wait_leader(Duration::from_secs(20));
    c.kill(leader);
    progress("with the leader killed");
    c.spawn(leader, false);
    progress("after the leader's restart");
    let follower = (c.wait_leader(Duration::from_secs(20)) + 1) % N;
    c.kill(follower);
    progress("with a follower killed");
    c.spawn(follower, false);
    progress("after the follower's restart");
    for i in 0..N {
        c.kill(i);
    }
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..N {
        c.spawn(i, false);
    }
    c.wait_leader(Duration::from_secs(20));
    progress("after every node's restart");
    stop.store(true, Ordering::Release);
    let history: Vec<_> = clients.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let done = history.iter().filter(|o| o.ret != u64::MAX).count();
    eprintln!("{} operations ({done} completed) across the faults; checking", history.len());
    assert!(done >= 150, "only {done} operations completed (six phases of 25)");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("histories");
    let check = TestCheck::run("processes-history", &history, Duration::from_secs(30), &dir);
    println!("{check}");
    if let Err(why) = check.verdict() {
        panic!("{why}");
    }
    c.shutdown();
}

/// A hand-made peer connection to node `to`, claiming to be node `from`: the handshake of
/// `raft_tcp`'s wire format, then frames of whatever messages the test forges.
struct ForgedPeer {
    stream: TcpStream,
}

impl ForgedPeer {
    fn connect(addr: SocketAddr, from: u64, to: u64) -> ForgedPeer {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut hello = Vec::with_capacity(36);
        hello.extend_from_slice(b"RAFT");
        hello.extend_from_slice(&2u32.to_le_bytes());
        hello.extend_from_slice(&from.to_le_bytes());
        hello.extend_from_slice(&to.to_le_bytes());
        hello.extend_from_slice(&CLUSTER_ID.to_le_bytes());
        let crc = crc32(&hello);
        hello.extend_from_slice(&crc.to_le_bytes());
        stream.write_all(&hello).unwrap();
        let mut reply = [0u8; 32];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(&reply[..4], b"RAFT");
        assert_eq!(u32::from_le_bytes(reply[16..20].try_into().unwrap()), 0, "accepted");
        ForgedPeer { stream }
    }

    fn send(&mut self, message: &raft::Message) {
        let payload = postcard::to_allocvec(message).unwrap();
        let mut frame = Vec::with_capacity(8 + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        self.stream.write_all(&frame).unwrap();
    }
}

/// CRC-32 (IEEE), bit by bit: the checksum `raft_tcp` frames carry.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Every node is still running, and a write through each node is read back through another.
fn all_alive_and_serving(c: &mut Cluster, round: &str) {
    for i in 0..N {
        let child = c.procs[i].as_mut().expect("started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "node {} exited; logs in {:?}",
            i + 1,
            c.dir.0
        );
    }
    // A node just (re)started may not listen for clients yet.
    for i in 0..N {
        let deadline = Instant::now() + WAIT;
        while Conn::open(c.client[i]).is_err() {
            assert!(Instant::now() < deadline, "node {} does not listen ({round})", i + 1);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for i in 0..N {
        let key = format!("{round}-{i}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Conn::open(c.client[i]).is_ok_and(|mut conn| set(&mut conn, &key, "v")) {
            assert!(Instant::now() < deadline, "no write through node {} ({round})", i + 1);
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut conn = Conn::open(c.client[(i + 1) % N]).unwrap();
        assert_eq!(get(&mut conn, &key).as_deref(), Some(&b"v"[..]), "{round}");
    }
}

/// The attacks of issue 14 on a live cluster, each of which once took a node or the whole
/// cluster down: a forged `Propose` of a command that is not a request (every replica then
/// exited applying it, and again on every restart), an `AppendEntriesResponse` claiming a
/// match far beyond the log (the leader's Raft thread panicked), a "leader" of a later term
/// sending misnumbered entries (the follower applied garbage and exited), and a second leader
/// of the current term (an assertion). Each is refused and counted; no process exits, and the
/// cluster serves writes and reads after the attacks and after every node restarts.
#[test]
fn forged_peer_messages_neither_crash_nor_wedge_the_cluster() {
    use raft::{AppendOutcome, Body, Entry, Message};
    // Plain TCP between the peers, so that the test can speak as one: what it shows (a member
    // sending garbage cannot harm the others) holds the same for a member that got in with a
    // valid certificate.
    let mut c = Cluster::start_full("forged", 64 << 20, &[], false, false);
    first_write(&c, "before", Duration::from_secs(20));
    // The premise: the node sent the leader's forgeries leads, in the term they carry, until
    // it has refused them. Checked: the leader and term are the ones all three agree on, and
    // agreed on again after the refusals are counted (or while they are not); if an election
    // moved them, the attack is made again on the new leader, counted from then.
    let deadline = Instant::now() + WAIT;
    loop {
        let (leader, term) = c.settled_leader(WAIT);
        let term: u64 = term.parse().expect("a numeric term");
        let follower = (leader + 1) % N;
        let other = (leader + 2) % N;
        let (l_id, f_id, o_id) = (leader as u64 + 1, follower as u64 + 1, other as u64 + 1);
        let last = c.info_u64(follower, "last_log_index").unwrap();
        let rejected = |i| c.info_u64(i, "rejected_peer_messages").unwrap_or(0);
        let (leader_before, follower_before) = (rejected(leader), rejected(follower));
        let mut to_leader = ForgedPeer::connect(c.peer[leader], f_id, l_id);
        let msg = |from, to, term, body| Message { from, to, term, body };
        to_leader.send(&msg(
            f_id,
            l_id,
            term,
            Body::Propose { data: vec![Bytes::from_static(&[0xff])] },
        ));
        to_leader.send(&msg(
            f_id,
            l_id,
            term,
            Body::AppendEntriesResponse {
                outcome: AppendOutcome::Success { match_index: 1_000_000 },
                read_round: 0,
            },
        ));
        to_leader.send(&msg(
            f_id,
            l_id,
            term,
            Body::AppendEntries {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![],
                leader_commit: 0,
                read_round: 0,
            },
        ));
        let mut to_follower = ForgedPeer::connect(c.peer[follower], o_id, f_id);
        let garbage = |index| Entry { term: term + 1, index, data: Bytes::from_static(&[0xff]) };
        to_follower.send(&msg(
            o_id,
            f_id,
            term + 1,
            Body::AppendEntries {
                prev_log_index: last,
                prev_log_term: term,
                entries: vec![garbage(last + 1), garbage(last + 5)],
                leader_commit: last + 5,
                read_round: 0,
            },
        ));
        // Each node counts what it refused (the three to the leader, the one to the follower).
        let refused = loop {
            if rejected(leader) >= leader_before + 3 && rejected(follower) > follower_before {
                break true;
            }
            if c.settled_leader(WAIT) != (leader, term.to_string()) {
                break false;
            }
            assert!(Instant::now() < deadline, "the forged messages were not all refused");
            std::thread::sleep(Duration::from_millis(20));
        };
        drop((to_leader, to_follower));
        if refused && c.settled_leader(WAIT) == (leader, term.to_string()) {
            break;
        }
        eprintln!("an election during the attack: making it again on the new leader");
        assert!(Instant::now() < deadline, "leadership never held still through the attack");
    }
    all_alive_and_serving(&mut c, "after-attack");

    for i in 0..N {
        c.kill(i);
    }
    for i in 0..N {
        c.spawn(i, false);
    }
    c.wait_leader(Duration::from_secs(20));
    all_alive_and_serving(&mut c, "after-restart");
    let mut conn = Conn::open(c.client[0]).unwrap();
    assert_eq!(get(&mut conn, "before").as_deref(), Some(&b"v"[..]));
    c.shutdown();
}

/// Every file under `dir` with its size, for a failure message.
fn du(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(du(&path));
        } else if let Ok(meta) = entry.metadata() {
            out.push(format!("{} {}", path.display(), meta.len()));
        }
    }
    out
}

/// What one writer saw while filling the disks.
#[derive(Default)]
struct Filled {
    acknowledged: Vec<(String, String)>,
    /// The `-NOSPACE` replies, and the slowest of them.
    refusals: Vec<String>,
    slowest_refusal: Duration,
}

/// Writes 100 KB values through node `i` until five writes in a row are refused for space.
fn fill(addr: SocketAddr, writer: usize) -> Filled {
    let mut out = Filled::default();
    let mut conn = Conn::open(addr).unwrap();
    let value: String = format!("{writer}").repeat(100_000);
    let mut in_a_row = 0;
    for n in 0..2_000 {
        let key = format!("fill-{writer}-{n}");
        let started = Instant::now();
        match conn.call(&[b"SET", key.as_bytes(), value.as_bytes()]) {
            Ok(Value::Simple(ok)) if ok == "OK" => {
                out.acknowledged.push((key, value.clone()));
                in_a_row = 0;
            }
            Ok(Value::Error(e)) if e.starts_with("NOSPACE") => {
                out.slowest_refusal = out.slowest_refusal.max(started.elapsed());
                out.refusals.push(e);
                in_a_row += 1;
                if in_a_row == 5 {
                    return out;
                }
            }
            // A write caught in the moment the alarm spreads may time out: its outcome is
            // unknown, and a new connection (a new session) goes on.
            Ok(Value::Error(e)) if e.starts_with("TRYAGAIN") => conn = Conn::open(addr).unwrap(),
            other => panic!("SET {key} through {addr}: {other:?}"),
        }
    }
    panic!("writer {writer}: 2,000 writes of 100 KB and the disk never filled");
}

/// Three nodes with a 40 MiB quota on their data directories, 24 MiB of it taken by a ballast
/// file of the operator's (so about 16 MiB is left for the data), filled with 100 KB values
/// through every node at once until writes are refused: at once (under a second), with
/// `-NOSPACE` naming a node and its directory. With the disks kept full (the ballast grows to
/// the quota), every node refuses writes, serves reads and deletes, and INFO shows the alarm.
/// Once the ballast is deleted, writes resume by themselves (no restart), and every
/// acknowledged write is there, on every node.
#[test]
fn a_full_disk_refuses_writes_at_once_serves_reads_and_resumes_by_itself() {
    // The ballast is larger than the data may grow past the alarm (writes in flight, a
    // snapshot's copy, compaction outputs not yet swapped in): once it is deleted, every node is
    // back under its quota by more than the clearing margin, whatever the timing.
    let quota = (40u64 << 20).to_string();
    let flags = ["--quota-bytes", quota.as_str(), "--memtable-bytes", "1048576"];
    let mut c = Cluster::start_with("nospace", 2 << 20, &flags);
    c.wait_leader(Duration::from_secs(20));
    first_write(&c, "to-delete", Duration::from_secs(20));
    for i in 0..N {
        std::fs::write(c.data_dir(i).join("ballast"), vec![0u8; 24 << 20]).unwrap();
    }
    let writers: Vec<_> = (0..N)
        .map(|i| {
            let addr = c.client[i];
            std::thread::spawn(move || fill(addr, i))
        })
        .collect();
    let filled: Vec<Filled> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let acknowledged: Vec<(String, String)> =
        filled.iter().flat_map(|f| f.acknowledged.iter().cloned()).collect();
    assert!(acknowledged.len() >= 10, "only {} writes before the alarm", acknowledged.len());
    for f in &filled {
        let e = &f.refusals[0];
        assert!(e.contains("node ") && e.contains("kv-proc-nospace"), "{e}");
        assert!(e.contains("resume by themselves"), "{e}");
        assert!(f.slowest_refusal < Duration::from_secs(1), "slow: {:?}", f.slowest_refusal);
    }

    // Once the writes stop, a snapshot's temporary copies go and usage may fall back under
    // the quota (the alarm then clears, as it should). The disks now stay full: the ballast
    // grows to the whole quota.
    for i in 0..N {
        std::fs::write(c.data_dir(i).join("ballast"), vec![0u8; 40 << 20]).unwrap();
    }
    // Every node refuses writes, serves reads and deletes, and shows the alarm.
    for i in 0..N {
        let mut conn = Conn::open(c.client[i]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // A write that slips in before the alarm is back is fine; it must stop at once.
            match conn.call(&[b"SET", b"one-more", b"v"]).unwrap() {
                Value::Error(e) if e.starts_with("NOSPACE") => break,
                Value::Simple(ok) if ok == "OK" => {}
                other => panic!("node {}: a write during the alarm: {other:?}", i + 1),
            }
            assert!(Instant::now() < deadline, "node {}: no alarm with a full disk", i + 1);
            std::thread::sleep(Duration::from_millis(50));
        }
        for (key, value) in acknowledged.iter().step_by(7) {
            assert_eq!(get(&mut conn, key).as_deref(), Some(value.as_bytes()), "node {}", i + 1);
        }
        let info = c.info(i).unwrap();
        assert_eq!(info.get("disk_alarm").map(String::as_str), Some("nospace"), "{info:?}");
        assert_ne!(info.get("disk_alarm_nodes").map(String::as_str), Some("none"));
        assert_eq!(info.get("writes_refused").map(String::as_str), Some("1"));
    }
    let mut conn = Conn::open(c.client[0]).unwrap();
    assert_eq!(conn.call(&[b"DEL", b"to-delete"]).unwrap(), Value::Integer(1));

    // The operator frees space: writes come back by themselves on every node.
    for i in 0..N {
        std::fs::remove_file(c.data_dir(i).join("ballast")).unwrap();
    }
    for i in 0..N {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let key = format!("after-{i}");
            let mut conn = Conn::open(c.client[i]).unwrap();
            match conn.call(&[b"SET", key.as_bytes(), b"back"]).unwrap() {
                Value::Simple(ok) if ok == "OK" => break,
                Value::Error(e) if e.starts_with("NOSPACE") => {
                    if Instant::now() >= deadline {
                        let dir = c.data_dir(i);
                        panic!("node {}: still {e}; its files: {}", i + 1, du(&dir).join(", "));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => panic!("node {}: {other:?}", i + 1),
            }
        }
        let info = c.info(i).unwrap();
        assert_eq!(info.get("disk_alarm").map(String::as_str), Some("none"), "{info:?}");
    }
    for i in 0..N {
        let mut conn = Conn::open(c.client[i]).unwrap();
        for (key, value) in &acknowledged {
            assert_eq!(get(&mut conn, key).as_deref(), Some(value.as_bytes()), "node {}", i + 1);
        }
        assert_eq!(get(&mut conn, "to-delete"), None);
    }
    c.shutdown();
}

/// Issue 15: over mutual TLS, a node of another cluster, a node whose certificate comes from
/// another CA, and a node presenting node 2's certificate as node 3 are each refused by the
/// members, which log why and keep serving writes and reads; so is a plain-TCP connection
/// with an old-style hello. Then the real node 3 rejoins.
#[test]
fn strangers_and_impostors_are_refused_and_the_cluster_keeps_serving() {
    let mut c = Cluster::start("impostors", 64 << 20);
    first_write(&c, "before", WAIT);
    c.kill(2);
    let other_ca = c.dir.0.join("other-ca");
    make_certificates(&other_ca);
    let ours = c.dir.0.join("tls");
    let own_id = format!("{CLUSTER_ID:x}");
    let cases = [
        ("cluster", "beef", &ours, "node3", "belongs to cluster 000000000000beef"),
        ("ca", own_id.as_str(), &other_ca, "node3", "TLS handshake failed"),
        ("cert", own_id.as_str(), &ours, "node2", "presented a certificate that is not node 3's"),
    ];
    let members: Vec<String> =
        c.peer.iter().enumerate().map(|(j, a)| format!("{}={a}", j + 1)).collect();
    for (n, (case, cluster, tls, cert, expected)) in cases.into_iter().enumerate() {
        let log_path = c.dir.0.join(format!("impostor-{case}.log"));
        let file = |name: &str| tls.join(name).display().to_string();
        let mut impostor = Command::new(env!("CARGO_BIN_EXE_kvserver"))
            .args(["--id", "3", "--cluster", &members.join(",")])
            .args(["--client-addr", &c.client[2].to_string()])
            .arg("--data-dir")
            .arg(c.dir.0.join(format!("impostor-{case}")))
            .args(["--init", "--cluster-id", cluster])
            .args(["--peer-cert-file", &file(&format!("{cert}.pem"))])
            .args(["--peer-key-file", &file(&format!("{cert}-key.pem"))])
            .args(["--peer-trusted-ca-file", &file("ca.pem")])
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
            .spawn()
            .unwrap();
        c.pids.lock().unwrap_or_else(PoisonError::into_inner).push(impostor.id());
        // A member refuses it and says why (node 1's or node 2's log).
        let deadline = Instant::now() + WAIT;
        let said = |i: usize| {
            let log = std::fs::read_to_string(c.dir.0.join(format!("node{i}.log")));
            log.unwrap_or_default().contains(expected)
        };
        while !(said(1) || said(2)) {
            assert!(Instant::now() < deadline, "{case}: no member logged {expected:?}");
            assert!(impostor.try_wait().unwrap().is_none(), "{case}: the impostor exited");
            std::thread::sleep(Duration::from_millis(50));
        }
        // The two members keep serving, the impostor's votes refused.
        let key = format!("during-{n}");
        let mut conn = Conn::open(c.client[0]).unwrap();
        assert!(set_until_acknowledged(&mut conn, &key, "v", WAIT), "{case}: no write");
        let mut conn = Conn::open(c.client[1]).unwrap();
        assert_eq!(get(&mut conn, &key).as_deref(), Some(&b"v"[..]), "{case}");
        impostor.kill().unwrap();
        impostor.wait().unwrap();
    }
    // A plain-TCP connection with a version 1 hello, as a node from before TLS sends: the TLS
    // handshake fails, nothing is answered in the clear, the connection is closed.
    let mut hello = b"RAFT".to_vec();
    hello.extend_from_slice(&1u32.to_le_bytes());
    hello.extend_from_slice(&3u64.to_le_bytes());
    hello.extend_from_slice(&1u64.to_le_bytes());
    hello.extend_from_slice(&crc32(&hello.clone()).to_le_bytes());
    let mut plain = TcpStream::connect(c.peer[0]).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain.write_all(&hello).unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"RAFT"), "a plain hello was answered in the clear");
    c.spawn(2, false);
    all_alive_and_serving(&mut c, "after");
    let mut conn = Conn::open(c.client[2]).unwrap();
    assert_eq!(get(&mut conn, "during-2").as_deref(), Some(&b"v"[..]), "node 3 caught up");
}

/// Issue 15: `redis-cli --tls --cacert` writes and reads through every node of a cluster that
/// serves clients over TLS (and runs its peers over mutual TLS); plain redis-cli gets no
/// answer.
#[test]
fn redis_cli_over_tls_sets_and_gets_through_any_node() {
    if let Err(e) = Command::new("redis-cli").arg("--version").output() {
        let test = "kvserver::processes::redis_cli_over_tls_sets_and_gets_through_any_node";
        missing_tool(test, "redis-cli", "RAFTKV_SKIP_REDIS_CLI", &e.to_string());
        return;
    }
    let mut c = Cluster::start_full("clitls", 64 << 20, &[], true, true);
    let ca = c.dir.0.join("tls").join("ca.pem");
    let cli = |i: usize, tls: bool, args: &[&str]| {
        let mut cmd = Command::new("redis-cli");
        cmd.arg("-p").arg(c.client[i].port().to_string());
        if tls {
            cmd.arg("--tls").arg("--cacert").arg(&ca);
        }
        let out = cmd.args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // The first write waits for a leader.
    let deadline = Instant::now() + WAIT;
    while cli(0, true, &["set", "k", "v"]) != "OK" {
        assert!(Instant::now() < deadline, "no write over TLS within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..N {
        assert_eq!(cli(i, true, &["get", "k"]), "v", "node {}", i + 1);
    }
    assert_eq!(cli(1, true, &["append", "k", "w"]), "2");
    assert_eq!(cli(2, true, &["get", "k"]), "vw");
    assert_ne!(cli(0, false, &["ping"]), "PONG", "a plain client was answered");
    c.shutdown();
}
