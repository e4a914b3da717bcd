//! # flowgate-testkit
//!
//! An in-process broker with JetStream's delivery semantics, behind flowgate's
//! [`Transport`](flowgate::Transport) trait: run your real subscribers, with
//! their real middleware, in a unit test without a server, and check what
//! the broker saw.
//!
//! ## Testing your handlers
//!
//! Add the testkit as a dev-dependency (`flowgate-testkit = "0.1"`, plus
//! `tokio` with the `test-util` feature), then test at one of two levels.
//!
//! **One handler, one event**: [`call`] delivers an event to a subscriber
//! through its tower stack and tells how the runtime settled it.
//!
//! **A whole app**: start an [`App`](flowgate::App) on an [`InMemory`]
//! broker, publish, [`wait_idle`](InMemory::wait_idle), then read the
//! channel's [settlement log](InMemory::settlements) (acked, nak'd,
//! terminated, expired, dead-lettered, with delivery counts) and what the
//! handlers [published](InMemory::published).
//!
//! Run tests with `#[tokio::test(start_paused = true)]`: ack waits, nak
//! delays and retries run on tokio's clock, which then jumps ahead whenever
//! every task waits, so "redelivered after a 30 s ack wait" takes
//! microseconds. Never sleep to wait for the app: `wait_idle` returns once
//! every live consumer has delivered everything and nothing is in flight or
//! waiting for a redelivery; [`wait_until`](InMemory::wait_until) waits for
//! any condition on the broker.
//!
//! ```
//! use std::time::Duration;
//!
//! use flowgate::{App, Failure};
//! use flowgate_testkit::{call, InMemory, Outcome};
//!
//! #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, flowgate::Event)]
//! #[event(channel = "orders.placed")]
//! struct OrderPlaced {
//!     id: u64,
//!     total_cents: i64,
//! }
//!
//! #[flowgate::subscriber(durable = "billing", start = "all")]
//! async fn bill(order: OrderPlaced) -> Result<(), Failure> {
//!     if order.total_cents < 0 {
//!         return Err(Failure::permanent("negative total"));
//!     }
//!     if order.total_cents == 0 {
//!         return Err(Failure::retry_after(Duration::from_secs(60), "not priced yet"));
//!     }
//!     Ok(())
//! }
//!
//! #[tokio::test(start_paused = true)]
//! # async fn fake() {}
//! async fn bill_settles_each_kind_of_order() {
//!     let order = |total_cents| OrderPlaced { id: 1, total_cents };
//!     assert_eq!(call(bill::subscriber(), &order(1250)).await, Outcome::Acked);
//!     assert_eq!(
//!         call(bill::subscriber(), &order(0)).await,
//!         Outcome::Nakked { delay: Some(Duration::from_secs(60)) }
//!     );
//!     assert_eq!(call(bill::subscriber(), &order(-1)).await, Outcome::DeadLettered);
//! }
//!
//! #[tokio::test(start_paused = true)]
//! # async fn fake2() {}
//! async fn the_app_bills_good_orders_and_dead_letters_bad_ones() {
//!     let broker = InMemory::new();
//!     broker.publish_event(&OrderPlaced { id: 1, total_cents: 1250 }).await.unwrap();
//!     broker.publish_event(&OrderPlaced { id: 2, total_cents: -1 }).await.unwrap();
//!     let app = App::new()
//!         .subscriber(bill::subscriber())
//!         .start(broker.clone())
//!         .await
//!         .unwrap();
//!
//!     broker.wait_idle().await; // no sleeps: returns once both are settled
//!     let log = broker.settlements("orders.placed");
//!     assert_eq!(log.acked(), vec![1]);
//!     assert_eq!(log.terminated(), vec![2]);
//!     assert_eq!(log.of(2)[0].delivery_count, 1);
//!     // The dead letter, as the runtime published it:
//!     let dead: Vec<OrderPlaced> = broker.published_on("dlq.orders.placed").unwrap();
//!     assert_eq!(dead, vec![OrderPlaced { id: 2, total_cents: -1 }]);
//!     app.shutdown().await.unwrap();
//! }
//! # fn main() {
//! #     let rt = tokio::runtime::Builder::new_current_thread()
//! #         .enable_all().start_paused(true).build().unwrap();
//! #     rt.block_on(bill_settles_each_kind_of_order());
//! #     rt.block_on(the_app_bills_good_orders_and_dead_letters_bad_ones());
//! # }
//! ```
//!
//! ## The broker
//!
//! - A channel is a stream: messages get sequences from 1, a message id is
//!   published once ([`StoredMessage`], [`InMemory::channel_messages`]).
//! - A `durable` or `queue` subscriber binds a consumer the broker keeps, so
//!   an app restarted in the same process resumes where it stopped, and apps
//!   bound to the same consumer share its messages. Other subscribers get an
//!   ephemeral consumer that ends with their subscription.
//! - `max_in_flight` bounds unsettled messages per consumer (twice that with
//!   `ack = "coalesced"`, as on JetStream); `ack_wait`, nak delays,
//!   in-progress acks, `max_deliver` and start positions behave as on
//!   JetStream, on [`tokio::time`]. Every delivery carries the consumer's
//!   delivery number ([`Metadata::consumer_sequence`](flowgate::Metadata::consumer_sequence)).
//! - `ack = "coalesced"` gets JetStream's ack policy "all": an ack settles
//!   every pending message of the consumer at or below it, and so does a
//!   term (JetStream processes it as an ack); an ack, term or nak from a
//!   delivery numbered at or below the last applied ack's is ignored.
//! - A subscription is a pull consumer's client ([`InMemorySubscription`]):
//!   the broker sends batches into its buffer, where they count as delivered
//!   (their ack wait runs) until the app takes them.
//! - The max-deliveries notice ([`Transport::exhausted`](flowgate::Transport::exhausted))
//!   is JetStream's advisory: an app hears of the give-ups made while it
//!   listens, and one made while no app runs is missed.
//! - The broker keeps the failure budget's attempts per durable
//!   ([`Transport::attempt_store`](flowgate::Transport::attempt_store),
//!   [`InMemory::recorded_attempts`]).
//! - The same conformance suite runs against this broker and against
//!   JetStream on a real `nats-server` (package `flowgate-tests`).
//!
//! ## Where it differs from JetStream
//!
//! - A pull request never expires (JetStream: after 30 s the client asks
//!   again); what is delivered is the same.
//! - The broker gives up on a message when its last delivery's ack wait
//!   ends or its last nak arrives; JetStream does when it next tries to
//!   deliver it, which is then too while an app pulls.
//! - A nak from an outdated delivery is ignored only with coalesced acks
//!   (JetStream ignores some with explicit acks too).
//! - There is no connection to lose: lost deliveries and failed publishes
//!   or settlements happen when a test injects them (below).

