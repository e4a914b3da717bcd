//! A consumer's delivery state: what it has delivered, what waits for a
//! settlement, what is due for redelivery. JetStream semantics with an
//! explicit ack policy, driven by the caller's clock (`tokio::time`, so it
//! follows paused time in tests).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use flowgate::{StartPosition, SubscriptionSpec};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::channel::{stream_name, Channel};
use crate::inspect::ConsumerInfo;
use crate::settlement::{Log, Outcome, Settlement};

/// The settings a consumer is created with; a durable bound again must ask
/// for the same ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerConfig {
    pub(crate) start: StartPosition,
    pub(crate) ack_wait: Duration,
    pub(crate) max_deliver: Option<u32>,
    pub(crate) max_ack_pending: usize,
}

impl ConsumerConfig {
    pub(crate) fn from_spec(spec: &SubscriptionSpec) -> Self {
        Self {
            start: spec.start,
            ack_wait: spec.ack_wait,
            max_deliver: spec.max_deliver,
            max_ack_pending: spec.max_in_flight,
        }
    }

    /// The first difference from `wanted`, as a `ConsumerMismatch` would name it.
    pub(crate) fn mismatch(
        &self,
        channel: &str,
        durable: &str,
        wanted: &ConsumerConfig,
    ) -> Option<flowgate::Error> {
        let error = |field: &'static str, existing: String, wanted: String| {
            Some(flowgate::Error::ConsumerMismatch {
                stream: stream_name(channel),
                durable: durable.to_owned(),
                field,
                existing,
                wanted,
            })
        };
        if self.start != wanted.start {
            return error(
                "deliver policy (start)",
                format!("{:?}", self.start),
                format!("{:?}", wanted.start),
            );
        }
        if self.ack_wait != wanted.ack_wait {
            return error(
                "ack_wait",
                format!("{:?}", self.ack_wait),
                format!("{:?}", wanted.ack_wait),
            );
        }
        if self.max_deliver != wanted.max_deliver {
            let show = |m: Option<u32>| m.map_or_else(|| "-1".to_owned(), |m| m.to_string());
            return error(
                "max_deliver",
                show(self.max_deliver),
                show(wanted.max_deliver),
            );
        }
        if self.max_ack_pending != wanted.max_ack_pending {
            return error(
                "max_ack_pending (max_in_flight)",
                self.max_ack_pending.to_string(),
                wanted.max_ack_pending.to_string(),
            );
        }
        None
    }
}

/// Where an unsettled message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// Delivered; redelivered when the ack wait ends at this instant.
    InFlight(Instant),
    /// Nak'd with a delay; redelivered at this instant.
    Delayed(Instant),
    /// Due for redelivery now (its `ready` entry).
    Ready,
}

/// One delivery handed out: the stream sequence and its delivery count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handout {
    pub(crate) sequence: u64,
    pub(crate) delivery_count: u32,
}

