//! [`InMemory`] as a flowgate [`Transport`].

use std::future::Ready;

use flowgate::{Error, OutgoingMessage, PublishAck, PublishError, SubscriptionSpec, Transport};

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
}
