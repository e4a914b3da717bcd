//! A consumer's delivery state: what it has delivered, what waits for a
//! settlement, what is due for redelivery. JetStream semantics with an
//! explicit ack policy, driven by the caller's clock (`tokio::time`, so it
//! follows paused time in tests).

use flowgate::transport::DriftCheck;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowgate::{AckMode, StartPosition, SubscriptionSpec};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::channel::{stream_name, Channel};
use crate::inspect::ConsumerInfo;
use crate::settlement::{Log, Outcome, Settlement};
use crate::timers::{Timer, Timers};

/// How acks settle messages, as JetStream's consumer ack policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckPolicy {
    /// Each ack settles its own message (`ack = "auto"` and `"manual"`).
    Explicit,
    /// An ack settles every pending message at or below it (`ack = "coalesced"`).
    All,
}

/// The settings a consumer is created with; a durable bound again must ask
/// for the same ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerConfig {
    pub(crate) start: StartPosition,
    pub(crate) ack_policy: AckPolicy,
    pub(crate) ack_wait: Duration,
    pub(crate) max_deliver: Option<u32>,
    pub(crate) max_ack_pending: usize,
}

impl ConsumerConfig {
    /// The consumer `spec` asks for, as the JetStream transport creates it:
    /// coalesced acks get ack policy "all" and twice `max_in_flight` unacked
    /// messages (handled messages wait there for the prefix to be acked).
    pub(crate) fn from_spec(spec: &SubscriptionSpec) -> Self {
        let (ack_policy, max_ack_pending) = match spec.ack {
            AckMode::Coalesced => (AckPolicy::All, spec.max_in_flight.saturating_mul(2)),
            AckMode::Auto | AckMode::Manual => (AckPolicy::Explicit, spec.max_in_flight),
        };
        Self {
            start: spec.start,
            ack_policy,
            ack_wait: spec.ack_wait,
            max_deliver: spec.max_deliver,
            max_ack_pending,
        }
    }

    /// The first difference from `wanted`, as a `ConsumerMismatch` would name it.
    pub(crate) fn mismatch(
        &self,
        channel: &str,
        durable: &str,
        wanted: &ConsumerConfig,
    ) -> Option<flowgate::Error> {
        let max_deliver = |m: &Option<u32>| m.map_or_else(|| "-1".to_owned(), |m| m.to_string());
        DriftCheck::new(stream_name(channel), durable)
            .field("deliver policy (start)", &self.start, &wanted.start)
            .field("ack policy", &self.ack_policy, &wanted.ack_policy)
            .field("ack_wait", &self.ack_wait, &wanted.ack_wait)
            .field_shown(
                "max_deliver",
                &self.max_deliver,
                &wanted.max_deliver,
                max_deliver,
            )
            .field_shown(
                "max_ack_pending (max_in_flight)",
                &self.max_ack_pending,
                &wanted.max_ack_pending,
                usize::to_string,
            )
            .finish()
            .err()
    }
}

/// Where a delivered message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Delivered; redelivered when the ack wait ends at this instant.
    InFlight(Instant),
    /// Nak'd with a delay; redelivered at this instant.
    Delayed(Instant),
    /// Due for redelivery now (its `ready` entry).
    Ready,
    /// Acked: settled for good.
    Acked,
    /// Terminated: settled for good.
    Terminated,
    /// Given up on after `max_deliver` deliveries: settled for good.
    Exhausted,
    /// Not delivered: its subject is not one the consumer's filter matches.
    Filtered,
}

impl Fate {
    /// Delivered and not settled (the JetStream "ack pending" set).
    fn is_pending(self) -> bool {
        matches!(self, Fate::InFlight(_) | Fate::Delayed(_) | Fate::Ready)
    }
}

/// What a consumer knows of one message it delivered.
#[derive(Debug, Clone, Copy)]
struct Slot {
    delivery_count: u32,
    fate: Fate,
}

/// Wakes a consumer's waiting subscriptions; costs an atomic load when none waits.
#[derive(Debug, Default)]
pub(crate) struct Wakeup {
    notify: Notify,
    /// Subscriptions registered (or registering) for a wake-up.
    waiting: AtomicUsize,
}

impl Wakeup {
    /// Wakes every subscription waiting now.
    pub(crate) fn wake(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Counts a waiter in until the guard drops. Take it, then enable a
    /// [`Waiting::notified`] future, then look at the consumer: a change
    /// made after the look (under the broker lock) sees the count.
    pub(crate) fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(self)
    }
}

/// A subscription counted as waiting for a [`Wakeup`].
pub(crate) struct Waiting<'a>(&'a Wakeup);

