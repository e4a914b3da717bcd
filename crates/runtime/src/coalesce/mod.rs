//! Coalesced acks (`ack = "coalesced"`, JetStream's ack-all policy): one ack
//! settles every message up to it, so the server does a fraction of the ack
//! work. flowgate acks only the contiguous prefix of settled messages: never
//! past a message that is still running, was nak'd, or awaits redelivery.
//!
//! The window lists the stream sequences delivered and not yet covered by an
//! ack, in order. When its head is handled, the prefix pops; the acker of the
//! highest handled message in it is kept and used once enough messages have
//! popped, or when the periodic flush comes round. A dead-lettered message is
//! settled the same way: under the ack-all policy a TERM would settle every
//! message before it too.
//!
//! The server ignores an ack-all (and a nak) whose delivery number is not
//! above the highest delivery number acked so far. So the prefix pops only up
//! to a message delivered before every running or handled one left behind
//! it; past a redelivery it waits for the messages delivered earlier.
//!
//! An ack-all also settles messages this window never saw: deliveries lost
//! in transit (a connection blip, a reopened pull), or messages an earlier or
//! another instance holds. So the window starts **fenced** and fences again at
//! every gap in the consumer's delivery numbers; while fenced nothing more
//! pops. The fence lifts once the broker's count of delivered-and-unacked
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
    /// Settled by the app (handled, or dead-lettered): its acker acks the
    /// prefix up to it.
    Done(A),
    /// Done, its acker lent out for a progress ack: the prefix stops here
    /// until it is given back.
    DoneLent,
}

impl<A> Slot<A> {
    /// Delivered and not nak'd: the broker holds it for the delivery the
    /// window knows, whose acker may still be used.
    fn is_live(&self) -> bool {
        !matches!(self, Slot::Waiting { .. })
    }
}

/// One message of the window.
#[derive(Debug)]
struct Entry<A> {
    sequence: u64,
    /// The consumer's number of the delivery whose acker the window holds
    /// (or the running handler will hand in).
    delivery: Option<u64>,
    /// Delivered after messages that follow it in the window: the delivery
    /// numbers are out of order here, so the ack point is searched for.
    reordered: bool,
    slot: Slot<A>,
}

/// What a delivery is to the window.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrival<A> {
    /// To be handled: its acker, handed back.
    Handle(A),
    /// A redelivery of a message already handled and waiting for its ack:
    /// not handled again (the acker of its first delivery is kept).
    AlreadyHandled,
}

#[derive(Debug)]
struct Inner<A> {
    /// Nothing more pops while set (see the module docs).
    fenced: bool,
    /// Bumped by every ack taken out of the window, so a fence check that
    /// raced one is retried.
    acks: u64,
    /// The consumer's number of the last delivery seen.
    last_delivery: Option<u64>,
    entries: VecDeque<Entry<A>>,
    /// Live entries marked `reordered`.
    reordered: usize,
    /// The acker of the highest message popped from the head, not yet
    /// sent, with its sequence.
    pending: Option<(u64, A)>,
    popped_since_ack: usize,
    /// The highest sequence popped so far.
    last_popped: u64,
}

