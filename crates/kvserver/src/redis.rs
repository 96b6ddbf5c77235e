//! The Redis protocol (RESP2) in front of a [`KvServer`], so that `redis-cli`,
//! `redis-benchmark` and Redis client libraries work against the store unchanged.
//!
//! # Connections
//!
//! Each connection has two threads. The **reader** parses commands as they arrive and submits
//! writes at once, without waiting for earlier ones to be answered; the **reply writer** waits
//! for their outcomes in command order and writes the replies, all that are ready in one system
//! call. So a client that pipelines (as `redis-benchmark -P` and multiplexing client libraries
//! do) keeps many writes in flight on one connection (up to [`MAX_WRITES_IN_FLIGHT`]), and
//! consecutive writes that arrive together reach Raft as one batch (one log append, one
//! AppendEntries, one fsync).
//!
//! Within one connection commands take effect in the order sent, as Redis promises. Each
//! connection is one client of the service: its first write registers a session (through the
//! log, [`Op::Register`]), whose writes are numbered 1, 2, 3, … and marked
//! [`ordered`](Request::ordered): the service applies a write only right after the
//! connection's previous one, so a write that was lost on the way (a leader change) and is
//! resent never lands after a later one; the later one is refused and resent in turn. A resent
//! write keeps its number, so it takes effect once. A read (or `SCAN`, `KEYS`, a clerk's
//! request) waits until every write before it is answered, then runs, so it sees them.
//!
//! # Sessions
//!
//! A write answered `-TRYAGAIN` (its outcome unknown) or finding its session gone marks the
//! session broken: the connection's next write registers a new session that retires the old
//! one in the same log entry, so the connection is never stuck behind a number that may never
//! apply, and the lost write either took effect before the new session's first write or never
//! does. A connection idle for half the server's session TTL also registers again before its
//! next write, so that expiry never shows. Reads need no session. A connection that closes ends
//! its session ([`Op::EndSession`]), so that the table does not keep it until it expires.
//!
//! Any replica accepts any command: followers forward writes to the leader through Raft and
//! serve reads with a read index from the leader (see [`ServerConfig`](crate::ServerConfig)).
//! While there is no leader, commands are retried for [`RedisConfig::retry_for`], then answered
//! with a `-TRYAGAIN` error.
//!
//! # Commands
//!
//! `PING`, `ECHO`, `GET`, `SET` (no options), `MGET`, `MSET`, `DEL`/`UNLINK`, `EXISTS`,
//! `APPEND`, `STRLEN`, `SCAN cursor [MATCH pattern] [COUNT n]`, `KEYS pattern`, `DBSIZE`,
//! `INFO`, `SELECT 0`, `QUIT`, `AUTH [user] password`, `HELLO [2 [AUTH user password]
//! [SETNAME name]]` (RESP2 only: `HELLO 3` is answered `-NOPROTO`), and the handshake commands
//! clients send (`COMMAND`, `CONFIG GET`, `CLIENT …`) answered so that clients carry on.
//! `RAFTKV.REQUEST` carries
//! a [`Request`] of our own clerk (postcard-encoded) and answers its [`Reply`], so the clerk keeps
//! its own client id, sequence numbers and leader tracking. Anything else is an
//! `-ERR unknown command` reply; a protocol error gets an `-ERR Protocol error` reply and the
//! connection is closed, as Redis does. Nothing a client sends can stop the server.
//!
//! # Access control
//!
//! With [`RedisConfig::access`] set (the server binary's `--requirepass` and `--users-file`;
//! [`crate::auth`]), a connection runs nothing but `AUTH`, `HELLO`, `PING` and `QUIT` until it
//! authenticates: anything else is answered `-NOAUTH Authentication required.`, as Redis
//! does (except that `PING` is answered, so that health checks need no password). `AUTH
//! password` authenticates as the user `default`, `AUTH user password` (or `HELLO 2 AUTH user
//! password`) as any user. A wrong password, or an unknown user, is answered
//! `-WRONGPASS invalid username-password pair or user is disabled.` after
//! [`AUTH_FAILURE_DELAY`], slept on that connection's own thread (other clients are not
//! slowed), and counted in `INFO`'s `auth_failures`; the connection stays as it was. A
//! read-only user's writes (any command that would submit a write [`Op`], `RAFTKV.REQUEST`
//! included) are answered `-NOPERM User <name> has no permissions to run the '<command>'
//! command` and submit nothing. Without access control every connection is the user
//! `default` with every permission, and `AUTH password` is answered with Redis's error for a
//! server without a password.
//!
//! # TLS
//!
//! With [`RedisConfig::tls`] set, every connection starts with a TLS handshake and carries
//! the protocol inside it; the reader and the reply writer share the session as
//! [`crate::tls`] describes. A client that does not speak TLS gets no answer in the clear.
//!
//! # Limits
//!
//! Nothing a client sends can make a node hold more than the limits in [`RedisConfig`]: a
//! command whose arguments add up to more than [`RedisConfig::max_request_bytes`] is answered
//! with an error as soon as its declared lengths show it, and its bytes are dropped as they
//! arrive (the connection carries on); unparsed input past
//! [`RedisConfig::max_query_buffer`] closes the connection; a client that does not read its
//! replies is not read from while more than [`RedisConfig::max_reply_buffer`] bytes of them wait
//! (backpressure); connections past [`RedisConfig::max_clients`] are refused; and
//! [`RedisConfig::idle_timeout`] closes silent ones. `docs/operations.md` ("Limits") lists them
//! with what a client sees, and what one connection costs (two threads, one socket, about
//! 100 KiB of buffers).
//!
//! `SCAN` cursors are numbers, as clients expect; each node keeps a table from cursor to the
//! key to continue from (the most recent [`MAX_CURSORS`]), so a cursor is valid on the node that
//! issued it.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kvproto::proto::{Op, Outcome, Reply, Request};
use kvproto::resp::{self, Command, CommandDecoder, Limits};
use parking_lot::Mutex;

use crate::auth::{AccessControl, DEFAULT_USER, Permission};
use crate::server::{KvServer, Pending};
use crate::tls::{ClientStream, ClientTls};

/// At most this many writes of one connection are in flight; more wait for earlier ones.
pub const MAX_WRITES_IN_FLIGHT: usize = 64;

/// How many `SCAN` cursors a node remembers; older ones are forgotten.
pub const MAX_CURSORS: usize = 10_000;

/// The most pairs one `SCAN` step reads, whatever `COUNT` asks.
const MAX_SCAN_COUNT: u32 = 1000;

/// The most reads of one connection submitted together (one read-index round); more wait
/// for the next batch. It bounds the replies one batch can add before the reply limit
/// ([`RedisConfig::max_reply_buffer`]) is checked again.
pub const MAX_READS_PER_BATCH: usize = 64;

/// How much a connection reads from its socket in one call.
const READ_CHUNK: usize = 64 << 10;

/// How long the accept loop sleeps between polls of its non-blocking listener.
const ACCEPT_POLL: Duration = Duration::from_millis(10);

/// How long a connection waits before it is answered `-WRONGPASS`: it slows password guessing
/// on one connection to ten guesses a second. It is slept on that connection's thread, so
/// other clients are not slowed.
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_millis(100);

/// Extra `INFO` text: a section the embedding program adds (for example, storage sizes).
pub type InfoSource = Arc<dyn Fn() -> String + Send + Sync>;

