//! Metrics on the `metrics` facade, labelled by channel and durable, so any
//! exporter (Prometheus, StatsD, ...) shows them.
//!
//! | name | kind | what |
//! | --- | --- | --- |
//! | `flowgate_messages_received_total` | counter | deliveries taken by the dispatcher |
//! | `flowgate_messages_redelivered_total` | counter | of those, deliveries after the first of their message |
//! | `flowgate_attempts_failed_total` | counter | failed handler attempts, in-process retries included, by `reason`: `error`, `panic`, `timeout`, `decode`, `rejected`, `output` |
//! | `flowgate_retries_total` | counter | in-process retries started |
//! | `flowgate_messages_acked_total` | counter | settled with an ack |
//! | `flowgate_messages_nakd_total` | counter | nak'd for redelivery |
//! | `flowgate_messages_terminated_total` | counter | terminated (after dead-lettering, or without) |
//! | `flowgate_messages_dead_lettered_total` | counter | published to the dead-letter subject, by `reason`: `decode`, `permanent`, `budget_spent`, `exhausted` |
//! | `flowgate_dead_letter_retries_total` | counter | dead-letter publishes that failed and are tried again |
//! | `flowgate_handlers_in_flight` | gauge | handler attempts running now |
//! | `flowgate_handler_duration_seconds` | histogram | the time of each handler attempt, by `outcome`: `ok`, or `failed` (an error, a panic, a timeout, cut off at shutdown) |
//! | `flowgate_messages_published_total` | counter | events a [`Publisher`](crate::Publisher) had stored, by `channel` only |
//! | `flowgate_publish_failures_total` | counter | events a [`Publisher`](crate::Publisher) sent that were not stored, by `channel` only |
//! | `flowgate_consumer_pending_messages` | gauge | messages the broker has not delivered to the consumer yet, sampled every few seconds ([`HealthPolicy::sample_every`](crate::HealthPolicy::sample_every)) |
//! | `flowgate_consumer_ack_pending_messages` | gauge | messages the broker delivered to the consumer and holds unacked, sampled likewise |
//!
//! A subscriber's metrics carry `channel`, `durable` (empty for an
//! ephemeral or queue-group subscriber without one) and `queue` (the queue
//! group, empty for none). A publisher's carry the event type's channel (its
//! pattern, for a wildcard type), so a label never takes one value per
//! subject.
//!
//! Install the recorder (exporter) before the app starts: the handles are
//! registered then.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use metrics::{Counter, Gauge, Histogram};

use crate::{BoxError, HandlerError, Request, SubscriptionSpec};

/// Metric names, for dashboards and tests.
pub mod names {
    /// Deliveries taken by the dispatcher.
    pub const RECEIVED: &str = "flowgate_messages_received_total";
    /// Deliveries after the first of their message.
    pub const REDELIVERED: &str = "flowgate_messages_redelivered_total";
    /// Failed handler attempts, by `reason`.
    pub const ATTEMPTS_FAILED: &str = "flowgate_attempts_failed_total";
    /// In-process retries started.
    pub const RETRIES: &str = "flowgate_retries_total";
    /// Messages acked.
    pub const ACKED: &str = "flowgate_messages_acked_total";
    /// Messages nak'd for redelivery.
    pub const NAKD: &str = "flowgate_messages_nakd_total";
    /// Messages terminated.
    pub const TERMINATED: &str = "flowgate_messages_terminated_total";
    /// Messages published to the dead letters, by `reason`.
    pub const DEAD_LETTERED: &str = "flowgate_messages_dead_lettered_total";
    /// Dead-letter publishes that failed and are tried again.
    pub const DEAD_LETTER_RETRIES: &str = "flowgate_dead_letter_retries_total";
    /// Handler attempts running now.
    pub const IN_FLIGHT: &str = "flowgate_handlers_in_flight";
    /// Duration of each handler attempt, in seconds.
    pub const HANDLER_DURATION: &str = "flowgate_handler_duration_seconds";
    /// Events a publisher had stored by the broker, by `channel`.
    pub const PUBLISHED: &str = "flowgate_messages_published_total";
    /// Events a publisher sent that the broker did not store, by `channel`.
    pub const PUBLISH_FAILURES: &str = "flowgate_publish_failures_total";

