//! `kvserver`: one replica of the replicated key-value store, as a process.
//!
//! Raft's log and hard state live in `FileStorage` under `<data-dir>/raft`, the data in an LSM
//! database under `<data-dir>/data`; peers talk over TCP (`raft_tcp::TcpTransport`), clients speak
//! the Redis protocol (`kvserver::redis`). See `kvserver --help` and `docs/operations.md`.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kvproto::resp::Limits;
use kvserver::auth::{AccessControl, PasswordHash};
use kvserver::disk::{DiskLimits, DiskMonitor, SpaceProbe};
use kvserver::redis::{RedisConfig, RedisServer};
use kvserver::tls::{ClientAuth, ClientTls};
use kvserver::{KvServer, KvStateMachine, ReadMode, ServerConfig};
use raft::{FileStorage, NodeId, SnapshotSpool};
use raft_tcp::{PeerTls, TcpConfig, TcpTransport};

/// The file in the data directory that says which node of which cluster the directory
/// belongs to.
const IDENTITY_FILE: &str = "identity";

#[derive(Parser, Debug)]
#[command(
    name = "kvserver",
    version,
    about = "One replica of a replicated, linearizable key-value store (Raft + an LSM engine), \
             speaking the Redis protocol to clients.",
    long_about = None,
    after_help = "Every flag can also be given in a config file (--config FILE) as `name = value` \
                  lines, without the leading dashes; flags on the command line win.\n\n\
                  Example: a three-node cluster on one machine (data in ./data/N):\n  \
                  kvserver --id 1 --cluster 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \
                  --client-addr 127.0.0.1:6381 --data-dir data/1 --init\n  \
                  (and likewise for ids 2 and 3), then: redis-cli -p 6381 set k v"
)]
struct Args {
    /// A config file of `name = value` lines (flag names without dashes; `#` starts a
    /// comment). Flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// This node's id: a positive number, unique in the cluster and stable for the life of the
    /// node's data directory.
    #[arg(long)]
    id: Option<NodeId>,
    /// Every member of the cluster, this node included, as `id=host:port` pairs separated by
    /// commas: the addresses the members use to reach each other (Raft traffic).
    #[arg(long, value_name = "ID=ADDR,...")]
    cluster: Option<String>,
    /// Where to listen for peers; defaults to this node's address in --cluster. Use it to
    /// listen on 0.0.0.0 while peers reach the node by a routable address.
    #[arg(long, value_name = "ADDR")]
    peer_addr: Option<SocketAddr>,
    /// With --init: the id of the new cluster, 16 hex digits, the same on every first member
    /// (the peer handshake refuses nodes of another cluster). A one-node cluster may leave it
    /// out and get a random one; for more members, --init without it refuses to start and
    /// suggests a fresh random id. Later starts read it from the identity file (and check it
    /// against this flag if given).
    #[arg(long, value_name = "HEX")]
    cluster_id: Option<String>,
    /// This node's certificate chain (PEM) for mutual TLS with peers. Its certificate must
    /// carry the DNS name raftkv-node-<id> (see docs/operations.md, "Security"). Needs
    /// --peer-key-file and --peer-trusted-ca-file.
    #[arg(long, value_name = "FILE")]
    peer_cert_file: Option<PathBuf>,
    /// The private key (PEM) of --peer-cert-file.
    #[arg(long, value_name = "FILE")]
    peer_key_file: Option<PathBuf>,
    /// The CA certificate(s) (PEM) that peers' certificates must be signed by.
    #[arg(long, value_name = "FILE")]
    peer_trusted_ca_file: Option<PathBuf>,
    /// Allow plain-TCP peer traffic on an address other than loopback. Without TLS, anyone who
    /// can reach the peer port can speak as a member: only for a network you trust entirely.
    #[arg(long)]
    insecure_peers: bool,
    /// Where to listen for clients (the Redis protocol).
    #[arg(long, value_name = "ADDR")]
    client_addr: Option<SocketAddr>,
    /// The node's data directory: Raft's log, the LSM database, the identity file.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// This is the first start of a brand-new cluster: create an empty data directory. Without
    /// it, the node refuses to start on an empty directory, because a node that lost its data
    /// must not rejoin under its old id (it could vote twice in one term).
    #[arg(long)]
    init: bool,
    /// How reads are served: read-index (linearizable, a heartbeat round per batch of reads),
    /// lease (linearizable if clocks drift less than the lease margin; no round while the
    /// leader's lease holds), or log (every read is a log entry).
    #[arg(long, value_name = "MODE")]
    read_mode: Option<String>,
    /// Snapshot the state and truncate Raft's log once the log passes this many bytes.
    #[arg(long, value_name = "BYTES")]
    max_raft_state: Option<u64>,
    /// The size at which the database's memtable is written out as a table. Larger means fewer
    /// table writes and compactions (and up to three times this in memory).
    #[arg(long, value_name = "BYTES")]
    memtable_bytes: Option<usize>,
    /// The Raft clock tick, in milliseconds.
    #[arg(long, value_name = "MS")]
    tick_ms: Option<u64>,
    /// Heartbeat interval, in ticks.
    #[arg(long, value_name = "TICKS")]
    heartbeat_ticks: Option<u32>,
    /// Election timeout, in ticks (randomized between this and twice this).
    #[arg(long, value_name = "TICKS")]
    election_ticks: Option<u32>,
    /// The largest frame accepted from a peer, in bytes; larger frames close the connection.
    #[arg(long, value_name = "BYTES")]
    max_frame_bytes: Option<u32>,
    /// How many AppendEntries the leader keeps unanswered per follower. 1 (the default) sends
    /// the next append only when the last one is answered, so everything proposed meanwhile
    /// travels and is fsynced together: the fewest messages and fsyncs per write, best on a
    /// LAN. Raise it where the round trip between nodes is long next to an fsync.
    #[arg(long, value_name = "N")]
    max_inflight_appends: Option<usize>,
    /// The largest client command, in bytes: the sum of its arguments' lengths (about the
    /// size of the Raft entry a write becomes). A larger one is answered with an error naming
    /// this limit, and its bytes are dropped as they arrive. Default 8 MiB; at most half of
    /// --max-frame-bytes, so that an entry fits in one AppendEntries frame.
    #[arg(long, value_name = "BYTES")]
    max_request_bytes: Option<u64>,
    /// The most client connections at once; more are answered
    /// `-ERR max number of clients reached` and closed. Default 10000.
    #[arg(long, value_name = "N")]
    max_clients: Option<usize>,
    /// Close a client connection that sends nothing for this many seconds (0, the default:
    /// never).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// A client session (the dedup entry of a client's writes) expires after this many
    /// seconds without an applied write, on the log clock the leader stamps. Default 3600;
    /// the leader's value applies to the sessions it registers.
    #[arg(long, value_name = "SECONDS")]
    session_ttl: Option<u64>,
    /// Raise the disk alarm (writes refused cluster-wide, reads and deletes served) once the
    /// data directory holds this many bytes. 0 (the default): no quota, only
    /// --min-free-bytes.
    #[arg(long, value_name = "BYTES")]
    quota_bytes: Option<u64>,
    /// Raise the disk alarm once the data directory's file system has less than this free, so
    /// that it trips before the disk is full. Default: three memtables (--memtable-bytes)
    /// plus 32 MiB.
    #[arg(long, value_name = "BYTES")]
    min_free_bytes: Option<u64>,
    /// Log level on stderr: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Require clients to authenticate with `AUTH PASSWORD` (the user `default`, which may read
    /// and write) before any command but AUTH, HELLO, PING and QUIT, as Redis's requirepass.
    /// Prefer the config file to the command line, where other users of the machine can see
    /// it.
    #[arg(long, value_name = "PASSWORD")]
    requirepass: Option<String>,
    /// Users who may connect, each read-only or read-write: a file of
    /// `user <name> <ro|rw> <password hash>` lines (`#` starts a comment), the hashes from
    /// --hash-password. Clients authenticate with `AUTH <name> <password>`. See
    /// docs/operations.md, "Client authentication".
    #[arg(long, value_name = "FILE")]
    users_file: Option<PathBuf>,
    /// Serve clients over TLS with this certificate chain (PEM), as Redis's tls-cert-file.
    /// Needs --tls-key-file. `redis-cli --tls --cacert ca.pem` connects.
    #[arg(long, value_name = "FILE")]
    tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert-file.
    #[arg(long, value_name = "FILE")]
    tls_key_file: Option<PathBuf>,
    /// The CA (PEM) client certificates must be signed by, if clients present one.
    #[arg(long, value_name = "FILE")]
    tls_ca_cert_file: Option<PathBuf>,
    /// Whether clients must present a certificate: yes, optional (the default with
    /// --tls-ca-cert-file: checked if presented) or no (the default without it).
    #[arg(long, value_name = "yes|optional|no")]
    tls_auth_clients: Option<String>,
    /// Read a password from standard input (its first line), print its salted hash for a
    /// --users-file line, and exit. Example: `kvserver --hash-password < pw.txt`.
    #[arg(long, exclusive = true)]
    hash_password: bool,
}

