//! A consumer's timers: when each ack wait ends and each nak delay is over,
//! fired in order of time (then of sequence).
//!
//! Nearly every timer is the ack wait of a delivery made now, so deadlines
//! mostly rise with the clock: those go to the back of a queue, in order.
//! A settled message's timer leaves the queue at once when it is the first
//! (messages settled in the order they were delivered), and is otherwise
//! skipped once it comes up (the caller tells which entries still count),
//! the queue being compacted when half of it is stale. The few that would
//! break the order (a nak delay shorter than the ack wait, a delivery whose
//! clock reading came late) go to an ordered set instead. Firing merges the
//! two, so the order is exactly that of one ordered set of live entries.

use std::collections::{BTreeSet, VecDeque};

use tokio::time::Instant;

/// One timer: when it fires, and the stream sequence it is for.
pub(crate) type Timer = (Instant, u64);

/// Below this many queued entries the queue is never compacted.
const COMPACT_FLOOR: usize = 64;

/// The timers of one consumer. Which entries are live is the caller's to
/// say: a message's current deadline is its one live timer, any other entry
/// for it is stale.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// Entries in strictly increasing order, live or stale.
    rising: VecDeque<Timer>,
    /// Entries that did not fit at the back of `rising`, in order. An entry
    /// is removed from here when its message settles, but a stale one can
    /// stay (when its twin in `rising` fired first).
    others: BTreeSet<Timer>,
}

impl Timers {
    /// Adds `timer`. `live` is how many timers are live (pending messages
    /// with a deadline, at most), so stale entries never pile up beyond
    /// about twice that.
    #[inline]
    pub(crate) fn insert(&mut self, timer: Timer, live: usize, is_live: impl Fn(Timer) -> bool) {
        match self.rising.back() {
            Some(&last) if timer <= last => {
                self.others.insert(timer);
            }
            _ => {
                if self.rising.len() >= COMPACT_FLOOR.max(live.saturating_mul(2)) {
                    // At least half of the entries are stale: dropping them
                    // costs at most two steps per entry dropped.
                    self.rising.retain(|&entry| is_live(entry));
                }
                self.rising.push_back(timer);
            }
        }
    }

    /// Drops `timer`, which is no longer live: at once when it is the first
    /// in the queue (messages settled in the order they were delivered),
    /// else it stays there and is skipped when it comes up.
    #[inline]
    pub(crate) fn remove(&mut self, timer: Timer) {
        if self.rising.front() == Some(&timer) {
            self.rising.pop_front();
        } else if !self.others.is_empty() {
            self.others.remove(&timer);
        }
    }

    /// Takes the earliest live timer due at `now`, dropping the stale
    /// entries due before it.
    #[inline]
    pub(crate) fn pop_due(
        &mut self,
        now: Instant,
        is_live: impl Fn(Timer) -> bool,
    ) -> Option<Timer> {
        while let Some((timer, queued)) = self.earliest() {
            if timer.0 > now {
                return None;
            }
            self.take(queued);
            if is_live(timer) {
                return Some(timer);
            }
        }
        None
    }

    /// When the earliest live timer fires, dropping the stale entries before it.
    pub(crate) fn next(&mut self, is_live: impl Fn(Timer) -> bool) -> Option<Instant> {
        while let Some((timer, queued)) = self.earliest() {
            if is_live(timer) {
                return Some(timer.0);
            }
            self.take(queued);
        }
        None
    }

    /// The earliest entry, live or stale, and whether it is the queue's.
    #[inline]
    fn earliest(&self) -> Option<(Timer, bool)> {
        let queued = self.rising.front().copied();
        let Some(&other) = self.others.first() else {
            return queued.map(|timer| (timer, true));
        };
        match queued {
            Some(queued) if queued < other => Some((queued, true)),
            _ => Some((other, false)),
        }
    }

