//! Coalesced acks (`ack = "coalesced"`, JetStream's ack-all policy): one ack
//! settles every message up to it, so the server does a fraction of the ack
//! work. flowgate acks only the contiguous prefix of handled messages: never
//! past a message that is still running, was nak'd, or awaits redelivery.
//!
//! The window lists the stream sequences delivered and not yet covered by an
//! ack, in order. When its head is handled, the prefix pops; the acker of the
//! highest handled message in it is kept and used once enough messages have
//! popped, or when the periodic flush comes round.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::transport::AckFence;

/// The state of one delivered message.
#[derive(Debug)]
enum Slot<A> {
    /// Delivered and not handled yet (running, or nak'd and awaiting redelivery).
    Outstanding,
    /// Handled: its acker acks the prefix up to it.
    Done(A),
    /// Terminated on its own (dead-lettered): the prefix may move past it.
    Settled,
}

#[derive(Debug)]
struct Inner<A> {
    /// Unacked messages an earlier instance took: until all of them are
    /// listed here, nothing pops.
    fence: Option<AckFence>,
    slots: VecDeque<(u64, Slot<A>)>,
    /// The acker of the highest handled message popped from the head, not yet sent.
    pending: Option<A>,
    popped_since_ack: usize,
}

/// The delivered-but-unacked messages of one coalescing subscription.
#[derive(Debug)]
pub(crate) struct AckWindow<A> {
    inner: Mutex<Inner<A>>,
    /// How many popped messages make an ack go out at once.
    batch: usize,
}

impl<A> AckWindow<A> {
    pub(crate) fn new(batch: usize, fence: Option<AckFence>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                fence: fence.filter(|f| f.unacked > 0),
                slots: VecDeque::new(),
                pending: None,
                popped_since_ack: 0,
            }),
            batch: batch.max(1),
        }
    }

    /// Records a delivery (a redelivery of a listed message changes nothing).
    pub(crate) fn delivered(&self, sequence: u64) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let listed = match inner.slots.back() {
            Some((last, _)) if *last >= sequence => {
                match inner.slots.binary_search_by_key(&sequence, |(s, _)| *s) {
                    Ok(_) => false,
                    Err(at) => {
                        inner.slots.insert(at, (sequence, Slot::Outstanding));
                        true
                    }
                }
            }
            _ => {
                inner.slots.push_back((sequence, Slot::Outstanding));
                true
            }
        };
        if let Some(fence) = inner.fence.as_mut() {
            if listed && sequence <= fence.through {
                fence.unacked = fence.unacked.saturating_sub(1);
                if fence.unacked == 0 {
                    inner.fence = None;
                }
            }
        }
    }

    /// Marks `sequence` handled; returns the acker to send now, if any.
    pub(crate) fn done(&self, sequence: u64, acker: A) -> Option<A> {
        self.mark(sequence, Slot::Done(acker))
    }

    /// Marks `sequence` terminated on its own; returns the acker to send now, if any.
    pub(crate) fn settled(&self, sequence: u64) -> Option<A> {
        self.mark(sequence, Slot::Settled)
    }

    /// The acker to send now, for the periodic flush: what popped and waits,
    /// or (once a fence is lifted) the prefix that can pop.
    pub(crate) fn flush(&self) -> Option<A> {
        let mut inner = self.inner.lock().ok()?;
        if inner.fence.is_none() {
            pop_prefix(&mut inner);
        }
        inner.popped_since_ack = 0;
        inner.pending.take()
    }

    /// Messages delivered and not yet covered by an ack.
    #[cfg(test)]
    fn listed(&self) -> usize {
        self.inner.lock().map(|i| i.slots.len()).unwrap_or(0)
    }

    fn mark(&self, sequence: u64, state: Slot<A>) -> Option<A> {
        let mut inner = self.inner.lock().ok()?;
        let at = inner
            .slots
            .binary_search_by_key(&sequence, |(s, _)| *s)
            .ok()?;
        inner.slots[at].1 = state;
        if at != 0 || inner.fence.is_some() {
            return None;
        }
        while matches!(
            inner.slots.front(),
            Some((_, Slot::Done(_) | Slot::Settled))
        ) {
            if let Some((_, Slot::Done(acker))) = inner.slots.pop_front() {
                inner.pending = Some(acker);
            }
            inner.popped_since_ack += 1;
        }
        if inner.popped_since_ack >= self.batch && inner.pending.is_some() {
            inner.popped_since_ack = 0;
            return inner.pending.take();
        }
        None
    }
}

