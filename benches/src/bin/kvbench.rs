//! `kvbench`: a closed-loop load generator for any server that speaks the Redis protocol: a
//! `kvserver` cluster (`cargo xtask cluster`), or a real `redis-server` for comparison.
//!
//! ```text
//! cargo run --release -p benches --bin kvbench -- \
//!     --endpoints 127.0.0.1:6381,127.0.0.1:6382,127.0.0.1:6383 \
//!     --clients 16 --op put --value-size 256 --duration 10 [--json]
//! ```
//!
//! **The load.** Each of `--clients` threads opens its own connection (client `i` to endpoint
//! `i mod n`) and keeps exactly one request in flight: it sends `SET key value` (put) or
//! `GET key` (get), waits for the reply, and sends the next. `--op mixed` makes each request a
//! get with probability `--read-pct`%. Keys are `k` followed by a number below `--keyspace`,
//! zero-padded to `--key-size` bytes, drawn uniformly by a seeded generator per client; values
//! are `--value-size` bytes. `--preload` first writes every key once (pipelined), so gets hit.
//!
//! **The measurement.** After `--warmup` seconds (requests not counted), requests are counted
//! for `--duration` seconds, or until `--count` requests in all have been made. Each client
//! records the latency of each successful request, from just before the send to just after the
//! reply, in its own log-bucketed histogram (`benches::histogram`, under 1% error); they are
//! merged at the end. Throughput is successful requests over the measured time, which runs from
//! the end of the warmup until the last client has its last reply.
//!
//! **Errors.** An error reply (`-ERR`, `-TRYAGAIN`, ...) or an unexpected one counts as an error
//! and the connection is kept. A connection that fails (refused, reset, closed, a reply that
//! takes longer than `--timeout`) counts as an error too; the client then reconnects, to the
//! next endpoint in the list, and carries on. Every attempt is one request: with `--count N`,
//! successes plus errors equal `N`. The first few distinct error messages are printed.
//!
//! **Output.** A progress line each second on stderr (elapsed, requests so far, requests per
//! second over the last second, errors); at the end a summary on stdout, or with `--json` one
//! JSON line (latencies in microseconds). The exit status is 1 if no request succeeded.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use benches::histogram::Histogram;
use bytes::{Buf, BytesMut};
use clap::{Parser, ValueEnum};
use kvclient::resp::{self, Decoder, Limits, Value};
use labrpc::Rng;

#[derive(Parser, Debug)]
#[command(
    name = "kvbench",
    about = "Closed-loop load generator for Redis-protocol servers (kvserver, redis-server)"
)]
struct Args {
    /// The servers, as host:port, separated by commas; clients are spread over them in turn.
    #[arg(
        long,
        value_name = "HOST:PORT,...",
        value_delimiter = ',',
        default_value = "127.0.0.1:6381"
    )]
    endpoints: Vec<String>,
    /// Concurrent clients: one thread and one connection each, one request in flight each.
    #[arg(long, value_name = "N", default_value_t = 16)]
    clients: usize,
    /// What each request is: put (SET), get (GET), or mixed (--read-pct gets, the rest puts).
    #[arg(long, value_enum, default_value_t = Op::Put)]
    op: Op,
    /// With --op mixed, the percentage of requests that are gets.
    #[arg(long, value_name = "PCT", default_value_t = 50,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    read_pct: u8,
    /// Bytes per value.
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    value_size: usize,
    /// Bytes per key (`k` and a zero-padded number; must fit the largest key number).
    #[arg(long, value_name = "BYTES", default_value_t = 16)]
    key_size: usize,
    /// How many distinct keys the requests draw from (uniformly).
    #[arg(long, value_name = "N", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    keyspace: u64,
    /// Measure for this many seconds (the default is 10 unless --count is given).
    #[arg(long, value_name = "SECS", conflicts_with = "count")]
    duration: Option<f64>,
    /// Measure until this many requests in all have been made.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Write every key of the keyspace once before measuring, so that gets hit.
    #[arg(long)]
    preload: bool,
    /// Run the load for this many seconds before measuring (not counted).
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    warmup: f64,
    /// A reply that takes longer than this many seconds fails the connection (an error).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    timeout: f64,
    /// Seed of the key choice (client i uses seed + i).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the result as one JSON line (instead of the summary).
    #[arg(long)]
    json: bool,
}

/// The kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Op {
    Put,
    Get,
    Mixed,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Mixed => "mixed",
        }
    }
}

/// The phases of a run, in order, in [`Control::phase`].
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// How long a client waits before reconnecting after a failed connection, so that a server
/// that is down is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// How many distinct error messages the summary shows.
const ERRORS_SHOWN: usize = 5;