/// How the Redis front end behaves. Start from [`RedisConfig::default`].
///
/// The limits on what a client can make a node hold (`docs/operations.md`, "Limits"):
/// [`max_request_bytes`](Self::max_request_bytes) per command,
/// [`max_query_buffer`](Self::max_query_buffer) of unparsed input and
/// [`max_reply_buffer`](Self::max_reply_buffer) of unsent replies per connection,
/// [`max_clients`](Self::max_clients) connections, and
/// [`idle_timeout`](Self::idle_timeout) for connections that send nothing.
#[derive(Clone)]
pub struct RedisConfig {
    /// Limits on what one command may claim (array and bulk lengths, nesting, inline size).
    pub limits: Limits,
    /// The largest command, as the sum of its arguments' lengths (the command name included,
    /// the RESP framing not): about the size of the Raft entry a write becomes, which adds a
    /// few bytes per argument (postcard's length prefixes) and a header of a few dozen bytes.
    /// A larger command is answered `-ERR request of at least N bytes exceeds
    /// --max-request-bytes (M)` as soon as the lengths it declares pass the limit, and its
    /// remaining bytes are read and dropped without being buffered; the connection carries on.
    /// Default 8 MiB (the server binary's `--max-request-bytes`).
    pub max_request_bytes: u64,
    /// A connection whose unparsed input passes this many bytes is closed with an error. The
    /// unparsed input is at most one unfinished command (at most `max_request_bytes` of
    /// arguments plus their framing) and one read from the socket (64 KiB), so keep this well
    /// above `max_request_bytes`. Default 40 MiB: 8 MiB plus 32 MiB of framing, enough for the
    /// 2^20 arguments a command may have.
    pub max_query_buffer: usize,
    /// Replies a connection may have waiting to be sent to a client that does not read them.
    /// Past this many bytes the server stops reading that connection's commands until the
    /// client reads enough replies (backpressure: the client's own sends then block). A batch
    /// of reads (up to [`MAX_READS_PER_BATCH`]) or one command's reply may overshoot it once.
    /// Default 16 MiB.
    pub max_reply_buffer: usize,
    /// Connections beyond this many are refused with `-ERR max number of clients reached`.
    pub max_clients: usize,
    /// A connection that sends nothing for this long, with no reply outstanding, is closed
    /// (Redis's `timeout`). `None`, the default, never closes one.
    pub idle_timeout: Option<Duration>,
    /// How long a command is retried while there is no leader (or the leader changes) before
    /// the client gets a `-TRYAGAIN` error.
    pub retry_for: Duration,
    /// Extra text for `INFO`.
    pub info: Option<InfoSource>,
    /// Who may connect, and whether they may write (see the module docs, "Access control").
    /// `None`, the default: everyone may do everything, as with a Redis server without a
    /// password.
    pub access: Option<Arc<AccessControl>>,
    /// TLS on the client port (see [`crate::tls`]); `None`, the default: plain TCP.
    pub tls: Option<ClientTls>,
}

/// [`RedisConfig::max_request_bytes`]'s default: 8 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 8 << 20;

impl Default for RedisConfig {
    fn default() -> RedisConfig {
        RedisConfig {
            limits: Limits::default(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_query_buffer: (DEFAULT_MAX_REQUEST_BYTES as usize) + (32 << 20),
            max_reply_buffer: 16 << 20,
            max_clients: 10_000,
            idle_timeout: None,
            retry_for: Duration::from_secs(10),
            info: None,
            access: None,
            tls: None,
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("limits", &self.limits)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_query_buffer", &self.max_query_buffer)
            .field("max_reply_buffer", &self.max_reply_buffer)
            .field("max_clients", &self.max_clients)
            .field("idle_timeout", &self.idle_timeout)
            .field("retry_for", &self.retry_for)
            .field("access", &self.access)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A Redis-protocol listener serving one [`KvServer`]. Stops when [`stop`](Self::stop) is
/// called or the last clone is dropped.
#[derive(Clone)]
pub struct RedisServer {
    /// Held by the clones of this handle only (connection threads hold `Shared` itself), so
    /// that dropping the last clone stops the server even while clients are connected.
    handle: Arc<Handle>,
}

/// Stops the server when the last [`RedisServer`] clone goes.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("addr", &self.handle.shared.addr)
            .finish_non_exhaustive()
    }
}

struct Shared {
    server: KvServer,
    config: RedisConfig,
    addr: SocketAddr,
    stopped: AtomicBool,
    /// Open connections, to shut down on stop.
    connections: Mutex<HashMap<u64, Arc<ClientStream>>>,
    clients: AtomicUsize,
    /// Connections not read from because their unsent replies passed `max_reply_buffer`.
    paused: AtomicUsize,
    /// Bytes of replies encoded and not yet sent, over every connection.
    reply_bytes: AtomicUsize,
    next_connection: AtomicU64,
    cursors: Mutex<Cursors>,
    commands: AtomicU64,
    /// `AUTH`s (and `HELLO … AUTH`s) refused: a wrong password or an unknown user.
    auth_failures: AtomicU64,
    accept_thread: Mutex<Option<JoinHandle<()>>>,
}

/// SCAN cursors: number → the key to continue from.
#[derive(Default)]
struct Cursors {
    next: u64,
    by_id: HashMap<u64, Bytes>,
    order: VecDeque<u64>,
}

impl Cursors {
    /// Numbering starts at a random point, so that a cursor taken to another node (or to a
    /// restarted one) is almost surely unknown there, and refused, rather than mistaken for
    /// one of its own.
    fn new() -> Cursors {
        Cursors { next: rand::random::<u64>() >> 12, ..Cursors::default() }
    }

    fn issue(&mut self, key: Bytes) -> u64 {
        self.next += 1;
        let id = self.next;
        self.by_id.insert(id, key);
        self.order.push_back(id);
        while self.order.len() > MAX_CURSORS {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
        id
    }
}

impl RedisServer {
    /// Serves `server` on `listener` (bind it first; port 0 picks a free port).
    ///
    /// # Errors
    /// If the listener cannot be made non-blocking or the accept thread cannot start.
    pub fn start(
        listener: TcpListener,
        server: KvServer,
        config: RedisConfig,
    ) -> io::Result<RedisServer> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            server,
            config,
            addr,
            stopped: AtomicBool::new(false),
            connections: Mutex::default(),
            clients: AtomicUsize::new(0),
            paused: AtomicUsize::new(0),
            reply_bytes: AtomicUsize::new(0),
            next_connection: AtomicU64::new(0),
            cursors: Mutex::new(Cursors::new()),
            commands: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            accept_thread: Mutex::new(None),
        });
        let weak = Arc::downgrade(&shared);
        let handle = thread::Builder::new()
            .name(format!("redis-accept-{}", addr.port()))
            .spawn(move || accept_loop(&listener, &weak))?;
        *shared.accept_thread.lock() = Some(handle);
        Ok(RedisServer { handle: Arc::new(Handle { shared }) })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.shared.addr
    }

    /// Open client connections.
    pub fn clients(&self) -> usize {
        self.handle.shared.clients.load(Ordering::Acquire)
    }

    /// Connections not read from at the moment because too many of their replies wait to be
    /// sent ([`RedisConfig::max_reply_buffer`]).
    pub fn paused_clients(&self) -> usize {
        self.handle.shared.paused.load(Ordering::Acquire)
    }

    /// Bytes of replies encoded and not yet written to the clients' sockets, over every
    /// connection.
    pub fn queued_reply_bytes(&self) -> usize {
        self.handle.shared.reply_bytes.load(Ordering::Acquire)
    }

    /// Stops accepting, closes every connection, and returns once the listener is closed.
    pub fn stop(&self) {
        self.handle.shared.stop();
    }
}

