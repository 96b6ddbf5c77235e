//! Services, their typed handlers, and the servers that host them.

use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::{Error, Result};

/// A type-erased handler: request bytes in, reply bytes out.
type Handler = Box<dyn Fn(&[u8]) -> Result<Vec<u8>> + Send + Sync>;

/// A named group of methods, such as `Raft` with `RequestVote` and `AppendEntries`.
///
/// Each method is a plain function from a request type to a reply type; the network decodes the
/// request bytes before calling it and encodes the reply after. Clients address a method as
/// `"Service.Method"`.
///
/// ```
/// use labrpc::Service;
///
/// let echo = Service::new("Echo")
///     .method("Upper", |s: String| s.to_uppercase())
///     .method("Len", |s: String| s.len() as u64);
/// assert_eq!(echo.name(), "Echo");
/// ```
pub struct Service {
    name: String,
    methods: Vec<(String, Handler)>,
}

impl Service {
    /// Starts an empty service called `name`.
    pub fn new(name: impl Into<String>) -> Service {
        Service { name: name.into(), methods: Vec::new() }
    }

    /// The service's name, the part of a method name before the dot.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds the method `name`, answered by `handler`.
    ///
    /// The handler runs on a network thread in real time (it may block; other calls carry on)
    /// and on the simulation thread in virtual time (it must not block).
    ///
    /// # Panics
    /// If the service already has a method called `name`.
    pub fn method<Req, Rep, F>(mut self, name: &str, handler: F) -> Service
    where
        Req: DeserializeOwned,
        Rep: Serialize,
        F: Fn(Req) -> Rep + Send + Sync + 'static,
    {
        assert!(
            self.methods.iter().all(|(existing, _)| existing != name),
            "service {} already has a method called {name}",
            self.name
        );
        let erased: Handler = Box::new(move |request: &[u8]| {
            let request: Req = codec::decode(request, "request")?;
            codec::encode(&handler(request), "reply")
        });
        self.methods.push((name.to_owned(), erased));
        self
    }
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let methods: Vec<&str> = self.methods.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Service").field("name", &self.name).field("methods", &methods).finish()
    }
}

/// A set of services sharing one network address, as one node hosts both `Raft` and `KVServer`.
///
/// Build it, then hand it to [`Network::add_server`](crate::Network::add_server). A server added
/// under a name that is already taken replaces the old one, and calls in flight to the old one
/// fail: this is how a test restarts a crashed node.
#[derive(Debug, Default)]
pub struct Server {
    services: Vec<Service>,
}

impl Server {
    /// An empty server.
    pub fn new() -> Server {
        Server::default()
    }

    /// Adds a service; its methods become callable as `"Service.Method"`.
    ///
    /// # Panics
    /// If a service with the same name was already added.
    pub fn add_service(&mut self, service: Service) -> &mut Server {
        assert!(
            self.services.iter().all(|s| s.name != service.name),
            "server already hosts a service called {}",
            service.name
        );
        self.services.push(service);
        self
    }

    /// Adds a service, builder style.
    #[must_use]
    pub fn with_service(mut self, service: Service) -> Server {
        self.add_service(service);
        self
    }

    /// Freezes the server into the form the network dispatches to.
    pub(crate) fn into_hosted(self, id: u64) -> HostedServer {
        let mut handlers = HashMap::new();
        for service in self.services {
            for (method, handler) in service.methods {
                handlers.insert(format!("{}.{}", service.name, method), handler);
            }
        }
        HostedServer { id, handlers, count: AtomicU64::new(0) }
    }
}

/// A server as the network holds it: its handlers by full method name and its RPC counter.
pub(crate) struct HostedServer {
    /// Unique within one network; tells a restarted server from the instance it replaced.
    pub(crate) id: u64,
    handlers: HashMap<String, Handler>,
    count: AtomicU64,
}

impl HostedServer {
    /// Counts one delivered RPC.
    pub(crate) fn count_delivery(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// RPCs delivered to this server's handlers so far.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Runs the handler for `method`.
    ///
    /// With `catch_panics` (real time, where the handler runs on a network thread), a handler
    /// that panics is reported to its caller as an error rather than leaving it waiting forever.
    /// Without it (virtual time), the panic unwinds into the driving thread, the test's own.
    pub(crate) fn dispatch(
        &self,
        method: &str,
        request: &[u8],
        catch_panics: bool,
    ) -> Result<Vec<u8>> {
        let handler = self
            .handlers
            .get(method)
            .ok_or_else(|| Error::UnknownMethod { method: method.to_owned() })?;
        if !catch_panics {
            return handler(request);
        }
        catch_unwind(AssertUnwindSafe(|| handler(request)))
            .unwrap_or_else(|_| Err(Error::HandlerPanicked { method: method.to_owned() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosted() -> HostedServer {
        Server::new()
            .with_service(Service::new("Math").method("Double", |x: u64| x * 2))
            .with_service(Service::new("Oops").method("Panic", |_: ()| -> u8 { panic!("boom") }))
            .into_hosted(1)
    }

    #[test]
    fn dispatches_by_full_name() {
        let server = hosted();
        let reply =
            server.dispatch("Math.Double", &codec::encode(&21u64, "r").unwrap(), true).unwrap();
        assert_eq!(codec::decode::<u64>(&reply, "r").unwrap(), 42);
        assert!(matches!(
            server.dispatch("Math.Triple", &[], true),
            Err(Error::UnknownMethod { method }) if method == "Math.Triple"
        ));
    }

    #[test]
    fn panicking_handler_becomes_an_error() {
        let err = hosted().dispatch("Oops.Panic", &[], true).unwrap_err();
        assert_eq!(err, Error::HandlerPanicked { method: "Oops.Panic".into() });
    }

    #[test]
    #[should_panic(expected = "boom")]
    fn uncaught_panic_reaches_the_caller() {
        let _ = hosted().dispatch("Oops.Panic", &[], false);
    }

    #[test]
    #[should_panic(expected = "already has a method called Double")]
    fn duplicate_method_panics() {
        let _ = Service::new("Math").method("Double", |x: u64| x).method("Double", |x: u64| x);
    }

    #[test]
    #[should_panic(expected = "already hosts a service called Math")]
    fn duplicate_service_panics() {
        let _ = Server::new().with_service(Service::new("Math")).with_service(Service::new("Math"));
    }

    #[test]
    fn debug_lists_methods() {
        let svc = Service::new("Math").method("Double", |x: u64| x);
        assert_eq!(format!("{svc:?}"), r#"Service { name: "Math", methods: ["Double"] }"#);
    }
}