impl Waiting<'_> {
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.notify.notified()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One delivery handed out: the stream sequence, its delivery count, and the
/// consumer's number for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handout {
    pub(crate) sequence: u64,
    pub(crate) delivery_count: u32,
    /// JetStream's consumer sequence: +1 for every delivery, redeliveries included.
    pub(crate) consumer_sequence: u64,
}

/// The state of one consumer of one channel.
///
/// A consumer delivers sequences `base..next_sequence` for the first time in
/// order, so what it knows of each is kept in `slots`, indexed from `base`:
/// no tree or hash per message.
#[derive(Debug)]
pub(crate) struct Consumer {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) config: ConsumerConfig,
    /// Live subscriptions bound to this consumer.
    pub(crate) subscriptions: usize,
    /// Wakes this consumer's subscriptions when something may be deliverable.
    pub(crate) notify: Arc<Wakeup>,
    /// The first sequence this consumer delivered (or will deliver).
    base: u64,
    /// The next stream sequence to deliver for the first time.
    next_sequence: u64,
    /// Sequences `base..next_sequence`, each delivered at least once.
    slots: Vec<Slot>,
    /// How many slots are pending (delivered and not settled).
    pending: usize,
    /// No sequence below this one is pending; when any is, the lowest is this one.
    floor: u64,
    /// When each timed pending entry fires (the deadline in its `Fate`).
    timers: Timers,
    /// Pending entries due for redelivery, lowest sequence first.
    ready: BTreeSet<u64>,
    /// The exhausted sequences in the order the broker gave up on them.
    exhausted_order: Vec<u64>,
    /// Deliveries made so far (the last consumer sequence handed out).
    delivered: u64,
    /// Ack policy "all": the consumer sequence and the stream sequence of
    /// the last ack (or term) applied, JetStream's delivery and stream ack
    /// floors. An ack or term at or below either is ignored, and so is a nak
    /// of a delivery at or below the first.
    all_floor: (u64, u64),
    pending_high_water: usize,
    /// The channel's settlement log, which this consumer writes to.
    log: Log,
    /// The subject pattern this consumer delivers, when the channel (the
    /// stream) holds more subjects than that. `next_sequence` is always past
    /// the channel's end or at a message the filter matches.
    filter: Option<Arc<str>>,
}

impl Consumer {
    pub(crate) fn new(
        name: Option<Arc<str>>,
        config: ConsumerConfig,
        channel: &Channel,
        log: Log,
    ) -> Self {
        let next_sequence = first_sequence(config.start, channel);
        Self {
            name,
            config,
            subscriptions: 0,
            notify: Arc::new(Wakeup::default()),
            base: next_sequence,
            next_sequence,
            slots: Vec::new(),
            pending: 0,
            floor: next_sequence,
            timers: Timers::default(),
            ready: BTreeSet::new(),
            exhausted_order: Vec::new(),
            delivered: 0,
            all_floor: (0, next_sequence.saturating_sub(1)),
            pending_high_water: 0,
            log,
            filter: None,
        }
    }

    /// Delivers only the messages of `channel` whose subject `filter`
    /// matches, as a JetStream consumer with a filter subject; `Last` starts
    /// at the last message it matches.
    pub(crate) fn filtered(mut self, filter: &str, channel: &Channel) -> Self {
        self.filter = Some(Arc::from(filter));
        if self.config.start == StartPosition::Last {
            let last = channel
                .messages()
                .iter()
                .rev()
                .find(|m| flowgate::subject_matches(filter, &m.subject))
                .map_or(channel.last_sequence() + 1, |m| m.sequence);
            self.base = last;
            self.next_sequence = last;
            self.floor = last;
            self.all_floor = (0, last.saturating_sub(1));
        }
        self.skip_unmatched(channel);
        self
    }

    /// Steps `next_sequence` over the messages the filter does not match:
    /// they are never delivered, and a consumer waiting only for them is idle.
    pub(crate) fn skip_unmatched(&mut self, channel: &Channel) {
        let Some(filter) = &self.filter else {
            return;
        };
        while let Some(message) = channel.get(self.next_sequence) {
            if flowgate::subject_matches(filter, &message.subject) {
                break;
            }
            self.slots.push(Slot {
                delivery_count: 0,
                fate: Fate::Filtered,
            });
            if self.floor == self.next_sequence && self.pending == 0 {
                self.floor += 1;
            }
            self.next_sequence += 1;
        }
    }

    fn index(&self, sequence: u64) -> Option<usize> {
        usize::try_from(sequence.checked_sub(self.base)?).ok()
    }

    fn slot(&self, sequence: u64) -> Option<&Slot> {
        self.slots.get(self.index(sequence)?)
    }

    fn slot_mut(&mut self, sequence: u64) -> Option<&mut Slot> {
        let index = self.index(sequence)?;
        self.slots.get_mut(index)
    }