    // Sampled from the broker by each subscription's health monitor.

    /// Messages the broker has not delivered to the consumer yet.
    pub const CONSUMER_PENDING: &str = "flowgate_consumer_pending_messages";
    /// Messages the broker delivered to the consumer and holds unacked.
    pub const CONSUMER_ACK_PENDING: &str = "flowgate_consumer_ack_pending_messages";
}

/// Why a message was dead-lettered: the `reason` label of
/// [`names::DEAD_LETTERED`]. Bounded: one of these, whatever the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// Its payload does not decode.
    Decode,
    /// The handler said the failure is permanent.
    Permanent,
    /// Its failure budget (`max_deliver` attempts) is spent.
    BudgetSpent,
    /// The broker stopped delivering it before anyone settled it (a hung
    /// handler, an app stopped mid-work).
    Exhausted,
}

impl DeadLetterReason {
    const ALL: [DeadLetterReason; 4] = [
        DeadLetterReason::Decode,
        DeadLetterReason::Permanent,
        DeadLetterReason::BudgetSpent,
        DeadLetterReason::Exhausted,
    ];

    /// The label value.
    ///
    /// ```
    /// use flowgate::middleware::metrics::DeadLetterReason;
    /// assert_eq!(DeadLetterReason::BudgetSpent.as_str(), "budget_spent");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Decode => "decode",
            DeadLetterReason::Permanent => "permanent",
            DeadLetterReason::BudgetSpent => "budget_spent",
            DeadLetterReason::Exhausted => "exhausted",
        }
    }

    /// What it means, for log lines.
    pub fn describe(self) -> &'static str {
        match self {
            DeadLetterReason::Decode => "payload does not decode",
            DeadLetterReason::Permanent => "permanent failure",
            DeadLetterReason::BudgetSpent => "failure budget spent",
            DeadLetterReason::Exhausted => "max deliveries reached without a settlement (a handler hung or an app stopped mid-work)",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Why a handler attempt failed: the `reason` label of
/// [`names::ATTEMPTS_FAILED`]. Bounded: one of these, whatever the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The handler returned `Err`.
    Error,
    /// The handler panicked.
    Panic,
    /// The attempt ran past the subscriber's `timeout`.
    Timeout,
    /// The payload did not decode.
    Decode,
    /// An extractor rejected the message.
    Rejected,
    /// The handler's output was not stored.
    Output,
}

