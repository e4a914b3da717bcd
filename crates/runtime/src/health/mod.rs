//! Health: whether a [`RunningApp`](crate::RunningApp) is connected to its
//! broker, and whether each subscription takes messages and settles them
//! well, for the `/healthz` and `/readyz` endpoints of a service.
//!
//! - **connected**: the transport's connection to the broker
//!   ([`Transport::connection`](crate::Transport::connection)).
//! - per subscription, **last delivery**: how long ago the dispatcher took
//!   a delivery (to the second: the message path only bumps a counter).
//! - **stalled**: the broker holds undelivered messages for the consumer,
//!   the subscription has room for more handlers, and no delivery came for
//!   [`stall_after`](HealthPolicy::stall_after) (a pull that died quietly,
//!   a layer that never gets ready). Judged from the backlog sampled every
//!   [`sample_every`](HealthPolicy::sample_every), and only while connected
//!   with a fresh sample: a broker outage is "not connected", not a stall.
//! - **failing**: more than [`failing_ratio`](HealthPolicy::failing_ratio)
//!   of the recent settlements were failures (nak, term, dead letter).
//! - **ended**: the subscription's dispatcher ended before shutdown (its
//!   transport's stream ended, or it panicked).
//!
//! [`Health::is_live`] is what a liveness probe asks (a restart may cure it:
//! a stalled or ended subscription); [`Health::is_ready`] what a readiness
//! probe asks (live, connected, not failing, not shutting down).
//!
//! The same monitor sets the gauges
//! `flowgate_consumer_pending_messages` and
//! `flowgate_consumer_ack_pending_messages` from each sample.

mod monitor;
mod policy;
mod tally;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::in_flight::InFlight;
use crate::{ConnectionState, ConsumerBacklog, SubscriptionSpec};

pub(crate) use monitor::{BacklogGauges, Monitor, Observed};
pub use policy::HealthPolicy;
pub(crate) use tally::HealthTally;

/// The health of a running app at one moment: see the [module](self).
///
/// ```
/// use flowgate::{ConnectionState, Health};
///
/// let health = Health { connection: ConnectionState::Connected, draining: false, subscriptions: vec![] };
/// assert!(health.is_live() && health.is_ready());
/// let lost = Health { connection: ConnectionState::Disconnected, ..health };
/// assert!(lost.is_live(), "a broker outage is no reason to restart the app");
/// assert!(!lost.is_ready());
/// println!("{lost}"); // disconnected; 0 subscriptions
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// The transport's connection to the broker.
    pub connection: ConnectionState,
    /// The app is shutting down: it takes no more messages.
    pub draining: bool,
    /// Each subscription, in the order the subscribers were added.
    pub subscriptions: Vec<SubscriptionHealth>,
}

impl Health {
    /// Whether the app works or may recover by itself: no subscription is
    /// stalled, or ended before shutdown. What a liveness probe (`/healthz`)
    /// maps to 200 or 503; a broker outage alone keeps it live.
    pub fn is_live(&self) -> bool {
        self.subscriptions
            .iter()
            .all(|s| !s.stalled && (self.draining || !s.ended))
    }

    /// Whether the app does its work now: live, connected, no subscription
    /// failing, not shutting down. What a readiness probe (`/readyz`) maps
    /// to 200 or 503.
    pub fn is_ready(&self) -> bool {
        self.is_live()
            && self.connection.is_up()
            && !self.draining
            && self.subscriptions.iter().all(|s| !s.failing)
    }
}

impl std::fmt::Display for Health {
    /// One line for the app, then one per subscription.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.connection)?;
        if self.draining {
            write!(f, ", draining")?;
        }
        write!(f, "; {} subscriptions", self.subscriptions.len())?;
        for subscription in &self.subscriptions {
            write!(f, "\n{subscription}")?;
        }
        Ok(())
    }
}

/// The health of one subscription: see the [module](self).
///
/// ```
/// use flowgate::SubscriptionHealth;
///
/// let bill = SubscriptionHealth::named("bill", "orders.placed");
/// assert!(!bill.stalled && !bill.failing && !bill.ended);
/// assert_eq!(bill.to_string(), "bill on orders.placed: ok, no delivery yet");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionHealth {
    /// The subscriber's name.
    pub subscriber: String,
    /// Its channel.
    pub channel: String,
    /// Its durable (or queue) consumer; `None` for an ephemeral one.
    pub durable: Option<String>,
    /// How long ago its last delivery arrived (to the monitor's second);
    /// `None` before the first.
    pub last_delivery: Option<Duration>,
    /// The broker's backlog of its consumer at the last sample, and how
    /// long ago that was; `None` before the first, or where the broker does
    /// not tell (NATS Streaming).
    pub backlog: Option<(ConsumerBacklog, Duration)>,
    /// Handlers running now.
    pub in_flight: usize,
    /// The share of failures among its settlements of the recent window,
    /// and how many settlements that counts; `None` with none.
    pub failure_ratio: Option<(f64, u64)>,
    /// Messages wait undelivered on the broker, the subscription has room
    /// for more handlers, and no delivery came for `stall_after`.
    pub stalled: bool,
    /// Failures make up more than `failing_ratio` of enough recent settlements.
    pub failing: bool,
    /// Its dispatcher ended: the app shuts down, or (before that) the
    /// transport's stream ended or the dispatcher panicked.
    pub ended: bool,
}

