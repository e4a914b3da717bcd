//! [`RetryLayer`] and its service: the first attempt runs with no allocation
//! of its own; only a failure that is retried in-process boxes a retry loop.
//!
//! The loop itself ([`Attempting`]) runs any [`Attempt`]: a tower service,
//! given a copy of the request for each attempt, or the runtime's own
//! attempts, which borrow the one request it keeps.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tower::Service;

use super::{Retried, RetryPolicy};
use crate::failure::{classify, Class};
use crate::{BoxError, Request};

/// Retries failed attempts in-process within the failure budget.
///
/// The runtime puts one around every handler; build your own only to use it
/// outside flowgate's stack.
///
/// ```
/// use flowgate::middleware::retry::{RetryLayer, RetryPolicy};
/// let layer = RetryLayer::new(RetryPolicy::default(), Some(5));
/// ```
#[derive(Debug, Clone)]
pub struct RetryLayer {
    schedule: Schedule,
}

impl RetryLayer {
    /// Retries on `policy`'s schedule; `budget` is the most attempts of one
    /// message over all its deliveries (`max_deliver`), `None` for no limit.
    pub fn new(policy: RetryPolicy, budget: Option<u32>) -> Self {
        Self {
            schedule: Schedule::new(policy, budget),
        }
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            schedule: self.schedule.clone(),
        }
    }
}

/// The service [`RetryLayer`] makes.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    schedule: Schedule,
}

impl<S> Service<Request> for Retry<S>
where
    S: Service<Request, Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = BoxError;
    type Future = RetryFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The service polled ready takes the first attempt; a clone the rest.
        let first = self.inner.call(request.clone());
        RetryFuture {
            attempting: Attempting::new(
                first,
                ByValue(self.inner.clone()),
                request,
                self.schedule.clone(),
            ),
        }
    }
}

/// What the retry loop runs: one attempt at a request the loop keeps.
pub(crate) trait Attempt: Send + 'static {
    /// One attempt's future; it owns what it needs of the request.
    type Future: Future<Output = Result<(), BoxError>> + Send + 'static;

    /// Whether another attempt can start now.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>;

    /// Starts an attempt at `request`.
    fn attempt(&mut self, request: &Request) -> Self::Future;

    /// An attempt at `request` failed with `err`.
    fn failed(&self, err: &BoxError, request: &Request) {
        let _ = (err, request);
    }

    /// An in-process retry starts.
    fn retrying(&self) {}
}

/// A tower service as an [`Attempt`]: each attempt gets a copy of the request.
#[derive(Clone)]
pub(crate) struct ByValue<S>(S);

impl<S> Attempt for ByValue<S>
where
    S: Service<Request, Response = (), Error = BoxError> + Send + 'static,
    S::Future: Send + 'static,
{
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn attempt(&mut self, request: &Request) -> S::Future {
        self.0.call(request.clone())
    }
}

/// When to try again.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    policy: Arc<RetryPolicy>,
    budget: Option<u32>,
}

impl Schedule {
    /// Retries on `policy`'s schedule within `budget` attempts (`None`: no limit).
    pub(crate) fn new(policy: RetryPolicy, budget: Option<u32>) -> Self {
        Self {
            policy: Arc::new(policy),
            budget,
        }
    }

    /// The delay before the next attempt after `attempt` failed with `err`,
    /// or `None` when the failure goes back to the dispatcher.
    fn next_delay(&self, attempt: u32, err: &BoxError) -> Option<Duration> {
        let hint = match classify(err) {
            Class::Retry(hint) => hint,
            Class::Permanent | Class::Undecodable => return None,
        };
        if self.budget.is_some_and(|budget| attempt >= budget) {
            return None;
        }
        let delay = hint.unwrap_or_else(|| self.policy.backoff().delay(attempt));
        self.policy.waits_in_process(delay).then_some(delay)
    }
}

/// Attempts that failed for good: the last error, and the request they
/// tried, handed back (for the message's dead letter). Boxed, so that the
/// outcome every poll returns stays small; only a failure pays for it.
pub(crate) type GaveUp = (BoxError, Box<Request>);