impl FailureReason {
    const ALL: [FailureReason; 6] = [
        FailureReason::Error,
        FailureReason::Panic,
        FailureReason::Timeout,
        FailureReason::Decode,
        FailureReason::Rejected,
        FailureReason::Output,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Error => "error",
            FailureReason::Panic => "panic",
            FailureReason::Timeout => "timeout",
            FailureReason::Decode => "decode",
            FailureReason::Rejected => "rejected",
            FailureReason::Output => "output",
        }
    }

    /// The reason of `err`, an attempt's failure as it leaves the runtime's
    /// own layers.
    ///
    /// ```
    /// use flowgate::middleware::metrics::FailureReason;
    /// let err: flowgate::BoxError = Box::new(flowgate::HandlerError::Panicked("boom".into()));
    /// assert_eq!(FailureReason::of(&err), FailureReason::Panic);
    /// ```
    pub fn of(err: &BoxError) -> Self {
        if err.is::<tower::timeout::error::Elapsed>() {
            return FailureReason::Timeout;
        }
        match err.downcast_ref::<HandlerError>() {
            Some(HandlerError::Decode(_)) => FailureReason::Decode,
            Some(HandlerError::Panicked(_)) => FailureReason::Panic,
            Some(HandlerError::Rejected { .. }) => FailureReason::Rejected,
            Some(HandlerError::Output(_)) => FailureReason::Output,
            _ => FailureReason::Error,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Gives every metric its HELP text and unit, for exporters that show them.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        names::RECEIVED,
        "Deliveries taken by the dispatcher, redeliveries included."
    );
    describe_counter!(
        names::REDELIVERED,
        "Deliveries after the first of their message (the broker's delivery count above 1)."
    );
    describe_counter!(names::ATTEMPTS_FAILED, "Failed handler attempts, in-process retries included, by reason: error, panic, timeout, decode, rejected, output.");
    describe_counter!(
        names::RETRIES,
        "In-process retries started after a failed attempt."
    );
    describe_counter!(names::ACKED, "Messages settled with an ack.");
    describe_counter!(names::NAKD, "Messages nak'd for redelivery by the broker.");
    describe_counter!(
        names::TERMINATED,
        "Messages terminated: never delivered again."
    );
    describe_counter!(
        names::DEAD_LETTERED,
        "Messages published to their dead-letter subject, by reason: decode, permanent, budget_spent, exhausted."
    );
    describe_counter!(
        names::DEAD_LETTER_RETRIES,
        "Dead-letter publishes that failed and are tried again."
    );
    describe_gauge!(names::IN_FLIGHT, "Handler attempts running now.");
    describe_histogram!(
        names::HANDLER_DURATION,
        Unit::Seconds,
        "The time of each handler attempt."
    );
    describe_gauge!(
        names::CONSUMER_PENDING,
        "Messages the broker has not delivered to the consumer yet, as last sampled from the broker."
    );
    describe_gauge!(
        names::CONSUMER_ACK_PENDING,
        "Messages the broker delivered to the consumer and holds unacked (in flight, buffered, awaiting redelivery), as last sampled."
    );
    describe_publish_counts();
}

/// The HELP texts of a publisher's counters.
fn describe_publish_counts() {
    metrics::describe_counter!(
        names::PUBLISHED,
        "Events a publisher had stored by the broker, by the event type's channel."
    );
    metrics::describe_counter!(
        names::PUBLISH_FAILURES,
        "Events a publisher sent that the broker did not store, by the event type's channel."
    );
}

/// Counts one publish of a [`Publisher`](crate::Publisher) or
/// [`PublishWindow`](crate::PublishWindow) once its outcome is known.
/// Both counters of the channel are registered by its first publish, so a
/// channel that never failed shows 0 failures rather than no series.
pub(crate) fn record_publish(channel: &metrics::SharedString, stored: bool) {
    let failures = metrics::counter!(names::PUBLISH_FAILURES, "channel" => channel.clone());
    if stored {
        metrics::counter!(names::PUBLISHED, "channel" => channel.clone()).increment(1);
        failures.increment(0);
    } else {
        failures.increment(1);
    }
}

/// The metric handles of one subscriber, registered once at start.
#[derive(Debug, Clone)]
pub struct SubscriberMetrics {
    pub(crate) received: Counter,
    pub(crate) redelivered: Counter,
    failed: [Counter; 6],
    retries: Counter,
    /// The channel, for log lines.
    pub(crate) channel: Arc<str>,
    /// Bounds the WARN lines of first failures.
    pub(crate) warnings: Arc<crate::log_budget::LogBudget>,
    pub(crate) acked: Counter,
    pub(crate) nakd: Counter,
    pub(crate) terminated: Counter,
    dead_lettered: [Counter; 4],
    pub(crate) dead_letter_retries: Counter,
    in_flight: Gauge,
    /// Attempts that succeeded (`outcome="ok"`).
    duration: Histogram,
    /// Attempts that failed or were cut off (`outcome="failed"`).
    failed_duration: Histogram,
}