/// The settings, once flags and the config file are merged and checked.
#[derive(Debug)]
struct Settings {
    id: NodeId,
    cluster: BTreeMap<NodeId, SocketAddr>,
    peer_addr: SocketAddr,
    /// From --cluster-id, if given.
    cluster_id: Option<u64>,
    /// Certificate, key and trusted CA files for peer TLS.
    peer_tls: Option<[PathBuf; 3]>,
    client_addr: SocketAddr,
    data_dir: PathBuf,
    init: bool,
    read_mode: ReadMode,
    max_raft_state: u64,
    memtable_bytes: usize,
    tick: Duration,
    heartbeat_ticks: u32,
    election_ticks: u32,
    max_frame_bytes: u32,
    max_inflight_appends: usize,
    max_request_bytes: u64,
    max_clients: usize,
    idle_timeout: Option<Duration>,
    session_ttl: Duration,
    quota_bytes: Option<u64>,
    min_free_bytes: u64,
    log_level: log::LevelFilter,
    /// Client access control (--requirepass, --users-file); `None`: none.
    access: Option<Arc<AccessControl>>,
    /// Client TLS: certificate and key, the CA for client certificates, and whether they are
    /// required.
    client_tls: Option<ClientTlsFiles>,
}

/// The files of client TLS (--tls-*), read at start.
#[derive(Debug, PartialEq)]
struct ClientTlsFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
    auth: ClientAuth,
}

/// File descriptors kept for everything but client connections (listeners, peers, the Raft
/// log's and the database's files), when checking the limit against --max-clients.
const RESERVED_FDS: u64 = 256;

/// The `kvserver` program: parses the process's arguments, runs one replica until SIGTERM or
/// Ctrl-C, and says why it stopped.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if args.hash_password {
        return hash_password(&mut std::io::stdin().lock(), &mut std::io::stdout().lock());
    }
    let settings = match settings(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kvserver: {e}");
            eprintln!("Run `kvserver --help` for the flags.");
            return ExitCode::from(2);
        }
    };
    Logger::install(settings.log_level, settings.id);
    exit_on_panic();
    match run(&settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `--hash-password`: reads a password (the first line of `input`, without its line end) and
/// writes its hash, with a fresh salt, to `out`.
fn hash_password(input: &mut dyn std::io::BufRead, out: &mut dyn Write) -> ExitCode {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        eprint!("Password (it shows as you type; end it with Enter): ");
    }
    let mut line = String::new();
    if let Err(e) = input.read_line(&mut line) {
        eprintln!("kvserver: --hash-password: cannot read the password: {e}");
        return ExitCode::from(2);
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("kvserver: --hash-password: no password on standard input (its first line)");
        return ExitCode::from(2);
    }
    match writeln!(out, "{}", PasswordHash::new(password.as_bytes())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvserver: --hash-password: cannot write the hash: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The access control of --requirepass (`default`, read-write) and --users-file; `None` if
/// neither is given.
fn access_control(
    requirepass: Option<&str>,
    users_file: Option<&Path>,
) -> Result<Option<AccessControl>, String> {
    let mut access = match requirepass {
        None => None,
        Some("") => return Err("--requirepass must not be empty".into()),
        Some(password) => Some(AccessControl::with_password(password.as_bytes())),
    };
    if let Some(path) = users_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --users-file {}: {e}", path.display()))?;
        access
            .get_or_insert_with(AccessControl::new)
            .add_users_file(&text)
            .map_err(|e| format!("--users-file {}: {e}", path.display()))?;
    }
    Ok(access)
}

/// Reads `name = value` lines.
fn read_config_file(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let mut map = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!("{}:{}: expected `name = value`", path.display(), n + 1));
        };
        let value = value.trim().trim_matches('"').to_string();
        map.insert(name.trim().replace('_', "-"), value);
    }
    Ok(map)
}

