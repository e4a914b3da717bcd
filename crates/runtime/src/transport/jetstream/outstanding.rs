//! The stream sequences a subscription delivered and nobody settled yet, so
//! a consumer the server lost can be recreated from the lowest of them; and
//! the latest settlements sent, so they can be sent again after a failover.
//!
//! An ack is a plain publish: one sent while the consumer has no leader (a
//! node died and the cluster is electing) is lost, and the message stays
//! pending on the server until its ack wait ends. A consumer at its
//! `max_ack_pending` then delivers nothing new for that long. Sending the
//! latest settlements again once the pull is reopened frees those slots at
//! once; the server ignores the ones it had.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_nats::Subject;

use super::unsettled_set::UnsettledSet;

/// How a delivery was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    Acked,
    Terminated,
}

impl Settled {
    /// The payload that settles a delivery this way.
    pub(crate) fn payload(self) -> &'static [u8] {
        match self {
            Settled::Acked => b"+ACK",
            Settled::Terminated => b"+TERM",
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    sequences: UnsettledSet,
    /// Reply subjects of the latest settlements, oldest first.
    recent: VecDeque<(Subject, Settled)>,
}

/// Delivered and not yet acked or terminated, by stream sequence.
#[derive(Debug, Default)]
pub(crate) struct Outstanding {
    inner: Mutex<Inner>,
    /// How many settlements are kept to send again: the consumer's
    /// `max_ack_pending`, the most that can block it.
    keep: usize,
}

impl Outstanding {
    /// Keeps the latest `keep` settlements.
    pub(crate) fn new(keep: usize) -> Self {
        Self {
            inner: Mutex::default(),
            keep,
        }
    }

    /// A delivery of `sequence` reached the client.
    pub(crate) fn delivered(&self, sequence: u64) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.sequences.insert(sequence);
        }
    }

    /// `sequence` was acked or terminated through `reply`.
    pub(crate) fn settled(&self, sequence: u64, reply: &Subject, how: Settled) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.sequences.remove(sequence);
            self.remember(&mut inner, reply, how);
        }
    }

    /// Everything up to `sequence` was acked (an ack-all through `reply`).
    pub(crate) fn settled_through(&self, sequence: u64, reply: &Subject) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.sequences.remove_through(sequence);
            self.remember(&mut inner, reply, Settled::Acked);
        }
    }

    fn remember(&self, inner: &mut Inner, reply: &Subject, how: Settled) {
        if self.keep == 0 {
            return;
        }
        if inner.recent.len() == self.keep {
            inner.recent.pop_front();
        }
        inner.recent.push_back((reply.clone(), how));
    }

    /// The lowest unsettled sequence, if any.
    pub(crate) fn lowest(&self) -> Option<u64> {
        self.inner.lock().ok()?.sequences.first()
    }

    /// The latest settlements, oldest first, to send again.
    pub(crate) fn recent(&self) -> Vec<(Subject, Settled)> {
        self.inner
            .lock()
            .map(|inner| inner.recent.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(n: u64) -> Subject {
        Subject::from(format!("$JS.ACK.s.c.1.{n}.{n}.0.0"))
    }

    #[test]
    fn the_lowest_unsettled_sequence_survives_later_acks() {
        let outstanding = Outstanding::new(8);
        for seq in [3, 4, 5, 9] {
            outstanding.delivered(seq);
        }
        outstanding.settled(4, &reply(4), Settled::Acked);
        assert_eq!(outstanding.lowest(), Some(3));
        outstanding.settled_through(5, &reply(5));
        assert_eq!(outstanding.lowest(), Some(9));
        outstanding.settled(9, &reply(9), Settled::Terminated);
        assert_eq!(outstanding.lowest(), None);
    }

    #[test]
    fn keeps_the_latest_settlements_up_to_its_limit() {
        let outstanding = Outstanding::new(2);
        for seq in 1..=3 {
            outstanding.delivered(seq);
        }
        outstanding.settled(1, &reply(1), Settled::Acked);
        outstanding.settled(2, &reply(2), Settled::Terminated);
        outstanding.settled(3, &reply(3), Settled::Acked);
        assert_eq!(
            outstanding.recent(),
            vec![(reply(2), Settled::Terminated), (reply(3), Settled::Acked)]
        );
    }
}
