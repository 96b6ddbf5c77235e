//! `kvcli`, the command-line client: its flags, its commands and how it prints their results.
//!
//! The `kvcli` binary is [`main`] applied to the process's arguments and standard streams;
//! tests call [`main`] in-process with their own. Every command but `status` runs one
//! operation through a [`Clerk`] over [`RespServers`], so it reaches whichever node answers,
//! retries elsewhere when one fails, and takes effect once; `--timeout` bounds the whole
//! attempt. `status` asks each node for its Redis `INFO`.
//!
//! With `-a/--pass` (and `--user`), or the `KVCLI_AUTH` environment variable, every connection
//! authenticates first ([`Credentials`]), for a cluster that requires it.
//!
//! Exit status: 0 on success, 1 when `get` finds no value, 2 on any error (with a message on
//! standard error).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};

use kvclient::resp::Value;
use kvclient::tcp::{self, Credentials, RespConfig, RespServers};
use kvclient::tls::TlsConfig;
use kvclient::{Clerk, Error, Op, Outcome};

/// The cluster `kvcli` talks to without `--cluster`: three nodes on this machine, on the
/// client ports of the three-node example in `kvserver --help`.
pub const DEFAULT_CLUSTER: &str = "1=127.0.0.1:6381,2=127.0.0.1:6382,3=127.0.0.1:6383";

/// The environment variable that gives the password when `--pass` does not (as redis-cli's
/// `REDISCLI_AUTH`), keeping it off the command line, where other users of the machine see it.
pub const PASSWORD_VARIABLE: &str = "KVCLI_AUTH";

/// The exit status of a command that succeeded.
pub const EXIT_OK: u8 = 0;
/// The exit status of a `get` that found no value.
pub const EXIT_NIL: u8 = 1;
/// The exit status of a command that failed (bad arguments, no node answered in time, an
/// unexpected answer).
pub const EXIT_ERROR: u8 = 2;

const AFTER_HELP: &str = "\
Keys and values are taken as given, byte for byte. Values print as text when they are valid \
UTF-8; otherwise, and in `scan` output when they hold control characters, they print in \
double quotes with escapes (\\n, \\\", \\\\, \\xff).

With a cluster that requires a password (kvserver --requirepass or --users-file), give it with \
-a/--pass (and --user for a user other than `default`), or in the environment variable \
KVCLI_AUTH, which other users of the machine cannot see as they can see the command line.

