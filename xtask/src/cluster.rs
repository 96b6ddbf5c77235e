//! `cargo xtask cluster`: a local cluster of `kvserver` processes to try the store by hand, and
//! (`--smoke`) a quick end-to-end check of the real binary that `test-all` runs.
//!
//! The steps, in order:
//! 1. pick the ports (node `i` of `n` listens for clients on `base + i - 1` and for peers on
//!    `peer_base + i - 1`) and check that each one is free;
//! 2. build the programs (`cargo build --release -p raftkv`: `kvserver` and `kvcli`);
//! 3. make the cluster directory: `node<i>/` is node `i`'s data directory and `node<i>.log` its
//!    log (stdout and stderr, appended, so a restarted cluster keeps its history);
//! 4. make a throw-away CA and a certificate per node in `tls/` and a random cluster id in
//!    `cluster-id` (both kept, so a restart reuses them; see [`crate::pki`]), unless
//!    `--plain-peers`;
//! 5. start the nodes with `--init`, the cluster id and the peer TLS flags (a directory that
//!    already holds that node's state is simply reopened, so `--dir` of an earlier cluster
//!    restarts it);
//! 6. poll `INFO` on every client port until all nodes name the same leader and that node says
//!    `role:leader`;
//! 7. print how to connect, then wait for Ctrl-C (or SIGTERM or SIGHUP), or, with `--smoke`,
//!    write a key through node 1 with `redis-cli` and read it back through node 2;
//! 8. stop: SIGTERM to every node, SIGKILL to any still running after `--stop-timeout`, and a
//!    report of each exit status and whether the log says "stopped cleanly".
//!
//! **Signals.** Interactively, the servers run in process groups of their own, so the terminal's
//! Ctrl-C reaches only this program, which then stops them in order. A smoke run installs no
//! handler and leaves the servers in the terminal's group: a Ctrl-C during `test-all` stops
//! them with everything else. If this program panics, dropping the [`Cluster`] kills the
//! servers. SIGTERM is sent with the `kill` command, which keeps this crate free of `unsafe`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kvclient::resp::{self, Decoder, Limits, Value};

use crate::{Outcome, cargo, run_command, workspace_root};

/// The default client port of node 1 (Redis's own is 6379).
const DEFAULT_CLIENT_BASE: u16 = 6381;
/// The default peer (Raft) port of node 1.
const DEFAULT_PEER_BASE: u16 = 7101;
/// How often the leader poll and the wait loops look again.
const POLL: Duration = Duration::from_millis(100);

/// Flags of `cargo xtask cluster`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Args {
    /// How many nodes to start.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=99))]
    nodes: u16,
    /// Client (Redis protocol) port of node 1; node i listens on this plus i-1.
    /// [default: 6381; with --smoke, free ports chosen by the OS]
    #[arg(long, value_name = "PORT")]
    base_port: Option<u16>,
    /// Peer (Raft) port of node 1; node i listens on this plus i-1.
    /// [default: 7101; with --smoke, free ports chosen by the OS]
    #[arg(long, value_name = "PORT")]
    peer_base_port: Option<u16>,
    /// Directory for the nodes' data and logs; the directory of an earlier cluster with the
    /// same nodes restarts that cluster. [default: target/cluster/YYYYMMDDTHHMMSSZ, UTC]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Build and run the debug (dev profile) server instead of the release one.
    #[arg(long)]
    debug: bool,
    /// Do not build; run the server binary already in the target directory.
    #[arg(long)]
    no_build: bool,
    /// How long to wait for the nodes to agree on a leader, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    leader_timeout: u64,
    /// How long each node has to exit after SIGTERM before it gets SIGKILL, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    stop_timeout: u64,
    /// Start the cluster, `redis-cli set k v` on node 1, `redis-cli get k` on node 2 (expecting
    /// `v`), stop, and exit 0 only if every step worked and every node stopped cleanly. Fails
    /// if redis-cli is not installed, unless RAFTKV_SKIP_REDIS_CLI=1 (then it skips, exit 0,
    /// with a message). The directory is deleted after a successful run unless --dir names it.
    #[arg(long)]
    smoke: bool,
    /// Run the peers over plain TCP instead of mutual TLS (on 127.0.0.1 only), e.g. to
    /// measure what TLS costs.
    #[arg(long)]
    plain_peers: bool,
    /// Serve clients over TLS too, with each node's certificate (clients need
    /// `redis-cli --tls --cacert <dir>/tls/ca.pem`).
    #[arg(long)]
    tls: bool,
    /// Extra flags for every kvserver, after `--`: `cargo xtask cluster -- --read-mode lease`.
    #[arg(last = true, value_name = "KVSERVER FLAGS")]
    server_args: Vec<String>,
}

