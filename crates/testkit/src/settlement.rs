//! The settlement log: every ack, nak, term and in-progress a channel's
//! consumers received, and every expiry and dead letter the broker decided.

use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// What became of one delivery: what its handler (through the runtime)
/// answered, or what the broker decided when no answer came.
///
/// [`call`](crate::call()) returns the first outcome of a delivery that is not
/// [`InProgress`](Outcome::InProgress).
///
/// ```
/// use std::time::Duration;
/// use flowgate_testkit::Outcome;
///
/// let outcome = Outcome::Nakked { delay: Some(Duration::from_millis(100)) };
/// assert!(outcome.is_nak());
/// assert!(!Outcome::Acked.is_nak());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Acked: handled, never delivered again. With coalesced acks (ack
    /// policy "all") also every pending message an ack of a higher sequence
    /// covered: see [`Settlement::covered_by`].
    Acked,
    /// Nak'd: delivered again after `delay` (at once when `None`).
    Nakked {
        /// The redelivery delay asked for.
        delay: Option<Duration>,
    },
    /// Terminated without a dead letter: a handler's own `term()` (manual
    /// acks), or a failure of a subscriber whose dead letters are off. Never
    /// delivered again. With coalesced acks JetStream processes a term as an
    /// ack: it also acks every pending message below it (logged as
    /// [`Acked`](Outcome::Acked), [`covered_by`](Settlement::covered_by)
    /// this one).
    Terminated,
    /// Sent to the dead letters by the runtime (a permanent failure, a spent
    /// failure budget, a payload that does not decode), then terminated once
    /// the broker stored the dead letter. With coalesced acks the runtime
    /// sends no term: the message is logged as acked.
    DeadLettered,
    /// Work in progress: the ack wait restarted.
    InProgress,
    /// The ack wait ran out without a settlement: delivered again (broker's decision).
    Expired,
    /// Delivered `max_deliver` times without a settlement (a hung handler, a
    /// crashed app): the broker stops delivering it. The runtime dead-letters
    /// it when an app is listening at that moment.
    Exhausted,
}

impl Outcome {
    /// Whether this is a nak, whatever its delay.
    pub fn is_nak(&self) -> bool {
        matches!(self, Outcome::Nakked { .. })
    }
}

/// One entry of a channel's settlement log.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use flowgate::{Acker, OutgoingMessage, StartPosition, SubscriptionSpec, Transport};
/// use flowgate_testkit::Outcome;
/// use futures::StreamExt;
///
/// let broker = flowgate_testkit::InMemory::new();
/// broker.publish(OutgoingMessage::new("jobs", "1")).await?.await?;
/// let mut spec = SubscriptionSpec::new("jobs").with_durable("worker");
/// spec.start = StartPosition::All;
/// let mut jobs = broker.subscribe(&spec).await?;
/// jobs.next().await.expect("delivered").acker.ack().await?;
///
/// let log = broker.settlements("jobs");
/// assert_eq!(log[0].consumer.as_deref(), Some("worker"));
/// assert_eq!((log[0].sequence, log[0].delivery_count), (1, 1));
/// assert_eq!(log[0].outcome, Outcome::Acked);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settlement {
    /// The durable or queue consumer; `None` for an ephemeral one.
    pub consumer: Option<Arc<str>>,
    /// The stream sequence of the message.
    pub sequence: u64,
    /// Which delivery of the message it was (1 for the first).
    pub delivery_count: u32,
    /// What became of it.
    pub outcome: Outcome,
    /// When, on [`tokio::time`]'s clock.
    pub at: Instant,
    /// For an [`Acked`](Outcome::Acked) entry of a consumer with coalesced
    /// acks (ack policy "all"): the higher sequence whose ack settled this
    /// one too (or whose term: JetStream processes a term as an ack). `None`
    /// for a message acked by its own ack, and for every other outcome.
    pub covered_by: Option<u64>,
}

/// The settlement log of one channel, oldest first, all consumers together
/// (ephemeral ones included, also after they ended).
///
/// It dereferences to `[Settlement]`; the methods pick sequences by outcome.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use flowgate::{Acker, OutgoingMessage, StartPosition, SubscriptionSpec, Transport};
/// use futures::StreamExt;
///
/// let broker = flowgate_testkit::InMemory::new();
/// broker.publish(OutgoingMessage::new("jobs", "1")).await?.await?;
/// broker.publish(OutgoingMessage::new("jobs", "2")).await?.await?;
/// let mut spec = SubscriptionSpec::new("jobs");
/// spec.start = StartPosition::All;
/// spec.max_deliver = Some(1);
/// let mut jobs = broker.subscribe(&spec).await?;
/// jobs.next().await.expect("delivered").acker.nak(None).await?;
/// jobs.next().await.expect("delivered").acker.term().await?;
///
/// let log = broker.settlements("jobs");
/// assert_eq!(log.nakked(), vec![1]);
/// assert_eq!(log.exhausted(), vec![1]); // its one delivery was spent
/// assert_eq!(log.terminated(), vec![2]);
/// assert!(log.dead_lettered().is_empty(), "no dead letter was published");
/// assert!(log.acked().is_empty());
/// assert_eq!(log.len(), 3);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settlements(Vec<Settlement>);