Exit status: 0 on success, 1 when `get` finds no value (it prints \"(nil)\"), 2 on any error.

Examples:
  kvcli put greeting hello
  kvcli get greeting
  kvcli --cluster 1=10.0.0.1:6379,2=10.0.0.2:6379,3=10.0.0.3:6379 --timeout 3s scan 'user:' 'user;'
  kvcli status
  KVCLI_AUTH=s3cret kvcli --user reports get greeting";

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "kvcli",
    version,
    about = "A command-line client for the replicated key-value store. Each command goes to \
             whichever node answers (any node serves reads and writes), is retried on other \
             nodes if one fails, and takes effect exactly once.",
    long_about = None,
    after_help = AFTER_HELP
)]
struct Args {
    /// The cluster's nodes: each node's Raft id and the address where it serves clients (the
    /// Redis protocol, kvserver's --client-addr), as `id=host:port` pairs separated by commas.
    #[arg(long, value_name = "ID=ADDR,...", default_value = DEFAULT_CLUSTER)]
    cluster: String,
    /// How long a command may take in all, retries included, before kvcli gives up with an
    /// error: seconds (2.5) or a number with a unit (500ms, 10s, 1m).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Authenticate every connection with this password (`AUTH`), as redis-cli's -a: kvserver's
    /// --requirepass, or --user's password. KVCLI_AUTH does the same, off the command line.
    #[arg(short = 'a', long = "pass", value_name = "PASSWORD")]
    pass: Option<String>,
    /// Authenticate as this user (one of kvserver's --users-file) rather than `default`;
    /// needs a password (--pass or KVCLI_AUTH).
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Connect over TLS (kvserver's --tls-cert-file), checking the server's certificate
    /// against --cacert. As redis-cli's --tls.
    #[arg(long)]
    tls: bool,
    /// The CA certificate (PEM) the servers' certificates must be signed by; needs --tls.
    #[arg(long, value_name = "FILE", requires = "tls")]
    cacert: Option<PathBuf>,
    /// A client certificate (PEM) to present, for servers that ask for one; needs --key.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Check the servers' certificates for this name rather than their addresses.
    #[arg(long, value_name = "NAME", requires = "tls")]
    sni: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the value of KEY, or "(nil)" (exit status 1) if it has none.
    Get {
        /// The key.
        key: OsString,
    },
    /// Set KEY to VALUE; prints "OK".
    Put {
        /// The key.
        key: OsString,
        /// Its new value.
        #[arg(allow_hyphen_values = true)]
        value: OsString,
    },
    /// Append VALUE to the value of KEY (to nothing, if it has none); prints the new length.
    Append {
        /// The key.
        key: OsString,
        /// What to append.
        #[arg(allow_hyphen_values = true)]
        value: OsString,
    },
    /// Remove KEY; prints 1 if it had a value, 0 if not.
    Delete {
        /// The key.
        key: OsString,
    },
    /// Print the pairs with START <= key < END in key order, one "key<TAB>value" line each.
    ///
    /// Without START the scan starts at the first key; without END it runs to the last.
    /// Pages are read one after another: each is up to date when read, but the whole is not
    /// one snapshot.
    Scan {
        /// The first key to print, if present (default: the first key).
        start: Option<OsString>,
        /// The first key not to print (default: none; scan to the end).
        end: Option<OsString>,
        /// Print at most this many pairs; a note on standard error says if more follow.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
    },
    /// For each node: its role, term, the leader it knows, its commit and applied index; or
    /// "unreachable" and why. Exit status 2 if no node answers.
    Status,
    /// Write every pair to FILE (a logical backup), page by page, with a checksum.
    ///
    /// Each page is up to date when read; writes that land during the dump may be in it or
    /// not. --timeout applies to each page.
    Dump {
        /// Where to write; replaced only once the dump is complete.
        file: std::path::PathBuf,
    },
    /// Write every pair of a dump FILE into the store, in atomic batches, after checking the
    /// whole file. --timeout applies to each batch.
    Load {
        /// A file written by `kvcli dump`.
        file: std::path::PathBuf,
    },
}

/// Runs `kvcli` with `args` (the program name first, as in `std::env::args_os`), printing
/// results to `out` and errors to `err`; returns the exit status ([`EXIT_OK`], [`EXIT_NIL`]
/// or [`EXIT_ERROR`]). `--help` and `--version` print to `out` and return [`EXIT_OK`].
pub fn main<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            let text = e.render().to_string();
            let (stream, status): (&mut dyn Write, u8) =
                if e.use_stderr() { (&mut *err, EXIT_ERROR) } else { (&mut *out, EXIT_OK) };
            let _ = stream.write_all(text.as_bytes()).and_then(|()| stream.flush());
            return status;
        }
    };
    let status = match run(&args, out, err) {
        Ok(status) => status,
        Err(message) => {
            let _ = writeln!(err, "kvcli: {message}");
            EXIT_ERROR
        }
    };
    if let Err(e) = out.flush() {
        let _ = writeln!(err, "kvcli: cannot write the output: {e}");
        return EXIT_ERROR;
    }
    status
}