/// A snapshot for a fence check: what the window lists as unacked on the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listed {
    unacked: usize,
    acks: u64,
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
                acks: 0,
                last_delivery: None,
                entries: VecDeque::new(),
                reordered: 0,
                pending: None,
                popped_since_ack: 0,
                last_popped: 0,
            }),
            batch: batch.max(1),
            max_deliver,
        }
    }

    /// Unfenced, for a subscription that bound its consumer with nothing
    /// unacked after delivery `last_delivery`: a first delivery that follows
    /// it leaves nothing unknown an ack could cover (one that does not
    /// fences, as any gap does).
    pub(crate) fn known_up_to(mut self, last_delivery: u64) -> Self {
        if let Ok(inner) = self.inner.get_mut() {
            inner.fenced = false;
            inner.last_delivery = Some(last_delivery);
        }
        self
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
        let len = inner.entries.len();
        match inner.entries.back() {
            Some(last) if last.sequence >= sequence => {}
            _ => {
                inner.entries.push_back(Entry {
                    sequence,
                    delivery,
                    reordered: false,
                    slot: Slot::Running,
                });
                return Arrival::Handle(acker);
            }
        }
        match inner
            .entries
            .binary_search_by_key(&sequence, |e| e.sequence)
        {
            Ok(at) => {
                let entry = &mut inner.entries[at];
                if matches!(entry.slot, Slot::Done(_) | Slot::DoneLent) {
                    return Arrival::AlreadyHandled;
                }
                entry.slot = Slot::Running;
                entry.delivery = delivery;
                let newly_reordered = at + 1 < len && !entry.reordered;
                entry.reordered |= newly_reordered;
                inner.reordered += usize::from(newly_reordered);
                Arrival::Handle(acker)
            }
            Err(at) => {
                inner.entries.insert(
                    at,
                    Entry {
                        sequence,
                        delivery,
                        reordered: true,
                        slot: Slot::Running,
                    },
                );
                inner.reordered += 1;
                Arrival::Handle(acker)
            }
        }
    }

    /// Marks `sequence` settled by the app: handled, or dead-lettered (under
    /// the ack-all policy a TERM would settle every message before it too, so
    /// a dead-lettered message is settled by the ack that passes it).
    /// Returns the acker to send now, if any.
    pub(crate) fn done(&self, sequence: u64, acker: A) -> Option<A> {
        self.mark(sequence, Slot::Done(acker))
    }

    /// Lists `sequence`, a delivery handed back to the broker unhandled (at
    /// shutdown) after `delivered` deliveries, as awaiting redelivery: the
    /// broker still counts it unacked, so a fence check must too.
    pub(crate) fn released(&self, sequence: u64, delivered: u32) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Err(at) = inner
            .entries
            .binary_search_by_key(&sequence, |e| e.sequence)
        {
            inner.entries.insert(
                at,
                Entry {
                    sequence,
                    delivery: None,
                    reordered: false,
                    slot: Slot::Waiting { delivered },
                },
            );
        }
    }

    /// Marks `sequence` nak'd after `delivered` deliveries: it stays listed.
    pub(crate) fn nakked(&self, sequence: u64, delivered: u32) {
        let _ = self.mark(sequence, Slot::Waiting { delivered });
    }

    /// The acker to send now, for the periodic flush: what popped and waits,
    /// or the prefix that can pop. While fenced nothing more pops, but what
    /// popped before the fence went up is sent: the window knew every
    /// message the broker held below it then.
    pub(crate) fn flush(&self) -> Option<A> {
        let mut inner = self.inner.lock().ok()?;
        if !inner.fenced {
            pop_prefix(&mut inner);
        }
        inner.popped_since_ack = 0;
        take_pending(&mut inner)
    }

    /// An ack taken from the window could not be sent: keep its acker, so
    /// the next flush sends it again (unless a newer one is waiting, which
    /// covers it), and the messages it covers are not redelivered and run
    /// again meanwhile.
    pub(crate) fn unsent(&self, acker: A) {
        if let Ok(mut inner) = self.inner.lock() {
            if inner.pending.is_none() {
                inner.pending = Some((inner.last_popped, acker));
            }
        }
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
                acks: u64::MAX,
            };
        };
        let unacked = inner
            .entries
            .iter()
            .filter(|entry| match entry.slot {
                Slot::Running | Slot::Done(_) | Slot::DoneLent => true,
                // One the broker exhausted is no longer pending there.
                Slot::Waiting { delivered } => self.max_deliver.is_none_or(|max| delivered < max),
            })
            .count()
            + usize::from(inner.pending.is_some());
        Listed {
            unacked,
            acks: inner.acks,
        }
    }

    /// Lifts the fence when the broker's count of delivered-and-unacked
    /// messages (asked after `listed` was taken) is no more than the window
    /// lists: every one of them is then known here. An ack sent between the
    /// two makes the check inconclusive. Returns whether the window is
    /// unfenced now.
    pub(crate) fn lift_fence(&self, listed: Listed, broker_unacked: usize) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        if inner.fenced && inner.acks == listed.acks && broker_unacked <= listed.unacked {
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
        for entry in inner.entries.iter_mut() {
            if matches!(entry.slot, Slot::Done(_)) {
                if let Slot::Done(acker) = std::mem::replace(&mut entry.slot, Slot::DoneLent) {
                    lent.push((entry.sequence, acker));
                }
            }
        }
        lent
    }

    /// Takes back lent ackers; the prefix may pop past them again.
    pub(crate) fn give_back(&self, lent: Vec<(u64, A)>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        for (sequence, acker) in lent {
            if let Ok(at) = inner
                .entries
                .binary_search_by_key(&sequence, |e| e.sequence)
            {
                let entry = &mut inner.entries[at];
                if matches!(entry.slot, Slot::DoneLent) {
                    entry.slot = Slot::Done(acker);
                }
            }
        }
    }

    /// Messages delivered and not yet covered by an ack.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|i| i.entries.len()).unwrap_or(0)
    }

    fn mark(&self, sequence: u64, state: Slot<A>) -> Option<A> {
        let mut inner = self.inner.lock().ok()?;
        let at = inner
            .entries
            .binary_search_by_key(&sequence, |e| e.sequence)
            .ok()?;
        let entry = &mut inner.entries[at];
        let unordered = entry.reordered && !state.is_live();
        if unordered {
            entry.reordered = false;
        }
        entry.slot = state;
        inner.reordered = inner.reordered.saturating_sub(usize::from(unordered));
        // Out of order, a message done behind the head may free the ack point.
        if (at != 0 && inner.reordered == 0) || inner.fenced {
            return None;
        }
        pop_prefix(&mut inner);
        if inner.popped_since_ack >= self.batch && inner.pending.is_some() {
            inner.popped_since_ack = 0;
            return take_pending(&mut inner);
        }
        None
    }
}

