//! The publishes of one registration waiting for their `PubAck`: matched by
//! guid as the acks come, and failed by one sweeper when an ack has not come
//! within the ack wait.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::by_number::ByNumber;
use super::decode::decode_pub_ack;
use super::next_unless::poll_next_unless;
use super::wire::Guids;
use super::StanError;

/// Where the outcome of one publish goes.
type AckSender = oneshot::Sender<Result<(), StanError>>;

/// The publishes of one registration still waiting for their ack. A
/// publish fails with [`StanError::PubAckTimeout`] when its ack has not come
/// within the ack wait after it was sent: one sweeper per registration
/// ([`sweep`](Self::sweep)) fails them, instead of a timer per publish.
#[derive(Debug)]
pub(crate) struct PubAcks {
    /// The inbox the acks come to (a `Subject`, so each publish clones a
    /// reference, not the string).
    pub(crate) inbox: async_nats::Subject,
    pub(crate) guids: Guids,
    /// How long a sent publish waits for its ack.
    wait: Duration,
    waiting: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    /// By the running number of each guid.
    senders: ByNumber<AckSender>,
    /// When each sent publish stops waiting, in the order they were sent,
    /// so in the order of their deadlines (taken under the lock). Entries
    /// of publishes acked meanwhile are dropped from the front as they
    /// reach it, and all at once when they outnumber the waiting ones.
    deadlines: VecDeque<(Instant, u64)>,
    /// The registration ended: nothing waits any more, and a publish that
    /// still comes (it took the session just before) fails at once.
    ended: bool,
}

impl Waiting {
    /// Drops the entries at the front whose publish no longer waits.
    fn drop_settled_front(&mut self) {
        while let Some(&(_, number)) = self.deadlines.front() {
            if self.senders.contains_key(&number) {
                break;
            }
            self.deadlines.pop_front();
        }
    }
}

