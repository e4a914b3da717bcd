//! How an async fn becomes a tower `Service` over [`Request`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::extract::{FromRequest, MissingState, Params, StateMap};
use crate::handler_slots::{HandlerCall, Slots};
use crate::output::{Handled, Output, Outputs};
use crate::{BoxError, HandlerError, Request};

/// An async fn over a handler's parameters ([`Params`]) that returns
/// `Result<O, E>`, where `O` is `()` or events to publish ([`Output`]):
/// implemented for fns and closures of up to 12 parameters.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a flowgate handler",
    label = "a handler is an async fn taking a payload and extractors, returning Result<(), E> or Result<Event, E>"
)]
pub trait Handler<P>: Clone + Send + Sync + 'static {
    /// The handler's future, publishing its outputs after it returns.
    type Future: Future<Output = Result<(), BoxError>> + Send + 'static;

    /// Whether the handler returns outputs to publish.
    #[doc(hidden)]
    const PUBLISHES: bool;

    /// Calls the handler; its outputs, if it has any, go to `outputs`.
    fn call(&self, params: P, outputs: Option<Outputs>) -> Self::Future;
}

macro_rules! handler {
    ($($param:ident),+) => {
        impl<F, Fut, O, E, $($param),+> Handler<($($param,)+)> for F
        where
            F: Fn($($param),+) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Result<O, E>> + Send + 'static,
            O: Output,
            E: Into<BoxError> + 'static,
            $($param: FromRequest),+
        {
            type Future = Handled<Fut, O, E>;

            const PUBLISHES: bool = O::PUBLISHES;

            #[allow(non_snake_case)]
            fn call(&self, ($($param,)+): ($($param,)+), outputs: Option<Outputs>) -> Self::Future {
                Handled::new((self)($($param),+), outputs)
            }
        }
    };
}

crate::extract::for_each_arity!(handler);

/// The future of one [`HandlerService`] call: the handler running, or why
/// its parameters could not be built.
#[derive(Debug)]
pub struct HandlerFuture(Called);

#[derive(Debug)]
enum Called {
    Running(HandlerCall),
    /// The payload's decode error or an extractor's rejection, boxed as the
    /// call's failure already.
    Rejected(Option<BoxError>),
}

impl Future for HandlerFuture {
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Called::Running(call) => Pin::new(call).poll(cx),
            Called::Rejected(err) => Poll::Ready(Err(err
                .take()
                .unwrap_or_else(|| "a handler call was polled after it ended".into()))),
        }
    }
}

/// The innermost service of every stack: builds the handler's parameters
/// (decoding the payload), calls the handler, and turns a panic into
/// [`HandlerError::Panicked`]. Cloning it is cheap (a reference count), so
/// retries and stacks share one handler.
///
/// Each call's future lives in a heap slot; the slots of finished calls (up
/// to 64 per handler, shared by its clones) are kept and reused for the
/// next calls, so handling a message allocates nothing for the handler.
#[derive(Clone)]
pub struct HandlerService {
    bound: Arc<Bound>,
}

/// Builds a handler's parameters from a request and the state, and calls it.
type CallFn = dyn Fn(&Request, &StateMap) -> HandlerFuture + Send + Sync;

/// A handler together with the state its extractors read.
struct Bound {
    call: Arc<CallFn>,
    state: StateMap,
    payloads: usize,
    check: fn(&StateMap) -> Result<(), MissingState>,
}

impl std::fmt::Debug for HandlerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerService")
            .field("state", &self.bound.state)
            .finish_non_exhaustive()
    }
}

impl HandlerService {
    /// Wraps `handler`, whose parameter list is `P`.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// # #[event(channel = "orders.placed")]
    /// # struct OrderPlaced { id: u64 }
    /// use flowgate::extract::Attempt;
    ///
    /// async fn bill(order: OrderPlaced, Attempt(attempt): Attempt) -> Result<(), std::io::Error> {
    ///     Ok(())
    /// }
    /// let service = flowgate::HandlerService::new(bill);
    /// ```
    pub fn new<P, H>(handler: H) -> Self
    where
        H: Handler<P>,
        P: Params,
    {
        let slots = Arc::new(Slots::<H::Future>::default());
        Self {
            bound: Arc::new(Bound {
                call: Arc::new(move |request: &Request, state: &StateMap| {
                    HandlerFuture(match P::from_request(request, state) {
                        Ok(params) => {
                            let outputs = H::PUBLISHES.then(|| Outputs::of(request, state));
                            Called::Running(slots.start(handler.call(params, outputs)))
                        }
                        Err(err) => Called::Rejected(Some(Box::new(err))),
                    })
                }),
                state: StateMap::new(),
                payloads: P::PAYLOADS,
                check: P::check,
            }),
        }
    }

    /// The same handler, its extractors reading `state`.
    pub(crate) fn bind(&self, state: StateMap) -> Self {
        Self {
            bound: Arc::new(Bound {
                call: self.bound.call.clone(),
                state,
                payloads: self.bound.payloads,
                check: self.bound.check,
            }),
        }
    }

    /// How many payload parameters the handler takes (it needs one).
    pub(crate) fn payloads(&self) -> usize {
        self.bound.payloads
    }

    /// Checks that `state` has what the handler's extractors need.
    pub(crate) fn check(&self, state: &StateMap) -> Result<(), MissingState> {
        (self.bound.check)(state)
    }

    /// Calls the handler with parameters built from `request`, which the
    /// caller keeps (for another attempt).
    pub(crate) fn call_ref(&self, request: &Request) -> HandlerFuture {
        (self.bound.call)(request, &self.bound.state)
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
    Box::new(HandlerError::Panicked(panic_message(panic)))
}

/// What a panic said, when it said it with a string.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
