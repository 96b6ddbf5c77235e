//! [`RespServers`]: the servers of a real cluster, reached over TCP in the Redis protocol.
//!
//! A request travels as one Redis command, `RAFTKV.REQUEST <request>`, whose argument is the
//! [`Request`] encoded with postcard; the server answers with a bulk string holding the
//! [`Reply`], encoded the same way. The request keeps the clerk's own client id and sequence
//! number, so a retry, through another server or another connection, still takes effect once.
//!
//! **Connections.** Each server has at most one open connection, kept between calls and used
//! for one request at a time. A call connects if there is none (within
//! [`RespConfig::connect_timeout`]), writes the command, and reads until one whole reply has
//! arrived (within [`RespConfig::reply_timeout`], or by the caller's deadline if that is
//! sooner). Any failure closes the connection, and the next call to that server connects
//! afresh: a timeout (the late reply would otherwise be taken for the answer to the next
//! request), a malformed or unexpected reply, bytes after the reply, an `-ERR` reply.
//!
//! A kept connection that the server closed meanwhile (it restarted, or stopped serving)
//! fails as soon as it is used, before any byte of a reply arrives. Then the call connects
//! again and sends the request once more, which is safe because the service deduplicates it.
//!
//! **Failures** make [`call`](Servers::call) return `None`, and the clerk tries another
//! server. [`RespServers::last_error`] says what went wrong with each server, and each failure
//! is logged at debug level.
//!
//! **Access control.** For servers that require clients to authenticate (`kvserver
//! --requirepass` or `--users-file`), [`RespServers::with_credentials`] sets what every new
//! connection sends first: `AUTH [user] password`. A server's refusal (`-WRONGPASS` for the
//! `AUTH`, `-NOAUTH` without credentials, `-NOPERM` for a read-only user's write) is not a
//! failure to try elsewhere but the answer [`Reply::Refused`], carrying the server's message:
//! every node of a cluster is expected to have the same users, so another node would refuse
//! too, and the clerk gives up at once ([`Error::Refused`](crate::Error::Refused)) rather than
//! retry until its deadline. The refused command did not run.
//!
//! ```no_run
//! use kvclient::{Clerk, RespServers};
//!
//! // Node ids and client (Redis protocol) addresses, as in the servers' configuration.
//! let servers = RespServers::new([
//!     (1, "127.0.0.1:6381".parse().unwrap()),
//!     (2, "127.0.0.1:6382".parse().unwrap()),
//!     (3, "127.0.0.1:6383".parse().unwrap()),
//! ]);
//! let mut clerk = Clerk::new(servers);
//! clerk.put("greeting", "hello");
//! assert_eq!(clerk.get("greeting").as_deref(), Some(&b"hello"[..]));
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::Servers;
use crate::proto::{Reply, Request};
use crate::resp::{self, Decoder, Limits, ProtocolError, Value};
use crate::tls::{Stream, TlsConfig};

/// The Redis command that carries a clerk's request.
pub const COMMAND: &str = "RAFTKV.REQUEST";

/// The size of the buffer each connection reads into.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// Who a connection authenticates as, with `AUTH`, for servers that require it (see the
/// [module docs](self), "Access control").
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user; `None` for `default`, whose password `AUTH <password>` gives (the user of
    /// `kvserver --requirepass`).
    pub user: Option<String>,
    /// The user's password.
    pub password: String,
}

impl Credentials {
    /// The password of the user `default` (`kvserver --requirepass`): sent as
    /// `AUTH <password>`.
    pub fn password(password: impl Into<String>) -> Credentials {
        Credentials { user: None, password: password.into() }
    }

    /// A named user (one of `kvserver --users-file`) and its password: sent as
    /// `AUTH <user> <password>`.
    pub fn user(user: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials { user: Some(user.into()), password: password.into() }
    }

    /// The `AUTH` command, encoded.
    fn command(&self) -> BytesMut {
        let mut command = BytesMut::new();
        match &self.user {
            Some(user) => resp::write_command(&mut command, &["AUTH", user, &self.password]),
            None => resp::write_command(&mut command, &["AUTH", &self.password]),
        }
        command
    }
}

/// The user, not the password.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user.as_deref().unwrap_or("default"))
            .finish_non_exhaustive()
    }
}

/// Whether a server's error reply refuses this client, not the request: Redis's access
/// control errors.
pub fn is_denial(message: &str) -> bool {
    ["NOAUTH ", "WRONGPASS ", "NOPERM "].iter().any(|code| message.starts_with(code))
}