/// Runs the command; an error is the message to print.
fn run(args: &Args, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, String> {
    let cluster = parse_cluster(&args.cluster)?;
    let credentials = credentials(args)?;
    let tls = tls_config(args)?;
    let deadline = Instant::now() + args.timeout;
    if let Command::Status = args.command {
        return status(&cluster, credentials.as_ref(), tls.as_ref(), deadline, out);
    }
    let mut servers = RespServers::new(cluster);
    if let Some(credentials) = credentials {
        servers = servers.with_credentials(credentials);
    }
    if let Some(tls) = tls {
        servers = servers.with_tls(tls);
    }
    let mut clerk = Clerk::new(servers);
    let written = |r: io::Result<()>| r.map_err(|e| format!("cannot write the output: {e}"));
    let status = match &args.command {
        Command::Get { key } => match run_op(&mut clerk, Op::Get { key: bytes(key) }, deadline)? {
            Outcome::Value(Some(value)) => {
                written(writeln!(out, "{}", show_value(&value)))?;
                EXIT_OK
            }
            Outcome::Value(None) => {
                written(writeln!(out, "(nil)"))?;
                EXIT_NIL
            }
            other => return Err(unexpected(&other)),
        },
        Command::Put { key, value } => {
            let op = Op::Put { key: bytes(key), value: bytes(value) };
            match run_op(&mut clerk, op, deadline)? {
                Outcome::Written => written(writeln!(out, "OK"))?,
                other => return Err(unexpected(&other)),
            }
            EXIT_OK
        }
        Command::Append { key, value } => {
            let op = Op::Append { key: bytes(key), value: bytes(value) };
            match run_op(&mut clerk, op, deadline)? {
                Outcome::Length(n) => written(writeln!(out, "{n}"))?,
                other => return Err(unexpected(&other)),
            }
            EXIT_OK
        }
        Command::Delete { key } => {
            // DeleteMany, unlike Delete, says whether the key existed.
            let op = Op::DeleteMany { keys: vec![bytes(key)] };
            match run_op(&mut clerk, op, deadline)? {
                Outcome::Count(n) => written(writeln!(out, "{n}"))?,
                other => return Err(unexpected(&other)),
            }
            EXIT_OK
        }
        Command::Scan { start, end, limit } => {
            let start = start.as_ref().map(bytes).unwrap_or_default();
            let end = end.as_ref().map(bytes);
            // One pair more than asked for says whether more follow.
            let pairs = clerk
                .try_scan(start, end, limit.saturating_add(1), deadline)
                .map_err(|e| explain(&e, clerk.servers()))?;
            for (key, value) in pairs.iter().take(*limit) {
                written(writeln!(out, "{}\t{}", show_field(key), show_field(value)))?;
            }
            if pairs.len() > *limit {
                let _ = writeln!(err, "kvcli: more pairs follow; raise --limit to see them");
            }
            EXIT_OK
        }
        Command::Dump { file } => {
            let count = dump::write(&mut clerk, file, args.timeout, err)?;
            written(writeln!(out, "dumped {count} pairs to {}", file.display()))?;
            EXIT_OK
        }
        Command::Load { file } => {
            let count = dump::load(&mut clerk, file, args.timeout, err)?;
            written(writeln!(out, "loaded {count} pairs from {}", file.display()))?;
            EXIT_OK
        }
        Command::Status => unreachable!("handled above"),
    };
    Ok(status)
}

/// The TLS settings of `--tls`, `--cacert`, `--cert`, `--key` and `--sni`, if `--tls`.
fn tls_config(args: &Args) -> Result<Option<TlsConfig>, String> {
    if !args.tls {
        return Ok(None);
    }
    let ca = args
        .cacert
        .as_deref()
        .ok_or("--tls needs --cacert: the CA that signed the servers' certificates")?;
    let client = args.cert.as_deref().zip(args.key.as_deref());
    let mut tls = TlsConfig::new(ca, client)?;
    if let Some(name) = &args.sni {
        tls = tls.server_name(name)?;
    }
    Ok(Some(tls))
}

/// The credentials `--pass`, `--user` and [`PASSWORD_VARIABLE`] give, if any.
fn credentials(args: &Args) -> Result<Option<Credentials>, String> {
    let password = args.pass.clone().or_else(|| std::env::var(PASSWORD_VARIABLE).ok());
    match (&args.user, password) {
        (_, Some(p)) if p.is_empty() => Err("the password (--pass or KVCLI_AUTH) is empty".into()),
        (Some(user), Some(password)) => Ok(Some(Credentials::user(user, password))),
        (None, Some(password)) => Ok(Some(Credentials::password(password))),
        (Some(_), None) => Err("--user needs a password: --pass, or KVCLI_AUTH".into()),
        (None, None) => Ok(None),
    }
}

/// Logical backups: `kvcli dump` and `kvcli load`.
///
/// ```text
/// file   := "RAFTKV-DUMP 1\n" record* end
/// record := klen:u32le key vlen:u32le value
/// end    := 0xffffffff count:u64le crc:u32le     (crc32 of every byte before it)
/// ```
mod dump {
    use std::fs::File;
    use std::io::{self, BufReader, BufWriter, Read, Write};
    use std::path::Path;
    use std::time::{Duration, Instant};

    use bytes::Bytes;

    use super::run_op;
    use kvclient::tcp::RespServers;
    use kvclient::{Clerk, Op, Outcome};

    const MAGIC: &[u8] = b"RAFTKV-DUMP 1\n";
    const END: u32 = u32::MAX;
    /// Pairs per scan page and per load batch (a batch also stops at about 1 MiB).
    const PAGE: u32 = 1000;
    const BATCH_BYTES: usize = 1 << 20;

    /// Writes the whole store to `path`; returns the number of pairs.
    pub(super) fn write(
        clerk: &mut Clerk<RespServers>,
        path: &Path,
        timeout: Duration,
        progress: &mut dyn Write,
    ) -> Result<u64, String> {
        let tmp = path.with_extension("partial");
        let io_err = |e: io::Error| format!("cannot write {}: {e}", tmp.display());
        let mut out = Crc::new(BufWriter::new(File::create(&tmp).map_err(io_err)?));
        out.write_all(MAGIC).map_err(io_err)?;
        let (mut count, mut start, mut shown) = (0u64, Bytes::new(), Instant::now());
        loop {
            let op = Op::Scan { start, end: None, limit: PAGE };
            let Outcome::Page { pairs, next } = run_op(clerk, op, Instant::now() + timeout)? else {
                return Err("a scan was answered with something else".into());
            };
            for (key, value) in pairs {
                let klen = u32::try_from(key.len()).map_err(|_| "a key over 4 GiB")?;
                let vlen = u32::try_from(value.len()).map_err(|_| "a value over 4 GiB")?;
                out.write_all(&klen.to_le_bytes()).map_err(io_err)?;
                out.write_all(&key).map_err(io_err)?;
                out.write_all(&vlen.to_le_bytes()).map_err(io_err)?;
                out.write_all(&value).map_err(io_err)?;
                count += 1;
            }
            if shown.elapsed() >= Duration::from_secs(1) {
                let _ = writeln!(progress, "kvcli: dumped {count} pairs so far");
                shown = Instant::now();
            }
            match next {
                Some(key) => start = key,
                None => break,
            }
        }
        out.write_all(&END.to_le_bytes()).map_err(io_err)?;
        out.write_all(&count.to_le_bytes()).map_err(io_err)?;
        let crc = out.crc.clone().finalize();
        let mut inner = out.inner;
        inner.write_all(&crc.to_le_bytes()).map_err(io_err)?;
        let file = inner.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(io_err)?;
        std::fs::rename(&tmp, path)
            .map_err(|e| format!("cannot rename to {}: {e}", path.display()))?;
        Ok(count)
    }

    /// Checks the dump at `path`, then loads it; returns the number of pairs.
    pub(super) fn load(
        clerk: &mut Clerk<RespServers>,
        path: &Path,
        timeout: Duration,
        progress: &mut dyn Write,
    ) -> Result<u64, String> {
        let count = read(path, &mut |_, _| Ok(()))?;
        let _ = writeln!(progress, "kvcli: {} holds {count} pairs; loading", path.display());
        let (mut batch, mut bytes, mut loaded, mut shown) = (Vec::new(), 0, 0u64, Instant::now());
        let mut flush = |batch: &mut Vec<(Bytes, Bytes)>, loaded: &mut u64| -> Result<(), String> {
            if batch.is_empty() {
                return Ok(());
            }
            let n = batch.len() as u64;
            let op = Op::PutMany { pairs: std::mem::take(batch) };
            run_op(clerk, op, Instant::now() + timeout)?;
            *loaded += n;
            Ok(())
        };
        read(path, &mut |key, value| {
            bytes += key.len() + value.len();
            batch.push((key, value));
            if batch.len() >= PAGE as usize || bytes >= BATCH_BYTES {
                flush(&mut batch, &mut loaded)?;
                bytes = 0;
                if shown.elapsed() >= Duration::from_secs(1) {
                    let _ = writeln!(progress, "kvcli: loaded {loaded} of {count} pairs");
                    shown = Instant::now();
                }
            }
            Ok(())
        })?;
        flush(&mut batch, &mut loaded)?;
        Ok(loaded)
    }

    /// Reads the dump at `path`, handing each pair to `each`, and checks its end mark, count
    /// and checksum; returns the count.
    fn read(
        path: &Path,
        each: &mut dyn FnMut(Bytes, Bytes) -> Result<(), String>,
    ) -> Result<u64, String> {
        let bad = |what: &str| format!("{} is not a complete dump: {what}", path.display());
        let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut input = Crc::new(BufReader::new(file));
        let take = |input: &mut Crc<BufReader<File>>, n: usize| -> Result<Vec<u8>, String> {
            let mut buf = vec![0; n];
            input.read_exact(&mut buf).map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => bad("it ends too soon"),
                _ => format!("cannot read {}: {e}", path.display()),
            })?;
            Ok(buf)
        };
        if take(&mut input, MAGIC.len())? != MAGIC {
            return Err(bad("it does not start like one"));
        }
        let mut count = 0u64;
        loop {
            let word = |b: Vec<u8>| u32::from_le_bytes(b.try_into().expect("4 bytes"));
            let klen = word(take(&mut input, 4)?);
            if klen == END {
                break;
            }
            // Lengths come from the file: read what is there rather than trusting them to size
            // a buffer up front.
            let key = take_limited(&mut input, klen, &bad)?;
            let vlen = word(take(&mut input, 4)?);
            let value = take_limited(&mut input, vlen, &bad)?;
            each(key.into(), value.into())?;
            count += 1;
        }
        let stated = u64::from_le_bytes(take(&mut input, 8)?.try_into().expect("8 bytes"));
        let crc = input.crc.clone().finalize();
        let mut stored = [0u8; 4];
        input.inner.read_exact(&mut stored).map_err(|_| bad("its checksum is missing"))?;
        if crc != u32::from_le_bytes(stored) {
            return Err(bad("its checksum does not match"));
        }
        if stated != count {
            return Err(bad(&format!("it says {stated} pairs but holds {count}")));
        }
        if input.inner.read(&mut [0u8; 1]).map_err(|e| e.to_string())? != 0 {
            return Err(bad("bytes follow its end"));
        }
        Ok(count)
    }

    fn take_limited(
        input: &mut Crc<BufReader<File>>,
        n: u32,
        bad: &dyn Fn(&str) -> String,
    ) -> Result<Vec<u8>, String> {
        let mut buf = Vec::new();
        let got =
            input.by_ref().take(u64::from(n)).read_to_end(&mut buf).map_err(|e| e.to_string())?;
        if got != n as usize {
            return Err(bad("it ends too soon"));
        }
        Ok(buf)
    }

    /// A reader or writer that checksums what passes through it.
    struct Crc<T> {
        inner: T,
        crc: crc32fast::Hasher,
    }

    impl<T> Crc<T> {
        fn new(inner: T) -> Crc<T> {
            Crc { inner, crc: crc32fast::Hasher::new() }
        }
    }

    impl<T: Write> Write for Crc<T> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = self.inner.write(buf)?;
            self.crc.update(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    impl<T: Read> Read for Crc<T> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.crc.update(&buf[..n]);
            Ok(n)
        }
    }
}

