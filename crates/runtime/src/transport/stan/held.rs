//! The messages one subscription holds in this process: delivered to its
//! stream and not yet settled (waiting in the buffer, or in a handler).
//!
//! NATS Streaming cannot extend an ack wait, so the server redelivers a
//! message whose handler runs longer than the ack wait, again each ack wait.
//! Such a redelivery is held back: it never reaches a second handler while
//! the first still runs, and it does not count towards `max_deliver`. The
//! delivery count a delivery reports is the server's count less the
//! redeliveries this process held back, so only deliveries that reached the
//! stream count. (What another process held back before it stopped is not
//! known here: the server's count includes it.)
//!
//! A redelivery the server sent before it had the ack can still arrive after
//! the message was acked. When the message had redeliveries held back, such
//! a late one is not handed out again (it would count as a fresh delivery
//! and could even exceed `max_deliver`): it is acked again and dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::by_number::Numbers;

/// How many messages' held-back counts are remembered; past that the lowest
/// sequence is forgotten (its next delivery then counts as the server says).
const REMEMBERED: usize = 65_536;

/// The held messages of one subscription, shared by its driver and ackers.
#[derive(Debug, Default)]
pub(crate) struct Held {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Sequences delivered to the stream and not yet settled or dropped.
    holding: Numbers,
    /// Redeliveries held back, per sequence, until it is acked.
    held_back: BTreeMap<u64, u32>,
    /// Acked after redeliveries were held back: a late redelivery of one of
    /// these is acked again and dropped.
    acked_after_holding: BTreeSet<u64>,
}

/// What to do with a delivery that arrived.
#[derive(Debug)]
pub(crate) enum Arrival {
    /// Deliver it: it reports `delivered` deliveries; `hold` goes with its acker.
    Deliver { hold: Hold, delivered: u32 },
    /// An earlier delivery of it is still held here: drop this one.
    HeldBack,
    /// It was acked here after redeliveries were held back, and this one was
    /// on its way: ack it again (in case the first ack was lost) and drop it.
    Settled,
}

impl Held {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A delivery of `sequence` that the server counts as its `server_count`th.
    pub(crate) fn arrive(self: &Arc<Self>, sequence: u64, server_count: u32) -> Arrival {
        let mut inner = self.lock();
        if !inner.acked_after_holding.is_empty() && inner.acked_after_holding.contains(&sequence) {
            return Arrival::Settled;
        }
        if !inner.holding.insert(sequence) {
            let held_back = inner.held_back.entry(sequence).or_default();
            *held_back = held_back.saturating_add(1);
            if inner.held_back.len() > REMEMBERED {
                inner.held_back.pop_first();
            }
            return Arrival::HeldBack;
        }
        let delivered = if server_count <= 1 {
            1
        } else {
            // A redelivery: at least one delivery before it reached a stream.
            let held_back = inner.held_back.get(&sequence).copied().unwrap_or_default();
            server_count.saturating_sub(held_back).max(2)
        };
        Arrival::Deliver {
            hold: Hold {
                held: self.clone(),
                sequence,
                released: AtomicBool::new(false),
            },
            delivered,
        }
    }

    /// `sequence` was acked: it will not come again, nothing to remember;
    /// and released when `release` (one lock for both).
    fn acked(&self, sequence: u64, release: bool) {
        let mut inner = self.lock();
        if inner.held_back.remove(&sequence).is_some() {
            inner.acked_after_holding.insert(sequence);
            if inner.acked_after_holding.len() > REMEMBERED {
                inner.acked_after_holding.pop_first();
            }
        }
        if release {
            inner.holding.remove(&sequence);
        }
    }

    fn release(&self, sequence: u64) {
        self.lock().holding.remove(&sequence);
    }
}

/// One held message: released when it is settled, or when dropped (with the
/// delivery's acker, once it is given up).
#[derive(Debug)]
pub(crate) struct Hold {
    held: Arc<Held>,
    sequence: u64,
    released: AtomicBool,
}

impl Hold {
    /// The message was acked: released, and its held-back count forgotten.
    pub(crate) fn acked(&self) {
        let release = !self.released.swap(true, Ordering::SeqCst);
        self.held.acked(self.sequence, release);
    }

    /// The message is left for the server to redeliver (a nak): the next
    /// delivery may reach a handler.
    pub(crate) fn release(&self) {
        if !self.released.swap(true, Ordering::SeqCst) {
            self.held.release(self.sequence);
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(arrival: Arrival) -> (Hold, u32) {
        match arrival {
            Arrival::Deliver { hold, delivered } => (hold, delivered),
            Arrival::HeldBack => panic!("held back"),
            Arrival::Settled => panic!("settled"),
        }
    }

    #[test]
    fn a_redelivery_of_a_held_message_is_held_back_and_not_counted() {
        let held = Arc::new(Held::default());
        let (hold, count) = delivered(held.arrive(7, 1));
        assert_eq!(count, 1);
        assert!(matches!(held.arrive(7, 2), Arrival::HeldBack));
        assert!(matches!(held.arrive(7, 3), Arrival::HeldBack));
        let (other, _) = delivered(held.arrive(8, 1));
        drop(hold);
        // The server counts 4; two of them never reached a handler.
        let (hold, count) = delivered(held.arrive(7, 4));
        assert_eq!(count, 2);
        hold.release();
        assert!(
            matches!(held.arrive(7, 5), Arrival::Deliver { .. }),
            "a nak releases"
        );
        let (hold, count) = delivered(held.arrive(7, 6));
        assert_eq!(count, 4, "two held back of six");
        hold.acked();
        assert!(
            matches!(held.arrive(7, 7), Arrival::Settled),
            "acked after holding back: a late redelivery is not handed out"
        );
        drop(hold);
        other.acked();
        let (_, count) = delivered(held.arrive(8, 2));
        assert_eq!(
            count, 2,
            "acked with nothing held back: counted as the server says"
        );
    }

    #[test]
    fn a_late_redelivery_of_a_message_acked_after_holding_back_is_settled() {
        let held = Arc::new(Held::default());
        let (hold, _) = delivered(held.arrive(3, 1));
        assert!(matches!(held.arrive(3, 2), Arrival::HeldBack));
        hold.acked();
        // Sent by the server before it had the ack.
        assert!(matches!(held.arrive(3, 3), Arrival::Settled));
        assert!(matches!(held.arrive(3, 4), Arrival::Settled), "and again");
        let (_, count) = delivered(held.arrive(4, 1));
        assert_eq!(count, 1, "other messages are not affected");
    }

    #[test]
    fn a_redelivery_counts_at_least_two() {
        let held = Arc::new(Held::default());
        drop(delivered(held.arrive(1, 1)));
        assert!(matches!(held.arrive(1, 2), Arrival::Deliver { .. }));
        let held = Arc::new(Held::default());
        let (_, count) = delivered(held.arrive(1, 2));
        assert_eq!(count, 2, "a redelivery from an earlier process");
    }
}
