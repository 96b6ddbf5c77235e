#![doc = include_str!("../README.md")]
//!
//! # Design
//!
//! `raft_tcp`: the [`Transport`] that carries Raft messages between real processes, over TCP
//! with optional mutual TLS ([`tls`]). The consensus core (`raft`) knows nothing of sockets; a
//! node built on it picks this crate for deployment and `raft`'s simulated or in-memory
//! transports for tests. [`TcpTransport`] passes `raft::testing::transport_suite`, the same
//! conformance suite as every other transport.
//!
//! # The transport
//!
//! [`TcpTransport`] is configured by [`TcpConfig`].
//!
//! # Connections and threads
//!
//! Messages travel one way on each connection. A node writes everything it sends to peer P
//! (requests and responses alike) on the one connection it opened to P, and reads what P sends
//! on the connection P opened to it. Nothing on a connection waits for an answer: the Raft core
//! pairs responses with requests itself, so its pipelined AppendEntries go out back to back.
//!
//! A node with `n` peers runs these threads once started:
//!
//! * one **listener** accepts connections. Its socket is non-blocking and polled every
//!   [`ACCEPT_POLL`]; [`stop`](Transport::stop) wakes it at once and closes the socket, so the
//!   port is free for a node restarted in the same process.
//! * one **writer** per peer owns the outbound connection to it. It connects when it has
//!   something to send. If the peer cannot be reached it drops what is queued (stale by the
//!   time the peer is back; Raft resends what matters) and tries again after an exponential
//!   backoff with jitter. When its queue is empty it **parks** the open connection, in
//!   non-blocking mode, and sleeps.
//!
//! [`send`](Transport::send) never blocks on the network (contract rule 1). While the
//! connection is parked, it writes the frame straight into the socket on the caller's thread,
//! which saves waking the writer (two context switches) for every message; a batch handed to
//! [`send_all`](Transport::send_all) goes out in one system call per peer. Otherwise (the
//! writer is connecting or busy) the message joins the peer's bounded queue, or is dropped if
//! the queue is full, and the writer encodes everything queued into one buffer and hands it to
//! the socket in one call: many frames per system call under load. A direct write the socket
//! cannot take whole (its buffer is full: the peer reads slowly) leaves the rest of the frame
//! to the writer, which finishes it before anything else, so frames never interleave or
//! reorder.
//! * one **reader** per inbound connection checks the handshake, then decodes frames and hands
//!   each message to the node's [`Inbox`]. A peer has at most one inbound connection: a newer
//!   one from the same peer (it restarted, or reconnected) closes the older.
//!
//! That is `1 + 2n` threads when every peer is connected.
//!
//! # Wire format
//!
//! All integers are little-endian; `crc32` is the IEEE CRC-32 as `crc32fast` computes it. The
//! format is frozen for [`PROTOCOL_VERSION`] 2: a change needs a new version. (Version 1 had
//! no cluster id: its hello was 28 bytes, its reply 24.)
//!
//! ```text
//! connection := [tls] hello reply frame*   -- frames follow only an accepting reply; with
//!               -- TLS configured, everything after the TLS handshake is inside TLS
//! hello      := magic version:u32 from:u64 to:u64 cluster:u64 crc:u32  -- 36 bytes, sent by
//!               -- the connecting node `from`, which expects to reach node `to`
//! reply      := magic version:u32 id:u64 status:u32 cluster:u64 crc:u32 -- 32 bytes, the
//!               -- answer of node `id` of `cluster`, which accepted the connection
//!             | magic version:u32 id:u64 3:u32 crc:u32   -- 24 bytes (version 1's layout):
//!               -- the answer to a hello of another version; `version` is the one spoken
//!               -- (in all, crc = crc32 of the bytes before it)
//! magic      := "RAFT"                     -- the bytes 0x52 0x41 0x46 0x54
//! version    := 2                          -- PROTOCOL_VERSION
//! cluster    := the cluster id (TcpConfig::cluster_id)
//! status     := 0                          -- accepted
//!             | 1                          -- wrong node: this is node `id`, not `to`
//!             | 2                          -- unknown peer: `from` is not in the peers
//!             | 3                          -- unsupported version: this node speaks `version`
//!             | 4                          -- wrong cluster: this node is of `cluster`
//!             | 5                          -- wrong certificate: it does not name `from`
//! frame      := length:u32 crc:u32 payload -- sent by the connecting node only
//!               -- length = |payload| ≤ max_frame_bytes; crc = crc32 of payload
//! payload    := postcard(Message)          -- exactly `length` bytes, nothing after the message
//! ```
//!
//! The accepting node reads a hello's first eight bytes (magic and version) before the rest,
//! so it can answer a node of another version, which the connecting node reads by its status.
//! A version 1 node cannot parse a version 2 hello (its checksum falls elsewhere): it closes
//! the connection, and logs a checksum mismatch.
//!
//! # Mutual TLS
//!
//! With [`TcpConfig::tls`] set (see [`crate::tls`]), both sides run a TLS handshake first,
//! each presenting its certificate; the connecting node checks that the certificate it got
//! names the node it meant to reach, the accepting node that the certificate it got names the
//! `from` of the hello (status 5 otherwise). A plain hello sent to a TLS node fails its TLS
//! handshake; a TLS handshake sent to a plain node is refused with a message naming the
//! missing flags. A TLS connection is never parked for direct writes: every message goes
//! through the peer's writer, which encrypts a whole batch at a time.
//!
//! # What closes a connection
//!
//! The accepting node refuses a connection, with a logged error, when TLS is configured and
//! the TLS handshake fails (no certificate, one from another CA, not TLS at all), when the
//! hello is not one (bad magic or checksum), names another node as `to`, comes from an id that
//! is not in [`TcpConfig::peers`] or from another cluster, speaks another version, or (with
//! TLS) claims an id its certificate does not name; it answers with a refusing reply when it
//! understood the hello. A connection that sends no hello within `connect_timeout` is closed
//! with a line at info level only (health checks do that).
//!
//! After the handshake, the accepting node closes the connection, with a logged warning, on the
//! first malformed frame: a bad checksum, a length above `max_frame_bytes`, a payload that does
//! not decode to exactly one [`Message`], or a message whose `to` is not this node or whose
//! `from` is not the peer of the handshake. Messages before that frame were delivered; nothing
//! after it is read. Only that connection is affected: the others keep flowing and the listener
//! keeps accepting. The sender reconnects and carries on.
//!
//! Without TLS the handshake identifies peers; it does not authenticate them. Run such a
//! cluster on a trusted network only.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, select};
use log::{debug, error, info, warn};
use parking_lot::{Mutex, RwLock};
use rand::Rng as _;

use rustls::{ClientConnection, ServerConnection, StreamOwned};

use raft::{ConfigError, Inbox, Message, NodeId, Transport};

pub mod tls;

pub use tls::{PeerTls, TlsError};

/// The version of the wire format this module speaks (see the module docs).
pub const PROTOCOL_VERSION: u32 = 2;

/// How often the listener checks for new connections when none is waiting. Only the first
/// connection from each peer waits for it; [`stop`](Transport::stop) does not.
pub const ACCEPT_POLL: Duration = Duration::from_millis(10);

/// The first bytes of a hello and of a reply.
const MAGIC: [u8; 4] = *b"RAFT";
/// The first byte of a TLS handshake record: what a node with TLS sends first.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
const HELLO_BYTES: usize = 36;
const REPLY_BYTES: usize = 32;
/// `magic version`: what every version's hello and reply begin with.
const PREAMBLE_BYTES: usize = 8;
/// A version 1 reply, which is what a node answers a hello of any other version with.
const REPLY_V1_BYTES: usize = 24;
/// `length:u32 crc:u32` before each payload.
const FRAME_HEADER_BYTES: usize = 8;

/// A writer stops adding frames to a batch once it holds this many bytes.
const BATCH_BYTES: usize = 1 << 20;
/// A writer's or reader's buffer that grew past this (a large snapshot chunk) is given back.
const KEEP_BUFFER_BYTES: usize = 4 << 20;
/// The reader's buffer: one `read` call takes in many small frames.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// How a [`TcpTransport`] reaches its peers, frames messages and queues them. Start from
/// [`TcpConfig::new`] and change what you need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// This node's id: the `from` of every message it sends and the `to` of every message it
    /// accepts.
    pub id: NodeId,
    /// Every peer's id and the address it listens on. Connections from ids not listed here are
    /// refused; messages to them are dropped. An entry for `id` itself is ignored, so the same
    /// map can describe the whole cluster on every node.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The largest payload (one encoded message) this node sends or accepts, in bytes. A peer
    /// that sends a larger frame is disconnected; a larger message is dropped before sending.
    /// Must exceed the largest message Raft sends: an AppendEntries of about
    /// [`Config::max_append_bytes`](raft::Config::max_append_bytes) (or of one entry, however
    /// large), or an InstallSnapshot chunk of
    /// [`Config::snapshot_chunk_bytes`](raft::Config::snapshot_chunk_bytes), plus a few hundred
    /// bytes of headers. It also bounds the memory one connection can make a reader allocate.
    pub max_frame_bytes: u32,
    /// Messages waiting to be written, per peer. When a peer's queue is full, `send` drops the
    /// message (Raft resends); larger absorbs longer bursts at the cost of memory.
    pub queue_len: usize,
    /// The delay before the first reconnection attempt after a failed one. Each further failure
    /// doubles it, up to `backoff_max`; each wait is drawn between half and all of the current
    /// delay, so peers that lost each other together do not retry in lockstep.
    pub backoff_min: Duration,
    /// The longest delay between reconnection attempts.
    pub backoff_max: Duration,
    /// How long establishing a connection may take: the TCP connect and the handshake, on both
    /// sides. [`stop`](Transport::stop) may wait this long for a writer that is connecting.
    pub connect_timeout: Duration,
    /// A write that makes no progress for this long (the peer stopped reading) closes the
    /// connection, and the writer reconnects.
    pub write_timeout: Duration,
    /// The cluster this node belongs to, carried in the handshake: a connection from a node of
    /// another cluster is refused (both sides log why), even if its id is one of `peers`.
    /// Choose it at random when the cluster is created and keep it for the cluster's life.
    pub cluster_id: u64,
    /// Mutual TLS with every peer (see [`PeerTls`]); `None` for plain TCP, only for a trusted
    /// network.
    pub tls: Option<PeerTls>,
}

impl TcpConfig {
    /// Defaults for node `id` with `peers`: 64 MiB frames, 1024 queued messages per peer,
    /// reconnection backoff from 20 ms to 1 s, 1 s to connect, 5 s write timeout, cluster id 0,
    /// no TLS.
    pub fn new(id: NodeId, peers: BTreeMap<NodeId, SocketAddr>) -> TcpConfig {
        TcpConfig {
            id,
            peers,
            max_frame_bytes: 64 << 20,
            queue_len: 1024,
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
            cluster_id: 0,
            tls: None,
        }
    }

    /// Checks the fields and their relations.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first field that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason| Err(ConfigError::Invalid { field, reason });
        if self.max_frame_bytes < 1024 {
            return invalid("max_frame_bytes", "must be at least 1024");
        }
        if self.queue_len == 0 {
            return invalid("queue_len", "must be at least 1");
        }
        if self.backoff_min.is_zero() {
            return invalid("backoff_min", "must be above zero");
        }
        if self.backoff_max < self.backoff_min {
            return invalid("backoff_max", "must be at least backoff_min");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be above zero");
        }
        if self.write_timeout.is_zero() {
            return invalid("write_timeout", "must be above zero");
        }
        Ok(())
    }
}

