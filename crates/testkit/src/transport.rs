//! [`InMemory`] as a flowgate [`Transport`].

use std::collections::VecDeque;
use std::future::Ready;
use std::sync::Arc;

use flowgate::{
    AttemptStore, Error, Exhausted, ExhaustedStream, OutgoingMessage, PublishAck, PublishError,
    SubscriptionSpec, Transport,
};
use futures::StreamExt;

use crate::broker::Broker;

use crate::acker::InMemoryAcker;
use crate::subscription::InMemorySubscription;
use crate::InMemory;

/// The receipt of an in-memory publish: resolved already, since the message
/// is stored before [`Transport::publish`] returns.
pub type InMemoryPendingAck = Ready<Result<PublishAck, PublishError>>;

impl Transport for InMemory {
    type Acker = InMemoryAcker;
    type Subscription = InMemorySubscription;
    type PendingAck = InMemoryPendingAck;

    /// Binds the consumer `spec` names (created when new; an existing durable
    /// with other settings is a [`Error::ConsumerMismatch`]), and starts the
    /// broker's side of the pull subscription on the current tokio runtime.
    async fn subscribe(&self, spec: &SubscriptionSpec) -> Result<InMemorySubscription, Error> {
        let binding = self.broker.bind(spec)?;
        Ok(InMemorySubscription::new(
            self.broker.clone(),
            binding,
            spec.max_in_flight,
        ))
    }

    /// Stores `message` (or finds the original of a duplicate id) and returns
    /// its receipt, resolved. A subject that is not a valid channel is
    /// refused; a publish an injected fault refuses
    /// ([`fail_publishes`](InMemory::fail_publishes)) stores nothing and its
    /// receipt is the error, as JetStream's for a full stream.
    async fn publish(&self, message: OutgoingMessage) -> Result<InMemoryPendingAck, PublishError> {
        let receipt = self.broker.publish(message)?;
        Ok(std::future::ready(receipt))
    }

    /// Nothing is ever buffered: resolves at once.
    async fn flush(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Yes: an ack settles every pending message at or below it for a
    /// consumer with `ack = "coalesced"` (ack policy "all").
    fn supports_coalesced_acks(&self) -> bool {
        true
    }

    /// Connected, unless a test [disconnected](InMemory::disconnect) it.
    fn connection(&self) -> flowgate::ConnectionState {
        if self.is_connected() {
            flowgate::ConnectionState::Connected
        } else {
            flowgate::ConnectionState::Disconnected
        }
    }

    /// The attempts of the durable (or queue) consumer of `spec`, kept by the
    /// broker: every app on this broker bound to that consumer name on that
    /// channel shares them, also after a restart. `None` for an ephemeral
    /// consumer. [`recorded_attempts`](InMemory::recorded_attempts) reads them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flowgate::BoxError> {
    /// use flowgate::{SubscriptionSpec, Transport};
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// let spec = SubscriptionSpec::new("jobs").with_durable("worker");
    /// let first = broker.attempt_store(&spec).await?.expect("a durable has one");
    /// first.save(4, 2).await?;
    /// // Another app on the same broker (a restart, a second instance):
    /// let second = broker.clone().attempt_store(&spec).await?.expect("the same one");
    /// assert_eq!(second.load(4).await?, Some(2));
    /// second.forget(4).await?;
    /// assert_eq!(first.load(4).await?, None);
    /// assert!(broker.attempt_store(&SubscriptionSpec::new("jobs")).await?.is_none());
    /// # Ok(()) }
    /// ```
    async fn attempt_store(
        &self,
        spec: &SubscriptionSpec,
    ) -> Result<Option<Arc<dyn AttemptStore>>, Error> {
        let Some(name) = spec.durable.as_deref().or(spec.queue.as_deref()) else {
            return Ok(None);
        };
        let store: Arc<dyn AttemptStore> = Arc::new(crate::attempts::ConsumerAttempts {
            broker: self.broker.clone(),
            channel: spec.channel.clone(),
            records: self.broker.attempts.of(&spec.channel, name),
        });
        Ok(Some(store))
    }

    /// The messages the durable (or queue) consumer of `spec` gives up on
    /// after `max_deliver` unsettled deliveries, from now on, as JetStream's
    /// max-deliveries advisory announces them: the broker gives up when the
    /// last delivery's ack wait ends (or its last nak arrives), and a
    /// give-up while nobody listens is missed, as an advisory nobody is
    /// subscribed to. `None` for an ephemeral consumer.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use flowgate::{Acker, OutgoingMessage, StartPosition, SubscriptionSpec, Transport};
    /// use futures::StreamExt;
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// let mut spec = SubscriptionSpec::new("jobs").with_durable("worker");
    /// spec.start = StartPosition::All;
    /// spec.max_deliver = Some(1);
    /// broker.publish(OutgoingMessage::new("jobs", "1")).await?.await?;
    /// broker.publish(OutgoingMessage::new("jobs", "2")).await?.await?;
    /// let mut jobs = broker.subscribe(&spec).await?;
    /// jobs.next().await.expect("1").acker.nak(None).await?; // its last delivery
    ///
    /// // Listening from now: the give-up of 1 came before, and is missed.
    /// let mut given_up = broker.exhausted(&spec).await?.expect("a durable");
    /// jobs.next().await.expect("2").acker.nak(None).await?;
    /// let notice = given_up.next().await.expect("a notice");
    /// assert_eq!(notice.metadata.stream_sequence(), 2);
    /// # Ok(()) }
    /// ```
    async fn exhausted(&self, spec: &SubscriptionSpec) -> Result<Option<ExhaustedStream>, Error> {
        let Some(name) = spec.durable.clone().or_else(|| spec.queue.clone()) else {
            return Ok(None);
        };
        let seen = self.broker.given_up_so_far(&spec.channel, &name);
        let watch = Watch {
            broker: self.broker.clone(),
            channel: spec.channel.clone(),
            name,
            seen,
            ready: VecDeque::new(),
        };
        Ok(Some(
            futures::stream::unfold(watch, |mut watch| async move {
                let next = watch.next().await;
                Some((next, watch))
            })
            .boxed(),
        ))
    }
}

/// Follows one consumer's given-up messages.
struct Watch {
    broker: Arc<Broker>,
    channel: String,
    name: String,
    seen: usize,
    ready: VecDeque<Exhausted>,
}

impl Watch {
    async fn next(&mut self) -> Exhausted {
        loop {
            if let Some(message) = self.ready.pop_front() {
                return message;
            }
            // Register for a wake-up before looking, so no give-up is missed.
            let notified = self.broker.given_up.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (messages, seen, wake) =
                self.broker.exhausted(&self.channel, &self.name, self.seen);
            self.seen = seen;
            self.ready.extend(messages);
            if !self.ready.is_empty() {
                continue;
            }
            // The broker gives up when a timer fires, also while no
            // subscription of the consumer runs to fire it.
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
}
