//! The `kvcli` binary, run as a process against a small in-memory stand-in for a server that
//! speaks `RAFTKV.REQUEST`, `INFO` and `AUTH`: its output, its exit status, its errors and its
//! help.
//! (kvserver's `tcp_clerk` test drives the same code against a real cluster.)

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kvclient::proto::{Op, Outcome, Reply, Request};
use kvclient::resp::{self, CommandDecoder, Limits};

/// A one-node store in memory behind the Redis protocol, as node `id`.
struct FakeNode {
    addr: SocketAddr,
}

type Store = Arc<Mutex<BTreeMap<Bytes, Bytes>>>;

impl FakeNode {
    fn start(id: u64) -> FakeNode {
        FakeNode::start_with_users(id, &[])
    }

    /// A node that requires each connection to authenticate first with `AUTH` and one of
    /// `users`' argument lists (none: no authentication).
    fn start_with_users(id: u64, users: &[&[&'static str]]) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Store::default();
        let users: Arc<Vec<Vec<&str>>> = Arc::new(users.iter().map(|u| u.to_vec()).collect());
        // The accept loop lives as long as the test process.
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (store, users) = (Arc::clone(&store), Arc::clone(&users));
                thread::spawn(move || serve(stream, id, &store, &users));
            }
        });
        FakeNode { addr }
    }
}

