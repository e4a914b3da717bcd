//! What can go wrong between the client and a NATS Streaming server.

use std::time::Duration;

/// A NATS Streaming protocol failure. Carried as the source of the runtime's
/// [`Error`](crate::Error) and [`PublishError`](crate::PublishError) values.
///
/// ```
/// let err = flowgate::transport::stan::StanError::InvalidClientId("a.b".into());
/// assert!(err.to_string().contains("letters, digits"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StanError {
    /// The client id has characters the server refuses.
    #[error("client id `{0}` is not valid: use letters, digits, `-` and `_` only (no dots, no spaces), and at least one character")]
    InvalidClientId(String),
    /// Nobody listens on the discover subject: the NATS server said at once
    /// that the connect request has no responders.
    #[error("no NATS Streaming server listens on `{subject}` (the NATS server reports no responders): check that nats-streaming-server runs and is connected to this NATS server, and that the cluster id (`-cid`) and discover prefix match")]
    NoResponders {
        /// The discover subject the request went to.
        subject: String,
    },
    /// A streaming server listens but did not answer the connect request in time.
    #[error("no NATS Streaming server answered on `{subject}` within {wait:?}: the server may be overloaded or still starting; retry, or raise the connect wait")]
    ConnectTimeout {
        /// The discover subject the request went to.
        subject: String,
        /// How long the client waited.
        wait: Duration,
    },
    /// The server refused the connection (for example: client id in use).
    #[error("the NATS Streaming server refused client `{client_id}`: {reason}")]
    ConnectRefused {
        /// The client id.
        client_id: String,
        /// The server's error string.
        reason: String,
    },
    /// Another live client registered with this client's id, and this one
    /// stopped (see [`StanOptions::keep_retrying_when_replaced`](super::StanOptions::keep_retrying_when_replaced)).
    #[error("NATS Streaming client `{client_id}` was replaced: another client registered with the same id and is alive, so this client stopped and its subscriptions ended; give each instance its own client id, or set keep_retrying_when_replaced to wait until the id is free")]
    Replaced {
        /// The client id.
        client_id: String,
    },
    /// The client is not registered with the server right now.
    #[error("not registered with the NATS Streaming server (the connection was lost or closed); retry once it re-registers")]
    NotRegistered,
    /// The server refused or did not answer a subscription request.
    #[error("subscription request refused: {0}")]
    SubscribeRefused(String),
    /// The server did not acknowledge a published message in time.
    #[error("no publish ack within {0:?}: the message may or may not be stored")]
    PubAckTimeout(Duration),
    /// The server acknowledged a published message with an error.
    #[error("the server refused the message: {0}")]
    PubAckError(String),
    /// The registration ended before the server acknowledged the message.
    #[error("the connection to the NATS Streaming server was lost before the publish ack came: the message may or may not be stored")]
    ConnectionLost,
    /// A request to the server got no (valid) answer.
    #[error("{what} failed: {reason}")]
    Request {
        /// Which request.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

impl StanError {
    /// Whether the server refused a registration because a live client
    /// holds the id ("stan: clientID already registered").
    pub(crate) fn is_id_in_use(&self) -> bool {
        matches!(self, StanError::ConnectRefused { reason, .. } if reason.contains("already registered"))
    }
}