/// Counters of one [`TcpTransport`] since it was created, for monitoring and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Messages written to a connection.
    pub messages_sent: u64,
    /// The socket writes that carried them: one per batch of frames.
    pub batches_sent: u64,
    /// Messages dropped before reaching a connection: a full queue, an unknown or unreachable
    /// peer, a failed write, a message too large to frame.
    pub messages_dropped: u64,
    /// Messages received and handed to the inbox.
    pub messages_delivered: u64,
    /// Inbound connections refused at the handshake or closed on a malformed frame.
    pub connections_rejected: u64,
}

/// [`Transport`] over TCP (see the [module docs](self) for the design and the wire format).
///
/// Cheap to clone; clones share the transport. Dropping the last clone stops it.
#[derive(Clone)]
pub struct TcpTransport {
    handle: Arc<Handle>,
}

/// What the user's clones share; its drop stops the transport. The threads hold only
/// [`Shared`] and their own [`Lane`], so they never keep it alive.
struct Handle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    /// Each peer's outbound side.
    lanes: BTreeMap<NodeId, Arc<Lane>>,
    /// What [`Transport::start`] hands to the threads it starts.
    pending: Mutex<Option<Pending>>,
    /// Dropped by `stop`, which wakes every thread waiting on [`Shared::stop_rx`].
    stop_signal: Mutex<Option<Sender<()>>>,
}

struct Pending {
    listener: TcpListener,
    /// The receiving end of each peer's queue, with the peer's address.
    queues: Vec<(NodeId, SocketAddr, Receiver<Outgoing>)>,
}

/// What a writer's queue carries.
enum Outgoing {
    /// A message to frame and write.
    Message(Message),
    /// A direct write left a frame unfinished: take the connection back and finish it.
    Unfinished,
}

/// One peer's outbound side, shared by `send` and the peer's writer (see the module docs).
///
/// The connection is the writer's while it connects or writes, or parked here while the queue
/// is empty; only the holder of the lock writes to a parked connection. Messages join the
/// queue only while the connection is not parked, and the writer parks it only when the queue
/// is empty, both under the lock: so a direct write never overtakes a queued message.
struct Lane {
    queue: Sender<Outgoing>,
    parked: Mutex<Parked>,
}

#[derive(Default)]
struct Parked {
    /// The idle connection, in non-blocking mode.
    connection: Option<Outbound>,
    /// What a direct write could not finish (the rest of one frame, and whole frames after
    /// it); the writer sends it first.
    unfinished: Vec<u8>,
    /// How many frames `unfinished` holds or ends.
    unfinished_frames: u64,
    /// Where direct writes encode their frames.
    buffer: Vec<u8>,
}

/// The state the transport's threads share.
struct Shared {
    config: TcpConfig,
    /// Set first thing in `stop`; `send` and the threads check it.
    stopped: AtomicBool,
    /// `None` before `start` and after `stop`. Readers deliver under the read lock, so once
    /// `stop` has taken the write lock nothing more is delivered.
    inbox: RwLock<Option<Inbox>>,
    /// Disconnected when `stop` drops the sender: a wake-up for every waiting thread.
    stop_rx: Receiver<()>,
    connections: Mutex<Connections>,
    stats: Counters,
}

/// The open connections and the threads `stop` must end.
#[derive(Default)]
struct Connections {
    /// Mirrors [`Shared::stopped`] under the lock: nothing is registered or spawned once set.
    stopped: bool,
    next_id: u64,
    /// A handle on every open connection, to shut it down (which wakes a thread blocked on it).
    open: HashMap<u64, TcpStream>,
    /// The current inbound connection of each peer.
    inbound: HashMap<NodeId, u64>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct Counters {
    messages_sent: AtomicU64,
    batches_sent: AtomicU64,
    messages_dropped: AtomicU64,
    messages_delivered: AtomicU64,
    connections_rejected: AtomicU64,
}

/// A connection listed in [`Connections::open`]; unlisted when dropped. Must not be dropped
/// while the connections lock is held.
struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl TcpTransport {
    /// Binds `addr` and builds a transport listening there. Nothing runs until
    /// [`start`](Transport::start).
    ///
    /// # Errors
    /// If `config` is invalid ([`io::ErrorKind::InvalidInput`]) or `addr` cannot be bound.
    pub fn bind(addr: SocketAddr, config: TcpConfig) -> io::Result<TcpTransport> {
        TcpTransport::from_listener(TcpListener::bind(addr)?, config)
    }

    /// Builds a transport on a listener bound by the caller: bind port 0 first, read
    /// [`local_addr`](Self::local_addr), then tell the peers.
    ///
    /// # Errors
    /// If `config` is invalid ([`io::ErrorKind::InvalidInput`]) or the listener cannot be made
    /// non-blocking.
    pub fn from_listener(listener: TcpListener, config: TcpConfig) -> io::Result<TcpTransport> {
        config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let local_addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let mut lanes = BTreeMap::new();
        let mut receivers = Vec::new();
        for (&peer, &addr) in config.peers.iter().filter(|&(&peer, _)| peer != config.id) {
            let (queue, rx) = crossbeam_channel::bounded(config.queue_len);
            lanes.insert(peer, Arc::new(Lane { queue, parked: Mutex::default() }));
            receivers.push((peer, addr, rx));
        }
        let (stop_signal, stop_rx) = crossbeam_channel::bounded(0);
        let shared = Arc::new(Shared {
            config,
            stopped: AtomicBool::new(false),
            inbox: RwLock::new(None),
            stop_rx,
            connections: Mutex::new(Connections::default()),
            stats: Counters::default(),
        });
        let handle = Handle {
            shared,
            local_addr,
            lanes,
            pending: Mutex::new(Some(Pending { listener, queues: receivers })),
            stop_signal: Mutex::new(Some(stop_signal)),
        };
        Ok(TcpTransport { handle: Arc::new(handle) })
    }

    /// The address this transport listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr
    }

    /// The id of the node this transport serves.
    pub fn id(&self) -> NodeId {
        self.handle.shared.config.id
    }

