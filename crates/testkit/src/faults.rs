//! Faults a test injects into the broker: publishes that fail, settlements
//! that fail, deliveries lost on the way to the client. They let a test walk
//! the failure paths a real server takes a network or a full stream to show.

use std::collections::HashMap;

use crate::broker::Settle;
use crate::InMemory;

/// A fault that took effect, as [`InMemory::faults`] lists them.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use flowgate::{OutgoingMessage, Transport};
/// use flowgate_testkit::{Fault, InMemory};
///
/// let broker = InMemory::new();
/// broker.fail_next_publish("audit");
/// let refused = broker.publish(OutgoingMessage::new("audit", "x")).await.unwrap().await;
/// assert!(refused.is_err());
/// assert_eq!(broker.faults(), vec![Fault::Publish { subject: "audit".into() }]);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// A publish on `subject` was refused: nothing was stored.
    Publish {
        /// The subject published to.
        subject: String,
    },
    /// An ack of `sequence` on `channel` failed: the acker returned an
    /// error and the broker did not apply it.
    Ack {
        /// The channel of the message.
        channel: String,
        /// Its stream sequence.
        sequence: u64,
    },
    /// A nak of `sequence` on `channel` failed, and was not applied.
    Nak {
        /// The channel of the message.
        channel: String,
        /// Its stream sequence.
        sequence: u64,
    },
    /// A term of `sequence` on `channel` failed, and was not applied.
    Term {
        /// The channel of the message.
        channel: String,
        /// Its stream sequence.
        sequence: u64,
    },
    /// A delivery of `sequence` on `channel` was lost in transit: the broker
    /// counted it (its delivery count, its consumer sequence, its ack wait)
    /// and the client never got it, so it comes again after the ack wait.
    LostDelivery {
        /// The channel of the message.
        channel: String,
        /// Its stream sequence.
        sequence: u64,
        /// The consumer's number of the lost delivery: the client sees a gap there.
        consumer_sequence: u64,
    },
    /// A call to the attempt store of a consumer of `channel` (a load, a
    /// save or a forget of the record of `sequence`) never answered, as
    /// while the bucket behind it elects a leader on a real cluster.
    AttemptStoreStalled {
        /// The channel of the consumer.
        channel: String,
        /// The stream sequence whose record was asked for.
        sequence: u64,
    },
    /// The client lost its connection to the broker
    /// ([`InMemory::disconnect`]): until [`InMemory::reconnect`], nothing
    /// is delivered and publishes, settlements and attempt-store calls fail.
    Disconnected,
}

/// The error an injected fault makes a publish or a settlement return.
#[derive(Debug)]
pub(crate) struct Injected(&'static str);

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (a fault injected by the test)", self.0)
    }
}

impl std::error::Error for Injected {}

impl Injected {
    /// What every request fails with while the client is disconnected.
    pub(crate) const NOT_CONNECTED: Injected =
        Injected("not connected to the broker: it reconnects by itself; retry then");
}

/// The faults armed and the ones that took effect, under the broker lock.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// How many are armed in all (a disconnection counts as one): the hot
    /// paths look no further while 0.
    armed: usize,
    /// The client is disconnected from the broker.
    disconnected: bool,
    publishes: HashMap<String, usize>,
    acks: HashMap<String, usize>,
    naks: HashMap<String, usize>,
    terms: HashMap<String, usize>,
    losses: HashMap<String, usize>,
    store_stalls: HashMap<String, usize>,
    fired: Vec<Fault>,
}

impl Faults {
    fn map(&mut self, kind: Kind) -> &mut HashMap<String, usize> {
        match kind {
            Kind::Publish => &mut self.publishes,
            Kind::Ack => &mut self.acks,
            Kind::Nak => &mut self.naks,
            Kind::Term => &mut self.terms,
            Kind::Loss => &mut self.losses,
            Kind::StoreStall => &mut self.store_stalls,
        }
    }

    fn arm(&mut self, kind: Kind, key: &str, n: usize) {
        let added = n.min(usize::MAX - self.armed);
        if added == 0 {
            return;
        }
        *self.map(kind).entry(key.to_owned()).or_default() += added;
        self.armed += added;
    }

