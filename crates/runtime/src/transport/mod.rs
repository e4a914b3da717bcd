//! The transport contract: the one trait every broker binding implements.
//!
//! flowgate ships [`JetStream`](crate::JetStream); `flowgate-testkit` ships an
//! in-memory broker behind the same trait. Handlers never see the difference.

mod attempt_store;
mod connection;
mod delivery;
mod drift;
pub mod jetstream;
mod seeds;
mod spec;
#[cfg(feature = "stan")]
pub mod stan;
mod stream;

use std::future::Future;

use bytes::Bytes;

pub use attempt_store::{AttemptFuture, AttemptStore};
pub use connection::ConnectionState;
pub use delivery::{AckError, Acker, Delivery, Metadata};
pub use drift::DriftCheck;
pub use spec::{AckMode, StartPosition, SubscriptionSpec};
pub use stream::{
    AckPendingFuture, AckPendingProbe, BacklogFuture, BacklogProbe, ConsumerBacklog,
    ConsumerProgress, DeliveryStream,
};

use crate::{Error, Headers};

/// Connects a NATS client to `urls` (one URL or a comma-separated seed
/// list). Credentials in the URLs go into the options; errors and logs show
/// the URLs without them.
pub(crate) async fn connect_nats(
    urls: &str,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, Error> {
    let seeds = seeds::Seeds::parse(urls)?;
    let options = seeds.apply(options);
    options
        .connect(seeds.urls.as_slice())
        .await
        .map_err(|source| Error::Connect {
            url: seeds.shown(),
            source: Box::new(source),
        })
}

/// A message to publish: subject, payload, headers and an optional id the
/// broker uses to drop duplicates.
///
/// ```
/// let msg = flowgate::OutgoingMessage::new("orders.placed", "{}").with_message_id("order-7");
/// assert_eq!(msg.message_id.as_deref(), Some("order-7"));
/// ```
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// The subject (channel) to publish on.
    pub subject: String,
    /// The encoded payload.
    pub payload: Bytes,
    /// Headers to send along.
    pub headers: Option<Headers>,
    /// An id for server-side de-duplication (`Nats-Msg-Id` on JetStream).
    pub message_id: Option<String>,
}

impl OutgoingMessage {
    /// A message with no headers and no id.
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            subject: subject.into(),
            payload: payload.into(),
            headers: None,
            message_id: None,
        }
    }

    /// Sets the de-duplication id.
    pub fn with_message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Sets the headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = Some(headers);
        self
    }
}

/// The broker's receipt for a published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAck {
    /// The stream that stored the message.
    pub stream: String,
    /// Its sequence in that stream.
    pub sequence: u64,
    /// True when the broker had the message id already and dropped this copy.
    pub duplicate: bool,
}

/// A broker binding: subscribe with a spec, publish bytes, flush and close.
///
/// Implemented by [`JetStream`](crate::JetStream) and by the in-memory broker of
/// `flowgate-testkit`. The same conformance tests run against every implementation.
pub trait Transport: Clone + Send + Sync + 'static {
    /// Settles deliveries of this transport.
    type Acker: Acker;
    /// A live subscription: deliveries until it is stopped or dropped. It
    /// re-subscribes on its own after connection loss.
    type Subscription: DeliveryStream<Self::Acker>;
    /// Resolves to the broker's receipt of one publish. `Unpin`, so a
    /// publish window keeps its acks in a plain queue.
    type PendingAck: Future<Output = Result<PublishAck, crate::PublishError>>
        + Send
        + Unpin
        + 'static;

    /// Subscribes according to `spec`, creating or binding what the broker needs.
    fn subscribe(
        &self,
        spec: &SubscriptionSpec,
    ) -> impl Future<Output = Result<Self::Subscription, Error>> + Send;

    /// Sends `message`; the returned future resolves when the broker has stored it.
    fn publish(
        &self,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<Self::PendingAck, crate::PublishError>> + Send;

    /// Waits until everything sent so far (acks included) has left the client.
    fn flush(&self) -> impl Future<Output = Result<(), Error>> + Send;

    /// Whether [`Acker::in_progress`] restarts the broker's ack wait. Where it
    /// does not, a handler's retries must fit in one ack wait, and the app
    /// refuses to start when they cannot.
    fn supports_progress(&self) -> bool {
        true
    }

    /// Whether [`AckMode::Coalesced`] works: one ack settles every message
    /// before it.
    fn supports_coalesced_acks(&self) -> bool {
        false
    }

    /// Where the attempts made on `spec`'s messages are kept between
    /// deliveries, so the failure budget holds across restarts and instances.
    /// `None` where the broker keeps nothing: the budget is then counted per
    /// process (the broker's delivery count, plus what this process made).
    fn attempt_store(
        &self,
        spec: &SubscriptionSpec,
    ) -> impl Future<Output = Result<Option<std::sync::Arc<dyn AttemptStore>>, Error>> + Send {
        let _ = spec;
        async { Ok(None) }
    }

    /// Whether the connection to the broker is up now, for health checks
    /// ([`RunningApp::health`](crate::RunningApp::health)). Cheap: called on
    /// every health request. [`ConnectionState::Unknown`] where the
    /// transport cannot tell.
    fn connection(&self) -> ConnectionState {
        ConnectionState::Unknown
    }

    /// Messages of `spec`'s consumer that the broker stopped delivering after
    /// `max_deliver` deliveries that nobody settled (a hung handler, a crashed
    /// app), so the runtime can dead-letter them too. `None` where the broker
    /// does not tell.
    fn exhausted(
        &self,
        spec: &SubscriptionSpec,
    ) -> impl Future<Output = Result<Option<ExhaustedStream>, Error>> + Send {
        let _ = spec;
        async { Ok(None) }
    }
}

/// A message the broker gave up on: its payload, metadata and deliveries made.
#[derive(Debug, Clone)]
pub struct Exhausted {
    /// The raw payload.
    pub payload: Bytes,
    /// What the broker says about it (the delivery count is the deliveries made).
    pub metadata: Metadata,
}

/// The messages a broker gave up on, for one consumer.
pub type ExhaustedStream = futures::stream::BoxStream<'static, Exhausted>;
