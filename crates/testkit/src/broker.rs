//! The broker: channels, their consumers, and the one lock around them.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use flowgate::{
    Delivery, Exhausted, Metadata, OutgoingMessage, PublishAck, PublishError, SubscriptionSpec,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::acker::InMemoryAcker;
use crate::attempts::AttemptStores;
use crate::channel::{Channel, StoredMessage};
use crate::consumer::{Consumer, ConsumerConfig, Handout};
use crate::faults::{Faults, Injected};
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
/// | `max_in_flight` | `max_ack_pending`: at most that many unsettled messages per consumer (twice that with coalesced acks) |
/// | `ack = "coalesced"` | ack policy "all": an ack (or a term) settles every pending message at or below it; one from an older delivery than the last applied is ignored |
/// | `ack_wait`, `max_deliver`, `start` | as on JetStream, on [`tokio::time`] (paused time works) |
/// | a subscription | a pull consumer's client: it asks for batches of `min(max_in_flight, 1000)` and buffers what arrives |
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
    /// Notified on every change while someone waits for one
    /// ([`InMemory::wait_until`]): see [`Broker::watch_changes`].
    changed: Notify,
    /// How many wait for `changed`; nobody is notified while none does.
    watchers: AtomicUsize,
    /// Notified when a consumer may have become idle (or stopped counting),
    /// for [`InMemory::wait_idle`].
    pub(crate) idle: Notify,
    /// Notified when a consumer gives up on a message, for the
    /// [`Transport::exhausted`](flowgate::Transport::exhausted) streams.
    pub(crate) given_up: Notify,
    /// The attempt stores of named consumers.
    pub(crate) attempts: AttemptStores,
}

/// Registers a waiter for every change of the broker while it lives.
pub(crate) struct ChangeWatch<'a>(&'a Broker);

impl ChangeWatch<'_> {
    /// Notified on the next change.
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.changed.notified()
    }
}

impl Drop for ChangeWatch<'_> {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a change may have done, for [`Broker::changed`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Change {
    /// A consumer may have become idle, or stopped counting for idleness.
    pub(crate) may_idle: bool,
    /// A consumer gave up on a message.
    pub(crate) gave_up: bool,
}

impl Change {
    /// Fires the due timers of `consumer` (see [`Consumer::expire`]) and
    /// notes what that did, for the inspection methods; like them, it does
    /// not wake the consumer's subscriptions, which wait for those timers.
    pub(crate) fn expired(&mut self, consumer: &mut Consumer, now: Instant) {
        let given_up = consumer.given_up();
        if consumer.expire(now) {
            self.may_idle = true;
            self.gave_up |= consumer.given_up() > given_up;
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) channels: Channels,
    next_consumer: u64,
    /// Faults the test armed, and those that took effect.
    pub(crate) faults: Faults,
}

/// The channels by name; a channel, once created, keeps its index, which
/// bindings hold so they find it without hashing its name.
#[derive(Debug, Default)]
pub(crate) struct Channels {
    all: Vec<ChannelState>,
    by_name: HashMap<String, usize>,
    /// The dead letters stored.
    dead_letters: HashSet<DeadLetterKey>,
}

/// What a dead letter names: its original's subject and sequence, and the
/// durable it was published for.
type DeadLetterKey = (String, u64, Option<String>);

/// The key of `message` when it is a dead letter.
fn dead_letter_key(message: &StoredMessage) -> Option<DeadLetterKey> {
    use flowgate::dead_letter::{DURABLE, ORIGINAL_SEQUENCE, ORIGINAL_SUBJECT};
    let headers = message.headers.as_ref()?;
    let header = |name: &str| headers.get(name).map(|value| value.as_str().to_owned());
    let sequence = header(ORIGINAL_SEQUENCE)?.parse().ok()?;
    Some((header(ORIGINAL_SUBJECT)?, sequence, header(DURABLE)))
}

impl Channels {
    /// Notes a dead letter stored: the runtime stores it before it
    /// terminates the original, so a term can be told apart.
    fn note_dead_letter(&mut self, (subject, sequence, durable): DeadLetterKey) {
        // Without the durable too, for ephemeral consumers, which have no name.
        self.dead_letters.insert((subject.clone(), sequence, None));
        self.dead_letters.insert((subject, sequence, durable));
    }