    /// Takes one armed fault of `kind` for `key`, if any.
    fn take(&mut self, kind: Kind, key: &str) -> bool {
        if self.armed == 0 {
            return false;
        }
        let map = self.map(kind);
        let Some(left) = map.get_mut(key) else {
            return false;
        };
        *left -= 1;
        if *left == 0 {
            map.remove(key);
        }
        self.armed -= 1;
        true
    }

    /// Drops the connection; `false` when it was down already.
    pub(crate) fn disconnect(&mut self) -> bool {
        if self.disconnected {
            return false;
        }
        self.disconnected = true;
        self.armed += 1;
        self.fired.push(Fault::Disconnected);
        true
    }

    /// Restores the connection; `false` when it was up.
    pub(crate) fn reconnect(&mut self) -> bool {
        if !self.disconnected {
            return false;
        }
        self.disconnected = false;
        self.armed -= 1;
        true
    }

    /// Whether the client is disconnected now.
    #[inline]
    pub(crate) fn is_disconnected(&self) -> bool {
        self.armed != 0 && self.disconnected
    }

    /// Whether a publish on `subject` fails now (and notes it).
    pub(crate) fn publish(&mut self, subject: &str) -> Option<Injected> {
        if self.is_disconnected() {
            return Some(Injected::NOT_CONNECTED);
        }
        if !self.take(Kind::Publish, subject) {
            return None;
        }
        self.fired.push(Fault::Publish {
            subject: subject.to_owned(),
        });
        Some(Injected("publish refused"))
    }

    /// Whether settling `sequence` of `channel` this way fails now (and notes it).
    #[inline]
    pub(crate) fn settle(&mut self, channel: &str, sequence: u64, how: Settle) -> Option<Injected> {
        if self.armed == 0 {
            return None;
        }
        if self.disconnected {
            return Some(Injected::NOT_CONNECTED);
        }
        let kind = match how {
            Settle::Ack => Kind::Ack,
            Settle::Nak(_) => Kind::Nak,
            Settle::Term => Kind::Term,
            Settle::InProgress => return None,
        };
        if !self.take(kind, channel) {
            return None;
        }
        let channel = channel.to_owned();
        let (fault, what) = match kind {
            Kind::Ack => (Fault::Ack { channel, sequence }, "ack failed"),
            Kind::Nak => (Fault::Nak { channel, sequence }, "nak failed"),
            _ => (Fault::Term { channel, sequence }, "term failed"),
        };
        self.fired.push(fault);
        Some(Injected(what))
    }

    /// Whether this delivery of `sequence` of `channel` is lost (and notes it).
    #[inline]
    pub(crate) fn lose(&mut self, channel: &str, sequence: u64, consumer_sequence: u64) -> bool {
        if self.armed == 0 {
            return false;
        }
        if !self.take(Kind::Loss, channel) {
            return false;
        }
        self.fired.push(Fault::LostDelivery {
            channel: channel.to_owned(),
            sequence,
            consumer_sequence,
        });
        true
    }

    /// Whether this call to the attempt store of a consumer of `channel`
    /// about `sequence` never answers (and notes it).
    pub(crate) fn stall_store(&mut self, channel: &str, sequence: u64) -> bool {
        if self.is_disconnected() {
            return true;
        }
        if !self.take(Kind::StoreStall, channel) {
            return false;
        }
        self.fired.push(Fault::AttemptStoreStalled {
            channel: channel.to_owned(),
            sequence,
        });
        true
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Publish,
    Ack,
    Nak,
    Term,
    Loss,
    StoreStall,
}

/// Fault injection: make the broker fail the way a real one does, so a test
/// can show what the app does then. Each call arms faults that take effect
/// on the next matching operations, in any app on this broker; armed faults
/// add up. [`faults`](InMemory::faults) lists the ones that took effect.
impl InMemory {
    fn arm(&self, kind: Kind, key: &str, n: usize) {
        self.broker.lock().faults.arm(kind, key, n);
    }