/// The error of attempts that gave up, their request dropped.
pub(crate) fn gave_up_error((error, _request): GaveUp) -> BoxError {
    error
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<(), GaveUp>> + Send>>;

/// What a failed first attempt needs to be tried again.
struct Again<A> {
    attempts: A,
    request: Request,
    schedule: Schedule,
}

impl<A: Attempt> Again<A> {
    /// The in-process retry loop, from the attempt after `attempt`, which
    /// failed with `err`.
    ///
    /// Each attempt is recorded (in the subscriber's attempt store, when the
    /// transport keeps one) before it runs, so a process killed mid-retry
    /// still counts it. When it cannot be recorded, the retries stop here
    /// and the failure goes back to the dispatcher, which naks: each further
    /// attempt is then a broker delivery, bounded by the broker's count.
    fn retry(self, mut attempt: u32, mut delay: Duration, mut err: BoxError) -> BoxFuture {
        Box::pin(async move {
            let Again {
                mut attempts,
                mut request,
                schedule,
            } = self;
            let sequence = request.metadata().stream_sequence();
            loop {
                tokio::time::sleep(delay).await;
                if let Err(unrecorded) =
                    request.recorder().before_retry(sequence, attempt + 1).await
                {
                    tracing::warn!(attempt = attempt + 1, error = %unrecorded, "attempt not recorded; not retried in-process, handed back to the broker");
                    return Err((
                        Box::new(Retried::new(attempt, err)) as BoxError,
                        Box::new(request),
                    ));
                }
                attempt += 1;
                request = request.with_attempt(attempt);
                let result = match std::future::poll_fn(|cx| attempts.poll_ready(cx)).await {
                    Ok(()) => attempts.attempt(&request).await,
                    Err(err) => Err(err),
                };
                err = match result {
                    Ok(()) => return Ok(()),
                    Err(err) => err,
                };
                attempts.failed(&err, &request);
                match schedule.next_delay(attempt, &err) {
                    Some(next) => {
                        tracing::debug!(attempt, retry_in = ?next, error = %err, "attempt failed; retrying in-process");
                        attempts.retrying();
                        delay = next;
                    }
                    None => {
                        return Err((
                            Box::new(Retried::new(attempt, err)) as BoxError,
                            Box::new(request),
                        ))
                    }
                }
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A request's attempts: the first one, then (after a retryable failure
    /// with a short delay) the in-process retry loop. When they fail for
    /// good, the request comes back with the error.
    pub(crate) struct Attempting<A: Attempt> {
        #[pin]
        state: State<A>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<A: Attempt> {
        First {
            #[pin]
            future: A::Future,
            again: Option<Again<A>>,
        },
        Retrying {
            future: BoxFuture,
        },
    }
}

impl<A: Attempt> Attempting<A> {
    /// `first` is the first attempt at `request`, already started; `attempts`
    /// runs the ones after it.
    pub(crate) fn new(first: A::Future, attempts: A, request: Request, schedule: Schedule) -> Self {
        Self {
            state: State::First {
                future: first,
                again: Some(Again {
                    attempts,
                    request,
                    schedule,
                }),
            },
        }
    }
}

impl<A: Attempt> Future for Attempting<A> {
    type Output = Result<(), GaveUp>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::First { future, again } => {
                    let err = match ready!(future.poll(cx)) {
                        Ok(()) => return Poll::Ready(Ok(())),
                        Err(err) => err,
                    };
                    let state = again
                        .take()
                        .expect("attempts polled again after they ended");
                    state.attempts.failed(&err, &state.request);
                    let attempt = state.request.attempt();
                    let Some(delay) = state.schedule.next_delay(attempt, &err) else {
                        return Poll::Ready(Err((err, Box::new(state.request))));
                    };
                    tracing::debug!(attempt, retry_in = ?delay, error = %err, "attempt failed; retrying in-process");
                    state.attempts.retrying();
                    let future = state.retry(attempt, delay, err);
                    this.state.set(State::Retrying { future });
                }
                StateProj::Retrying { future } => return future.as_mut().poll(cx),
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Retry`].
    pub struct RetryFuture<S>
    where
        S: Service<Request, Response = (), Error = BoxError>,
        S: Send,
        S: 'static,
        S::Future: Send,
        S::Future: 'static,
    {
        #[pin]
        attempting: Attempting<ByValue<S>>,
    }
}

impl<S> std::fmt::Debug for RetryFuture<S>
where
    S: Service<Request, Response = (), Error = BoxError> + Send + 'static,
    S::Future: Send + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryFuture").finish_non_exhaustive()
    }
}

impl<S> Future for RetryFuture<S>
where
    S: Service<Request, Response = (), Error = BoxError> + Send + 'static,
    S::Future: Send + 'static,
{
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().attempting.poll(cx).map_err(gave_up_error)
    }
}
