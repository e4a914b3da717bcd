//! Looking inside the broker from a test: stored messages, consumer state,
//! and waiting until every live consumer has settled everything.

use std::collections::BTreeMap;

use tokio::time::Instant;

use crate::broker::Change;
use crate::channel::StoredMessage;
use crate::settlement::Settlements;
use crate::InMemory;

/// A snapshot of one consumer's delivery state.
///
/// Sequences are stream sequences of the consumer's channel, in ascending order.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use flowgate::{Acker, OutgoingMessage, StartPosition, SubscriptionSpec, Transport};
/// use futures::StreamExt;
///
/// let broker = flowgate_testkit::InMemory::new();
/// for _ in 0..3 {
///     broker.publish(OutgoingMessage::new("jobs", "x")).await?.await?;
/// }
/// let mut spec = SubscriptionSpec::new("jobs").with_durable("worker");
/// spec.start = StartPosition::All;
/// let mut jobs = broker.subscribe(&spec).await?;
/// let first = jobs.next().await.expect("delivered");
/// let _second = jobs.next().await.expect("delivered");
/// first.acker.ack().await?;
///
/// let worker = broker.consumer_info("jobs", "worker").expect("durable");
/// assert_eq!(worker.ack_floor, 1);
/// assert_eq!(worker.acked, vec![1]);
/// // 3 is delivered too: it waits in the subscription's buffer.
/// assert_eq!(worker.pending, vec![2, 3]);
/// assert_eq!(worker.delivery_counts.get(&2), Some(&1));
/// assert_eq!(worker.next_sequence, 4);
/// assert_eq!(worker.consumer_sequence, 3);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerInfo {
    /// The channel it reads.
    pub channel: String,
    /// Its durable or queue name; `None` for an ephemeral consumer.
    pub name: Option<String>,
    /// Subscriptions bound to it now.
    pub live_subscriptions: usize,
    /// Its ack policy is "all" (a subscriber with `ack = "coalesced"`): an
    /// ack settles every pending message at or below its sequence.
    pub acks_all: bool,
    /// The most messages it lets be delivered and unsettled at once:
    /// `max_in_flight`, doubled with coalesced acks (as on JetStream).
    pub max_ack_pending: usize,
    /// The number of its last delivery (JetStream's consumer sequence): one
    /// more with every delivery, redeliveries and lost ones included.
    pub consumer_sequence: u64,
    /// The next sequence it delivers for the first time.
    pub next_sequence: u64,
    /// The highest sequence at or below which nothing is pending (JetStream's
    /// ack floor).
    pub ack_floor: u64,
    /// Sequences acked.
    pub acked: Vec<u64>,
    /// Sequences delivered and not settled: in flight, or waiting for
    /// redelivery after a nak or an expired ack wait.
    pub pending: Vec<u64>,
    /// How many times each delivered sequence was delivered.
    pub delivery_counts: BTreeMap<u64, u32>,
    /// Sequences terminated: never delivered again.
    pub terminated: Vec<u64>,
    /// Sequences dropped after `max_deliver` deliveries without an ack
    /// (dead-lettered).
    pub dead_lettered: Vec<u64>,
    /// The most messages ever pending at once (never above `max_ack_pending`).
    pub pending_high_water: usize,
}

impl ConsumerInfo {
    /// How many times `sequence` was delivered (0 when never).
    pub fn delivery_count(&self, sequence: u64) -> u32 {
        self.delivery_counts.get(&sequence).copied().unwrap_or(0)
    }
}