/// Runs `op` through `clerk` by `deadline`; an error explains what each node did.
fn run_op(clerk: &mut Clerk<RespServers>, op: Op, deadline: Instant) -> Result<Outcome, String> {
    clerk.try_run(op, deadline).map_err(|e| explain(&e, clerk.servers()))
}

/// The message for a clerk's error: the error, then what went wrong with each node.
fn explain(error: &Error, servers: &RespServers) -> String {
    let mut message = error.to_string();
    for server in 0..kvclient::Servers::count(servers) {
        if let Some(why) = servers.last_error(server) {
            let (id, addr) = (servers.node_id(server), servers.addr(server));
            let _ = write!(message, "\n  node {id} at {addr}: {why}");
        }
    }
    if let Error::Refused(reason) = error
        && reason.starts_with("NOAUTH ")
    {
        message.push_str("\n  the cluster requires a password: give it with --pass, or KVCLI_AUTH");
    }
    message
}

fn unexpected(outcome: &Outcome) -> String {
    Error::Unexpected(outcome.clone()).to_string()
}

/// The bytes of a command-line argument, as the operating system gave them.
fn bytes(arg: &OsString) -> Bytes {
    Bytes::from(arg.clone().into_encoded_bytes())
}

/// Parses `--cluster`: `id=host:port` pairs separated by commas, ids unique.
fn parse_cluster(text: &str) -> Result<Vec<(u64, SocketAddr)>, String> {
    let mut nodes: Vec<(u64, SocketAddr)> = Vec::new();
    for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let (id, addr) = member
            .split_once('=')
            .ok_or_else(|| format!("--cluster: {member:?} is not id=host:port"))?;
        let id: u64 = id.trim().parse().map_err(|e| format!("--cluster: node id {id:?}: {e}"))?;
        let addr = addr
            .trim()
            .to_socket_addrs()
            .map_err(|e| format!("--cluster: address {addr:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("--cluster: address {addr:?} resolves to nothing"))?;
        if nodes.iter().any(|&(other, _)| other == id) {
            return Err(format!("--cluster names node {id} twice"));
        }
        nodes.push((id, addr));
    }
    if nodes.is_empty() {
        return Err("--cluster names no nodes".into());
    }
    Ok(nodes)
}

/// Parses `--timeout`: a positive number of seconds, or a number followed by ms, s or m.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (such as 2.5, 500ms, 10s or 1m)"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s or m")),
    };
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("{text:?}: the timeout must be above zero")),
    }
}

