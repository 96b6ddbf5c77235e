//! Why a call did not produce a reply.

/// The result type of every call.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a call returned without a valid reply.
///
/// The variants exist so that tests can tell what happened. Code under test must treat every
/// variant the same way a real network forces it to: *no reply arrived; the request may or may
/// not have been executed.*
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The unreliable network lost the request or the reply.
    #[error("the network dropped the request or its reply")]
    Dropped,
    /// The client end is disabled, is not connected, or its server does not exist.
    #[error("client end {end:?} cannot reach a server (disabled, unconnected or no server)")]
    Unreachable {
        /// The name of the client end that made the call.
        end: String,
    },
    /// The server was deleted or replaced, or the end disconnected, while the call was in flight.
    /// Any reply the handler produces later is discarded.
    #[error("server {server:?} went away while the call was in flight")]
    ServerDead {
        /// The name of the server the call was addressed to.
        server: String,
    },
    /// The server has no handler registered under this method name.
    #[error("server has no handler for method {method:?}")]
    UnknownMethod {
        /// The `"Service.Method"` name that was called.
        method: String,
    },
    /// A request or reply could not be encoded or decoded: the two sides disagree on a type.
    #[error("cannot {action} {what}: {detail}")]
    Codec {
        /// `"encode"` or `"decode"`.
        action: &'static str,
        /// `"request"` or `"reply"`.
        what: &'static str,
        /// The codec's own message.
        detail: String,
    },
    /// The handler panicked. The panic message was printed where the handler ran.
    #[error("the handler for {method:?} panicked")]
    HandlerPanicked {
        /// The `"Service.Method"` name that was called.
        method: String,
    },
    /// The network was dropped; no call can complete any more.
    #[error("the network has been shut down")]
    Closed,
}
