//! How messages travel between nodes: the [`Transport`] trait and the [`Inbox`] it delivers to.
//! The implementations live outside the core: `raft-tcp` for real networks, and the
//! never-published `testkit` crate's labrpc adapter for the simulated network.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::message::Message;

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
    /// A new inbox and the receiving end the node reads from. The receiver is
    /// `crossbeam_channel`'s (re-exported as [`crate::crossbeam_channel`]) so that a driver can
    /// `select!` over it with its ticker and its proposals, as [`Node`](crate::Node) does.
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