fn settings(args: Args) -> Result<Settings, String> {
    let mut file = match &args.config {
        Some(path) => read_config_file(path)?,
        None => BTreeMap::new(),
    };
    // A flag wins over the file; `take` removes what is used, so leftovers are unknown names.
    let mut take = |name: &str, flag: Option<String>| -> Option<String> {
        let from_file = file.remove(name);
        flag.or(from_file)
    };
    fn parse<T: std::str::FromStr>(name: &str, v: Option<String>) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        v.map(|v| v.parse::<T>().map_err(|e| format!("--{name} {v:?}: {e}"))).transpose()
    }
    let id: NodeId =
        parse("id", take("id", args.id.map(|v| v.to_string())))?.ok_or("--id is required")?;
    if id == 0 {
        return Err("--id must be a positive number".into());
    }
    let cluster_text = take("cluster", args.cluster).ok_or("--cluster is required")?;
    let mut cluster = BTreeMap::new();
    for member in cluster_text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let (mid, addr) = member
            .split_once('=')
            .ok_or_else(|| format!("--cluster: {member:?} is not id=host:port"))?;
        let mid: NodeId = mid.trim().parse().map_err(|e| format!("--cluster: id {mid:?}: {e}"))?;
        let addr: SocketAddr =
            addr.trim().parse().map_err(|e| format!("--cluster: address {addr:?}: {e}"))?;
        if cluster.insert(mid, addr).is_some() {
            return Err(format!("--cluster names node {mid} twice"));
        }
    }
    let own = *cluster.get(&id).ok_or_else(|| format!("--cluster does not include --id {id}"))?;
    let peer_addr = parse("peer-addr", take("peer-addr", args.peer_addr.map(|a| a.to_string())))?
        .unwrap_or(own);
    let cluster_id = take("cluster-id", args.cluster_id)
        .map(|v| parse_cluster_id(&v).map_err(|e| format!("--cluster-id {v:?}: {e}")))
        .transpose()?;
    let mut path = |name: &str, flag: Option<PathBuf>| {
        take(name, flag.map(|p| p.display().to_string())).map(PathBuf::from)
    };
    let peer_tls = match [
        path("peer-cert-file", args.peer_cert_file),
        path("peer-key-file", args.peer_key_file),
        path("peer-trusted-ca-file", args.peer_trusted_ca_file),
    ] {
        [Some(cert), Some(key), Some(ca)] => Some([cert, key, ca]),
        [None, None, None] => None,
        _ => {
            return Err("peer TLS needs all three of --peer-cert-file, --peer-key-file and \
                        --peer-trusted-ca-file"
                .into());
        }
    };
    let insecure_peers =
        args.insecure_peers || take("insecure-peers", None).is_some_and(|v| v == "true");
    if peer_tls.is_none() && !peer_addr.ip().is_loopback() && !insecure_peers {
        return Err(format!(
            "refusing to listen for peers on {peer_addr} without TLS: anyone who can reach that \
             port could speak as a member of the cluster. Give every node a certificate for \
             raftkv-node-<id> signed by a CA of your own and pass --peer-cert-file, \
             --peer-key-file and --peer-trusted-ca-file (docs/operations.md, \"Security\", has \
             the commands), or pass --insecure-peers if this network is trusted entirely."
        ));
    }
    let client_addr =
        parse("client-addr", take("client-addr", args.client_addr.map(|a| a.to_string())))?
            .ok_or("--client-addr is required")?;
    let data_dir: PathBuf = take("data-dir", args.data_dir.map(|d| d.display().to_string()))
        .ok_or("--data-dir is required")?
        .into();
    let init = args.init || take("init", None).is_some_and(|v| v == "true");
    let read_mode = match take("read-mode", args.read_mode).as_deref() {
        None | Some("read-index") => ReadMode::ReadIndex,
        Some("lease") => ReadMode::Lease,
        Some("log") => ReadMode::Log,
        Some(other) => {
            return Err(format!("--read-mode {other:?}: expected read-index, lease or log"));
        }
    };
    let max_raft_state = parse(
        "max-raft-state",
        take("max-raft-state", args.max_raft_state.map(|v| v.to_string())),
    )?
    .unwrap_or(64 << 20);
    let memtable_bytes = parse(
        "memtable-bytes",
        take("memtable-bytes", args.memtable_bytes.map(|v| v.to_string())),
    )?
    .unwrap_or(32 << 20);
    if memtable_bytes < 4096 {
        return Err(format!("--memtable-bytes {memtable_bytes}: at least 4096, please"));
    }
    let tick_ms: u64 =
        parse("tick-ms", take("tick-ms", args.tick_ms.map(|v| v.to_string())))?.unwrap_or(10);
    let heartbeat_ticks = parse(
        "heartbeat-ticks",
        take("heartbeat-ticks", args.heartbeat_ticks.map(|v| v.to_string())),
    )?
    .unwrap_or(5);
    let election_ticks = parse(
        "election-ticks",
        take("election-ticks", args.election_ticks.map(|v| v.to_string())),
    )?
    .unwrap_or(50);
    let max_frame_bytes = parse(
        "max-frame-bytes",
        take("max-frame-bytes", args.max_frame_bytes.map(|v| v.to_string())),
    )?
    .unwrap_or(64 << 20);
    let max_inflight_appends = parse(
        "max-inflight-appends",
        take("max-inflight-appends", args.max_inflight_appends.map(|v| v.to_string())),
    )?
    .unwrap_or(1);
    if max_inflight_appends == 0 {
        return Err("--max-inflight-appends must be at least 1".into());
    }
    let max_request_bytes = parse(
        "max-request-bytes",
        take("max-request-bytes", args.max_request_bytes.map(|v| v.to_string())),
    )?
    .unwrap_or(kvserver::redis::DEFAULT_MAX_REQUEST_BYTES);
    if max_request_bytes < 1024 || max_request_bytes > u64::from(max_frame_bytes) / 2 {
        return Err(format!(
            "--max-request-bytes {max_request_bytes}: between 1024 and half of \
             --max-frame-bytes ({max_frame_bytes}), please: a request's Raft entry must fit in \
             one frame with room for its framing"
        ));
    }
    let max_clients =
        parse("max-clients", take("max-clients", args.max_clients.map(|v| v.to_string())))?
            .unwrap_or(10_000);
    if max_clients == 0 {
        return Err("--max-clients must be at least 1".into());
    }
    let timeout: u64 =
        parse("timeout", take("timeout", args.timeout.map(|v| v.to_string())))?.unwrap_or(0);
    let idle_timeout = (timeout > 0).then(|| Duration::from_secs(timeout));
    let session_ttl =
        parse("session-ttl", take("session-ttl", args.session_ttl.map(|v| v.to_string())))?
            .map_or(kvserver::DEFAULT_SESSION_TTL, Duration::from_secs);
    if session_ttl.is_zero() {
        return Err("--session-ttl must be at least 1".into());
    }
    let quota_bytes: u64 =
        parse("quota-bytes", take("quota-bytes", args.quota_bytes.map(|v| v.to_string())))?
            .unwrap_or(0);
    let quota_bytes = (quota_bytes > 0).then_some(quota_bytes);
    let min_free_bytes = parse(
        "min-free-bytes",
        take("min-free-bytes", args.min_free_bytes.map(|v| v.to_string())),
    )?
    .unwrap_or_else(|| default_min_free_bytes(memtable_bytes));
    let log_level = match take("log-level", args.log_level).as_deref() {
        None | Some("info") => log::LevelFilter::Info,
        Some("error") => log::LevelFilter::Error,
        Some("warn") => log::LevelFilter::Warn,
        Some("debug") => log::LevelFilter::Debug,
        Some("trace") => log::LevelFilter::Trace,
        Some(other) => {
            return Err(format!(
                "--log-level {other:?}: expected error, warn, info, debug or trace"
            ));
        }
    };
    let requirepass = take("requirepass", args.requirepass);
    let users_file: Option<PathBuf> =
        take("users-file", args.users_file.map(|p| p.display().to_string())).map(PathBuf::from);
    let access = access_control(requirepass.as_deref(), users_file.as_deref())?.map(Arc::new);
    let mut path = |name: &str, flag: Option<PathBuf>| {
        take(name, flag.map(|p| p.display().to_string())).map(PathBuf::from)
    };
    let tls_files = (
        path("tls-cert-file", args.tls_cert_file),
        path("tls-key-file", args.tls_key_file),
        path("tls-ca-cert-file", args.tls_ca_cert_file),
    );
    let auth = match take("tls-auth-clients", args.tls_auth_clients).as_deref() {
        None if tls_files.2.is_some() => ClientAuth::Optional,
        None | Some("no") => ClientAuth::No,
        Some("optional") => ClientAuth::Optional,
        Some("yes") => ClientAuth::Required,
        Some(other) => {
            return Err(format!("--tls-auth-clients {other:?}: expected yes, optional or no"));
        }
    };
    let client_tls = match tls_files {
        (Some(cert), Some(key), ca) => {
            if auth != ClientAuth::No && ca.is_none() {
                return Err("--tls-auth-clients needs --tls-ca-cert-file".into());
            }
            Some(ClientTlsFiles { cert, key, ca, auth })
        }
        (None, None, None) => None,
        _ => return Err("client TLS needs --tls-cert-file and --tls-key-file".into()),
    };
    if let Some(name) = file.keys().next() {
        return Err(format!("config file: unknown setting {name:?}"));
    }
    if tick_ms == 0 {
        return Err("--tick-ms must be at least 1".into());
    }
    Ok(Settings {
        id,
        cluster,
        peer_addr,
        cluster_id,
        peer_tls,
        client_addr,
        data_dir,
        init,
        read_mode,
        max_raft_state,
        memtable_bytes,
        tick: Duration::from_millis(tick_ms),
        heartbeat_ticks,
        election_ticks,
        max_frame_bytes,
        max_inflight_appends,
        max_request_bytes,
        max_clients,
        idle_timeout,
        session_ttl,
        quota_bytes,
        min_free_bytes,
        log_level,
        access,
        client_tls,
    })
}

