//! Attempts made on messages that went back to the broker, so a redelivery to
//! this process continues counting where the last delivery stopped.

use std::collections::HashMap;
use std::sync::Mutex;

/// How many nak'd messages are remembered; past that the oldest knowledge is
/// dropped and the broker's delivery count (a lower bound) is used instead.
const CAPACITY: usize = 65_536;

/// Stream sequence → attempts made so far, for messages awaiting redelivery.
#[derive(Debug, Default)]
pub(crate) struct AttemptLedger {
    made: Mutex<HashMap<u64, u32>>,
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
            if made.len() >= CAPACITY {
                made.clear();
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
}
