//! One attempt at a message in the runtime's own stack: the handler, timed
//! by the metrics, within the subscriber's timeout. It borrows the request,
//! so the retries of [`CoreStack`] decode again from the one request they
//! keep instead of copying it for every attempt.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::Either;
use futures::FutureExt;
use tower::Service;

use crate::handler::{HandlerFuture, HandlerService};
use crate::middleware::metrics::{timed, MetricsFuture, SubscriberMetrics};
use crate::middleware::retry::{Attempt, Attempting, Schedule};
use crate::{BoxError, Request};

/// The handler with its metrics and timeout: retry's inner part of the stack.
#[derive(Clone)]
pub(crate) struct Attempts {
    handler: HandlerService,
    timeout: Option<Duration>,
    metrics: Arc<SubscriberMetrics>,
}

impl Attempts {
    pub(crate) fn new(
        handler: HandlerService,
        timeout: Option<Duration>,
        metrics: Arc<SubscriberMetrics>,
    ) -> Self {
        Self {
            handler,
            timeout,
            metrics,
        }
    }
}

type Timed = MetricsFuture<HandlerFuture>;

/// One attempt: timed, and cut off at the timeout when there is one. It is
/// `Unpin` (the timer of a timeout is boxed), so the dispatcher can poll it
/// once in place and then move it to a task.
pub(crate) type AttemptFuture = Either<
    Timed,
    futures::future::Map<
        Pin<Box<tokio::time::Timeout<Timed>>>,
        fn(Result<Result<(), BoxError>, tokio::time::error::Elapsed>) -> Result<(), BoxError>,
    >,
>;

/// An attempt that ran out of time fails as tower's timeout does.
fn elapsed_is_failure(
    outcome: Result<Result<(), BoxError>, tokio::time::error::Elapsed>,
) -> Result<(), BoxError> {
    outcome.unwrap_or_else(|_| Err(Box::new(tower::timeout::error::Elapsed::new())))
}

impl Attempt for Attempts {
    type Future = AttemptFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn attempt(&mut self, request: &Request) -> AttemptFuture {
        let attempt = timed(&self.metrics, self.handler.call_ref(request));
        match self.timeout {
            None => Either::Left(attempt),
            Some(limit) => Either::Right(
                Box::pin(tokio::time::timeout(limit, attempt))
                    .map(elapsed_is_failure as fn(_) -> _),
            ),
        }
    }
}

/// The runtime's own stack: retry → timeout → metrics → handler, as one
/// service with a concrete future (no box per message).
#[derive(Clone)]
pub(crate) struct CoreStack {
    attempts: Attempts,
    schedule: Schedule,
}

impl CoreStack {
    pub(crate) fn new(attempts: Attempts, schedule: Schedule) -> Self {
        Self { attempts, schedule }
    }
}

impl Service<Request> for CoreStack {
    type Response = ();
    type Error = BoxError;
    type Future = Attempting<Attempts>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let first = self.attempts.attempt(&request);
        Attempting::new(first, self.attempts.clone(), request, self.schedule.clone())
    }
}

/// A subscriber's whole stack: the runtime's own, or wrapped in the user's
/// tower layers (type-erased, as they are added at run time).
#[derive(Clone)]
pub(crate) enum Stack {
    Core(CoreStack),
    Layered(crate::BoxHandlerService),
}

type BoxedFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

impl Service<Request> for Stack {
    type Response = ();
    type Error = BoxError;
    type Future = Either<Attempting<Attempts>, BoxedFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Stack::Core(own) => own.poll_ready(cx),
            Stack::Layered(layered) => layered.poll_ready(cx),
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self {
            Stack::Core(own) => Either::Left(own.call(request)),
            Stack::Layered(layered) => Either::Right(layered.call(request)),
        }
    }
}