impl Args {
    /// The flags `test-all`'s smoke step uses: a debug build (the test step has just compiled
    /// most of it), free ports chosen by the OS, a directory deleted afterwards.
    pub(crate) fn smoke_for_test_all() -> Args {
        Args {
            nodes: 3,
            base_port: None,
            peer_base_port: None,
            dir: None,
            debug: true,
            no_build: false,
            leader_timeout: 30,
            stop_timeout: 10,
            smoke: true,
            plain_peers: false,
            tls: false,
            server_args: Vec::new(),
        }
    }
}

/// `cargo xtask cluster`: runs the cluster (or the smoke check) as [`Args`] says.
pub(crate) fn run(args: &Args) -> Outcome {
    if args.smoke && !redis_cli_found() {
        let why = "redis-cli is not installed (it comes with the redis-tools package: apt-get \
                   install redis-tools)";
        if std::env::var("RAFTKV_SKIP_REDIS_CLI").as_deref() == Ok("1") {
            println!("cluster --smoke: SKIPPED: {why}; RAFTKV_SKIP_REDIS_CLI=1");
            return Outcome::Skipped;
        }
        eprintln!("cluster --smoke: {why}; set RAFTKV_SKIP_REDIS_CLI=1 to skip this check");
        return Outcome::Failed;
    }
    match start_and_run(args) {
        Ok(true) => Outcome::Ok,
        Ok(false) => Outcome::Failed,
        Err(e) => {
            eprintln!("xtask cluster: {e}");
            Outcome::Failed
        }
    }
}

/// One node of the cluster.
struct Node {
    id: u16,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// Where this run's output starts in the (appended) log.
    log_start: u64,
    /// The running process; `None` before it starts and after it has been reaped.
    child: Option<Child>,
    /// How it ended, once it has.
    exit: Option<Exit>,
}

/// How a node's process ended.
struct Exit {
    status: ExitStatus,
    /// It ignored SIGTERM until the timeout and got SIGKILL.
    killed: bool,
    /// It ended without being asked to.
    unexpected: bool,
}