/// The default free-space floor: room to flush every memtable the database may hold (the
/// active one and two waiting, each up to `memtable_bytes`), plus 32 MiB for the Raft log (it
/// grows in 4 MiB steps), the alarm entries and the writes in flight when the alarm trips.
fn default_min_free_bytes(memtable_bytes: usize) -> u64 {
    (memtable_bytes as u64).saturating_mul(3).saturating_add(32 << 20)
}

/// How often a node measures its disk.
const DISK_CHECK_EVERY: Duration = Duration::from_millis(250);

/// Parses a cluster id: 1 to 16 hex digits, not all zero.
fn parse_cluster_id(text: &str) -> Result<u64, String> {
    let id = u64::from_str_radix(text.trim(), 16)
        .map_err(|e| format!("expected up to 16 hex digits ({e})"))?;
    if id == 0 {
        return Err("must not be zero".into());
    }
    Ok(id)
}

/// Checks (or, with `--init` on an empty directory, writes) the identity file: the directory
/// must belong to this node id of a cluster with these members. Returns the cluster id it
/// records (0 for a file written before cluster ids existed).
fn check_identity(s: &Settings) -> Result<u64, String> {
    let path = s.data_dir.join(IDENTITY_FILE);
    let members: Vec<String> = s.cluster.keys().map(ToString::to_string).collect();
    let expected = format!("node {}\nmembers {}\n", s.id, members.join(","));
    match std::fs::read_to_string(&path) {
        Ok(found) if found.starts_with(&expected) => {
            let rest = &found[expected.len()..];
            let recorded = match rest.strip_prefix("cluster ").map(|r| r.trim_end()) {
                Some(hex) => parse_cluster_id(hex)
                    .map_err(|e| format!("{}: cluster id {hex:?}: {e}", path.display()))?,
                None if rest.is_empty() => {
                    log::warn!(
                        "{} records no cluster id (it predates them): the handshake uses 0, so \
                         every peer must have none either",
                        path.display()
                    );
                    0
                }
                None => return Err(format!("{}: unexpected {rest:?}", path.display())),
            };
            match s.cluster_id {
                Some(given) if given != recorded => Err(format!(
                    "--cluster-id {given:016x} does not match cluster {recorded:016x} recorded in \
                     {}: this directory belongs to another cluster",
                    path.display()
                )),
                _ => Ok(recorded),
            }
        }
        Ok(found) => Err(format!(
            "{} belongs to another node: it says {:?}, but this is node {} of members {}. \
             Start the node that owns this directory, or use another --data-dir.",
            path.display(),
            found.trim().replace('\n', "; "),
            s.id,
            members.join(",")
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let empty = std::fs::read_dir(&s.data_dir).map_or(true, |mut d| d.next().is_none());
            if !s.init {
                return Err(format!(
                    "{} holds no state for node {}. Refusing to start: if this node's data was \
                     lost, it must not rejoin the cluster as node {} (it may have voted in the \
                     current term, and could vote twice). Replace it with a new member (see \
                     docs/operations.md, \"Replace a failed node\"). If this is the first start \
                     of a brand-new cluster, pass --init.",
                    s.data_dir.display(),
                    s.id,
                    s.id
                ));
            }
            if !empty {
                return Err(format!(
                    "--init: {} is not empty but has no identity file; refusing to mix a new \
                     node's state with unknown files",
                    s.data_dir.display()
                ));
            }
            let cluster_id = match s.cluster_id {
                Some(id) => id,
                None if s.cluster.len() == 1 => random_cluster_id(),
                None => {
                    return Err(format!(
                        "--init of a cluster of {} members needs --cluster-id, the same on every \
                         first member, so that they recognize each other. A fresh random one: \
                         --cluster-id {:016x}",
                        s.cluster.len(),
                        random_cluster_id()
                    ));
                }
            };
            std::fs::create_dir_all(&s.data_dir)
                .map_err(|e| format!("cannot create {}: {e}", s.data_dir.display()))?;
            let tmp = s.data_dir.join("identity.tmp");
            let text = format!("{expected}cluster {cluster_id:016x}\n");
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(text.as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(&s.data_dir)?.sync_all()
            };
            write().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            log::info!(
                "initialized {} as node {} of cluster {cluster_id:016x}",
                s.data_dir.display(),
                s.id
            );
            Ok(cluster_id)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// A random, non-zero cluster id.
fn random_cluster_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

/// The Raft configuration for `s`, spooling incoming snapshots in `spool`.
fn raft_config(s: &Settings, spool: PathBuf) -> Result<raft::Config, String> {
    let mut raft = raft::Config::new(s.id, s.cluster.keys().copied().collect());
    raft.heartbeat_ticks = s.heartbeat_ticks;
    raft.election_ticks = s.election_ticks;
    raft.lease_reads = s.read_mode == ReadMode::Lease;
    // The lease gives up 20% of the election timeout (rounded up) to clock drift, as the
    // documentation of `read-mode lease` says.
    raft.lease_margin_ticks = s.election_ticks.div_ceil(5);
    raft.max_inflight_appends = s.max_inflight_appends;
    raft.snapshot_spool = SnapshotSpool::Dir(spool);
    // Every Raft message must fit one peer frame. A request's entry is its arguments plus a
    // few bytes of lengths per argument: allow twice --max-request-bytes (a request whose
    // entry is larger still is refused with an error when it is submitted), within the frame.
    let room = u64::from(s.max_frame_bytes).saturating_sub(raft::MESSAGE_OVERHEAD_BYTES);
    raft.max_entry_bytes = s.max_request_bytes.saturating_mul(2).min(room.saturating_sub(30));
    raft.max_append_bytes = raft.max_append_bytes.min(room);
    raft.snapshot_chunk_bytes = raft.snapshot_chunk_bytes.min(room);
    raft.validate().map_err(|e| format!("invalid Raft settings: {e}"))?;
    Ok(raft)
}

fn run(s: &Settings) -> Result<(), String> {
    let cluster_id = check_identity(s)?;
    raise_fd_limit(s.max_clients);
    let spool = s.data_dir.join("spool");
    std::fs::create_dir_all(&spool)
        .map_err(|e| format!("cannot create {}: {e}", spool.display()))?;
    let storage = FileStorage::open(s.data_dir.join("raft"))
        .map_err(|e| format!("cannot open the Raft log: {e}"))?;
    // No WAL: Raft's log is the write-ahead log of the state machine (see KvStateMachine).
    let db = lsm::Db::open(
        s.data_dir.join("data"),
        lsm::Options { wal: false, memtable_bytes: s.memtable_bytes, ..lsm::Options::default() },
    )
    .map_err(|e| format!("cannot open the database: {e}"))?;
    let machine =
        KvStateMachine::new(db.clone()).map_err(|e| format!("cannot read the database: {e}"))?;

    let mut tcp = TcpConfig::new(s.id, s.cluster.clone());
    tcp.max_frame_bytes = s.max_frame_bytes;
    tcp.cluster_id = cluster_id;
    if let Some([cert, key, ca]) = &s.peer_tls {
        let tls = PeerTls::from_pem_files(cert, key, ca)
            .map_err(|e| format!("cannot set up peer TLS: {e}"))?;
        tcp.tls = Some(tls);
    }
    let transport = TcpTransport::bind(s.peer_addr, tcp)
        .map_err(|e| format!("cannot listen for peers on {}: {e}", s.peer_addr))?;
    let raft = raft_config(s, spool)?;
    let config = ServerConfig {
        max_raft_state: Some(s.max_raft_state),
        read_mode: s.read_mode,
        follower_reads: true,
        forward_writes: true,
        request_timeout: Duration::from_secs(2),
        session_ttl: s.session_ttl,
    };
    let server = KvServer::start(raft, s.tick, storage, transport, Box::new(machine), config)
        .map_err(|e| format!("cannot start the replica: {e}"))?;

    let listener = TcpListener::bind(s.client_addr)
        .map_err(|e| format!("cannot listen for clients on {}: {e}", s.client_addr))?;
    let limits = DiskLimits {
        dir: s.data_dir.clone(),
        quota_bytes: s.quota_bytes,
        min_free_bytes: s.min_free_bytes,
        state_dir: Some(s.data_dir.join("data")),
    };
    let probe_db = db.clone();
    let probes: Vec<SpaceProbe> = vec![Box::new(move || probe_db.no_space())];
    let monitor = DiskMonitor::start(server.clone(), limits, probes, DISK_CHECK_EVERY)
        .map_err(|e| format!("cannot start the disk monitor: {e}"))?;
    let monitor = Arc::new(monitor);
    let (info_db, info_server, info_monitor) = (db.clone(), server.clone(), Arc::clone(&monitor));
    let info: kvserver::redis::InfoSource = Arc::new(move || {
        let st = info_db.stats();
        let alarms = info_server.disk_alarms();
        let nodes: Vec<String> = alarms.iter().map(ToString::to_string).collect();
        format!(
            "# Storage\r\nlsm_flushes:{}\r\nlsm_compactions:{}\r\nlsm_slowed_writes:{}\r\n\
             lsm_stalled_writes:{}\r\nlsm_no_space_errors:{}\r\nraft_log_no_space_errors:{}\r\n\
             \r\n# Disk\r\ndisk_alarm:{}\r\ndisk_alarm_nodes:{}\r\nwrites_refused:{}\r\n{}",
            st.flushes,
            st.compactions,
            st.slowed_writes,
            st.stalled_writes,
            st.no_space_errors,
            info_server.node().storage_no_space_errors(),
            if alarms.is_empty() { "none" } else { "nospace" },
            if nodes.is_empty() { "none".to_string() } else { nodes.join(",") },
            u8::from(info_server.disk_refusal().is_some()),
            info_monitor.info()
        )
    });
    let max_request = usize::try_from(s.max_request_bytes).unwrap_or(usize::MAX);
    let defaults = RedisConfig::default();
    let config = RedisConfig {
        limits: Limits {
            max_bulk_bytes: defaults.limits.max_bulk_bytes.max(max_request),
            ..defaults.limits
        },
        max_request_bytes: s.max_request_bytes,
        // One unfinished command and its framing (see RedisConfig::max_query_buffer).
        max_query_buffer: max_request.saturating_add(32 << 20),
        max_clients: s.max_clients,
        idle_timeout: s.idle_timeout,
        info: Some(info),
        access: s.access.clone(),
        tls: match &s.client_tls {
            None => None,
            Some(f) => Some(
                ClientTls::from_pem_files(&f.cert, &f.key, f.ca.as_deref(), f.auth)
                    .map_err(|e| format!("cannot set up client TLS: {e}"))?,
            ),
        },
        ..defaults
    };
    let redis = RedisServer::start(listener, server.clone(), config)
        .map_err(|e| format!("cannot serve clients: {e}"))?;
    match &s.access {
        Some(access) => {
            let users: Vec<String> =
                access.users().map(|(name, p)| format!("{name} ({p:?})")).collect();
            log::info!("clients must authenticate; users: {}", users.join(", "));
        }
        None => log::info!("clients need no password (no --requirepass or --users-file)"),
    }
    log::info!(
        "node {} serving clients on {} (Redis protocol), peers on {}, data in {}",
        s.id,
        redis.local_addr(),
        s.peer_addr,
        s.data_dir.display()
    );

    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<&str>(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send("a termination signal");
    })
    .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    // Wait for a signal, or for the replica to fail by itself.
    loop {
        if let Ok(why) = stop_rx.recv_timeout(Duration::from_millis(200)) {
            log::info!("stopping on {why}");
            break;
        }
        if let Some(failure) = server.failure() {
            redis.stop();
            server.kill();
            return Err(format!("the replica stopped: {failure}"));
        }
    }
    redis.stop();
    drop(monitor);
    server.kill();
    drop(server);
    db.flush().map_err(|e| format!("cannot flush the database: {e}"))?;
    log::info!("stopped cleanly");
    Ok(())
}

/// Makes a panic on any thread end the process, with status 101, after the panic's message and
/// location are printed and logged. A node whose Raft, apply or connection thread died would
/// otherwise linger half-alive (answering clients, looking healthy); exiting lets a supervisor
/// see the failure and restart it, and the restart recovers from the disk.
fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        log::error!("a thread panicked ({info}); exiting so that the node can be restarted");
        std::process::exit(101);
    }));
}