impl InMemory {
    /// Every message stored on `channel`, oldest first (empty for an unknown channel).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use flowgate::{OutgoingMessage, Transport};
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// broker.publish(OutgoingMessage::new("a.b", "1")).await?.await?;
    /// broker.publish(OutgoingMessage::new("a.b", "2")).await?.await?;
    /// let stored = broker.channel_messages("a.b");
    /// assert_eq!(stored.iter().map(|m| m.sequence).collect::<Vec<_>>(), vec![1, 2]);
    /// assert!(broker.channel_messages("a.c").is_empty());
    /// # Ok(()) }
    /// ```
    pub fn channel_messages(&self, channel: &str) -> Vec<StoredMessage> {
        let state = self.broker.lock();
        state
            .channels
            .get(channel)
            .map(|c| {
                c.stream
                    .messages()
                    .iter()
                    .filter(|m| flowgate::pattern_covers(channel, &m.subject))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The settlement log of `channel`: every ack, nak, term and in-progress
    /// its consumers received and every expiry and dead letter, oldest first
    /// (empty for an unknown channel). See [`Settlements`] for an example.
    pub fn settlements(&self, channel: &str) -> Settlements {
        let now = Instant::now();
        let mut state = self.broker.lock();
        let Some(channel_state) = state.channels.get_mut(channel) else {
            return Settlements::default();
        };
        let mut change = Change::default();
        for consumer in channel_state.consumers.values_mut() {
            change.expired(consumer, now);
        }
        let log = channel_state.log.snapshot();
        drop(state);
        self.broker.inspected(change);
        log
    }

    /// The durable or queue consumer `name` of `channel`, if it exists.
    /// (See [`ConsumerInfo`] for an example.)
    pub fn consumer_info(&self, channel: &str, name: &str) -> Option<ConsumerInfo> {
        let now = Instant::now();
        let mut state = self.broker.lock();
        let channel_state = state.channels.get_mut(channel)?;
        let id = *channel_state.named.get(name)?;
        let consumer = channel_state.consumers.get_mut(&id)?;
        let mut change = Change::default();
        change.expired(consumer, now);
        let info = consumer.info(channel);
        drop(state);
        self.broker.inspected(change);
        Some(info)
    }

    /// Every consumer of `channel`, ephemeral ones included, durables first by
    /// name, then ephemerals in creation order.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use flowgate::{SubscriptionSpec, Transport};
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// let live = broker.subscribe(&SubscriptionSpec::new("pings")).await?;
    /// assert_eq!(broker.consumers("pings").len(), 1);
    /// drop(live); // an ephemeral consumer ends with its subscription
    /// assert!(broker.consumers("pings").is_empty());
    /// # Ok(()) }
    /// ```
    pub fn consumers(&self, channel: &str) -> Vec<ConsumerInfo> {
        let now = Instant::now();
        let mut state = self.broker.lock();
        let Some(channel_state) = state.channels.get_mut(channel) else {
            return Vec::new();
        };
        let mut consumers: Vec<_> = channel_state.consumers.iter_mut().collect();
        consumers.sort_by(|(a_id, a), (b_id, b)| {
            (a.name.is_none(), &a.name, *a_id).cmp(&(b.name.is_none(), &b.name, *b_id))
        });
        let mut change = Change::default();
        let infos = consumers
            .into_iter()
            .map(|(_, consumer)| {
                change.expired(consumer, now);
                consumer.info(channel)
            })
            .collect();
        drop(state);
        self.broker.inspected(change);
        infos
    }

    /// Whether every consumer with a live subscription has delivered every
    /// message of its channel and has none pending (in flight, or waiting for
    /// redelivery). Consumers without a subscription are not counted.
    pub fn is_idle(&self) -> bool {
        self.idle_check().0
    }

    /// Waits until [`is_idle`](Self::is_idle) holds: every message a live
    /// consumer can deliver was delivered and settled for good, and nothing
    /// waits for a redelivery. Redeliveries after naks and expired ack waits
    /// are waited for (they take [`tokio::time`], so paused time skips them).
    ///
    /// The usual test: publish, start the app, `wait_idle`, assert. The app
    /// must be subscribed first (`App::start` returns once it is) and its
    /// consumers must reach the messages: a new consumer with the default
    /// `StartPosition::New` does not see messages published before it.
    /// A handler that never returns keeps the broker busy forever, so bound
    /// the wait with `tokio::time::timeout` when that can happen.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use flowgate::{Acker, OutgoingMessage, SubscriptionSpec, Transport};
    /// use futures::StreamExt;
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// let mut pings = broker.subscribe(&SubscriptionSpec::new("pings")).await?;
    /// tokio::spawn(async move {
    ///     while let Some(ping) = pings.next().await {
    ///         let _ = ping.acker.ack().await;
    ///     }
    /// });
    /// broker.publish(OutgoingMessage::new("pings", "1")).await?.await?;
    /// broker.wait_idle().await;
    /// assert_eq!(broker.consumers("pings")[0].acked, vec![1]);
    /// # Ok(()) }
    /// ```
    pub async fn wait_idle(&self) {
        loop {
            // Register before looking: a consumer that becomes idle after
            // the look notifies `idle`.
            let notified = self.broker.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.idle_check() {
                (true, _) => return,
                (false, Some(at)) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                (false, None) => notified.await,
            }
        }
    }

    /// Waits until `condition` holds, checking it after every change in the
    /// broker (a publish, a delivery, a settlement, an expired timer), never
    /// by polling. Pending ack-wait and nak-delay timers keep firing while it
    /// waits, on [`tokio::time`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use flowgate::{OutgoingMessage, SubscriptionSpec, Transport};
    /// use futures::StreamExt;
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// let mut jobs = broker.subscribe(&SubscriptionSpec::new("jobs")).await?;
    /// broker.publish(OutgoingMessage::new("jobs", "1")).await?.await?;
    /// let _unsettled = jobs.next().await.expect("delivered");
    /// // Nobody settles it: the 30 s ack wait runs out (at once, paused time).
    /// broker.wait_until(|b| !b.settlements("jobs").expired().is_empty()).await;
    /// let again = jobs.next().await.expect("redelivered");
    /// assert_eq!(again.metadata.delivery_count(), 2);
    /// # Ok(()) }
    /// ```
    pub async fn wait_until(&self, mut condition: impl FnMut(&InMemory) -> bool) {
        self.wait_for(|broker| condition(broker).then_some(()))
            .await;
    }

    /// Waits until `check` returns something, and returns it (see [`wait_until`](Self::wait_until)).
    pub(crate) async fn wait_for<T>(&self, mut check: impl FnMut(&InMemory) -> Option<T>) -> T {
        let watch = self.broker.watch_changes();
        loop {
            // Register for a wake-up before looking, so no change is missed.
            let notified = watch.changed();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Fires due timers of live consumers and finds the next one.
            let (_, wake) = self.idle_check();
            if let Some(found) = check(self) {
                return found;
            }
            match wake {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Whether the broker is idle, and when the next timer of a live consumer fires.
    fn idle_check(&self) -> (bool, Option<Instant>) {
        let now = Instant::now();
        let mut state = self.broker.lock();
        let mut idle = true;
        let mut wake: Option<Instant> = None;
        let mut expired = false;
        let mut gave_up = false;
        for channel in state.channels.values_mut() {
            let last = channel.stream.last_sequence();
            for consumer in channel.consumers.values_mut() {
                if consumer.subscriptions == 0 {
                    continue;
                }
                let given_up = consumer.given_up();
                if consumer.expire(now) {
                    consumer.notify.wake();
                    expired = true;
                    gave_up |= consumer.given_up() > given_up;
                }
                idle &= consumer.is_idle(last);
                if let Some(at) = consumer.next_wake() {
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                }
            }
        }
        drop(state);
        if expired {
            // Expiries are changes too: whoever watches them (other idle
            // waiters, the given-up-messages streams) must hear of them.
            self.broker.changed(Change {
                may_idle: true,
                gave_up,
            });
        }
        (idle, wake)
    }
}
