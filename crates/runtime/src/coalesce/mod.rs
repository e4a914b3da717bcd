//! Coalesced acks (`ack = "coalesced"`, JetStream's ack-all policy): one ack
//! settles every message up to it, so the server does a fraction of the ack
//! work. flowgate acks only the contiguous prefix of handled messages: never
//! past a message that is still running, was nak'd, or awaits redelivery.
//!
//! The window lists the stream sequences delivered and not yet covered by an
//! ack, in order. When its head is handled, the prefix pops; the acker of the
//! highest handled message in it is kept and used once enough messages have
//! popped, or when the periodic flush comes round.
//!
//! An ack-all also settles messages this window never saw: deliveries lost
//! in transit (a connection blip, a reopened pull), or messages an earlier or
//! another instance holds. So the window starts **fenced** and fences again at
//! every gap in the consumer's delivery numbers; while fenced nothing is
//! acked. The fence lifts once the broker's count of delivered-and-unacked
//! messages is no more than the ones listed here: every such message is then
//! known to this window. Handled messages waiting for the prefix are kept
//! alive with progress acks, and a redelivery of one is not handled again.

mod upkeep;

use std::collections::VecDeque;
use std::sync::Mutex;

pub(crate) use upkeep::keep;

/// The state of one delivered message.
#[derive(Debug)]
enum Slot<A> {
    /// Delivered, its handler running.
    Running,
    /// Nak'd: awaits its redelivery (the broker's delivery count so far).
    Waiting { delivered: u32 },
    /// Handled: its acker acks the prefix up to it.
    Done(A),
    /// Handled, its acker lent out for a progress ack.
    DoneLent,
    /// Terminated on its own (dead-lettered): the prefix may move past it.
    Settled,
}

/// What a delivery is to the window.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrival<A> {
    /// To be handled: its acker, handed back.
    Handle(A),
    /// A redelivery of a message already handled and waiting for its ack:
    /// not handled again (its newer acker is kept).
    AlreadyHandled,
}

#[derive(Debug)]
struct Inner<A> {
    /// Nothing is acked while set (see the module docs).
    fenced: bool,
    /// Bumped by every termination, so a fence check that raced one is retried.
    terms: u64,
    /// The consumer's number of the last delivery seen.
    last_delivery: Option<u64>,
    slots: VecDeque<(u64, Slot<A>)>,
    /// The acker of the highest handled message popped from the head, not
    /// yet sent, with its sequence.
    pending: Option<(u64, A)>,
    popped_since_ack: usize,
}

/// A snapshot for a fence check: what the window lists as unacked on the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listed {
    unacked: usize,
    terms: u64,
}

/// The delivered-but-unacked messages of one coalescing subscription.
#[derive(Debug)]
pub(crate) struct AckWindow<A> {
    inner: Mutex<Inner<A>>,
    /// How many popped messages make an ack go out at once.
    batch: usize,
    /// The broker's delivery limit (`max_deliver`).
    max_deliver: Option<u32>,
}