    /// Whether the dead letter of message `sequence` of `binding`'s stream
    /// was stored for `binding`'s consumer.
    fn holds_dead_letter_of(&self, binding: &Binding, sequence: u64) -> bool {
        let Some(channel) = self.all.get(binding.index) else {
            return false;
        };
        let Some(original) = channel.stream.get(sequence) else {
            return false;
        };
        let durable = channel
            .consumers
            .get(&binding.consumer)
            .and_then(|consumer| consumer.name.as_deref().map(str::to_owned));
        self.dead_letters
            .contains(&(original.subject.clone(), sequence, durable))
    }

    /// The channel created for `name`, else the one that holds all of it
    /// (`orders.placed` and `orders.*` are in a channel made for `orders.>`).
    pub(crate) fn get(&self, name: &str) -> Option<&ChannelState> {
        self.index_of(name).map(|index| &self.all[index])
    }

    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut ChannelState> {
        self.index_of(name).map(|index| &mut self.all[index])
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        if let Some(&index) = self.by_name.get(name) {
            return Some(index);
        }
        self.all
            .iter()
            .position(|channel| flowgate::pattern_covers(channel.stream.name(), name))
    }

    /// The index of the channel that holds `pattern` (a subject or a
    /// pattern), created when no channel holds any of it; an error, as on
    /// JetStream, when channels hold only part of it.
    fn index_for(&mut self, pattern: &str) -> Result<usize, flowgate::Error> {
        if let Some(index) = self.index_of(pattern) {
            return Ok(index);
        }
        let partly: Vec<&str> = self
            .all
            .iter()
            .map(|channel| channel.stream.name())
            .filter(|name| flowgate::patterns_overlap(name, pattern))
            .collect();
        if !partly.is_empty() {
            return Err(flowgate::Error::Subscribe {
                channel: pattern.to_owned(),
                source: format!(
                    "no stream holds all of `{pattern}`, and a subject belongs to one stream only (streams for {}): publish to `{pattern}`'s subjects only after its subscribers started, so that its stream is made for the whole pattern",
                    partly.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                )
                .into(),
            });
        }
        Ok(self.index_or_create(pattern))
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut ChannelState> {
        self.all.iter_mut()
    }

    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }

    /// The index of channel `name`, created when new.
    fn index_or_create(&mut self, name: &str) -> usize {
        if let Some(&index) = self.by_name.get(name) {
            return index;
        }
        let index = self.all.len();
        self.all.push(ChannelState::new(name));
        self.by_name.insert(name.to_owned(), index);
        index
    }
}

/// Hashes a [`ConsumerId`] (a counter) with one multiplication.
#[derive(Debug, Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A channel's messages and the consumers reading it.
#[derive(Debug)]
pub(crate) struct ChannelState {
    pub(crate) stream: Channel,
    pub(crate) consumers: HashMap<ConsumerId, Consumer, BuildHasherDefault<IdHasher>>,
    /// Durable and queue consumers by name.
    pub(crate) named: HashMap<String, ConsumerId>,
    /// Every settlement of every consumer, ended ephemerals included.
    pub(crate) log: Log,
}

impl ChannelState {
    fn new(name: &str) -> Self {
        Self {
            stream: Channel::new(name),
            consumers: HashMap::default(),
            named: HashMap::new(),
            log: Log::default(),
        }
    }
}

/// What one round of deliveries to a pull subscription did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delivered {
    /// Deliveries made (lost ones included).
    pub(crate) made: usize,
    /// When the consumer's next timer fires, if any runs.
    pub(crate) wake: Option<Instant>,
    /// The consumer is gone: nothing will be delivered any more.
    pub(crate) gone: bool,
}

/// How a delivery is settled.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Settle {
    Ack,
    Nak(Option<std::time::Duration>),
    Term,
    InProgress,
}

/// Where a subscription is bound, and the broker it is bound on; cloned
/// (one reference count) into every acker.
#[derive(Debug, Clone)]
pub(crate) struct Binding(Arc<Bound>);