/// The state the clients share with the main thread.
struct Control {
    /// [`WARMUP`], [`MEASURE`] or [`STOP`], set by the main thread.
    phase: AtomicU8,
    /// Requests claimed so far in the measured phase (with --count, a client stops when its
    /// claim would pass the count).
    claimed: AtomicU64,
    /// Requests finished (successes and errors) in the current phase, for the progress line.
    finished: AtomicU64,
    /// Errors so far in the measured phase, for the progress line.
    errors: AtomicU64,
    /// Clients still running.
    running: AtomicUsize,
}

/// The workload settings each client needs.
#[derive(Clone)]
struct Workload {
    op: Op,
    read_pct: u8,
    keyspace: u64,
    key_size: usize,
    value: Arc<Vec<u8>>,
    count: Option<u64>,
    timeout: Duration,
    endpoints: Arc<Vec<SocketAddr>>,
}

/// What one client counted in the measured phase.
#[derive(Default)]
struct ClientStats {
    latency_ns: Histogram,
    ok: u64,
    errors: u64,
    reconnects: u64,
    get_hits: u64,
    get_misses: u64,
    /// Distinct error messages, the first few.
    error_messages: BTreeSet<String>,
    /// When the last measured request finished.
    last_reply: Option<Instant>,
}

impl ClientStats {
    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.error_messages.len() < ERRORS_SHOWN {
            self.error_messages.insert(message);
        }
    }

    fn merge(&mut self, other: ClientStats) {
        self.latency_ns.merge(&other.latency_ns);
        self.ok += other.ok;
        self.errors += other.errors;
        self.reconnects += other.reconnects;
        self.get_hits += other.get_hits;
        self.get_misses += other.get_misses;
        self.last_reply = self.last_reply.max(other.last_reply);
        for m in other.error_messages {
            if self.error_messages.len() < ERRORS_SHOWN {
                self.error_messages.insert(m);
            }
        }
    }
}

/// One connection and its buffers.
struct Conn {
    stream: TcpStream,
    decoder: Decoder,
    input: BytesMut,
    output: BytesMut,
    /// Where reads land before they join `input`.
    scratch: Vec<u8>,
}

/// Why a request failed.
enum Failure {
    /// The server answered with an error (or something unexpected); the connection is fine.
    Reply(String),
    /// The connection is unusable: reconnect.
    Connection(String),
}

