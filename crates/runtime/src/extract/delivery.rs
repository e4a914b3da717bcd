//! Extractors for what the broker says about a delivery.

use super::{FromRequest, Rejection, StateMap};
use crate::{Headers, Metadata, Request};

/// The subject the message was published on: for a wildcard channel, the
/// concrete one.
///
/// ```
/// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// # #[event(channel = "orders.placed")]
/// # struct OrderPlaced { id: u64 }
/// use flowgate::extract::Subject;
///
/// #[flowgate::subscriber(durable = "audit")]
/// async fn audit(order: OrderPlaced, Subject(subject): Subject) -> Result<(), std::io::Error> {
///     println!("order {} on {subject}", order.id);
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(pub String);

impl FromRequest for Subject {
    fn from_request(request: &Request, _state: &StateMap) -> Result<Self, Rejection> {
        Ok(Subject(request.metadata().subject().to_owned()))
    }
}

impl std::ops::Deref for Subject {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// Which attempt at the message this is, counting in-process retries and
/// broker redeliveries together: 1 for the first try.
///
/// ```
/// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// # #[event(channel = "orders.placed")]
/// # struct OrderPlaced { id: u64 }
/// use flowgate::extract::Attempt;
///
/// #[flowgate::subscriber(durable = "billing", max_deliver = 5)]
/// async fn bill(order: OrderPlaced, Attempt(attempt): Attempt) -> Result<(), std::io::Error> {
///     if attempt > 1 {
///         println!("order {}: attempt {attempt} of 5", order.id);
///     }
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attempt(pub u32);

impl FromRequest for Attempt {
    fn from_request(request: &Request, _state: &StateMap) -> Result<Self, Rejection> {
        Ok(Attempt(request.attempt()))
    }
}

/// The message's headers; empty when it has none.
impl FromRequest for Headers {
    fn from_request(request: &Request, _state: &StateMap) -> Result<Self, Rejection> {
        Ok(request.metadata().headers().cloned().unwrap_or_default())
    }
}

/// Everything the broker says about the delivery.
impl FromRequest for Metadata {
    fn from_request(request: &Request, _state: &StateMap) -> Result<Self, Rejection> {
        Ok(request.metadata().clone())
    }
}