/// How [`RespServers`] connects and how long it waits. Start from [`RespConfig::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespConfig {
    /// How long establishing a connection may take. Default 1 s: a refused connection fails
    /// at once; this bounds the wait for a host that does not answer at all.
    pub connect_timeout: Duration,
    /// How long a call waits for its reply, from sending the request. Default 5 s. Keep it
    /// above the servers' request timeout (2 s in `kvserver`), so that a slow server answers
    /// "timeout" (and keeps the connection) rather than being cut off.
    pub reply_timeout: Duration,
    /// The largest reply accepted, in bytes; a larger one closes the connection. Default
    /// 512 MiB (Redis's default largest bulk string). A reply is at most one page of a scan.
    pub max_reply_bytes: usize,
}

impl Default for RespConfig {
    fn default() -> RespConfig {
        RespConfig {
            connect_timeout: Duration::from_secs(1),
            reply_timeout: Duration::from_secs(5),
            max_reply_bytes: 512 << 20,
        }
    }
}

/// The servers of a cluster, reached over TCP with `RAFTKV.REQUEST` (see the
/// [module docs](self)). Server `i` is the `i`-th node given to [`new`](Self::new).
///
/// Safe to share between threads: calls to different servers run in parallel, calls to the
/// same server take turns on its connection.
pub struct RespServers {
    nodes: Vec<Node>,
    config: RespConfig,
    /// What every new connection authenticates with, if anything.
    credentials: Option<Credentials>,
    /// TLS for every connection, if the servers serve clients over TLS.
    tls: Option<TlsConfig>,
}

/// One server: its Raft node id, its client address, and its connection.
struct Node {
    id: u64,
    addr: SocketAddr,
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    conn: Option<Connection>,
    last_error: Option<String>,
}

impl std::fmt::Debug for RespServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<(u64, SocketAddr)> = self.nodes.iter().map(|n| (n.id, n.addr)).collect();
        f.debug_struct("RespServers")
            .field("nodes", &nodes)
            .field("config", &self.config)
            .field("credentials", &self.credentials)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl RespServers {
    /// The servers of a cluster, as (Raft node id, client address) pairs, with the default
    /// [`RespConfig`]. Nothing connects until the first call.
    ///
    /// # Panics
    /// If there are no nodes, or two share an id.
    pub fn new(nodes: impl IntoIterator<Item = (u64, SocketAddr)>) -> RespServers {
        RespServers::with_config(nodes, RespConfig::default())
    }

    /// As [`new`](Self::new), with `config`.
    ///
    /// # Panics
    /// If there are no nodes, or two share an id.
    pub fn with_config(
        nodes: impl IntoIterator<Item = (u64, SocketAddr)>,
        config: RespConfig,
    ) -> RespServers {
        let nodes: Vec<Node> =
            nodes.into_iter().map(|(id, addr)| Node { id, addr, slot: Mutex::default() }).collect();
        assert!(!nodes.is_empty(), "a cluster has at least one node");
        for (i, node) in nodes.iter().enumerate() {
            assert!(
                nodes[..i].iter().all(|other| other.id != node.id),
                "node id {} is given twice",
                node.id
            );
        }
        RespServers { nodes, config, credentials: None, tls: None }
    }

    /// These servers, with every new connection authenticating with `credentials` (`AUTH`)
    /// before its first request; see the [module docs](self), "Access control".
    pub fn with_credentials(mut self, credentials: Credentials) -> RespServers {
        self.credentials = Some(credentials);
        self
    }

    /// These servers, reached over TLS (kvserver's `--tls-cert-file`) as `tls` says.
    pub fn with_tls(mut self, tls: TlsConfig) -> RespServers {
        self.tls = Some(tls);
        self
    }

    /// The Raft node id of server `server`.
    ///
    /// # Panics
    /// If there is no such server.
    pub fn node_id(&self, server: usize) -> u64 {
        self.nodes[server].id
    }

    /// The address of server `server`.
    ///
    /// # Panics
    /// If there is no such server.
    pub fn addr(&self, server: usize) -> SocketAddr {
        self.nodes[server].addr
    }

    /// Why the last failed call to server `server` failed, if one has (a later success does
    /// not clear it).
    ///
    /// # Panics
    /// If there is no such server.
    pub fn last_error(&self, server: usize) -> Option<String> {
        self.nodes[server].slot.lock().unwrap_or_else(PoisonError::into_inner).last_error.clone()
    }

    /// Sends `request` to server `server` and reads its reply, giving up by `deadline` (if
    /// given) or the configured timeouts, whichever comes first.
    fn try_call(
        &self,
        server: usize,
        request: &Request,
        deadline: Option<Instant>,
    ) -> Result<Reply, CallError> {
        let node = &self.nodes[server];
        let encoded = postcard::to_allocvec(request).expect("a request always encodes");
        let mut command = BytesMut::with_capacity(encoded.len() + 40);
        resp::write_command(&mut command, &[COMMAND.as_bytes(), &encoded]);
        let mut slot = node.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let result =
            self.round_trip(&mut slot.conn, node.addr, &command, deadline).and_then(|value| {
                match value {
                    Value::Bulk(Some(data)) => {
                        postcard::from_bytes::<Reply>(&data).map_err(CallError::Undecodable)
                    }
                    Value::Error(message) if is_denial(&message) => Err(CallError::Denied(message)),
                    Value::Error(message) => Err(CallError::Server(message)),
                    other => Err(CallError::Unexpected(kind(&other))),
                }
            });
        if let Err(e) = &result {
            slot.conn = None;
            log::debug!("server {server} (node {} at {}): {e}", node.id, node.addr);
            slot.last_error = Some(e.to_string());
        }
        match result {
            // Another server would refuse too: the answer, not a failure to try elsewhere.
            Err(CallError::Denied(message)) => Ok(Reply::Refused(message)),
            other => other,
        }
    }

    /// A new connection to `addr`, authenticated if there are credentials.
    fn connect(
        &self,
        addr: SocketAddr,
        deadline: Option<Instant>,
    ) -> Result<Connection, CallError> {
        let mut c = Connection::open(addr, &self.config, deadline, self.tls.as_ref())?;
        if let Some(credentials) = &self.credentials {
            c.authenticate(credentials, earliest(deadline, self.config.reply_timeout))?;
        }
        Ok(c)
    }

    /// Sends `command` on the kept connection `conn` (or a new one) and reads one reply.
    /// Keeps the connection if the exchange succeeded; the caller drops it if it does not
    /// like the reply.
    fn round_trip(
        &self,
        conn: &mut Option<Connection>,
        addr: SocketAddr,
        command: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Value, CallError> {
        let reused = conn.is_some();
        let mut c = match conn.take() {
            Some(c) => c,
            None => self.connect(addr, deadline)?,
        };
        let reply_deadline = earliest(deadline, self.config.reply_timeout);
        let value = match c.round_trip(command, reply_deadline) {
            Ok(value) => value,
            Err(e) if reused && c.went_stale(&e) => {
                log::debug!("{addr}: the kept connection was closed ({e}); reconnecting");
                c = self.connect(addr, deadline)?;
                c.round_trip(command, earliest(deadline, self.config.reply_timeout))?
            }
            Err(e) => return Err(e),
        };
        *conn = Some(c);
        Ok(value)
    }
}

impl Servers for RespServers {
    fn count(&self) -> usize {
        self.nodes.len()
    }

    fn call(&self, server: usize, request: &Request) -> Option<Reply> {
        self.try_call(server, request, None).ok()
    }

    fn call_until(&self, server: usize, request: &Request, deadline: Instant) -> Option<Reply> {
        self.try_call(server, request, Some(deadline)).ok()
    }

    fn server_for_node(&self, node_id: u64) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == node_id)
    }
}