    /// Where `sequence` stands while it is pending.
    fn pending_fate(&self, sequence: u64) -> Option<Fate> {
        self.slot(sequence)
            .map(|slot| slot.fate)
            .filter(|fate| fate.is_pending())
    }

    /// Moves a pending `sequence` to another pending state.
    fn set_pending(&mut self, sequence: u64, fate: Fate) {
        if let Some(slot) = self.slot_mut(sequence) {
            slot.fate = fate;
        }
    }

    /// Settles a pending `sequence` for good with `fate`.
    fn finish(&mut self, sequence: u64, fate: Fate) {
        let Some(slot) = self.slot_mut(sequence) else {
            return;
        };
        let was_pending = slot.fate.is_pending();
        slot.fate = fate;
        if was_pending {
            self.pending -= 1;
        }
        if sequence == self.floor {
            self.floor += 1;
            while self.floor < self.next_sequence && self.pending_fate(self.floor).is_none() {
                self.floor += 1;
            }
        }
    }

    fn delivery_count(&self, sequence: u64) -> u32 {
        self.slot(sequence).map_or(0, |slot| slot.delivery_count)
    }

    /// How many messages this consumer gave up on so far.
    pub(crate) fn given_up(&self) -> usize {
        self.exhausted_order.len()
    }

    /// Stops delivering `sequence`: its deliveries ran out.
    fn give_up(&mut self, sequence: u64, at: Instant) {
        if self.slot(sequence).map(|slot| slot.fate) != Some(Fate::Exhausted) {
            self.finish(sequence, Fate::Exhausted);
            self.exhausted_order.push(sequence);
        }
        self.record(sequence, Outcome::Exhausted, at);
    }

    /// The sequences given up on since the first `seen`, with their delivery counts.
    pub(crate) fn exhausted_since(&self, seen: usize) -> Vec<(u64, u32)> {
        self.exhausted_order
            .get(seen..)
            .unwrap_or_default()
            .iter()
            .map(|seq| (*seq, self.delivery_count(*seq)))
            .collect()
    }

    fn record(&self, sequence: u64, outcome: Outcome, at: Instant) {
        self.record_covered(sequence, outcome, at, None);
    }

    fn record_covered(&self, sequence: u64, outcome: Outcome, at: Instant, by: Option<u64>) {
        self.log.record(Settlement {
            consumer: self.name.clone(),
            sequence,
            delivery_count: self.delivery_count(sequence),
            outcome,
            at,
            covered_by: by,
        });
    }

