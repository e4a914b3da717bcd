//! One subscription's monitor: once a [`TICK`] it turns the message path's
//! counters into the time of the last delivery and a window of settlements,
//! and every `sample_every` it reads the consumer's backlog from the broker
//! into the `flowgate_consumer_*_messages` gauges.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use metrics::Gauge;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::tally::HealthTally;
use super::HealthPolicy;
use crate::middleware::metrics::names;
use crate::{BacklogProbe, ConsumerBacklog, SubscriptionSpec};

/// The monitors' resolution: the time of a delivery is known to this.
pub(crate) const TICK: Duration = Duration::from_secs(1);

/// What one subscription's monitor has seen, for health reports.
#[derive(Debug)]
pub(crate) struct Observed {
    /// When the monitor started.
    pub(crate) started: Instant,
    /// The tally's delivery count at the last tick, and the first tick that saw it.
    pub(crate) deliveries: u64,
    pub(crate) last_delivery: Option<Instant>,
    /// Settlement counts (acked, failed) at past ticks, oldest first: the
    /// first is the newest at or before the window's start.
    pub(crate) settlements: VecDeque<(Instant, u64, u64)>,
    /// The last backlog the broker told, and when.
    pub(crate) backlog: Option<(Instant, ConsumerBacklog)>,
    /// Since when the broker's samples say messages wait undelivered;
    /// `None` once a sample says none do.
    pub(crate) waiting_since: Option<Instant>,
}

impl Observed {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            started: now,
            deliveries: 0,
            last_delivery: None,
            settlements: VecDeque::new(),
            backlog: None,
            waiting_since: None,
        }
    }

    fn tick(&mut self, tally: &HealthTally, window: Duration, now: Instant) {
        let deliveries = tally.deliveries();
        if deliveries != self.deliveries {
            self.deliveries = deliveries;
            self.last_delivery = Some(now);
        }
        let (acked, failed) = tally.settlements();
        self.settlements.push_back((now, acked, failed));
        let start = now.checked_sub(window).unwrap_or(self.started);
        while self.settlements.len() > 1 && self.settlements[1].0 <= start {
            self.settlements.pop_front();
        }
    }

    fn sampled(&mut self, backlog: ConsumerBacklog, now: Instant) {
        self.backlog = Some((now, backlog));
        let waiting = backlog.pending > 0;
        self.waiting_since = match (waiting, self.waiting_since) {
            (false, _) => None,
            (true, Some(since)) => Some(since),
            (true, None) => Some(now),
        };
    }
}

/// The observations of one subscription, shared by its monitor and the
/// health probes.
pub(crate) type SharedObserved = Arc<Mutex<Observed>>;

pub(crate) fn lock(observed: &Mutex<Observed>) -> MutexGuard<'_, Observed> {
    observed.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The backlog gauges of one subscription, labelled as its other metrics.
pub(crate) struct BacklogGauges {
    pending: Gauge,
    ack_pending: Gauge,
}

impl BacklogGauges {
    /// Registers the gauges for `spec` with the installed recorder.
    pub(crate) fn new(spec: &SubscriptionSpec) -> Self {
        let labels = crate::middleware::metrics::subscriber_labels(spec);
        Self {
            pending: metrics::gauge!(names::CONSUMER_PENDING, &labels),
            ack_pending: metrics::gauge!(names::CONSUMER_ACK_PENDING, &labels),
        }
    }

    fn set(&self, backlog: ConsumerBacklog) {
        self.pending.set(backlog.pending as f64);
        self.ack_pending.set(backlog.ack_pending as f64);
    }
}

/// A backlog sample on its way, bounded by the sampling interval.
type Sampling = std::pin::Pin<Box<tokio::time::Timeout<crate::BacklogFuture>>>;

/// What one subscription's monitor works with.
pub(crate) struct Monitor {
    pub(crate) tally: Arc<HealthTally>,
    pub(crate) observed: SharedObserved,
    pub(crate) probe: Option<BacklogProbe>,
    pub(crate) gauges: BacklogGauges,
    pub(crate) policy: HealthPolicy,
    pub(crate) channel: Arc<str>,
}

impl Monitor {
    /// Runs until `finish` is cancelled.
    pub(crate) async fn run(self, finish: CancellationToken) {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_sample = Instant::now();
        let mut sampling: Option<Sampling> = None;
        loop {
            tokio::select! {
                _ = finish.cancelled() => return,
                _ = ticks.tick() => {
                    let now = Instant::now();
                    lock(&self.observed).tick(&self.tally, self.policy.failing_window, now);
                }
                Some(sample) = futures::future::OptionFuture::from(sampling.as_mut()),
                    if sampling.is_some() => {
                    sampling = None;
                    self.record(sample);
                }
            }
            if let (Some(probe), None) = (&self.probe, &sampling) {
                let now = Instant::now();
                if now >= next_sample {
                    next_sample = now + self.policy.sample_every;
                    sampling = Some(Box::pin(tokio::time::timeout(
                        self.policy.sample_every,
                        probe(),
                    )));
                }
            }
        }
    }

    fn record(
        &self,
        sample: Result<Result<ConsumerBacklog, crate::Error>, tokio::time::error::Elapsed>,
    ) {
        match sample {
            Ok(Ok(backlog)) => {
                self.gauges.set(backlog);
                lock(&self.observed).sampled(backlog, Instant::now());
            }
            Ok(Err(err)) => {
                tracing::debug!(channel = %self.channel, error = %err, "could not read the consumer's backlog; trying again at the next sample");
            }
            Err(_) => {
                tracing::debug!(channel = %self.channel, "the broker did not tell the consumer's backlog in time; trying again at the next sample");
            }
        }
    }
}
