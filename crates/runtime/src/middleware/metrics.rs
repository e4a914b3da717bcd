//! Metrics on the `metrics` facade, labelled by channel and durable, so any
//! exporter (Prometheus, StatsD, ...) shows them.
//!
//! | name | kind | what |
//! | --- | --- | --- |
//! | `flowgate_messages_received_total` | counter | deliveries taken by the dispatcher |
//! | `flowgate_messages_acked_total` | counter | settled with an ack |
//! | `flowgate_messages_nakd_total` | counter | nak'd for redelivery |
//! | `flowgate_messages_terminated_total` | counter | terminated (after dead-lettering, or without) |
//! | `flowgate_messages_dead_lettered_total` | counter | published to the dead-letter subject |
//! | `flowgate_dead_letter_retries_total` | counter | dead-letter publishes that failed and are tried again |
//! | `flowgate_handlers_in_flight` | gauge | handler attempts running now |
//! | `flowgate_handler_duration_seconds` | histogram | the time of each handler attempt |
//!
//! Install the recorder (exporter) before the app starts: the handles are
//! registered then.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use metrics::{Counter, Gauge, Histogram};

use crate::{BoxError, Request, SubscriptionSpec};

/// Metric names, for dashboards and tests.
pub mod names {
    /// Deliveries taken by the dispatcher.
    pub const RECEIVED: &str = "flowgate_messages_received_total";
    /// Messages acked.
    pub const ACKED: &str = "flowgate_messages_acked_total";
    /// Messages nak'd for redelivery.
    pub const NAKD: &str = "flowgate_messages_nakd_total";
    /// Messages terminated.
    pub const TERMINATED: &str = "flowgate_messages_terminated_total";
    /// Messages published to the dead letters.
    pub const DEAD_LETTERED: &str = "flowgate_messages_dead_lettered_total";
    /// Dead-letter publishes that failed and are tried again.
    pub const DEAD_LETTER_RETRIES: &str = "flowgate_dead_letter_retries_total";
    /// Handler attempts running now.
    pub const IN_FLIGHT: &str = "flowgate_handlers_in_flight";
    /// Duration of each handler attempt, in seconds.
    pub const HANDLER_DURATION: &str = "flowgate_handler_duration_seconds";
}

/// The metric handles of one subscriber, registered once at start.
#[derive(Debug, Clone)]
pub struct SubscriberMetrics {
    pub(crate) received: Counter,
    pub(crate) acked: Counter,
    pub(crate) nakd: Counter,
    pub(crate) terminated: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) dead_letter_retries: Counter,
    in_flight: Gauge,
    duration: Histogram,
}

impl SubscriberMetrics {
    /// Registers the handles for `spec` with the installed recorder.
    ///
    /// ```
    /// let spec = flowgate::SubscriptionSpec::new("orders.placed").with_durable("billing");
    /// let metrics = flowgate::middleware::metrics::SubscriberMetrics::new(&spec);
    /// ```
    pub fn new(spec: &SubscriptionSpec) -> Self {
        let channel = spec.channel.clone();
        let durable = spec
            .durable
            .clone()
            .or_else(|| spec.queue.clone())
            .unwrap_or_else(|| "ephemeral".to_owned());
        let labels = [("channel", channel), ("durable", durable)];
        Self {
            received: metrics::counter!(names::RECEIVED, &labels),
            acked: metrics::counter!(names::ACKED, &labels),
            nakd: metrics::counter!(names::NAKD, &labels),
            terminated: metrics::counter!(names::TERMINATED, &labels),
            dead_lettered: metrics::counter!(names::DEAD_LETTERED, &labels),
            dead_letter_retries: metrics::counter!(names::DEAD_LETTER_RETRIES, &labels),
            in_flight: metrics::gauge!(names::IN_FLIGHT, &labels),
            duration: metrics::histogram!(names::HANDLER_DURATION, &labels),
        }
    }
}

/// Counts running handler attempts and times each one.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Arc<SubscriberMetrics>,
}

impl MetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<SubscriberMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`MetricsLayer`] makes.
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
    metrics: Arc<SubscriberMetrics>,
}

impl<S> tower::Service<Request> for Metrics<S>
where
    S: tower::Service<Request, Response = (), Error = BoxError>,
{
    type Response = ();
    type Error = BoxError;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        timed(&self.metrics, self.inner.call(request))
    }
}

/// Counts `attempt` as running until it ends, and times it.
pub(crate) fn timed<F>(metrics: &Arc<SubscriberMetrics>, attempt: F) -> MetricsFuture<F> {
    metrics.in_flight.increment(1.0);
    MetricsFuture {
        future: attempt,
        timer: Timer {
            metrics: metrics.clone(),
            started: Instant::now(),
        },
    }
}

/// Records one attempt when dropped: finished, failed or cancelled (a timeout).
struct Timer {
    metrics: Arc<SubscriberMetrics>,
    started: Instant,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.metrics.in_flight.decrement(1.0);
        self.metrics
            .duration
            .record(self.started.elapsed().as_secs_f64());
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Metrics`].
    pub struct MetricsFuture<F> {
        #[pin]
        future: F,
        timer: Timer,
    }
}

impl<F> std::fmt::Debug for MetricsFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsFuture").finish_non_exhaustive()
    }
}

impl<F: Future> Future for MetricsFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().future.poll(cx)
    }
}