/// The running nodes. Dropping it kills any node still running (the path out on a panic or an
/// early error); the orderly way out is [`Cluster::stop`].
struct Cluster {
    dir: PathBuf,
    nodes: Vec<Node>,
    /// How to reach the nodes' client ports over TLS, with `--tls`.
    client_tls: Option<kvclient::TlsConfig>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn start_and_run(args: &Args) -> Result<bool, String> {
    let addrs = choose_ports(args)?;
    if !args.no_build {
        build(args.debug)?;
    }
    let profile_dir = if args.debug { "debug" } else { "release" };
    let bin_dir = target_dir().join(profile_dir);
    let server_bin = bin_dir.join("kvserver");
    if !server_bin.is_file() {
        return Err(format!(
            "{} does not exist; run without --no-build to build it",
            server_bin.display()
        ));
    }
    let default_dir = args.dir.is_none();
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            let stamp = utc_timestamp(std::time::SystemTime::now());
            let name =
                if args.smoke { format!("smoke-{stamp}-{}", std::process::id()) } else { stamp };
            target_dir().join("cluster").join(name)
        }
    };
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;

    let mut cluster = Cluster {
        nodes: addrs
            .iter()
            .enumerate()
            .map(|(i, &(client_addr, peer_addr))| {
                let id = i as u16 + 1;
                Node {
                    id,
                    client_addr,
                    peer_addr,
                    data_dir: dir.join(format!("node{id}")),
                    log_path: dir.join(format!("node{id}.log")),
                    log_start: 0,
                    child: None,
                    exit: None,
                }
            })
            .collect(),
        dir,
        client_tls: None,
    };
    // Interactively, the servers are in process groups of their own, so from here on a Ctrl-C
    // must come to us (to stop them) rather than end this program and orphan them.
    let signals = if args.smoke { None } else { Some(signal_channel()?) };
    let mut tls = Vec::new();
    if !args.plain_peers || args.tls {
        println!("==> TLS certificates in {}", cluster.dir.join("tls").display());
        tls = crate::pki::ensure(&cluster.dir, args.nodes)?;
    }
    if args.tls {
        let ca = cluster.dir.join("tls").join("ca.pem");
        cluster.client_tls = Some(kvclient::TlsConfig::new(&ca, None)?);
    }
    let cluster_id = crate::pki::cluster_id(&cluster.dir)?;
    println!(
        "==> starting {} nodes in {} (cluster {cluster_id}, peers over {})",
        cluster.nodes.len(),
        cluster.dir.display(),
        if args.plain_peers { "plain TCP" } else { "mutual TLS" }
    );
    let mut flags = |i: usize| -> Vec<String> {
        let Some(files) = tls.get(i) else { return Vec::new() };
        let mut flags = if args.plain_peers { Vec::new() } else { files.peer_flags() };
        if args.tls {
            flags.extend(files.client_flags());
        }
        flags
    };
    let node_flags: Vec<Vec<String>> = (0..cluster.nodes.len()).map(&mut flags).collect();
    cluster.start(&server_bin, &args.server_args, &cluster_id, &node_flags, !args.smoke)?;
    println!("==> waiting for a leader (up to {}s)", args.leader_timeout);
    let started = Instant::now();
    let leader_timeout = Duration::from_secs(args.leader_timeout);
    let worked = match cluster.wait_for_leader(leader_timeout, signals.as_ref()) {
        Ok((leader, term)) => {
            println!(
                "    node {leader} is the leader (term {term}), elected {:.1}s after the start",
                started.elapsed().as_secs_f64()
            );
            match &signals {
                None => smoke_check(&cluster),
                Some(signals) => {
                    print_banner(&cluster, &bin_dir);
                    cluster.wait_for_signal(signals)
                }
            }
        }
        Err(e) => {
            eprintln!("xtask cluster: {e}");
            false
        }
    };
    println!("==> stopping the nodes (SIGTERM; SIGKILL after {}s)", args.stop_timeout);
    let clean = cluster.stop(Duration::from_secs(args.stop_timeout));
    let ok = worked && clean;
    if args.smoke && ok && default_dir {
        let _ = fs::remove_dir_all(&cluster.dir);
    } else {
        println!("data and logs are in {}", cluster.dir.display());
    }
    println!("{}", if ok { "cluster: ok" } else { "cluster: FAILED" });
    Ok(ok)
}

/// A channel that receives a message on SIGINT, SIGTERM or SIGHUP, which no longer end this
/// program.
fn signal_channel() -> Result<Receiver<()>, String> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
    ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    })
    .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    Ok(rx)
}