impl SubscriptionHealth {
    /// A healthy subscription that has seen nothing yet.
    pub fn named(subscriber: impl Into<String>, channel: impl Into<String>) -> Self {
        Self {
            subscriber: subscriber.into(),
            channel: channel.into(),
            durable: None,
            last_delivery: None,
            backlog: None,
            in_flight: 0,
            failure_ratio: None,
            stalled: false,
            failing: false,
            ended: false,
        }
    }
}

impl std::fmt::Display for SubscriptionHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {}: ", self.subscriber, self.channel)?;
        let verdicts: Vec<&str> = [
            (self.ended, "ended"),
            (self.stalled, "stalled"),
            (self.failing, "failing"),
        ]
        .into_iter()
        .filter_map(|(on, word)| on.then_some(word))
        .collect();
        if verdicts.is_empty() {
            write!(f, "ok")?;
        } else {
            write!(f, "{}", verdicts.join(", "))?;
        }
        match self.last_delivery {
            Some(ago) => write!(f, ", last delivery {}s ago", ago.as_secs())?,
            None => write!(f, ", no delivery yet")?,
        }
        if let Some((backlog, _)) = self.backlog {
            write!(
                f,
                ", {} pending, {} ack pending",
                backlog.pending, backlog.ack_pending
            )?;
        }
        if let Some((ratio, settled)) = self.failure_ratio {
            write!(f, ", {:.0}% of {settled} settlements failed", ratio * 100.0)?;
        }
        Ok(())
    }
}

/// One subscription as the probes see it.
pub(crate) struct Tracked {
    pub(crate) subscriber: String,
    pub(crate) spec: SubscriptionSpec,
    pub(crate) tally: Arc<HealthTally>,
    pub(crate) observed: Arc<Mutex<Observed>>,
    pub(crate) in_flight: Arc<InFlight>,
}

impl Tracked {
    fn health(&self, policy: &HealthPolicy, connected: bool, now: Instant) -> SubscriptionHealth {
        let observed = monitor::lock(&self.observed);
        // A delivery since the last tick is a delivery now.
        let last_delivery = if self.tally.deliveries() != observed.deliveries {
            Some(now)
        } else {
            observed.last_delivery
        };
        let (acked, failed) = self.tally.settlements();
        let failure_ratio = observed.settlements.front().and_then(|&(_, a, f)| {
            let (acked, failed) = (acked - a, failed - f);
            let settled = acked + failed;
            (settled > 0).then(|| (failed as f64 / settled as f64, settled))
        });
        let failing = failure_ratio.is_some_and(|(ratio, settled)| {
            settled >= policy.failing_min_settled && ratio > policy.failing_ratio
        });
        let fresh_sample = observed
            .backlog
            .is_some_and(|(at, _)| now.duration_since(at) <= policy.sample_every * 2);
        let waited = observed.waiting_since.map(|since| {
            let since = last_delivery.map_or(since, |delivered| since.max(delivered));
            now.duration_since(since)
        });
        let ended = self.tally.has_ended();
        let in_flight = self.in_flight.running();
        let stalled = connected
            && fresh_sample
            && in_flight < self.spec.max_in_flight
            && waited.is_some_and(|w| w >= policy.stall_after);
        SubscriptionHealth {
            subscriber: self.subscriber.clone(),
            channel: self.spec.channel.clone(),
            durable: self
                .spec
                .durable
                .clone()
                .or_else(|| self.spec.queue.clone()),
            last_delivery: last_delivery.map(|at| now.duration_since(at)),
            backlog: observed
                .backlog
                .map(|(at, backlog)| (backlog, now.duration_since(at))),
            in_flight,
            failure_ratio,
            stalled,
            failing,
            ended,
        }
    }
}

/// Reads the [`Health`] of a running app; cheap to clone, so an HTTP
/// handler can keep one while the app is owned elsewhere (and shut down
/// from there). Get one from [`RunningApp::health_probe`](crate::RunningApp::health_probe).
///
/// ```no_run
/// # async fn demo(app: flowgate::App) -> Result<(), flowgate::Error> {
/// let nats = flowgate::JetStream::connect("nats://127.0.0.1:4222").await?;
/// let running = app.start(nats).await?;
/// let probe = running.health_probe();
/// tokio::spawn(async move {
///     // An HTTP handler: 200 when ready, 503 when not.
///     let status = if probe.health().is_ready() { 200 } else { 503 };
/// });
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HealthProbe {
    pub(crate) connection: Arc<dyn Fn() -> ConnectionState + Send + Sync>,
    pub(crate) stop: CancellationToken,
    pub(crate) subscriptions: Arc<[Tracked]>,
    pub(crate) policy: HealthPolicy,
}

impl std::fmt::Debug for HealthProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthProbe")
            .field("subscriptions", &self.subscriptions.len())
            .field("policy", &self.policy)
            .finish()
    }
}

impl HealthProbe {
    /// The app's health now. Takes one short lock per subscription, never
    /// one the message path takes; asks the broker nothing.
    pub fn health(&self) -> Health {
        let connection = (self.connection)();
        let now = Instant::now();
        Health {
            connection,
            draining: self.stop.is_cancelled(),
            subscriptions: self
                .subscriptions
                .iter()
                .map(|tracked| tracked.health(&self.policy, connection.is_up(), now))
                .collect(),
        }
    }
}
