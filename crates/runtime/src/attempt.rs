//! One attempt at a message in the runtime's own stack: the handler, timed
//! by the metrics, within the subscriber's timeout. It borrows the request,
//! so the retries of [`CoreStack`] decode again from the one request they
//! keep instead of copying it for every attempt.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::Either;
use futures::{FutureExt, TryFutureExt};
use tower::Service;
use tracing::Instrument;

use crate::handler::{HandlerFuture, HandlerService};
use crate::middleware::metrics::{timed, MetricsFuture, SubscriberMetrics};
use crate::middleware::retry::{gave_up_error, Attempt, Attempting, GaveUp, Schedule};
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

    /// One attempt without the user's layers.
    fn start(&self, request: &Request) -> Bounded {
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

/// The innermost service of the user's attempt layers: they hand it the request.
impl Service<Request> for Attempts {
    type Response = ();
    type Error = BoxError;
    type Future = Bounded;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Bounded {
        self.start(&request)
    }
}

/// [`Attempts`] inside the user's attempt layers.
#[derive(Clone)]
pub(crate) struct LayeredAttempts {
    attempts: Attempts,
    layered: crate::BoxHandlerService,
}

impl LayeredAttempts {
    /// `attempts` inside the layers `wrap` puts around one attempt.
    pub(crate) fn new(
        attempts: Attempts,
        wrap: impl FnOnce(crate::BoxHandlerService) -> crate::BoxHandlerService,
    ) -> Self {
        let layered = wrap(tower::util::BoxCloneSyncService::new(attempts.clone()));
        Self { attempts, layered }
    }
}

/// The span of one attempt at `request`: a child of the message's span,
/// which is current when an attempt starts (the dispatcher enters it around
/// the stack's call, and its task runs in it).
fn attempt_span(request: &Request) -> tracing::Span {
    tracing::info_span!("flowgate.attempt", attempt = request.attempt())
}

type Timed = MetricsFuture<HandlerFuture>;

/// One attempt, in its `flowgate.attempt` span: timed, and cut off at the
/// timeout when there is one. It is `Unpin` (the timer of a timeout is
/// boxed), so the dispatcher can poll it once in place and then move it to
/// a task.
pub(crate) type AttemptFuture = tracing::instrument::Instrumented<Bounded>;

/// One attempt without the user's layers: timed, and cut off at the timeout
/// when there is one.
type Bounded = Either<
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

    fn failed(&self, err: &BoxError, request: &Request) {
        let metrics = &self.metrics;
        metrics.attempt_failed(err);
        // The first failure of a message is news; its retries are logged
        // at DEBUG by the retry loop, its end by the settlement.
        let (attempt, meta) = (request.attempt(), request.metadata());
        if attempt > 1 {
            return;
        }
        if let Some(suppressed) = metrics.warnings.allow() {
            let next = match crate::failure::classify(err) {
                crate::failure::Class::Retry(_) => "it is retried within its failure budget",
                crate::failure::Class::Permanent | crate::failure::Class::Undecodable => {
                    "the failure is permanent: it goes to the dead letters without a retry"
                }
            };
            tracing::warn!(
                channel = %metrics.channel,
                subject = meta.subject(),
                seq = meta.stream_sequence(),
                attempt,
                error = %err,
                suppressed,
                "handler failed; {next}"
            );
        }
    }

    fn retrying(&self) {
        self.metrics.retrying();
    }

    fn attempt(&mut self, request: &Request) -> AttemptFuture {
        let span = attempt_span(request);
        let attempt = {
            let _entered = span.enter();
            self.start(request)
        };
        attempt.instrument(span)
    }
}

impl Attempt for LayeredAttempts {
    type Future = tracing::instrument::Instrumented<BoxedFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.layered.poll_ready(cx)
    }

    fn failed(&self, err: &BoxError, request: &Request) {
        self.attempts.failed(err, request);
    }

    fn retrying(&self) {
        self.attempts.retrying();
    }

    fn attempt(&mut self, request: &Request) -> Self::Future {
        let span = attempt_span(request);
        let attempt = {
            let _entered = span.enter();
            // The layers take the request by value: each attempt gets a copy.
            self.layered.call(request.clone())
        };
        attempt.instrument(span)
    }
}

/// The runtime's own stack: retry → (the user's attempt layers, when `A`
/// is [`LayeredAttempts`]) → timeout → metrics → handler, as one service
/// with a concrete future (no box per message).
#[derive(Clone)]
pub(crate) struct CoreStack<A = Attempts> {
    attempts: A,
    schedule: Schedule,
}

