//! Handler parameters: the payload, and extractors beside it.
//!
//! A handler takes one payload parameter (an [`Event`](crate::Event) or a
//! [`Message`](crate::Message) of one) and, in any order, any number of
//! extractors: values built for each message from the request and the app's
//! state.
//!
//! | parameter | what it is |
//! | --- | --- |
//! | [`State<T>`] | a clone of the value given to [`App::state`](crate::App::state) |
//! | [`Publisher<E>`] | publishes `E` events on the app's transport |
//! | [`Subject`] | the subject the message was published on |
//! | [`Attempt`] | which attempt of the failure budget this is |
//! | [`Headers`](crate::Headers) | the message's headers (empty when it has none) |
//! | [`Metadata`](crate::Metadata) | everything the broker says about the delivery |
//! | your own type | implement [`FromRequest`] for it |
//!
//! ```
//! use flowgate::extract::{Attempt, Publisher, State, Subject};
//!
//! #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
//! #[event(channel = "orders.placed")]
//! struct OrderPlaced { id: u64 }
//!
//! #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
//! #[event(channel = "invoices.issued")]
//! struct InvoiceIssued { order_id: u64 }
//!
//! #[derive(Clone, Default)]
//! struct Db(std::sync::Arc<std::sync::Mutex<Vec<u64>>>);
//!
//! #[flowgate::subscriber(durable = "billing")]
//! async fn bill(
//!     State(db): State<Db>,
//!     order: OrderPlaced,
//!     invoices: Publisher<InvoiceIssued>,
//!     Subject(subject): Subject,
//!     Attempt(attempt): Attempt,
//! ) -> Result<(), flowgate::BoxError> {
//!     db.0.lock().unwrap().push(order.id);
//!     invoices.publish(&InvoiceIssued { order_id: order.id }).await?;
//!     println!("{subject}, attempt {attempt}");
//!     Ok(())
//! }
//!
//! let app = flowgate::App::new().state(Db::default()).subscriber(bill::subscriber());
//! ```

mod delivery;
mod params;
mod payload;
mod publisher;
mod state;

use crate::BoxError;

pub use delivery::{Attempt, Subject};
pub(crate) use params::for_each_arity;
#[doc(hidden)]
pub use params::payload_channel;
pub use params::Params;
pub(crate) use publisher::AppPublisher;
pub use publisher::Publisher;
pub use state::{State, StateMap};

/// A handler parameter, built for each message from the request and the
/// app's state.
///
/// Implement it for your own extractors: a tenant id from a header, a
/// request-scoped client from the app's state, a tracing context. The
/// payload types (events, [`Message`](crate::Message)) implement it already.
///
/// ```
/// use flowgate::extract::{FromRequest, Rejection, StateMap};
/// use flowgate::Request;
///
/// /// The tenant the message belongs to, from its `tenant` header.
/// struct Tenant(String);
///
/// impl FromRequest for Tenant {
///     fn from_request(request: &Request, _state: &StateMap) -> Result<Self, Rejection> {
///         request
///             .metadata()
///             .headers()
///             .and_then(|headers| headers.get("tenant"))
///             .map(|tenant| Tenant(tenant.as_str().to_owned()))
///             .ok_or_else(|| Rejection::new("the message has no `tenant` header"))
///     }
/// }
/// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// # #[event(channel = "orders.placed")]
/// # struct OrderPlaced { id: u64 }
///
/// #[flowgate::subscriber(durable = "billing")]
/// async fn bill(order: OrderPlaced, Tenant(tenant): Tenant) -> Result<(), std::io::Error> {
///     println!("order {} of {tenant}", order.id);
///     Ok(())
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler parameter",
    label = "not an event and not an extractor",
    note = "a payload parameter is a type with #[derive(flowgate::Event)], or flowgate::Message<YourEvent>",
    note = "an extractor implements flowgate::extract::FromRequest: see its docs for an example"
)]
pub trait FromRequest: Sized + Send + 'static {
    /// Whether this parameter is the payload. Only the payload types set it.
    #[doc(hidden)]
    const PAYLOAD: bool = false;

    /// The channel the payload type declares. Only the payload types set it.
    #[doc(hidden)]
    const CHANNEL: Option<&'static str> = None;

    /// What the AsyncAPI document says of the payload's type. Only the
    /// payload types set it.
    #[doc(hidden)]
    const SCHEMA: Option<fn() -> crate::asyncapi::EventSchema> = None;

    /// Checks, once when the app starts, that the app has what this
    /// parameter needs, so a missing state fails `start` instead of every
    /// message. The default needs nothing.
    fn check(state: &StateMap) -> Result<(), MissingState> {
        let _ = state;
        Ok(())
    }

    /// Builds the parameter for one attempt at handling `request`.
    ///
    /// A rejection is permanent unless it wraps a retryable
    /// [`Failure`](crate::Failure): the message goes to the dead letters at
    /// once, as an undecodable payload does.
    fn from_request(request: &crate::Request, state: &StateMap) -> Result<Self, Rejection>;
}

/// Why a handler parameter could not be built for a message.
///
/// ```
/// let rejection = flowgate::extract::Rejection::new("no `tenant` header");
/// assert_eq!(rejection.to_string(), "no `tenant` header");
/// ```
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Rejection(pub(crate) RejectionKind);

#[derive(Debug, thiserror::Error)]
pub(crate) enum RejectionKind {
    #[error(transparent)]
    Decode(crate::DecodeError),
    #[error(transparent)]
    Other(BoxError),
}

impl Rejection {
    /// A rejection for `reason`. Wrap a [`Failure`](crate::Failure) to say
    /// whether a retry can help; anything else is permanent.
    pub fn new(reason: impl Into<BoxError>) -> Self {
        Self(RejectionKind::Other(reason.into()))
    }
}

impl From<crate::DecodeError> for Rejection {
    fn from(err: crate::DecodeError) -> Self {
        Self(RejectionKind::Decode(err))
    }
}

/// A state a handler parameter needs that the app was not given.
///
/// ```
/// let state = flowgate::extract::StateMap::new();
/// let err = state.require::<String>().unwrap_err();
/// assert!(err.to_string().contains("alloc::string::String"));
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[error("the app has no state of type `{type_name}`: add `.state(value)` to the App (or to flowgate_testkit::call)")]
pub struct MissingState {
    type_name: &'static str,
}

impl MissingState {
    /// The state `T` is missing.
    pub fn of<T>() -> Self {
        Self {
            type_name: std::any::type_name::<T>(),
        }
    }

    /// The type of the missing state.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }
}
