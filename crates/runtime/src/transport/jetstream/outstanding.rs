//! The stream sequences a subscription delivered and nobody settled yet, so
//! a consumer the server lost can be recreated from the lowest of them.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Delivered and not yet acked or terminated, by stream sequence.
#[derive(Debug, Default)]
pub(crate) struct Outstanding {
    sequences: Mutex<BTreeSet<u64>>,
}

impl Outstanding {
    /// A delivery of `sequence` reached the client.
    pub(crate) fn delivered(&self, sequence: u64) {
        if let Ok(mut sequences) = self.sequences.lock() {
            sequences.insert(sequence);
        }
    }

    /// `sequence` was acked or terminated.
    pub(crate) fn settled(&self, sequence: u64) {
        if let Ok(mut sequences) = self.sequences.lock() {
            sequences.remove(&sequence);
        }
    }

    /// Everything up to `sequence` was acked (an ack-all).
    pub(crate) fn settled_through(&self, sequence: u64) {
        if let Ok(mut sequences) = self.sequences.lock() {
            let above = sequences.split_off(&(sequence + 1));
            *sequences = above;
        }
    }

    /// The lowest unsettled sequence, if any.
    pub(crate) fn lowest(&self) -> Option<u64> {
        self.sequences.lock().ok()?.first().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_unsettled_sequence_survives_later_acks() {
        let outstanding = Outstanding::default();
        for seq in [3, 4, 5, 9] {
            outstanding.delivered(seq);
        }
        outstanding.settled(4);
        assert_eq!(outstanding.lowest(), Some(3));
        outstanding.settled_through(5);
        assert_eq!(outstanding.lowest(), Some(9));
        outstanding.settled(9);
        assert_eq!(outstanding.lowest(), None);
    }
}