fn take_pending<A>(inner: &mut Inner<A>) -> Option<A> {
    let (_, acker) = inner.pending.take()?;
    inner.acks += 1;
    Some(acker)
}

/// Pops the done prefix up to its ack point, keeping the acker there.
///
/// Under the ack-all policy the broker ignores an ack whose delivery number
/// is not above the highest one acked so far (and a nak too). So the ack
/// point is the highest done message whose delivery number is below that of
/// every running or done message left behind it: the acks and naks of those
/// stay valid. Where deliveries arrived in order that is the prefix's end;
/// past a redelivery, the prefix waits (its messages kept alive) until the
/// messages delivered before the redelivery are done too.
fn pop_prefix<A>(inner: &mut Inner<A>) {
    let done = inner
        .entries
        .iter()
        .take_while(|entry| matches!(entry.slot, Slot::Done(_)))
        .count();
    if done == 0 {
        return;
    }
    let point = if inner.reordered == 0 {
        done - 1
    } else {
        match ack_point(&inner.entries, done) {
            Some(point) => point,
            None => return,
        }
    };
    for _ in 0..=point {
        let Some(entry) = inner.entries.pop_front() else {
            break;
        };
        inner.reordered = inner.reordered.saturating_sub(usize::from(entry.reordered));
        inner.last_popped = inner.last_popped.max(entry.sequence);
        if let Slot::Done(acker) = entry.slot {
            inner.pending = Some((entry.sequence, acker));
        }
        inner.popped_since_ack += 1;
    }
}