/// Sends one command to `addr` on a new connection (authenticated with `credentials`, if
/// given) and returns its reply, by `deadline` and within `config`'s timeouts. An `-ERR` reply
/// is returned as a [`Value::Error`].
pub fn command_once<A: AsRef<[u8]>>(
    addr: SocketAddr,
    args: &[A],
    config: &RespConfig,
    credentials: Option<&Credentials>,
    tls: Option<&TlsConfig>,
    deadline: Instant,
) -> Result<Value, CallError> {
    let mut command = BytesMut::new();
    resp::write_command(&mut command, args);
    let mut conn = Connection::open(addr, config, Some(deadline), tls)?;
    if let Some(credentials) = credentials {
        conn.authenticate(credentials, earliest(Some(deadline), config.reply_timeout))?;
    }
    conn.round_trip(&command, earliest(Some(deadline), config.reply_timeout))
}

/// Why a call to a server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The connection could not be established (refused, unreachable, timed out).
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    /// The TLS handshake failed (a certificate not trusted, a server not speaking TLS).
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    /// Reading or writing failed.
    #[error("connection failed: {0}")]
    Io(io::Error),
    /// No whole reply arrived in time.
    #[error("no reply in time")]
    Timeout,
    /// The server closed the connection before a whole reply arrived.
    #[error("the server closed the connection")]
    Closed,
    /// The reply is not valid RESP.
    #[error("malformed reply: {0}")]
    Protocol(ProtocolError),
    /// The reply grew past [`RespConfig::max_reply_bytes`].
    #[error("the reply is larger than {0} bytes")]
    TooLarge(usize),
    /// More bytes came after the reply, which nothing asked for.
    #[error("{0} unexpected bytes after the reply")]
    TrailingBytes(usize),
    /// The server answered with an error (`-ERR ...`).
    #[error("the server answered with an error: {0}")]
    Server(String),
    /// The server refused this client: a wrong password (`-WRONGPASS`), none given
    /// (`-NOAUTH`), or a user without the permission (`-NOPERM`).
    #[error("access denied: {0}")]
    Denied(String),
    /// `AUTH` was answered with something other than `+OK` or an error.
    #[error("AUTH was answered with {0}, not +OK")]
    AuthAnswer(&'static str),
    /// The server answered with a value of the wrong type.
    #[error("the server answered with {0}, not a bulk string")]
    Unexpected(&'static str),
    /// The bulk string is not an encoded reply.
    #[error("the reply does not decode: {0}")]
    Undecodable(postcard::Error),
}

/// A value's type, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Simple(_) => "a simple string",
        Value::Error(_) => "an error",
        Value::Integer(_) => "an integer",
        Value::Bulk(Some(_)) => "a bulk string",
        Value::Bulk(None) => "a null",
        Value::Array(_) => "an array",
    }
}