impl Cluster {
    /// Starts every node, its output appended to its log.
    fn start(
        &mut self,
        server_bin: &Path,
        extra: &[String],
        cluster_id: &str,
        node_flags: &[Vec<String>],
        own_process_group: bool,
    ) -> Result<(), String> {
        let members: Vec<String> =
            self.nodes.iter().map(|n| format!("{}={}", n.id, n.peer_addr)).collect();
        let members = members.join(",");
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&node.log_path)
                .map_err(|e| format!("cannot open {}: {e}", node.log_path.display()))?;
            node.log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
            let err_log = log.try_clone().map_err(|e| format!("cannot share the log: {e}"))?;
            let mut cmd = Command::new(server_bin);
            cmd.arg("--id")
                .arg(node.id.to_string())
                .arg("--cluster")
                .arg(&members)
                .arg("--client-addr")
                .arg(node.client_addr.to_string())
                .arg("--data-dir")
                .arg(&node.data_dir)
                .arg("--init")
                .args(["--cluster-id", cluster_id])
                .args(&node_flags[i])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err_log);
            if own_process_group {
                std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            }
            let child =
                cmd.spawn().map_err(|e| format!("cannot start {}: {e}", server_bin.display()))?;
            println!(
                "    node {} (pid {}): clients {}, peers {}, log {}",
                node.id,
                child.id(),
                node.client_addr,
                node.peer_addr,
                node.log_path.display()
            );
            node.child = Some(child);
        }
        Ok(())
    }

    /// Reaps every node that has exited without being asked to, reporting each; false if one had.
    fn reap_unexpected(&mut self) -> bool {
        let mut all_running = true;
        for node in &mut self.nodes {
            let Some(child) = &mut node.child else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                node.exit = Some(Exit { status, killed: false, unexpected: true });
                all_running = false;
                eprintln!(
                    "xtask cluster: node {} exited unasked ({status}); the end of {}:\n{}",
                    node.id,
                    node.log_path.display(),
                    log_tail(node, 15)
                );
            }
        }
        all_running
    }

    /// Polls `INFO` on every node until all of them name the same leader and that node says it
    /// leads; returns the leader's id and term.
    /// A signal on `signals` ends the wait with an error.
    fn wait_for_leader(
        &mut self,
        timeout: Duration,
        signals: Option<&Receiver<()>>,
    ) -> Result<(u64, u64), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if signals.is_some_and(|s| s.try_recv().is_ok()) {
                return Err("interrupted while waiting for a leader".into());
            }
            if !self.reap_unexpected() {
                return Err("a node exited while the cluster was starting".into());
            }
            let infos: Vec<Result<RaftInfo, String>> = self
                .nodes
                .iter()
                .map(|n| query_info(n.client_addr, self.client_tls.as_ref()))
                .collect();
            if let Some(found) = agreed_leader(&infos) {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                let states: Vec<String> = self
                    .nodes
                    .iter()
                    .zip(&infos)
                    .map(|(n, info)| match info {
                        Ok(i) => format!(
                            "node {}: {} in term {}, leader {}",
                            n.id,
                            i.role,
                            i.term,
                            i.leader_id.map_or("none".into(), |l| l.to_string())
                        ),
                        Err(e) => format!("node {}: {e}", n.id),
                    })
                    .collect();
                return Err(format!(
                    "no leader after {}s ({}); see the logs in {}",
                    timeout.as_secs(),
                    states.join("; "),
                    self.dir.display()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for a message on `signals` (SIGINT, SIGTERM or SIGHUP), or for every node to have
    /// exited; true if no node exited unasked.
    fn wait_for_signal(&mut self, signals: &Receiver<()>) -> bool {
        loop {
            if signals.recv_timeout(Duration::from_millis(500)).is_ok() {
                println!("\n==> signal received");
                break;
            }
            self.reap_unexpected();
            if self.nodes.iter().all(|n| n.child.is_none()) {
                println!("==> every node has exited");
                break;
            }
        }
        self.nodes.iter().all(|n| n.exit.as_ref().is_none_or(|e| !e.unexpected))
    }

    /// Sends SIGTERM to every running node, waits up to `timeout` for each (then SIGKILL),
    /// and reports how each one ended; true if every node exited 0 on its own and said it
    /// stopped cleanly.
    fn stop(&mut self, timeout: Duration) -> bool {
        for node in &self.nodes {
            if let Some(child) = &node.child {
                terminate(child.id());
            }
        }
        let deadline = Instant::now() + timeout;
        for node in &mut self.nodes {
            let Some(mut child) = node.child.take() else { continue };
            let mut killed = false;
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL / 2),
                    Ok(None) => {
                        killed = true;
                        let _ = child.kill();
                        break child.wait().ok();
                    }
                    Err(e) => {
                        eprintln!("xtask cluster: cannot wait for node {}: {e}", node.id);
                        let _ = child.kill();
                        break child.wait().ok();
                    }
                }
            };
            if let Some(status) = status {
                node.exit = Some(Exit { status, killed, unexpected: false });
            }
        }
        let mut all_clean = true;
        for node in &self.nodes {
            let said_clean = read_log(node).contains("stopped cleanly");
            let line = match &node.exit {
                None => {
                    all_clean = false;
                    "its status is unknown".to_string()
                }
                Some(exit) => {
                    let clean =
                        exit.status.success() && !exit.killed && !exit.unexpected && said_clean;
                    all_clean &= clean;
                    let how = if exit.killed {
                        format!("did not stop within {}s; killed", timeout.as_secs())
                    } else if exit.unexpected {
                        "had exited unasked".to_string()
                    } else {
                        "stopped".to_string()
                    };
                    format!(
                        "{how} ({}){}",
                        exit.status,
                        if said_clean { ", \"stopped cleanly\"" } else { ", not clean" }
                    )
                }
            };
            println!("    node {}: {line}", node.id);
        }
        all_clean
    }
}