/// A value as `get` prints it: as it is if it is valid UTF-8, else quoted with escapes.
fn show_value(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => text.to_owned(),
        Err(_) => quoted(value),
    }
}

/// A key or value as `scan` prints it, one pair per line: as it is if it is valid UTF-8 with
/// no control characters (tabs and line ends included) and does not start with a quote;
/// otherwise quoted with escapes, so every line reads back unambiguously.
fn show_field(field: &[u8]) -> String {
    match std::str::from_utf8(field) {
        Ok(text)
            if !text.is_empty() && !text.starts_with('"') && !text.contains(char::is_control) =>
        {
            text.to_owned()
        }
        _ => quoted(field),
    }
}

/// `bytes` in double quotes: `"` and `\` and control characters escaped as in Rust
/// (`\"`, `\\`, `\n`, `\u{7f}`), bytes that are not UTF-8 as `\xff`.
fn quoted(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() + 2);
    text.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '"' || c == '\\' || c.is_control() {
                text.extend(c.escape_debug());
            } else {
                text.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(text, "\\x{b:02x}");
        }
    }
    text.push('"');
    text
}

/// The `INFO` fields `status` shows, as (heading, field name).
const STATUS_FIELDS: [(&str, &str); 5] = [
    ("ROLE", "role"),
    ("TERM", "term"),
    ("LEADER", "leader_id"),
    ("COMMIT", "commit_index"),
    ("APPLIED", "applied_index"),
];