impl SubscriberMetrics {
    /// Registers the handles for `spec` with the installed recorder.
    ///
    /// ```
    /// let spec = flowgate::SubscriptionSpec::new("orders.placed").with_durable("billing");
    /// let metrics = flowgate::middleware::metrics::SubscriberMetrics::new(&spec);
    /// ```
    pub fn new(spec: &SubscriptionSpec) -> Self {
        let labels = subscriber_labels(spec);
        describe();
        let with_reason = |name: &'static str, reason: &'static str| {
            let mut labels = labels.to_vec();
            labels.push(("reason", reason.to_owned()));
            metrics::counter!(name, &labels)
        };
        let failed =
            FailureReason::ALL.map(|reason| with_reason(names::ATTEMPTS_FAILED, reason.as_str()));
        let dead_lettered =
            DeadLetterReason::ALL.map(|reason| with_reason(names::DEAD_LETTERED, reason.as_str()));
        Self {
            received: metrics::counter!(names::RECEIVED, &labels),
            redelivered: metrics::counter!(names::REDELIVERED, &labels),
            failed,
            retries: metrics::counter!(names::RETRIES, &labels),
            warnings: Arc::default(),
            channel: spec.channel.as_str().into(),
            acked: metrics::counter!(names::ACKED, &labels),
            nakd: metrics::counter!(names::NAKD, &labels),
            terminated: metrics::counter!(names::TERMINATED, &labels),
            dead_lettered,
            dead_letter_retries: metrics::counter!(names::DEAD_LETTER_RETRIES, &labels),
            in_flight: metrics::gauge!(names::IN_FLIGHT, &labels),
            duration: duration_with(&labels, "ok"),
            failed_duration: duration_with(&labels, "failed"),
        }
    }
}

/// The labels every metric of the subscriber on `spec` carries: `channel`,
/// `durable` and `queue` (empty where it has none).
pub(crate) fn subscriber_labels(spec: &SubscriptionSpec) -> [(&'static str, String); 3] {
    [
        ("channel", spec.channel.clone()),
        ("durable", spec.durable.clone().unwrap_or_default()),
        ("queue", spec.queue.clone().unwrap_or_default()),
    ]
}

/// The duration histogram of attempts with `outcome`.
fn duration_with(labels: &[(&'static str, String)], outcome: &str) -> Histogram {
    let mut labels = labels.to_vec();
    labels.push(("outcome", outcome.to_owned()));
    metrics::histogram!(names::HANDLER_DURATION, &labels)
}

impl SubscriberMetrics {
    /// Counts a failed attempt.
    pub(crate) fn attempt_failed(&self, err: &BoxError) {
        self.failed[FailureReason::of(err).index()].increment(1);
    }

    /// Counts a dead letter the broker stored.
    pub(crate) fn dead_lettered(&self, reason: DeadLetterReason) {
        self.dead_lettered[reason.index()].increment(1);
    }

    /// Counts an in-process retry.
    pub(crate) fn retrying(&self) {
        self.retries.increment(1);
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
            succeeded: false,
        },
    }
}

/// Records one attempt when dropped: finished, failed or cancelled (a
/// timeout, the shutdown deadline), under the outcome `ok` or `failed`.
struct Timer {
    metrics: Arc<SubscriberMetrics>,
    started: Instant,
    succeeded: bool,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.metrics.in_flight.decrement(1.0);
        let duration = if self.succeeded {
            &self.metrics.duration
        } else {
            &self.metrics.failed_duration
        };
        duration.record(self.started.elapsed().as_secs_f64());
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

impl<F: Future<Output = Result<(), BoxError>>> Future for MetricsFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = std::task::ready!(this.future.poll(cx));
        if output.is_ok() {
            this.timer.succeeded = true;
            tracing::debug!(channel = %this.timer.metrics.channel, duration = ?this.timer.started.elapsed(), "handled");
        }
        Poll::Ready(output)
    }
}
