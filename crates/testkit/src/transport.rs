//! [`InMemory`] as a flowgate [`Transport`].

use std::collections::VecDeque;
use std::future::Ready;
use std::sync::Arc;

use flowgate::{
    Error, Exhausted, ExhaustedStream, OutgoingMessage, PublishAck, PublishError, SubscriptionSpec,
    Transport,
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
    /// with other settings is a [`Error::ConsumerMismatch`]).
    async fn subscribe(&self, spec: &SubscriptionSpec) -> Result<InMemorySubscription, Error> {
        let binding = self.broker.bind(spec)?;
        Ok(InMemorySubscription::new(self.broker.clone(), binding))
    }

    /// Stores `message` (or finds the original of a duplicate id) and returns
    /// its receipt, resolved. A subject that is not a valid channel is refused.
    async fn publish(&self, message: OutgoingMessage) -> Result<InMemoryPendingAck, PublishError> {
        let ack = self.broker.publish(message)?;
        Ok(std::future::ready(Ok(ack)))
    }

    /// Nothing is ever buffered: resolves at once.
    async fn flush(&self) -> Result<(), Error> {
        Ok(())
    }

    /// The messages the durable (or queue) consumer of `spec` gives up on
    /// after `max_deliver` unsettled deliveries, as JetStream's max-deliveries
    /// advisory announces them; `None` for an ephemeral consumer.
    async fn exhausted(&self, spec: &SubscriptionSpec) -> Result<Option<ExhaustedStream>, Error> {
        let Some(name) = spec.durable.clone().or_else(|| spec.queue.clone()) else {
            return Ok(None);
        };
        let watch = Watch {
            broker: self.broker.clone(),
            channel: spec.channel.clone(),
            name,
            seen: 0,
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
            let (messages, seen) = self.broker.exhausted(&self.channel, &self.name, self.seen);
            self.seen = seen;
            self.ready.extend(messages);
            if self.ready.is_empty() {
                notified.await;
            }
        }
    }
}