    /// Makes the next publish on `subject` fail: see [`fail_publishes`](Self::fail_publishes).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// # #[event(channel = "orders.placed")]
    /// # struct OrderPlaced { id: u64 }
    /// let broker = flowgate_testkit::InMemory::new();
    /// broker.fail_next_publish("orders.placed");
    /// assert!(broker.publish_event(&OrderPlaced { id: 1 }).await.is_err());
    /// assert!(broker.publish_event(&OrderPlaced { id: 1 }).await.is_ok());
    /// assert_eq!(broker.channel_messages("orders.placed").len(), 1);
    /// # }
    /// ```
    pub fn fail_next_publish(&self, subject: &str) {
        self.fail_publishes(subject, 1);
    }

    /// Makes the next `n` publishes on `subject` fail: the broker stores
    /// nothing and the receipt is a [`PublishError::Broker`](flowgate::PublishError::Broker),
    /// as when a JetStream stream is full (`max_msgs` with discard `new`).
    /// On a dead-letter subject this is a full dead-letter stream: the
    /// runtime must retry the dead letter and keep the original alive.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use flowgate::{App, Failure};
    /// use flowgate_testkit::{Fault, InMemory};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// #[event(channel = "orders.placed")]
    /// struct OrderPlaced { id: u64 }
    ///
    /// #[flowgate::subscriber(durable = "billing", start = "all")]
    /// async fn bill(_: OrderPlaced) -> Result<(), Failure> {
    ///     Err(Failure::permanent("refused"))
    /// }
    ///
    /// let broker = InMemory::new();
    /// broker.fail_publishes("dlq.orders.placed", 2); // the dead-letter stream is full
    /// broker.publish_event(&OrderPlaced { id: 1 }).await.unwrap();
    /// let app = App::new().subscriber(bill::subscriber()).start(broker.clone()).await.unwrap();
    /// broker.wait_idle().await;
    ///
    /// // Tried three times; stored on the third; only then terminated.
    /// let refused = broker.faults().iter().filter(|f| matches!(f, Fault::Publish { .. })).count();
    /// assert_eq!(refused, 2);
    /// assert_eq!(broker.channel_messages("dlq.orders.placed").len(), 1);
    /// assert_eq!(broker.settlements("orders.placed").terminated(), vec![1]);
    /// app.shutdown().await.unwrap();
    /// # }
    /// ```
    pub fn fail_publishes(&self, subject: &str, n: usize) {
        self.arm(Kind::Publish, subject, n);
    }

    /// Makes the next ack on `channel` fail: see [`fail_acks`](Self::fail_acks).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use flowgate::{Acker, OutgoingMessage, SubscriptionSpec, Transport};
    /// use futures::StreamExt;
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// let mut jobs = broker.subscribe(&SubscriptionSpec::new("jobs")).await?;
    /// broker.publish(OutgoingMessage::new("jobs", "1")).await?.await?;
    /// let job = jobs.next().await.expect("delivered");
    /// broker.fail_next_ack("jobs");
    /// assert!(job.acker.ack().await.is_err());
    /// assert_eq!(broker.consumers("jobs")[0].pending, vec![1], "not applied");
    /// job.acker.ack().await?;
    /// assert_eq!(broker.consumers("jobs")[0].acked, vec![1]);
    /// # Ok(()) }
    /// ```
    pub fn fail_next_ack(&self, channel: &str) {
        self.fail_acks(channel, 1);
    }

    /// Makes the next `n` acks on `channel` (by any of its consumers) fail:
    /// the acker returns an error and the broker does not apply the ack, as
    /// when the connection drops while the ack is on its way. The message
    /// stays pending and comes again after its ack wait.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use flowgate::App;
    ///
    /// #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// #[event(channel = "orders.placed")]
    /// struct OrderPlaced { id: u64 }
    ///
    /// #[flowgate::subscriber(durable = "billing", start = "all")]
    /// async fn bill(_: OrderPlaced) -> Result<(), std::io::Error> {
    ///     Ok(())
    /// }
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// broker.fail_acks("orders.placed", 1);
    /// broker.publish_event(&OrderPlaced { id: 1 }).await.unwrap();
    /// let app = App::new().subscriber(bill::subscriber()).start(broker.clone()).await.unwrap();
    /// broker.wait_idle().await;
    /// // The lost ack: handled again after the 30 s ack wait, and acked then.
    /// let log = broker.settlements("orders.placed");
    /// assert_eq!(log.expired(), vec![1]);
    /// assert_eq!(log.acked(), vec![1]);
    /// assert_eq!(log.of(1).last().unwrap().delivery_count, 2);
    /// app.shutdown().await.unwrap();
    /// # }
    /// ```
    pub fn fail_acks(&self, channel: &str, n: usize) {
        self.arm(Kind::Ack, channel, n);
    }

