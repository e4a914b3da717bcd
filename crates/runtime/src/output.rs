//! Typed outputs: what a handler returns in `Ok` is published, and its
//! broker ack awaited, before the input is acked.
//!
//! A handler may return `Result<O, E>` where `O` is `()` (nothing to
//! publish), an event, an `Option` of one or a `Vec` of them. Each output
//! goes to its type's channel with a de-duplication id made of where the
//! input came from: the subscriber's channel and durable, the input's stream
//! sequence and the output's index. A redelivery of the input (after a crash
//! between the output's publish and the input's ack, a lost ack, a retry)
//! publishes the same outputs under the same ids, and JetStream drops the
//! copies it stored within its duplicate window (two minutes by default,
//! the stream's `duplicate_window`).
//!
//! What that does not cover:
//!
//! - a redelivery later than the duplicate window publishes the outputs
//!   again;
//! - the id names the input's position, not the output's content: when a
//!   retry returns a different output at the same index within the window,
//!   the broker keeps the first one;
//! - NATS Streaming does not de-duplicate: there, a redelivered input
//!   publishes its outputs again.
//!
//! ```
//! # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
//! # #[event(channel = "orders.placed")]
//! # struct OrderPlaced { id: u64, total_cents: i64 }
//! #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
//! #[event(channel = "invoices.issued")]
//! struct InvoiceIssued { order_id: u64, total_cents: i64 }
//!
//! /// The invoice is published before the order is acked.
//! #[flowgate::subscriber(durable = "invoicing")]
//! async fn invoice(order: OrderPlaced) -> Result<InvoiceIssued, std::io::Error> {
//!     Ok(InvoiceIssued { order_id: order.id, total_cents: order.total_cents })
//! }
//!
//! /// Zero or one output.
//! #[flowgate::subscriber(durable = "refunds")]
//! async fn refund(order: OrderPlaced) -> Result<Option<InvoiceIssued>, std::io::Error> {
//!     Ok((order.total_cents < 0).then(|| InvoiceIssued { order_id: order.id, total_cents: order.total_cents }))
//! }
//! ```

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use crate::extract::{AppPublisher, StateMap};
use crate::publisher::outgoing;
use crate::{BoxError, Event, HandlerError, OutgoingMessage, PublishError, PublishOptions};

/// What a handler's `Ok` holds: `()`, or events to publish before the input
/// is acked (see the [module docs](crate::output)).
#[diagnostic::on_unimplemented(
    message = "a handler cannot return `Result<{Self}, _>`",
    label = "return Result<(), E>, or an event (or an Option or Vec of events) to publish"
)]
pub trait Output: Send + 'static {
    /// Whether there can be anything to publish.
    #[doc(hidden)]
    const PUBLISHES: bool = true;

    /// The messages to publish, in order.
    #[doc(hidden)]
    fn into_messages(self) -> Result<Vec<OutgoingMessage>, PublishError>;
}

impl Output for () {
    const PUBLISHES: bool = false;

    fn into_messages(self) -> Result<Vec<OutgoingMessage>, PublishError> {
        Ok(Vec::new())
    }
}

impl<E: Event> Output for E {
    fn into_messages(self) -> Result<Vec<OutgoingMessage>, PublishError> {
        Ok(vec![outgoing(&self, PublishOptions::new(), None)?])
    }
}

impl<E: Event> Output for Option<E> {
    fn into_messages(self) -> Result<Vec<OutgoingMessage>, PublishError> {
        self.map_or(Ok(Vec::new()), Output::into_messages)
    }
}

impl<E: Event> Output for Vec<E> {
    fn into_messages(self) -> Result<Vec<OutgoingMessage>, PublishError> {
        self.iter()
            .map(|event| outgoing(event, PublishOptions::new(), None))
            .collect()
    }
}