    /// Moves every entry whose ack wait or nak delay has ended to the
    /// redelivery queue, or drops it when it was delivered `max_deliver`
    /// times. Returns whether anything changed.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let mut changed = false;
        while let Some((at, sequence)) = self
            .timers
            .pop_due(now, timer_is_live(self.base, &self.slots))
        {
            changed = true;
            if let Some(Fate::InFlight(_)) = self.pending_fate(sequence) {
                self.record(sequence, Outcome::Expired, at);
            }
            if self.reached_max_deliver(sequence) {
                self.give_up(sequence, at);
            } else {
                self.set_pending(sequence, Fate::Ready);
                self.ready.insert(sequence);
            }
        }
        changed
    }

    /// The next delivery at `now`: fires the due timers, then hands out.
    #[cfg(test)]
    pub(crate) fn next(&mut self, now: Instant, channel: &Channel) -> Option<Handout> {
        self.expire(now);
        self.hand_out(now, channel)
    }

    /// The next delivery: a redelivery first, else the next new message while
    /// fewer than `max_ack_pending` are unsettled. The timers due at `now`
    /// must have been fired ([`Consumer::expire`]) first: a broker making a
    /// round of deliveries fires them once, not once per delivery.
    pub(crate) fn hand_out(&mut self, now: Instant, channel: &Channel) -> Option<Handout> {
        let deadline = now + self.config.ack_wait;
        let (sequence, delivery_count) = match self.ready.pop_first() {
            Some(sequence) => {
                let slot = self.slot_mut(sequence)?;
                slot.delivery_count += 1;
                slot.fate = Fate::InFlight(deadline);
                (sequence, slot.delivery_count)
            }
            None => {
                if self.pending >= self.config.max_ack_pending
                    || self.next_sequence > channel.last_sequence()
                {
                    return None;
                }
                let sequence = self.next_sequence;
                self.next_sequence += 1;
                self.slots.push(Slot {
                    delivery_count: 1,
                    fate: Fate::InFlight(deadline),
                });
                self.pending += 1;
                self.skip_unmatched(channel);
                (sequence, 1)
            }
        };
        self.set_timer((deadline, sequence));
        self.pending_high_water = self.pending_high_water.max(self.pending);
        self.delivered += 1;
        Some(Handout {
            sequence,
            delivery_count,
            consumer_sequence: self.delivered,
        })
    }

    /// When the next timer fires, if any runs.
    pub(crate) fn next_wake(&mut self) -> Option<Instant> {
        self.timers.next(timer_is_live(self.base, &self.slots))
    }

    /// Starts `timer`, the deadline its message's `Fate` now holds.
    fn set_timer(&mut self, timer: Timer) {
        self.timers
            .insert(timer, self.pending, timer_is_live(self.base, &self.slots));
    }

    /// Settles `sequence` as handled, from its delivery numbered `delivery`;
    /// with ack policy "all", every pending sequence below it too (see
    /// [`Consumer::ack_all`]). Returns whether it was applied.
    pub(crate) fn ack(&mut self, sequence: u64, delivery: u64, now: Instant) -> bool {
        if self.config.ack_policy == AckPolicy::All {
            return self.ack_all(sequence, delivery, Fate::Acked, Outcome::Acked, now);
        }
        if !self.settle(sequence, Fate::Acked) {
            return false;
        }
        self.record(sequence, Outcome::Acked, now);
        true
    }

    /// An ack or a term with ack policy "all", as JetStream processes both:
    /// ignored when its delivery or its sequence is not above the last one
    /// applied; otherwise it settles `sequence` with `fate` and acks every
    /// pending sequence below it (in flight, in a client's buffer, lost in
    /// transit, or awaiting redelivery after a nak or an expired ack wait).
    /// `outcome` is what the log records for `sequence` itself.
    fn ack_all(
        &mut self,
        sequence: u64,
        delivery: u64,
        fate: Fate,
        outcome: Outcome,
        now: Instant,
    ) -> bool {
        let (delivery_floor, stream_floor) = self.all_floor;
        if delivery <= delivery_floor || sequence <= stream_floor {
            return false;
        }
        self.all_floor = (delivery, sequence);
        // Nothing below the floor is pending, and each settlement of the
        // floor moves it up: every slot is passed over about once.
        while self.pending > 0 && self.floor <= sequence && self.floor < self.next_sequence {
            let floor = self.floor;
            let own = floor == sequence;
            if self.settle(floor, if own { fate } else { Fate::Acked }) {
                if own {
                    self.record(floor, outcome, now);
                } else {
                    self.record_covered(floor, Outcome::Acked, now, Some(sequence));
                }
            } else {
                self.floor += 1;
            }
        }
        true
    }

    /// Settles `sequence` as never to be handled, from its delivery numbered
    /// `delivery`. With ack policy "all" JetStream processes a term as an
    /// ack: it acks every pending sequence below it too. Returns whether it
    /// was applied. `dead_lettered` says whether the message's dead letter
    /// was stored before the term, which the log tells apart.
    pub(crate) fn term(
        &mut self,
        sequence: u64,
        delivery: u64,
        dead_lettered: bool,
        now: Instant,
    ) -> bool {
        let outcome = if dead_lettered {
            Outcome::DeadLettered
        } else {
            Outcome::Terminated
        };
        if self.config.ack_policy == AckPolicy::All {
            return self.ack_all(sequence, delivery, Fate::Terminated, outcome, now);
        }
        if !self.settle(sequence, Fate::Terminated) {
            return false;
        }
        self.record(sequence, outcome, now);
        true
    }

    /// Asks for redelivery of `sequence` after `delay`, from its delivery
    /// numbered `delivery`. Returns whether it was pending (with ack policy
    /// "all", a nak of a delivery at or below the last ack's is ignored, as
    /// JetStream does).
    pub(crate) fn nak(
        &mut self,
        sequence: u64,
        delivery: u64,
        delay: Option<Duration>,
        now: Instant,
    ) -> bool {
        if self.config.ack_policy == AckPolicy::All && delivery <= self.all_floor.0 {
            return false;
        }
        let Some(state) = self.pending_fate(sequence) else {
            return false;
        };
        self.clear(sequence, state);
        self.record(sequence, Outcome::Nakked { delay }, now);
        if self.reached_max_deliver(sequence) {
            self.give_up(sequence, now);
            return true;
        }
        match delay.filter(|d| !d.is_zero()) {
            Some(delay) => {
                let due = now + delay;
                self.set_pending(sequence, Fate::Delayed(due));
                self.set_timer((due, sequence));
            }
            None => {
                self.set_pending(sequence, Fate::Ready);
                self.ready.insert(sequence);
            }
        }
        true
    }

    /// Restarts the ack wait of `sequence` when it is in flight. Returns
    /// whether it was.
    pub(crate) fn in_progress(&mut self, sequence: u64, now: Instant) -> bool {
        let Some(Fate::InFlight(deadline)) = self.pending_fate(sequence) else {
            return false;
        };
        self.timers.remove((deadline, sequence));
        let deadline = now + self.config.ack_wait;
        self.set_pending(sequence, Fate::InFlight(deadline));
        self.set_timer((deadline, sequence));
        self.record(sequence, Outcome::InProgress, now);
        true
    }

    /// Whether [`Consumer::hand_out`] has something to hand out: a
    /// redelivery, or a new message in a channel whose newest is
    /// `last_sequence` while fewer than `max_ack_pending` are unsettled.
    pub(crate) fn can_hand_out(&self, last_sequence: u64) -> bool {
        !self.ready.is_empty()
            || (self.pending < self.config.max_ack_pending && self.next_sequence <= last_sequence)
    }

    /// Nothing pending and nothing left to deliver in a channel whose newest
    /// message is `last_sequence`.
    pub(crate) fn is_idle(&self, last_sequence: u64) -> bool {
        self.pending == 0 && self.next_sequence > last_sequence
    }

    /// The highest sequence at or below which nothing is pending.
    fn ack_floor(&self) -> u64 {
        if self.pending == 0 {
            self.next_sequence - 1
        } else {
            self.floor - 1
        }
    }

    /// The sequences whose fate matches, lowest first.
    fn sequences(&self, pick: impl Fn(Fate) -> bool) -> Vec<u64> {
        (self.base..)
            .zip(&self.slots)
            .filter(|(_, slot)| pick(slot.fate))
            .map(|(sequence, _)| sequence)
            .collect()
    }

    /// How many messages of `channel` this consumer has not delivered yet
    /// (JetStream's `num_pending`): those after its next sequence that its
    /// filter matches.
    pub(crate) fn undelivered(&self, channel: &Channel) -> u64 {
        let matches = |sequence: u64| {
            channel.get(sequence).is_some_and(|message| {
                self.filter
                    .as_deref()
                    .is_none_or(|filter| flowgate::subject_matches(filter, &message.subject))
            })
        };
        (self.next_sequence..=channel.last_sequence())
            .filter(|&sequence| matches(sequence))
            .count() as u64
    }

    /// How many messages are delivered and not settled (JetStream's
    /// `num_ack_pending`).
    pub(crate) fn ack_pending(&self) -> usize {
        self.pending
    }

    pub(crate) fn info(&self, channel: &str) -> ConsumerInfo {
        ConsumerInfo {
            channel: channel.to_owned(),
            name: self.name.as_deref().map(str::to_owned),
            live_subscriptions: self.subscriptions,
            acks_all: self.config.ack_policy == AckPolicy::All,
            max_ack_pending: self.config.max_ack_pending,
            consumer_sequence: self.delivered,
            next_sequence: self.next_sequence,
            ack_floor: self.ack_floor(),
            acked: self.sequences(|fate| fate == Fate::Acked),
            pending: self.sequences(Fate::is_pending),
            delivery_counts: (self.base..)
                .zip(&self.slots)
                .filter(|(_, slot)| slot.fate != Fate::Filtered)
                .map(|(sequence, slot)| (sequence, slot.delivery_count))
                .collect::<BTreeMap<_, _>>(),
            terminated: self.sequences(|fate| fate == Fate::Terminated),
            dead_lettered: self.sequences(|fate| fate == Fate::Exhausted),
            pending_high_water: self.pending_high_water,
        }
    }

    fn reached_max_deliver(&self, sequence: u64) -> bool {
        let delivered = self.delivery_count(sequence);
        self.config.max_deliver.is_some_and(|max| delivered >= max)
    }

    /// Settles a pending `sequence` for good. Returns whether it was pending.
    fn settle(&mut self, sequence: u64, fate: Fate) -> bool {
        let Some(state) = self.pending_fate(sequence) else {
            return false;
        };
        self.clear(sequence, state);
        self.finish(sequence, fate);
        true
    }

    /// Drops the timer or redelivery entry of a pending `sequence`.
    fn clear(&mut self, sequence: u64, state: Fate) {
        match state {
            Fate::InFlight(at) | Fate::Delayed(at) => {
                self.timers.remove((at, sequence));
            }
            Fate::Ready => {
                self.ready.remove(&sequence);
            }
            Fate::Acked | Fate::Terminated | Fate::Exhausted | Fate::Filtered => {}
        }
    }
}