/// Raises the soft limit on open file descriptors to the hard limit, as Redis does (each client
/// connection holds one), and logs what it got; warns if that is short of what `max_clients`
/// connections need.
#[cfg(unix)]
fn raise_fd_limit(max_clients: usize) {
    let want = (max_clients as u64).saturating_add(RESERVED_FDS);
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the limits into the struct it is given, which is valid.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let e = std::io::Error::last_os_error();
        log::warn!("cannot read the file descriptor limit: {e}");
        return;
    }
    let was = limit.rlim_cur;
    // An unlimited hard limit cannot be the soft limit (Linux caps it at fs.nr_open).
    let target = if limit.rlim_max == libc::RLIM_INFINITY { want.max(was) } else { limit.rlim_max };
    if target > was {
        let raised = libc::rlimit { rlim_cur: target, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct it is given, which is valid.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = target;
        } else {
            let e = std::io::Error::last_os_error();
            log::warn!("cannot raise the file descriptor limit from {was} to {target}: {e}");
        }
    }
    log::info!(
        "file descriptor limit: {} (was {was}; hard limit {})",
        limit.rlim_cur,
        if limit.rlim_max == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            limit.rlim_max.to_string()
        }
    );
    if limit.rlim_cur < want {
        log::warn!(
            "the file descriptor limit ({}) is below the {want} that --max-clients {max_clients} \
             needs (one per client, {RESERVED_FDS} for the rest): connections past the limit \
             fail to be accepted. Raise the hard limit (ulimit -Hn, systemd's LimitNOFILE) or \
             lower --max-clients",
            limit.rlim_cur
        );
    }
}

