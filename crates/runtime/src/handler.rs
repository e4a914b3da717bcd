//! How an async fn becomes a tower `Service` over [`Request`].

use std::future::Future;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use futures::future::{ready, Either, Ready};

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

    /// Decodes the parameter from the request.
    fn from_request(request: Request) -> Result<Self, DecodeError>;
}

impl<E: Event> FromRequest for E {
    type Event = E;

    fn from_request(request: Request) -> Result<Self, DecodeError> {
        E::decode(request.payload())
    }
}

impl<E: Event> FromRequest for Message<E> {
    type Event = E;

    fn from_request(request: Request) -> Result<Self, DecodeError> {
        let (payload, metadata, manual_ack) = request.into_parts();
        let event = E::decode(&payload)?;
        Ok(Message::new(event, metadata).with_manual_ack(manual_ack))
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

/// The innermost service of every stack: decodes the payload and calls the handler.
pub struct HandlerService<H, P> {
    handler: H,
    _param: PhantomData<fn(P)>,
}

impl<H: Clone, P> Clone for HandlerService<H, P> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            _param: PhantomData,
        }
    }
}

impl<H, P> HandlerService<H, P> {
    /// Wraps `handler`.
    pub fn new(handler: H) -> Self {
        Self {
            handler,
            _param: PhantomData,
        }
    }
}

impl<H, P> tower::Service<Request> for HandlerService<H, P>
where
    H: Handler<P>,
    P: FromRequest,
{
    type Response = ();
    type Error = BoxError;
    type Future = Either<Ready<Result<(), BoxError>>, H::Future>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match P::from_request(request) {
            Ok(param) => Either::Right(self.handler.call(param)),
            Err(err) => Either::Left(ready(Err(Box::new(HandlerError::Decode(err)) as BoxError))),
        }
    }
}
