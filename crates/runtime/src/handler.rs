//! How an async fn becomes a tower `Service` over [`Request`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::handler_slots::{HandlerCall, Slots};
use crate::{BoxError, DecodeError, Event, HandlerError, Message, Request};

/// A handler parameter built from a [`Request`]: any [`Event`], or a
/// [`Message`] wrapping one.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler parameter: it is not a flowgate event",
    label = "add #[derive(flowgate::Event)] to this type, or take flowgate::Message<YourEvent>"
)]
pub trait FromRequest: Sized + Send + 'static {
    /// The event type inside.
    type Event: Event;

    /// Decodes the parameter from the request. It borrows the request: an
    /// attempt retried in-process decodes again from the same one.
    fn from_request(request: &Request) -> Result<Self, DecodeError>;
}

impl<E: Event> FromRequest for E {
    type Event = E;

    fn from_request(request: &Request) -> Result<Self, DecodeError> {
        E::decode(request.payload())
    }
}

impl<E: Event> FromRequest for Message<E> {
    type Event = E;

    fn from_request(request: &Request) -> Result<Self, DecodeError> {
        let event = E::decode(request.payload())?;
        Ok(Message::new(event, request.metadata().clone())
            .with_delivery_state(request.attempt(), request.manual_ack().cloned()))
    }
}

/// An async fn taking one [`FromRequest`] parameter and returning `Result<(), E>`.
pub trait Handler<P>: Clone + Send + Sync + 'static {
    /// The handler's future.
    type Future: Future<Output = Result<(), BoxError>> + Send + 'static;

    /// Calls the handler.
    fn call(&self, param: P) -> Self::Future;
}

impl<F, Fut, P, E> Handler<P> for F
where
    F: Fn(P) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError> + 'static,
    P: FromRequest,
{
    type Future = futures::future::MapErr<Fut, fn(E) -> BoxError>;

    fn call(&self, param: P) -> Self::Future {
        use futures::TryFutureExt;
        (self)(param).map_err(into_handler_failure::<E> as fn(E) -> BoxError)
    }
}

fn into_handler_failure<E: Into<BoxError>>(err: E) -> BoxError {
    Box::new(HandlerError::Failed(err.into()))
}

/// The future of one [`HandlerService`] call: the handler running, or the
/// payload's decode error.
#[derive(Debug)]
pub struct HandlerFuture(Called);

#[derive(Debug)]
enum Called {
    Running(HandlerCall),
    /// The decode error, boxed as the call's failure already.
    Undecodable(Option<BoxError>),
}

impl Future for HandlerFuture {
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Called::Running(call) => Pin::new(call).poll(cx),
            Called::Undecodable(err) => Poll::Ready(Err(err
                .take()
                .unwrap_or_else(|| "a handler call was polled after it ended".into()))),
        }
    }
}

/// The innermost service of every stack: decodes the payload, calls the
/// handler, and turns a panic into [`HandlerError::Panicked`]. Cloning it is
/// cheap (a reference count), so retries and stacks share one handler.
///
/// Each call's future lives in a heap slot; the slots of finished calls (up
/// to 64 per handler, shared by its clones) are kept and reused for the
/// next calls, so handling a message allocates nothing for the handler.
#[derive(Clone)]
pub struct HandlerService {
    call: Arc<dyn Fn(&Request) -> HandlerFuture + Send + Sync>,
}

impl std::fmt::Debug for HandlerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerService").finish_non_exhaustive()
    }
}

impl HandlerService {
    /// Wraps `handler`, whose parameter is `P`.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// # #[event(channel = "orders.placed")]
    /// # struct OrderPlaced { id: u64 }
    /// async fn bill(order: OrderPlaced) -> Result<(), std::io::Error> { Ok(()) }
    /// let service = flowgate::HandlerService::new::<OrderPlaced, _>(bill);
    /// ```
    pub fn new<P, H>(handler: H) -> Self
    where
        H: Handler<P>,
        P: FromRequest,
    {
        let slots = Arc::new(Slots::<H::Future>::default());
        Self {
            call: Arc::new(move |request: &Request| {
                HandlerFuture(match P::from_request(request) {
                    Ok(param) => Called::Running(slots.start(handler.call(param))),
                    Err(err) => Called::Undecodable(Some(Box::new(HandlerError::Decode(err)))),
                })
            }),
        }
    }

    /// Calls the handler with a parameter decoded from `request`, which the
    /// caller keeps (for another attempt).
    pub(crate) fn call_ref(&self, request: &Request) -> HandlerFuture {
        (self.call)(request)
    }
}

impl tower::Service<Request> for HandlerService {
    type Response = ();
    type Error = BoxError;
    type Future = HandlerFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> HandlerFuture {
        self.call_ref(&request)
    }
}

/// A panic turned into an error.
pub(crate) fn panicked(panic: &(dyn std::any::Any + Send)) -> BoxError {
    let message = if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    };
    Box::new(HandlerError::Panicked(message))
}