/// Whether a timer is its message's current deadline, given the slots of a
/// consumer whose first sequence is `base`.
fn timer_is_live(base: u64, slots: &[Slot]) -> impl Fn(Timer) -> bool + '_ {
    move |(at, sequence)| {
        let slot = sequence
            .checked_sub(base)
            .and_then(|offset| usize::try_from(offset).ok())
            .and_then(|index| slots.get(index));
        matches!(
            slot.map(|slot| slot.fate),
            Some(Fate::InFlight(due) | Fate::Delayed(due)) if due == at
        )
    }
}

/// The first sequence a new consumer delivers.
fn first_sequence(start: StartPosition, channel: &Channel) -> u64 {
    let last = channel.last_sequence();
    match start {
        StartPosition::New => last + 1,
        StartPosition::All => 1,
        StartPosition::Last => last.max(1),
        StartPosition::Sequence(sequence) => sequence.max(1),
        StartPosition::Time(at) => channel
            .messages()
            .iter()
            .find(|m| m.timestamp >= at)
            .map_or(last + 1, |m| m.sequence),
    }
}

#[cfg(test)]
mod tests {
    use flowgate::OutgoingMessage;

    use super::*;

    fn channel_with(n: usize) -> Channel {
        let mut channel = Channel::new("orders.placed");
        for _ in 0..n {
            channel.store(OutgoingMessage::new("orders.placed", "x"));
        }
        channel
    }

