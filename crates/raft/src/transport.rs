//! How messages travel between nodes: the [`Transport`] trait, and its implementation over the
//! simulated `labrpc` network.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use labrpc::{ClientEnd, Service};
use parking_lot::Mutex;

use crate::message::{Message, MessageKind};
use crate::types::NodeId;

/// Where a transport delivers the messages addressed to its node: requests from peers and the
/// responses to the node's own requests. Cheap to clone; delivering to a stopped node does
/// nothing.
#[derive(Clone)]
pub struct Inbox {
    target: Target,
}

#[derive(Clone)]
enum Target {
    Channel(Sender<Message>),
    Handler(Arc<dyn Fn(Message) -> bool + Send + Sync>),
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.target {
            Target::Channel(_) => "channel",
            Target::Handler(_) => "handler",
        };
        f.debug_struct("Inbox").field("target", &kind).finish()
    }
}

impl Inbox {
    /// A new inbox and the receiving end the node reads from.
    pub fn new() -> (Inbox, Receiver<Message>) {
        let (sender, receiver) = crossbeam_channel::unbounded();
        (Inbox { target: Target::Channel(sender) }, receiver)
    }

    /// An inbox that hands each message to `handler` on the delivering thread; the handler
    /// returns false once the node has stopped. Used with transports whose
    /// [`inline_delivery`](Transport::inline_delivery) is true.
    pub fn with_handler(handler: impl Fn(Message) -> bool + Send + Sync + 'static) -> Inbox {
        Inbox { target: Target::Handler(Arc::new(handler)) }
    }

    /// Hands `message` to the node. Returns false if the node has stopped.
    pub fn deliver(&self, message: Message) -> bool {
        match &self.target {
            Target::Channel(sender) => sender.send(message).is_ok(),
            Target::Handler(handler) => handler(message),
        }
    }
}

/// Carries messages between Raft nodes.
///
/// # Contract
///
/// 1. [`send`](Transport::send) never blocks on the network: it queues the message or drops it.
/// 2. A message may be lost, delayed, duplicated or reordered, but never altered, and never
///    delivered to a node other than `message.to`.
/// 3. Messages for this node, and responses to its requests, go into the [`Inbox`] given to
///    [`start`](Transport::start), and nowhere else.
/// 4. After [`stop`](Transport::stop) nothing more is sent and nothing more is delivered.
pub trait Transport: Send + Sync + 'static {
    /// Called once, before any `send`, with the inbox of the node this transport serves.
    fn start(&self, inbox: Inbox);

    /// Sends `message` to `message.to`, or drops it.
    fn send(&self, message: Message);

    /// Sends each of `messages`, in order, as [`send`](Transport::send) does. A transport may
    /// write those for the same peer together; the default sends them one by one.
    fn send_all(&self, messages: Vec<Message>) {
        for message in messages {
            self.send(message);
        }
    }

    /// Stops sending and delivering, for good (the node was killed).
    fn stop(&self);

    /// Whether the node may process a message on the thread that delivers it: true if the
    /// transport calls [`Inbox::deliver`] holding nothing that [`send`](Transport::send) or
    /// [`stop`](Transport::stop) needs, and may be held up by the work (the node steps the
    /// message and sends what it causes right there, saving a hand-off to its own thread).
    /// False by default: the node then reads a channel on its own thread.
    fn inline_delivery(&self) -> bool {
        false
    }

    /// The largest encoded message the transport carries, if it has a limit. [`Node::new`]
    /// refuses a configuration whose messages could be larger
    /// ([`Config::max_message_bytes`](crate::Config::max_message_bytes)), so that no entry can
    /// be appended that no message could then carry. `None` (the default): no limit.
    ///
    /// [`Node::new`]: crate::Node::new
    fn max_message_bytes(&self) -> Option<u64> {
        None
    }
}

/// The labrpc method that carries Raft messages: a request in, its response out.
pub const LABRPC_METHOD: &str = "Raft.Message";