impl PubAcks {
    /// The acks of publishes that name `inbox` as their reply; their guids
    /// start with `guid_prefix`, unique to this registration. A publish
    /// waits `wait` for its ack.
    pub(crate) fn new(inbox: String, guid_prefix: String, wait: Duration) -> Self {
        Self {
            inbox: inbox.into(),
            guids: Guids::new(guid_prefix),
            wait,
            waiting: Mutex::default(),
        }
    }

    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for the ack of publish `number`, from before it is sent (its
    /// ack may come before the send returns). After the registration ended
    /// the receiver fails at once, as the acks of the others did.
    pub(crate) fn insert(&self, number: u64) -> oneshot::Receiver<Result<(), StanError>> {
        let (tx, rx) = oneshot::channel();
        let mut waiting = self.waiting();
        if !waiting.ended {
            waiting.senders.insert(number, tx);
        }
        rx
    }

    /// Publish `number` was sent: its ack wait starts now.
    pub(crate) fn sent(&self, number: u64) {
        let mut waiting = self.waiting();
        if !waiting.senders.contains_key(&number) {
            return; // already acked
        }
        let deadline = after(Instant::now(), self.wait);
        waiting.deadlines.push_back((deadline, number));
        // Bounded by the waiting publishes even when one at the front holds
        // back the acked ones behind it.
        if waiting.deadlines.len() > 2 * waiting.senders.len() + 64 {
            let Waiting {
                senders, deadlines, ..
            } = &mut *waiting;
            deadlines.retain(|(_, number)| senders.contains_key(number));
        }
    }

    /// Publish `number` no longer waits; its sender, if it still waited.
    pub(crate) fn remove(&self, number: u64) -> Option<AckSender> {
        let mut waiting = self.waiting();
        let sender = waiting.senders.remove(&number);
        waiting.drop_settled_front();
        sender
    }

    /// Takes the publishes whose ack wait ended by `now`; returns them and
    /// the next deadline, if any publish still waits.
    fn expired(&self, now: Instant) -> (Vec<AckSender>, Option<Instant>) {
        let mut expired = Vec::new();
        let mut waiting = self.waiting();
        waiting.drop_settled_front();
        while let Some(&(deadline, number)) = waiting.deadlines.front() {
            if deadline > now {
                return (expired, Some(deadline));
            }
            waiting.deadlines.pop_front();
            expired.extend(waiting.senders.remove(&number));
            waiting.drop_settled_front();
        }
        (expired, None)
    }

    /// Fails each publish whose ack has not come within the ack wait after
    /// it was sent, with [`StanError::PubAckTimeout`], until the
    /// registration ends. It sleeps until the earliest deadline; with none
    /// waiting, for one ack wait: a publish sent meanwhile has a later
    /// deadline than that wake-up.
    pub(crate) async fn sweep(self: Arc<Self>, lost: CancellationToken) {
        let mut next = after(Instant::now(), self.wait);
        loop {
            tokio::select! {
                () = lost.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
            }
            let now = Instant::now();
            let (expired, front) = self.expired(now);
            for sender in expired {
                let _ = sender.send(Err(StanError::PubAckTimeout(self.wait)));
            }
            next = front.unwrap_or_else(|| after(now, self.wait));
        }
    }

    /// Routes acks to their publishes until the registration ends, then fails
    /// every publish still waiting (their receivers see the sender dropped).
    pub(crate) async fn run(
        self: Arc<Self>,
        mut acks: async_nats::Subscriber,
        lost: CancellationToken,
    ) {
        let mut ended = pin!(lost.cancelled());
        loop {
            let next =
                poll_fn(|cx| poll_next_unless(cx, &mut acks, &mut [(&lost, ended.as_mut())])).await;
            let Ok(Some(message)) = next else { break };
            let ack = match decode_pub_ack(&message.payload) {
                Ok(ack) => ack,
                Err(err) => {
                    tracing::warn!(error = %err, "malformed publish ack ignored");
                    continue;
                }
            };
            let waiting = self.guids.number(ack.guid()).and_then(|n| self.remove(n));
            if let Some(waiting) = waiting {
                let result = match ack.error() {
                    None => Ok(()),
                    Some(error) => Err(StanError::PubAckError(error.to_owned())),
                };
                let _ = waiting.send(result);
            }
        }
        *self.waiting() = Waiting {
            ended: true,
            ..Waiting::default()
        };
        let _ = acks.unsubscribe().await;
    }
}

/// `wait` after `now`; for a wait too long to add, a time that never comes
/// (about 30 years, as tokio's own timeouts do).
fn after(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(500);

    fn acks() -> Arc<PubAcks> {
        Arc::new(PubAcks::new(
            "_STAN.acks.x".to_owned(),
            "g".to_owned(),
            WAIT,
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn a_publish_expires_at_its_own_deadline_unless_acked() {
        let acks = acks();
        let start = Instant::now();
        let _first = acks.insert(0);
        acks.sent(0);
        tokio::time::advance(Duration::from_millis(100)).await;
        let _second = acks.insert(1);
        acks.sent(1);
        let _third = acks.insert(2);
        acks.sent(2);
        assert!(acks.remove(0).is_some(), "the first is acked");
        let (expired, next) = acks.expired(start + WAIT);
        assert!(expired.is_empty(), "an acked publish does not expire");
        let second_deadline = start + Duration::from_millis(100) + WAIT;
        assert_eq!(next, Some(second_deadline));
        let (expired, next) = acks.expired(second_deadline);
        assert_eq!((expired.len(), next), (2, None), "both sent at 100 ms");
        assert!(
            acks.remove(1).is_none(),
            "an expired publish no longer waits"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_fails_a_publish_without_ack_after_the_wait() {
        let acks = acks();
        let lost = CancellationToken::new();
        let sweeper = tokio::spawn(acks.clone().sweep(lost.clone()));
        // Sent while the sweeper idles: its wake-up is not later than the deadline.
        tokio::time::advance(WAIT / 2).await;
        let sent_at = Instant::now();
        let ack = acks.insert(0);
        acks.sent(0);
        let outcome = ack.await.expect("the sweeper answers");
        assert_eq!(outcome, Err(StanError::PubAckTimeout(WAIT)));
        assert_eq!(Instant::now() - sent_at, WAIT);
        lost.cancel();
        sweeper
            .await
            .expect("the sweeper ends with the registration");
    }

    #[tokio::test(start_paused = true)]
    async fn acked_entries_behind_one_that_waits_stay_bounded() {
        let acks = acks();
        let _stuck = acks.insert(0);
        acks.sent(0);
        for number in 1..10_000 {
            let _ack = acks.insert(number);
            acks.sent(number);
            acks.remove(number);
            let waiting = acks.waiting();
            assert!(waiting.deadlines.len() <= 2 * (waiting.senders.len() + 1) + 64);
        }
        let (expired, next) = acks.expired(Instant::now() + WAIT);
        assert_eq!((expired.len(), next), (1, None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_publish_after_the_registration_ended_fails_at_once() {
        let acks = acks();
        acks.waiting().ended = true;
        let ack = acks.insert(0);
        acks.sent(0);
        assert!(ack.await.is_err(), "its sender is gone: connection lost");
    }

    #[test]
    fn a_wait_too_long_to_add_never_ends() {
        let now = Instant::now();
        assert!(after(now, Duration::MAX) > now + Duration::from_secs(86_400 * 365));
    }
}
