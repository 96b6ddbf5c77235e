//! [`raft::Transport`] over the simulated `labrpc` network: [`LabrpcTransport`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use crossbeam_channel::Sender;
use labrpc::{ClientEnd, Service};
use parking_lot::Mutex;
use raft::{Inbox, Message, MessageKind, NodeId, Transport};

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
        raft::testing::transport_suite(|n| {
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
