//! What a transport's subscription offers besides its stream of deliveries:
//! stopping cleanly, and (for coalesced acks) the broker's view of its consumer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;

use super::Delivery;
use crate::Error;

/// A future that reads how many messages the broker holds as delivered and
/// not yet acked for one consumer (JetStream's `num_ack_pending`).
pub type AckPendingFuture = Pin<Box<dyn Future<Output = Result<usize, Error>> + Send>>;

/// Reads the broker's count of a consumer's delivered-and-unacked messages.
/// Coalesced acks use it to learn that every such message is known to this
/// subscription before one ack may cover them all.
pub type AckPendingProbe = Arc<dyn Fn() -> AckPendingFuture + Send + Sync>;

/// Where a consumer stood when a subscription bound it, as the broker said.
///
/// ```
/// let fresh = flowgate::ConsumerProgress { last_delivery: 0, unacked: 0 };
/// assert_eq!(fresh.unacked, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerProgress {
    /// The consumer's number of its last delivery (0: none yet).
    pub last_delivery: u64,
    /// How many of its deliveries were not acked.
    pub unacked: usize,
}

/// What the broker holds for one consumer, as a health sample reads it.
///
/// ```
/// let backlog = flowgate::ConsumerBacklog { pending: 12, ack_pending: 3 };
/// assert_eq!(backlog.pending + backlog.ack_pending, 15);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConsumerBacklog {
    /// Messages the consumer has not delivered yet (JetStream's `num_pending`).
    pub pending: u64,
    /// Messages delivered and not yet acked (JetStream's `num_ack_pending`):
    /// in flight, in a client's buffer, lost in transit, or waiting for
    /// redelivery.
    pub ack_pending: u64,
}

/// A future that reads a consumer's [`ConsumerBacklog`] from the broker.
pub type BacklogFuture = Pin<Box<dyn Future<Output = Result<ConsumerBacklog, Error>> + Send>>;

/// Reads the broker's [`ConsumerBacklog`] of one subscription's consumer:
/// sampled every few seconds for the `flowgate_consumer_*_messages` gauges
/// and for [`Health`](crate::Health)'s `stalled`.
pub type BacklogProbe = Arc<dyn Fn() -> BacklogFuture + Send + Sync>;

/// A live subscription: its deliveries, until [`stop`](DeliveryStream::stop)
/// or drop. It re-subscribes on its own after connection loss.
///
/// ```
/// use std::collections::VecDeque;
/// use std::pin::Pin;
/// use std::task::{Context, Poll};
///
/// use flowgate::{Delivery, DeliveryStream};
///
/// /// Deliveries from a list, as a test double might hand them out.
/// struct Listed(VecDeque<Delivery<()>>);
///
/// impl futures::Stream for Listed {
///     type Item = Delivery<()>;
///     fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Delivery<()>>> {
///         Poll::Ready(self.0.pop_front())
///     }
/// }
///
/// impl DeliveryStream<()> for Listed {
///     fn stop(&mut self) -> Vec<Delivery<()>> {
///         self.0.drain(..).collect()
///     }
/// }
///
/// let mut listed = Listed(VecDeque::new());
/// assert!(listed.stop().is_empty());
/// ```
pub trait DeliveryStream<A>: Stream<Item = Delivery<A>> + Send + Unpin + 'static {
    /// Stops asking the broker for deliveries, and hands back those that
    /// reached the client and wait in its buffer (no handler took them), so
    /// the caller can give them back to the broker. Deliveries the broker sent
    /// after the stop are lost in transit and come again after the ack wait.
    fn stop(&mut self) -> Vec<Delivery<A>>;

    /// For coalesced acks: reads the broker's count of this subscription's
    /// consumer's delivered and unacked messages. `None` where the broker
    /// cannot tell; coalesced acks are then refused.
    fn ack_pending_probe(&self) -> Option<AckPendingProbe> {
        None
    }

    /// For coalesced acks: where the consumer stood when this subscription
    /// bound it. With nothing unacked then, a window whose first delivery
    /// follows `last_delivery` knows every message an ack could cover, and
    /// need not ask the broker first. `None` where the broker did not say.
    fn bound_at(&self) -> Option<ConsumerProgress> {
        None
    }

    /// For health and metrics: reads what the broker holds for this
    /// subscription's consumer (see [`ConsumerBacklog`]). `None` where the
    /// broker does not tell (NATS Streaming).
    fn backlog_probe(&self) -> Option<BacklogProbe> {
        None
    }
}
