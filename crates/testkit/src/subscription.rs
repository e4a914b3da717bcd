//! An in-memory subscription: the deliveries of one consumer, as a stream.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use flowgate::Delivery;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use crate::acker::InMemoryAcker;
use crate::broker::{Binding, Broker, Next};

/// The deliveries of one [`InMemory`](crate::InMemory) subscription.
///
/// It never ends on its own; drop it to unsubscribe. Subscriptions bound to
/// the same durable or queue consumer share its messages: each goes to one of
/// them. A subscription waits on the broker's notifications and on the next
/// ack-wait or nak-delay timer ([`tokio::time`]), never by polling.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use flowgate::{OutgoingMessage, SubscriptionSpec, Transport};
/// use futures::StreamExt;
///
/// let broker = flowgate_testkit::InMemory::new();
/// let mut deliveries = broker.subscribe(&SubscriptionSpec::new("pings")).await?;
/// broker.publish(OutgoingMessage::new("pings", "hello")).await?.await?;
/// let delivery = deliveries.next().await.expect("a delivery");
/// assert_eq!(&delivery.payload[..], b"hello");
/// # Ok(()) }
/// ```
pub struct InMemorySubscription {
    inner: BoxStream<'static, Delivery<InMemoryAcker>>,
}

impl std::fmt::Debug for InMemorySubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemorySubscription")
            .finish_non_exhaustive()
    }
}

/// Keeps the consumer bound while the subscription lives.
struct Bound {
    broker: Arc<Broker>,
    binding: Binding,
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.broker.unbind(&self.binding);
    }
}

impl Bound {
    async fn next_delivery(&self) -> Delivery<InMemoryAcker> {
        // Nothing is buffered on the client side: a delivery is fetched from
        // the broker, never ready on the first poll. A caller that drains
        // what is buffered (`now_or_never`, as the dispatcher does at
        // shutdown) finds nothing, and cannot loop on its own redeliveries.
        Fetch(false).await;
        loop {
            // Usually there is one: look without registering for a wake-up.
            if let Next::Delivery(delivery) = self.broker.next(&self.binding) {
                return delivery;
            }
            // Register for a wake-up before looking again, so a change
            // between the look and the wait is not missed.
            let waiting = self.binding.notify.waiting();
            let notified = waiting.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.broker.next(&self.binding) {
                Next::Delivery(delivery) => return delivery,
                Next::Wait(Some(at)) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                Next::Wait(None) => notified.await,
            }
        }
    }
}

/// Pending once, waking itself at once: one trip through the scheduler.
struct Fetch(bool);

impl std::future::Future for Fetch {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl InMemorySubscription {
    pub(crate) fn new(broker: Arc<Broker>, binding: Binding) -> Self {
        let bound = Bound { broker, binding };
        let inner = futures::stream::unfold(bound, |bound| async move {
            let delivery = bound.next_delivery().await;
            Some((delivery, bound))
        })
        .boxed();
        Self { inner }
    }
}

impl flowgate::DeliveryStream<InMemoryAcker> for InMemorySubscription {
    /// Nothing is buffered on the client side: there is nothing to hand back.
    fn stop(&mut self) -> Vec<Delivery<InMemoryAcker>> {
        self.inner = futures::stream::pending().boxed();
        Vec::new()
    }
}

impl Stream for InMemorySubscription {
    type Item = Delivery<InMemoryAcker>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}