#[cfg(not(unix))]
fn raise_fd_limit(_max_clients: usize) {}

/// Writes log records to stderr: `time level node message`.
struct Logger {
    level: log::LevelFilter,
    node: NodeId,
}

impl Logger {
    fn install(level: log::LevelFilter, node: NodeId) {
        let logger = Box::leak(Box::new(Logger { level, node }));
        if log::set_logger(logger).is_ok() {
            log::set_max_level(level);
        }
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = format!(
                "{} {:<5} node={} {}: {}\n",
                utc_now(),
                record.level(),
                self.node,
                record.target(),
                record.args()
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// The current time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc_now() -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let mut all = vec!["kvserver"];
        all.extend_from_slice(args);
        settings(Args::try_parse_from(all).map_err(|e| e.to_string())?)
    }

    const CLUSTER: &str = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003";

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kvserver-main-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn flags_are_parsed_and_checked() {
        let s = parse(&[
            "--id",
            "2",
            "--cluster",
            CLUSTER,
            "--client-addr",
            "127.0.0.1:6382",
            "--data-dir",
            "/tmp/x",
            "--read-mode",
            "lease",
            "--tick-ms",
            "5",
            "--log-level",
            "debug",
        ])
        .unwrap();
        assert_eq!((s.id, s.cluster.len()), (2, 3));
        assert_eq!(s.peer_addr, "127.0.0.1:7002".parse().unwrap(), "defaults to its cluster entry");
        assert_eq!((s.read_mode, s.tick), (ReadMode::Lease, Duration::from_millis(5)));
        assert_eq!((s.election_ticks, s.heartbeat_ticks, s.max_raft_state), (50, 5, 64 << 20));
        assert_eq!(s.memtable_bytes, 32 << 20);
        assert_eq!(s.max_inflight_appends, 1);
        assert_eq!((s.max_request_bytes, s.max_clients, s.idle_timeout), (8 << 20, 10_000, None));
        assert_eq!((s.quota_bytes, s.min_free_bytes), (None, 3 * (32 << 20) + (32 << 20)));
        assert_eq!(s.log_level, log::LevelFilter::Debug);
        assert!(!s.init);
        let raft = raft_config(&s, PathBuf::from("/tmp/x/spool")).unwrap();
        assert!(raft.lease_reads);
        assert_eq!((raft.election_ticks, raft.heartbeat_ticks), (50, 5));
        assert_eq!(raft.lease_margin_ticks, 10, "the lease margin is 20% of the election timeout");
        assert_eq!(raft.max_entry_bytes, 16 << 20, "twice the request limit");
        assert!(raft.max_message_bytes() <= u64::from(s.max_frame_bytes));
        let small = ["--id", "1", "--cluster", CLUSTER, "--client-addr", "127.0.0.1:1"];
        let small = [&small[..], &["--data-dir", "d", "--max-frame-bytes", "4096"]].concat();
        let s = parse(&[&small[..], &["--max-request-bytes", "2048"]].concat()).unwrap();
        let raft = raft_config(&s, PathBuf::from("d/spool")).unwrap();
        assert!(raft.max_message_bytes() <= 4096, "small frames still carry every message");
        assert!(raft.max_entry_bytes >= 2048, "a request at the limit still fits");
        let base = ["--id", "1", "--cluster", CLUSTER, "--client-addr", "127.0.0.1:1"];
        let s = parse(&[&base[..], &["--data-dir", "d", "--election-ticks", "12"]].concat());
        let raft = raft_config(&s.unwrap(), PathBuf::from("d/spool")).unwrap();
        assert_eq!(raft.lease_margin_ticks, 3, "20% of 12 ticks, rounded up");

        let base = ["--cluster", CLUSTER, "--client-addr", "127.0.0.1:1", "--data-dir", "d"];
        let err = |extra: &[&str]| parse(&[&base[..], extra].concat()).unwrap_err();
        assert!(err(&[]).contains("--id is required"));
        assert!(err(&["--id", "0"]).contains("positive"));
        assert!(err(&["--id", "4"]).contains("does not include --id 4"));
        assert!(err(&["--id", "1", "--read-mode", "fast"]).contains("read-index, lease or log"));
        assert!(err(&["--id", "1", "--log-level", "loud"]).contains("expected error, warn"));
        assert!(err(&["--id", "1", "--tick-ms", "0"]).contains("at least 1"));
        assert!(err(&["--id", "1", "--max-inflight-appends", "0"]).contains("at least 1"));
        assert!(err(&["--id", "1", "--max-clients", "0"]).contains("at least 1"));
        assert!(err(&["--id", "1", "--session-ttl", "0"]).contains("at least 1"));
        assert!(err(&["--id", "1", "--max-request-bytes", "100"]).contains("between 1024"));
        let e =
            err(&["--id", "1", "--max-frame-bytes", "1048576", "--max-request-bytes", "600000"]);
        assert!(e.contains("half of --max-frame-bytes (1048576)"), "{e}");
        let s = parse(
            &[&base[..], &["--id", "1", "--max-request-bytes", "1024", "--max-clients", "5"]]
                .concat(),
        )
        .unwrap();
        assert_eq!((s.max_request_bytes, s.max_clients), (1024, 5));
        let s = parse(&[&base[..], &["--id", "1", "--quota-bytes", "1000000"]].concat()).unwrap();
        assert_eq!(s.quota_bytes, Some(1_000_000));
        let s =
            parse(&[&base[..], &["--id", "1", "--memtable-bytes", "1048576"]].concat()).unwrap();
        assert_eq!((s.quota_bytes, s.min_free_bytes), (None, (3 << 20) + (32 << 20)));
        let s = parse(&[&base[..], &["--id", "1", "--min-free-bytes", "0"]].concat()).unwrap();
        assert_eq!(s.min_free_bytes, 0);
        assert!(err(&["--id", "1", "--quota-bytes", "lots"]).contains("--quota-bytes"));
        let s = parse(&[&base[..], &["--id", "1", "--timeout", "30"]].concat()).unwrap();
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(30)));
        let s = parse(&[&base[..], &["--id", "1", "--timeout", "0"]].concat()).unwrap();
        assert_eq!(s.idle_timeout, None);
        assert_eq!(s.session_ttl, kvserver::DEFAULT_SESSION_TTL);
        let s = parse(&[&base[..], &["--id", "1", "--session-ttl", "60"]].concat()).unwrap();
        assert_eq!(s.session_ttl, Duration::from_secs(60));
        let bad_cluster = |c: &str| {
            parse(&["--id", "1", "--cluster", c, "--client-addr", "127.0.0.1:1", "--data-dir", "d"])
                .unwrap_err()
        };
        assert!(bad_cluster("1=127.0.0.1:1,1=127.0.0.1:2").contains("names node 1 twice"));
        assert!(bad_cluster("1:127.0.0.1:1").contains("is not id=host:port"));
        assert!(bad_cluster("x=127.0.0.1:1").contains("id \"x\""));
        assert!(bad_cluster("1=nowhere").contains("address \"nowhere\""));
    }

    #[test]
    fn a_config_file_fills_in_what_flags_leave_out() {
        let dir = temp_dir("config");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node.conf");
        std::fs::write(
            &file,
            format!(
                "# node 3\nid = 3\ncluster = \"{CLUSTER}\"\nclient_addr = 127.0.0.1:6383\n\
                 data-dir = /var/lib/x   # trailing comment\n\nread-mode = log\ninit = true\n"
            ),
        )
        .unwrap();
        let conf = file.to_str().unwrap();
        let s = parse(&["--config", conf]).unwrap();
        assert_eq!((s.id, s.read_mode, s.init), (3, ReadMode::Log, true));
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/x"));
        // A flag wins over the file.
        let s = parse(&["--config", conf, "--read-mode", "read-index"]).unwrap();
        assert_eq!(s.read_mode, ReadMode::ReadIndex);
        let s = parse(&["--config", conf, "--memtable-bytes", "1048576"]).unwrap();
        assert_eq!(s.memtable_bytes, 1 << 20);
        let e = parse(&["--config", conf, "--memtable-bytes", "10"]).unwrap_err();
        assert!(e.contains("at least 4096"), "{e}");

        std::fs::write(&file, "id = 3\ncolour = blue\n").unwrap();
        let e = parse(&[
            "--config",
            conf,
            "--cluster",
            CLUSTER,
            "--client-addr",
            "127.0.0.1:1",
            "--data-dir",
            "d",
        ])
        .unwrap_err();
        assert!(e.contains("unknown setting \"colour\""), "{e}");
        std::fs::write(&file, "just words\n").unwrap();
        assert!(parse(&["--config", conf]).unwrap_err().contains("expected `name = value`"));
        assert!(parse(&["--config", "/nonexistent/x.conf"]).unwrap_err().contains("cannot read"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_identity_file_guards_the_data_directory() {
        let dir = temp_dir("identity");
        let settings_with = |id: &str, init: bool, extra: &[&str]| {
            let d = dir.to_str().unwrap();
            let mut args = vec![
                "--id",
                id,
                "--cluster",
                CLUSTER,
                "--client-addr",
                "127.0.0.1:1",
                "--data-dir",
                d,
            ];
            if init {
                args.push("--init");
            }
            args.extend_from_slice(extra);
            parse(&args)
        };
        let settings = |id: &str, init: bool| settings_with(id, init, &[]).unwrap();
        // An empty (or missing) directory without --init: refused, with the reason.
        let e = check_identity(&settings("2", false)).unwrap_err();
        assert!(
            e.contains("must not rejoin the cluster as node 2") && e.contains("vote twice"),
            "{e}"
        );
        // --init of a three-node cluster needs the cluster id, and offers a random one.
        let e = check_identity(&settings("2", true)).unwrap_err();
        assert!(e.contains("needs --cluster-id") && e.contains("--cluster-id "), "{e}");
        let suggested = e.rsplit(' ').next().unwrap();
        assert_eq!(parse_cluster_id(suggested).map(|_| suggested.len()), Ok(16), "{e}");
        assert!(!dir.join(IDENTITY_FILE).exists());
        // --init with it creates the identity; later starts (with or without --init) accept it.
        let with_id = |id, init| settings_with(id, init, &["--cluster-id", "c0ffee"]).unwrap();
        assert_eq!(check_identity(&with_id("2", true)), Ok(0xc0ffee));
        assert_eq!(
            std::fs::read_to_string(dir.join(IDENTITY_FILE)).unwrap(),
            "node 2\nmembers 1,2,3\ncluster 0000000000c0ffee\n"
        );
        assert_eq!(check_identity(&settings("2", false)), Ok(0xc0ffee));
        assert_eq!(check_identity(&with_id("2", true)), Ok(0xc0ffee));
        // Another cluster id, or another node's directory, is refused.
        let other = settings_with("2", false, &["--cluster-id", "beef"]).unwrap();
        let e = check_identity(&other).unwrap_err();
        assert!(e.contains("does not match cluster 0000000000c0ffee"), "{e}");
        let e = check_identity(&settings("3", false)).unwrap_err();
        assert!(e.contains("belongs to another node"), "{e}");
        // A file from before cluster ids: cluster 0.
        std::fs::write(dir.join(IDENTITY_FILE), "node 2\nmembers 1,2,3\n").unwrap();
        assert_eq!(check_identity(&settings("2", false)), Ok(0));
        // --init on a directory holding unknown files is refused.
        std::fs::remove_file(dir.join(IDENTITY_FILE)).unwrap();
        std::fs::write(dir.join("something"), b"x").unwrap();
        let e = check_identity(&with_id("2", true)).unwrap_err();
        assert!(e.contains("is not empty"), "{e}");
        // Malformed ids are refused when parsing the flags.
        for bad in ["0", "xyz", "11112222333344445"] {
            let e = settings_with("2", true, &["--cluster-id", bad]).unwrap_err();
            assert!(e.starts_with("--cluster-id"), "{bad}: {e}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Peer TLS takes all three files, and plain TCP on a routable address needs
    /// --insecure-peers.
    #[test]
    fn peers_off_loopback_need_tls_or_a_waiver() {
        let base = ["--id", "1", "--cluster", "1=10.1.2.3:7001", "--client-addr", "127.0.0.1:1"];
        let with = |extra: &[&str]| {
            let mut args = base.to_vec();
            args.extend_from_slice(&["--data-dir", "/tmp/x"]);
            args.extend_from_slice(extra);
            parse(&args)
        };
        let e = with(&[]).unwrap_err();
        assert!(e.contains("refusing to listen for peers on 10.1.2.3:7001 without TLS"), "{e}");
        assert!(e.contains("--peer-cert-file") && e.contains("--insecure-peers"), "{e}");
        assert!(with(&["--insecure-peers"]).is_ok());
        let e = with(&["--peer-cert-file", "c.pem"]).unwrap_err();
        assert!(e.contains("needs all three"), "{e}");
        let s =
            with(&["--peer-cert-file", "c", "--peer-key-file", "k", "--peer-trusted-ca-file", "a"])
                .unwrap();
        assert_eq!(
            s.peer_tls.map(|p| p.map(|f| f.display().to_string())),
            Some(["c", "k", "a"].map(String::from))
        );
        // Loopback needs neither.
        let loopback =
            ["--id", "1", "--cluster", "1=127.0.0.1:7001", "--client-addr", "127.0.0.1:1"];
        let mut args = loopback.to_vec();
        args.extend_from_slice(&["--data-dir", "/tmp/x"]);
        assert!(parse(&args).is_ok());
    }

    #[test]
    fn requirepass_and_users_file_set_up_access_control() {
        use kvserver::auth::Permission;
        let base = ["--id", "1", "--cluster", CLUSTER, "--client-addr", "127.0.0.1:1"];
        let base = [&base[..], &["--data-dir", "d"]].concat();
        let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
        assert!(with(&[]).unwrap().access.is_none(), "off by default");
        let s = with(&["--requirepass", "s3cret"]).unwrap();
        let access = s.access.unwrap();
        assert_eq!(access.authenticate("default", b"s3cret"), Some(Permission::ReadWrite));
        assert_eq!(access.authenticate("default", b"wrong"), None);
        assert!(with(&["--requirepass", ""]).unwrap_err().contains("must not be empty"));

        let dir = temp_dir("users");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("users");
        let users = file.to_str().unwrap();
        let reader = PasswordHash::new(b"r-pw");
        std::fs::write(&file, format!("# readers\nuser reader ro {reader}\n")).unwrap();
        let access = with(&["--users-file", users]).unwrap().access.unwrap();
        assert_eq!(access.authenticate("reader", b"r-pw"), Some(Permission::ReadOnly));
        assert_eq!(access.authenticate("default", b""), None, "no default user");
        let access = with(&["--users-file", users, "--requirepass", "pw"]).unwrap().access;
        let names: Vec<_> = access.unwrap().users().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, ["default", "reader"]);
        // In the config file too.
        let conf = dir.join("node.conf");
        std::fs::write(&conf, format!("requirepass = pw\nusers-file = {users}\n")).unwrap();
        let s = with(&["--config", conf.to_str().unwrap()]).unwrap();
        assert_eq!(s.access.unwrap().authenticate("default", b"pw"), Some(Permission::ReadWrite));
        // A malformed file is refused, naming the file and the line.
        std::fs::write(&file, format!("user reader ro {reader}\n\nuser writer rx {reader}\n"))
            .unwrap();
        let e = with(&["--users-file", users]).unwrap_err();
        assert!(e.starts_with(&format!("--users-file {users}: line 3: permission \"rx\"")), "{e}");
        std::fs::write(&file, format!("user default rw {reader}\n")).unwrap();
        let e = with(&["--users-file", users, "--requirepass", "pw"]).unwrap_err();
        assert!(e.contains("line 1: user \"default\" is already defined"), "{e}");
        let e = with(&["--users-file", "/nonexistent/users"]).unwrap_err();
        assert!(e.starts_with("cannot read --users-file /nonexistent/users"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn hash_password_prints_a_hash_of_the_first_line() {
        let mut out = Vec::new();
        let status = hash_password(&mut &b"pass word\r\nsecond line\n"[..], &mut out);
        assert_eq!(status, ExitCode::SUCCESS);
        let text = String::from_utf8(out).unwrap();
        let hash: PasswordHash = text.trim_end().parse().unwrap();
        assert!(hash.verify(b"pass word"), "{text}");
        assert!(!hash.verify(b"pass word\r"));
        let mut out = Vec::new();
        assert_eq!(hash_password(&mut &b"\n"[..], &mut out), ExitCode::from(2));
        assert_eq!(hash_password(&mut &b""[..], &mut out), ExitCode::from(2));
        assert!(out.is_empty());
        // It stands alone: with another flag, clap refuses it.
        let e = Args::try_parse_from(["kvserver", "--hash-password", "--id", "1"]).unwrap_err();
        assert!(e.to_string().contains("cannot be used with"), "{e}");
    }

    #[test]
    fn log_times_are_utc_iso_8601() {
        let t = utc_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T", "{t}");
    }
}