impl Conn {
    fn open(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Conn {
            stream,
            decoder: Decoder::new(Limits::default()),
            input: BytesMut::with_capacity(16 << 10),
            output: BytesMut::with_capacity(1 << 10),
            scratch: vec![0; 16 << 10],
        })
    }

    /// Queues a command; [`Conn::flush`] sends what is queued.
    fn queue(&mut self, args: &[&[u8]]) {
        resp::write_command(&mut self.output, args);
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.output)?;
        self.output.clear();
        Ok(())
    }

    /// Reads the next reply.
    fn reply(&mut self) -> Result<Value, String> {
        loop {
            match self.decoder.decode(&self.input) {
                Ok(Some((value, consumed))) => {
                    self.input.advance(consumed);
                    return Ok(value);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("bad reply: {e}")),
            }
            match self.stream.read(&mut self.scratch) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => self.input.extend_from_slice(&self.scratch[..n]),
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    return Err("no reply within --timeout".into());
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Sends one command and waits for its reply.
    fn call(&mut self, args: &[&[u8]]) -> Result<Value, Failure> {
        self.queue(args);
        self.flush().map_err(|e| Failure::Connection(e.to_string()))?;
        self.reply().map_err(Failure::Connection)
    }
}

/// Key number `index` as a key of `size` bytes: `k` then the number, zero-padded.
fn key(index: u64, size: usize) -> Vec<u8> {
    format!("k{index:0>width$}", width = size - 1).into_bytes()
}

/// The fewest bytes a key needs for `keyspace` keys.
fn min_key_size(keyspace: u64) -> usize {
    1 + (keyspace - 1).to_string().len()
}

/// One client's loop: requests until the phase is STOP (or, with a count, until the count is
/// claimed), counting what happens in the measured phase.
fn client(id: usize, seed: u64, work: &Workload, control: &Control) -> ClientStats {
    let mut stats = ClientStats::default();
    let mut rng = Rng::new(seed);
    let mut endpoint = id % work.endpoints.len();
    let mut conn: Option<Conn> = None;
    let mut connected_before = false;
    loop {
        let phase = control.phase.load(Ordering::Acquire);
        if phase == STOP {
            break;
        }
        let measuring = phase == MEASURE;
        if measuring
            && let Some(count) = work.count
            && control.claimed.fetch_add(1, Ordering::Relaxed) >= count
        {
            break;
        }
        let is_get = match work.op {
            Op::Put => false,
            Op::Get => true,
            Op::Mixed => rng.below(100) < u64::from(work.read_pct),
        };
        let k = key(rng.below(work.keyspace), work.key_size);
        if conn.is_none() {
            match Conn::open(work.endpoints[endpoint], work.timeout) {
                Ok(c) => {
                    if connected_before && measuring {
                        stats.reconnects += 1;
                    }
                    connected_before = true;
                    conn = Some(c);
                }
                Err(e) => {
                    if measuring {
                        stats.last_reply = Some(Instant::now());
                        stats.error(format!("cannot connect to {}: {e}", work.endpoints[endpoint]));
                        control.errors.fetch_add(1, Ordering::Relaxed);
                        control.finished.fetch_add(1, Ordering::Relaxed);
                    }
                    endpoint = (endpoint + 1) % work.endpoints.len();
                    thread::sleep(RECONNECT_PAUSE);
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        let started = Instant::now();
        let result =
            if is_get { c.call(&[b"GET", &k]) } else { c.call(&[b"SET", &k, &work.value]) };
        let latency = started.elapsed();
        let outcome = match result {
            Ok(Value::Simple(s)) if !is_get && s == "OK" => Ok(None),
            Ok(Value::Bulk(found)) if is_get => Ok(Some(found.is_some())),
            Ok(Value::Error(e)) => Err(Failure::Reply(e)),
            Ok(other) => Err(Failure::Reply(format!("unexpected reply {other:?}"))),
            Err(f) => Err(f),
        };
        let broken = matches!(outcome, Err(Failure::Connection(_)));
        if broken {
            conn = None;
            endpoint = (endpoint + 1) % work.endpoints.len();
        }
        if measuring {
            stats.last_reply = Some(Instant::now());
            match outcome {
                Ok(hit) => {
                    stats.ok += 1;
                    stats.latency_ns.record(latency.as_nanos().try_into().unwrap_or(u64::MAX));
                    match hit {
                        Some(true) => stats.get_hits += 1,
                        Some(false) => stats.get_misses += 1,
                        None => {}
                    }
                }
                Err(Failure::Reply(e) | Failure::Connection(e)) => {
                    stats.error(e);
                    control.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Count only requests of the phase they were made in (the main thread resets this
        // counter when the phase changes).
        if control.phase.load(Ordering::Acquire) == phase {
            control.finished.fetch_add(1, Ordering::Relaxed);
        }
        if broken {
            thread::sleep(RECONNECT_PAUSE);
        }
    }
    control.running.fetch_sub(1, Ordering::AcqRel);
    stats
}

/// How many SETs one preload connection keeps in flight.
const PRELOAD_PIPELINE: u64 = 64;

/// Writes every key once: connection `i` of `connections` writes keys `i`,
/// `i + connections`, ..., pipelined. A failed batch is retried on a new connection (SETs
/// are idempotent); after ten failures in a row the preload gives up.
fn preload(work: &Workload, connections: usize) -> Result<(), String> {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let reporter_done = done.clone();
    let keyspace = work.keyspace;
    let handles: Vec<_> = (0..connections)
        .map(|i| {
            let work = work.clone();
            let done = done.clone();
            thread::spawn(move || preload_part(&work, i, connections, &done))
        })
        .collect();
    let mut last_print = Instant::now();
    while !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(Duration::from_millis(50));
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            eprintln!(
                "kvbench: preload {:>5.1}s  {} of {keyspace} keys",
                started.elapsed().as_secs_f64(),
                reporter_done.load(Ordering::Relaxed)
            );
        }
    }
    for h in handles {
        h.join().map_err(|_| "a preload thread panicked".to_string())??;
    }
    eprintln!("kvbench: preloaded {keyspace} keys in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn preload_part(
    work: &Workload,
    part: usize,
    parts: usize,
    done: &AtomicU64,
) -> Result<(), String> {
    let keys: Vec<u64> = (part as u64..work.keyspace).step_by(parts).collect();
    let mut endpoint = part % work.endpoints.len();
    let mut conn: Option<Conn> = None;
    let mut failures = 0;
    let mut next = 0;
    while next < keys.len() {
        let batch = &keys[next..keys.len().min(next + PRELOAD_PIPELINE as usize)];
        let attempt = (|| -> Result<(), String> {
            if conn.is_none() {
                let addr = work.endpoints[endpoint];
                conn = Some(
                    Conn::open(addr, work.timeout)
                        .map_err(|e| format!("cannot connect to {addr}: {e}"))?,
                );
            }
            let c = conn.as_mut().expect("connected above");
            for &k in batch {
                c.queue(&[b"SET", &key(k, work.key_size), &work.value]);
            }
            c.flush().map_err(|e| e.to_string())?;
            for _ in batch {
                match c.reply()? {
                    Value::Simple(s) if s == "OK" => {}
                    other => return Err(format!("SET answered {other:?}")),
                }
            }
            Ok(())
        })();
        match attempt {
            Ok(()) => {
                failures = 0;
                next += batch.len();
                done.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                failures += 1;
                if failures >= 10 {
                    return Err(format!("preload failed ten times in a row; last: {e}"));
                }
                conn = None;
                endpoint = (endpoint + 1) % work.endpoints.len();
                thread::sleep(RECONNECT_PAUSE);
            }
        }
    }
    Ok(())
}

/// Resolves each `host:port` to its first address.
fn resolve(endpoints: &[String]) -> Result<Vec<SocketAddr>, String> {
    endpoints
        .iter()
        .map(|e| {
            e.to_socket_addrs()
                .map_err(|err| format!("--endpoints {e:?}: {err}"))?
                .next()
                .ok_or_else(|| format!("--endpoints {e:?}: no address"))
        })
        .collect()
}

/// The result of a run.
struct Report {
    stats: ClientStats,
    measured: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            if args.json {
                println!("{}", json(&args, &report));
            } else {
                print_summary(&args, &report);
            }
            if report.stats.ok == 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
        Err(e) => {
            eprintln!("kvbench: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<Report, String> {
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if args.endpoints.is_empty() {
        return Err("--endpoints is empty".into());
    }
    let needed = min_key_size(args.keyspace);
    if args.key_size < needed {
        return Err(format!(
            "--key-size {} is too small for --keyspace {}: keys need {needed} bytes",
            args.key_size, args.keyspace
        ));
    }
    let seconds = |flag: &str, v: f64| {
        Duration::try_from_secs_f64(v).map_err(|_| format!("{flag} {v}: not a number of seconds"))
    };
    let duration = seconds("--duration", args.duration.unwrap_or(10.0))?;
    let warmup = seconds("--warmup", args.warmup)?;
    let timeout = seconds("--timeout", args.timeout)?;
    if timeout.is_zero() {
        return Err("--timeout must be positive".into());
    }
    // A value of printable bytes from the seed: the same for every request.
    let mut rng = Rng::new(args.seed ^ 0x5eed);
    let value: Vec<u8> = (0..args.value_size).map(|_| b'a' + rng.below(26) as u8).collect();
    let work = Workload {
        op: args.op,
        read_pct: args.read_pct,
        keyspace: args.keyspace,
        key_size: args.key_size,
        value: Arc::new(value),
        count: args.count,
        timeout,
        endpoints: Arc::new(resolve(&args.endpoints)?),
    };
    if args.preload {
        preload(&work, args.clients)?;
    }

    let control = Arc::new(Control {
        phase: AtomicU8::new(if warmup.is_zero() { MEASURE } else { WARMUP }),
        claimed: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        running: AtomicUsize::new(args.clients),
    });
    let handles: Vec<_> = (0..args.clients)
        .map(|i| {
            let work = work.clone();
            let control = control.clone();
            let seed = args.seed.wrapping_add(i as u64);
            thread::Builder::new()
                .name(format!("client-{i}"))
                .spawn(move || client(i, seed, &work, &control))
                .map_err(|e| format!("cannot start client thread {i}: {e}"))
        })
        .collect::<Result<_, _>>()?;

    let mut phase_start = Instant::now();
    let mut measure_start = if warmup.is_zero() { Some(phase_start) } else { None };
    let mut last_print = (Instant::now(), 0u64);
    loop {
        thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if control.running.load(Ordering::Acquire) == 0 {
            break;
        }
        match measure_start {
            None if now - phase_start >= warmup => {
                control.phase.store(MEASURE, Ordering::Release);
                control.finished.store(0, Ordering::Relaxed);
                phase_start = now;
                measure_start = Some(now);
                last_print = (now, 0);
                eprintln!("kvbench: warmup done, measuring");
            }
            Some(start) if args.count.is_none() && now - start >= duration => {
                control.phase.store(STOP, Ordering::Release);
            }
            _ => {}
        }
        if now - last_print.0 >= Duration::from_secs(1) {
            let finished = control.finished.load(Ordering::Relaxed);
            let rate =
                (finished - last_print.1.min(finished)) as f64 / (now - last_print.0).as_secs_f64();
            eprintln!(
                "kvbench: {} {:>6.1}s  {finished:>9} requests  {rate:>9.0}/s  {} errors",
                if measure_start.is_some() { "measure" } else { "warmup " },
                (now - phase_start).as_secs_f64(),
                control.errors.load(Ordering::Relaxed),
            );
            last_print = (now, finished);
        }
    }
    let mut stats = ClientStats::default();
    for h in handles {
        stats.merge(h.join().map_err(|_| "a client thread panicked".to_string())?);
    }
    // From the end of the warmup to the last measured reply.
    let measured = match (measure_start, stats.last_reply) {
        (Some(start), Some(end)) => end.saturating_duration_since(start),
        _ => Duration::ZERO,
    };
    Ok(Report { stats, measured })
}

/// A duration in nanoseconds, readably (µs below a millisecond, ms above).
fn show_ns(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{:.1}µs", ns as f64 / 1e3)
    } else {
        format!("{:.2}ms", ns as f64 / 1e6)
    }
}

/// The quantiles reported, with their names.
const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

fn throughput(report: &Report) -> f64 {
    let secs = report.measured.as_secs_f64();
    if secs > 0.0 { report.stats.ok as f64 / secs } else { 0.0 }
}

fn print_summary(args: &Args, report: &Report) {
    let s = &report.stats;
    let h = &s.latency_ns;
    let op = match args.op {
        Op::Mixed => format!("mixed ({}% gets)", args.read_pct),
        other => other.name().to_string(),
    };
    println!(
        "kvbench: {op}, {} clients over {} endpoint(s) ({}), {} keys of {} B, values of {} B",
        args.clients,
        args.endpoints.len(),
        args.endpoints.join(","),
        args.keyspace,
        args.key_size,
        args.value_size
    );
    println!(
        "  measured    {:.2}s{}",
        report.measured.as_secs_f64(),
        if args.warmup > 0.0 { format!(" (after {}s of warmup)", args.warmup) } else { "".into() }
    );
    println!("  requests    {} ok, {} errors, {} reconnects", s.ok, s.errors, s.reconnects);
    if args.op != Op::Put {
        println!("  gets        {} hits, {} misses (missing keys)", s.get_hits, s.get_misses);
    }
    println!("  throughput  {:.0} requests/s", throughput(report));
    let quantiles: Vec<String> = QUANTILES
        .iter()
        .map(|&(name, q)| format!("{name} {}", show_ns(h.value_at_quantile(q))))
        .collect();
    println!(
        "  latency     {}  max {}  (mean {})",
        quantiles.join("  "),
        show_ns(h.max()),
        show_ns(h.mean() as u64)
    );
    for m in &s.error_messages {
        println!("  error seen: {m}");
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json(args: &Args, report: &Report) -> String {
    let s = &report.stats;
    let h = &s.latency_ns;
    let us = |ns: u64| ns as f64 / 1e3;
    let errors: Vec<String> = s.error_messages.iter().map(|m| json_string(m)).collect();
    format!(
        "{{\"endpoints\":{},\"op\":\"{}\",\"read_pct\":{},\"clients\":{},\"value_size\":{},\
         \"key_size\":{},\"keyspace\":{},\"preload\":{},\"warmup_s\":{},\"measured_s\":{:.3},\
         \"ops\":{},\"errors\":{},\"reconnects\":{},\"get_hits\":{},\"get_misses\":{},\
         \"ops_per_s\":{:.1},\"latency_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\
         \"p999\":{:.1},\"max\":{:.1},\"mean\":{:.1}}},\"error_messages\":[{}]}}",
        json_string(&args.endpoints.join(",")),
        args.op.name(),
        args.read_pct,
        args.clients,
        args.value_size,
        args.key_size,
        args.keyspace,
        args.preload,
        args.warmup,
        report.measured.as_secs_f64(),
        s.ok,
        s.errors,
        s.reconnects,
        s.get_hits,
        s.get_misses,
        throughput(report),
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.9)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max()),
        h.mean() / 1e3,
        errors.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_to_their_size() {
        assert_eq!(key(42, 6), b"k00042");
        assert_eq!(key(0, 2), b"k0");
        assert_eq!(min_key_size(1), 2);
        assert_eq!(min_key_size(100_000), 6);
        assert_eq!(key(99_999, min_key_size(100_000)).len(), 6);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