fn serve(mut stream: TcpStream, id: u64, store: &Store, users: &[Vec<&str>]) {
    let mut decoder = CommandDecoder::new(Limits::default());
    let mut input = BytesMut::new();
    let mut chunk = [0u8; 4096];
    let mut authenticated = users.is_empty();
    loop {
        let Ok(Some((args, used))) = decoder.parse(&input) else {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => input.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let _ = input.split_to(used);
        let mut out = BytesMut::new();
        let command = args[0].to_ascii_uppercase();
        match command.as_slice() {
            b"AUTH" => {
                let given: Vec<&[u8]> = args[1..].iter().map(|a| &a[..]).collect();
                if users.iter().any(|u| u.iter().map(|w| w.as_bytes()).eq(given.iter().copied())) {
                    authenticated = true;
                    resp::write_simple(&mut out, "OK");
                } else {
                    let wrongpass = "WRONGPASS invalid username-password pair or user is disabled.";
                    resp::write_error(&mut out, wrongpass);
                }
            }
            _ if !authenticated => resp::write_error(&mut out, "NOAUTH Authentication required."),
            b"INFO" => {
                let info = format!(
                    "# Raft\r\nnode_id:{id}\r\nrole:leader\r\nterm:4\r\nleader_id:{id}\r\n\
                     commit_index:17\r\napplied_index:16\r\n"
                );
                resp::write_bulk(&mut out, info.as_bytes());
            }
            b"RAFTKV.REQUEST" => {
                let request: Request = postcard::from_bytes(&args[1]).unwrap();
                let reply = Reply::Done(apply(&mut store.lock().unwrap(), request.op));
                resp::write_bulk(&mut out, &postcard::to_allocvec(&reply).unwrap());
            }
            _ => resp::write_error(&mut out, "ERR unknown command"),
        }
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

fn apply(map: &mut BTreeMap<Bytes, Bytes>, op: Op) -> Outcome {
    match op {
        Op::Register { .. } => Outcome::Registered { id: 1 },
        Op::Get { key } => Outcome::Value(map.get(&key).cloned()),
        Op::Put { key, value } => {
            map.insert(key, value);
            Outcome::Written
        }
        Op::Append { key, value } => {
            let mut v = map.get(&key).map(|v| v.to_vec()).unwrap_or_default();
            v.extend_from_slice(&value);
            let len = v.len() as u64;
            map.insert(key, v.into());
            Outcome::Length(len)
        }
        Op::DeleteMany { keys } => {
            Outcome::Count(keys.iter().filter(|k| map.remove(*k).is_some()).count() as u64)
        }
        Op::Scan { start, end, limit } => {
            let mut pairs: Vec<(Bytes, Bytes)> = map
                .range(start..)
                .filter(|(k, _)| end.as_ref().is_none_or(|e| *k < e))
                .take(limit as usize + 1)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let next = (pairs.len() > limit as usize).then(|| pairs.pop().unwrap().0);
            Outcome::Page { pairs, next }
        }
        other => panic!("the fake node does not serve {other:?}"),
    }
}

/// An address nothing listens on.
fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn kvcli<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvcli")).args(args).output().expect("kvcli runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `kvcli --cluster <cluster> --timeout 20s <args>`: (exit status, stdout, stderr).
fn run(cluster: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--cluster", cluster, "--timeout", "20s"];
    all.extend_from_slice(args);
    let output = kvcli(&all);
    (output.status.code().expect("an exit status"), text(&output.stdout), text(&output.stderr))
}

#[test]
fn kvcli_reads_and_writes_through_whichever_node_answers() {
    let node = FakeNode::start(2);
    // Node 1 is down; node 2 answers.
    let cluster = format!("1={},2={}", closed_port(), node.addr);
    let cluster = cluster.as_str();
    assert_eq!(run(cluster, &["put", "k", "v"]), (0, "OK\n".into(), String::new()));
    assert_eq!(run(cluster, &["get", "k"]), (0, "v\n".into(), String::new()));
    assert_eq!(run(cluster, &["get", "nothing"]), (1, "(nil)\n".into(), String::new()));
    assert_eq!(run(cluster, &["append", "k", "-w"]), (0, "3\n".into(), String::new()));
    assert_eq!(run(cluster, &["get", "k"]).1, "v-w\n");
    assert_eq!(run(cluster, &["put", "two", "line one\nline two"]).0, 0);
    assert_eq!(run(cluster, &["get", "two"]).1, "line one\nline two\n", "UTF-8 prints as is");
    assert_eq!(run(cluster, &["delete", "k"]), (0, "1\n".into(), String::new()));
    assert_eq!(run(cluster, &["delete", "k"]), (0, "0\n".into(), String::new()));

    for key in ["s1", "s2", "s3", "t1"] {
        assert_eq!(run(cluster, &["put", key, &key.to_uppercase()]).0, 0);
    }
    let (status, out, err) = run(cluster, &["scan", "s", "t"]);
    assert_eq!((status, out.as_str(), err.as_str()), (0, "s1\tS1\ns2\tS2\ns3\tS3\n", ""));
    let (status, out, err) = run(cluster, &["scan", "s", "--limit", "2"]);
    assert_eq!((status, out.as_str()), (0, "s1\tS1\ns2\tS2\n"));
    assert!(err.contains("more pairs follow"), "{err}");
    let (_, out, _) = run(cluster, &["scan"]);
    assert_eq!(out, "s1\tS1\ns2\tS2\ns3\tS3\nt1\tT1\ntwo\t\"line one\\nline two\"\n");
}

#[cfg(unix)]
#[test]
fn kvcli_passes_bytes_through_and_escapes_what_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let node = FakeNode::start(1);
    let cluster = format!("1={}", node.addr);
    let binary = OsStr::from_bytes(b"\xff\x01ok");
    let put = [OsStr::new("--cluster"), OsStr::new(&cluster), OsStr::new("put"), binary, binary];
    assert!(kvcli(&put).status.success());
    let get = [OsStr::new("--cluster"), OsStr::new(&cluster), OsStr::new("get"), binary];
    let output = kvcli(&get);
    assert_eq!(text(&output.stdout), "\"\\xff\\u{1}ok\"\n");
}

#[test]
fn kvcli_status_shows_each_node() {
    let node = FakeNode::start(3);
    let down = closed_port();
    let cluster = format!("3={},4={down}", node.addr);
    let (status, out, _) = run(&cluster, &["status"]);
    assert_eq!(status, 0, "one node answered");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let words = |line: &str| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(words(lines[0]), ["NODE", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED"]);
    let addr = node.addr.to_string();
    assert_eq!(words(lines[1]), ["3", addr.as_str(), "leader", "4", "3", "17", "16"]);
    assert!(lines[2].starts_with(&format!("4     {down}")), "{out}");
    assert!(lines[2].contains("unreachable (cannot connect"), "{out}");
    // A node that answers as another id than --cluster says is flagged.
    let (_, out, _) = run(&format!("5={}", node.addr), &["status"]);
    assert!(out.contains("(says it is node 3: check --cluster)"), "{out}");

    let (status, _, err) = run(&format!("1={down}"), &["status"]);
    assert_eq!(status, 2);
    assert_eq!(err, "kvcli: no node answered\n");
}

#[test]
fn kvcli_authenticates_with_pass_and_user() {
    let node = FakeNode::start_with_users(1, &[&["s3cret"], &["reader", "r-pw"]]);
    let cluster = format!("1={}", node.addr);
    let cluster = cluster.as_str();
    assert_eq!(run(cluster, &["-a", "s3cret", "put", "k", "v"]), (0, "OK\n".into(), String::new()));
    assert_eq!(run(cluster, &["--pass", "s3cret", "get", "k"]), (0, "v\n".into(), String::new()));
    let reader = ["--user", "reader", "--pass", "r-pw"];
    assert_eq!(run(cluster, &[&reader[..], &["get", "k"]].concat()), (0, "v\n".into(), "".into()));
    let (status, out, _) = run(cluster, &[&reader[..], &["status"]].concat());
    assert_eq!(status, 0, "{out}");
    assert!(out.lines().nth(1).is_some_and(|l| l.contains("leader")), "{out}");

    // The password in the environment rather than on the command line.
    let output = Command::new(env!("CARGO_BIN_EXE_kvcli"))
        .args(["--cluster", cluster, "--user", "reader", "get", "k"])
        .env("KVCLI_AUTH", "r-pw")
        .output()
        .unwrap();
    assert_eq!((output.status.code(), text(&output.stdout)), (Some(0), "v\n".into()));

    // Without a password, or with a wrong one: refused at once (not retried until --timeout),
    // with the server's words.
    let started = Instant::now();
    let (status, out, err) = run(cluster, &["get", "k"]);
    assert_eq!((status, out.as_str()), (2, ""));
    assert!(err.starts_with("kvcli: the service refused the operation: NOAUTH"), "{err}");
    assert!(err.contains("give it with --pass, or KVCLI_AUTH"), "{err}");
    let (status, _, err) = run(cluster, &["-a", "guess", "put", "k", "w"]);
    assert_eq!(status, 2);
    assert!(err.contains("refused the operation: WRONGPASS invalid username-password"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let (status, out, _) = run(cluster, &["-a", "guess", "status"]);
    assert_eq!(status, 2);
    assert!(out.contains("refused (access denied: WRONGPASS"), "{out}");
    let (status, out, _) = run(cluster, &["status"]);
    assert_eq!(status, 2);
    assert!(out.contains("refused (access denied: NOAUTH"), "{out}");
    assert_eq!(run(cluster, &["-a", "s3cret", "get", "k"]).1, "v\n", "nothing was written");

    let (status, _, err) = run(cluster, &["--user", "reader", "get", "k"]);
    assert_eq!(
        (status, err.as_str()),
        (2, "kvcli: --user needs a password: --pass, or KVCLI_AUTH\n")
    );
}

#[test]
fn kvcli_gives_up_after_its_timeout_and_says_why() {
    let (one, two) = (closed_port(), closed_port());
    let cluster = format!("1={one},2={two}");
    let started = Instant::now();
    let output = kvcli(&["--cluster", &cluster, "--timeout", "500ms", "get", "k"]);
    let waited = started.elapsed();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(text(&output.stdout), "");
    let err = text(&output.stderr);
    assert!(err.starts_with("kvcli: no server finished the operation within"), "{err}");
    assert!(err.contains(&format!("node 1 at {one}: cannot connect")), "{err}");
    assert!(err.contains(&format!("node 2 at {two}: cannot connect")), "{err}");
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "gave up only after {waited:?}");
}

#[test]
fn kvcli_help_explains_every_command_and_flag() {
    let output = kvcli(&["--help"]);
    assert!(output.status.success());
    let help = text(&output.stdout);
    for word in [
        "get",
        "put",
        "append",
        "delete",
        "scan",
        "status",
        "--cluster",
        "--timeout",
        "--pass",
        "--user",
        "KVCLI_AUTH",
        "Exit status",
    ] {
        assert!(help.contains(word), "--help mentions {word}:\n{help}");
    }
    let output = kvcli(&["scan", "--help"]);
    assert!(text(&output.stdout).contains("--limit <N>"));
    let output = kvcli(&["get"]);
    assert_eq!(output.status.code(), Some(2), "a missing KEY is a usage error");
    assert!(text(&output.stderr).contains("<KEY>"));
}
