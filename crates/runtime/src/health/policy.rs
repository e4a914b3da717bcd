//! [`HealthPolicy`]: the thresholds behind a [`Health`](crate::Health) report.

use std::time::Duration;

/// When a subscription counts as stalled or failing, and how often the
/// broker's backlog of each consumer is sampled. Set it with
/// [`App::health_policy`](crate::App::health_policy).
///
/// | field | default | what |
/// | --- | --- | --- |
/// | `stall_after` | 60 s | messages wait undelivered on the broker, the subscription has room for more handlers, and none was delivered for this long: stalled |
/// | `failing_ratio` | 0.5 | more than this share of the settlements in `failing_window` were failures (nak, term, dead letter): failing |
/// | `failing_window` | 60 s | the recent window `failing_ratio` looks at |
/// | `failing_min_settled` | 10 | fewer settlements than this in the window never count as failing |
/// | `sample_every` | 5 s | how often each consumer's pending and ack-pending counts are read from the broker |
///
/// ```
/// use std::time::Duration;
///
/// let policy = flowgate::HealthPolicy {
///     stall_after: Duration::from_secs(120),
///     failing_ratio: 0.2,
///     ..Default::default()
/// };
/// let app = flowgate::App::new().health_policy(policy);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthPolicy {
    /// How long messages may wait undelivered on the broker, while the
    /// subscription has room for more handlers, before it is stalled. Keep
    /// it above the time a reconnect takes (a few seconds); where several
    /// instances share a consumer, above the longest handler too (the
    /// others may hold all of the consumer's room meanwhile).
    pub stall_after: Duration,
    /// The share of failed settlements (nak, terminate, dead letter) over
    /// `failing_window` above which a subscription is failing.
    pub failing_ratio: f64,
    /// The recent window the failure share is counted over.
    pub failing_window: Duration,
    /// The fewest settlements in the window that can make a subscription
    /// failing, so one failed message of a quiet channel does not.
    pub failing_min_settled: u64,
    /// How often each consumer's backlog is read from the broker (one
    /// consumer-info request per subscription) for the gauges and `stalled`.
    pub sample_every: Duration,
}

impl HealthPolicy {
    /// The defaults in the table above.
    pub const DEFAULT: HealthPolicy = HealthPolicy {
        stall_after: Duration::from_secs(60),
        failing_ratio: 0.5,
        failing_window: Duration::from_secs(60),
        failing_min_settled: 10,
        sample_every: Duration::from_secs(5),
    };

    /// A policy with every duration at least `TICK`, the monitors' resolution.
    pub(crate) fn sane(mut self) -> Self {
        let tick = super::monitor::TICK;
        self.stall_after = self.stall_after.max(tick);
        self.failing_window = self.failing_window.max(tick);
        self.sample_every = self.sample_every.max(tick);
        self
    }
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}