    fn config(max_ack_pending: usize, max_deliver: Option<u32>) -> ConsumerConfig {
        ConsumerConfig {
            start: StartPosition::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver,
            max_ack_pending,
        }
    }

    #[test]
    fn new_messages_stop_at_max_ack_pending_but_redeliveries_do_not() {
        let channel = channel_with(5);
        let now = Instant::now();
        let mut consumer = Consumer::new(None, config(2, None), &channel, Log::default());
        assert_eq!(consumer.next(now, &channel).map(|h| h.sequence), Some(1));
        assert_eq!(consumer.next(now, &channel).map(|h| h.sequence), Some(2));
        assert_eq!(consumer.next(now, &channel), None);
        assert!(consumer.nak(2, 0, None, now));
        let again = consumer.next(now, &channel);
        assert_eq!(
            again,
            Some(Handout {
                sequence: 2,
                delivery_count: 2,
                consumer_sequence: 3,
            })
        );
        assert!(consumer.ack(1, 0, now));
        assert!(
            !consumer.ack(1, 0, now),
            "a second ack finds nothing pending"
        );
        assert_eq!(consumer.next(now, &channel).map(|h| h.sequence), Some(3));
        assert_eq!(consumer.info("orders.placed").ack_floor, 1);
        assert_eq!(consumer.info("orders.placed").pending_high_water, 2);
    }

    #[test]
    fn the_consumer_tells_whether_it_has_something_to_hand_out() {
        let channel = channel_with(2);
        let now = Instant::now();
        let last = channel.last_sequence();
        let mut consumer = Consumer::new(None, config(1, None), &channel, Log::default());
        assert!(consumer.can_hand_out(last));
        assert!(consumer.next(now, &channel).is_some());
        assert!(!consumer.can_hand_out(last), "at max_ack_pending");
        assert!(consumer.nak(1, 0, None, now));
        assert!(consumer.can_hand_out(last), "a redelivery is ready");
        assert!(consumer.next(now, &channel).is_some());
        assert!(consumer.ack(1, 0, now));
        assert!(consumer.can_hand_out(last), "room for message 2");
        assert!(consumer.next(now, &channel).is_some());
        assert!(consumer.ack(2, 0, now));
        assert!(!consumer.can_hand_out(last), "all delivered");
    }

    #[test]
    fn redeliveries_come_before_new_messages() {
        let channel = channel_with(5);
        let now = Instant::now();
        let mut consumer = Consumer::new(None, config(10, None), &channel, Log::default());
        assert_eq!(consumer.next(now, &channel).map(|h| h.sequence), Some(1));
        assert_eq!(consumer.next(now, &channel).map(|h| h.sequence), Some(2));
        assert!(consumer.nak(2, 0, None, now));
        assert!(consumer.nak(1, 0, Some(Duration::from_secs(1)), now));
        assert_eq!(consumer.next(now, &channel).map(|h| h.sequence), Some(2));
        assert_eq!(consumer.next(now, &channel).map(|h| h.sequence), Some(3));
        let later = now + Duration::from_secs(1);
        assert_eq!(consumer.next(later, &channel).map(|h| h.sequence), Some(1));
        assert_eq!(consumer.next(later, &channel).map(|h| h.sequence), Some(4));
    }

    #[test]
    fn ack_wait_expiry_redelivers_until_max_deliver() {
        let channel = channel_with(1);
        let start = Instant::now();
        let mut consumer = Consumer::new(None, config(10, Some(2)), &channel, Log::default());
        assert!(consumer.next(start, &channel).is_some());
        assert_eq!(consumer.next_wake(), Some(start + Duration::from_secs(30)));
        let later = start + Duration::from_secs(30);
        let again = consumer.next(later, &channel);
        assert_eq!(again.map(|h| h.delivery_count), Some(2));
        let much_later = later + Duration::from_secs(30);
        assert_eq!(consumer.next(much_later, &channel), None);
        let info = consumer.info("orders.placed");
        assert_eq!(info.dead_lettered, vec![1]);
        assert!(info.pending.is_empty());
        assert_eq!(info.ack_floor, 1);
        assert!(consumer.is_idle(channel.last_sequence()));
    }