//! ## Faults
//!
//! A test can make the broker fail the way a real one does and check what
//! the app does then: publishes that fail ([`InMemory::fail_publishes`]: a
//! full stream, for example the dead-letter one), acks, naks and terms that
//! fail ([`InMemory::fail_acks`], [`InMemory::fail_naks`],
//! [`InMemory::fail_terms`]), deliveries lost on the way to the client
//! ([`InMemory::lose_next_deliveries`]: a gap in the consumer sequence, the
//! message comes again after its ack wait). [`InMemory::faults`] lists the
//! faults that took effect.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use flowgate::{App, Failure};
//! use flowgate_testkit::InMemory;
//!
//! #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
//! #[event(channel = "orders.placed")]
//! struct OrderPlaced { id: u64 }
//!
//! #[flowgate::subscriber(durable = "billing", start = "all", ack = "coalesced")]
//! async fn bill(_: OrderPlaced) -> Result<(), Failure> {
//!     Ok(())
//! }
//!
//! let broker = InMemory::new();
//! for id in 1..=8 {
//!     broker.publish_event(&OrderPlaced { id }).await.unwrap();
//! }
//! broker.lose_next_deliveries("orders.placed", 1); // a connection blip
//! let app = App::new().subscriber(bill::subscriber()).start(broker.clone()).await.unwrap();
//! broker.wait_idle().await;
//!
//! // Message 1 was lost on its first delivery: no ack covered it before its
//! // redelivery was handled.
//! let log = broker.settlements("orders.placed");
//! let first_ack = log.iter().find(|s| s.outcome == flowgate_testkit::Outcome::Acked).unwrap();
//! assert!(first_ack.at >= log.of(1)[0].at, "nothing acked before 1 expired");
//! assert_eq!(log.expired(), vec![1]);
//! let mut acked = log.acked();
//! acked.sort_unstable();
//! assert_eq!(acked, (1..=8).collect::<Vec<_>>());
//! app.shutdown().await.unwrap();
//! # }
//! ```

mod acker;
mod attempts;
mod broker;
mod call;
mod channel;
mod consumer;
mod disconnect;
mod faults;
mod inspect;
mod publish;
mod settlement;
mod subscription;
mod timers;
mod transport;

pub use acker::InMemoryAcker;
pub use broker::InMemory;
pub use call::{call, call_payload, Call};
pub use channel::{stream_name, StoredMessage, DUPLICATE_WINDOW, MESSAGE_ID_HEADER};
pub use faults::Fault;
pub use inspect::ConsumerInfo;
pub use settlement::{Outcome, Settlement, Settlements};
pub use subscription::InMemorySubscription;
pub use transport::InMemoryPendingAck;
