//! The key-value service over the simulated `labrpc` network: [`LabrpcServers`] for the clerk,
//! [`service`] for each replica, and [`state_machine`], which picks the replicas' state machine.

use kvclient::Servers;
use kvproto::proto::{self, Reply, Request};
use kvserver::{KvServer, KvStateMachine, MemStateMachine, StateMachine};
use labrpc::{ClientEnd, Service};

/// Servers on the simulated network: one [`ClientEnd`] per server, method `KVServer.Request`.
#[derive(Debug)]
pub struct LabrpcServers {
    ends: Vec<ClientEnd>,
}

impl LabrpcServers {
    /// The servers reached through `ends`, in server order.
    pub fn new(ends: Vec<ClientEnd>) -> LabrpcServers {
        LabrpcServers { ends }
    }
}

impl Servers for LabrpcServers {
    fn count(&self) -> usize {
        self.ends.len()
    }

    fn call(&self, server: usize, request: &Request) -> Option<Reply> {
        self.ends[server].call(proto::METHOD, request).ok()
    }
}

/// The labrpc service that answers [`proto::METHOD`] with [`KvServer::handle`]: register it on
/// the replica's labrpc server.
pub fn service(server: &KvServer) -> Service {
    let server = server.clone();
    let (service, method) = proto::METHOD.split_once('.').expect("METHOD is Service.Method");
    Service::new(service).method(method, move |request: Request| server.handle(request))
}

/// The environment variable that picks the state machine the KV tests run on: `lsm` (the
/// default, [`KvStateMachine`]) or `memory` ([`MemStateMachine`]). `cargo xtask test-all` runs
/// the classic KV suites and the KV simulation once with each.
pub const STATE_MACHINE_VAR: &str = "RAFTKV_STATE_MACHINE";

/// A replica's state machine, of the kind [`STATE_MACHINE_VAR`] names: over the database
/// `open_lsm` opens, or in memory (which keeps nothing across a restart, so the replica starts
/// again from Raft's snapshot and log).
///
/// # Panics
/// If the variable names another kind, or the database cannot be opened.
pub fn state_machine(open_lsm: impl FnOnce() -> lsm::Db) -> Box<dyn StateMachine> {
    match std::env::var(STATE_MACHINE_VAR).as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("lsm") => {
            Box::new(KvStateMachine::new(open_lsm()).expect("read the applied index"))
        }
        Ok("memory") => Box::new(MemStateMachine::new()),
        other => panic!("{STATE_MACHINE_VAR}={other:?}: expected `lsm` or `memory`"),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kvclient::Clerk;
    use kvproto::proto::Outcome;
    use labrpc::{ClockMode, Network, Server};

    use super::*;

    #[test]
    fn labrpc_servers_carry_requests_over_the_network() {
        let net = Network::new(ClockMode::RealTime);
        let service = Service::new("KVServer").method("Request", |r: Request| {
            Reply::Done(Outcome::Value(Some(Bytes::from(format!("seq {}", r.seq)))))
        });
        net.add_server("s0", Server::new().with_service(service));
        let end = net.make_end("c->s0");
        net.connect("c->s0", "s0");
        net.enable("c->s0", true);
        let servers = LabrpcServers::new(vec![end]);
        assert_eq!(servers.count(), 1);
        let mut clerk = Clerk::new(servers);
        assert_eq!(clerk.get("x").as_deref(), Some(&b"seq 1"[..]));
    }
}
