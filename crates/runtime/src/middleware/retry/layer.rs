//! [`RetryLayer`] and its service: the first attempt runs with no allocation
//! of its own; only a failure that is retried in-process boxes a retry loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tower::{Service, ServiceExt};

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
    policy: Arc<RetryPolicy>,
    budget: Option<u32>,
}

impl RetryLayer {
    /// Retries on `policy`'s schedule; `budget` is the most attempts of one
    /// message over all its deliveries (`max_deliver`), `None` for no limit.
    pub fn new(policy: RetryPolicy, budget: Option<u32>) -> Self {
        Self {
            policy: Arc::new(policy),
            budget,
        }
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            policy: self.policy.clone(),
            budget: self.budget,
        }
    }
}

/// The service [`RetryLayer`] makes.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    policy: Arc<RetryPolicy>,
    budget: Option<u32>,
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
        let attempt = request.attempt();
        let again = RetryState {
            service: self.inner.clone(),
            request: request.clone(),
            schedule: Schedule {
                policy: self.policy.clone(),
                budget: self.budget,
            },
        };
        RetryFuture {
            state: State::First {
                future: self.inner.call(request),
                again: Some((again, attempt)),
            },
        }
    }
}

struct RetryState<S> {
    service: S,
    request: Request,
    schedule: Schedule,
}

/// When to try again.
#[derive(Clone)]
struct Schedule {
    policy: Arc<RetryPolicy>,
    budget: Option<u32>,
}

impl Schedule {
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

type BoxFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

impl<S> RetryState<S>
where
    S: Service<Request, Response = (), Error = BoxError> + Send + 'static,
    S::Future: Send + 'static,
{
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
            let RetryState {
                mut service,
                request,
                schedule,
            } = self;
            let sequence = request.metadata().stream_sequence();
            loop {
                tokio::time::sleep(delay).await;
                if let Err(unrecorded) =
                    request.recorder().before_retry(sequence, attempt + 1).await
                {
                    tracing::warn!(attempt = attempt + 1, error = %unrecorded, "attempt not recorded; not retried in-process, handed back to the broker");
                    return Err(Box::new(Retried::new(attempt, err)) as BoxError);
                }
                attempt += 1;
                let request = request.clone().with_attempt(attempt);
                let result = match service.ready().await {
                    Ok(ready) => ready.call(request).await,
                    Err(err) => Err(err),
                };
                err = match result {
                    Ok(()) => return Ok(()),
                    Err(err) => err,
                };
                match schedule.next_delay(attempt, &err) {
                    Some(next) => {
                        tracing::debug!(attempt, retry_in = ?next, error = %err, "attempt failed; retrying in-process");
                        delay = next;
                    }
                    None => return Err(Box::new(Retried::new(attempt, err)) as BoxError),
                }
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Retry`].
    pub struct RetryFuture<S>
    where
        S: Service<Request>,
    {
        #[pin]
        state: State<S>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<S>
    where
        S: Service<Request>,
    {
        First {
            #[pin]
            future: S::Future,
            again: Option<(RetryState<S>, u32)>,
        },
        Retrying {
            future: BoxFuture,
        },
    }
}

impl<S: Service<Request>> std::fmt::Debug for RetryFuture<S> {
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
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::First { future, again } => {
                    let err = match ready!(future.poll(cx)) {
                        Ok(()) => return Poll::Ready(Ok(())),
                        Err(err) => err,
                    };
                    let Some((state, attempt)) = again.take() else {
                        return Poll::Ready(Err(err));
                    };
                    let Some(delay) = state.schedule.next_delay(attempt, &err) else {
                        return Poll::Ready(Err(err));
                    };
                    tracing::debug!(attempt, retry_in = ?delay, error = %err, "attempt failed; retrying in-process");
                    let future = state.retry(attempt, delay, err);
                    this.state.set(State::Retrying { future });
                }
                StateProj::Retrying { future } => return future.as_mut().poll(cx),
            }
        }
    }
}