/// [`Transport`] over a simulated `labrpc` network.
///
/// Each request (RequestVote, AppendEntries, InstallSnapshot) is one labrpc call whose reply
/// carries the response, so RPC counts and bytes match the classic labs. The receiving side's
/// handler hands the request to its node and waits for the node's response to it. Responses are
/// matched to waiting handlers first in, first out per (peer, kind): the core answers every
/// request exactly once, in order (see [`Message`]).
#[derive(Clone)]
pub struct LabrpcTransport {
    shared: Arc<LabrpcShared>,
}

struct LabrpcShared {
    ends: BTreeMap<NodeId, ClientEnd>,
    state: Mutex<LabrpcState>,
}

#[derive(Default)]
struct LabrpcState {
    inbox: Option<Inbox>,
    stopped: bool,
    /// Handlers waiting for the node's response, per (requester, response kind), oldest first.
    waiting: HashMap<(NodeId, MessageKind), VecDeque<Sender<Message>>>,
}

impl LabrpcTransport {
    /// A transport that reaches each peer through its client end, and the service to register on
    /// this node's labrpc server (under [`LABRPC_METHOD`]).
    pub fn new(ends: BTreeMap<NodeId, ClientEnd>) -> (LabrpcTransport, Service) {
        let shared = Arc::new(LabrpcShared { ends, state: Mutex::new(LabrpcState::default()) });
        let handler_side = Arc::clone(&shared);
        let service = Service::new("Raft")
            .method("Message", move |request: Message| handler_side.handle(request));
        (LabrpcTransport { shared }, service)
    }
}

impl LabrpcShared {
    /// The server side: deliver a request to our node and wait for its response.
    fn handle(&self, request: Message) -> Option<Message> {
        if request.kind().is_one_way() {
            let inbox = self.state.lock().inbox.clone()?;
            inbox.deliver(request);
            return None;
        }
        let response_kind = request.kind().response()?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        {
            let mut state = self.state.lock();
            if state.stopped {
                return None;
            }
            let inbox = state.inbox.clone()?;
            // Queue the slot and the request under one lock, so slots and requests stay in the
            // same order.
            state.waiting.entry((request.from, response_kind)).or_default().push_back(tx);
            if !inbox.deliver(request) {
                return None;
            }
        }
        // The node answers every request; if it is killed first, the slot is dropped.
        rx.recv().ok()
    }
}

impl Transport for LabrpcTransport {
    fn start(&self, inbox: Inbox) {
        self.shared.state.lock().inbox = Some(inbox);
    }

    fn send(&self, message: Message) {
        let kind = message.kind();
        if kind.is_response() {
            // A response: hand it to the handler waiting for it, which replies over labrpc.
            let mut state = self.shared.state.lock();
            let slot = state.waiting.get_mut(&(message.to, kind)).and_then(VecDeque::pop_front);
            drop(state);
            if let Some(slot) = slot {
                let _ = slot.send(message);
            }
            return;
        }
        let state = self.shared.state.lock();
        if state.stopped {
            return;
        }
        let Some(inbox) = state.inbox.clone() else { return };
        drop(state);
        let Some(end) = self.shared.ends.get(&message.to) else { return };
        // The reply, if one arrives, is the peer's response: deliver it to our node.
        let on_reply = move |reply: labrpc::Result<Option<Message>>| {
            if let Ok(Some(response)) = reply {
                inbox.deliver(response);
            }
        };
        let _ = end.call_with(LABRPC_METHOD, &message, on_reply);
    }

    fn stop(&self) {
        let mut state = self.shared.state.lock();
        state.stopped = true;
        state.inbox = None;
        state.waiting.clear(); // Dropping the slots releases every waiting handler.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labrpc::{ClockMode, Network, Server};

    #[test]
    fn labrpc_transport_passes_the_conformance_suite() {
        let net = Network::new(ClockMode::RealTime);
        crate::testing::transport_suite(|n| {
            (0..n)
                .map(|i| {
                    let mut ends = BTreeMap::new();
                    for j in 0..n {
                        let name = format!("{i}->{j}");
                        let end = net.make_end(&name);
                        net.connect(&name, &j.to_string());
                        ends.insert(j as NodeId, end);
                    }
                    let (transport, service) = LabrpcTransport::new(ends);
                    net.add_server(&i.to_string(), Server::new().with_service(service));
                    transport
                })
                .collect()
        });
    }
}
