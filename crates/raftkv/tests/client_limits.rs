//! The client limits of the `kvserver` binary, as a process: a one-node cluster started with
//! `--max-clients`, `--timeout` or `--max-request-bytes`, spoken to over the Redis protocol.
//! Among them, thousands of idle and half-sent connections held at once, which needs the
//! file-descriptor limit the server raises at start (and logs).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kvclient::resp::{self, Decoder, Limits, Value};

/// How long anything that should happen may take, on a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

/// One `kvserver` process, a cluster of one, with its data directory (removed when dropped,
/// unless the test failed: then it is kept for the log).
struct Server {
    dir: PathBuf,
    addr: SocketAddr,
    child: Child,
}

impl Server {
    fn start(name: &str, flags: &[&str]) -> Server {
        let dir = std::env::temp_dir().join(format!("kv-limits-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let held: Vec<TcpListener> =
            (0..2).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let (addr, peer) = (held[0].local_addr().unwrap(), held[1].local_addr().unwrap());
        drop(held);
        let log = std::fs::File::create(dir.join("node.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kvserver"))
            .args(["--id", "1", "--cluster", &format!("1={peer}"), "--init"])
            .arg("--client-addr")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start kvserver");
        let server = Server { dir, addr, child };
        // Serving once a write goes through (it has elected itself).
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(mut c) = Client::try_connect(addr)
                && c.call(&["SET", "ready", "1"]) == Value::Simple("OK".into())
            {
                return server;
            }
            assert!(Instant::now() < deadline, "not serving; log: {}", server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process's resident memory and thread count, from /proc (Linux), for the record.
    fn footprint(&self) -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()));
        let status = status.unwrap_or_default();
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name)).unwrap_or("?").trim().to_owned()
        };
        format!("VmRSS {}, {} threads", field("VmRSS:"), field("Threads:"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    fn connect(&self) -> Client {
        Client::try_connect(self.addr).expect("connect")
    }

    fn connected_clients(&self) -> u64 {
        let Value::Bulk(Some(info)) = self.connect().call(&["INFO"]) else { panic!("INFO") };
        let info = String::from_utf8_lossy(&info).into_owned();
        let line = info.lines().find_map(|l| l.strip_prefix("connected_clients:"));
        line.expect("connected_clients").trim().parse().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A raw RESP2 client.
struct Client {
    stream: TcpStream,
    input: BytesMut,
    decoder: Decoder,
}

impl Client {
    fn try_connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(WAIT))?;
        stream.set_nodelay(true)?;
        Ok(Client { stream, input: BytesMut::new(), decoder: Decoder::new(Limits::default()) })
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
        let mut out = BytesMut::new();
        resp::write_command(&mut out, args);
        self.send_raw(&out);
        self.reply()
    }

    /// Waits until the server closes the connection (nothing more may arrive).
    fn assert_closed(&mut self) {
        assert!(self.input.is_empty(), "unread bytes: {:?}", self.input);
        let mut buf = [0u8; 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Ok(n) => panic!("bytes after the end: {:?}", &buf[..n]),
            Err(e) => panic!("the connection did not close: {e}"),
        }
    }
}

fn ok() -> Value {
    Value::Simple("OK".into())
}

#[test]
fn max_clients_refuses_with_the_redis_message() {
    let server = Server::start("maxclients", &["--max-clients", "2"]);
    // The readiness probe's connection may not yet be released (it is counted until its
    // threads end, a moment after it closes): until a connection is served, it is refused.
    let deadline = Instant::now() + WAIT;
    let mut a = loop {
        let mut c = server.connect();
        let mut out = BytesMut::new();
        resp::write_command(&mut out, &["PING"]);
        let served = c.stream.write_all(&out).is_ok() && {
            let mut buf = [0u8; 64];
            matches!(c.stream.read(&mut buf), Ok(n) if &buf[..n] == b"+PONG\r\n")
        };
        if served {
            break c;
        }
        assert!(Instant::now() < deadline, "never below 2 clients");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut b = server.connect();
    assert_eq!(b.call(&["PING"]), Value::Simple("PONG".into()));
    let mut refused = server.connect();
    assert_eq!(refused.reply(), Value::Error("ERR max number of clients reached".into()));
    refused.assert_closed();
    assert_eq!(a.call(&["SET", "k", "v"]), ok());
    assert_eq!(b.call(&["GET", "k"]), Value::bulk("v"));
}

#[test]
fn max_request_bytes_is_the_flag_s_value() {
    let server = Server::start("maxrequest", &["--max-request-bytes", "1024"]);
    let mut c = server.connect();
    let big = vec![b'v'; 2000];
    assert_eq!(
        c.call(&[&b"SET"[..], b"k", &big]),
        Value::Error(
            "ERR request of at least 2004 bytes exceeds --max-request-bytes (1024)".into()
        )
    );
    assert_eq!(c.call(&[&b"SET"[..], b"k", &big[..1000]]), ok());
    assert_eq!(c.call(&["STRLEN", "k"]), Value::Integer(1000));
}

#[test]
fn the_idle_timeout_closes_idle_connections() {
    let server = Server::start("timeout", &["--timeout", "1"]);
    let started = Instant::now(); // Before the connection's last input.
    let mut idle = server.connect();
    assert_eq!(idle.call(&["PING"]), Value::Simple("PONG".into()));
    idle.assert_closed();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(1), "closed after {waited:?}");
    assert!(server.log().contains("idle for 1s (--timeout)"), "{}", server.log());
    assert_eq!(server.connect().call(&["GET", "ready"]), Value::bulk("1"));
}

/// 2000 connections held open, half of them idle and half in the middle of a command, while
/// another client is served. The server raised its file-descriptor limit at start and says
/// so; this test's own process needs one descriptor per connection too.
#[test]
fn thousands_of_idle_and_half_sent_connections_leave_others_working() {
    let n: u64 = 2000;
    let server = Server::start("thousands", &[]);
    let log = server.log();
    let line = log.lines().find(|l| l.contains("file descriptor limit: "));
    eprintln!("the server logged: {}", line.expect("the limit is logged"));
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the limits into the struct it is given, which is valid.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads the struct it is given, which is valid.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
    assert!(
        limit.rlim_cur >= n + 100,
        "this test needs {} file descriptors; the hard limit (ulimit -Hn) is {}",
        n + 100,
        limit.rlim_max
    );
    eprintln!("before: {}", server.footprint());
    let mut held = Vec::new();
    for i in 0..n {
        let mut c = server.connect();
        if i % 2 == 1 {
            c.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nhalf a val");
        }
        held.push(c);
    }
    let mut c = server.connect();
    assert_eq!(c.call(&["SET", "k", "v"]), ok());
    assert_eq!(server.connect().call(&["GET", "k"]), Value::bulk("v"));
    let deadline = Instant::now() + WAIT;
    while server.connected_clients() < n + 1 {
        assert!(Instant::now() < deadline, "not every connection was accepted");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("with {} connections: {}", n + 1, server.footprint());
    // The held connections are served too.
    assert_eq!(held[0].call(&["GET", "k"]), Value::bulk("v"));
    drop(held);
    let deadline = Instant::now() + WAIT;
    while server.connected_clients() > 2 {
        assert!(Instant::now() < deadline, "closed connections are still counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(c.call(&["GET", "k"]), Value::bulk("v"));
}
