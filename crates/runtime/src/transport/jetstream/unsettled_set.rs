//! The set of stream sequences delivered and not settled, kept for its
//! lowest member.
//!
//! Deliveries mostly arrive in rising order and are mostly settled in about
//! that order, so the set is a queue sorted by sequence in which a settled
//! sequence is only marked: the marked ones at the front leave at once, the
//! others when the queue is compacted (once half of it is marked), so it
//! stays within twice the number of unsettled sequences. A delivery below
//! the newest (a redelivery) is inserted in order.

use std::collections::VecDeque;

/// Delivered, not yet settled, stream sequences.
#[derive(Debug, Default)]
pub(crate) struct UnsettledSet {
    /// Sorted by sequence, each at most once; `true` once settled.
    queue: VecDeque<(u64, bool)>,
    /// How many entries of `queue` are settled.
    settled: usize,
}

impl UnsettledSet {
    /// `sequence` was delivered (again, if it is in the set already).
    pub(crate) fn insert(&mut self, sequence: u64) {
        match self.queue.back() {
            Some(&(newest, _)) if newest >= sequence => match self.find(sequence) {
                Ok(at) => {
                    if std::mem::replace(&mut self.queue[at].1, false) {
                        self.settled -= 1;
                    }
                }
                Err(at) => self.queue.insert(at, (sequence, false)),
            },
            _ => self.queue.push_back((sequence, false)),
        }
    }

    /// `sequence` was settled.
    pub(crate) fn remove(&mut self, sequence: u64) {
        if let Ok(at) = self.find(sequence) {
            if !std::mem::replace(&mut self.queue[at].1, true) {
                self.settled += 1;
            }
        }
        self.trim();
    }

    /// Everything up to `sequence` was settled.
    pub(crate) fn remove_through(&mut self, sequence: u64) {
        while let Some(&(front, settled)) = self.queue.front() {
            if front > sequence {
                break;
            }
            self.queue.pop_front();
            if settled {
                self.settled -= 1;
            }
        }
        self.trim();
    }

    /// The lowest unsettled sequence, if any.
    pub(crate) fn first(&self) -> Option<u64> {
        // `trim` leaves no settled entry at the front.
        self.queue.front().map(|&(sequence, _)| sequence)
    }

    fn find(&self, sequence: u64) -> Result<usize, usize> {
        self.queue
            .binary_search_by_key(&sequence, |&(entry, _)| entry)
    }

    /// Drops the settled entries at the front, and all of them once they are
    /// half the queue.
    fn trim(&mut self) {
        while let Some(&(_, true)) = self.queue.front() {
            self.queue.pop_front();
            self.settled -= 1;
        }
        if self.settled > 0 && self.settled * 2 >= self.queue.len() {
            self.queue.retain(|&(_, settled)| !settled);
            self.settled = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn keeps_the_lowest_unsettled_through_out_of_order_settlements() {
        let mut set = UnsettledSet::default();
        for sequence in [3, 4, 5, 9] {
            set.insert(sequence);
        }
        set.remove(4);
        assert_eq!(set.first(), Some(3));
        set.remove(3);
        assert_eq!(set.first(), Some(5));
        set.insert(2);
        assert_eq!(set.first(), Some(2), "a redelivery below the rest");
        set.remove_through(5);
        assert_eq!(set.first(), Some(9));
        set.remove(9);
        assert_eq!(set.first(), None);
        assert!(set.queue.is_empty());
    }

    #[test]
    fn a_sequence_delivered_again_after_it_was_settled_counts_again() {
        let mut set = UnsettledSet::default();
        for sequence in 1..=4 {
            set.insert(sequence);
        }
        set.remove(3);
        set.insert(3);
        set.remove(1);
        set.remove(2);
        assert_eq!(set.first(), Some(3));
    }

    #[test]
    fn behaves_as_an_ordered_set_and_stays_within_twice_the_unsettled() {
        // A fixed pseudo-random mix of deliveries (mostly rising, some
        // redeliveries), settlements and ack-alls, against a BTreeSet.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut set = UnsettledSet::default();
        let mut model = BTreeSet::new();
        let mut newest = 0;
        for _ in 0..20_000 {
            match next() % 10 {
                0..=4 => {
                    newest += 1;
                    set.insert(newest);
                    model.insert(newest);
                }
                5 => {
                    let again = newest.saturating_sub(next() % 50).max(1);
                    set.insert(again);
                    model.insert(again);
                }
                6..=8 => {
                    let settled = newest.saturating_sub(next() % 40);
                    set.remove(settled);
                    model.remove(&settled);
                }
                _ => {
                    let through = newest.saturating_sub(30 + next() % 30);
                    set.remove_through(through);
                    model = model.split_off(&(through + 1));
                }
            }
            assert_eq!(set.first(), model.first().copied());
            assert!(set.queue.len() <= 2 * model.len().max(1), "compacted");
        }
    }
}