/// The sooner of `deadline` and `timeout` from now.
fn earliest(deadline: Option<Instant>, timeout: Duration) -> Instant {
    let by_timeout = Instant::now() + timeout;
    deadline.map_or(by_timeout, |d| d.min(by_timeout))
}

/// The time left until `deadline`; a [`CallError::Timeout`] if there is none.
fn remaining(deadline: Instant) -> Result<Duration, CallError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
        .ok_or(CallError::Timeout)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// One connection to a server, used for one request at a time.
struct Connection {
    stream: Stream,
    decoder: Decoder,
    /// The bytes of the reply received so far.
    input: BytesMut,
    chunk: Box<[u8]>,
    max_reply_bytes: usize,
}

impl Connection {
    /// Connects to `addr` within the connect timeout (and by `deadline`, if given).
    fn open(
        addr: SocketAddr,
        config: &RespConfig,
        deadline: Option<Instant>,
        tls: Option<&TlsConfig>,
    ) -> Result<Connection, CallError> {
        let connect_by = earliest(deadline, config.connect_timeout);
        let timeout = remaining(connect_by)?;
        let sock = TcpStream::connect_timeout(&addr, timeout).map_err(CallError::Connect)?;
        // Requests are small and each waits for its reply: send them at once.
        sock.set_nodelay(true).map_err(CallError::Connect)?;
        let stream = match tls {
            None => Stream::Plain(sock),
            Some(tls) => {
                let timeout = Some(remaining(connect_by)?);
                sock.set_read_timeout(timeout).map_err(CallError::Connect)?;
                sock.set_write_timeout(timeout).map_err(CallError::Connect)?;
                tls.connect(sock, addr).map_err(|e| match e {
                    e if is_timeout(&e) => CallError::Timeout,
                    e => CallError::Tls(e),
                })?
            }
        };
        let limits = Limits { max_bulk_bytes: config.max_reply_bytes, ..Limits::default() };
        Ok(Connection {
            stream,
            decoder: Decoder::new(limits),
            input: BytesMut::new(),
            chunk: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
            max_reply_bytes: config.max_reply_bytes,
        })
    }

    /// Sends `AUTH` with `credentials` and checks that it is answered `+OK`, by `deadline`.
    fn authenticate(
        &mut self,
        credentials: &Credentials,
        deadline: Instant,
    ) -> Result<(), CallError> {
        match self.round_trip(&credentials.command(), deadline)? {
            Value::Simple(ok) if ok == "OK" => Ok(()),
            Value::Error(message) => Err(CallError::Denied(message)),
            other => Err(CallError::AuthAnswer(kind(&other))),
        }
    }

