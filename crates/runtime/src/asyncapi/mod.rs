//! AsyncAPI 3.0 documents of an app's registrations:
//! [`App::asyncapi`](crate::App::asyncapi).
//!
//! Like FastStream's, the document comes from what the code registers:
//!
//! - a channel per subscribed subject (its `address`, wildcards as they
//!   are) and per dead-letter subject;
//! - a `receive` operation per subscriber, named after it: its durable,
//!   queue group, start, ack wait, failure budget (`max_deliver`), limits
//!   and dead-letter subject in the `x-flowgate` extension, its queue group
//!   also as the NATS operation binding;
//! - a `send` operation per subscriber for its dead letters, whose message
//!   carries the `Flowgate-*` headers of [`crate::dead_letter`];
//! - a message per payload type (`components.messages`) with the content
//!   type of its codec (`application/json`, `application/x-protobuf`) and
//!   its payload: a JSON Schema when the type derives `schemars::JsonSchema`
//!   and flowgate's `schemars` feature is on (nested types under
//!   `components.schemas`), the `.proto` source for a protobuf event with
//!   `#[event(proto = "...")]` (schema format
//!   `application/vnd.google.protobuf;version=3`), otherwise the type's name.
//!
//! ```
//! #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
//! #[event(channel = "orders.placed")]
//! struct OrderPlaced {
//!     id: u64,
//! }
//!
//! #[flowgate::subscriber(queue = "billing", dead_letter = false)]
//! async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> {
//!     Ok(())
//! }
//!
//! let doc = flowgate::App::new().subscriber(bill::subscriber()).asyncapi();
//! let value = doc.to_json_value();
//! assert_eq!(value["operations"]["bill"]["bindings"]["nats"]["queue"], "billing");
//! assert_eq!(value["channels"].as_object().map(|c| c.len()), Some(1));
//! ```

mod collect;
mod components;
mod dead_letters;
mod document;
mod event_schema;
mod ids;
mod probe;

pub use document::Document;
pub use event_schema::EventSchema;

/// What `#[derive(flowgate::Event)]` expands to.
#[doc(hidden)]
pub mod __private {
    pub use super::event_schema::{JSON, PROTOBUF};
    pub use super::probe::{HasJsonSchema, NoJsonSchema, Probe};
}

pub(crate) use collect::collect;