/// What `INFO`'s `# Raft` section says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RaftInfo {
    role: String,
    term: u64,
    leader_id: Option<u64>,
    node_id: u64,
}

/// Reads the `# Raft` fields out of an `INFO` reply (`name:value` lines).
fn parse_info(text: &str) -> Result<RaftInfo, String> {
    let field = |name: &str| {
        text.lines().find_map(|line| line.trim_end().strip_prefix(name)?.strip_prefix(':'))
    };
    let number = |name: &str| -> Result<u64, String> {
        let v = field(name).ok_or_else(|| format!("INFO has no {name}"))?;
        v.parse().map_err(|_| format!("INFO {name}:{v} is not a number"))
    };
    let leader_id = match field("leader_id") {
        None | Some("none") => None,
        Some(v) => Some(v.parse().map_err(|_| format!("INFO leader_id:{v} is not a number"))?),
    };
    Ok(RaftInfo {
        role: field("role").ok_or("INFO has no role")?.to_string(),
        term: number("term")?,
        leader_id,
        node_id: number("node_id")?,
    })
}

/// The leader every node names, with its term, if all answered, all agree, and the leader
/// itself says `role:leader`.
fn agreed_leader(infos: &[Result<RaftInfo, String>]) -> Option<(u64, u64)> {
    let infos: Vec<&RaftInfo> = infos.iter().map(|i| i.as_ref().ok()).collect::<Option<_>>()?;
    let leader = infos.first()?.leader_id?;
    let leader_info = infos.iter().find(|i| i.node_id == leader)?;
    let agreed = infos.iter().all(|i| i.leader_id == Some(leader));
    (agreed && leader_info.role == "leader").then_some((leader, leader_info.term))
}

/// Sends `INFO` to `addr` and parses the reply.
fn query_info(addr: SocketAddr, tls: Option<&kvclient::TlsConfig>) -> Result<RaftInfo, String> {
    match resp_request(addr, &["INFO"], Duration::from_millis(500), tls)? {
        Value::Bulk(Some(text)) => parse_info(&String::from_utf8_lossy(&text)),
        other => Err(format!("INFO answered {other:?}")),
    }
}

/// Sends one command on a fresh connection and returns the reply.
fn resp_request(
    addr: SocketAddr,
    args: &[&str],
    timeout: Duration,
    tls: Option<&kvclient::TlsConfig>,
) -> Result<Value, String> {
    let sock = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut stream = match tls {
        Some(tls) => tls.connect(sock, addr).map_err(|e| format!("TLS: {e}"))?,
        None => kvclient::tls::Stream::Plain(sock),
    };
    let mut out = BytesMut::new();
    resp::write_command(&mut out, args);
    stream.write_all(&out).and_then(|()| stream.flush()).map_err(|e| e.to_string())?;
    let mut decoder = Decoder::new(Limits::default());
    let mut input = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((value, _)) = decoder.decode(&input).map_err(|e| e.to_string())? {
            return Ok(value);
        }
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the connection closed before the reply".into());
        }
        input.extend_from_slice(&chunk[..n]);
    }
}

/// The smoke check: write through node 1, read through node 2 (node 1 if alone).
fn smoke_check(cluster: &Cluster) -> bool {
    let writer = &cluster.nodes[0];
    let reader = cluster.nodes.get(1).unwrap_or(writer);
    println!("==> smoke: set k v on node {}, get k on node {}", writer.id, reader.id);
    let ca = cluster.dir.join("tls").join("ca.pem");
    let ca = cluster.client_tls.is_some().then_some(ca.as_path());
    let set = redis_cli(writer.client_addr, ca, &["set", "k", "v"]);
    let get = redis_cli(reader.client_addr, ca, &["get", "k"]);
    let ok = set.as_deref() == Ok("OK") && get.as_deref() == Ok("v");
    println!("    set k v -> {set:?}, get k -> {get:?} (expected Ok(\"OK\"), Ok(\"v\"))");
    ok
}