    /// Writes `command` and reads one whole reply, by `deadline`. After an error the
    /// connection is out of step with the server and must be dropped.
    fn round_trip(&mut self, command: &[u8], deadline: Instant) -> Result<Value, CallError> {
        self.input.clear();
        let sock = self.stream.socket();
        sock.set_write_timeout(Some(remaining(deadline)?)).map_err(CallError::Io)?;
        self.stream.write_all(command).and_then(|()| self.stream.flush()).map_err(|e| match e {
            e if is_timeout(&e) => CallError::Timeout,
            e => CallError::Io(e),
        })?;
        loop {
            if let Some((value, used)) =
                self.decoder.decode(&self.input).map_err(CallError::Protocol)?
            {
                if used != self.input.len() {
                    return Err(CallError::TrailingBytes(self.input.len() - used));
                }
                self.input.clear();
                return Ok(value);
            }
            let sock = self.stream.socket();
            sock.set_read_timeout(Some(remaining(deadline)?)).map_err(CallError::Io)?;
            match self.stream.read(&mut self.chunk) {
                Ok(0) => return Err(CallError::Closed),
                Ok(n) => {
                    self.input.extend_from_slice(&self.chunk[..n]);
                    if self.input.len() > self.max_reply_bytes {
                        return Err(CallError::TooLarge(self.max_reply_bytes));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(CallError::Timeout),
                Err(e) => return Err(CallError::Io(e)),
            }
        }
    }

    /// Whether `error`, from [`round_trip`](Self::round_trip), says the server had closed
    /// this connection before the request was sent: it failed as a closed connection does,
    /// before any byte of a reply arrived.
    fn went_stale(&self, error: &CallError) -> bool {
        let closed = match error {
            CallError::Closed => true,
            CallError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ),
            _ => false,
        };
        closed && self.input.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::thread;

    use bytes::Bytes;

    use super::*;
    use crate::Clerk;
    use crate::proto::{Op, Outcome};
    use crate::resp::CommandDecoder;

    /// What the fake server does with the next request it receives (on any connection).
    enum Step {
        /// Answers with this reply.
        Answer(Reply),
        /// Answers with this reply, then closes the connection.
        AnswerAndClose(Reply),
        /// Writes these bytes, whatever they are.
        Raw(Vec<u8>),
        /// Closes the connection without answering.
        Close,
        /// Waits this long, then answers (if the client is still there).
        Late(Duration, Reply),
        /// Never answers; the connection stays open until the client closes it.
        Silent,
    }

    /// A scripted server on 127.0.0.1: a thread per connection reads `RAFTKV.REQUEST`
    /// commands and carries out the script's steps in order; with the script done, it closes
    /// connections.
    struct Fake {
        addr: SocketAddr,
        state: Arc<FakeState>,
    }

    #[derive(Default)]
    struct FakeState {
        script: Mutex<VecDeque<Step>>,
        requests: Mutex<Vec<Request>>,
        connections: AtomicUsize,
        stopped: AtomicBool,
        /// If set, a connection must first send `AUTH` with these arguments; requests before
        /// are answered `-NOAUTH`, other `AUTH`s `-WRONGPASS`.
        password: Option<Vec<&'static str>>,
        /// The arguments of every `AUTH` received, in order.
        auths: Mutex<Vec<Vec<String>>>,
    }

    impl Fake {
        fn start(script: Vec<Step>) -> Fake {
            Fake::start_with(script, None)
        }

        /// A fake that requires `AUTH <password...>` on every connection.
        fn start_with(script: Vec<Step>, password: Option<Vec<&'static str>>) -> Fake {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let state = Arc::new(FakeState { password, ..FakeState::default() });
            state.script.lock().unwrap().extend(script);
            let shared = Arc::clone(&state);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stopped.load(Ordering::Acquire) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    shared.connections.fetch_add(1, Ordering::AcqRel);
                    let conn_state = Arc::clone(&shared);
                    thread::spawn(move || serve(stream, &conn_state));
                }
            });
            Fake { addr, state }
        }

        fn connections(&self) -> usize {
            self.state.connections.load(Ordering::Acquire)
        }

        fn requests(&self) -> Vec<Request> {
            self.state.requests.lock().unwrap().clone()
        }

