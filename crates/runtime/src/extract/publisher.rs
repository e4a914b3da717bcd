//! [`Publisher<E>`]: handlers publish on the app's transport.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use super::{FromRequest, MissingState, Rejection, StateMap};
use crate::{Event, OutgoingMessage, PublishAck, PublishError, PublishOptions, Request, Transport};

type PublishFuture<'a> =
    Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send + 'a>>;

/// A transport behind a pointer, for publishing only.
trait PublishOn: Send + Sync + 'static {
    fn publish_on(&self, message: OutgoingMessage) -> PublishFuture<'_>;
}

impl<T: Transport> PublishOn for T {
    fn publish_on(&self, message: OutgoingMessage) -> PublishFuture<'_> {
        Box::pin(async move { self.publish(message).await?.await })
    }
}

/// The app's transport, kept in its state for [`Publisher`] extractors.
#[derive(Clone)]
pub(crate) struct AppPublisher(Arc<dyn PublishOn>);

impl AppPublisher {
    pub(crate) fn new<T: Transport>(transport: T) -> Self {
        Self(Arc::new(transport))
    }

    /// Sends `message` and waits for the broker's ack.
    pub(crate) fn publish(&self, message: OutgoingMessage) -> PublishFuture<'_> {
        self.0.publish_on(message)
    }
}

/// Publishes `E` events on the app's transport, from inside a handler.
///
/// Each publish waits for the broker's ack. A handler that returns `Err`
/// after publishing is retried, and publishes again: give the event a
/// de-duplication id ([`PublishOptions::message_id`]) when a duplicate
/// matters, or return the event as the handler's output, which gets one
/// from the input's position (see [`output`](crate::output)).
///
/// ```
/// use flowgate::extract::Publisher;
/// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// # #[event(channel = "orders.placed")]
/// # struct OrderPlaced { id: u64 }
/// #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
/// #[event(channel = "invoices.issued")]
/// struct InvoiceIssued { order_id: u64 }
///
/// #[flowgate::subscriber(durable = "billing")]
/// async fn bill(
///     order: OrderPlaced,
///     invoices: Publisher<InvoiceIssued>,
/// ) -> Result<(), flowgate::PublishError> {
///     invoices.publish(&InvoiceIssued { order_id: order.id }).await?;
///     Ok(())
/// }
/// ```
pub struct Publisher<E> {
    transport: AppPublisher,
    event: PhantomData<fn(&E)>,
}

impl<E> Clone for Publisher<E> {
    fn clone(&self) -> Self {
        Self {
            transport: self.transport.clone(),
            event: PhantomData,
        }
    }
}

impl<E> std::fmt::Debug for Publisher<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("event", &std::any::type_name::<E>())
            .finish_non_exhaustive()
    }
}

impl<E: Event> Publisher<E> {
    /// Publishes `event` on its type's channel and waits for the broker's ack.
    pub async fn publish(&self, event: &E) -> Result<PublishAck, PublishError> {
        self.publish_with(event, PublishOptions::new()).await
    }

    /// Publishes `event` on `subject`, a concrete subject its type's channel
    /// matches (for a type with a wildcard channel), and waits for the
    /// broker's ack.
    pub async fn publish_to(&self, subject: &str, event: &E) -> Result<PublishAck, PublishError> {
        crate::publisher::check_subject::<E>(subject)?;
        self.publish_with(event, PublishOptions::new().channel(subject))
            .await
    }

    /// Publishes `event` with `options` and waits for the broker's ack.
    /// Counted like a [`crate::Publisher`]'s publishes, in
    /// `flowgate_messages_published_total` and
    /// `flowgate_publish_failures_total`.
    pub async fn publish_with(
        &self,
        event: &E,
        options: PublishOptions,
    ) -> Result<PublishAck, PublishError> {
        let channel = crate::publisher::channel_label::<E>(&options);
        let message = crate::publisher::outgoing(event, options, None)?;
        let stored = self.transport.publish(message).await;
        crate::middleware::metrics::record_publish(&channel, stored.is_ok());
        stored
    }
}

impl<E: Event> FromRequest for Publisher<E> {
    fn check(state: &StateMap) -> Result<(), MissingState> {
        state.require::<AppPublisher>().map(drop)
    }

    fn from_request(_request: &Request, state: &StateMap) -> Result<Self, Rejection> {
        match state.get::<AppPublisher>() {
            Some(transport) => Ok(Publisher {
                transport: transport.clone(),
                event: PhantomData,
            }),
            None => Err(Rejection::new(MissingState::of::<AppPublisher>())),
        }
    }
}