    #[test]
    fn in_progress_restarts_the_ack_wait_and_term_is_final() {
        let channel = channel_with(1);
        let start = Instant::now();
        let mut consumer = Consumer::new(None, config(10, None), &channel, Log::default());
        assert!(consumer.next(start, &channel).is_some());
        let halfway = start + Duration::from_secs(20);
        assert!(consumer.in_progress(1, halfway));
        assert_eq!(
            consumer.next(start + Duration::from_secs(31), &channel),
            None
        );
        assert!(consumer.term(1, 0, false, start));
        assert_eq!(
            consumer.next(start + Duration::from_secs(100), &channel),
            None
        );
        assert_eq!(consumer.info("orders.placed").terminated, vec![1]);
    }

    #[test]
    fn the_ack_floor_follows_out_of_order_settlements() {
        let channel = channel_with(5);
        let now = Instant::now();
        let mut consumer = Consumer::new(None, config(10, None), &channel, Log::default());
        for _ in 0..4 {
            assert!(consumer.next(now, &channel).is_some());
        }
        assert!(consumer.ack(2, 0, now));
        assert_eq!(consumer.info("a").ack_floor, 0);
        assert!(consumer.ack(1, 0, now));
        assert_eq!(consumer.info("a").ack_floor, 2);
        assert!(consumer.nak(3, 0, None, now));
        assert_eq!(consumer.info("a").ack_floor, 2);
        assert!(consumer.term(4, 0, false, now));
        assert_eq!(consumer.next(now, &channel).map(|h| h.sequence), Some(3));
        assert!(consumer.ack(3, 0, now));
        let info = consumer.info("a");
        assert_eq!(info.ack_floor, 4);
        assert_eq!(info.acked, vec![1, 2, 3]);
        assert_eq!(info.terminated, vec![4]);
        assert!(info.pending.is_empty());
        assert_eq!(info.delivery_counts.get(&3), Some(&2));
        assert!(!consumer.is_idle(channel.last_sequence()));
        assert_eq!(consumer.next(now, &channel).map(|h| h.sequence), Some(5));
        assert_eq!(consumer.info("a").ack_floor, 4);
        assert!(consumer.ack(5, 0, now));
        assert!(consumer.is_idle(channel.last_sequence()));
        assert_eq!(consumer.info("a").ack_floor, 5);
    }

    #[test]
    fn a_consumer_starting_late_counts_from_its_start() {
        let channel = channel_with(3);
        let now = Instant::now();
        let mut spec = config(10, None);
        spec.start = StartPosition::Last;
        let mut consumer = Consumer::new(None, spec, &channel, Log::default());
        assert_eq!(consumer.info("a").ack_floor, 2);
        assert!(!consumer.ack(1, 0, now), "never delivered");
        assert_eq!(consumer.next(now, &channel).map(|h| h.sequence), Some(3));
        assert_eq!(consumer.info("a").ack_floor, 2);
        assert!(consumer.ack(3, 0, now));
        assert!(!consumer.ack(4, 0, now), "not delivered yet");
        let info = consumer.info("a");
        assert_eq!((info.ack_floor, info.acked), (3, vec![3]));
    }

    /// A consumer with ack policy "all", delivered 1..=5 (deliveries 1..=5).
    fn acking_all() -> (Channel, Consumer) {
        let channel = channel_with(6);
        let mut all = config(10, Some(5));
        all.ack_policy = AckPolicy::All;
        let mut consumer = Consumer::new(None, all, &channel, Log::default());
        for _ in 0..5 {
            assert!(consumer.next(Instant::now(), &channel).is_some());
        }
        (channel, consumer)
    }

    fn acked_with_cover(consumer: &Consumer) -> Vec<(u64, Outcome, Option<u64>)> {
        consumer
            .log
            .snapshot()
            .iter()
            .filter(|s| {
                matches!(
                    s.outcome,
                    Outcome::Acked | Outcome::Terminated | Outcome::DeadLettered
                )
            })
            .map(|s| (s.sequence, s.outcome, s.covered_by))
            .collect()
    }

