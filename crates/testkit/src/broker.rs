//! The broker: channels, their consumers, and the one lock around them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use flowgate::{
    Delivery, Exhausted, Metadata, OutgoingMessage, PublishAck, PublishError, SubscriptionSpec,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::acker::InMemoryAcker;
use crate::channel::Channel;
use crate::consumer::{Consumer, ConsumerConfig};
use crate::settlement::Log;

/// Identifies one consumer for as long as the broker lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConsumerId(u64);

/// An in-process message broker with JetStream's delivery semantics: the
/// [`Transport`](flowgate::Transport) for unit tests and for running examples
/// without a server.
///
/// Cloning is cheap and every clone talks to the same broker, so a test keeps
/// one clone to publish and inspect while the app runs on another.
///
/// | flowgate | in memory (as on JetStream) |
/// | --- | --- |
/// | channel `orders.placed` | a stream `orders_placed`, sequences from 1 |
/// | `durable` / `queue` | a consumer kept by the broker across subscriptions; all subscriptions bound to it share its messages |
/// | neither | an ephemeral consumer that ends with its subscription |
/// | `max_in_flight` | `max_ack_pending`: at most that many unsettled messages per consumer |
/// | `ack_wait`, `max_deliver`, `start` | as on JetStream, on [`tokio::time`] (paused time works) |
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use flowgate::{OutgoingMessage, Transport};
/// use futures::StreamExt;
///
/// let broker = flowgate_testkit::InMemory::new();
/// let mut spec = flowgate::SubscriptionSpec::new("orders.placed").with_durable("billing");
/// spec.start = flowgate::StartPosition::All;
///
/// let ack = broker.publish(OutgoingMessage::new("orders.placed", "{}")).await?.await?;
/// assert_eq!((ack.stream.as_str(), ack.sequence), ("orders_placed", 1));
///
/// let mut deliveries = broker.subscribe(&spec).await?;
/// let delivery = deliveries.next().await.expect("a delivery");
/// assert_eq!(delivery.metadata.stream_sequence(), 1);
/// flowgate::Acker::ack(&delivery.acker).await?;
///
/// let billing = broker.consumer_info("orders.placed", "billing").expect("a consumer");
/// assert_eq!(billing.acked, vec![1]);
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct InMemory {
    pub(crate) broker: Arc<Broker>,
}

impl std::fmt::Debug for InMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.broker.lock();
        f.debug_struct("InMemory")
            .field("channels", &state.channels.len())
            .finish_non_exhaustive()
    }
}

impl InMemory {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The shared state behind every clone of [`InMemory`].
#[derive(Debug, Default)]
pub(crate) struct Broker {
    state: Mutex<State>,
    /// Notified on every change, for [`InMemory::wait_idle`].
    pub(crate) changed: Notify,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) channels: HashMap<String, ChannelState>,
    next_consumer: u64,
}

/// A channel's messages and the consumers reading it.
#[derive(Debug)]
pub(crate) struct ChannelState {
    pub(crate) stream: Channel,
    pub(crate) consumers: HashMap<ConsumerId, Consumer>,
    /// Durable and queue consumers by name.
    pub(crate) named: HashMap<String, ConsumerId>,
    /// Every settlement of every consumer, ended ephemerals included.
    pub(crate) log: Log,
}

impl ChannelState {
    fn new(name: &str) -> Self {
        Self {
            stream: Channel::new(name),
            consumers: HashMap::new(),
            named: HashMap::new(),
            log: Log::default(),
        }
    }
}

/// What a subscription gets when it asks for its next delivery.
// Matched as soon as it is returned, never stored: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Next {
    Delivery(Delivery<InMemoryAcker>),
    /// Nothing now; ask again when notified or at this instant.
    Wait(Option<Instant>),
}

/// How a delivery is settled.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Settle {
    Ack,
    Nak(Option<std::time::Duration>),
    Term,
    InProgress,
}

/// Where a subscription is bound.
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    pub(crate) channel: Arc<str>,
    pub(crate) consumer: ConsumerId,
    pub(crate) notify: Arc<Notify>,
}