/// Runs `redis-cli -h host -p port args...` (with `--tls --cacert ca` if `ca` is given),
/// returning its trimmed output.
fn redis_cli(addr: SocketAddr, ca: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("redis-cli");
    cmd.arg("-h").arg(addr.ip().to_string()).arg("-p").arg(addr.port().to_string());
    if let Some(ca) = ca {
        cmd.arg("--tls").arg("--cacert").arg(ca);
    }
    cmd.args(args);
    let out = cmd.output().map_err(|e| format!("cannot run redis-cli: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "redis-cli {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn redis_cli_found() -> bool {
    Command::new("redis-cli")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The (client, peer) address of each node: the flags' ports, each checked free, or for a
/// smoke run without port flags, ports the OS picks.
fn choose_ports(args: &Args) -> Result<Vec<(SocketAddr, SocketAddr)>, String> {
    let n = args.nodes;
    let localhost = |port| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let range = |base: u16, flag: &str| -> Result<Vec<u16>, String> {
        (0..n)
            .map(|i| {
                base.checked_add(i)
                    .ok_or_else(|| format!("{flag} {base}: {n} ports from there pass 65535"))
            })
            .collect()
    };
    let (clients, peers) =
        if args.smoke && args.base_port.is_none() && args.peer_base_port.is_none() {
            let mut ports = free_ports(2 * n)?;
            let peers = ports.split_off(n.into());
            (ports, peers)
        } else {
            (
                range(args.base_port.unwrap_or(DEFAULT_CLIENT_BASE), "--base-port")?,
                range(args.peer_base_port.unwrap_or(DEFAULT_PEER_BASE), "--peer-base-port")?,
            )
        };
    let mut seen = std::collections::BTreeSet::new();
    for (kind, ports) in [("client", &clients), ("peer", &peers)] {
        for (i, &port) in ports.iter().enumerate() {
            if !seen.insert(port) {
                return Err(format!(
                    "port {port} is both a client and a peer port; move one range"
                ));
            }
            // Bind and drop: a port someone listens on fails here with "address in use".
            if let Err(e) = TcpListener::bind(localhost(port)) {
                return Err(format!(
                    "127.0.0.1:{port} (node {}'s {kind} port) is not free: {e}. Stop what \
                     listens there (see `ss -ltnp 'sport = :{port}'`), or choose other ports \
                     with --base-port and --peer-base-port.",
                    i + 1
                ));
            }
        }
    }
    Ok(clients.into_iter().zip(peers).map(|(c, p)| (localhost(c), localhost(p))).collect())
}

/// `n` distinct ports the OS reports free, found by binding port 0 (another program may take
/// one before the server binds it, which the server then reports).
fn free_ports(n: u16) -> Result<Vec<u16>, String> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())).collect()
}

fn build(debug: bool) -> Result<(), String> {
    println!("==> building kvserver and kvcli ({})", if debug { "debug" } else { "release" });
    let mut cmd = cargo();
    cmd.arg("build");
    if !debug {
        cmd.arg("--release");
    }
    cmd.args(["-p", "raftkv"]);
    if run_command(&mut cmd) { Ok(()) } else { Err("the build failed".into()) }
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set, else `target/` in the workspace.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// Asks a process to stop, with SIGTERM (through `kill(1)`, to stay free of `unsafe`).
fn terminate(pid: u32) {
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !sent {
        // It may already have exited; the wait that follows finds out.
        eprintln!("xtask cluster: could not send SIGTERM to pid {pid}");
    }
}

/// This run's part of a node's log.
fn read_log(node: &Node) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(&node.log_path)
        && f.seek(SeekFrom::Start(node.log_start)).is_ok()
    {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `lines` lines of this run's part of a node's log, indented.
fn log_tail(node: &Node, lines: usize) -> String {
    let text = read_log(node);
    let all: Vec<&str> = text.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    tail.iter().map(|l| format!("    | {l}\n")).collect()
}

fn print_banner(cluster: &Cluster, bin_dir: &Path) {
    let first = &cluster.nodes[0];
    let second = cluster.nodes.get(1).unwrap_or(first);
    let port = |n: &Node| n.client_addr.port();
    println!();
    println!("The cluster is up: {} nodes on 127.0.0.1.", cluster.nodes.len());
    println!("  data and logs: {}", cluster.dir.display());
    println!("    node<i>/ is node i's data directory, node<i>.log its log");
    println!("    follow them with: tail -F {}/node*.log", cluster.dir.display());
    println!("  connect to any node (followers forward writes and serve reads):");
    let tls = match &cluster.client_tls {
        Some(_) => format!(" --tls --cacert {}", cluster.dir.join("tls").join("ca.pem").display()),
        None => String::new(),
    };
    println!("    redis-cli{tls} -p {} set k v", port(first));
    println!("    redis-cli{tls} -p {} get k", port(second));
    let endpoints: Vec<String> = cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{}={}", i + 1, n.client_addr))
        .collect();
    let kvcli = bin_dir.join("kvcli");
    println!("    {}{tls} --cluster {} get k", kvcli.display(), endpoints.join(","));
    println!("    redis-benchmark -p {} -t set,get", port(first));
    println!(
        "  restart this cluster later with: cargo xtask cluster --dir {} --base-port {} \
         --peer-base-port {} --nodes {}",
        cluster.dir.display(),
        port(first),
        first.peer_addr.port(),
        cluster.nodes.len()
    );
    println!("Press Ctrl-C to stop the cluster.");
}

/// `time` as a compact UTC timestamp, `YYYYMMDDTHHMMSSZ`, for directory names.
fn utc_timestamp(time: std::time::SystemTime) -> String {
    let secs = time.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`:
/// count in 400-year eras that start on March 1st, so the leap day ends each year).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // Days since 0000-03-01.
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month =
        if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "19700101T000000Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 12 * 3600 + 34 * 60 + 56);
        assert_eq!(utc_timestamp(leap), "20000229T123456Z");
        // 2100 is not a leap year: the day after 2100-02-28 is March 1st.
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    fn info(node_id: u64, role: &str, leader: Option<u64>) -> Result<RaftInfo, String> {
        Ok(RaftInfo { role: role.into(), term: 3, leader_id: leader, node_id })
    }

    #[test]
    fn info_text_is_parsed() {
        let text = "# Server\r\ntcp_port:6381\r\n\r\n# Raft\r\nnode_id:2\r\nrole:follower\r\n\
                    term:7\r\nleader_id:1\r\ncommit_index:5\r\n";
        assert_eq!(
            parse_info(text),
            info(2, "follower", Some(1)).map(|i| RaftInfo { term: 7, ..i })
        );
        let text = "node_id:1\r\nrole:candidate\r\nterm:2\r\nleader_id:none\r\n";
        assert_eq!(parse_info(text).map(|i| i.leader_id), Ok(None));
        assert!(parse_info("role:leader\r\n").is_err(), "missing fields are errors");
        assert!(parse_info("node_id:1\r\nrole:leader\r\nterm:x\r\n").is_err());
    }

    #[test]
    fn a_leader_counts_only_when_every_node_agrees() {
        let agreed = [info(1, "leader", Some(1)), info(2, "follower", Some(1))];
        assert_eq!(agreed_leader(&agreed), Some((1, 3)));
        let split = [info(1, "leader", Some(1)), info(2, "follower", Some(2))];
        assert_eq!(agreed_leader(&split), None);
        let not_yet = [info(1, "follower", Some(1)), info(2, "follower", Some(1))];
        assert_eq!(agreed_leader(&not_yet), None, "the named leader must say it leads");
        let silent = [info(1, "leader", Some(1)), Err("connection refused".to_string())];
        assert_eq!(agreed_leader(&silent), None);
        let none = [info(1, "candidate", None)];
        assert_eq!(agreed_leader(&none), None);
    }

    #[test]
    fn taken_ports_are_reported_with_the_flag_to_change() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let mut args = Args::smoke_for_test_all();
        args.smoke = false;
        args.base_port = Some(port);
        args.peer_base_port = Some(free_ports(1).expect("a free port")[0]);
        args.nodes = 1;
        let err = choose_ports(&args).expect_err("the port is taken");
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(err.contains("--base-port"), "{err}");
    }
}
