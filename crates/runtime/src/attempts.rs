//! Attempts made on messages that went back to the broker, so a redelivery to
//! this process continues counting where the last delivery stopped.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// How many nak'd messages are remembered; past that the one with the lowest
/// stream sequence (the oldest) is dropped, and for it the broker's delivery
/// count (a lower bound) is used instead.
const CAPACITY: usize = 65_536;

/// Stream sequence → attempts made so far, for messages awaiting redelivery.
#[derive(Debug)]
pub(crate) struct AttemptLedger {
    made: Mutex<BTreeMap<u64, u32>>,
    capacity: usize,
}

impl Default for AttemptLedger {
    fn default() -> Self {
        Self {
            made: Mutex::default(),
            capacity: CAPACITY,
        }
    }
}

impl AttemptLedger {
    /// The attempt number a delivery starts at: the broker's delivery count,
    /// or one past the attempts remembered for it, whichever is higher.
    pub(crate) fn first_attempt(&self, stream_sequence: u64, delivery_count: u32) -> u32 {
        let delivery_count = delivery_count.max(1);
        if delivery_count == 1 {
            return 1;
        }
        let remembered = self
            .made
            .lock()
            .ok()
            .and_then(|mut made| made.remove(&stream_sequence));
        remembered.map_or(delivery_count, |made| delivery_count.max(made + 1))
    }

    /// Remembers that `attempts` were made on a message going back to the broker.
    pub(crate) fn record(&self, stream_sequence: u64, attempts: u32) {
        if let Ok(mut made) = self.made.lock() {
            if !made.contains_key(&stream_sequence) && made.len() >= self.capacity {
                made.pop_first();
            }
            made.insert(stream_sequence, attempts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redelivery_continues_after_the_remembered_attempts() {
        let ledger = AttemptLedger::default();
        assert_eq!(ledger.first_attempt(7, 1), 1);
        ledger.record(7, 4);
        assert_eq!(ledger.first_attempt(7, 2), 5);
        // Taken once: a later delivery without a new record falls back to the count.
        assert_eq!(ledger.first_attempt(7, 3), 3);
    }

    #[test]
    fn at_capacity_the_oldest_message_is_dropped() {
        let ledger = AttemptLedger {
            capacity: 4,
            ..AttemptLedger::default()
        };
        for sequence in [5, 3, 9, 7] {
            ledger.record(sequence, 2);
        }
        // Updating a known message drops nothing.
        ledger.record(9, 4);
        ledger.record(11, 2);
        // Sequence 3, the lowest, was dropped: it falls back to the delivery count.
        assert_eq!(ledger.first_attempt(3, 2), 2);
        assert_eq!(ledger.first_attempt(5, 2), 3);
        assert_eq!(ledger.first_attempt(7, 2), 3);
        assert_eq!(ledger.first_attempt(9, 2), 5);
        assert_eq!(ledger.first_attempt(11, 2), 3);
    }
}