    #[test]
    fn an_ack_with_policy_all_settles_every_pending_message_below_it() {
        let (channel, mut consumer) = acking_all();
        let now = Instant::now();
        assert!(consumer.nak(2, 2, Some(Duration::from_secs(9)), now));
        assert!(consumer.ack(4, 4, now), "settles 1, 2, 3 and 4");
        let info = consumer.info("a");
        assert_eq!(info.acked, vec![1, 2, 3, 4], "the nak'd 2 is covered too");
        assert_eq!(info.pending, vec![5]);
        assert_eq!(info.ack_floor, 4);
        assert_eq!(
            consumer
                .next(now + Duration::from_secs(10), &channel)
                .map(|h| h.sequence),
            Some(6),
            "the covered nak is not redelivered"
        );
        assert_eq!(
            acked_with_cover(&consumer),
            vec![
                (1, Outcome::Acked, Some(4)),
                (2, Outcome::Acked, Some(4)),
                (3, Outcome::Acked, Some(4)),
                (4, Outcome::Acked, None)
            ]
        );
    }

    #[test]
    fn with_policy_all_a_term_acks_below_it_and_stale_deliveries_are_ignored() {
        let (channel, mut consumer) = acking_all();
        let now = Instant::now();
        assert!(consumer.nak(1, 1, None, now));
        let again = consumer.next(now, &channel).expect("1 again");
        assert_eq!((again.sequence, again.consumer_sequence), (1, 6));
        assert!(
            consumer.term(2, 2, false, now),
            "processed as an ack: settles 1 too"
        );
        assert_eq!(consumer.info("a").acked, vec![1]);
        assert_eq!(consumer.info("a").terminated, vec![2]);
        // An ack of 4 from delivery 4 is above both floors (2, 2).
        assert!(consumer.ack(4, 4, now));
        // The floors are now (4, 4): an ack or a nak from a delivery numbered
        // 4 or less, or an ack of a sequence of 4 or less, is ignored.
        assert!(!consumer.ack(5, 3, now), "a stale delivery");
        assert!(!consumer.nak(5, 4, None, now), "a stale delivery");
        assert!(!consumer.ack(3, 6, now), "at or below the stream floor");
        assert_eq!(consumer.info("a").pending, vec![5]);
        assert!(consumer.ack(5, 5, now));
        assert!(consumer.info("a").pending.is_empty());
        assert_eq!(
            acked_with_cover(&consumer),
            vec![
                (1, Outcome::Acked, Some(2)),
                (2, Outcome::Terminated, None),
                (3, Outcome::Acked, Some(4)),
                (4, Outcome::Acked, None),
                (5, Outcome::Acked, None)
            ]
        );
    }

    #[test]
    fn every_delivery_gets_the_next_consumer_sequence() {
        let channel = channel_with(2);
        let now = Instant::now();
        let mut consumer = Consumer::new(None, config(10, None), &channel, Log::default());
        let numbers = |h: Option<Handout>| h.map(|h| (h.sequence, h.consumer_sequence));
        assert_eq!(numbers(consumer.next(now, &channel)), Some((1, 1)));
        assert!(consumer.nak(1, 0, None, now));
        assert_eq!(numbers(consumer.next(now, &channel)), Some((1, 2)));
        assert_eq!(numbers(consumer.next(now, &channel)), Some((2, 3)));
        assert_eq!(consumer.info("a").consumer_sequence, 3);
    }

    #[test]
    fn coalesced_specs_ask_for_ack_policy_all_and_twice_the_pending() {
        let mut spec = SubscriptionSpec::new("a").with_durable("d");
        spec.max_in_flight = 8;
        let explicit = ConsumerConfig::from_spec(&spec);
        assert_eq!(
            (explicit.ack_policy, explicit.max_ack_pending),
            (AckPolicy::Explicit, 8)
        );
        spec.ack = AckMode::Coalesced;
        let all = ConsumerConfig::from_spec(&spec);
        assert_eq!((all.ack_policy, all.max_ack_pending), (AckPolicy::All, 16));
        let mut same_limits = all.clone();
        same_limits.ack_policy = AckPolicy::Explicit;
        let drift = same_limits.mismatch("a", "d", &all).map(|e| e.to_string());
        assert!(
            drift.as_deref().is_some_and(|e| e.contains("ack policy")),
            "{drift:?}"
        );
    }

    #[test]
    fn start_positions() {
        let channel = channel_with(3);
        assert_eq!(first_sequence(StartPosition::New, &channel), 4);
        assert_eq!(first_sequence(StartPosition::All, &channel), 1);
        assert_eq!(first_sequence(StartPosition::Last, &channel), 3);
        assert_eq!(first_sequence(StartPosition::Sequence(2), &channel), 2);
        assert_eq!(first_sequence(StartPosition::Sequence(0), &channel), 1);
        let second = channel.get(2).map(|m| m.timestamp).expect("stored");
        assert_eq!(first_sequence(StartPosition::Time(second), &channel), 2);
        assert_eq!(first_sequence(StartPosition::Last, &Channel::new("a")), 1);
    }
}