    /// Takes the earliest entry out of the queue (`queued`) or the set.
    #[inline]
    fn take(&mut self, queued: bool) {
        if queued {
            self.rising.pop_front();
        } else {
            self.others.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    /// Timers next to the one ordered set they stand in for, with a deadline
    /// per sequence as the caller keeps it.
    struct Twin {
        timers: Timers,
        reference: BTreeSet<Timer>,
        deadlines: RefCell<BTreeMap<u64, Instant>>,
    }

    impl Twin {
        fn new() -> Self {
            Self {
                timers: Timers::default(),
                reference: BTreeSet::new(),
                deadlines: RefCell::new(BTreeMap::new()),
            }
        }

        fn set(&mut self, timer: Timer) {
            self.clear(timer.1);
            self.deadlines.borrow_mut().insert(timer.1, timer.0);
            self.reference.insert(timer);
            let deadlines = &self.deadlines;
            let live = deadlines.borrow().len();
            self.timers.insert(timer, live, |(at, sequence)| {
                deadlines.borrow().get(&sequence) == Some(&at)
            });
        }

        fn clear(&mut self, sequence: u64) {
            if let Some(at) = self.deadlines.borrow_mut().remove(&sequence) {
                self.reference.remove(&(at, sequence));
                self.timers.remove((at, sequence));
            }
        }

        fn fire(&mut self, now: Instant) -> Vec<Timer> {
            let mut fired = Vec::new();
            loop {
                let deadlines = &self.deadlines;
                let Some(timer) = self.timers.pop_due(now, |(at, sequence)| {
                    deadlines.borrow().get(&sequence) == Some(&at)
                }) else {
                    break;
                };
                self.deadlines.borrow_mut().remove(&timer.1);
                fired.push(timer);
            }
            let expected: Vec<Timer> = self
                .reference
                .iter()
                .copied()
                .take_while(|t| t.0 <= now)
                .collect();
            for timer in &expected {
                self.reference.remove(timer);
            }
            assert_eq!(fired, expected);
            fired
        }

        fn next(&mut self) -> Option<Instant> {
            let deadlines = &self.deadlines;
            let next = self
                .timers
                .next(|(at, sequence)| deadlines.borrow().get(&sequence) == Some(&at));
            assert_eq!(next, self.reference.first().map(|t| t.0));
            next
        }
    }

    #[test]
    fn timers_fire_in_order_of_time_then_sequence() {
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let mut twin = Twin::new();
        twin.set((at(30), 1));
        twin.set((at(30), 2));
        twin.set((at(5), 1)); // a nak delay: out of order
        twin.set((at(30), 0)); // same deadline, lower sequence
        twin.set((at(31), 3));
        assert_eq!(twin.next(), Some(at(5)));
        assert_eq!(twin.fire(at(5)), vec![(at(5), 1)]);
        twin.clear(2);
        assert_eq!(twin.fire(at(30)), vec![(at(30), 0)]);
        assert_eq!(twin.next(), Some(at(31)));
        assert_eq!(twin.fire(at(40)), vec![(at(31), 3)]);
        assert_eq!(twin.next(), None);
    }

    #[test]
    fn a_settled_timer_neither_fires_nor_wakes() {
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let mut twin = Twin::new();
        twin.set((at(1), 1));
        twin.set((at(2), 2));
        twin.clear(1);
        assert_eq!(twin.next(), Some(at(2)));
        // Set again at the deadline it had: the stale entry is its twin.
        twin.set((at(1), 1));
        twin.set((at(3), 2));
        assert_eq!(twin.fire(at(2)), vec![(at(1), 1)]);
        assert_eq!(twin.next(), Some(at(3)));
    }

    #[test]
    fn stale_entries_do_not_pile_up() {
        let start = Instant::now();
        let mut twin = Twin::new();
        twin.set((start, 0)); // never settled: the front stays live
        for sequence in 1..10_000 {
            twin.set((start + Duration::from_millis(sequence), sequence));
            twin.clear(sequence);
        }
        assert!(
            twin.timers.rising.len() <= COMPACT_FLOOR,
            "{}",
            twin.timers.rising.len()
        );
        assert_eq!(twin.next(), Some(start));
    }

    #[test]
    fn timers_settled_in_order_are_dropped_before_they_are_due() {
        let start = Instant::now();
        let mut twin = Twin::new();
        for sequence in 1..1_000 {
            twin.set((start + Duration::from_millis(30_000 + sequence), sequence));
            twin.clear(sequence);
            assert_eq!(twin.fire(start), vec![]);
            assert!(
                twin.timers.rising.is_empty(),
                "{}",
                twin.timers.rising.len()
            );
        }
    }

    #[test]
    fn a_pseudo_random_mix_matches_one_ordered_set() {
        let start = Instant::now();
        let mut twin = Twin::new();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = move |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        let mut now = 0;
        for _ in 0..20_000 {
            let sequence = random(200);
            match random(10) {
                0..=4 => twin.set((
                    start + Duration::from_millis(now + 30 + random(3)),
                    sequence,
                )),
                5 => twin.set((start + Duration::from_millis(now + random(40)), sequence)),
                6 | 7 => twin.clear(sequence),
                8 => {
                    twin.next();
                }
                _ => {
                    now += random(5);
                    twin.fire(start + Duration::from_millis(now));
                }
            }
        }
    }
}