/// Prints each node's status, asking all nodes at once.
fn status(
    cluster: &[(u64, SocketAddr)],
    credentials: Option<&Credentials>,
    tls: Option<&TlsConfig>,
    deadline: Instant,
    out: &mut dyn Write,
) -> Result<u8, String> {
    let config = RespConfig::default();
    let answers: Vec<Result<Vec<(String, String)>, String>> = thread::scope(|scope| {
        let asks: Vec<_> = cluster
            .iter()
            .map(|&(_, addr)| {
                scope.spawn(move || node_info(addr, &config, credentials, tls, deadline))
            })
            .collect();
        asks.into_iter()
            .map(|ask| ask.join().unwrap_or_else(|_| Err("the query panicked".into())))
            .collect()
    });
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(cluster.len() + 1);
    let mut heading = vec!["NODE".to_owned(), "ADDRESS".to_owned()];
    heading.extend(STATUS_FIELDS.iter().map(|(h, _)| (*h).to_owned()));
    rows.push(heading);
    for (&(id, addr), answer) in cluster.iter().zip(&answers) {
        let mut row = vec![id.to_string(), addr.to_string()];
        match answer {
            Ok(info) => {
                let field = |name: &str| {
                    info.iter().find(|(k, _)| k == name).map_or("?", |(_, v)| v.as_str())
                };
                row.extend(STATUS_FIELDS.iter().map(|(_, name)| field(name).to_owned()));
                let reported = field("node_id");
                if reported != "?" && reported != id.to_string() {
                    row.push(format!("(says it is node {reported}: check --cluster)"));
                }
            }
            Err(why) => row.push(why.clone()),
        }
        rows.push(row);
    }
    write_table(out, &rows).map_err(|e| format!("cannot write the output: {e}"))?;
    if answers.iter().all(Result::is_err) {
        return Err("no node answered".into());
    }
    Ok(EXIT_OK)
}