impl Settlements {
    /// The entries of one consumer: its durable or queue name, or `None`
    /// for the ephemeral ones.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use flowgate::{Acker, OutgoingMessage, StartPosition, SubscriptionSpec, Transport};
    /// use futures::StreamExt;
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// broker.publish(OutgoingMessage::new("jobs", "1")).await?.await?;
    /// for (durable, acks) in [("billing", true), ("audit", false)] {
    ///     let mut spec = SubscriptionSpec::new("jobs");
    ///     spec.start = StartPosition::All;
    ///     spec.durable = Some(durable.into());
    ///     let delivery = broker.subscribe(&spec).await?.next().await.expect("delivered");
    ///     if acks {
    ///         delivery.acker.ack().await?;
    ///     } else {
    ///         delivery.acker.nak(None).await?;
    ///     }
    /// }
    /// let log = broker.settlements("jobs");
    /// assert_eq!(log.acked(), vec![1], "all consumers together");
    /// assert_eq!(log.of_consumer(Some("billing")).acked(), vec![1]);
    /// assert!(log.of_consumer(Some("audit")).acked().is_empty());
    /// assert_eq!(log.of_consumer(Some("audit")).nakked(), vec![1]);
    /// # Ok(()) }
    /// ```
    pub fn of_consumer(&self, consumer: Option<&str>) -> Settlements {
        Settlements(
            self.0
                .iter()
                .filter(|s| s.consumer.as_deref() == consumer)
                .cloned()
                .collect(),
        )
    }

    /// Sequences with this outcome, in log order (a sequence nak'd twice is listed twice).
    pub fn with(&self, outcome: Outcome) -> Vec<u64> {
        self.matching(|o| *o == outcome)
    }

    /// Sequences acked, by their own ack or (coalesced acks) covered by the
    /// ack of a higher sequence.
    pub fn acked(&self) -> Vec<u64> {
        self.with(Outcome::Acked)
    }

    /// Sequences acked by an ack of their own: with coalesced acks, one per
    /// ack the app sent that settled something (each also settled what it
    /// covered). Without, the same as [`acked`](Self::acked).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use flowgate::{Acker, AckMode, OutgoingMessage, StartPosition, SubscriptionSpec, Transport};
    /// use futures::StreamExt;
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// for n in 1..=3 {
    ///     broker.publish(OutgoingMessage::new("jobs", n.to_string())).await?.await?;
    /// }
    /// let mut spec = SubscriptionSpec::new("jobs").with_durable("worker");
    /// spec.start = StartPosition::All;
    /// spec.ack = AckMode::Coalesced;
    /// let mut jobs = broker.subscribe(&spec).await?;
    /// let _one = jobs.next().await.expect("delivered");
    /// let _two = jobs.next().await.expect("delivered");
    /// let three = jobs.next().await.expect("delivered");
    /// three.acker.ack().await?; // ack policy "all": settles 1 and 2 too
    ///
    /// let log = broker.settlements("jobs");
    /// assert_eq!(log.acked(), vec![1, 2, 3]);
    /// assert_eq!(log.acked_directly(), vec![3]);
    /// assert_eq!(log.of(1)[0].covered_by, Some(3));
    /// # Ok(()) }
    /// ```
    pub fn acked_directly(&self) -> Vec<u64> {
        self.0
            .iter()
            .filter(|s| s.outcome == Outcome::Acked && s.covered_by.is_none())
            .map(|s| s.sequence)
            .collect()
    }

    /// Sequences nak'd, whatever the delay, once per nak.
    pub fn nakked(&self) -> Vec<u64> {
        self.matching(Outcome::is_nak)
    }

    /// Sequences terminated, with a dead letter or without.
    pub fn terminated(&self) -> Vec<u64> {
        self.matching(|o| matches!(o, Outcome::Terminated | Outcome::DeadLettered))
    }

    /// Sequences whose ack wait ran out, once per expiry.
    pub fn expired(&self) -> Vec<u64> {
        self.with(Outcome::Expired)
    }

    /// Sequences the runtime sent to the dead letters, then terminated.
    pub fn dead_lettered(&self) -> Vec<u64> {
        self.with(Outcome::DeadLettered)
    }

    /// Sequences the broker stopped delivering after `max_deliver`
    /// deliveries without a settlement.
    pub fn exhausted(&self) -> Vec<u64> {
        self.with(Outcome::Exhausted)
    }

    /// The entries of one sequence, oldest first.
    pub fn of(&self, sequence: u64) -> Vec<&Settlement> {
        self.0.iter().filter(|s| s.sequence == sequence).collect()
    }

    /// The entries, oldest first.
    pub fn into_vec(self) -> Vec<Settlement> {
        self.0
    }

    fn matching(&self, pick: impl Fn(&Outcome) -> bool) -> Vec<u64> {
        self.0
            .iter()
            .filter(|s| pick(&s.outcome))
            .map(|s| s.sequence)
            .collect()
    }
}

impl Deref for Settlements {
    type Target = [Settlement];

    fn deref(&self) -> &[Settlement] {
        &self.0
    }
}

/// A channel's log, shared by its consumers (which write it under the broker lock).
#[derive(Debug, Clone, Default)]
pub(crate) struct Log(Arc<Mutex<Vec<Settlement>>>);

impl Log {
    pub(crate) fn record(&self, settlement: Settlement) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(settlement);
    }

    pub(crate) fn snapshot(&self) -> Settlements {
        Settlements(
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}