pub(crate) struct Bound {
    pub(crate) broker: Arc<Broker>,
    pub(crate) channel: Arc<str>,
    /// The channel's index in [`Channels`].
    index: usize,
    pub(crate) consumer: ConsumerId,
    pub(crate) notify: Arc<crate::consumer::Wakeup>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("channel", &self.channel)
            .field("index", &self.index)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for Binding {
    type Target = Bound;

    fn deref(&self) -> &Bound {
        &self.0
    }
}

impl Broker {
    /// Locks the state. A panic while it was held cannot leave it half
    /// updated (every update is a few infallible steps), so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells whoever waits what a change may have done. Called after the
    /// change, with the lock released.
    pub(crate) fn changed(&self, change: Change) {
        if self.watchers.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
        if change.may_idle {
            self.idle.notify_waiters();
        }
        if change.gave_up {
            self.given_up.notify_waiters();
        }
    }

    /// Like [`Broker::changed`], for what an inspection did (fire due
    /// timers): it wakes idle and give-up waiters, and not the waiters for
    /// every change, whose checks inspect the broker.
    pub(crate) fn inspected(&self, change: Change) {
        if change.may_idle {
            self.idle.notify_waiters();
        }
        if change.gave_up {
            self.given_up.notify_waiters();
        }
    }

    /// Registers for [`Broker::changed`] notifications: every change from now
    /// on notifies the returned watch's `changed()` until it is dropped.
    /// Enable a `changed()` future before looking at the state.
    pub(crate) fn watch_changes(&self) -> ChangeWatch<'_> {
        // Counted before any look at the state: a change made after the look
        // reads the count after its own update of the state, so sees it.
        self.watchers.fetch_add(1, Ordering::SeqCst);
        ChangeWatch(self)
    }