impl<A> AckWindow<A> {
    /// A fenced window: nothing is acked until the first fence check passes.
    pub(crate) fn new(batch: usize, max_deliver: Option<u32>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                fenced: true,
                terms: 0,
                last_delivery: None,
                slots: VecDeque::new(),
                pending: None,
                popped_since_ack: 0,
            }),
            batch: batch.max(1),
            max_deliver,
        }
    }

    /// Records a delivery of `sequence`, numbered `delivery` by the consumer
    /// (`None` where the transport does not number them). A gap in those
    /// numbers fences the window.
    pub(crate) fn delivered(&self, sequence: u64, delivery: Option<u64>, acker: A) -> Arrival<A> {
        let Ok(mut inner) = self.inner.lock() else {
            return Arrival::Handle(acker);
        };
        let contiguous = match (inner.last_delivery, delivery) {
            (Some(last), Some(this)) => this == last + 1,
            _ => false,
        };
        if !contiguous {
            inner.fenced = true;
        }
        if delivery.is_some() {
            inner.last_delivery = delivery;
        }
        match inner.slots.back() {
            Some((last, _)) if *last >= sequence => {}
            _ => {
                inner.slots.push_back((sequence, Slot::Running));
                return Arrival::Handle(acker);
            }
        }
        match inner.slots.binary_search_by_key(&sequence, |(s, _)| *s) {
            Ok(at) => match &mut inner.slots[at].1 {
                slot @ (Slot::Done(_) | Slot::DoneLent) => {
                    *slot = Slot::Done(acker);
                    Arrival::AlreadyHandled
                }
                slot => {
                    *slot = Slot::Running;
                    Arrival::Handle(acker)
                }
            },
            Err(at) => {
                inner.slots.insert(at, (sequence, Slot::Running));
                Arrival::Handle(acker)
            }
        }
    }

    /// Marks `sequence` handled; returns the acker to send now, if any.
    pub(crate) fn done(&self, sequence: u64, acker: A) -> Option<A> {
        self.mark(sequence, Slot::Done(acker))
    }

    /// Marks `sequence` nak'd after `delivered` deliveries: it stays listed.
    pub(crate) fn nakked(&self, sequence: u64, delivered: u32) {
        let _ = self.mark(sequence, Slot::Waiting { delivered });
    }

    /// Marks `sequence` terminated on its own; returns the acker to send now, if any.
    pub(crate) fn settled(&self, sequence: u64) -> Option<A> {
        if let Ok(mut inner) = self.inner.lock() {
            inner.terms += 1;
        }
        self.mark(sequence, Slot::Settled)
    }

    /// The acker to send now, for the periodic flush: what popped and waits,
    /// or the prefix that can pop. Nothing while fenced.
    pub(crate) fn flush(&self) -> Option<A> {
        let mut inner = self.inner.lock().ok()?;
        if inner.fenced {
            return None;
        }
        pop_prefix(&mut inner);
        inner.popped_since_ack = 0;
        inner.pending.take().map(|(_, acker)| acker)
    }

    /// Whether acks are held back until a fence check passes.
    pub(crate) fn is_fenced(&self) -> bool {
        self.inner.lock().map(|inner| inner.fenced).unwrap_or(true)
    }

    /// What the window lists as delivered and unacked on the broker: take it
    /// *before* asking the broker for its count, then pass both to
    /// [`lift_fence`](Self::lift_fence).
    pub(crate) fn listed(&self) -> Listed {
        let Ok(inner) = self.inner.lock() else {
            return Listed {
                unacked: 0,
                terms: u64::MAX,
            };
        };
        let unacked = inner
            .slots
            .iter()
            .filter(|(_, slot)| match slot {
                Slot::Running | Slot::Done(_) | Slot::DoneLent => true,
                // One the broker exhausted is no longer pending there.
                Slot::Waiting { delivered } => self.max_deliver.is_none_or(|max| *delivered < max),
                Slot::Settled => false,
            })
            .count()
            + usize::from(inner.pending.is_some());
        Listed {
            unacked,
            terms: inner.terms,
        }
    }

    /// Lifts the fence when the broker's count of delivered-and-unacked
    /// messages (asked after `listed` was taken) is no more than the window
    /// lists: every one of them is then known here. A termination between
    /// the two makes the check inconclusive. Returns whether the window is
    /// unfenced now.
    pub(crate) fn lift_fence(&self, listed: Listed, broker_unacked: usize) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        if inner.fenced && inner.terms == listed.terms && broker_unacked <= listed.unacked {
            inner.fenced = false;
        }
        !inner.fenced
    }

    /// Lends out the ackers of handled messages waiting for the prefix to be
    /// acked, for progress acks that keep the broker from redelivering them.
    /// Give them back with [`give_back`](Self::give_back).
    pub(crate) fn lend_waiting(&self) -> Vec<(u64, A)> {
        let Ok(mut inner) = self.inner.lock() else {
            return Vec::new();
        };
        let mut lent = Vec::new();
        for (sequence, slot) in inner.slots.iter_mut() {
            if matches!(slot, Slot::Done(_)) {
                if let Slot::Done(acker) = std::mem::replace(slot, Slot::DoneLent) {
                    lent.push((*sequence, acker));
                }
            }
        }
        lent
    }

    /// Takes back lent ackers. One whose message popped meanwhile becomes the
    /// one to ack with, when it is the highest popped.
    pub(crate) fn give_back(&self, lent: Vec<(u64, A)>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        for (sequence, acker) in lent {
            match inner.slots.binary_search_by_key(&sequence, |(s, _)| *s) {
                Ok(at) => {
                    if matches!(inner.slots[at].1, Slot::DoneLent) {
                        inner.slots[at].1 = Slot::Done(acker);
                    }
                }
                Err(_) => {
                    let higher = inner
                        .pending
                        .as_ref()
                        .is_none_or(|(pending, _)| sequence > *pending);
                    let popped = inner
                        .slots
                        .front()
                        .is_none_or(|(front, _)| sequence < *front);
                    if higher && popped {
                        inner.pending = Some((sequence, acker));
                    }
                }
            }
        }
    }

    /// Messages delivered and not yet covered by an ack.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|i| i.slots.len()).unwrap_or(0)
    }

    fn mark(&self, sequence: u64, state: Slot<A>) -> Option<A> {
        let mut inner = self.inner.lock().ok()?;
        let at = inner
            .slots
            .binary_search_by_key(&sequence, |(s, _)| *s)
            .ok()?;
        inner.slots[at].1 = state;
        if at != 0 || inner.fenced {
            return None;
        }
        pop_prefix(&mut inner);
        if inner.popped_since_ack >= self.batch && inner.pending.is_some() {
            inner.popped_since_ack = 0;
            return inner.pending.take().map(|(_, acker)| acker);
        }
        None
    }
}