/// Pops the handled prefix, keeping the acker of the highest handled message.
fn pop_prefix<A>(inner: &mut Inner<A>) {
    while matches!(
        inner.slots.front(),
        Some((_, Slot::Done(_) | Slot::Settled))
    ) {
        if let Some((_, Slot::Done(acker))) = inner.slots.pop_front() {
            inner.pending = Some(acker);
        }
        inner.popped_since_ack += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_only_the_contiguous_prefix_with_its_highest_acker() {
        let window = AckWindow::new(100, None);
        for seq in 1..=5 {
            window.delivered(seq);
        }
        assert_eq!(window.done(2, "ack-2"), None, "1 is still running");
        assert_eq!(window.done(3, "ack-3"), None);
        assert_eq!(window.done(5, "ack-5"), None);
        assert_eq!(
            window.done(1, "ack-1"),
            None,
            "4 is running, and the batch is not reached"
        );
        assert_eq!(
            window.flush(),
            Some("ack-3"),
            "the prefix 1..=3 is acked by 3"
        );
        assert_eq!(window.listed(), 2);
        assert_eq!(
            window.done(4, "ack-4"),
            None,
            "below the batch: left to the flush"
        );
        assert_eq!(window.listed(), 0);
        assert_eq!(window.flush(), Some("ack-5"));
    }

    #[test]
    fn never_acks_past_a_message_awaiting_redelivery() {
        let window = AckWindow::new(1, None);
        for seq in 1..=3 {
            window.delivered(seq);
        }
        // 1 failed and was nak'd: it stays outstanding.
        assert_eq!(window.done(2, "ack-2"), None);
        assert_eq!(window.done(3, "ack-3"), None);
        assert_eq!(window.flush(), None, "nothing may be acked past 1");
        window.delivered(1); // the redelivery changes nothing
        assert_eq!(window.listed(), 3);
        assert_eq!(window.done(1, "ack-1"), Some("ack-3"));
    }

    #[test]
    fn a_terminated_message_lets_the_prefix_pass() {
        let window = AckWindow::new(10, None);
        for seq in 1..=3 {
            window.delivered(seq);
        }
        assert_eq!(window.done(1, "ack-1"), None, "batch of 10 not reached");
        assert_eq!(window.settled(2), None);
        assert_eq!(window.done(3, "ack-3"), None);
        assert_eq!(window.flush(), Some("ack-3"));
        assert_eq!(window.flush(), None);
    }

    #[test]
    fn unacked_messages_of_an_earlier_instance_fence_the_acks() {
        // Sequences 3 and 5 were taken by an app that died; 6.. are new.
        let fence = AckFence {
            through: 5,
            unacked: 2,
        };
        let window = AckWindow::new(1, Some(fence));
        window.delivered(6);
        assert_eq!(
            window.done(6, "ack-6"),
            None,
            "acking 6 would settle 3 and 5"
        );
        assert_eq!(window.flush(), None);
        window.delivered(3);
        assert_eq!(window.done(3, "ack-3"), None, "5 is still out there");
        window.delivered(5);
        assert_eq!(
            window.flush(),
            Some("ack-3"),
            "every unacked one is listed: 3 may go"
        );
        assert_eq!(window.done(5, "ack-5"), Some("ack-6"));
    }

    #[test]
    fn a_batch_of_pops_sends_an_ack() {
        let window = AckWindow::new(2, None);
        for seq in 1..=4 {
            window.delivered(seq);
        }
        assert_eq!(window.done(1, 1), None);
        assert_eq!(window.done(2, 2), Some(2));
        assert_eq!(window.done(3, 3), None);
    }
}