impl<A: Attempt + Clone> CoreStack<A> {
    pub(crate) fn new(attempts: A, schedule: Schedule) -> Self {
        Self { attempts, schedule }
    }

    /// Starts the attempts at `request`; they hand it back when they fail.
    fn start(&mut self, request: Request) -> Attempting<A> {
        let first = self.attempts.attempt(&request);
        Attempting::new(first, self.attempts.clone(), request, self.schedule.clone())
    }
}

/// Under the user's tower layers, a failure's request is not handed back.
impl<A: Attempt + Clone> Service<Request> for CoreStack<A> {
    type Response = ();
    type Error = BoxError;
    type Future = futures::future::MapErr<Attempting<A>, fn(GaveUp) -> BoxError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.attempts.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.start(request).map_err(gave_up_error as fn(_) -> _)
    }
}

/// A subscriber's whole stack: the runtime's own, or wrapped in the user's
/// tower layers (type-erased, as they are added at run time).
#[derive(Clone)]
pub(crate) enum Stack {
    Core(CoreStack),
    /// With attempt layers of the user's, and none around the delivery.
    AttemptLayered(CoreStack<LayeredAttempts>),
    Layered(crate::BoxHandlerService),
}

/// A delivery whose attempts failed: the error, and the request when the
/// stack gives it back (the runtime's own does; tower layers consume it).
pub(crate) struct Failed {
    pub(crate) error: BoxError,
    pub(crate) request: Option<Box<Request>>,
}

type BoxedFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

impl Stack {
    /// Whether the stack can take a request now.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Stack::Core(_) => Poll::Ready(Ok(())),
            Stack::AttemptLayered(own) => own.attempts.poll_ready(cx),
            Stack::Layered(layered) => layered.poll_ready(cx),
        }
    }

    /// Waits until the stack can take a request.
    pub(crate) fn ready(&mut self) -> impl Future<Output = Result<(), BoxError>> + '_ {
        std::future::poll_fn(|cx| self.poll_ready(cx))
    }

    /// Whether a failed request comes back from [`call`](Self::call); when it
    /// does not, a caller that needs the message afterwards keeps a copy.
    pub(crate) fn hands_back_requests(&self) -> bool {
        matches!(self, Stack::Core(_) | Stack::AttemptLayered(_))
    }

    /// Runs `request` through the stack.
    pub(crate) fn call(&mut self, request: Request) -> StackFuture {
        match self {
            Stack::Core(own) => StackFuture::Core(own.start(request)),
            Stack::AttemptLayered(own) => StackFuture::AttemptLayered(own.start(request)),
            Stack::Layered(layered) => StackFuture::Layered(layered.call(request)),
        }
    }

    /// A request refused before any attempt started (its failure budget was
    /// spent, or the stack failed to become ready), handed back untouched.
    pub(crate) fn refuse(error: BoxError, request: Request) -> StackFuture {
        StackFuture::Refused(Some(Failed {
            error,
            request: Some(Box::new(request)),
        }))
    }
}

/// The future of [`Stack::call`]. It is `Unpin`, and a panic while it is
/// polled (in a user's layer; a handler's own is caught inside the call) is
/// its failure. The runtime's own stacks are held in place, not boxed: they
/// are the common case, and a box would allocate per message.
pub(crate) enum StackFuture {
    Core(Attempting<Attempts>),
    AttemptLayered(Attempting<LayeredAttempts>),
    Layered(BoxedFuture),
    Refused(Option<Failed>),
}

/// Attempts that gave up, with the request they handed back.
fn handed_back((error, request): GaveUp) -> Failed {
    Failed {
        error,
        request: Some(request),
    }
}

impl StackFuture {
    fn poll_unguarded(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failed>> {
        match self {
            StackFuture::Core(own) => Pin::new(own).poll(cx).map_err(handed_back),
            StackFuture::AttemptLayered(own) => Pin::new(own).poll(cx).map_err(handed_back),
            StackFuture::Layered(layered) => layered.as_mut().poll(cx).map_err(|error| Failed {
                error,
                request: None,
            }),
            StackFuture::Refused(failed) => Poll::Ready(match failed.take() {
                Some(failed) => Err(failed),
                None => Err(Failed {
                    error: "a refused request was polled again".into(),
                    request: None,
                }),
            }),
        }
    }
}

impl Future for StackFuture {
    type Output = Result<(), Failed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| this.poll_unguarded(cx))) {
            Ok(polled) => polled,
            Err(panic) => Poll::Ready(Err(Failed {
                error: crate::handler::panicked(&*panic),
                request: None,
            })),
        }
    }
}