/// Pops the handled prefix, keeping the acker of the highest handled message.
fn pop_prefix<A>(inner: &mut Inner<A>) {
    while matches!(
        inner.slots.front(),
        Some((_, Slot::Done(_) | Slot::DoneLent | Slot::Settled))
    ) {
        if let Some((sequence, Slot::Done(acker))) = inner.slots.pop_front() {
            inner.pending = Some((sequence, acker));
        }
        inner.popped_since_ack += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window that was delivered `sequences` (numbered from 1) and whose
    /// fence was lifted: the broker had nothing else unacked.
    fn open_window(batch: usize, sequences: &[u64]) -> AckWindow<&'static str> {
        let window = AckWindow::new(batch, Some(5));
        deliver(&window, 1, sequences);
        assert!(window.is_fenced(), "a new window is fenced");
        let listed = window.listed();
        assert!(window.lift_fence(listed, sequences.len()));
        window
    }

    /// Delivers `sequences` numbered on from `first_delivery`.
    fn deliver(window: &AckWindow<&'static str>, first_delivery: u64, sequences: &[u64]) {
        for (n, seq) in sequences.iter().enumerate() {
            let arrival = window.delivered(*seq, Some(first_delivery + n as u64), "delivery");
            assert_eq!(arrival, Arrival::Handle("delivery"));
        }
    }

    #[test]
    fn acks_only_the_contiguous_prefix_with_its_highest_acker() {
        let window = AckWindow::new(100, None);
        let _ = window.delivered(1, Some(1), "d");
        assert!(window.lift_fence(window.listed(), 1));
        deliver(&window, 2, &[2, 3, 4, 5]);
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
        assert_eq!(window.len(), 2);
        assert_eq!(window.done(4, "ack-4"), None, "below the batch");
        assert_eq!(window.len(), 0);
        assert_eq!(window.flush(), Some("ack-5"));
    }

    #[test]
    fn never_acks_past_a_message_awaiting_redelivery() {
        let window = open_window(1, &[1, 2, 3]);
        window.nakked(1, 1);
        assert_eq!(window.done(2, "ack-2"), None);
        assert_eq!(window.done(3, "ack-3"), None);
        assert_eq!(window.flush(), None, "nothing may be acked past 1");
        assert_eq!(
            window.delivered(1, Some(4), "again"),
            Arrival::Handle("again")
        );
        assert_eq!(window.len(), 3);
        assert_eq!(window.done(1, "ack-1"), Some("ack-3"));
    }

    #[test]
    fn a_terminated_message_lets_the_prefix_pass() {
        let window = open_window(10, &[1, 2, 3]);
        assert_eq!(window.done(1, "ack-1"), None, "batch of 10 not reached");
        assert_eq!(window.settled(2), None);
        assert_eq!(window.done(3, "ack-3"), None);
        assert_eq!(window.flush(), Some("ack-3"));
        assert_eq!(window.flush(), None);
    }

    #[test]
    fn a_gap_in_delivery_numbers_fences_until_the_broker_agrees() {
        let window = open_window(1, &[1, 2]);
        // Delivery 3 (stream sequence 3) was lost in transit; 4 arrives.
        assert_eq!(window.delivered(4, Some(4), "d"), Arrival::Handle("d"));
        assert!(window.is_fenced());
        assert_eq!(window.done(1, "ack-1"), None, "fenced");
        assert_eq!(window.done(2, "ack-2"), None);
        assert_eq!(window.done(4, "ack-4"), None);
        assert_eq!(window.flush(), None);
        // The broker holds 1, 2, 3 and 4 unacked; the window knows three.
        let listed = window.listed();
        assert!(!window.lift_fence(listed, 4), "3 is unknown here");
        // 3 comes again after its ack wait.
        assert_eq!(window.delivered(3, Some(5), "d"), Arrival::Handle("d"));
        let listed = window.listed();
        assert!(window.lift_fence(listed, 4));
        assert_eq!(window.flush(), Some("ack-2"), "3 is still running");
        assert_eq!(window.done(3, "ack-3"), Some("ack-4"));
    }

    #[test]
    fn unacked_messages_of_another_instance_fence_until_their_owner_acks() {
        // Sequences 1 and 2 are held by another instance; 3 is ours.
        let window = AckWindow::new(1, Some(5));
        let _ = window.delivered(3, Some(3), "d");
        assert_eq!(window.done(3, "ack-3"), None);
        let listed = window.listed();
        assert!(
            !window.lift_fence(listed, 3),
            "acking 3 would settle 1 and 2"
        );
        // Their owner acked them and stopped: only ours is left.
        let listed = window.listed();
        assert!(window.lift_fence(listed, 1));
        assert_eq!(window.flush(), Some("ack-3"));
    }

    #[test]
    fn a_termination_during_a_fence_check_makes_it_inconclusive() {
        let window = AckWindow::new(1, Some(5));
        deliver(&window, 1, &[1, 2]);
        let listed = window.listed();
        let _ = window.settled(1);
        assert!(!window.lift_fence(listed, 1));
        assert!(window.lift_fence(window.listed(), 1));
    }

    #[test]
    fn a_redelivered_handled_message_is_not_handled_again() {
        let window = open_window(10, &[1, 2]);
        assert_eq!(window.done(2, "ack-2"), None);
        let lent = window.lend_waiting();
        assert_eq!(lent, vec![(2, "ack-2")]);
        window.give_back(lent);
        assert_eq!(
            window.delivered(2, Some(3), "ack-2-again"),
            Arrival::AlreadyHandled
        );
        assert_eq!(window.done(1, "ack-1"), None);
        assert_eq!(window.flush(), Some("ack-2-again"));
    }

    #[test]
    fn an_acker_lent_while_its_message_pops_is_the_one_acked_with() {
        let window = open_window(10, &[1, 2]);
        assert_eq!(window.done(2, "ack-2"), None);
        let lent = window.lend_waiting();
        assert_eq!(window.done(1, "ack-1"), None, "below the batch");
        window.give_back(lent);
        assert_eq!(window.flush(), Some("ack-2"));
    }

    #[test]
    fn a_batch_of_pops_sends_an_ack() {
        let window = open_window(2, &[1, 2, 3, 4]);
        assert_eq!(window.done(1, "1"), None);
        assert_eq!(window.done(2, "2"), Some("2"));
        assert_eq!(window.done(3, "3"), None);
    }
}
