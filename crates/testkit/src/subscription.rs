//! An in-memory subscription: the client of a pull consumer, with the
//! buffer the real client has, and the broker's side that fills it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use flowgate::{AckPendingFuture, AckPendingProbe, BacklogFuture, BacklogProbe, Delivery};
use futures::Stream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::acker::InMemoryAcker;
use crate::broker::{Binding, Broker};

/// The most messages one pull request asks for, as the JetStream transport.
const MAX_BATCH: usize = 1000;

/// The deliveries of one [`InMemory`](crate::InMemory) subscription.
///
/// It behaves like the JetStream transport's pull subscription: it asks the
/// broker for batches of `min(max_in_flight, 1000)` messages (another one
/// once half of what it asked for is used up), and the broker sends what it
/// can into the subscription's buffer as soon as it can, whether or not the
/// subscription is polled. A delivery in the buffer is delivered for the
/// broker: its ack wait runs and it counts against `max_ack_pending`.
/// [`stop`](flowgate::DeliveryStream::stop) ends the pulling and hands the
/// buffer back; dropping the subscription unsubscribes and drops the buffer
/// (those messages come again after their ack wait).
///
/// Subscriptions bound to the same durable or queue consumer share its
/// messages: each goes to one of them. It waits on the broker's
/// notifications and on the next ack-wait or nak-delay timer
/// ([`tokio::time`]), never by polling. It never ends on its own.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use flowgate::{DeliveryStream, OutgoingMessage, SubscriptionSpec, Transport};
/// use futures::StreamExt;
///
/// let broker = flowgate_testkit::InMemory::new();
/// let mut deliveries = broker.subscribe(&SubscriptionSpec::new("pings")).await?;
/// for n in 1..=3 {
///     broker.publish(OutgoingMessage::new("pings", format!("hello {n}"))).await?.await?;
/// }
/// let delivery = deliveries.next().await.expect("a delivery");
/// assert_eq!(&delivery.payload[..], b"hello 1");
/// assert_eq!(delivery.metadata.consumer_sequence(), Some(1));
/// // The other two arrived in the client's buffer: delivered, not taken.
/// assert_eq!(broker.consumers("pings")[0].pending, vec![1, 2, 3]);
/// let buffered = deliveries.stop();
/// assert_eq!(buffered.len(), 2);
/// # Ok(()) }
/// ```
pub struct InMemorySubscription {
    broker: Arc<Broker>,
    binding: Binding,
    pull: Arc<Pull>,
    /// How many messages one pull request asks for.
    batch: usize,
    /// The broker's side: sends what it can into the buffer.
    server: JoinHandle<()>,
}

impl std::fmt::Debug for InMemorySubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pull = self.pull.lock();
        f.debug_struct("InMemorySubscription")
            .field("channel", &self.binding.channel)
            .field("buffered", &pull.buffer.len())
            .field("stopped", &pull.stopped)
            .finish_non_exhaustive()
    }
}

/// What the client and the broker's side of one subscription share.
#[derive(Default)]
struct Pull {
    state: Mutex<PullState>,
    /// Wakes the broker's side: the client asked for more.
    requested: Notify,
}

#[derive(Default)]
struct PullState {
    /// Delivered by the broker, not yet taken by the client.
    buffer: VecDeque<Delivery<InMemoryAcker>>,
    /// Asked for by the client and not yet delivered.
    owed: usize,
    /// Pulling ended: the broker sends nothing more.
    stopped: bool,
    /// The client, waiting for a delivery.
    waker: Option<Waker>,
}

impl Pull {
    fn lock(&self) -> MutexGuard<'_, PullState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The broker's side: delivers what it owes and can. Returns when to look
    /// again at the latest, or `None` once the pulling has ended.
    fn fill(&self, broker: &Arc<Broker>, binding: &Binding) -> Option<Option<Instant>> {
        // The buffer stays locked while the broker delivers, so a stop either
        // comes before (nothing is delivered) or after (it gets all of them).
        let mut state = self.lock();
        if state.stopped {
            return None;
        }
        let owed = state.owed;
        let before = state.buffer.len();
        let delivered = broker.deliver(binding, owed, |delivery| state.buffer.push_back(delivery));
        if delivered.gone {
            return None;
        }
        state.owed -= delivered.made;
        // A delivery lost in transit still used up what was owed: the
        // client is woken too, to ask again, as the JetStream client does
        // when its pull request is used up or expires without messages.
        let waker = if state.buffer.len() > before || delivered.made > 0 {
            state.waker.take()
        } else {
            None
        };
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Some(delivered.wake)
    }
}

