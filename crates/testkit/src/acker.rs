//! Settling in-memory deliveries.

use std::time::Duration;

use flowgate::{AckError, Acker, Metadata};

use crate::broker::{Binding, Settle};
use crate::consumer::Handout;

/// Settles one delivery of an [`InMemory`](crate::InMemory) subscription.
///
/// Settlements reach the broker at once, and fail only when the test makes
/// them fail ([`InMemory::fail_acks`](crate::InMemory::fail_acks) and the
/// like). As on JetStream, settling a message that is no longer pending
/// (acked already, or redelivered to the limit) is ignored, and so is
/// settling a delivery of an ephemeral consumer whose subscription has
/// ended. With coalesced acks (ack policy "all") an ack, and a term too (as
/// JetStream processes it), settles every pending message of the consumer at
/// or below its sequence, and one from a delivery numbered at or below the
/// last applied one's ([`consumer_sequence`](flowgate::Metadata::consumer_sequence))
/// is ignored, as on JetStream.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use flowgate::{Acker, OutgoingMessage, StartPosition, SubscriptionSpec, Transport};
/// use futures::StreamExt;
///
/// let broker = flowgate_testkit::InMemory::new();
/// broker.publish(OutgoingMessage::new("jobs", "1")).await?.await?;
/// let mut spec = SubscriptionSpec::new("jobs").with_durable("worker");
/// spec.start = StartPosition::All;
/// let mut jobs = broker.subscribe(&spec).await?;
///
/// let first = jobs.next().await.expect("delivered");
/// first.acker.nak(None).await?; // redeliver at once
/// let again = jobs.next().await.expect("redelivered");
/// assert_eq!(again.metadata.delivery_count(), 2);
/// again.acker.term().await?;
/// let worker = broker.consumer_info("jobs", "worker").expect("durable");
/// assert_eq!(worker.terminated, vec![1]);
/// # Ok(()) }
/// ```
pub struct InMemoryAcker {
    /// The subscription's binding, which holds the broker too.
    binding: Binding,
    delivery: Handout,
}

impl std::fmt::Debug for InMemoryAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryAcker")
            .field("channel", &self.binding.channel)
            .field("stream_sequence", &self.delivery.sequence)
            .field("delivery_count", &self.delivery.delivery_count)
            .field("consumer_sequence", &self.delivery.consumer_sequence)
            .finish()
    }
}

impl InMemoryAcker {
    pub(crate) fn new(binding: Binding, delivery: Handout) -> Self {
        Self { binding, delivery }
    }

    fn send(&self, action: &'static str, how: Settle) -> Result<(), AckError> {
        self.binding
            .broker
            .settle(&self.binding, self.delivery, how)
            .map_err(|injected| {
                let metadata = Metadata::new(
                    &*self.binding.channel,
                    self.delivery.sequence,
                    self.delivery.delivery_count,
                    std::time::SystemTime::UNIX_EPOCH,
                    None,
                );
                AckError::new(action, &metadata, Box::new(injected))
            })
    }
}

impl Acker for InMemoryAcker {
    async fn ack(&self) -> Result<(), AckError> {
        self.send("ack", Settle::Ack)
    }

    async fn nak(&self, delay: Option<Duration>) -> Result<(), AckError> {
        self.send("nak", Settle::Nak(delay))
    }

    async fn term(&self) -> Result<(), AckError> {
        self.send("term", Settle::Term)
    }

    async fn in_progress(&self) -> Result<(), AckError> {
        self.send("progress", Settle::InProgress)
    }
}