    /// Makes the next nak on `channel` fail: see [`fail_naks`](Self::fail_naks).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use flowgate::{Acker, OutgoingMessage, SubscriptionSpec, Transport};
    /// use futures::StreamExt;
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// let mut jobs = broker.subscribe(&SubscriptionSpec::new("jobs")).await?;
    /// broker.publish(OutgoingMessage::new("jobs", "1")).await?.await?;
    /// let job = jobs.next().await.expect("delivered");
    /// broker.fail_next_nak("jobs");
    /// assert!(job.acker.nak(None).await.is_err());
    /// assert!(broker.settlements("jobs").nakked().is_empty());
    /// # Ok(()) }
    /// ```
    pub fn fail_next_nak(&self, channel: &str) {
        self.fail_naks(channel, 1);
    }

    /// Makes the next `n` naks on `channel` fail, unapplied: the message
    /// comes again after its ack wait instead of its nak delay.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use flowgate::{Acker, OutgoingMessage, SubscriptionSpec, Transport};
    /// use futures::StreamExt;
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// let mut jobs = broker.subscribe(&SubscriptionSpec::new("jobs")).await?;
    /// broker.publish(OutgoingMessage::new("jobs", "1")).await?.await?;
    /// broker.fail_naks("jobs", 2);
    /// let job = jobs.next().await.expect("delivered");
    /// assert!(job.acker.nak(None).await.is_err());
    /// assert!(job.acker.nak(None).await.is_err());
    /// job.acker.nak(None).await?;
    /// assert_eq!(broker.faults().len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn fail_naks(&self, channel: &str, n: usize) {
        self.arm(Kind::Nak, channel, n);
    }

    /// Makes the next term on `channel` fail: see [`fail_terms`](Self::fail_terms).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use flowgate::{Acker, OutgoingMessage, SubscriptionSpec, Transport};
    /// use futures::StreamExt;
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// let mut jobs = broker.subscribe(&SubscriptionSpec::new("jobs")).await?;
    /// broker.publish(OutgoingMessage::new("jobs", "1")).await?.await?;
    /// let job = jobs.next().await.expect("delivered");
    /// broker.fail_next_term("jobs");
    /// assert!(job.acker.term().await.is_err());
    /// assert_eq!(broker.consumers("jobs")[0].pending, vec![1]);
    /// # Ok(()) }
    /// ```
    pub fn fail_next_term(&self, channel: &str) {
        self.fail_terms(channel, 1);
    }

    /// Makes the next `n` terms on `channel` fail, unapplied: a message the
    /// runtime dead-lettered stays pending and comes again after its ack
    /// wait (its dead letter's message id keeps a second copy out).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use flowgate::{App, Failure};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// #[event(channel = "orders.placed")]
    /// struct OrderPlaced { id: u64 }
    ///
    /// #[flowgate::subscriber(durable = "billing", start = "all")]
    /// async fn bill(_: OrderPlaced) -> Result<(), Failure> {
    ///     Err(Failure::permanent("refused"))
    /// }
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// broker.fail_terms("orders.placed", 1);
    /// broker.publish_event(&OrderPlaced { id: 1 }).await.unwrap();
    /// let app = App::new().subscriber(bill::subscriber()).start(broker.clone()).await.unwrap();
    /// broker.wait_idle().await;
    /// let log = broker.settlements("orders.placed");
    /// assert_eq!(log.expired(), vec![1], "the first term was lost");
    /// assert_eq!(log.terminated(), vec![1]);
    /// assert_eq!(broker.channel_messages("dlq.orders.placed").len(), 1, "de-duplicated");
    /// app.shutdown().await.unwrap();
    /// # }
    /// ```
    pub fn fail_terms(&self, channel: &str, n: usize) {
        self.arm(Kind::Term, channel, n);
    }