/// Where one input's outputs go, and the ids that mark them as its own.
/// The runtime makes it for each call of a handler that has outputs.
#[derive(Clone)]
pub struct Outputs {
    publisher: Option<AppPublisher>,
    /// The subscriber's [`OutputScope`].
    scope: Option<Arc<str>>,
    /// The input's stream sequence.
    sequence: u64,
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outputs")
            .field("scope", &self.scope)
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

/// Which subscriber a handler serves, for the ids of its outputs: kept in
/// the state each subscriber's handler is bound with.
#[derive(Debug, Clone)]
pub(crate) struct OutputScope(pub(crate) Arc<str>);

impl OutputScope {
    /// The scope of the subscriber on `channel` under `consumer` (its
    /// durable or queue group, `ephemeral-<name>` for an ephemeral one).
    pub(crate) fn new(channel: &str, consumer: &str) -> Self {
        Self(format!("flowgate:{channel}:{consumer}").into())
    }
}

impl Outputs {
    /// The outputs of handling `request`, published through the app's
    /// transport in `state`.
    pub(crate) fn of(request: &crate::Request, state: &StateMap) -> Self {
        Self {
            publisher: state.get::<AppPublisher>().cloned(),
            scope: state.get::<OutputScope>().map(|scope| scope.0.clone()),
            sequence: request.metadata().stream_sequence(),
        }
    }

    /// The de-duplication id of output `index`:
    /// `flowgate:<channel>:<durable>:<input's stream sequence>:<index>`.
    fn id(&self, index: usize) -> String {
        let scope = self.scope.as_deref().unwrap_or("flowgate");
        format!("{scope}:{}:{index}", self.sequence)
    }

    /// Publishes `output`, each message with its id, and waits for every ack.
    async fn publish(self, output: impl Output) -> Result<(), BoxError> {
        let failed = |err: PublishError| -> BoxError { Box::new(HandlerError::Output(err)) };
        let messages = output.into_messages().map_err(failed)?;
        let Some(publisher) = &self.publisher else {
            return Err(failed(PublishError::Broker {
                subject: messages
                    .first()
                    .map(|m| m.subject.clone())
                    .unwrap_or_default(),
                source:
                    "the handler runs outside an app, with no transport to publish its output on"
                        .into(),
            }));
        };
        let acks = messages.into_iter().enumerate().map(|(index, message)| {
            let message = message.with_message_id(self.id(index));
            publisher.publish(message)
        });
        futures::future::try_join_all(acks).await.map_err(failed)?;
        Ok(())
    }
}

type Publishing = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

pin_project_lite::pin_project! {
    /// A handler's future, then the publishing of its output.
    pub struct Handled<Fut, O, E> {
        #[pin]
        call: Fut,
        outputs: Option<Outputs>,
        publishing: Option<Publishing>,
        types: PhantomData<fn() -> (O, E)>,
    }
}

impl<Fut, O, E> Handled<Fut, O, E> {
    pub(crate) fn new(call: Fut, outputs: Option<Outputs>) -> Self {
        Self {
            call,
            outputs,
            publishing: None,
            types: PhantomData,
        }
    }
}

impl<Fut, O, E> Future for Handled<Fut, O, E>
where
    Fut: Future<Output = Result<O, E>>,
    O: Output,
    E: Into<BoxError>,
{
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(publishing) = this.publishing {
            return publishing.as_mut().poll(cx);
        }
        let output = match ready!(this.call.poll(cx)) {
            Ok(output) => output,
            Err(err) => return Poll::Ready(Err(Box::new(HandlerError::Failed(err.into())))),
        };
        if !O::PUBLISHES {
            return Poll::Ready(Ok(()));
        }
        let Some(outputs) = this.outputs.take() else {
            return Poll::Ready(Err("a handler call was polled after it ended".into()));
        };
        let publishing = this.publishing.insert(Box::pin(outputs.publish(output)));
        publishing.as_mut().poll(cx)
    }
}

impl<Fut, O, E> std::fmt::Debug for Handled<Fut, O, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handled")
            .field("publishing", &self.publishing.is_some())
            .finish_non_exhaustive()
    }
}