/// Asks the node at `addr` for `INFO` and returns its `name:value` fields; if it does not
/// answer them, what to show instead.
fn node_info(
    addr: SocketAddr,
    config: &RespConfig,
    credentials: Option<&Credentials>,
    tls: Option<&TlsConfig>,
    deadline: Instant,
) -> Result<Vec<(String, String)>, String> {
    match tcp::command_once(addr, &["INFO"], config, credentials, tls, deadline) {
        Ok(Value::Bulk(Some(text))) => Ok(String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|line| line.trim().split_once(':'))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect()),
        Ok(Value::Error(e)) if tcp::is_denial(&e) => Err(format!("refused (access denied: {e})")),
        Ok(Value::Error(e)) => Err(format!("INFO failed: {e}")),
        Ok(_) => Err("INFO answered with something other than text".into()),
        Err(e @ tcp::CallError::Denied(_)) => Err(format!("refused ({e})")),
        Err(e) => Err(format!("unreachable ({e})")),
    }
}

/// Writes `rows` as columns two spaces apart, each as wide as its widest cell (the last cell
/// of a row is not padded).
fn write_table(out: &mut dyn Write, rows: &[Vec<String>]) -> io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter(|r| r.len() > c + 1).map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 < row.len() {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            } else {
                line.push_str(cell);
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_lists_parse_and_bad_ones_say_why() {
        let nodes = parse_cluster(" 1=127.0.0.1:6381, 7=127.0.0.1:7000 ,").unwrap();
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(nodes, vec![(1, addr("127.0.0.1:6381")), (7, addr("127.0.0.1:7000"))]);
        assert_eq!(parse_cluster(DEFAULT_CLUSTER).unwrap().len(), 3);
        for (bad, why) in [
            ("", "names no nodes"),
            ("127.0.0.1:6381", "is not id=host:port"),
            ("x=127.0.0.1:6381", "node id \"x\""),
            ("1=127.0.0.1", "address"),
            ("1=127.0.0.1:1,1=127.0.0.1:2", "names node 1 twice"),
        ] {
            let e = parse_cluster(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn durations_take_seconds_or_a_unit() {
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["", "0", "0s", "-1", "ten", "5h", "1e400", "NaN"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values_print_as_text_when_they_are_and_escaped_otherwise() {
        assert_eq!(show_value(b"hello, world"), "hello, world");
        assert_eq!(show_value("two\nlines é".as_bytes()), "two\nlines é");
        assert_eq!(show_value(b"\xff\x00a\"b\x7f"), r#""\xff\0a\"b\u{7f}""#);
        assert_eq!(show_field(b"plain key"), "plain key");
        assert_eq!(show_field(b"tab\there"), r#""tab\there""#);
        assert_eq!(show_field(b""), r#""""#);
        assert_eq!(show_field(br#""quoted""#), r#""\"quoted\"""#);
        assert_eq!(show_field("é\\".as_bytes()), "é\\");
        assert_eq!(show_field(b"caf\xc3"), r#""caf\xc3""#);
    }

    #[test]
    fn tables_line_up() {
        let rows = vec![
            vec!["A".to_owned(), "BB".to_owned(), "C".to_owned()],
            vec!["long".to_owned(), "x".to_owned(), "y".to_owned()],
            vec!["z".to_owned(), "the rest of the line".to_owned()],
        ];
        let mut out = Vec::new();
        write_table(&mut out, &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "A     BB  C\nlong  x   y\nz     the rest of the line\n");
    }

    #[test]
    fn usage_errors_exit_2_and_help_exits_0() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(main(["kvcli", "frobnicate"], &mut out, &mut err), EXIT_ERROR);
        assert!(String::from_utf8_lossy(&err).contains("unrecognized subcommand"));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(main(["kvcli", "--timeout", "0", "get", "k"], &mut out, &mut err), EXIT_ERROR);
        assert!(String::from_utf8_lossy(&err).contains("above zero"));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(main(["kvcli", "--cluster", "", "get", "k"], &mut out, &mut err), EXIT_ERROR);
        assert_eq!(String::from_utf8_lossy(&err), "kvcli: --cluster names no nodes\n");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(main(["kvcli", "--help"], &mut out, &mut err), EXIT_OK);
        let help = String::from_utf8_lossy(&out);
        for word in ["get", "put", "append", "delete", "scan", "status", "--cluster", "--timeout"] {
            assert!(help.contains(word), "--help mentions {word}: {help}");
        }
    }
}