    /// Loses the next `n` deliveries on `channel` (by any of its consumers)
    /// in transit: the broker counts each one, with its delivery count, its
    /// consumer sequence and its ack wait, but the client never gets it, as
    /// after a connection blip. The client sees a gap in the consumer
    /// sequence; the message comes again once its ack wait ends.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use flowgate::{OutgoingMessage, StartPosition, SubscriptionSpec, Transport};
    /// use flowgate_testkit::Fault;
    /// use futures::StreamExt;
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// broker.publish(OutgoingMessage::new("jobs", "1")).await?.await?;
    /// broker.publish(OutgoingMessage::new("jobs", "2")).await?.await?;
    /// broker.lose_next_deliveries("jobs", 1);
    /// let mut spec = SubscriptionSpec::new("jobs");
    /// spec.start = StartPosition::All;
    /// let mut jobs = broker.subscribe(&spec).await?;
    ///
    /// let first = jobs.next().await.expect("delivered");
    /// assert_eq!(first.metadata.stream_sequence(), 2);
    /// assert_eq!(first.metadata.consumer_sequence(), Some(2), "1 was lost: a gap");
    /// let again = jobs.next().await.expect("redelivered after the ack wait");
    /// assert_eq!(again.metadata.stream_sequence(), 1);
    /// assert_eq!(again.metadata.delivery_count(), 2);
    /// assert_eq!(
    ///     broker.faults(),
    ///     vec![Fault::LostDelivery { channel: "jobs".into(), sequence: 1, consumer_sequence: 1 }]
    /// );
    /// # Ok(()) }
    /// ```
    pub fn lose_next_deliveries(&self, channel: &str, n: usize) {
        self.arm(Kind::Loss, channel, n);
    }

    /// Makes the next `n` calls to the attempt store of any durable or queue
    /// consumer of `channel` (loads, saves and forgets of a message's
    /// attempt record) never answer, as while the key-value bucket behind it
    /// elects a new leader on a real cluster. The runtime gives up on each
    /// after its own time limit and goes on counting from the broker's
    /// delivery count; the messages behind it are not held up.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), flowgate::BoxError> {
    /// use flowgate::{SubscriptionSpec, Transport};
    /// use flowgate_testkit::Fault;
    /// use std::time::Duration;
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// let spec = SubscriptionSpec::new("jobs").with_durable("worker");
    /// let store = broker.attempt_store(&spec).await?.expect("a durable has one");
    /// broker.stall_attempt_store("jobs", 1);
    /// let stalled = tokio::time::timeout(Duration::from_secs(60), store.load(7)).await;
    /// assert!(stalled.is_err(), "no answer");
    /// assert_eq!(store.load(7).await?, None, "the next call answers");
    /// assert_eq!(
    ///     broker.faults(),
    ///     vec![Fault::AttemptStoreStalled { channel: "jobs".into(), sequence: 7 }]
    /// );
    /// # Ok(()) }
    /// ```
    pub fn stall_attempt_store(&self, channel: &str, n: usize) {
        self.arm(Kind::StoreStall, channel, n);
    }

    /// Disarms every fault that has not taken effect yet (the list of those
    /// that did is kept). A disconnection lasts until [`reconnect`](Self::reconnect).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # #[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
    /// # #[event(channel = "orders.placed")]
    /// # struct OrderPlaced { id: u64 }
    /// let broker = flowgate_testkit::InMemory::new();
    /// broker.fail_publishes("orders.placed", usize::MAX); // full until "purged"
    /// assert!(broker.publish_event(&OrderPlaced { id: 1 }).await.is_err());
    /// broker.clear_faults();
    /// assert!(broker.publish_event(&OrderPlaced { id: 1 }).await.is_ok());
    /// # }
    /// ```
    pub fn clear_faults(&self) {
        let mut state = self.broker.lock();
        let fired = std::mem::take(&mut state.faults.fired);
        let disconnected = state.faults.disconnected;
        state.faults = Faults {
            fired,
            armed: usize::from(disconnected),
            disconnected,
            ..Faults::default()
        };
    }

    /// The injected faults that took effect so far, oldest first. Each one
    /// counts as a change for [`wait_until`](Self::wait_until).
    /// (See [`Fault`] for an example.)
    pub fn faults(&self) -> Vec<Fault> {
        self.broker.lock().faults.fired.clone()
    }
}