/// The highest index below `done` whose delivery number is below that of
/// every live entry after it.
fn ack_point<A>(entries: &VecDeque<Entry<A>>, done: usize) -> Option<usize> {
    let after = entries
        .iter()
        .skip(done)
        .filter(|entry| entry.slot.is_live())
        .filter_map(|entry| entry.delivery)
        .min()
        .unwrap_or(u64::MAX);
    for at in (0..done).rev() {
        match entries[at].delivery {
            // `after` stays the lowest for the entries before this one.
            Some(delivery) if delivery >= after => {}
            _ => return Some(at),
        }
    }
    None
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
    fn a_dead_lettered_message_is_settled_by_the_ack_past_it() {
        let window = open_window(10, &[1, 2, 3]);
        assert_eq!(window.done(1, "ack-1"), None, "batch of 10 not reached");
        window.nakked(2, 1);
        assert_eq!(window.flush(), Some("ack-1"));
        let _ = window.delivered(2, Some(4), "d");
        // Dead-lettered: no TERM of its own, it waits for the prefix.
        assert_eq!(window.done(2, "ack-2"), None);
        assert_eq!(window.flush(), None, "3 is running");
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
    fn a_window_bound_with_nothing_unacked_acks_without_asking_the_broker() {
        // The consumer had delivered 7 messages, all acked, when bound.
        let window = AckWindow::new(1, Some(5)).known_up_to(7);
        deliver(&window, 8, &[20, 21]);
        assert!(!window.is_fenced(), "8 follows 7: nothing unknown");
        assert_eq!(window.done(20, "ack-20"), Some("ack-20"));
    }

    #[test]
    fn a_bound_window_fences_when_its_first_delivery_skips_some() {
        // Deliveries 8 and 9 went to another instance after the bind.
        let window = AckWindow::new(1, Some(5)).known_up_to(7);
        deliver(&window, 10, &[22]);
        assert!(window.is_fenced(), "8 and 9 are unknown here");
        assert_eq!(window.done(22, "ack-22"), None);
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
    fn an_ack_sent_during_a_fence_check_makes_it_inconclusive() {
        let window = open_window(10, &[1, 2, 3]);
        assert_eq!(window.done(1, "ack-1"), None, "popped, batch not reached");
        assert_eq!(window.done(2, "ack-2"), None);
        // Delivery 4 was lost in transit; 5 arrives and fences.
        let _ = window.delivered(5, Some(5), "d");
        let listed = window.listed();
        // What popped before the fence is sent while fenced.
        assert_eq!(window.flush(), Some("ack-2"));
        // The broker's count dropped by the two acked: 3, 4 and 5 are left,
        // one more than the window lists now, but the check cannot tell.
        assert!(!window.lift_fence(listed, 2), "the ack raced the check");
        assert!(!window.lift_fence(window.listed(), 3), "4 is unknown here");
    }

    #[test]
    fn a_redelivered_head_waits_for_the_messages_delivered_before_it() {
        let window = open_window(1, &[1, 2, 3]);
        window.nakked(1, 1);
        assert_eq!(window.delivered(1, Some(4), "d"), Arrival::Handle("d"));
        // An ack at 1 carries delivery 4: the broker would then ignore the
        // acks (and naks) of deliveries 2 and 3.
        assert_eq!(window.done(1, "ack-1"), None);
        assert_eq!(window.flush(), None);
        assert_eq!(window.done(3, "ack-3"), None, "2 is still running");
        assert_eq!(window.flush(), None);
        assert_eq!(window.done(2, "ack-2"), Some("ack-3"));
        assert_eq!(window.len(), 0);
    }

    #[test]
    fn past_a_redelivery_the_ack_point_is_below_every_later_delivery() {
        let window = open_window(1, &[1, 2, 3]);
        window.nakked(1, 1);
        let _ = window.delivered(1, Some(4), "d");
        assert_eq!(window.done(2, "ack-2"), None);
        // 1 (delivery 4) and 2 (delivery 2) are done, 3 (delivery 3) runs:
        // an ack at 2 covers 1 too and leaves 3 ackable.
        assert_eq!(window.done(1, "ack-1"), Some("ack-2"));
        assert_eq!(window.len(), 1);
        assert_eq!(window.done(3, "ack-3"), Some("ack-3"));
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
        assert_eq!(
            window.flush(),
            Some("ack-2"),
            "the acker of the first delivery is kept: its number is the lower"
        );
    }

    #[test]
    fn a_lent_acker_holds_the_prefix_until_it_is_given_back() {
        let window = open_window(10, &[1, 2]);
        assert_eq!(window.done(2, "ack-2"), None);
        let lent = window.lend_waiting();
        assert_eq!(window.done(1, "ack-1"), None, "below the batch");
        assert_eq!(window.flush(), Some("ack-1"), "2 is lent");
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