/// The state of one consumer of one channel.
#[derive(Debug)]
pub(crate) struct Consumer {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) config: ConsumerConfig,
    /// Live subscriptions bound to this consumer.
    pub(crate) subscriptions: usize,
    /// Wakes this consumer's subscriptions when something may be deliverable.
    pub(crate) notify: Arc<Notify>,
    /// The next stream sequence to deliver for the first time.
    next_sequence: u64,
    /// Delivered and not settled (the JetStream "ack pending" set).
    pending: BTreeMap<u64, Pending>,
    /// When each timed pending entry fires, ordered by time.
    timers: BTreeSet<(Instant, u64)>,
    /// Pending entries due for redelivery, lowest sequence first.
    ready: BTreeSet<u64>,
    delivery_counts: BTreeMap<u64, u32>,
    acked: BTreeSet<u64>,
    terminated: BTreeSet<u64>,
    exhausted: BTreeSet<u64>,
    /// The exhausted sequences in the order the broker gave up on them.
    exhausted_order: Vec<u64>,
    pending_high_water: usize,
    /// The channel's settlement log, which this consumer writes to.
    log: Log,
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
            notify: Arc::new(Notify::new()),
            next_sequence,
            pending: BTreeMap::new(),
            timers: BTreeSet::new(),
            ready: BTreeSet::new(),
            delivery_counts: BTreeMap::new(),
            acked: BTreeSet::new(),
            terminated: BTreeSet::new(),
            exhausted: BTreeSet::new(),
            exhausted_order: Vec::new(),
            pending_high_water: 0,
            log,
        }
    }

    /// Stops delivering `sequence`: its deliveries ran out.
    fn give_up(&mut self, sequence: u64, at: Instant) {
        if self.exhausted.insert(sequence) {
            self.exhausted_order.push(sequence);
        }
        self.record(sequence, Outcome::DeadLettered, at);
    }

    /// The sequences given up on since the first `seen`, with their delivery counts.
    pub(crate) fn exhausted_since(&self, seen: usize) -> Vec<(u64, u32)> {
        self.exhausted_order
            .get(seen..)
            .unwrap_or_default()
            .iter()
            .map(|seq| (*seq, self.delivery_counts.get(seq).copied().unwrap_or(0)))
            .collect()
    }

    fn record(&self, sequence: u64, outcome: Outcome, at: Instant) {
        self.log.record(Settlement {
            consumer: self.name.clone(),
            sequence,
            delivery_count: self.delivery_counts.get(&sequence).copied().unwrap_or(0),
            outcome,
            at,
        });
    }

    /// Moves every entry whose ack wait or nak delay has ended to the
    /// redelivery queue, or drops it when it was delivered `max_deliver`
    /// times. Returns whether anything changed.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let mut changed = false;
        while let Some(&(at, sequence)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, sequence));
            changed = true;
            if let Some(Pending::InFlight(_)) = self.pending.get(&sequence) {
                self.record(sequence, Outcome::Expired, at);
            }
            if self.reached_max_deliver(sequence) {
                self.pending.remove(&sequence);
                self.give_up(sequence, at);
            } else {
                self.pending.insert(sequence, Pending::Ready);
                self.ready.insert(sequence);
            }
        }
        changed
    }

    /// The next delivery: a redelivery first, else the next new message while
    /// fewer than `max_ack_pending` are unsettled.
    pub(crate) fn next(&mut self, now: Instant, channel: &Channel) -> Option<Handout> {
        self.expire(now);
        let sequence = match self.ready.pop_first() {
            Some(sequence) => sequence,
            None => {
                if self.pending.len() >= self.config.max_ack_pending
                    || self.next_sequence > channel.last_sequence()
                {
                    return None;
                }
                let sequence = self.next_sequence;
                self.next_sequence += 1;
                sequence
            }
        };
        let deadline = now + self.config.ack_wait;
        self.pending.insert(sequence, Pending::InFlight(deadline));
        self.timers.insert((deadline, sequence));
        self.pending_high_water = self.pending_high_water.max(self.pending.len());
        let count = self.delivery_counts.entry(sequence).or_insert(0);
        *count += 1;
        Some(Handout {
            sequence,
            delivery_count: *count,
        })
    }

    /// When the next timer fires, if any runs.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// Settles `sequence` as handled. Returns whether it was pending.
    pub(crate) fn ack(&mut self, sequence: u64, now: Instant) -> bool {
        if !self.settle(sequence) {
            return false;
        }
        self.acked.insert(sequence);
        self.record(sequence, Outcome::Acked, now);
        true
    }

    /// Settles `sequence` as never to be handled. Returns whether it was pending.
    pub(crate) fn term(&mut self, sequence: u64, now: Instant) -> bool {
        if !self.settle(sequence) {
            return false;
        }
        self.terminated.insert(sequence);
        self.record(sequence, Outcome::Terminated, now);
        true
    }

    /// Asks for redelivery of `sequence` after `delay`. Returns whether it was pending.
    pub(crate) fn nak(&mut self, sequence: u64, delay: Option<Duration>, now: Instant) -> bool {
        let Some(state) = self.pending.get(&sequence).copied() else {
            return false;
        };
        self.clear(sequence, state);
        self.record(sequence, Outcome::Nakked { delay }, now);
        if self.reached_max_deliver(sequence) {
            self.pending.remove(&sequence);
            self.give_up(sequence, now);
            return true;
        }
        match delay.filter(|d| !d.is_zero()) {
            Some(delay) => {
                let due = now + delay;
                self.pending.insert(sequence, Pending::Delayed(due));
                self.timers.insert((due, sequence));
            }
            None => {
                self.pending.insert(sequence, Pending::Ready);
                self.ready.insert(sequence);
            }
        }
        true
    }

    /// Restarts the ack wait of `sequence` when it is in flight. Returns
    /// whether it was.
    pub(crate) fn in_progress(&mut self, sequence: u64, now: Instant) -> bool {
        let Some(Pending::InFlight(deadline)) = self.pending.get(&sequence).copied() else {
            return false;
        };
        self.timers.remove(&(deadline, sequence));
        let deadline = now + self.config.ack_wait;
        self.pending.insert(sequence, Pending::InFlight(deadline));
        self.timers.insert((deadline, sequence));
        self.record(sequence, Outcome::InProgress, now);
        true
    }

    /// Nothing pending and nothing left to deliver in a channel whose newest
    /// message is `last_sequence`.
    pub(crate) fn is_idle(&self, last_sequence: u64) -> bool {
        self.pending.is_empty() && self.next_sequence > last_sequence
    }

    /// The highest sequence at or below which nothing is pending.
    fn ack_floor(&self) -> u64 {
        match self.pending.first_key_value() {
            Some((&lowest, _)) => lowest - 1,
            None => self.next_sequence - 1,
        }
    }

    pub(crate) fn info(&self, channel: &str) -> ConsumerInfo {
        ConsumerInfo {
            channel: channel.to_owned(),
            name: self.name.as_deref().map(str::to_owned),
            live_subscriptions: self.subscriptions,
            next_sequence: self.next_sequence,
            ack_floor: self.ack_floor(),
            acked: self.acked.iter().copied().collect(),
            pending: self.pending.keys().copied().collect(),
            delivery_counts: self.delivery_counts.clone(),
            terminated: self.terminated.iter().copied().collect(),
            dead_lettered: self.exhausted.iter().copied().collect(),
            pending_high_water: self.pending_high_water,
        }
    }

    fn reached_max_deliver(&self, sequence: u64) -> bool {
        let delivered = self.delivery_counts.get(&sequence).copied().unwrap_or(0);
        self.config.max_deliver.is_some_and(|max| delivered >= max)
    }

    fn settle(&mut self, sequence: u64) -> bool {
        let Some(state) = self.pending.remove(&sequence) else {
            return false;
        };
        self.clear(sequence, state);
        true
    }

    fn clear(&mut self, sequence: u64, state: Pending) {
        match state {
            Pending::InFlight(at) | Pending::Delayed(at) => {
                self.timers.remove(&(at, sequence));
            }
            Pending::Ready => {
                self.ready.remove(&sequence);
            }
        }
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
        assert!(consumer.nak(2, None, now));
        let again = consumer.next(now, &channel);
        assert_eq!(
            again,
            Some(Handout {
                sequence: 2,
                delivery_count: 2
            })
        );
        assert!(consumer.ack(1, now));
        assert!(!consumer.ack(1, now), "a second ack finds nothing pending");
        assert_eq!(consumer.next(now, &channel).map(|h| h.sequence), Some(3));
        assert_eq!(consumer.info("orders.placed").ack_floor, 1);
        assert_eq!(consumer.info("orders.placed").pending_high_water, 2);
    }

    #[test]
    fn redeliveries_come_before_new_messages() {
        let channel = channel_with(5);
        let now = Instant::now();
        let mut consumer = Consumer::new(None, config(10, None), &channel, Log::default());
        assert_eq!(consumer.next(now, &channel).map(|h| h.sequence), Some(1));
        assert_eq!(consumer.next(now, &channel).map(|h| h.sequence), Some(2));
        assert!(consumer.nak(2, None, now));
        assert!(consumer.nak(1, Some(Duration::from_secs(1)), now));
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
        assert!(consumer.term(1, start));
        assert_eq!(
            consumer.next(start + Duration::from_secs(100), &channel),
            None
        );
        assert_eq!(consumer.info("orders.placed").terminated, vec![1]);
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