        fn auths(&self) -> Vec<Vec<String>> {
            self.state.auths.lock().unwrap().clone()
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            self.state.stopped.store(true, Ordering::Release);
            let _ = TcpStream::connect(self.addr); // Wakes the accept loop to see the flag.
        }
    }

    fn serve(mut stream: TcpStream, state: &FakeState) {
        let mut decoder = CommandDecoder::new(Limits::default());
        let mut input = BytesMut::new();
        let mut chunk = [0u8; 4096];
        let mut authenticated = state.password.is_none();
        loop {
            let (args, used) = match decoder.parse(&input) {
                Ok(Some(command)) => command,
                Ok(None) => match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        input.extend_from_slice(&chunk[..n]);
                        continue;
                    }
                },
                Err(e) => panic!("the client sent a malformed command: {e}"),
            };
            let _ = input.split_to(used);
            if args[0].eq_ignore_ascii_case(b"AUTH") {
                let given: Vec<String> =
                    args[1..].iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
                authenticated = state.password.as_ref().is_some_and(|p| *p == given);
                state.auths.lock().unwrap().push(given);
                let answer: &[u8] = if authenticated {
                    b"+OK\r\n"
                } else {
                    b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
                };
                if stream.write_all(answer).is_err() {
                    return;
                }
                continue;
            }
            if !authenticated {
                if stream.write_all(b"-NOAUTH Authentication required.\r\n").is_err() {
                    return;
                }
                continue;
            }
            assert_eq!(args.len(), 2, "RAFTKV.REQUEST and one argument");
            assert_eq!(&args[0][..], COMMAND.as_bytes());
            let request: Request = postcard::from_bytes(&args[1]).expect("a request");
            state.requests.lock().unwrap().push(request);
            let step = state.script.lock().unwrap().pop_front();
            let encode = |reply: &Reply| {
                let mut out = BytesMut::new();
                resp::write_bulk(&mut out, &postcard::to_allocvec(reply).unwrap());
                out
            };
            let written = match step {
                Some(Step::Answer(reply)) => stream.write_all(&encode(&reply)),
                Some(Step::AnswerAndClose(reply)) => {
                    let _ = stream.write_all(&encode(&reply));
                    return;
                }
                Some(Step::Raw(bytes)) => stream.write_all(&bytes),
                Some(Step::Late(delay, reply)) => {
                    thread::sleep(delay);
                    stream.write_all(&encode(&reply))
                }
                Some(Step::Silent) => Ok(()),
                Some(Step::Close) | None => return,
            };
            if written.is_err() {
                return;
            }
        }
    }

    fn request(seq: u64) -> Request {
        Request { client_id: 7, seq, op: Op::Get { key: Bytes::from_static(b"k") }, ordered: false }
    }

    fn value(v: &'static str) -> Reply {
        Reply::Done(Outcome::Value(Some(Bytes::from_static(v.as_bytes()))))
    }

    fn servers(fakes: &[&Fake], config: RespConfig) -> RespServers {
        RespServers::with_config(
            fakes.iter().enumerate().map(|(i, f)| (i as u64 + 1, f.addr)),
            config,
        )
    }

    /// An address nothing listens on.
    fn closed_port() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    #[test]
    fn a_reply_comes_back_and_the_connection_is_kept() {
        let fake = Fake::start(vec![Step::Answer(value("v")), Step::Answer(Reply::Timeout)]);
        let servers = servers(&[&fake], RespConfig::default());
        assert_eq!(servers.call(0, &request(1)), Some(value("v")));
        assert_eq!(servers.call(0, &request(2)), Some(Reply::Timeout));
        assert_eq!(fake.requests(), vec![request(1), request(2)], "sent as they were");
        assert_eq!(fake.connections(), 1, "both requests went over one connection");
        assert_eq!(servers.last_error(0), None);
    }

    #[test]
    fn an_error_reply_is_no_reply_and_its_message_is_kept() {
        let fake = Fake::start(vec![
            Step::Raw(b"-ERR malformed RAFTKV.REQUEST: bad\r\n".to_vec()),
            Step::Answer(value("v")),
        ]);
        let servers = servers(&[&fake], RespConfig::default());
        assert_eq!(servers.call(0, &request(1)), None);
        let error = servers.last_error(0).expect("an error is recorded");
        assert!(error.contains("ERR malformed RAFTKV.REQUEST: bad"), "{error}");
        assert_eq!(servers.call(0, &request(1)), Some(value("v")));
        assert_eq!(fake.connections(), 2, "the connection was dropped after the error");
    }

    #[test]
    fn garbage_is_no_reply_and_closes_the_connection() {
        let cases: [(&[u8], &str); 6] = [
            (b"!!!\r\n", "malformed reply"),
            (b"$3\r\n\xff\xff\xff\r\n", "does not decode"),
            (b":42\r\n", "an integer"),
            (b"$-1\r\n", "a null"),
            (b"$3\r\nabc\r\n$3\r\nabc\r\n", "unexpected bytes"),
            (b"$3\r\nabcd\r\n", "malformed reply"),
        ];
        for (garbage, why) in cases {
            let fake = Fake::start(vec![Step::Raw(garbage.to_vec()), Step::Answer(value("v"))]);
            let servers = servers(&[&fake], RespConfig::default());
            assert_eq!(servers.call(0, &request(1)), None, "{}", garbage.escape_ascii());
            let error = servers.last_error(0).unwrap();
            assert!(error.contains(why), "{}: {error}", garbage.escape_ascii());
            assert_eq!(servers.call(0, &request(1)), Some(value("v")));
            assert_eq!(fake.connections(), 2, "{}", garbage.escape_ascii());
        }
    }

    #[test]
    fn a_reply_larger_than_the_limit_is_refused() {
        let config = RespConfig { max_reply_bytes: 1024, ..RespConfig::default() };
        let mut huge_bulk = b"$5000\r\n".to_vec();
        huge_bulk.extend([b'x'; 5000]);
        huge_bulk.extend(b"\r\n");
        let mut long_array = b"*2000\r\n".to_vec();
        for _ in 0..2000 {
            long_array.extend(b":1\r\n");
        }
        for raw in [huge_bulk, long_array] {
            let fake = Fake::start(vec![Step::Raw(raw)]);
            let servers = servers(&[&fake], config);
            assert_eq!(servers.call(0, &request(1)), None);
            let error = servers.last_error(0).unwrap();
            assert!(error.contains("bulk length") || error.contains("larger than"), "{error}");
        }
    }

    #[test]
    fn a_connection_closed_before_the_reply_is_no_reply() {
        let fake = Fake::start(vec![Step::Close]);
        let servers = servers(&[&fake], RespConfig::default());
        assert_eq!(servers.call(0, &request(1)), None);
        assert!(servers.last_error(0).unwrap().contains("closed"));
        assert_eq!(fake.connections(), 1, "a fresh connection is not retried");
    }

    #[test]
    fn a_kept_connection_the_server_closed_is_opened_again() {
        let fake =
            Fake::start(vec![Step::AnswerAndClose(value("first")), Step::Answer(value("second"))]);
        let servers = servers(&[&fake], RespConfig::default());
        assert_eq!(servers.call(0, &request(1)), Some(value("first")));
        assert_eq!(servers.call(0, &request(2)), Some(value("second")));
        assert_eq!(fake.connections(), 2);
        // The request may have reached the closed connection too; what matters is that the
        // answer is the second step's, for the second request.
        assert_eq!(fake.requests().last(), Some(&request(2)));
        assert_eq!(servers.last_error(0), None, "reopening is not a failure");
    }

    #[test]
    fn a_late_reply_is_abandoned_with_its_connection() {
        let config = RespConfig { reply_timeout: Duration::from_millis(300), ..Default::default() };
        let fake = Fake::start(vec![
            Step::Late(Duration::from_secs(4), value("late")),
            Step::Answer(value("on time")),
        ]);
        let servers = servers(&[&fake], config);
        let started = Instant::now();
        assert_eq!(servers.call(0, &request(1)), None);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300), "gave up after {waited:?}");
        assert!(waited < Duration::from_secs(3), "gave up only after {waited:?}");
        assert_eq!(servers.last_error(0).as_deref(), Some("no reply in time"));
        // A new connection: the late reply, when it comes, is not taken for this answer.
        assert_eq!(servers.call(0, &request(2)), Some(value("on time")));
        assert_eq!(fake.connections(), 2);
    }

    #[test]
    fn a_deadline_sooner_than_the_timeouts_bounds_a_call() {
        let fake = Fake::start(vec![Step::Silent]);
        let servers = servers(&[&fake], RespConfig::default()); // 5 s to reply.
        let started = Instant::now();
        let deadline = started + Duration::from_millis(300);
        assert_eq!(servers.call_until(0, &request(1), deadline), None);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300), "gave up after {waited:?}");
        assert!(waited < Duration::from_secs(3), "gave up only after {waited:?}");
        // A deadline already past fails at once, without connecting.
        assert_eq!(servers.call_until(0, &request(2), Instant::now()), None);
        assert_eq!(fake.connections(), 1);
    }

    #[test]
    fn an_unreachable_server_is_no_reply() {
        let servers = RespServers::new([(1, closed_port())]);
        assert_eq!(servers.call(0, &request(1)), None);
        let error = servers.last_error(0).unwrap();
        assert!(error.starts_with("cannot connect"), "{error}");
    }

    #[test]
    fn node_ids_map_to_servers() {
        let addr = closed_port();
        let servers = RespServers::new([(5, addr), (9, addr), (2, addr)]);
        assert_eq!(servers.count(), 3);
        assert_eq!(servers.server_for_node(9), Some(1));
        assert_eq!(servers.server_for_node(2), Some(2));
        assert_eq!(servers.server_for_node(0), None);
        assert_eq!(servers.server_for_node(3), None);
        assert_eq!(servers.node_id(0), 5);
        assert_eq!(servers.addr(1), addr);
    }

    #[test]
    #[should_panic(expected = "node id 4 is given twice")]
    fn a_node_id_given_twice_is_refused() {
        let addr = closed_port();
        let _ = RespServers::new([(4, addr), (1, addr), (4, addr)]);
    }

    #[test]
    fn the_clerk_follows_a_hint_naming_a_node_id() {
        // Nodes 1, 2, 3 are servers 0, 1, 2. Node 1 names node 3 as the leader; taking the
        // hint as a server number would try server 0 again or run past the end.
        let one = Fake::start(vec![Step::Answer(Reply::WrongLeader { leader_hint: Some(3) })]);
        let two = Fake::start(vec![]);
        let three = Fake::start(vec![
            Step::Answer(Reply::Done(Outcome::Registered { id: 9 })),
            Step::Answer(Reply::Done(Outcome::Written)),
            Step::Answer(value("v")),
        ]);
        let mut clerk = Clerk::new(servers(&[&one, &two, &three], RespConfig::default()));
        clerk.put("k", "v");
        assert_eq!(clerk.leader(), 2);
        assert_eq!(clerk.get("k").as_deref(), Some(&b"v"[..]));
        assert_eq!(two.connections(), 0, "node 2 was never asked");
        // The registration (the clerk's request 1), the put (the session's write 1), the get
        // (the clerk's request 2).
        let ids: Vec<(u64, u64)> = three.requests().iter().map(|r| (r.client_id, r.seq)).collect();
        let me = clerk.client_id();
        assert_eq!(ids, vec![(me, 1), (9, 1), (me, 2)]);
    }

    #[test]
    fn credentials_are_sent_first_on_every_new_connection() {
        let fake = Fake::start_with(
            vec![Step::AnswerAndClose(value("first")), Step::Answer(value("second"))],
            Some(vec!["reader", "pw"]),
        );
        let servers = servers(&[&fake], RespConfig::default())
            .with_credentials(Credentials::user("reader", "pw"));
        assert_eq!(servers.call(0, &request(1)), Some(value("first")));
        assert_eq!(servers.call(0, &request(2)), Some(value("second")));
        assert_eq!(servers.call(0, &request(3)), None, "the script is done: closed");
        assert_eq!(fake.connections(), 3);
        assert_eq!(fake.auths(), vec![vec!["reader", "pw"]; 3], "once per connection");
        assert_eq!(servers.last_error(0).as_deref(), Some("the server closed the connection"));
        // The password of `default` alone: `AUTH <password>`.
        let fake = Fake::start_with(vec![Step::Answer(value("v"))], Some(vec!["s3cret"]));
        let default = self::servers(&[&fake], RespConfig::default())
            .with_credentials(Credentials::password("s3cret"));
        assert_eq!(default.call(0, &request(1)), Some(value("v")));
        assert_eq!(fake.auths(), vec![vec!["s3cret"]]);
        let shown = format!("{default:?}");
        assert!(shown.contains("default") && !shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn a_refusal_of_the_client_is_a_refused_reply_not_a_failure() {
        let wrongpass = "WRONGPASS invalid username-password pair or user is disabled.";
        let fake = Fake::start_with(vec![Step::Answer(value("v"))], Some(vec!["s3cret"]));
        // A wrong password: no request is sent.
        let wrong = servers(&[&fake], RespConfig::default())
            .with_credentials(Credentials::password("guess"));
        assert_eq!(wrong.call(0, &request(1)), Some(Reply::Refused(wrongpass.into())));
        assert_eq!(wrong.last_error(0), Some(format!("access denied: {wrongpass}")));
        // None at all: the request is refused.
        let none = servers(&[&fake], RespConfig::default());
        let noauth = "NOAUTH Authentication required.";
        assert_eq!(none.call(0, &request(1)), Some(Reply::Refused(noauth.into())));
        assert!(fake.requests().is_empty());
        // A read-only user's write.
        let noperm = "NOPERM User r has no permissions to run the 'raftkv.request' command";
        let fake = Fake::start(vec![Step::Raw(format!("-{noperm}\r\n").into_bytes())]);
        let read_only = servers(&[&fake], RespConfig::default());
        assert_eq!(read_only.call(0, &request(1)), Some(Reply::Refused(noperm.into())));

        // The clerk gives up at once rather than at its deadline.
        let fake = Fake::start_with(vec![], Some(vec!["s3cret"]));
        let other = Fake::start_with(vec![], Some(vec!["s3cret"]));
        let servers = servers(&[&fake, &other], RespConfig::default())
            .with_credentials(Credentials::password("guess"));
        let mut clerk = Clerk::new(servers);
        let started = Instant::now();
        let result = clerk.try_run(Op::Get { key: "k".into() }, started + Duration::from_secs(20));
        assert_eq!(result, Err(crate::Error::Refused(wrongpass.into())));
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!(fake.auths().len() + other.auths().len(), 1, "one AUTH was sent");
    }

    #[test]
    fn try_run_gives_up_at_the_deadline() {
        let silent = Fake::start(vec![Step::Silent, Step::Silent, Step::Silent]);
        // Server 0 refuses at once; server 1 holds the request until the deadline.
        let servers = RespServers::new([(1, closed_port()), (2, silent.addr)]);
        let mut clerk = Clerk::new(servers);
        let started = Instant::now();
        let result = clerk.try_run(Op::Get { key: "k".into() }, started + Duration::from_secs(1));
        let waited = started.elapsed();
        let Err(crate::Error::Timeout { attempts, .. }) = result else {
            panic!("expected a timeout, got {result:?}");
        };
        assert!(attempts >= 2, "both servers were tried: {attempts} attempts");
        assert!(waited >= Duration::from_secs(1), "gave up after {waited:?}");
        assert!(waited < Duration::from_secs(4), "gave up only after {waited:?}");
        let closed = clerk.servers().last_error(0).unwrap();
        assert!(closed.starts_with("cannot connect"), "{closed}");
    }
}