    /// The counters so far.
    pub fn stats(&self) -> TcpStats {
        let c = &self.handle.shared.stats;
        TcpStats {
            messages_sent: c.messages_sent.load(Ordering::Relaxed),
            batches_sent: c.batches_sent.load(Ordering::Relaxed),
            messages_dropped: c.messages_dropped.load(Ordering::Relaxed),
            messages_delivered: c.messages_delivered.load(Ordering::Relaxed),
            connections_rejected: c.connections_rejected.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpTransport")
            .field("id", &self.id())
            .field("local_addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

impl Transport for TcpTransport {
    /// Starts the listener and one writer per peer. A second call only replaces the inbox.
    fn start(&self, inbox: Inbox) {
        self.handle.start(inbox);
    }

    /// Writes `message` to its peer's idle connection, or queues it for the peer's writer, or
    /// drops it: after `stop`, when the queue is full, or when `message.to` is not a peer.
    fn send(&self, message: Message) {
        self.handle.send_all(vec![message]);
    }

    /// As `send` for each message, in order; those for the same peer go out in one write when
    /// its connection is idle.
    fn send_all(&self, messages: Vec<Message>) {
        self.handle.send_all(messages);
    }

    /// Stops for good: no more sends or deliveries, every connection and the listener closed.
    /// Returns once the transport's threads have ended, which takes at most
    /// [`TcpConfig::connect_timeout`] (a writer in the middle of a TCP connect) and usually
    /// no time at all.
    fn stop(&self) {
        self.handle.stop();
    }

    /// True: a reader delivers holding only the inbox's read lock, which neither `send` nor
    /// the node's work needs (and `stop` waits for the delivery to finish).
    fn inline_delivery(&self) -> bool {
        true
    }

    fn max_message_bytes(&self) -> Option<u64> {
        Some(u64::from(self.handle.shared.config.max_frame_bytes))
    }
}

impl Handle {
    fn start(&self, inbox: Inbox) {
        let shared = &self.shared;
        {
            // Under the connections lock, so `stop` cannot slip in between.
            let connections = shared.connections.lock();
            if connections.stopped {
                return;
            }
            *shared.inbox.write() = Some(inbox);
        }
        let Some(Pending { listener, queues }) = self.pending.lock().take() else { return };
        let id = shared.config.id;
        let listening = Arc::clone(shared);
        shared.spawn(format!("raft-tcp-{id}-listen"), move || listen(&listening, &listener));
        for (peer, addr, queue) in queues {
            let writer = Writer {
                shared: Arc::clone(shared),
                peer,
                addr,
                queue,
                lane: Arc::clone(&self.lanes[&peer]),
                buffer: Vec::new(),
                backoff: shared.config.backoff_min,
                failures: 0,
            };
            shared.spawn(format!("raft-tcp-{id}-to-{peer}"), move || writer.run());
        }
    }

    fn send_all(&self, messages: Vec<Message>) {
        let shared = &self.shared;
        if shared.stopped.load(Ordering::Acquire) {
            return;
        }
        let id = shared.config.id;
        let mut by_peer: Vec<(&Arc<Lane>, NodeId, Vec<Message>)> = Vec::new();
        for message in messages {
            let kind = message.kind();
            let to = message.to;
            if message.from != id {
                // The receiver would close the connection over it: a bug in the caller.
                error!("raft-tcp node {id}: not sending a {kind:?} from node {}", message.from);
                shared.stats.messages_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(lane) = self.lanes.get(&to) else {
                debug!(
                    "raft-tcp node {id}: dropping a {kind:?} for node {to}, which is not a peer"
                );
                shared.stats.messages_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            match by_peer.iter_mut().find(|(_, peer, _)| *peer == to) {
                Some((_, _, list)) => list.push(message),
                None => by_peer.push((lane, to, vec![message])),
            }
        }
        for (lane, peer, messages) in by_peer {
            let mut parked = lane.parked.lock();
            if parked.connection.is_some() && parked.unfinished.is_empty() {
                write_parked(shared, peer, lane, &mut parked, messages);
                continue;
            }
            for message in messages {
                let kind = message.kind();
                match lane.queue.try_send(Outgoing::Message(message)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        debug!(
                            "raft-tcp node {id}: queue to node {peer} is full; dropping a {kind:?}"
                        );
                        shared.stats.messages_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        shared.stats.messages_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    fn stop(&self) {
        let shared = &self.shared;
        shared.stopped.store(true, Ordering::Release);
        // From here `start` sets no inbox and no connection is registered.
        shared.connections.lock().stopped = true;
        // Taking the write lock waits for a delivery in progress; none can start after. Not
        // under the connections lock: a delivery may be sending (`inline_delivery`), and a
        // send that finds its connection broken closes it, which takes that lock.
        *shared.inbox.write() = None;
        let threads = {
            let mut connections = shared.connections.lock();
            for stream in connections.open.values() {
                let _ = stream.shutdown(Shutdown::Both);
            }
            std::mem::take(&mut connections.threads)
        };
        // Wakes the listener and every idle writer; a transport that never started closes its
        // listener here.
        self.stop_signal.lock().take();
        self.pending.lock().take();
        for thread in threads {
            if thread.thread().id() != thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Runs `body` on a new thread that `stop` will join.
    fn spawn(self: &Arc<Self>, name: String, body: impl FnOnce() + Send + 'static) {
        let handle = match thread::Builder::new().name(name.clone()).spawn(body) {
            Ok(handle) => handle,
            Err(e) => {
                error!("raft-tcp node {}: cannot start thread {name}: {e}", self.config.id);
                return;
            }
        };
        let mut connections = self.connections.lock();
        if connections.stopped {
            // `stop` has collected the other threads already; this one sees `stopped` at once.
            drop(connections);
            let _ = handle.join();
            return;
        }
        connections.threads.retain(|t| !t.is_finished());
        connections.threads.push(handle);
    }

    /// Lists `stream` for `stop` to shut down. `None` once stopped: the caller drops the
    /// connection.
    ///
    /// # Errors
    /// If the stream cannot be duplicated (out of file descriptors).
    fn register(self: &Arc<Self>, stream: &TcpStream) -> io::Result<Option<Registration>> {
        let copy = stream.try_clone()?;
        let mut connections = self.connections.lock();
        if connections.stopped {
            return Ok(None);
        }
        let id = connections.next_id;
        connections.next_id += 1;
        connections.open.insert(id, copy);
        Ok(Some(Registration { shared: Arc::clone(self), id }))
    }

    /// Makes `connection` the inbound connection of `peer`, closing the one it replaces.
    fn claim_inbound(&self, peer: NodeId, connection: u64) {
        let mut connections = self.connections.lock();
        if let Some(old) = connections.inbound.insert(peer, connection)
            && let Some(stream) = connections.open.get(&old)
        {
            info!(
                "raft-tcp node {}: node {peer} connected again; closing its older connection",
                self.config.id
            );
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Hands `message` to the node. False once stopped: the reader should end.
    fn deliver(&self, message: Message) -> bool {
        let inbox = self.inbox.read();
        match inbox.as_ref() {
            Some(inbox) => {
                inbox.deliver(message);
                self.stats.messages_delivered.fetch_add(1, Ordering::Relaxed);
                true
            }
            // Not started yet: the message is lost, as the contract allows.
            None => !self.is_stopped(),
        }
    }

    fn reject(&self) {
        self.stats.connections_rejected.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut connections = self.shared.connections.lock();
        connections.open.remove(&self.id);
        connections.inbound.retain(|_, &mut c| c != self.id);
    }
}

/// The listener thread: accept, hand each connection to a new reader, until stopped.
fn listen(shared: &Arc<Shared>, listener: &TcpListener) {
    let id = shared.config.id;
    while !shared.is_stopped() {
        match listener.accept() {
            Ok((stream, addr)) => {
                accepted(shared, stream, addr);
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Out of file descriptors, for one: wait a little rather than spin.
            Err(e) => warn!("raft-tcp node {id}: accept failed: {e}"),
        }
        match shared.stop_rx.recv_timeout(ACCEPT_POLL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn accepted(shared: &Arc<Shared>, stream: TcpStream, addr: SocketAddr) {
    // Some platforms give accepted sockets the listener's non-blocking mode; readers block.
    if let Err(e) = stream.set_nonblocking(false) {
        warn!("raft-tcp node {}: dropping the connection from {addr}: {e}", shared.config.id);
        return;
    }
    let registration = match shared.register(&stream) {
        Ok(Some(registration)) => registration,
        Ok(None) => return,
        Err(e) => {
            warn!("raft-tcp node {}: dropping the connection from {addr}: {e}", shared.config.id);
            return;
        }
    };
    let reader = Reader { shared: Arc::clone(shared), addr };
    let name = format!("raft-tcp-{}-from-{addr}", shared.config.id);
    shared.spawn(name, move || reader.run(&stream, &registration));
}

/// The reader of one inbound connection.
struct Reader {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl Reader {
    fn run(self, stream: &TcpStream, registration: &Registration) {
        let id = self.shared.config.id;
        let addr = self.addr;
        let (peer, input) = match self.handshake(stream) {
            Ok(accepted) => accepted,
            Err(_) if self.shared.is_stopped() => return,
            Err(HandshakeError::Io(e)) => {
                info!("raft-tcp node {id}: no handshake from {addr}: {e}");
                return;
            }
            Err(e) => {
                error!("raft-tcp node {id}: refused the connection from {addr}: {e}");
                self.shared.reject();
                return;
            }
        };
        debug!("raft-tcp node {id}: node {peer} connected from {addr}");
        self.shared.claim_inbound(peer, registration.id);
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, input);
        let mut payload = Vec::new();
        let max = self.shared.config.max_frame_bytes;
        let outcome = loop {
            let message = match read_frame(&mut reader, max, &mut payload) {
                Ok(message) => message,
                Err(e) => break e,
            };
            if message.to != id {
                break FrameError::WrongAddressee { to: message.to, id };
            }
            if message.from != peer {
                break FrameError::WrongSender { from: message.from, peer };
            }
            if !self.shared.deliver(message) {
                return;
            }
            if payload.capacity() > KEEP_BUFFER_BYTES {
                payload = Vec::new();
            }
        };
        match outcome {
            _ if self.shared.is_stopped() => {}
            FrameError::Closed => debug!("raft-tcp node {id}: node {peer} ({addr}) disconnected"),
            FrameError::Io(e) => info!("raft-tcp node {id}: lost node {peer} ({addr}): {e}"),
            e => {
                warn!("raft-tcp node {id}: closing the connection from node {peer} ({addr}): {e}");
                self.shared.reject();
            }
        }
    }

    /// Sets up TLS if configured, reads the hello and answers it; the peer's id and the stream
    /// its frames come on, if accepted.
    fn handshake(&self, stream: &TcpStream) -> Result<(NodeId, PeerStream), HandshakeError> {
        let config = &self.shared.config;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(config.connect_timeout))?;
        stream.set_write_timeout(Some(config.connect_timeout))?;
        let mut io = match &config.tls {
            None => PeerStream::Plain(stream.try_clone()?),
            Some(tls) => {
                let conn = ServerConnection::new(Arc::clone(&tls.server))
                    .map_err(|e| HandshakeError::Tls(io::Error::other(e)))?;
                let mut tls = StreamOwned::new(conn, stream.try_clone()?);
                finish_tls_handshake(&mut tls.conn, &mut tls.sock)?;
                PeerStream::Server(Box::new(tls))
            }
        };
        let hello = match Hello::read(&mut io) {
            Err(HandshakeError::Version { theirs }) => {
                // Answered in the layout every version reads, then refused.
                let reply = Reply {
                    version: PROTOCOL_VERSION,
                    id: config.id,
                    status: Status::UnsupportedVersion as u32,
                    cluster: config.cluster_id,
                };
                io.write_all(&reply.encode_v1())?;
                io.flush()?;
                return Err(HandshakeError::Version { theirs });
            }
            other => other?,
        };
        let status = if hello.to != config.id {
            Status::WrongNode
        } else if hello.from == config.id || !config.peers.contains_key(&hello.from) {
            Status::UnknownPeer
        } else if hello.cluster != config.cluster_id {
            Status::WrongCluster
        } else if io.certificate_check(hello.from).is_err() {
            Status::WrongCertificate
        } else {
            Status::Accepted
        };
        let reply = Reply {
            version: PROTOCOL_VERSION,
            id: config.id,
            status: status as u32,
            cluster: config.cluster_id,
        };
        io.write_all(&reply.encode())?;
        io.flush()?;
        match status {
            Status::Accepted => {
                stream.set_read_timeout(None)?;
                Ok((hello.from, io))
            }
            Status::UnsupportedVersion => Err(HandshakeError::Version { theirs: hello.version }),
            Status::WrongNode => {
                Err(HandshakeError::WrongNode { expected: hello.to, actual: config.id })
            }
            Status::UnknownPeer => {
                Err(HandshakeError::UnknownPeer { id: hello.from, of: config.id })
            }
            Status::WrongCluster => Err(HandshakeError::WrongCluster {
                node: hello.from,
                theirs: hello.cluster,
                ours: config.cluster_id,
            }),
            Status::WrongCertificate => Err(HandshakeError::WrongCertificate {
                node: hello.from,
                reason: io.certificate_check(hello.from).err().unwrap_or_default(),
            }),
        }
    }
}

/// One side of a peer connection: the socket, or TLS over it.
enum PeerStream {
    Plain(TcpStream),
    /// The accepting side of a TLS connection.
    Server(Box<StreamOwned<ServerConnection, TcpStream>>),
    /// The connecting side of a TLS connection.
    Client(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl PeerStream {
    /// The socket under the stream.
    fn socket(&self) -> &TcpStream {
        match self {
            PeerStream::Plain(s) => s,
            PeerStream::Server(s) => &s.sock,
            PeerStream::Client(s) => &s.sock,
        }
    }

    /// Whether the peer's certificate names node `id` (always, without TLS: then the
    /// handshake identifies and does not authenticate).
    fn certificate_check(&self, id: NodeId) -> Result<(), String> {
        let PeerStream::Server(tls) = self else { return Ok(()) };
        let cert = tls.conn.peer_certificates().and_then(|c| c.first());
        let cert = cert.ok_or_else(|| "it presented no certificate".to_string())?;
        tls::check_names(cert, id)
    }
}

impl Read for PeerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            PeerStream::Plain(s) => s.read(buf),
            PeerStream::Server(s) => s.read(buf),
            PeerStream::Client(s) => s.read(buf),
        }
    }
}

impl Write for PeerStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            PeerStream::Plain(s) => s.write(buf),
            PeerStream::Server(s) => s.write(buf),
            PeerStream::Client(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            PeerStream::Plain(s) => s.flush(),
            PeerStream::Server(s) => s.flush(),
            PeerStream::Client(s) => s.flush(),
        }
    }
}

/// Runs a TLS handshake to its end on a blocking socket (within its timeouts).
fn finish_tls_handshake<C, S>(conn: &mut C, sock: &mut TcpStream) -> Result<(), HandshakeError>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<S>>,
    S: rustls::SideData,
{
    while conn.is_handshaking() {
        match conn.complete_io(sock) {
            Ok(_) => {}
            // rustls reports a failed negotiation (a certificate refused, bytes that are not
            // TLS) as InvalidData; anything else is the socket's.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(HandshakeError::Tls(e));
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(HandshakeError::Tls(io::Error::new(
                    e.kind(),
                    "the peer closed the connection during the TLS handshake (it may not trust \
                     this node's certificate, or not speak TLS)",
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes `messages` to `peer`'s parked connection without blocking, on the caller's thread.
/// What the socket cannot take now is left to the writer; a failed connection is closed (the
/// writer reconnects for the next message).
fn write_parked(
    shared: &Shared,
    peer: NodeId,
    lane: &Lane,
    parked: &mut Parked,
    messages: Vec<Message>,
) {
    let id = shared.config.id;
    let Parked { connection, unfinished, unfinished_frames, buffer } = parked;
    buffer.clear();
    // Where each frame ends in `buffer`.
    let mut ends = Vec::with_capacity(messages.len());
    for message in &messages {
        match encode_frame(message, shared.config.max_frame_bytes, buffer) {
            Ok(()) => ends.push(buffer.len()),
            Err(e) => {
                let kind = message.kind();
                error!("raft-tcp node {id}: dropping a {kind:?} for node {peer}: {e}");
                shared.stats.messages_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // Only plain connections are parked (see `Writer::park`).
    let stream = connection.as_ref().expect("only a parked connection is written here");
    let stream = stream.stream.socket();
    let mut written = 0;
    let failed = loop {
        if written == buffer.len() {
            break None;
        }
        match (&*stream).write(&buffer[written..]) {
            Ok(0) => break Some(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
            Err(e) => break Some(e),
        }
    };
    let stats = &shared.stats;
    let whole = ends.iter().filter(|&&end| end <= written).count();
    let left = (ends.len() - whole) as u64;
    stats.messages_sent.fetch_add(whole as u64, Ordering::Relaxed);
    if written > 0 {
        stats.batches_sent.fetch_add(1, Ordering::Relaxed);
    }
    match failed {
        None if left > 0 => {
            // The socket is full (the peer reads slowly): the writer takes the connection back
            // and sends the rest, blocking, before anything queued after it.
            unfinished.extend_from_slice(&buffer[written..]);
            *unfinished_frames = left;
            if lane.queue.try_send(Outgoing::Unfinished).is_err() {
                // Only after `stop` (the queue is empty while a connection is parked).
                stats.messages_dropped.fetch_add(left, Ordering::Relaxed);
            }
        }
        None => {}
        Some(e) => {
            stats.messages_dropped.fetch_add(left, Ordering::Relaxed);
            if !shared.is_stopped() {
                info!("raft-tcp node {id}: lost the connection to node {peer}: {e}");
            }
            // Closes it; the writer connects again for the next message.
            *connection = None;
        }
    }
    if buffer.capacity() > KEEP_BUFFER_BYTES {
        *buffer = Vec::new();
    }
}

/// The writer of one peer's outbound connection.
struct Writer {
    shared: Arc<Shared>,
    peer: NodeId,
    addr: SocketAddr,
    queue: Receiver<Outgoing>,
    lane: Arc<Lane>,
    /// The frames of the batch being written; kept between batches.
    buffer: Vec<u8>,
    /// The current reconnection delay.
    backoff: Duration,
    /// Failed connection attempts since the last success.
    failures: u32,
}

/// An open, accepted outbound connection.
struct Outbound {
    stream: PeerStream,
    _registration: Registration,
}

impl Writer {
    fn run(mut self) {
        let id = self.shared.config.id;
        let (peer, addr) = (self.peer, self.addr);
        // The connection while the writer holds it (in blocking mode); `None` while parked in
        // the lane or closed.
        let mut connection: Option<Outbound> = None;
        loop {
            let first = select! {
                recv(self.queue) -> item => match item {
                    Ok(item) => item,
                    Err(_) => break,
                },
                recv(self.shared.stop_rx) -> _ => break,
            };
            // Take the connection back if it is parked, with whatever a direct write left.
            let (parked, unfinished, unfinished_frames) = {
                let mut lane = self.lane.parked.lock();
                let frames = std::mem::take(&mut lane.unfinished_frames);
                (lane.connection.take(), std::mem::take(&mut lane.unfinished), frames)
            };
            if let Some(outbound) = parked {
                match outbound.stream.socket().set_nonblocking(false) {
                    Ok(()) => connection = Some(outbound),
                    Err(e) => {
                        self.shared
                            .stats
                            .messages_dropped
                            .fetch_add(unfinished_frames, Ordering::Relaxed);
                        info!(
                            "raft-tcp node {id}: lost the connection to node {peer} ({addr}): {e}"
                        );
                        continue;
                    }
                }
            }
            let first = match first {
                Outgoing::Message(message) => Some(message),
                Outgoing::Unfinished => None,
            };
            let mut outbound = match connection.take() {
                Some(outbound) => outbound,
                None if first.is_none() => continue,
                None => match self.connect() {
                    Ok(outbound) => outbound,
                    Err(HandshakeError::Stopped) => break,
                    Err(e) => {
                        self.connect_failed(&e);
                        if !self.wait_backoff() {
                            break;
                        }
                        continue;
                    }
                },
            };
            let frames = self.fill_batch(first, unfinished, unfinished_frames);
            if self.shared.is_stopped() {
                break;
            }
            if frames > 0 {
                let stats = &self.shared.stats;
                let written =
                    outbound.stream.write_all(&self.buffer).and_then(|()| outbound.stream.flush());
                if self.buffer.capacity() > KEEP_BUFFER_BYTES {
                    self.buffer = Vec::new();
                }
                if let Err(e) = written {
                    // Dropping `outbound` closes the connection; the next message reconnects.
                    stats.messages_dropped.fetch_add(frames, Ordering::Relaxed);
                    if !self.shared.is_stopped() {
                        info!(
                            "raft-tcp node {id}: lost the connection to node {peer} ({addr}): {e}"
                        );
                    }
                    continue;
                }
                stats.messages_sent.fetch_add(frames, Ordering::Relaxed);
                stats.batches_sent.fetch_add(1, Ordering::Relaxed);
            }
            connection = self.park(outbound);
        }
        // Close a parked connection now rather than with the transport.
        let parked = self.lane.parked.lock().connection.take();
        drop(parked);
    }

    /// Parks `outbound` in the lane for direct writes if nothing is queued; otherwise (or if
    /// it cannot be made non-blocking) hands it back to keep writing. A TLS connection is never
    /// parked: its records are framed and encrypted by the writer alone, so every message
    /// goes through the queue.
    fn park(&self, outbound: Outbound) -> Option<Outbound> {
        let mut lane = self.lane.parked.lock();
        let plain = matches!(outbound.stream, PeerStream::Plain(_));
        if plain && self.queue.is_empty() && outbound.stream.socket().set_nonblocking(true).is_ok()
        {
            lane.connection = Some(outbound);
            return None;
        }
        Some(outbound)
    }

    /// Puts `unfinished` (holding or ending `unfinished_frames` frames), then `first` and
    /// whatever else is queued, up to [`BATCH_BYTES`], into the buffer. Returns how many frames
    /// it holds.
    fn fill_batch(
        &mut self,
        first: Option<Message>,
        unfinished: Vec<u8>,
        unfinished_frames: u64,
    ) -> u64 {
        let max = self.shared.config.max_frame_bytes;
        self.buffer.clear();
        self.buffer.extend_from_slice(&unfinished);
        let mut frames = unfinished_frames;
        let mut next = first;
        loop {
            if let Some(message) = next.take() {
                match encode_frame(&message, max, &mut self.buffer) {
                    Ok(()) => frames += 1,
                    Err(e) => {
                        let id = self.shared.config.id;
                        let kind = message.kind();
                        error!(
                            "raft-tcp node {id}: dropping a {kind:?} for node {}: {e}",
                            self.peer
                        );
                        self.shared.stats.messages_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if self.buffer.len() >= BATCH_BYTES {
                return frames;
            }
            match self.queue.try_recv() {
                Ok(Outgoing::Message(message)) => next = Some(message),
                Ok(Outgoing::Unfinished) => {}
                Err(_) => return frames,
            }
        }
    }

    /// Connects to the peer and completes the handshake.
    fn connect(&mut self) -> Result<Outbound, HandshakeError> {
        let config = &self.shared.config;
        let stream = TcpStream::connect_timeout(&self.addr, config.connect_timeout)?;
        // Registered before anything can block on it, so that `stop` can interrupt it.
        let Some(registration) = self.shared.register(&stream)? else {
            return Err(HandshakeError::Stopped);
        };
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(config.connect_timeout))?;
        stream.set_write_timeout(Some(config.connect_timeout))?;
        let mut io = match &config.tls {
            None => PeerStream::Plain(stream),
            Some(tls) => {
                let conn =
                    ClientConnection::new(Arc::clone(&tls.client), tls::server_name(self.peer))
                        .map_err(|e| HandshakeError::Tls(io::Error::other(e)))?;
                let mut tls = StreamOwned::new(conn, stream);
                finish_tls_handshake(&mut tls.conn, &mut tls.sock)?;
                PeerStream::Client(Box::new(tls))
            }
        };
        let hello = Hello {
            version: PROTOCOL_VERSION,
            from: config.id,
            to: self.peer,
            cluster: config.cluster_id,
        };
        io.write_all(&hello.encode())?;
        io.flush()?;
        Reply::read(&mut io)?.accepted(self.peer, config.id, config.cluster_id)?;
        io.socket().set_write_timeout(Some(config.write_timeout))?;
        let (id, peer, addr) = (config.id, self.peer, self.addr);
        if self.failures > 0 {
            info!("raft-tcp node {id}: connected to node {peer} ({addr}) again");
        } else {
            debug!("raft-tcp node {id}: connected to node {peer} ({addr})");
        }
        self.failures = 0;
        self.backoff = config.backoff_min;
        Ok(Outbound { stream: io, _registration: registration })
    }

    /// Drops what is queued and logs the failure (the first of a series only, above debug).
    fn connect_failed(&mut self, e: &HandshakeError) {
        let queued = self.queue.try_iter().filter(|item| matches!(item, Outgoing::Message(_)));
        let dropped = 1 + queued.count() as u64;
        self.shared.stats.messages_dropped.fetch_add(dropped, Ordering::Relaxed);
        let (id, peer, addr) = (self.shared.config.id, self.peer, self.addr);
        self.failures += 1;
        match e {
            _ if self.failures > 1 => {
                debug!("raft-tcp node {id}: still cannot reach node {peer} ({addr}): {e}");
            }
            HandshakeError::Io(_) => {
                warn!("raft-tcp node {id}: cannot reach node {peer} ({addr}): {e}");
            }
            HandshakeError::Tls(_) => {
                error!("raft-tcp node {id}: no TLS connection to node {peer} ({addr}): {e}");
            }
            _ => error!("raft-tcp node {id}: node {peer} ({addr}) refused the connection: {e}"),
        }
    }

    /// Waits out the backoff, then doubles it. False if the transport stopped meanwhile.
    fn wait_backoff(&mut self) -> bool {
        let half = self.backoff / 2;
        let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let wait = half + Duration::from_nanos(rand::rng().random_range(0..=jitter_nanos));
        self.backoff = (self.backoff * 2).min(self.shared.config.backoff_max);
        matches!(self.shared.stop_rx.recv_timeout(wait), Err(RecvTimeoutError::Timeout))
    }
}

/// The first message on a connection (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hello {
    version: u32,
    from: NodeId,
    to: NodeId,
    cluster: u64,
}

/// The answer to a [`Hello`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reply {
    version: u32,
    /// The answering node.
    id: NodeId,
    /// A [`Status`], kept raw so that an unknown one can be reported.
    status: u32,
    /// The answering node's cluster.
    cluster: u64,
}

/// The verdict in a [`Reply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Accepted = 0,
    WrongNode = 1,
    UnknownPeer = 2,
    UnsupportedVersion = 3,
    WrongCluster = 4,
    WrongCertificate = 5,
}

impl Hello {
    fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut bytes = [0; HELLO_BYTES];
        bytes[..4].copy_from_slice(&MAGIC);
        bytes[4..8].copy_from_slice(&self.version.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.from.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.to.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.cluster.to_le_bytes());
        seal(&mut bytes);
        bytes
    }

    fn decode(bytes: &[u8; HELLO_BYTES]) -> Result<Hello, HandshakeError> {
        check_sealed(bytes)?;
        Ok(Hello {
            version: u32_at(bytes, 4),
            from: u64_at(bytes, 8),
            to: u64_at(bytes, 16),
            cluster: u64_at(bytes, 24),
        })
    }

    /// Reads a hello: one of this version, or the preamble of another version (whose layout
    /// may differ: the rest is not read), reported as [`HandshakeError::Version`].
    fn read(io: &mut impl Read) -> Result<Hello, HandshakeError> {
        let mut bytes = [0; HELLO_BYTES];
        io.read_exact(&mut bytes[..PREAMBLE_BYTES])?;
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic[0] == TLS_HANDSHAKE_RECORD && magic != MAGIC {
            return Err(HandshakeError::UnexpectedTls);
        }
        if magic != MAGIC {
            return Err(HandshakeError::BadMagic(magic));
        }
        let version = u32_at(&bytes, 4);
        if version != PROTOCOL_VERSION {
            return Err(HandshakeError::Version { theirs: version });
        }
        io.read_exact(&mut bytes[PREAMBLE_BYTES..])?;
        Hello::decode(&bytes)
    }
}

impl Reply {
    fn encode(&self) -> [u8; REPLY_BYTES] {
        let mut bytes = [0; REPLY_BYTES];
        bytes[..4].copy_from_slice(&MAGIC);
        bytes[4..8].copy_from_slice(&self.version.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.id.to_le_bytes());
        bytes[16..20].copy_from_slice(&self.status.to_le_bytes());
        bytes[20..28].copy_from_slice(&self.cluster.to_le_bytes());
        seal(&mut bytes);
        bytes
    }

    fn decode(bytes: &[u8; REPLY_BYTES]) -> Result<Reply, HandshakeError> {
        check_sealed(bytes)?;
        Ok(Reply {
            version: u32_at(bytes, 4),
            id: u64_at(bytes, 8),
            status: u32_at(bytes, 16),
            cluster: u64_at(bytes, 20),
        })
    }

    /// The version 1 layout (no cluster): what a node answers a hello of another version with,
    /// since a node of any version reads at least that.
    fn encode_v1(&self) -> [u8; REPLY_V1_BYTES] {
        let mut bytes = [0; REPLY_V1_BYTES];
        bytes[..20].copy_from_slice(&self.encode()[..20]);
        seal(&mut bytes);
        bytes
    }

    /// Reads a reply: one of this version, or the version 1 layout that refuses a version
    /// (status 3), which every version understands.
    fn read(io: &mut impl Read) -> Result<Reply, HandshakeError> {
        let mut bytes = [0; REPLY_BYTES];
        // Every version's reply starts `magic version id status`.
        io.read_exact(&mut bytes[..20])?;
        if u32_at(&bytes, 16) == Status::UnsupportedVersion as u32 {
            io.read_exact(&mut bytes[20..REPLY_V1_BYTES])?;
            check_sealed(&bytes[..REPLY_V1_BYTES])?;
            return Ok(Reply {
                version: u32_at(&bytes, 4),
                id: u64_at(&bytes, 8),
                status: Status::UnsupportedVersion as u32,
                cluster: 0,
            });
        }
        io.read_exact(&mut bytes[20..])?;
        Reply::decode(&bytes)
    }

    /// Whether this reply, from the node we expected to be `peer`, accepts `us` of `cluster`.
    fn accepted(&self, peer: NodeId, us: NodeId, cluster: u64) -> Result<(), HandshakeError> {
        match Status::from_wire(self.status) {
            Some(Status::Accepted) if self.id == peer => Ok(()),
            Some(Status::Accepted | Status::WrongNode) => {
                Err(HandshakeError::WrongNode { expected: peer, actual: self.id })
            }
            Some(Status::UnknownPeer) => Err(HandshakeError::UnknownPeer { id: us, of: self.id }),
            Some(Status::UnsupportedVersion) => {
                Err(HandshakeError::Version { theirs: self.version })
            }
            Some(Status::WrongCluster) => Err(HandshakeError::WrongCluster {
                node: self.id,
                theirs: self.cluster,
                ours: cluster,
            }),
            Some(Status::WrongCertificate) => {
                Err(HandshakeError::CertificateRefused { by: self.id, id: us })
            }
            None => Err(HandshakeError::UnknownStatus(self.status)),
        }
    }
}

impl Status {
    fn from_wire(status: u32) -> Option<Status> {
        [
            Status::Accepted,
            Status::WrongNode,
            Status::UnknownPeer,
            Status::UnsupportedVersion,
            Status::WrongCluster,
            Status::WrongCertificate,
        ]
        .into_iter()
        .find(|&s| s as u32 == status)
    }
}

/// Writes the crc32 of everything before the last four bytes into them.
fn seal(bytes: &mut [u8]) {
    let body = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
}

/// Checks the magic and the crc32 written by [`seal`].
fn check_sealed(bytes: &[u8]) -> Result<(), HandshakeError> {
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != MAGIC {
        return Err(HandshakeError::BadMagic(magic));
    }
    let body = bytes.len() - 4;
    if crc32fast::hash(&bytes[..body]) != u32_at(bytes, body) {
        return Err(HandshakeError::Checksum);
    }
    Ok(())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(std::array::from_fn(|i| bytes[at + i]))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(std::array::from_fn(|i| bytes[at + i]))
}

/// Appends `message` to `out` as one frame; on error `out` is left as it was.
fn encode_frame(
    message: &Message,
    max_frame_bytes: u32,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    let encoded = postcard::to_io(message, &mut *out).map(drop).map_err(FrameError::Codec);
    let payload_start = start + FRAME_HEADER_BYTES;
    let len = (out.len() - payload_start) as u64;
    let checked = encoded.and_then(|()| match u32::try_from(len) {
        Ok(len) if len <= max_frame_bytes => Ok(len),
        _ => Err(FrameError::TooLarge { len, max: max_frame_bytes }),
    });
    match checked {
        Ok(len) => {
            let crc = crc32fast::hash(&out[payload_start..]);
            out[start..start + 4].copy_from_slice(&len.to_le_bytes());
            out[start + 4..payload_start].copy_from_slice(&crc.to_le_bytes());
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Reads one frame and decodes its message, using `payload` as the buffer.
/// [`FrameError::Closed`] if the stream ends cleanly before the frame.
fn read_frame(
    reader: &mut impl Read,
    max_frame_bytes: u32,
    payload: &mut Vec<u8>,
) -> Result<Message, FrameError> {
    let mut header = [0; FRAME_HEADER_BYTES];
    let mut filled = 0;
    while filled < header.len() {
        match reader.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32_at(&header, 0);
    let expected = u32_at(&header, 4);
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge { len: len.into(), max: max_frame_bytes });
    }
    // Grows with what arrives rather than trusting `len` up front.
    payload.clear();
    reader.by_ref().take(u64::from(len)).read_to_end(payload)?;
    if payload.len() < len as usize {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    let actual = crc32fast::hash(payload);
    if actual != expected {
        return Err(FrameError::Checksum { expected, actual });
    }
    payload_message(payload)
}

/// The message a frame's payload holds: exactly one postcard-encoded [`Message`].
fn payload_message(payload: &[u8]) -> Result<Message, FrameError> {
    let (message, rest) =
        postcard::take_from_bytes::<Message>(payload).map_err(FrameError::Codec)?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes(rest.len()));
    }
    Ok(message)
}

/// Decodes a frame's payload (checksum already checked) as a reader of this transport does:
/// the [`Message`] it holds, or `None` if the bytes are not exactly one message. The message
/// is not yet validated; [`RawNode::step`](raft::RawNode::step) does that. Public for the
/// fuzz targets (`docs/fuzzing.md`).
pub fn decode_payload(payload: &[u8]) -> Option<Message> {
    payload_message(payload).ok()
}

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a Raft peer (the connection starts with {0:?}, not \"RAFT\")")]
    BadMagic([u8; 4]),
    #[error("handshake checksum mismatch")]
    Checksum,
    #[error("protocol version {theirs} is not supported (this node speaks {PROTOCOL_VERSION})")]
    Version { theirs: u32 },
    #[error("the connection is for node {expected}, but reached node {actual}")]
    WrongNode { expected: NodeId, actual: NodeId },
    #[error("node {id} is not a configured peer of node {of}")]
    UnknownPeer { id: NodeId, of: NodeId },
    #[error("unknown handshake status {0}")]
    UnknownStatus(u32),
    #[error(
        "node {node} belongs to cluster {theirs:016x}, and this node to cluster {ours:016x}: \
         is it a member of another cluster reusing the same ids and addresses?"
    )]
    WrongCluster { node: NodeId, theirs: u64, ours: u64 },
    #[error("node {node} presented a certificate that is not node {node}'s: {reason}")]
    WrongCertificate { node: NodeId, reason: String },
    #[error(
        "node {by} refused this node's certificate: it is not for {} (see docs/operations.md, \
         \"Security\")",
        tls::node_name(*id)
    )]
    CertificateRefused { by: NodeId, id: NodeId },
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error(
        "the peer started a TLS handshake, but this node has no peer TLS configured \
         (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file)"
    )]
    UnexpectedTls,
    #[error("the transport is stopping")]
    Stopped,
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("the connection was closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("a frame of {len} bytes is larger than max_frame_bytes ({max})")]
    TooLarge { len: u64, max: u32 },
    #[error("frame checksum mismatch (header {expected:#010x}, payload {actual:#010x})")]
    Checksum { expected: u32, actual: u32 },
    #[error("cannot encode or decode the message: {0}")]
    Codec(postcard::Error),
    #[error("{0} bytes follow the message in its frame")]
    TrailingBytes(usize),
    #[error("a message for node {to} arrived at node {id}")]
    WrongAddressee { to: NodeId, id: NodeId },
    #[error("a message from node {from} came on node {peer}'s connection")]
    WrongSender { from: NodeId, peer: NodeId },
}

#[cfg(test)]
mod tests {
    use std::sync::{Once, PoisonError};
    use std::time::Instant;

    use bytes::Bytes;

    use super::*;
    use raft::{Body, Entry, SnapshotMeta};

    /// How long anything that should happen may take, on a loaded machine.
    const WAIT: Duration = Duration::from_secs(10);

    /// Records what this module logs at info and above, so tests can check the reasons given.
    struct Capture;

    static LOGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

    impl ::log::Log for Capture {
        fn enabled(&self, metadata: &::log::Metadata<'_>) -> bool {
            metadata.level() <= ::log::Level::Info
        }

        fn log(&self, record: &::log::Record<'_>) {
            if self.enabled(record.metadata()) {
                let line = format!("{} {}", record.level(), record.args());
                LOGS.lock().unwrap_or_else(PoisonError::into_inner).push(line);
            }
        }

        fn flush(&self) {}
    }

    fn capture_logs() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let _ = ::log::set_logger(&Capture);
            ::log::set_max_level(::log::LevelFilter::Info);
        });
    }

    /// Whether a line at `level` containing `text` was logged (by any test of this binary).
    fn logged(level: ::log::Level, text: &str) -> bool {
        let logs = LOGS.lock().unwrap_or_else(PoisonError::into_inner);
        let prefix = format!("{level} ");
        logs.iter().any(|line| line.starts_with(&prefix) && line.contains(text))
    }

    /// Polls `done` until it holds, or panics after [`WAIT`].
    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn localhost() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
    }

    /// Started transports for `ids` that know each other and the `extra` peers, configured by
    /// `tweak`, each with the receiving end of its inbox.
    fn cluster(
        ids: &[NodeId],
        extra: &[(NodeId, SocketAddr)],
        tweak: impl Fn(&mut TcpConfig),
    ) -> Vec<(TcpTransport, Receiver<Message>)> {
        let listeners: Vec<_> = ids.iter().map(|_| localhost()).collect();
        let mut peers: BTreeMap<_, _> = extra.iter().copied().collect();
        for (&id, listener) in ids.iter().zip(&listeners) {
            peers.insert(id, listener.local_addr().unwrap());
        }
        ids.iter()
            .zip(listeners)
            .map(|(&id, listener)| {
                let mut config = TcpConfig::new(id, peers.clone());
                tweak(&mut config);
                let transport = TcpTransport::from_listener(listener, config).unwrap();
                let (inbox, rx) = Inbox::new();
                transport.start(inbox);
                (transport, rx)
            })
            .collect()
    }

    fn vote(from: NodeId, to: NodeId, term: u64) -> Message {
        let body = Body::RequestVote { pre_vote: false, last_log_index: 7, last_log_term: 2 };
        Message { from, to, term, body }
    }

    fn read_index(from: NodeId, to: NodeId, ctx: u64) -> Message {
        Message { from, to, term: 1, body: Body::ReadIndex { ctx } }
    }

    fn append(from: NodeId, to: NodeId, data: Bytes) -> Message {
        let entries = vec![Entry { term: 2, index: 5, data }];
        let body = Body::AppendEntries {
            prev_log_index: 4,
            prev_log_term: 2,
            entries,
            leader_commit: 3,
            read_round: 9,
        };
        Message { from, to, term: 2, body }
    }

    fn frame(message: &Message) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode_frame(message, u32::MAX, &mut bytes).unwrap();
        bytes
    }

    /// A frame holding `payload` as is, with a correct length and checksum.
    fn raw_frame(payload: &[u8]) -> Vec<u8> {
        let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// Connects to `addr`, sends `hello`, and reads until the other side closes: the reply, if
    /// one came. Panics if the connection stays open.
    fn refused(addr: SocketAddr, hello: &[u8]) -> Option<Reply> {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.write_all(hello).unwrap();
        let received = read_until_closed(&mut stream);
        if received.is_empty() {
            return None;
        }
        let mut input = received.as_slice();
        let reply = Reply::read(&mut input).unwrap();
        assert!(input.is_empty(), "{} bytes after the reply", input.len());
        Some(reply)
    }

    /// Everything `stream` receives until the other side closes it; panics on a timeout.
    fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
        let mut received = Vec::new();
        let mut chunk = [0; 256];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => return received,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return received,
                Err(e) => panic!("the connection was not closed: {e}"),
            }
        }
    }

    /// A version 1 hello (28 bytes, no cluster id) from node `from` for node `to`, as a node
    /// from before cluster ids sends.
    fn v1_hello(from: NodeId, to: NodeId) -> [u8; 28] {
        let mut hello = [0; 28];
        hello[..4].copy_from_slice(b"RAFT");
        hello[4..8].copy_from_slice(&1u32.to_le_bytes());
        hello[8..16].copy_from_slice(&from.to_le_bytes());
        hello[16..24].copy_from_slice(&to.to_le_bytes());
        seal(&mut hello);
        hello
    }

    /// A connection to `addr` as node `from`, accepted by node `to`.
    fn handshaken(addr: SocketAddr, from: NodeId, to: NodeId) -> TcpStream {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let hello = Hello { version: PROTOCOL_VERSION, from, to, cluster: 0 };
        stream.write_all(&hello.encode()).unwrap();
        let mut bytes = [0; REPLY_BYTES];
        stream.read_exact(&mut bytes).unwrap();
        let reply = Reply::decode(&bytes).unwrap();
        assert_eq!(reply, Reply { version: PROTOCOL_VERSION, id: to, status: 0, cluster: 0 });
        stream
    }

    #[test]
    fn frames_follow_the_documented_layout() {
        let message = vote(1, 2, 3);
        let bytes = frame(&message);
        let payload = postcard::to_stdvec(&message).unwrap();
        assert_eq!(u32_at(&bytes, 0) as usize, payload.len(), "length prefix");
        assert_eq!(u32_at(&bytes, 4), crc32fast::hash(&payload), "checksum of the payload");
        assert_eq!(&bytes[FRAME_HEADER_BYTES..], &payload[..], "payload is postcard(Message)");

        let cluster = 0x1122_3344_5566_7788;
        let hello = Hello { version: 2, from: 0x0102, to: 7, cluster }.encode();
        assert_eq!(hello.len(), 36);
        assert_eq!(&hello[..4], b"RAFT");
        assert_eq!(hello[4..8], 2u32.to_le_bytes());
        assert_eq!(hello[8..16], 0x0102u64.to_le_bytes());
        assert_eq!(hello[16..24], 7u64.to_le_bytes());
        assert_eq!(hello[24..32], cluster.to_le_bytes());
        assert_eq!(hello[32..], crc32fast::hash(&hello[..32]).to_le_bytes());
        let reply = Reply { version: 2, id: 7, status: 4, cluster };
        let bytes = reply.encode();
        assert_eq!(bytes.len(), 32);
        assert_eq!(&bytes[..4], b"RAFT");
        assert_eq!(bytes[4..8], 2u32.to_le_bytes());
        assert_eq!(bytes[8..16], 7u64.to_le_bytes());
        assert_eq!(bytes[16..20], 4u32.to_le_bytes());
        assert_eq!(bytes[20..28], cluster.to_le_bytes());
        assert_eq!(bytes[28..], crc32fast::hash(&bytes[..28]).to_le_bytes());
        // The answer to a hello of another version: version 1's layout, without the cluster.
        let v1 = reply.encode_v1();
        assert_eq!(v1.len(), 24);
        assert_eq!(v1[..20], bytes[..20]);
        assert_eq!(v1[20..], crc32fast::hash(&v1[..20]).to_le_bytes());
    }

    #[test]
    fn frames_round_trip_and_damage_is_detected() {
        let meta = SnapshotMeta { last_included_index: 9, last_included_term: 2, voters: vec![1] };
        let messages = [
            vote(1, 2, 3),
            append(1, 2, Bytes::from(vec![5; 300])),
            Message {
                from: 1,
                to: 2,
                term: 2,
                body: Body::InstallSnapshot {
                    meta,
                    offset: 0,
                    total_len: 4,
                    data: Bytes::from_static(b"snap"),
                },
            },
            read_index(1, 2, 77),
        ];
        let mut wire = Vec::new();
        for m in &messages {
            encode_frame(m, 1 << 20, &mut wire).unwrap();
        }
        let mut reader = &wire[..];
        let mut payload = Vec::new();
        for m in &messages {
            assert_eq!(&read_frame(&mut reader, 1 << 20, &mut payload).unwrap(), m);
        }
        let end = read_frame(&mut reader, 1 << 20, &mut payload);
        assert!(matches!(end, Err(FrameError::Closed)), "{end:?}");

        let one = frame(&messages[1]);
        // A flipped bit anywhere in the payload fails the checksum.
        for at in FRAME_HEADER_BYTES..one.len() {
            let mut damaged = one.clone();
            damaged[at] ^= 0x10;
            let got = read_frame(&mut &damaged[..], 1 << 20, &mut payload);
            assert!(matches!(got, Err(FrameError::Checksum { .. })), "byte {at}: {got:?}");
        }
        // A frame cut short anywhere is an unexpected end, not a message.
        for cut in 1..one.len() {
            let got = read_frame(&mut &one[..cut], 1 << 20, &mut payload);
            let eof =
                matches!(&got, Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof);
            assert!(eof, "cut at {cut}: {got:?}");
        }
        // Too large to send or to accept.
        let mut out = vec![1, 2, 3];
        let got = encode_frame(&messages[1], 100, &mut out);
        assert!(matches!(got, Err(FrameError::TooLarge { max: 100, .. })), "{got:?}");
        assert_eq!(out, [1, 2, 3], "a refused frame leaves the buffer as it was");
        let got = read_frame(&mut &one[..], 100, &mut payload);
        assert!(matches!(got, Err(FrameError::TooLarge { max: 100, .. })), "{got:?}");
        // A payload must be exactly one message.
        let mut longer = postcard::to_stdvec(&messages[0]).unwrap();
        longer.push(0);
        let got = read_frame(&mut &raw_frame(&longer)[..], 1 << 20, &mut payload);
        assert!(matches!(got, Err(FrameError::TrailingBytes(1))), "{got:?}");
        let got = read_frame(&mut &raw_frame(&[0xff; 16])[..], 1 << 20, &mut payload);
        assert!(matches!(got, Err(FrameError::Codec(_))), "{got:?}");
    }

    #[test]
    fn handshakes_round_trip_and_damage_is_detected() {
        let hello = Hello { version: PROTOCOL_VERSION, from: 3, to: 1, cluster: 9 };
        assert_eq!(Hello::decode(&hello.encode()).unwrap(), hello);
        assert_eq!(Hello::read(&mut &hello.encode()[..]).unwrap(), hello);
        for at in 0..HELLO_BYTES {
            let mut damaged = hello.encode();
            damaged[at] ^= 0x01;
            let got = Hello::decode(&damaged);
            let detected = if at < 4 {
                matches!(got, Err(HandshakeError::BadMagic(_)))
            } else {
                matches!(got, Err(HandshakeError::Checksum))
            };
            assert!(detected, "byte {at}: {got:?}");
        }
        // What the connecting node makes of each reply from the node it expected to be 1.
        let reply = |id, status| {
            Reply { version: PROTOCOL_VERSION, id, status, cluster: 8 }.accepted(1, 3, 9)
        };
        assert!(reply(1, Status::Accepted as u32).is_ok());
        let got = reply(2, Status::Accepted as u32);
        assert!(matches!(got, Err(HandshakeError::WrongNode { expected: 1, actual: 2 })));
        let got = reply(2, Status::WrongNode as u32);
        assert!(matches!(got, Err(HandshakeError::WrongNode { expected: 1, actual: 2 })));
        let got = reply(1, Status::UnknownPeer as u32);
        assert!(matches!(got, Err(HandshakeError::UnknownPeer { id: 3, of: 1 })));
        let got = reply(1, Status::UnsupportedVersion as u32);
        assert!(matches!(got, Err(HandshakeError::Version { .. })));
        assert!(matches!(reply(1, 99), Err(HandshakeError::UnknownStatus(99))));
        let got = reply(1, Status::WrongCluster as u32);
        assert!(matches!(got, Err(HandshakeError::WrongCluster { node: 1, theirs: 8, ours: 9 })));
        let got = reply(1, Status::WrongCertificate as u32);
        assert!(matches!(got, Err(HandshakeError::CertificateRefused { by: 1, id: 3 })));
        // A refused version comes in version 1's layout, from a node of any version.
        let old = Reply { version: 1, id: 1, status: 3, cluster: 0 }.encode_v1();
        let got = Reply::read(&mut &old[..]).unwrap();
        assert!(matches!(got.accepted(1, 3, 0), Err(HandshakeError::Version { theirs: 1 })));
        // A TLS client hello where a Raft hello belongs says what is missing.
        let tls_hello = [0x16, 0x03, 0x01, 0x00, 0xf0, 0x01, 0x00, 0x00];
        let got = Hello::read(&mut &tls_hello[..]);
        assert!(matches!(got, Err(HandshakeError::UnexpectedTls)), "{got:?}");
    }

    #[test]
    fn configs_are_validated() {
        let good = TcpConfig::new(1, BTreeMap::new());
        assert_eq!(good.validate(), Ok(()));
        type Spoil = fn(&mut TcpConfig);
        let bad: [(&str, Spoil); 6] = [
            ("max_frame_bytes", |c| c.max_frame_bytes = 10),
            ("queue_len", |c| c.queue_len = 0),
            ("backoff_min", |c| c.backoff_min = Duration::ZERO),
            ("backoff_max", |c| c.backoff_max = c.backoff_min / 2),
            ("connect_timeout", |c| c.connect_timeout = Duration::ZERO),
            ("write_timeout", |c| c.write_timeout = Duration::ZERO),
        ];
        for (field, spoil) in bad {
            let mut config = good.clone();
            spoil(&mut config);
            let err = config.validate().unwrap_err();
            assert!(err.to_string().starts_with(field), "{err}");
            let refused = TcpTransport::from_listener(localhost(), config).unwrap_err();
            assert_eq!(refused.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn tcp_transport_passes_the_conformance_suite() {
        raft::testing::transport_suite(|n| {
            let listeners: Vec<_> = (0..n).map(|_| localhost()).collect();
            let peers: BTreeMap<NodeId, SocketAddr> =
                (0..).zip(listeners.iter().map(|l| l.local_addr().unwrap())).collect();
            (0..)
                .zip(listeners)
                .map(|(id, l)| TcpTransport::from_listener(l, TcpConfig::new(id, peers.clone())))
                .collect::<io::Result<Vec<_>>>()
                .unwrap()
        });
    }

    /// Messages a transport cannot send are dropped and counted, and `send` returns at once.
    #[test]
    fn unsendable_messages_are_dropped() {
        let nodes = cluster(&[1, 2], &[], |_| {});
        let (t1, _) = &nodes[0];
        t1.send(vote(1, 9, 1)); // not a peer
        t1.send(vote(1, 1, 1)); // itself
        t1.send(vote(5, 2, 1)); // not from this node
        assert_eq!(t1.stats().messages_dropped, 3);
        assert!(nodes[1].1.recv_timeout(Duration::from_millis(100)).is_err());
    }

    /// Many messages sent at once (`send_all`) all arrive, in order, in far fewer writes than
    /// messages; so do many sent one by one.
    #[test]
    fn bursts_arrive_in_order_in_few_writes() {
        const COUNT: u64 = 20_000;
        let nodes = cluster(&[1, 2], &[], |c| c.queue_len = COUNT as usize);
        let (t1, _) = &nodes[0];
        let (_, rx2) = &nodes[1];
        // Connect first, so that what follows measures batching on an open connection.
        t1.send(read_index(1, 2, u64::MAX));
        assert_eq!(rx2.recv_timeout(WAIT).unwrap(), read_index(1, 2, u64::MAX));
        let messages: Vec<Message> = (0..COUNT).map(|ctx| read_index(1, 2, ctx)).collect();
        for chunk in messages.chunks(500) {
            t1.send_all(chunk.to_vec());
        }
        for ctx in 0..COUNT {
            let got = rx2.recv_timeout(WAIT).expect("a message was lost");
            assert_eq!(got, read_index(1, 2, ctx), "out of order");
        }
        let stats = t1.stats();
        assert_eq!(stats.messages_sent, COUNT + 1);
        assert_eq!(stats.messages_dropped, 0);
        assert!(stats.batches_sent * 10 <= COUNT, "{} writes for {COUNT}", stats.batches_sent);
        assert_eq!(nodes[1].0.stats().messages_delivered, COUNT + 1);

        // One by one: each goes straight into the socket (or, while the writer has the
        // connection, into the queue): in order all the same.
        for ctx in 0..COUNT {
            t1.send(read_index(1, 2, ctx));
        }
        for ctx in 0..COUNT {
            let got = rx2.recv_timeout(WAIT).expect("a message was lost");
            assert_eq!(got, read_index(1, 2, ctx), "out of order");
        }
        assert_eq!(t1.stats().messages_sent, 2 * COUNT + 1);
    }

    /// Accepts one connection on `listener` and answers its hello as node `id`, accepting it.
    fn accept_as(listener: &TcpListener, id: NodeId) -> TcpStream {
        let (stream, _) = listener.accept().unwrap();
        let mut hello = [0; HELLO_BYTES];
        (&stream).read_exact(&mut hello).unwrap();
        let reply = Reply { version: PROTOCOL_VERSION, id, status: 0, cluster: 0 };
        (&stream).write_all(&reply.encode()).unwrap();
        stream
    }

    /// When direct writes fill the socket (the peer is not reading yet), the writer takes the
    /// connection back and finishes the frame cut short, then sends what queued behind it:
    /// every message arrives whole and in order, and no `send` waits for the peer.
    #[test]
    fn a_full_socket_hands_the_rest_to_the_writer_in_order() {
        const COUNT: u64 = 300;
        let slow = localhost();
        let peers = BTreeMap::from([(2, slow.local_addr().unwrap())]);
        let mut config = TcpConfig::new(1, peers);
        config.queue_len = COUNT as usize;
        let t1 = TcpTransport::from_listener(localhost(), config).unwrap();
        let (inbox, _rx) = Inbox::new();
        t1.start(inbox);
        let (go, wait_go) = crossbeam_channel::bounded::<()>(0);
        let peer = thread::spawn(move || {
            let stream = accept_as(&slow, 2);
            // Read nothing until the sender has filled the socket.
            wait_go.recv().unwrap();
            let mut reader = BufReader::new(&stream);
            let mut payload = Vec::new();
            (0..=COUNT)
                .map(|_| read_frame(&mut reader, u32::MAX, &mut payload).unwrap())
                .collect::<Vec<Message>>()
        });
        let numbered = |i: u64| {
            let mut data = vec![0; 128 << 10];
            data[..8].copy_from_slice(&i.to_le_bytes());
            append(1, 2, Bytes::from(data))
        };
        // The first message connects; then the idle connection is parked for direct writes.
        t1.send(numbered(0));
        let lane = Arc::clone(&t1.handle.lanes[&2]);
        eventually("the connection is parked", || lane.parked.lock().connection.is_some());

        // 37 MiB: far more than the socket buffers hold.
        let started = Instant::now();
        for i in 1..=COUNT {
            t1.send(numbered(i));
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "{COUNT} sends took {took:?}");
        assert!(t1.stats().messages_sent < COUNT, "the socket never filled");
        go.send(()).unwrap();
        let got = peer.join().unwrap();
        for (i, message) in got.iter().enumerate() {
            assert_eq!(message, &numbered(i as u64), "message {i} is not the one sent {i}th");
        }
        eventually("every message is counted sent", || t1.stats().messages_sent == COUNT + 1);
        assert_eq!(t1.stats().messages_dropped, 0);
    }

    /// Sends `message` through `from` until `to` receives it: the first copies may be lost while
    /// a connection is re-established. Copies of earlier probes (lower terms, from the same
    /// node) may still arrive and are skipped.
    fn send_until_delivered(from: &TcpTransport, to: &Receiver<Message>, message: &Message) {
        let deadline = Instant::now() + WAIT;
        loop {
            from.send(message.clone());
            while let Ok(got) = to.recv_timeout(Duration::from_millis(50)) {
                if &got == message {
                    return;
                }
                assert!(got.from == message.from && got.term < message.term, "got {got:?}");
            }
            assert!(Instant::now() < deadline, "{message:?} never arrived");
        }
    }

    /// Receives `expected` from `rx`, skipping leftover copies of earlier probes.
    fn recv_skipping_older(rx: &Receiver<Message>, expected: &Message) {
        loop {
            let got = rx.recv_timeout(WAIT).expect("a message was lost");
            if &got == expected {
                return;
            }
            assert!(got.from == expected.from && got.term < expected.term, "got {got:?}");
        }
    }

    #[test]
    fn a_restarted_peer_is_reconnected() {
        let nodes = cluster(&[1, 2], &[], |_| {});
        let (t1, rx1) = &nodes[0];
        let (t2, rx2) = &nodes[1];
        send_until_delivered(t1, rx2, &vote(1, 2, 1));
        send_until_delivered(t2, rx1, &vote(2, 1, 1));

        // Node 2 stops and a new instance takes its address.
        let addr2 = t2.local_addr();
        t2.stop();
        t1.send(vote(1, 2, 2)); // Most likely lost, but it must not wedge the writer.
        let config = TcpConfig::new(2, BTreeMap::from([(1, t1.local_addr())]));
        let t2 = TcpTransport::bind(addr2, config).expect("the stopped node freed its port");
        let (inbox, rx2) = Inbox::new();
        t2.start(inbox);

        send_until_delivered(t1, &rx2, &vote(1, 2, 3));
        // The new instance's connection replaces the old one at node 1.
        send_until_delivered(&t2, rx1, &vote(2, 1, 3));
        // And the connections keep working, in order, in both directions.
        for term in 4..10 {
            t1.send(vote(1, 2, term));
            t2.send(vote(2, 1, term));
        }
        for term in 4..10 {
            recv_skipping_older(&rx2, &vote(1, 2, term));
            recv_skipping_older(rx1, &vote(2, 1, term));
        }
    }

    /// Every kind of bad input closes its own connection, with a logged reason; node 1 keeps
    /// delivering from its good peer 2 afterwards, and a raw client posing as peer 3 can connect
    /// again.
    #[test]
    fn malformed_input_closes_only_that_connection() {
        capture_logs();
        let stranger: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let nodes = cluster(&[1, 2], &[(3, stranger)], |c| c.max_frame_bytes = 1024);
        let (t1, rx1) = &nodes[0];
        let (t2, _) = &nodes[1];
        let addr = t1.local_addr();
        let mut term = 0;
        let mut good_peer_still_heard = || {
            term += 1;
            t2.send(vote(2, 1, term));
            assert_eq!(rx1.recv_timeout(WAIT).unwrap(), vote(2, 1, term));
        };
        good_peer_still_heard();

        // Bad handshakes: closed at once, with a refusing reply when the hello made sense.
        let hello = |version, from, to| Hello { version, from, to, cluster: 0 }.encode();
        let garbage = b"GET / HTTP/1.1\r\nHost: raft\r\n\r\n";
        assert_eq!(refused(addr, garbage), None);
        let mut damaged = hello(PROTOCOL_VERSION, 3, 1);
        damaged[9] ^= 0x40;
        assert_eq!(refused(addr, &damaged), None);
        let reply = |status| Some(Reply { version: PROTOCOL_VERSION, id: 1, status, cluster: 0 });
        assert_eq!(refused(addr, &hello(PROTOCOL_VERSION, 3, 7)), reply(Status::WrongNode as u32));
        assert_eq!(
            refused(addr, &hello(PROTOCOL_VERSION, 42, 1)),
            reply(Status::UnknownPeer as u32)
        );
        // Another version's hello is answered in version 1's layout (no cluster), then refused.
        let v1_reply = Reply { cluster: 0, ..reply(Status::UnsupportedVersion as u32).unwrap() };
        assert_eq!(refused(addr, &hello(3, 3, 1)), Some(v1_reply));
        let old = v1_hello(3, 1);
        assert_eq!(refused(addr, &old), Some(v1_reply), "a version 1 hello");
        let other_cluster = Hello { version: PROTOCOL_VERSION, from: 3, to: 1, cluster: 5 };
        assert_eq!(refused(addr, &other_cluster.encode()), reply(Status::WrongCluster as u32));
        good_peer_still_heard();

        // Bad frames after a good handshake: what came before is delivered, then the
        // connection is closed.
        let mut bad_crc = frame(&read_index(3, 1, 0));
        bad_crc[5] ^= 0x01;
        let mut oversized = 1025u32.to_le_bytes().to_vec();
        oversized.extend_from_slice(&[0; 4 + 1025]);
        let mut longer = postcard::to_stdvec(&read_index(3, 1, 0)).unwrap();
        longer.push(0);
        let bad_frames = [
            bad_crc,
            oversized,
            raw_frame(&[0xff; 16]),
            raw_frame(&longer),
            frame(&read_index(3, 9, 0)),
            frame(&read_index(2, 1, 0)),
        ];
        for (ctx, bad) in (1..).zip(&bad_frames) {
            let mut raw = handshaken(addr, 3, 1);
            raw.write_all(&frame(&read_index(3, 1, ctx))).unwrap();
            assert_eq!(rx1.recv_timeout(WAIT).unwrap(), read_index(3, 1, ctx));
            raw.write_all(bad).unwrap();
            read_until_closed(&mut raw);
            good_peer_still_heard();
        }
        assert!(rx1.try_recv().is_err(), "a bad frame was delivered");
        let rejected = 7 + bad_frames.len() as u64;
        eventually("every rejection is counted", || t1.stats().connections_rejected == rejected);
        use ::log::Level::{Error, Warn};
        assert!(logged(Error, "not a Raft peer"));
        assert!(logged(Error, "handshake checksum mismatch"));
        assert!(logged(Error, "is for node 7, but reached node 1"));
        assert!(logged(Error, "node 42 is not a configured peer of node 1"));
        assert!(logged(Error, "protocol version 3 is not supported"));
        assert!(logged(Error, "protocol version 1 is not supported"));
        assert!(logged(Error, "node 3 belongs to cluster 0000000000000005"));
        assert!(logged(Warn, "frame checksum mismatch"));
        assert!(logged(Warn, "larger than max_frame_bytes (1024)"));
        assert!(logged(Warn, "cannot encode or decode the message"));
        assert!(logged(Warn, "1 bytes follow the message"));
        assert!(logged(Warn, "a message for node 9 arrived at node 1"));
        assert!(logged(Warn, "a message from node 2 came on node 3's connection"));
    }

    /// `stop` interrupts a writer waiting for a handshake reply and a reader waiting for a
    /// hello, though both would wait a minute, closes the listener, and frees the port.
    #[test]
    fn stop_is_prompt_and_frees_the_port() {
        let silent = localhost();
        let mut config =
            TcpConfig::new(1, BTreeMap::from([(2, silent.local_addr().unwrap()), (3, stranger())]));
        config.connect_timeout = Duration::from_secs(60);
        let t1 = TcpTransport::from_listener(localhost(), config).unwrap();
        let addr = t1.local_addr();
        let (inbox, _rx) = Inbox::new();
        t1.start(inbox);

        // The writer to node 2 connects, says hello, and waits for a reply that never comes.
        t1.send(vote(1, 2, 1));
        let (mut accepted, _) = silent.accept().unwrap();
        accepted.set_read_timeout(Some(WAIT)).unwrap();
        let mut hello = [0; HELLO_BYTES];
        accepted.read_exact(&mut hello).unwrap();
        let expected = Hello { version: PROTOCOL_VERSION, from: 1, to: 2, cluster: 0 };
        assert_eq!(Hello::decode(&hello).unwrap(), expected);
        // A reader waits for a hello that never comes: accepted before the next client, which
        // the listener answers.
        let mut idle = TcpStream::connect(addr).unwrap();
        idle.set_read_timeout(Some(WAIT)).unwrap();
        drop(handshaken(addr, 3, 1));

        let started = Instant::now();
        t1.stop();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "stop took {took:?}");
        assert!(read_until_closed(&mut accepted).is_empty(), "the writer's connection stays open");
        assert!(read_until_closed(&mut idle).is_empty(), "the reader's connection stays open");
        let refused = TcpStream::connect(addr).expect_err("the listener is still open");
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        TcpListener::bind(addr).expect("the port is free again");
    }

    fn stranger() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    /// A peer that accepts the connection and then never reads: `send` still returns at once
    /// (dropping what does not fit), and `stop` interrupts the writer blocked in `write`.
    #[test]
    fn send_never_blocks_on_a_peer_that_stops_reading() {
        let stalled = localhost();
        let peers = BTreeMap::from([(2, stalled.local_addr().unwrap())]);
        let mut config = TcpConfig::new(1, peers.clone());
        config.queue_len = 8;
        config.write_timeout = Duration::from_secs(60);
        let t1 = TcpTransport::from_listener(localhost(), config).unwrap();
        let (inbox, _rx) = Inbox::new();
        t1.start(inbox);
        let peer = thread::spawn(move || {
            accept_as(&stalled, 2) // Held open, never read.
        });

        // 100 MiB, far more than the sockets' buffers hold.
        let big = append(1, 2, Bytes::from(vec![7; 256 << 10]));
        let started = Instant::now();
        for _ in 0..400 {
            t1.send(big.clone());
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "400 sends took {took:?}");
        let stream = peer.join().unwrap();
        eventually("the writer is stuck and the queue overflows", || {
            let stats = t1.stats();
            stats.messages_dropped > 0 && stats.messages_sent < 400
        });

        let started = Instant::now();
        t1.stop();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "stop took {took:?}");
        drop(stream);
    }

    // ----- Mutual TLS --------------------------------------------------------------------

    /// A throw-away certificate authority for tests.
    struct TestCa {
        key: rcgen::KeyPair,
        cert: rcgen::Certificate,
    }

    impl TestCa {
        fn new() -> TestCa {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.distinguished_name.push(rcgen::DnType::CommonName, "raftkv test CA");
            let cert = params.self_signed(&key).unwrap();
            TestCa { key, cert }
        }

        /// TLS for a node holding a certificate for `names`, trusting `trusted`.
        fn tls_with(&self, names: &[String], trusted: &TestCa) -> PeerTls {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(names.to_vec()).unwrap();
            let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
            let (cert, key) = (cert.pem(), key.serialize_pem());
            PeerTls::from_pem(cert.as_bytes(), key.as_bytes(), trusted.cert.pem().as_bytes())
                .unwrap()
        }

        /// TLS for node `id`, trusting this CA.
        fn tls(&self, id: NodeId) -> PeerTls {
            self.tls_with(&[tls::node_name(id)], self)
        }
    }

    #[test]
    fn tls_transport_passes_the_conformance_suite() {
        let ca = TestCa::new();
        raft::testing::transport_suite(|n| {
            let listeners: Vec<_> = (0..n).map(|_| localhost()).collect();
            let peers: BTreeMap<NodeId, SocketAddr> =
                (0..).zip(listeners.iter().map(|l| l.local_addr().unwrap())).collect();
            (0..)
                .zip(listeners)
                .map(|(id, l)| {
                    let mut config = TcpConfig::new(id, peers.clone());
                    config.tls = Some(ca.tls(id));
                    TcpTransport::from_listener(l, config)
                })
                .collect::<io::Result<Vec<_>>>()
                .unwrap()
        });
    }

    /// Over TLS, a node is refused when its certificate comes from another CA, names another
    /// node, or is missing (a plain hello, as an old node sends); a node with TLS reaching one
    /// without is told what is missing. Each refusal is logged and counted, and the good peers
    /// keep talking.
    #[test]
    fn tls_refuses_strangers_and_impostors_and_keeps_serving() {
        capture_logs();
        let ca = TestCa::new();
        let nodes = cluster(&[1, 2], &[(3, stranger())], |c| c.tls = Some(ca.tls(c.id)));
        let (t1, rx1) = &nodes[0];
        let (t2, _) = &nodes[1];
        let addr1 = t1.local_addr();
        let mut term = 0;
        let mut good_peer_still_heard = || {
            term += 1;
            t2.send(vote(2, 1, term));
            assert_eq!(rx1.recv_timeout(WAIT).unwrap(), vote(2, 1, term));
        };
        good_peer_still_heard();
        let node3 = |tls: Option<PeerTls>| {
            let mut config = TcpConfig::new(3, BTreeMap::from([(1, addr1)]));
            config.tls = tls;
            let t3 = TcpTransport::from_listener(localhost(), config).unwrap();
            t3.start(Inbox::new().0);
            t3.send(vote(3, 1, 1));
            t3
        };
        let mut rejected = 0;
        let mut refused = |what: &str| {
            rejected += 1;
            eventually(what, || t1.stats().connections_rejected == rejected);
        };

        // A certificate from another CA (which trusts itself only).
        let other_ca = TestCa::new();
        let t3 = node3(Some(other_ca.tls(3)));
        refused("the stranger's certificate is refused");
        good_peer_still_heard();
        drop(t3);
        // A certificate from our CA, but for node 2, presented by a node claiming to be 3.
        let t3 = node3(Some(ca.tls_with(&[tls::node_name(2)], &ca)));
        refused("the impostor is refused");
        eventually("the impostor hears why", || logged(Error, "refused this node's certificate"));
        good_peer_still_heard();
        drop(t3);
        // Plain TCP with a version 1 hello, as a node from before TLS sends.
        let old = v1_hello(3, 1);
        let mut plain = TcpStream::connect(addr1).unwrap();
        plain.set_read_timeout(Some(WAIT)).unwrap();
        plain.write_all(&old).unwrap();
        let answer = read_until_closed(&mut plain);
        assert!(!answer.starts_with(b"RAFT"), "a plain hello was answered in the clear");
        refused("the plain hello is refused");
        good_peer_still_heard();
        // A node with TLS reaching a node without: the plain node says what is missing.
        let plain_node = cluster(&[4], &[], |_| {});
        let mut config = TcpConfig::new(3, BTreeMap::from([(4, plain_node[0].0.local_addr())]));
        config.tls = Some(ca.tls(3));
        let t3 = TcpTransport::from_listener(localhost(), config).unwrap();
        t3.start(Inbox::new().0);
        t3.send(vote(3, 4, 1));
        eventually("the plain node refuses TLS", || {
            plain_node[0].0.stats().connections_rejected == 1
        });
        assert!(plain_node[0].1.try_recv().is_err());
        drop(t3);

        assert!(rx1.try_recv().is_err(), "a refused node's message was delivered");
        use ::log::Level::Error;
        assert!(logged(Error, "TLS handshake failed"));
        assert!(logged(Error, "presented a certificate that is not node 3's"));
        assert!(logged(Error, "this node has no peer TLS configured"));
    }

    /// A node reaching an address where another node answers (a stale address list) finds
    /// out from the certificate, before it sends anything.
    #[test]
    fn tls_checks_the_reached_node_is_the_one_meant() {
        capture_logs();
        let ca = TestCa::new();
        let nodes = cluster(&[2], &[], |c| c.tls = Some(ca.tls(c.id)));
        // Node 1 believes node 5 listens where node 2 does.
        let mut config = TcpConfig::new(1, BTreeMap::from([(5, nodes[0].0.local_addr())]));
        config.tls = Some(ca.tls(1));
        let t1 = TcpTransport::from_listener(localhost(), config).unwrap();
        t1.start(Inbox::new().0);
        t1.send(vote(1, 5, 1));
        eventually("node 1 says why", || {
            logged(::log::Level::Error, "no TLS connection to node 5")
                && logged(::log::Level::Error, "not valid for name \"raftkv-node-5\"")
        });
        assert!(nodes[0].1.try_recv().is_err());
    }
}
