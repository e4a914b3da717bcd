//! [`HealthTally`]: what the message path tells health, one atomic add at a
//! time: deliveries taken, and settlements by outcome.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Counters one subscription's dispatcher and settlements bump. No lock,
/// no clock read: the subscription's monitor turns them into times and
/// ratios once a second.
#[derive(Debug, Default)]
pub(crate) struct HealthTally {
    delivered: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    ended: AtomicBool,
}

impl HealthTally {
    /// A delivery reached the dispatcher.
    #[inline(always)]
    pub(crate) fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// The runtime settled a message: with an ack (`true`), or with a nak,
    /// a term or a dead letter (`false`).
    #[inline(always)]
    pub(crate) fn settled(&self, acked: bool) {
        let counter = if acked { &self.acked } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn deliveries(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Settlements so far: (acked, failed).
    pub(crate) fn settlements(&self) -> (u64, u64) {
        (
            self.acked.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Whether the subscription's dispatcher has ended.
    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Marks the dispatcher ended when the returned guard drops: when it
    /// returns, panics, or is aborted.
    pub(crate) fn ended_on_drop(self: &Arc<Self>) -> EndedOnDrop {
        EndedOnDrop(self.clone())
    }
}

/// Marks its tally's dispatcher ended when dropped.
pub(crate) struct EndedOnDrop(Arc<HealthTally>);

impl Drop for EndedOnDrop {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::Relaxed);
    }
}