impl Broker {
    /// Locks the state. A panic while it was held cannot leave it half
    /// updated (every update is a few infallible steps), so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn publish(&self, message: OutgoingMessage) -> Result<PublishAck, PublishError> {
        flowgate::validate_channel(&message.subject)?;
        let mut state = self.lock();
        let channel = state
            .channels
            .entry(message.subject.clone())
            .or_insert_with(|| ChannelState::new(&message.subject));
        let (ack, stored) = channel.stream.store(message);
        if stored {
            for consumer in channel.consumers.values() {
                consumer.notify.notify_waiters();
            }
            drop(state);
            self.changed.notify_waiters();
        }
        Ok(ack)
    }

    /// Binds a subscription to the consumer `spec` names, creating it when it
    /// does not exist.
    pub(crate) fn bind(&self, spec: &SubscriptionSpec) -> Result<Binding, flowgate::Error> {
        spec.validate()?;
        let wanted = ConsumerConfig::from_spec(spec);
        let name = spec.durable.as_deref().or(spec.queue.as_deref());
        let mut guard = self.lock();
        let state = &mut *guard;
        let channel = state
            .channels
            .entry(spec.channel.clone())
            .or_insert_with(|| ChannelState::new(&spec.channel));
        let existing = name.and_then(|name| channel.named.get(name).copied());
        let id = match existing {
            Some(id) => {
                let consumer = channel.consumers.get(&id).ok_or_else(|| {
                    flowgate::Error::Broker("in-memory consumer index is inconsistent".into())
                })?;
                if let Some(mismatch) =
                    consumer
                        .config
                        .mismatch(&spec.channel, name.unwrap_or_default(), &wanted)
                {
                    return Err(mismatch);
                }
                id
            }
            None => {
                state.next_consumer += 1;
                let id = ConsumerId(state.next_consumer);
                let consumer = Consumer::new(
                    name.map(Arc::from),
                    wanted,
                    &channel.stream,
                    channel.log.clone(),
                );
                channel.consumers.insert(id, consumer);
                if let Some(name) = name {
                    channel.named.insert(name.to_owned(), id);
                }
                id
            }
        };
        let consumer = channel
            .consumers
            .get_mut(&id)
            .ok_or_else(|| flowgate::Error::Broker("in-memory consumer vanished".into()))?;
        consumer.subscriptions += 1;
        let binding = Binding {
            channel: Arc::from(spec.channel.as_str()),
            consumer: id,
            notify: consumer.notify.clone(),
        };
        drop(guard);
        self.changed.notify_waiters();
        Ok(binding)
    }

    /// A subscription ended: an ephemeral consumer ends with it.
    pub(crate) fn unbind(&self, binding: &Binding) {
        let mut state = self.lock();
        let Some(channel) = state.channels.get_mut(&*binding.channel) else {
            return;
        };
        let Some(consumer) = channel.consumers.get_mut(&binding.consumer) else {
            return;
        };
        consumer.subscriptions = consumer.subscriptions.saturating_sub(1);
        if consumer.subscriptions == 0 && consumer.name.is_none() {
            channel.consumers.remove(&binding.consumer);
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// The next delivery for a subscription bound by `binding`.
    pub(crate) fn next(self: &Arc<Self>, binding: &Binding) -> Next {
        let now = Instant::now();
        let mut guard = self.lock();
        let Some(channel) = guard.channels.get_mut(&*binding.channel) else {
            return Next::Wait(None);
        };
        let Some(consumer) = channel.consumers.get_mut(&binding.consumer) else {
            return Next::Wait(None);
        };
        let expired = consumer.expire(now);
        let Some(handout) = consumer.next(now, &channel.stream) else {
            let wake = consumer.next_wake();
            drop(guard);
            if expired {
                self.changed.notify_waiters();
            }
            return Next::Wait(wake);
        };
        let Some(message) = channel.stream.get(handout.sequence) else {
            return Next::Wait(None);
        };
        let metadata = Metadata::new(
            message.subject.clone(),
            message.sequence,
            handout.delivery_count,
            message.timestamp,
            message.headers.clone(),
        );
        let delivery = Delivery {
            payload: message.payload.clone(),
            acker: InMemoryAcker::new(self.clone(), binding.clone(), metadata.clone()),
            metadata,
        };
        drop(guard);
        self.changed.notify_waiters();
        Next::Delivery(delivery)
    }

    /// The messages consumer `name` of `channel` gave up on, after the first
    /// `seen` of them, and how many it gave up on in all.
    pub(crate) fn exhausted(
        &self,
        channel: &str,
        name: &str,
        seen: usize,
    ) -> (Vec<Exhausted>, usize) {
        let state = self.lock();
        let Some(channel) = state.channels.get(channel) else {
            return (Vec::new(), seen);
        };
        let Some(consumer) = channel
            .named
            .get(name)
            .and_then(|id| channel.consumers.get(id))
        else {
            return (Vec::new(), seen);
        };
        let given_up = consumer.exhausted_since(seen);
        let total = seen + given_up.len();
        let messages = given_up
            .into_iter()
            .filter_map(|(sequence, delivery_count)| {
                let message = channel.stream.get(sequence)?;
                Some(Exhausted {
                    payload: message.payload.clone(),
                    metadata: Metadata::new(
                        message.subject.clone(),
                        message.sequence,
                        delivery_count,
                        message.timestamp,
                        message.headers.clone(),
                    ),
                })
            })
            .collect();
        (messages, total)
    }

    /// Applies a settlement from an acker; a consumer that is gone (an
    /// ephemeral whose subscription ended) ignores it, as JetStream does.
    pub(crate) fn settle(&self, binding: &Binding, sequence: u64, how: Settle) {
        let now = Instant::now();
        let mut state = self.lock();
        let Some(consumer) = state
            .channels
            .get_mut(&*binding.channel)
            .and_then(|channel| channel.consumers.get_mut(&binding.consumer))
        else {
            tracing::debug!(channel = %binding.channel, sequence, "settlement for a consumer that is gone; ignored");
            return;
        };
        consumer.expire(now);
        let applied = match how {
            Settle::Ack => consumer.ack(sequence, now),
            Settle::Nak(delay) => consumer.nak(sequence, delay, now),
            Settle::Term => consumer.term(sequence, now),
            Settle::InProgress => consumer.in_progress(sequence, now),
        };
        if !applied {
            tracing::debug!(channel = %binding.channel, sequence, ?how, "settlement for a message that is not pending; ignored");
        }
        consumer.notify.notify_waiters();
        drop(state);
        self.changed.notify_waiters();
    }
}