/// The broker's side of one subscription, until it stops.
async fn serve(broker: Arc<Broker>, binding: Binding, pull: Arc<Pull>) {
    loop {
        // Register for wake-ups before looking, so a change between the look
        // and the wait is not missed.
        let waiting = binding.notify.waiting();
        let changed = waiting.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let requested = pull.requested.notified();
        tokio::pin!(requested);
        requested.as_mut().enable();
        let Some(wake) = pull.fill(&broker, &binding) else {
            return;
        };
        let timer = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = changed => {}
            _ = requested => {}
            _ = timer => {}
        }
    }
}

impl InMemorySubscription {
    pub(crate) fn new(broker: Arc<Broker>, binding: Binding, max_in_flight: usize) -> Self {
        let pull = Arc::new(Pull::default());
        let server = tokio::spawn(serve(broker.clone(), binding.clone(), pull.clone()));
        Self {
            broker,
            binding,
            pull,
            batch: max_in_flight.clamp(1, MAX_BATCH),
            server,
        }
    }

    fn end_pulling(&self) -> Vec<Delivery<InMemoryAcker>> {
        let mut state = self.pull.lock();
        state.stopped = true;
        state.owed = 0;
        let buffered = state.buffer.drain(..).collect();
        drop(state);
        self.server.abort();
        buffered
    }
}

impl Drop for InMemorySubscription {
    fn drop(&mut self) {
        drop(self.end_pulling());
        self.broker.unbind(&self.binding);
    }
}

impl flowgate::DeliveryStream<InMemoryAcker> for InMemorySubscription {
    /// Ends the pulling (the broker sends nothing more here) and hands back
    /// what is buffered, oldest first. The stream yields nothing afterwards;
    /// the consumer stays bound until the subscription is dropped.
    fn stop(&mut self) -> Vec<Delivery<InMemoryAcker>> {
        self.end_pulling()
    }

    /// Reads the consumer's count of delivered and unsettled messages, as
    /// JetStream's `num_ack_pending`: messages in flight, in a client's
    /// buffer, lost in transit, or waiting for redelivery.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use flowgate::{Acker, DeliveryStream, OutgoingMessage, SubscriptionSpec, Transport};
    /// use futures::StreamExt;
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// let mut jobs = broker.subscribe(&SubscriptionSpec::new("jobs")).await?;
    /// let probe = jobs.ack_pending_probe().expect("the broker tells");
    /// broker.publish(OutgoingMessage::new("jobs", "1")).await?.await?;
    /// let job = jobs.next().await.expect("delivered");
    /// assert_eq!(probe().await?, 1);
    /// job.acker.ack().await?;
    /// assert_eq!(probe().await?, 0);
    /// # Ok(()) }
    /// ```
    fn ack_pending_probe(&self) -> Option<AckPendingProbe> {
        let broker = self.broker.clone();
        let binding = self.binding.clone();
        Some(Arc::new(move || -> AckPendingFuture {
            let broker = broker.clone();
            let binding = binding.clone();
            Box::pin(async move { broker.ack_pending(&binding) })
        }))
    }

    /// Reads the consumer's count of messages not yet delivered and of
    /// those delivered and unsettled, as JetStream's consumer info. Fails
    /// while the client is [disconnected](crate::InMemory::disconnect).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use flowgate::{ConsumerBacklog, DeliveryStream, OutgoingMessage, SubscriptionSpec, Transport};
    /// use futures::StreamExt;
    ///
    /// let broker = flowgate_testkit::InMemory::new();
    /// let mut spec = SubscriptionSpec::new("jobs");
    /// spec.max_in_flight = 1;
    /// let mut jobs = broker.subscribe(&spec).await?;
    /// let probe = jobs.backlog_probe().expect("the broker tells");
    /// for n in 1..=3 {
    ///     broker.publish(OutgoingMessage::new("jobs", n.to_string())).await?.await?;
    /// }
    /// let _job = jobs.next().await.expect("delivered");
    /// assert_eq!(probe().await?, ConsumerBacklog { pending: 2, ack_pending: 1 });
    /// broker.disconnect();
    /// assert!(probe().await.is_err());
    /// # Ok(()) }
    /// ```
    fn backlog_probe(&self) -> Option<BacklogProbe> {
        let broker = self.broker.clone();
        let binding = self.binding.clone();
        Some(Arc::new(move || -> BacklogFuture {
            let broker = broker.clone();
            let binding = binding.clone();
            Box::pin(async move { broker.backlog(&binding) })
        }))
    }
}

impl Stream for InMemorySubscription {
    type Item = Delivery<InMemoryAcker>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut state = this.pull.lock();
        if state.stopped {
            return Poll::Pending;
        }
        // As the JetStream client: ask for another batch once no more than
        // half of one is owed or buffered.
        if state.owed + state.buffer.len() <= this.batch / 2 {
            state.owed += this.batch;
            this.pull.requested.notify_one();
        }
        match state.buffer.pop_front() {
            Some(delivery) => Poll::Ready(Some(delivery)),
            None => {
                match &state.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => state.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}
