//! # flowgate-testkit
//!
//! An in-process broker with JetStream's delivery semantics, behind flowgate's
//! [`Transport`](flowgate::Transport) trait: run an [`App`](flowgate::App) in
//! a unit test, without a server, and check what the broker saw.
//!
//! - A channel is a stream: messages get sequences from 1, a message id is
//!   published once ([`StoredMessage`], [`InMemory::channel_messages`]).
//! - A `durable` or `queue` subscriber binds a consumer the broker keeps, so
//!   an app restarted in the same process resumes where it stopped, and apps
//!   bound to the same consumer share its messages. Other subscribers get an
//!   ephemeral consumer that ends with their subscription.
//! - `max_in_flight` bounds unsettled messages per consumer; `ack_wait`,
//!   nak delays, `max_deliver` and start positions behave as on JetStream,
//!   on [`tokio::time`], so `#[tokio::test(start_paused = true)]` skips the
//!   waiting.
//! - [`InMemory::wait_idle`] waits until every live consumer has settled
//!   everything; [`InMemory::consumer_info`] tells what each message went
//!   through.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//!
//! use flowgate::{App, Event, Publisher, StartPosition, Subscriber};
//! use flowgate_testkit::InMemory;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct OrderPlaced {
//!     id: u64,
//! }
//!
//! // What `#[derive(flowgate::Event)]` with `#[event(channel = "orders.placed")]` writes.
//! impl Event for OrderPlaced {
//!     const CHANNEL: Option<&'static str> = Some("orders.placed");
//!     fn encode(&self) -> Result<bytes::Bytes, flowgate::EncodeError> {
//!         flowgate::codec::json::encode(self)
//!     }
//!     fn decode(payload: &[u8]) -> Result<Self, flowgate::DecodeError> {
//!         flowgate::codec::json::decode(payload)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = InMemory::new();
//! let publisher = Publisher::new(broker.clone());
//! for id in 1..=3 {
//!     publisher.publish(&OrderPlaced { id }).await?;
//! }
//!
//! let billed = Arc::new(AtomicU64::new(0));
//! let total = billed.clone();
//! let bill = move |order: OrderPlaced| {
//!     let total = total.clone();
//!     async move {
//!         total.fetch_add(order.id, Ordering::SeqCst);
//!         Ok::<_, std::io::Error>(())
//!     }
//! };
//! let app = App::new()
//!     .subscriber(
//!         Subscriber::new("orders.placed", bill)
//!             .durable("billing")
//!             .start(StartPosition::All),
//!     )
//!     .start(broker.clone())
//!     .await?;
//!
//! broker.wait_idle().await;
//! assert_eq!(billed.load(Ordering::SeqCst), 1 + 2 + 3);
//! let billing = broker.consumer_info("orders.placed", "billing").expect("durable");
//! assert_eq!(billing.acked, vec![1, 2, 3]);
//! assert_eq!(billing.ack_floor, 3);
//! app.shutdown().await?;
//! # Ok(()) }
//! ```

mod acker;
mod broker;
mod channel;
mod consumer;
mod inspect;
mod subscription;
mod transport;

pub use acker::InMemoryAcker;
pub use broker::InMemory;
pub use channel::{stream_name, StoredMessage, MESSAGE_ID_HEADER};
pub use inspect::ConsumerInfo;
pub use subscription::InMemorySubscription;
pub use transport::InMemoryPendingAck;