    /// The channel and consumer `binding` names, when the consumer still exists.
    fn bound<'s>(
        state: &'s mut State,
        binding: &Binding,
    ) -> Option<(&'s mut Channel, &'s mut Consumer)> {
        let channel = state.channels.all.get_mut(binding.index)?;
        let consumer = channel.consumers.get_mut(&binding.consumer)?;
        Some((&mut channel.stream, consumer))
    }

    /// Stores `message`. The outer error refuses it before it is sent (a
    /// subject that is not a channel); the inner result is the broker's
    /// receipt, an error when an injected fault refuses it.
    pub(crate) fn publish(
        &self,
        message: OutgoingMessage,
    ) -> Result<Result<PublishAck, PublishError>, PublishError> {
        flowgate::validate_channel(&message.subject)?;
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some(refused) = state.faults.publish(&message.subject) {
            drop(guard);
            self.changed(Change::default());
            return Ok(Err(PublishError::Broker {
                subject: message.subject,
                source: Box::new(refused),
            }));
        }
        let index = match state.channels.index_for(&message.subject) {
            Ok(index) => index,
            Err(error) => {
                return Err(PublishError::Broker {
                    subject: message.subject,
                    source: Box::new(error),
                })
            }
        };
        let channel = &mut state.channels.all[index];
        let (ack, stored) = channel.stream.store(message);
        if stored {
            if let Some(key) = channel.stream.get(ack.sequence).and_then(dead_letter_key) {
                state.channels.note_dead_letter(key);
            }
            let channel = &mut state.channels.all[index];
            for consumer in channel.consumers.values_mut() {
                consumer.skip_unmatched(&channel.stream);
                consumer.notify.wake();
            }
            drop(guard);
            self.changed(Change::default());
        }
        Ok(Ok(ack))
    }

    /// Binds a subscription to the consumer `spec` names, creating it when it
    /// does not exist.
    pub(crate) fn bind(
        self: &Arc<Self>,
        spec: &SubscriptionSpec,
    ) -> Result<Binding, flowgate::Error> {
        spec.validate()?;
        let wanted = ConsumerConfig::from_spec(spec);
        let name = spec.durable.as_deref().or(spec.queue.as_deref());
        let mut guard = self.lock();
        let state = &mut *guard;
        let index = state.channels.index_for(&spec.channel)?;
        let channel = &mut state.channels.all[index];
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
                let mut consumer = Consumer::new(
                    name.map(Arc::from),
                    wanted,
                    &channel.stream,
                    channel.log.clone(),
                );
                if channel.stream.name() != spec.channel {
                    consumer = consumer.filtered(&spec.channel, &channel.stream);
                }
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
        let binding = Binding(Arc::new(Bound {
            broker: self.clone(),
            channel: Arc::from(spec.channel.as_str()),
            index,
            consumer: id,
            notify: consumer.notify.clone(),
        }));
        drop(guard);
        self.changed(Change {
            may_idle: true,
            gave_up: false,
        });
        Ok(binding)
    }

    /// A subscription ended: an ephemeral consumer ends with it.
    pub(crate) fn unbind(&self, binding: &Binding) {
        let mut state = self.lock();
        let Some(channel) = state.channels.all.get_mut(binding.index) else {
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
        self.changed(Change {
            may_idle: true,
            gave_up: false,
        });
    }

    /// Makes up to `owed` deliveries to a pull subscription bound by
    /// `binding`, handing each that is not lost in transit to `push`.
    pub(crate) fn deliver(
        self: &Arc<Self>,
        binding: &Binding,
        owed: usize,
        mut push: impl FnMut(Delivery<InMemoryAcker>),
    ) -> Delivered {
        let now = Instant::now();
        let mut guard = self.lock();
        let State {
            channels, faults, ..
        } = &mut *guard;
        let Some((stream, consumer)) = channels.all.get_mut(binding.index).and_then(|channel| {
            let stream = &channel.stream;
            channel
                .consumers
                .get_mut(&binding.consumer)
                .map(|consumer| (stream, consumer))
        }) else {
            return Delivered {
                made: 0,
                wake: None,
                gone: true,
            };
        };
        if faults.is_disconnected() {
            // Woken by the reconnect.
            return Delivered {
                made: 0,
                wake: None,
                gone: false,
            };
        }
        let given_up = consumer.given_up();
        let expired = consumer.expire(now);
        let mut made = 0;
        while made < owed {
            let Some(handout) = consumer.hand_out(now, stream) else {
                break;
            };
            made += 1;
            let lost = faults.lose(
                &binding.channel,
                handout.sequence,
                handout.consumer_sequence,
            );
            let Some(message) = stream.get(handout.sequence).filter(|_| !lost) else {
                continue;
            };
            let metadata = Metadata::new(
                message.shared_subject.clone(),
                message.sequence,
                handout.delivery_count,
                message.timestamp,
                message.headers.clone(),
            )
            .with_consumer_sequence(handout.consumer_sequence);
            push(Delivery {
                payload: message.payload.clone(),
                acker: InMemoryAcker::new(binding.clone(), handout),
                metadata,
            });
        }
        if expired && consumer.can_hand_out(stream.last_sequence()) {
            // Redeliveries this subscription had no room for: the others
            // bound to the consumer may take them.
            consumer.notify.wake();
        }
        let wake = consumer.next_wake();
        let change = Change {
            may_idle: expired && consumer.is_idle(stream.last_sequence()),
            gave_up: consumer.given_up() > given_up,
        };
        drop(guard);
        if expired || made > 0 {
            self.changed(change);
        }
        Delivered {
            made,
            wake,
            gone: false,
        }
    }

    /// How many messages the consumer of `binding` holds as delivered and
    /// not settled (JetStream's `num_ack_pending`), after firing its due timers.
    pub(crate) fn ack_pending(&self, binding: &Binding) -> Result<usize, flowgate::Error> {
        self.backlog(binding)
            .map(|backlog| backlog.ack_pending as usize)
    }

    /// What the consumer of `binding` has not delivered yet and holds as
    /// delivered and not settled (JetStream's `num_pending` and
    /// `num_ack_pending`), after firing its due timers. Fails while the
    /// client is disconnected, as a consumer-info request does.
    pub(crate) fn backlog(
        &self,
        binding: &Binding,
    ) -> Result<flowgate::ConsumerBacklog, flowgate::Error> {
        let now = Instant::now();
        let mut state = self.lock();
        if state.faults.is_disconnected() {
            return Err(flowgate::Error::Broker(Box::new(Injected::NOT_CONNECTED)));
        }
        let Some((stream, consumer)) = Self::bound(&mut state, binding) else {
            return Err(flowgate::Error::Broker(
                format!("the consumer of `{}` is gone", binding.channel).into(),
            ));
        };
        let mut change = Change::default();
        change.expired(consumer, now);
        let backlog = flowgate::ConsumerBacklog {
            pending: consumer.undelivered(stream),
            ack_pending: consumer.ack_pending() as u64,
        };
        drop(state);
        self.inspected(change);
        Ok(backlog)
    }

    /// Drops (`false`) or restores (`true`) the client's connection; on a
    /// restore, wakes every subscription to pull again.
    pub(crate) fn set_connected(&self, connected: bool) {
        let mut state = self.lock();
        let changed = if connected {
            state.faults.reconnect()
        } else {
            state.faults.disconnect()
        };
        if connected && changed {
            for channel in state.channels.values_mut() {
                for consumer in channel.consumers.values() {
                    consumer.notify.wake();
                }
            }
        }
        drop(state);
        if changed {
            self.changed(Change::default());
        }
    }

    /// Whether the client is connected now.
    pub(crate) fn is_connected(&self) -> bool {
        !self.lock().faults.is_disconnected()
    }

    /// How many messages consumer `name` of `channel` gave up on so far,
    /// after firing its due timers: a listener that starts now hears of
    /// the ones after these.
    pub(crate) fn given_up_so_far(&self, channel: &str, name: &str) -> usize {
        let now = Instant::now();
        let mut state = self.lock();
        let Some(channel) = state.channels.get_mut(channel) else {
            return 0;
        };
        let Some(consumer) = channel
            .named
            .get(name)
            .copied()
            .and_then(|id| channel.consumers.get_mut(&id))
        else {
            return 0;
        };
        let mut change = Change::default();
        change.expired(consumer, now);
        let given_up = consumer.given_up();
        drop(state);
        self.inspected(change);
        given_up
    }

    /// The messages consumer `name` of `channel` gave up on, after the first
    /// `seen` of them, how many it gave up on in all, and when its next
    /// timer fires (a give-up may come then). Fires its due timers first.
    pub(crate) fn exhausted(
        &self,
        channel: &str,
        name: &str,
        seen: usize,
    ) -> (Vec<Exhausted>, usize, Option<Instant>) {
        let now = Instant::now();
        let mut state = self.lock();
        let Some(channel) = state.channels.get_mut(channel) else {
            return (Vec::new(), seen, None);
        };
        let Some(consumer) = channel
            .named
            .get(name)
            .copied()
            .and_then(|id| channel.consumers.get_mut(&id))
        else {
            return (Vec::new(), seen, None);
        };
        let mut change = Change::default();
        change.expired(consumer, now);
        let wake = consumer.next_wake();
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
        drop(state);
        self.inspected(change);
        (messages, total, wake)
    }

    /// Applies a settlement from an acker; a consumer that is gone (an
    /// ephemeral whose subscription ended) ignores it, as JetStream does. An
    /// injected fault fails it unapplied.
    pub(crate) fn settle(
        &self,
        binding: &Binding,
        delivery: Handout,
        how: Settle,
    ) -> Result<(), Injected> {
        let sequence = delivery.sequence;
        let number = delivery.consumer_sequence;
        let now = Instant::now();
        let mut state = self.lock();
        if let Some(failed) = state.faults.settle(&binding.channel, sequence, how) {
            drop(state);
            self.changed(Change::default());
            return Err(failed);
        }
        let dead_lettered =
            matches!(how, Settle::Term) && state.channels.holds_dead_letter_of(binding, sequence);
        let Some((stream, consumer)) = Self::bound(&mut state, binding) else {
            tracing::debug!(channel = %binding.channel, sequence, "settlement for a consumer that is gone; ignored");
            return Ok(());
        };
        let could_hand_out = consumer.can_hand_out(stream.last_sequence());
        let given_up = consumer.given_up();
        let expired = consumer.expire(now);
        let applied = match how {
            Settle::Ack => consumer.ack(sequence, number, now),
            Settle::Nak(delay) => consumer.nak(sequence, number, delay, now),
            Settle::Term => consumer.term(sequence, number, dead_lettered, now),
            Settle::InProgress => consumer.in_progress(sequence, now),
        };
        if !applied {
            tracing::debug!(channel = %binding.channel, sequence, delivery = number, ?how, "settlement for a message that is not pending (or, with ack policy all, of a delivery at or below the last ack's); ignored");
        }
        // A subscription waits for a wake-up once the consumer has nothing
        // more for it, or for its next timer: it is woken when this gives
        // the consumer something to hand out, or may set an earlier timer.
        let may_deliver = expired
            || matches!(how, Settle::Nak(_))
            || (!could_hand_out && consumer.can_hand_out(stream.last_sequence()));
        if may_deliver {
            consumer.notify.wake();
        }
        let change = Change {
            may_idle: consumer.is_idle(stream.last_sequence()),
            gave_up: consumer.given_up() > given_up,
        };
        drop(state);
        self.changed(change);
        Ok(())
    }
}
