//! # flowgate
//!
//! Typed event processing on NATS. Write plain async functions over typed
//! payloads; flowgate subscribes, decodes, bounds concurrency, runs the tower
//! middleware stack, acks on `Ok`, naks on `Err`, terminates what cannot
//! decode, re-subscribes after connection loss and drains on shutdown.
//!
//! ```no_run
//! #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
//! #[event(channel = "orders.placed")] // codec = "json" (default) | "protobuf"
//! struct OrderPlaced {
//!     id: u64,
//!     total_cents: i64,
//! }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("card declined")]
//! struct BillingError;
//!
//! #[flowgate::subscriber(durable = "billing", max_in_flight = 32)]
//! async fn bill(order: OrderPlaced) -> Result<(), BillingError> {
//!     // Ok => acked; Err => retried with backoff, dead-lettered when the
//!     // budget is spent; a payload that does not decode => dead-lettered.
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), flowgate::Error> {
//!     let nats = flowgate::JetStream::connect("nats://127.0.0.1:4222").await?;
//!     flowgate::Publisher::new(nats.clone())
//!         .publish(&OrderPlaced { id: 1, total_cents: 1250 })
//!         .await
//!         .expect("published");
//!     flowgate::App::new().discover().run(nats).await
//! }
//! ```
//!
//! ## The path of one message
//!
//! 1. A [`Transport`] ([`JetStream`], or the in-memory broker of
//!    `flowgate-testkit`) yields a [`Delivery`] for a [`SubscriptionSpec`].
//! 2. The dispatcher takes a permit from the subscriber's `max_in_flight`
//!    semaphore and spawns one task for the message.
//! 3. The task runs the [`Request`] through the tower stack, in the
//!    delivery's `flowgate.message` span: the app's layers, the subscriber's
//!    layers, then flowgate's [`middleware`]: retry (in-process retries with
//!    backoff), and for each attempt, in its `flowgate.attempt` span, the
//!    app's and the subscriber's attempt layers, an optional timeout,
//!    metrics; then the handler, which decodes the payload
//!    ([`Event::decode`]) and calls the fn. While it runs long, progress acks
//!    keep the broker from redelivering. With the `opentelemetry` feature
//!    the message span continues the publisher's trace ([`trace_context`]).
//! 4. The outcome settles the message: `Ok` acks; a retryable failure (an
//!    error, a panic, a timeout) naks with the backoff delay while the failure
//!    budget (`max_deliver`) lasts; a spent budget, a permanent [`Failure`] or a
//!    [`DecodeError`] goes to the [`dead_letter`] subject, then the original is
//!    terminated.
//!
//! Handlers that take [`Message<T>`] read the delivery metadata; with
//! `ack = "manual"` they settle the message themselves. Beside the payload a
//! handler takes [`extract`]ors: the app's [`State`], a publisher, the
//! subject, the attempt, a type of its own. What it returns in `Ok` besides
//! `()` is published before the input is acked ([`output`]).
//!
//! Around all of it, an app's [`App::on_start`] hooks run after its
//! configuration checks and before it subscribes, and its
//! [`App::on_shutdown`] hooks after [`RunningApp::shutdown`] has drained it
//! (see [`App::start`] for the whole order).
//!
//! ## Cargo features
//!
//! - `stan` (on by default): the NATS Streaming transport,
//!   `flowgate::NatsStreaming`. A JetStream-only app leaves it out with
//!   `flowgate = { version = "0.1", default-features = false }` and builds
//!   neither the STAN code nor its protobuf code generation (prost-build,
//!   protox).
//! - `opentelemetry`: W3C trace context across the broker ([`trace_context`]).
//! - `schemars`: JSON Schemas of payload types that derive
//!   `schemars::JsonSchema` (schemars 1.x) in the AsyncAPI document of
//!   [`App::asyncapi`] (see [`asyncapi`]).

mod app;
pub mod asyncapi;
mod attempt;
mod attempts;
mod channel;
mod coalesce;
pub mod codec;
pub mod dead_letter;
mod dispatch;
pub mod dlq;
mod error;
mod event;
pub mod extract;
mod failure;
mod handler;
mod handler_slots;
pub mod health;
mod in_flight;
mod lifespan;
mod log_budget;
mod message;
pub mod middleware;
pub mod output;
mod parked;
mod pattern;
mod publisher;
mod request;
mod running_app;
mod settings;
mod settle;
mod stack;
mod startup;
mod subscriber;
pub mod trace_context;
pub mod transport;
mod watch;

pub use app::App;
pub use channel::{
    stream_name, validate_channel, validate_channel_pattern, validate_consumer_name, NameError,
};
pub use dead_letter::DeadLetter;
pub use error::{BoxError, Error, HandlerError, HookFailure, PublishError, Unstored};
pub use event::{DecodeError, EncodeError, Event};
pub use extract::{FromRequest, State};
pub use failure::{Failure, FailureKind};
/// ```
/// #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// #[event(channel = "orders.placed")]
/// struct OrderPlaced {
///     id: u64,
/// }
///
/// #[derive(Debug)]
/// struct BillingError;
/// impl std::fmt::Display for BillingError {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("card declined")
///     }
/// }
/// impl std::error::Error for BillingError {}
///
/// #[flowgate::subscriber(durable = "billing", max_in_flight = 32, ack_wait = "1m")]
/// async fn bill(order: OrderPlaced) -> Result<(), BillingError> {
///     println!("billing order {}", order.id);
///     Ok(())
/// }
///
/// let subscriber = bill::subscriber();
/// assert_eq!(subscriber.name(), "bill");
/// assert_eq!(subscriber.spec().channel, "orders.placed");
/// assert_eq!(subscriber.spec().durable.as_deref(), Some("billing"));
/// assert_eq!(subscriber.spec().ack_wait, std::time::Duration::from_secs(60));
/// assert_eq!(subscriber.dead_letter_subject().as_deref(), Some("dlq.orders.placed"));
///
/// // The failure keys: the budget, a bound on each attempt, where the
/// // messages that cannot be handled go, and coalesced acks.
/// #[flowgate::subscriber(
///     channel = "orders.placed",
///     durable = "invoicing",
///     start = "all",
///     max_deliver = 5,
///     timeout = "10s",
///     dead_letter = "orders.failed",
///     ack = "coalesced"
/// )]
/// async fn invoice(order: OrderPlaced) -> Result<(), flowgate::Failure> {
///     Ok(())
/// }
///
/// let subscriber = invoice::subscriber();
/// assert_eq!(subscriber.spec().max_deliver, Some(5));
/// assert_eq!(subscriber.spec().ack, flowgate::AckMode::Coalesced);
/// assert_eq!(subscriber.dead_letter_subject().as_deref(), Some("orders.failed"));
/// ```
pub use flowgate_macros::subscriber;
/// ```
/// use flowgate::Event;
///
/// #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// #[event(channel = "orders.placed")]
/// struct OrderPlaced {
///     id: u64,
///     total_cents: i64,
/// }
///
/// #[derive(Clone, PartialEq, prost::Message, flowgate::Event)]
/// #[event(codec = "protobuf")]
/// struct Shipped {
///     #[prost(uint64, tag = "1")]
///     order_id: u64,
/// }
///
/// assert_eq!(OrderPlaced::CHANNEL, Some("orders.placed"));
/// assert_eq!(Shipped::CHANNEL, None);
/// let bytes = Shipped { order_id: 7 }.encode().unwrap();
/// assert_eq!(Shipped::decode(&bytes).unwrap().order_id, 7);
/// ```
pub use flowgate_macros::Event;
pub use handler::{Handler, HandlerFuture, HandlerService};
pub use health::{Health, HealthPolicy, HealthProbe, SubscriptionHealth};
pub use message::Message;
pub use output::Output;
pub use pattern::{is_pattern, pattern_covers, patterns_overlap, subject_matches};
pub use publisher::{PublishOptions, PublishWindow, Publisher};
pub use request::{ManualAck, Request};
pub use running_app::{shutdown_signal, RunningApp};
pub use settings::SubscriberSettings;
pub use subscriber::{BoxHandlerService, Subscriber};
pub use transport::jetstream::{
    ConfigCheck, ConsumerCounts, ConsumerReport, JetStream, JetStreamSettings, ServerFeature,
    ServerTooOld, ServerVersion,
};
#[cfg(feature = "stan")]
pub use transport::stan::{NatsStreaming, StanOptions};
pub use transport::{
    AckError, AckMode, AckPendingFuture, AckPendingProbe, Acker, AttemptFuture, AttemptStore,
    BacklogFuture, BacklogProbe, ConnectionState, ConsumerBacklog, ConsumerProgress, Delivery,
    DeliveryStream, Exhausted, ExhaustedStream, Metadata, OutgoingMessage, PublishAck,
    StartPosition, SubscriptionSpec, Transport,
};

/// Message headers (the NATS header map).
pub type Headers = async_nats::HeaderMap;

/// What generated code reaches for. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use crate::asyncapi::__private as asyncapi;
    pub use crate::asyncapi::EventSchema;
    pub use crate::codec::{json, protobuf};

    /// Compiles only for a type a handler can return in `Ok`.
    pub const fn is_output<O: crate::Output>() {}

    pub use crate::extract::payload_channel;
    pub use crate::subscriber::SUBSCRIBERS;
    pub use bytes::Bytes;
    pub use linkme;
}
