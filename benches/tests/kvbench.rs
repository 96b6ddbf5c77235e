//! `kvbench` as a process: against a fake server that fails on purpose (errors are counted and
//! clients reconnect), and against a real `redis-server` (the requested count is made, and the
//! keys are there afterwards). The second test fails if redis-server cannot run, unless
//! `RAFTKV_SKIP_REDIS_SERVER=1` says to skip it (and `cargo xtask test-all` then lists it as
//! skipped).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use kvclient::resp::{self, CommandDecoder, Decoder, Limits, Value};

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

/// Runs kvbench with `args` and `--json`; returns its JSON line.
fn kvbench(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(args)
        .arg("--json")
        .stderr(Stdio::inherit())
        .output()
        .expect("run kvbench");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert!(out.status.success(), "kvbench {args:?} failed ({}): {stdout}", out.status);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line: {stdout}");
    lines[0].to_string()
}

/// The number after `"name":` in a JSON line (flat enough for this).
fn number(json: &str, name: &str) -> f64 {
    let tag = format!("\"{name}\":");
    let start = json.find(&tag).unwrap_or_else(|| panic!("no {name} in {json}")) + tag.len();
    let text: String = json[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
        .collect();
    text.parse().unwrap_or_else(|_| panic!("{name} is not a number in {json}"))
}

/// A server that answers SET with +OK, except that every 7th command gets an error reply and
/// every 11th closes the connection unanswered.
fn start_flaky_server() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let commands = Arc::new(AtomicU64::new(0));
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let commands = commands.clone();
            thread::spawn(move || {
                let mut decoder = CommandDecoder::new(Limits::default());
                let mut input = BytesMut::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match decoder.parse(&input) {
                        Ok(Some((args, used))) => {
                            input.advance(used);
                            if args.is_empty() {
                                continue;
                            }
                            let n = commands.fetch_add(1, Ordering::Relaxed) + 1;
                            let reply: &[u8] = if n.is_multiple_of(11) {
                                return; // Drops the connection.
                            } else if n.is_multiple_of(7) {
                                b"-ERR injected failure\r\n"
                            } else {
                                b"+OK\r\n"
                            };
                            if stream.write_all(reply).is_err() {
                                return;
                            }
                        }
                        Ok(None) => match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => input.extend_from_slice(&chunk[..n]),
                        },
                        Err(_) => return,
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn errors_are_counted_and_clients_reconnect() {
    let addr = start_flaky_server().to_string();
    let json = kvbench(&[
        "--endpoints",
        &addr,
        "--clients",
        "3",
        "--op",
        "put",
        "--count",
        "200",
        "--keyspace",
        "50",
        "--timeout",
        "5",
    ]);
    let (ops, errors) = (number(&json, "ops"), number(&json, "errors"));
    assert_eq!(ops + errors, 200.0, "every request counts once: {json}");
    // 200 requests see about 200/7 error replies and 200/11 dropped connections.
    assert!(errors >= 20.0, "{json}");
    assert!(number(&json, "reconnects") >= 10.0, "{json}");
    assert!(json.contains("ERR injected failure"), "{json}");
    assert!(json.contains("closed the connection"), "{json}");
}

/// A `redis-server` on a free port with persistence off, killed and its directory removed on
/// drop.
struct RedisServer {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl RedisServer {
    /// Starts one. If redis-server cannot run, fails the test, or returns `None` if
    /// `RAFTKV_SKIP_REDIS_SERVER=1` says to skip it (see [`missing_tool`]).
    fn start(test: &str) -> Option<RedisServer> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).ok()?.local_addr().ok()?.port();
        let dir = std::env::temp_dir().join(format!("kvbench-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                missing_tool(test, "redis-server", "RAFTKV_SKIP_REDIS_SERVER", &e.to_string());
                return None;
            }
        };
        let server =
            RedisServer { child, dir, addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while command(server.addr, &["PING"]).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not answer PING");
            thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One command on a fresh connection.
fn command(addr: SocketAddr, args: &[&str]) -> Result<Value, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let mut out = BytesMut::new();
    resp::write_command(&mut out, args);
    stream.write_all(&out).map_err(|e| e.to_string())?;
    let mut decoder = Decoder::new(Limits::default());
    let mut input = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((value, _)) = decoder.decode(&input).map_err(|e| e.to_string())? {
            return Ok(value);
        }
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        input.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn against_redis_server_the_count_is_made_and_the_keys_exist() {
    let test = "benches::kvbench::against_redis_server_the_count_is_made_and_the_keys_exist";
    let Some(redis) = RedisServer::start(test) else { return };
    println!("running against redis-server at {}", redis.addr);
    let addr = redis.addr.to_string();
    let common = ["--endpoints", &addr, "--clients", "4", "--keyspace", "300", "--key-size", "8"];

    let json = kvbench(&[&common[..], &["--op", "put", "--count", "500", "--preload"]].concat());
    assert_eq!(number(&json, "ops"), 500.0, "{json}");
    assert_eq!(number(&json, "errors"), 0.0, "{json}");
    assert!(number(&json, "ops_per_s") > 0.0, "{json}");
    assert!(number(&json, "p50") > 0.0 && number(&json, "max") >= number(&json, "p99"), "{json}");
    assert_eq!(command(redis.addr, &["DBSIZE"]), Ok(Value::Integer(300)), "preload wrote all");
    let value = command(redis.addr, &["GET", "k0000299"]).expect("GET");
    assert!(matches!(&value, Value::Bulk(Some(v)) if v.len() == 256), "{value:?}");

    let json = kvbench(&[&common[..], &["--op", "get", "--count", "300"]].concat());
    assert_eq!(number(&json, "ops"), 300.0, "{json}");
    assert_eq!(number(&json, "get_hits"), 300.0, "every key exists: {json}");

    let json = kvbench(
        &[
            &common[..],
            &["--op", "mixed", "--read-pct", "30", "--duration", "0.5", "--warmup", "0.2"],
        ]
        .concat(),
    );
    assert!(number(&json, "ops") > 0.0, "{json}");
    assert_eq!(number(&json, "errors"), 0.0, "{json}");
    let (hits, ops) = (number(&json, "get_hits"), number(&json, "ops"));
    assert!(hits > 0.0 && hits < ops, "a mix of gets and puts: {json}");
    assert!(number(&json, "measured_s") >= 0.5, "{json}");
}