fn accept_loop(listener: &TcpListener, shared: &std::sync::Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        if s.stopped.load(Ordering::Acquire) {
            return;
        }
        match listener.accept() {
            Ok((stream, peer)) => s.accepted(stream, peer),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                drop(s);
                thread::sleep(ACCEPT_POLL);
            }
            Err(e) => {
                log::warn!("redis listener {}: accept failed: {e}", s.addr);
                drop(s);
                thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

impl Shared {
    /// [`RedisServer::stop`]. Never runs on the accept thread (which holds no [`Handle`]).
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        for (_, conn) in self.connections.lock().drain() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        if let Some(handle) = self.accept_thread.lock().take() {
            let _ = handle.join();
        }
    }

    fn accepted(self: &Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
        if stream.set_nonblocking(false).is_err() {
            return;
        }
        let _ = stream.set_nodelay(true);
        if self.clients.load(Ordering::Acquire) >= self.config.max_clients {
            log::warn!("refusing client {peer}: {} clients connected", self.config.max_clients);
            // Over TLS the handshake has not run: closing is all that can be said.
            if self.config.tls.is_none() {
                let _ = (&stream).write_all(b"-ERR max number of clients reached\r\n");
            }
            return;
        }
        if stream.set_read_timeout(self.config.idle_timeout).is_err() {
            return;
        }
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        // One socket (one file descriptor) shared by the reader, the reply writer and `stop`.
        let stream = match ClientStream::new(stream, self.config.tls.as_ref()) {
            Ok(stream) => Arc::new(stream),
            Err(e) => {
                log::warn!("dropping client {peer}: {e}");
                return;
            }
        };
        {
            let mut connections = self.connections.lock();
            // `stop` sets the flag before it takes this lock to close every connection: a
            // connection accepted while it ran is either closed there or refused here.
            if self.stopped.load(Ordering::Acquire) {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            connections.insert(id, Arc::clone(&stream));
        }
        self.clients.fetch_add(1, Ordering::AcqRel);
        let shared = Arc::clone(self);
        let spawned = thread::Builder::new().name(format!("redis-conn-{id}")).spawn(move || {
            let mut conn = Connection::new(&shared, id, stream, peer);
            if let Err(e) = conn.run(format!("redis-reply-{id}")) {
                log::debug!("client {peer}: {e}");
            }
            shared.connections.lock().remove(&id);
            shared.clients.fetch_sub(1, Ordering::AcqRel);
            conn.end_session();
        });
        if spawned.is_err() {
            self.connections.lock().remove(&id);
            self.clients.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What one parsed command turns into.
enum Action {
    /// A reply known at once.
    Reply(resp::Value),
    /// An operation on the store, and how to turn its outcome into a reply.
    Op(Op, Shape),
    /// Our clerk's request, answered with its `Reply`, not retried here.
    Clerk(Request),
    /// `SCAN`: a page read, then a cursor issued.
    Scan { start: Bytes, count: u32, pattern: Option<Bytes> },
    /// `KEYS`: every matching key, read page by page.
    Keys(Bytes),
    /// Reply, then close the connection.
    Quit,
}

/// How an outcome becomes a RESP reply.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// `+OK`.
    Ok,
    /// A bulk string or null.
    Value,
    /// The value's length (`STRLEN`).
    Strlen,
    /// An integer: a count or a length.
    Integer,
    /// `EXISTS`: how many of the values are present.
    Exists,
    /// `MGET`: an array of bulk strings or nulls.
    Values,
}

struct Connection<'a> {
    shared: &'a Arc<Shared>,
    /// The connection's number on this server (`HELLO` shows it as its `id`).
    id: u64,
    stream: Arc<ClientStream>,
    peer: SocketAddr,
    /// The user the connection is authenticated as (`default` until an `AUTH` says otherwise).
    user: String,
    /// What the connection may do; `None` until it authenticates (only with access control).
    permission: Option<Permission>,
    decoder: CommandDecoder,
    /// This connection as a client of the service: a session, whose writes are numbered 1, 2,
    /// 3, … and `ordered`, so that writes in flight together take effect in the order sent.
    session: Arc<Mutex<ConnSession>>,
    /// Reads (which the service does not deduplicate) go under another id and their own
    /// numbers, so that they never take a write's number.
    read_client_id: u64,
    read_seq: u64,
    /// Replies, in command order, for the reply writer.
    jobs: Option<crossbeam_channel::Sender<Job>>,
    outstanding: Arc<Outstanding>,
}

/// A connection's client session (see the module documentation, "Sessions").
#[derive(Debug)]
struct ConnSession {
    /// The session's id; `None` until the connection's first write registers one.
    id: Option<u64>,
    /// The number of the last write submitted under it.
    seq: u64,
    /// A write of the session ended with its outcome unknown (`-TRYAGAIN`) or found the
    /// session gone: the next write starts a new session, retiring this one.
    broken: bool,
    /// When a write was last submitted under it.
    last_write: Instant,
}

impl ConnSession {
    /// Marks session `id` as broken, if it is still the connection's session.
    fn broke(&mut self, id: u64) {
        if self.id == Some(id) {
            self.broken = true;
        }
    }
}

/// The reply writer's next task, in the order the commands came.
enum Job {
    /// Replies already encoded.
    Bytes(BytesMut),
    /// Writes submitted to the server: wait for their outcomes (resubmitting those not
    /// answered), then encode the replies.
    Writes(WritesInFlight),
    /// Close the connection once everything before is written.
    Close,
}

struct WritesInFlight {
    /// The connection's session, to mark broken if a write's outcome is unknown.
    session: Arc<Mutex<ConnSession>>,
    requests: Vec<Request>,
    shapes: Vec<Shape>,
    pending: Vec<Pending>,
    /// When to give up resubmitting.
    deadline: Instant,
}

/// What the reply writer has not finished: jobs, writes among them, and reply bytes not yet
/// sent. The reader waits on it before a read (which must see the writes sent before it), when
/// too many writes are in flight, and when too many reply bytes wait to be sent.
struct Outstanding {
    shared: Arc<Shared>,
    counts: Mutex<Counts>,
    changed: parking_lot::Condvar,
}

#[derive(Default)]
struct Counts {
    jobs: usize,
    writes: usize,
    /// Replies encoded (queued as bytes, or encoded by the writer) and not yet sent.
    reply_bytes: usize,
}

impl Outstanding {
    fn new(shared: Arc<Shared>) -> Outstanding {
        Outstanding { shared, counts: Mutex::default(), changed: parking_lot::Condvar::new() }
    }

    /// A job is queued: with `writes` writes, and `bytes` bytes of replies already encoded.
    fn add(&self, writes: usize, bytes: usize) {
        let mut c = self.counts.lock();
        c.jobs += 1;
        c.writes += writes;
        c.reply_bytes += bytes;
        self.shared.reply_bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    fn done(&self, writes: usize) {
        let mut c = self.counts.lock();
        c.jobs -= 1;
        c.writes -= writes;
        self.changed.notify_all();
    }

    /// The reply writer encoded `bytes` more bytes of replies.
    fn encoded(&self, bytes: usize) {
        self.counts.lock().reply_bytes += bytes;
        self.shared.reply_bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    /// `bytes` bytes of replies left: written to the client, or dropped.
    fn sent(&self, bytes: usize) {
        let mut c = self.counts.lock();
        c.reply_bytes -= bytes;
        self.shared.reply_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.changed.notify_all();
    }

    /// Whether nothing is left for the reply writer.
    fn is_idle(&self) -> bool {
        self.counts.lock().jobs == 0
    }

    fn reply_bytes(&self) -> usize {
        self.counts.lock().reply_bytes
    }

    /// Waits until no job is left.
    fn wait_idle(&self) {
        let mut c = self.counts.lock();
        while c.jobs > 0 {
            self.changed.wait(&mut c);
        }
    }

    /// Waits until `more` writes fit under the limit (always, when none are in flight).
    fn wait_room(&self, more: usize) {
        let mut c = self.counts.lock();
        while c.writes > 0 && c.writes + more > MAX_WRITES_IN_FLIGHT {
            self.changed.wait(&mut c);
        }
    }

    /// Waits until at most `limit` bytes of replies wait to be sent, counting this connection
    /// among the paused ones meanwhile.
    fn wait_reply_room(&self, limit: usize) {
        let mut c = self.counts.lock();
        if c.reply_bytes <= limit {
            return;
        }
        self.shared.paused.fetch_add(1, Ordering::AcqRel);
        while c.reply_bytes > limit {
            self.changed.wait(&mut c);
        }
        self.shared.paused.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<'a> Connection<'a> {
    fn new(
        shared: &'a Arc<Shared>,
        id: u64,
        stream: Arc<ClientStream>,
        peer: SocketAddr,
    ) -> Connection<'a> {
        // Without access control, every connection is `default`, allowed everything.
        let permission = shared.config.access.is_none().then_some(Permission::ReadWrite);
        Connection {
            shared,
            id,
            stream,
            peer,
            user: DEFAULT_USER.to_string(),
            permission,
            decoder: CommandDecoder::with_max_command_bytes(
                shared.config.limits,
                shared.config.max_request_bytes,
            ),
            session: Arc::new(Mutex::new(ConnSession {
                id: None,
                seq: 0,
                broken: false,
                last_write: Instant::now(),
            })),
            read_client_id: rand::random(),
            read_seq: 0,
            jobs: None,
            outstanding: Arc::new(Outstanding::new(Arc::clone(shared))),
        }
    }

    /// Reads and dispatches commands on this thread while a reply writer thread waits for
    /// their outcomes and writes the replies, in order.
    fn run(&mut self, name: String) -> io::Result<()> {
        let (jobs, queued) = crossbeam_channel::unbounded();
        let writer = ReplyWriter {
            shared: Arc::clone(self.shared),
            stream: Arc::clone(&self.stream),
            outstanding: Arc::clone(&self.outstanding),
        };
        let writer = thread::Builder::new().name(name).spawn(move || writer.run(&queued))?;
        self.jobs = Some(jobs);
        let read = self.read_loop();
        self.push(Job::Close, 0);
        self.jobs = None;
        let _ = writer.join();
        read
    }

    fn push(&self, job: Job, writes: usize) {
        if let Some(jobs) = &self.jobs {
            let bytes = match &job {
                Job::Bytes(b) => b.len(),
                Job::Writes(_) | Job::Close => 0,
            };
            self.outstanding.add(writes, bytes);
            if jobs.send(job).is_err() {
                self.outstanding.done(writes);
                self.outstanding.sent(bytes);
            }
        }
    }

    /// Backpressure: while more than `max_reply_buffer` bytes of this connection's replies
    /// wait to be sent (counting `replies`, encoded here and not yet queued), hands `replies`
    /// to the reply writer and waits, reading nothing more from the client.
    fn make_reply_room(&self, replies: &mut BytesMut) {
        let limit = self.shared.config.max_reply_buffer;
        if self.outstanding.reply_bytes() + replies.len() <= limit {
            return;
        }
        if !replies.is_empty() {
            self.push(Job::Bytes(std::mem::take(replies)), 0);
        }
        self.outstanding.wait_reply_room(limit);
    }

    fn read_loop(&mut self) -> io::Result<()> {
        let mut input = BytesMut::with_capacity(16 << 10);
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            self.make_reply_room(&mut BytesMut::new());
            let n = match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                // The idle timeout (the socket's read timeout) passed with nothing received.
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    if self.outstanding.is_idle() {
                        log::info!(
                            "closing client {}: idle for {:?} (--timeout)",
                            self.peer,
                            self.shared.config.idle_timeout.unwrap_or_default()
                        );
                        return Ok(());
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            input.extend_from_slice(&chunk[..n]);
            let mut actions = Vec::new();
            // The last reply before the connection closes: a protocol error, or too much
            // unparsed input.
            let mut fatal = None;
            loop {
                match self.decoder.next_command(&input) {
                    Ok(Some((Command::Args(args), used))) => {
                        let _ = input.split_to(used);
                        if !args.is_empty() {
                            actions.push(self.action(&args));
                        }
                    }
                    Ok(Some((Command::TooLarge { size }, used))) => {
                        let _ = input.split_to(used);
                        self.shared.commands.fetch_add(1, Ordering::Relaxed);
                        let max = self.shared.config.max_request_bytes;
                        log::debug!("client {}: a request of {size}+ bytes refused", self.peer);
                        actions.push(Action::Reply(resp::Value::error(format!(
                            "ERR request of at least {size} bytes exceeds --max-request-bytes \
                             ({max})"
                        ))));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        fatal = Some(e.to_reply());
                        break;
                    }
                }
            }
            if fatal.is_none() && input.len() > self.shared.config.max_query_buffer {
                fatal = Some(resp::Value::error(
                    "ERR query buffer limit reached; closing the connection",
                ));
            }
            let quit = self.dispatch(actions);
            if quit {
                return Ok(());
            }
            if let Some(reply) = fatal {
                let mut out = BytesMut::new();
                reply.encode(&mut out);
                self.push(Job::Bytes(out), 0);
                return Ok(());
            }
            if input.capacity() > (1 << 20) && input.is_empty() {
                input = BytesMut::with_capacity(16 << 10);
            }
        }
    }

    /// Hands `actions` to the reply writer in order: writes are submitted at once (up to
    /// [`MAX_WRITES_IN_FLIGHT`]) and answered as their outcomes come; everything else waits
    /// for the writes before it, then runs here. True after `QUIT`.
    fn dispatch(&mut self, actions: Vec<Action>) -> bool {
        let mut replies = BytesMut::new();
        let mut actions = actions.into_iter().peekable();
        while let Some(action) = actions.next() {
            self.make_reply_room(&mut replies);
            match action {
                Action::Reply(v) => v.encode(&mut replies),
                Action::Quit => {
                    resp::Value::ok().encode(&mut replies);
                    self.push(Job::Bytes(replies), 0);
                    return true;
                }
                Action::Op(op, shape) if op.is_write() => {
                    let run = take_run((op, shape), &mut actions, usize::MAX);
                    if !replies.is_empty() {
                        self.push(Job::Bytes(std::mem::take(&mut replies)), 0);
                    }
                    self.submit_writes(run);
                }
                other => {
                    // Reads see every write sent before them: wait until those are answered.
                    let mut run = vec![other];
                    while let Some(next) = actions.peek() {
                        let sync = match next {
                            Action::Op(op, _) => !op.is_write(),
                            Action::Clerk(_) | Action::Scan { .. } | Action::Keys(_) => true,
                            Action::Reply(_) | Action::Quit => false,
                        };
                        if !sync {
                            break;
                        }
                        run.push(actions.next().expect("peeked"));
                    }
                    self.outstanding.wait_idle();
                    self.execute(run, &mut replies);
                }
            }
        }
        if !replies.is_empty() {
            self.push(Job::Bytes(replies), 0);
        }
        false
    }

    /// Submits a run of writes, numbered in order, and queues them for the reply writer.
    /// While a disk alarm refuses writes, those it refuses are answered here, in their place
    /// among the others and without taking a sequence number (a number never applied would
    /// hold up this connection's later ordered writes).
    fn submit_writes(&mut self, run: Vec<(Op, Shape)>) {
        if let Some(refusal) = self.shared.server.disk_refusal() {
            let mut allowed = Vec::new();
            for (op, shape) in run {
                if crate::server::blocked_by_alarm(&op) {
                    if !allowed.is_empty() {
                        self.submit_numbered(std::mem::take(&mut allowed));
                    }
                    let mut reply = BytesMut::new();
                    resp::Value::error(refusal.clone()).encode(&mut reply);
                    self.push(Job::Bytes(reply), 0);
                } else {
                    allowed.push((op, shape));
                }
            }
            if !allowed.is_empty() {
                self.submit_numbered(allowed);
            }
            return;
        }
        self.submit_numbered(run);
    }

    /// Submits a run of writes, numbered in order, and queues them for the reply writer.
    fn submit_numbered(&mut self, run: Vec<(Op, Shape)>) {
        self.outstanding.wait_room(run.len());
        let (ops, shapes): (Vec<Op>, Vec<Shape>) = run.into_iter().unzip();
        let n = ops.len();
        let id = match self.session_for_writes() {
            Ok(id) => id,
            Err(e) => {
                let mut out = BytesMut::new();
                for _ in 0..n {
                    resp::write_error(&mut out, &e);
                }
                self.push(Job::Bytes(out), 0);
                return;
            }
        };
        let mut session = self.session.lock();
        session.last_write = Instant::now();
        let requests: Vec<Request> = ops
            .into_iter()
            .map(|op| {
                session.seq += 1;
                Request { client_id: id, seq: session.seq, op, ordered: true }
            })
            .collect();
        drop(session);
        let deadline = Instant::now() + self.shared.config.retry_for;
        let pending = self.shared.server.submit(requests.clone());
        let session = Arc::clone(&self.session);
        let job = WritesInFlight { session, requests, shapes, pending, deadline };
        self.push(Job::Writes(job), n);
    }

    /// Ends the connection's session, if it has one, once the connection has closed: its
    /// entry leaves the table now rather than when it expires. Not while the server stops
    /// (the session then simply expires).
    fn end_session(&self) {
        let Some(id) = self.session.lock().id else { return };
        if self.shared.stopped.load(Ordering::Acquire) {
            return;
        }
        let op = Op::EndSession { id };
        let request = Request { client_id: rand::random(), seq: 0, op, ordered: false };
        let reply = self.shared.server.handle(request);
        log::debug!("client {}: session ended: {reply:?}", self.peer);
    }

    /// The session this connection's next writes go under: the current one, or a new one if
    /// there is none yet, the last one broke (a write's outcome went unknown), or it was idle
    /// for half the session TTL (so that it cannot expire under the next write).
    fn session_for_writes(&mut self) -> Result<u64, String> {
        let ttl = self.shared.server.config().session_ttl;
        let old = {
            let session = self.session.lock();
            match session.id {
                Some(id) if !session.broken && session.last_write.elapsed() < ttl / 2 => {
                    return Ok(id);
                }
                old => old,
            }
        };
        let id = register(self.shared, old).map_err(|e| {
            format!("TRYAGAIN could not start a client session: {e}; the write was not applied")
        })?;
        *self.session.lock() =
            ConnSession { id: Some(id), seq: 0, broken: false, last_write: Instant::now() };
        Ok(id)
    }

    /// Turns one command into an action. Errors in the command become error replies, and so
    /// do commands the connection may not run (see the module docs, "Access control").
    fn action(&mut self, args: &[Bytes]) -> Action {
        self.shared.commands.fetch_add(1, Ordering::Relaxed);
        let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        if self.permission.is_none() && !matches!(name.as_str(), "auth" | "hello" | "ping" | "quit")
        {
            return Action::Reply(resp::Value::error("NOAUTH Authentication required."));
        }
        let action = self.command(&name, args);
        self.permitted(&name, action)
    }

    /// `action` if the connection may run it; else, for a write by a read-only user, Redis's
    /// `-NOPERM` error. Everything that writes is an [`Action::Op`] or an [`Action::Clerk`]
    /// holding a write [`Op`], so this one check covers every command that writes.
    fn permitted(&self, name: &str, action: Action) -> Action {
        let op = match &action {
            Action::Op(op, _) => op,
            Action::Clerk(request) => &request.op,
            _ => return action,
        };
        if self.permission.is_some_and(|p| p.allows(op)) {
            return action;
        }
        log::debug!("client {}: user {} may not run {name} ({op:?})", self.peer, self.user);
        Action::Reply(resp::Value::error(format!(
            "NOPERM User {} has no permissions to run the '{name}' command",
            self.user
        )))
    }

    /// Turns one command, named `name` (in lowercase), into an action.
    fn command(&mut self, name: &str, args: &[Bytes]) -> Action {
        let rest = &args[1..];
        let arity = |ok: bool| {
            if ok {
                None
            } else {
                Some(Action::Reply(resp::Value::error(format!(
                    "ERR wrong number of arguments for '{name}' command"
                ))))
            }
        };
        let err = |msg: &str| Action::Reply(resp::Value::error(msg));
        match name {
            "ping" => arity(rest.len() <= 1).unwrap_or_else(|| match rest.first() {
                Some(msg) => Action::Reply(resp::Value::bulk(msg.clone())),
                None => Action::Reply(resp::Value::Simple("PONG".into())),
            }),
            "echo" => arity(rest.len() == 1)
                .unwrap_or_else(|| Action::Reply(resp::Value::bulk(rest[0].clone()))),
            "get" => arity(rest.len() == 1)
                .unwrap_or_else(|| Action::Op(Op::Get { key: rest[0].clone() }, Shape::Value)),
            "strlen" => arity(rest.len() == 1)
                .unwrap_or_else(|| Action::Op(Op::Get { key: rest[0].clone() }, Shape::Strlen)),
            "set" => arity(rest.len() >= 2).unwrap_or_else(|| {
                if rest.len() > 2 {
                    return err("ERR syntax error (SET options such as EX, PX, NX and XX are \
                                not supported)");
                }
                let op = Op::Put { key: rest[0].clone(), value: rest[1].clone() };
                Action::Op(op, Shape::Ok)
            }),
            "append" => arity(rest.len() == 2).unwrap_or_else(|| {
                let op = Op::Append { key: rest[0].clone(), value: rest[1].clone() };
                Action::Op(op, Shape::Integer)
            }),
            "del" | "unlink" => arity(!rest.is_empty()).unwrap_or_else(|| {
                Action::Op(Op::DeleteMany { keys: rest.to_vec() }, Shape::Integer)
            }),
            "exists" => arity(!rest.is_empty())
                .unwrap_or_else(|| Action::Op(Op::GetMany { keys: rest.to_vec() }, Shape::Exists)),
            "mget" => arity(!rest.is_empty())
                .unwrap_or_else(|| Action::Op(Op::GetMany { keys: rest.to_vec() }, Shape::Values)),
            "mset" => {
                arity(!rest.is_empty() && rest.len().is_multiple_of(2)).unwrap_or_else(|| {
                    let pairs = rest.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
                    Action::Op(Op::PutMany { pairs }, Shape::Ok)
                })
            }
            "dbsize" => arity(rest.is_empty()).unwrap_or(Action::Op(Op::Count, Shape::Integer)),
            "scan" => arity(!rest.is_empty()).unwrap_or_else(|| self.scan_action(rest)),
            "keys" => arity(rest.len() == 1).unwrap_or_else(|| Action::Keys(rest[0].clone())),
            "info" => Action::Reply(resp::Value::bulk(self.info())),
            "select" => arity(rest.len() == 1).unwrap_or_else(|| {
                if &rest[0][..] == b"0" {
                    Action::Reply(resp::Value::ok())
                } else {
                    err("ERR DB index is out of range (this store has only database 0)")
                }
            }),
            "quit" => Action::Quit,
            // What clients send when they connect: answered so that they carry on.
            "command" | "config" => Action::Reply(resp::Value::Array(Some(Vec::new()))),
            "client" => Action::Reply(resp::Value::ok()),
            "hello" => self.hello(rest),
            "auth" => arity(!rest.is_empty()).unwrap_or_else(|| {
                let reply = match rest {
                    [password] => self.authenticate(None, password),
                    [user, password] => self.authenticate(Some(user), password),
                    _ => Err(resp::Value::error("ERR syntax error")),
                };
                Action::Reply(reply.unwrap_or_else(|e| e))
            }),
            "raftkv.request" => {
                arity(rest.len() == 1).unwrap_or_else(|| {
                    match postcard::from_bytes::<Request>(&rest[0]) {
                        Ok(request) => Action::Clerk(request),
                        Err(e) => err(&format!("ERR malformed RAFTKV.REQUEST: {e}")),
                    }
                })
            }
            _ => {
                let shown: String = String::from_utf8_lossy(&args[0]).chars().take(128).collect();
                err(&format!("ERR unknown command '{shown}'"))
            }
        }
    }

    /// `AUTH [user] password`, and `HELLO`'s `AUTH` option: `+OK` if `password` is `user`'s
    /// (`default` if none is named), and the connection is that user from now on. Otherwise,
    /// after [`AUTH_FAILURE_DELAY`], `-WRONGPASS`, and the connection stays as it was.
    fn authenticate(
        &mut self,
        user: Option<&Bytes>,
        password: &[u8],
    ) -> Result<resp::Value, resp::Value> {
        let name = user.map_or(DEFAULT_USER.into(), |u| String::from_utf8_lossy(u));
        let permission = match &self.shared.config.access {
            Some(access) => access.authenticate(&name, password),
            // No access control: Redis's `default` user without a password, which takes any
            // password when named, while `AUTH password` is a configuration mistake.
            None if user.is_none() => {
                return Err(resp::Value::error(
                    "ERR AUTH <password> called without any password configured for the \
                     default user. Are you sure your configuration is correct?",
                ));
            }
            None => (name == DEFAULT_USER).then_some(Permission::ReadWrite),
        };
        match permission {
            Some(permission) => {
                self.user = name.into_owned();
                self.permission = Some(permission);
                Ok(resp::Value::ok())
            }
            None => {
                self.shared.auth_failures.fetch_add(1, Ordering::Relaxed);
                log::debug!("client {}: authentication as {name:?} failed", self.peer);
                thread::sleep(AUTH_FAILURE_DELAY);
                Err(resp::Value::error(
                    "WRONGPASS invalid username-password pair or user is disabled.",
                ))
            }
        }
    }

    /// `HELLO [protover [AUTH user password] [SETNAME name]]`, as Redis answers it, for
    /// protocol version 2 only: authenticates if asked to, then answers the server's
    /// description (a flat array of names and values, RESP2's form of a map).
    fn hello(&mut self, rest: &[Bytes]) -> Action {
        let err = |msg: String| Action::Reply(resp::Value::error(msg));
        let mut options = rest;
        if let Some(version) = rest.first() {
            match std::str::from_utf8(version).ok().and_then(|v| v.parse::<i64>().ok()) {
                Some(2) => {}
                Some(_) => return err("NOPROTO this server speaks RESP2 only".into()),
                None => {
                    return err("ERR Protocol version is not an integer or out of range".into());
                }
            }
            options = &rest[1..];
        }
        let mut credentials = None;
        let mut i = 0;
        while i < options.len() {
            let more = options.len() - i - 1;
            match options[i].to_ascii_lowercase().as_slice() {
                b"auth" if more >= 2 => {
                    credentials = Some((&options[i + 1], &options[i + 2]));
                    i += 3;
                }
                b"setname" if more >= 1 => i += 2,
                _ => {
                    let option = String::from_utf8_lossy(&options[i]);
                    return err(format!("ERR Syntax error in HELLO option '{option}'"));
                }
            }
        }
        if let Some((user, password)) = credentials
            && let Err(e) = self.authenticate(Some(user), password)
        {
            return Action::Reply(e);
        }
        if self.permission.is_none() {
            return err("NOAUTH HELLO must be called with the client already authenticated, \
                        otherwise the HELLO <proto> AUTH <user> <pass> option can be used to \
                        authenticate the client and select the RESP protocol version at the \
                        same time"
                .into());
        }
        let text = |s: &str| resp::Value::bulk(Bytes::copy_from_slice(s.as_bytes()));
        Action::Reply(resp::Value::Array(Some(vec![
            text("server"),
            text("raftkv"),
            text("version"),
            text(env!("CARGO_PKG_VERSION")),
            text("proto"),
            resp::Value::Integer(2),
            text("id"),
            resp::Value::Integer(i64::try_from(self.id).unwrap_or(i64::MAX)),
            text("mode"),
            text("standalone"),
            text("role"),
            text("master"),
            text("modules"),
            resp::Value::Array(Some(Vec::new())),
        ])))
    }

    fn scan_action(&self, rest: &[Bytes]) -> Action {
        let err = |msg: &str| Action::Reply(resp::Value::error(msg));
        let Some(cursor) = std::str::from_utf8(&rest[0]).ok().and_then(|s| s.parse::<u64>().ok())
        else {
            return err("ERR invalid cursor");
        };
        let start = if cursor == 0 {
            Bytes::new()
        } else {
            match self.shared.cursors.lock().by_id.get(&cursor) {
                Some(key) => key.clone(),
                None => return err("ERR invalid cursor (unknown here, or expired)"),
            }
        };
        let (mut count, mut pattern) = (10u32, None);
        let mut opts = rest[1..].chunks(2);
        for opt in opts.by_ref() {
            let [name, value] = opt else { return err("ERR syntax error") };
            match name.to_ascii_lowercase().as_slice() {
                b"count" => match std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()) {
                    Some(n) if n >= 1 => count = n,
                    _ => return err("ERR value is not an integer or out of range"),
                },
                b"match" => pattern = Some(value.clone()),
                _ => return err("ERR syntax error"),
            }
        }
        Action::Scan { start, count: count.min(MAX_SCAN_COUNT), pattern }
    }

    /// Runs `actions` (reads, scans, our clerk's requests) in order, appending their replies
    /// to `out`.
    fn execute(&mut self, actions: Vec<Action>, out: &mut BytesMut) {
        let mut actions = actions.into_iter().peekable();
        while let Some(action) = actions.next() {
            self.make_reply_room(out);
            match action {
                Action::Reply(v) => v.encode(out),
                Action::Clerk(request) => {
                    let reply = self.shared.server.handle(request);
                    let bytes = postcard::to_allocvec(&reply).expect("replies encode");
                    resp::write_bulk(out, &bytes);
                }
                Action::Scan { start, count, pattern } => self.scan(start, count, pattern, out),
                Action::Keys(pattern) => self.keys(&pattern, out),
                Action::Op(op, shape) => {
                    // The run of consecutive reads: one submission.
                    let run = take_run((op, shape), &mut actions, MAX_READS_PER_BATCH);
                    let (ops, shapes): (Vec<Op>, Vec<Shape>) = run.into_iter().unzip();
                    for (outcome, shape) in self.run_reads(ops).into_iter().zip(shapes) {
                        encode_outcome(outcome, shape, out);
                    }
                }
                Action::Quit => unreachable!("QUIT is dispatched, not executed"),
            }
        }
    }

    /// Runs `ops` (all reads) as one batch, resubmitting those not yet answered until
    /// `retry_for` has passed.
    fn run_reads(&mut self, ops: Vec<Op>) -> Vec<Result<Outcome, String>> {
        let requests: Vec<Request> = ops
            .into_iter()
            .map(|op| {
                self.read_seq += 1;
                Request { client_id: self.read_client_id, seq: self.read_seq, op, ordered: false }
            })
            .collect();
        let deadline = Instant::now() + self.shared.config.retry_for;
        let pending = self.shared.server.submit(requests.clone());
        run_to_the_end(self.shared, &requests, pending, deadline, None)
    }

    fn scan(&mut self, start: Bytes, count: u32, pattern: Option<Bytes>, out: &mut BytesMut) {
        let op = Op::Scan { start, end: None, limit: count };
        match self.run_reads(vec![op]).pop().expect("one answer") {
            Ok(Outcome::Page { pairs, next }) => {
                let cursor = match next {
                    Some(key) => self.shared.cursors.lock().issue(key),
                    None => 0,
                };
                let keys: Vec<resp::Value> = pairs
                    .into_iter()
                    .filter(|(k, _)| pattern.as_ref().is_none_or(|p| glob_match(p, k)))
                    .map(|(k, _)| resp::Value::bulk(k))
                    .collect();
                resp::write_array_len(out, 2);
                resp::write_bulk(out, cursor.to_string().as_bytes());
                resp::Value::Array(Some(keys)).encode(out);
            }
            Ok(other) => resp::write_error(out, &format!("ERR unexpected answer {other:?}")),
            Err(e) => resp::write_error(out, &e),
        }
    }

    fn keys(&mut self, pattern: &Bytes, out: &mut BytesMut) {
        let mut keys = Vec::new();
        let mut start = Bytes::new();
        loop {
            let op = Op::Scan { start, end: None, limit: MAX_SCAN_COUNT };
            match self.run_reads(vec![op]).pop().expect("one answer") {
                Ok(Outcome::Page { pairs, next }) => {
                    keys.extend(
                        pairs
                            .into_iter()
                            .filter(|(k, _)| glob_match(pattern, k))
                            .map(|(k, _)| resp::Value::bulk(k)),
                    );
                    match next {
                        Some(key) => start = key,
                        None => break,
                    }
                }
                Ok(other) => {
                    return resp::write_error(out, &format!("ERR unexpected answer {other:?}"));
                }
                Err(e) => return resp::write_error(out, &e),
            }
        }
        resp::Value::Array(Some(keys)).encode(out);
    }

    fn info(&self) -> String {
        let node = self.shared.server.node();
        let status = node.status();
        let role = match status.role {
            raft::Role::Leader => "leader",
            raft::Role::Follower => "follower",
            raft::Role::Candidate | raft::Role::PreCandidate => "candidate",
        };
        let leader = status.leader_id.map_or("none".to_string(), |l| l.to_string());
        let (sessions, clock) = self.shared.server.session_stats();
        let mut text = format!(
            "# Server\r\nraftkv_version:{}\r\ntcp_port:{}\r\n\r\n\
             # Clients\r\nconnected_clients:{}\r\npaused_clients:{}\r\nqueued_reply_bytes:{}\r\n\
             total_commands_processed:{}\r\n\r\n\
             # Security\r\nauth_required:{}\r\nauth_failures:{}\r\n\r\n\
             # Raft\r\nnode_id:{}\r\nrole:{role}\r\nterm:{}\r\nleader_id:{leader}\r\n\
             commit_index:{}\r\napplied_index:{}\r\nlast_log_index:{}\r\nsnapshot_index:{}\r\n\
             raft_log_bytes:{}\r\nrejected_peer_messages:{}\r\n\
             client_sessions:{sessions}\r\nlog_clock_ms:{clock}\r\n",
            env!("CARGO_PKG_VERSION"),
            self.shared.addr.port(),
            self.shared.clients.load(Ordering::Acquire),
            self.shared.paused.load(Ordering::Acquire),
            self.shared.reply_bytes.load(Ordering::Acquire),
            self.shared.commands.load(Ordering::Relaxed),
            u8::from(self.shared.config.access.is_some()),
            self.shared.auth_failures.load(Ordering::Relaxed),
            status.id,
            status.current_term,
            status.commit_index,
            self.shared.server.applied_index(),
            status.last_index,
            status.snapshot_index,
            node.raft_state_size(),
            status.rejected_messages,
        );
        if let Some(extra) = &self.shared.config.info {
            text.push_str("\r\n");
            text.push_str(&extra());
        }
        text
    }
}

/// `first` and the store operations right after it of the same kind (all writes or all
/// reads), at most `max` in all, taken from `actions`: they go to the server as one
/// submission.
fn take_run(
    first: (Op, Shape),
    actions: &mut std::iter::Peekable<std::vec::IntoIter<Action>>,
    max: usize,
) -> Vec<(Op, Shape)> {
    let write = first.0.is_write();
    let mut run = vec![first];
    while let Some(Action::Op(next, _)) = actions.peek() {
        if next.is_write() != write || run.len() >= max {
            break;
        }
        let Some(Action::Op(next, shape)) = actions.next() else { unreachable!("peeked") };
        run.push((next, shape));
    }
    run
}

/// Writes a connection's replies in command order, waiting for the outcomes of its writes.
struct ReplyWriter {
    shared: Arc<Shared>,
    stream: Arc<ClientStream>,
    outstanding: Arc<Outstanding>,
}

/// The reply writer sends what it has encoded once it holds this much, even while more jobs
/// are ready.
const SEND_AT: usize = 256 << 10;

impl ReplyWriter {
    fn run(mut self, jobs: &crossbeam_channel::Receiver<Job>) {
        let mut out = BytesMut::with_capacity(16 << 10);
        // After a failed write to the client, outcomes are still awaited (the reader may be
        // waiting on them) but nothing more is sent.
        let mut broken = false;
        loop {
            let job = match jobs.try_recv() {
                Ok(job) => job,
                Err(_) => {
                    // Nothing more is ready: send what is encoded, in one system call.
                    self.send(&mut out, &mut broken);
                    match jobs.recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    }
                }
            };
            match job {
                Job::Bytes(bytes) => {
                    out.extend_from_slice(&bytes);
                    self.outstanding.done(0);
                }
                Job::Writes(w) => {
                    let n = w.requests.len();
                    let outcomes = run_to_the_end(
                        &self.shared,
                        &w.requests,
                        w.pending,
                        w.deadline,
                        Some(&w.session),
                    );
                    let before = out.len();
                    for (outcome, shape) in outcomes.into_iter().zip(w.shapes) {
                        encode_outcome(outcome, shape, &mut out);
                    }
                    self.outstanding.encoded(out.len() - before);
                    self.outstanding.done(n);
                }
                Job::Close => {
                    self.send(&mut out, &mut broken);
                    let _ = self.stream.shutdown(Shutdown::Both);
                    self.outstanding.done(0);
                    return;
                }
            }
            if out.len() >= SEND_AT {
                self.send(&mut out, &mut broken);
            }
        }
    }

    /// Writes `out` to the client (unless `broken`: the client cannot be written to, which a
    /// failed write sets) and clears it.
    fn send(&mut self, out: &mut BytesMut, broken: &mut bool) {
        if out.is_empty() {
            return;
        }
        if !*broken {
            *broken = self.stream.write_all(out).is_err();
        }
        self.outstanding.sent(out.len());
        out.clear();
    }
}

/// Starts a client session through the log, ending `retire` in the same entry; returns its id.
///
/// # Errors
/// A reason, if no leader registered it within `retry_for`.
fn register(shared: &Shared, retire: Option<u64>) -> Result<u64, String> {
    let deadline = Instant::now() + shared.config.retry_for;
    let request = Request {
        client_id: rand::random(),
        seq: 0,
        op: Op::Register { id: 0, ttl_ms: 0, retire },
        ordered: false,
    };
    loop {
        let pending = shared.server.submit(vec![request.clone()]);
        let answer =
            run_to_the_end(shared, std::slice::from_ref(&request), pending, deadline, None);
        match answer.into_iter().next().expect("one answer") {
            Ok(Outcome::Registered { id }) => return Ok(id),
            // The leader drew an id already taken (odds 2^-64): draw again.
            Ok(Outcome::NoSession) if Instant::now() < deadline => {}
            Ok(other) => return Err(format!("unexpected answer {other:?}")),
            Err(e) if e.starts_with("TRYAGAIN") => {
                return Err(format!("no leader answered within {:?}", shared.config.retry_for));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Waits for `pending` (the submission of `requests`), resubmitting, with their original
/// numbers and in order, those not answered (no leader, a leader change, or an ordered write
/// whose predecessor had not applied yet) until `deadline`; then answers `-TRYAGAIN`.
///
/// A write whose session is gone ([`Outcome::NoSession`]) is answered with an error, and so
/// is one still unanswered at the deadline; either way its session (`session`, the
/// connection's) is marked broken, so that the connection's next write starts a new one
/// rather than wait forever behind a number that may never apply.
fn run_to_the_end(
    shared: &Shared,
    requests: &[Request],
    mut pending: Vec<Pending>,
    deadline: Instant,
    session: Option<&Mutex<ConnSession>>,
) -> Vec<Result<Outcome, String>> {
    let mut answers: Vec<Option<Result<Outcome, String>>> = vec![None; requests.len()];
    let mut open: Vec<usize> = (0..requests.len()).collect();
    let mut pause = Duration::from_millis(5);
    let mut first_attempt = true;
    let broke = |i: usize| {
        if let Some(session) = session {
            session.lock().broke(requests[i].client_id);
        }
    };
    loop {
        for (&i, p) in open.iter().zip(pending) {
            match p.wait() {
                Reply::Done(Outcome::OutOfOrder) => {}
                Reply::Done(Outcome::NoSession) if requests[i].op.needs_session() => {
                    broke(i);
                    answers[i] = Some(Err(if first_attempt {
                        "ERR the connection's client session expired or was replaced; the \
                         write was not applied"
                            .to_string()
                    } else {
                        "TRYAGAIN the connection's client session ended while the write was \
                         retried; it may or may not have taken effect"
                            .to_string()
                    }));
                }
                Reply::Done(outcome) => answers[i] = Some(Ok(outcome)),
                Reply::WrongLeader { .. } | Reply::Timeout => {}
                // A disk alarm refuses a resubmitted write, but the first submission may still
                // take effect: its outcome is unknown, not "refused".
                Reply::Refused(reason)
                    if !first_attempt && reason.starts_with(crate::disk::NOSPACE) =>
                {
                    broke(i);
                    answers[i] = Some(Err(format!(
                        "TRYAGAIN a write may or may not have taken effect: {reason}"
                    )));
                }
                // Refused, so never applied: its number would be a gap that holds up the
                // session's later ordered writes, so the connection starts a new session.
                Reply::Refused(reason) => {
                    broke(i);
                    answers[i] = Some(Err(error_line(&reason)));
                }
            }
        }
        open.retain(|&i| answers[i].is_none());
        if open.is_empty() {
            break;
        }
        if Instant::now() >= deadline || shared.stopped.load(Ordering::Acquire) {
            for &i in &open {
                broke(i);
                answers[i] = Some(Err(format!(
                    "TRYAGAIN no leader answered within {:?}; a write may or may not have \
                     taken effect",
                    shared.config.retry_for
                )));
            }
            break;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
        first_attempt = false;
        pending = shared.server.submit(open.iter().map(|&i| requests[i].clone()).collect());
    }
    answers.into_iter().map(|a| a.expect("every request answered")).collect()
}

/// Appends the reply for one store operation.
/// The RESP error line for a refused request: a disk alarm's refusal carries its own code
/// ([`NOSPACE`](crate::disk::NOSPACE)), anything else is `ERR`.
fn error_line(reason: &str) -> String {
    if reason.starts_with(crate::disk::NOSPACE) {
        reason.to_string()
    } else {
        format!("ERR {reason}")
    }
}

fn encode_outcome(outcome: Result<Outcome, String>, shape: Shape, out: &mut BytesMut) {
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return resp::write_error(out, &e),
    };
    match (shape, outcome) {
        (Shape::Ok, Outcome::Written) => resp::write_simple(out, "OK"),
        (Shape::Value, Outcome::Value(Some(v))) => resp::write_bulk(out, &v),
        (Shape::Value, Outcome::Value(None)) => resp::write_null_bulk(out),
        (Shape::Strlen, Outcome::Value(v)) => {
            resp::write_integer(out, v.map_or(0, |v| v.len() as i64));
        }
        (Shape::Integer, Outcome::Count(n) | Outcome::Length(n)) => {
            resp::write_integer(out, i64::try_from(n).unwrap_or(i64::MAX));
        }
        (Shape::Exists, Outcome::Values(values)) => {
            resp::write_integer(out, values.iter().filter(|v| v.is_some()).count() as i64);
        }
        (Shape::Values, Outcome::Values(values)) => {
            resp::write_array_len(out, values.len());
            for v in values {
                match v {
                    Some(v) => resp::write_bulk(out, &v),
                    None => resp::write_null_bulk(out),
                }
            }
        }
        // A retried write whose first reply was lost is answered from the dedup table, which
        // keeps only the client's latest outcome: for an older one, only that it took effect.
        (Shape::Integer, Outcome::Written) => resp::write_error(
            out,
            "ERR the command took effect, but its result was lost in a retry",
        ),
        (_, Outcome::Forgotten) => resp::write_error(
            out,
            "ERR the command took effect, but its result was lost in a retry",
        ),
        (_, other) => resp::write_error(out, &format!("ERR unexpected answer {other:?}")),
    }
}

/// Redis's glob-style pattern matching: `*`, `?`, `[abc]`, `[^a-z]` and `\x` escapes.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index it matched to).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => class_match(pattern, p, text[t]),
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == text[t]).then_some(p + 2),
            Some(&c) => (c == text[t]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((after, matched))) => {
                p = after;
                t = matched + 1;
                star = Some((after, matched + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[open] == '['`; the index after the class
/// if it matches.
fn class_match(pattern: &[u8], open: usize, c: u8) -> Option<usize> {
    let mut i = open + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (lo, hi) = (pattern[i].min(pattern[i + 2]), pattern[i].max(pattern[i + 2]));
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= pattern[i] == c;
            i += 1;
        }
    }
    // An unclosed class matches as far as it goes, as in Redis.
    (matched != negate).then_some(i + usize::from(i < pattern.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_redis_does() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything", true),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h*llo", "hellx", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[a-b]llo", "hcllo", false),
            ("key\\*", "key*", true),
            ("key\\*", "keyx", false),
            ("user:*:name", "user:42:name", true),
            ("user:*:name", "user:42:age", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("*.txt", "notes.txt", true),
            ("abc", "abcd", false),
            ("abcd", "abc", false),
        ];
        for &(pattern, text, want) in cases {
            assert_eq!(glob_match(pattern.as_bytes(), text.as_bytes()), want, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn old_cursors_are_forgotten() {
        let mut cursors = Cursors::default();
        let first = cursors.issue(Bytes::from_static(b"a"));
        for _ in 0..MAX_CURSORS {
            cursors.issue(Bytes::from_static(b"b"));
        }
        assert!(!cursors.by_id.contains_key(&first));
        assert_eq!(cursors.by_id.len(), MAX_CURSORS);
    }
}
