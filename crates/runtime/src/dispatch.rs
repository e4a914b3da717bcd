//! The dispatcher: one loop per subscription that takes a permit from the
//! `max_in_flight` bound, waits for the stack to be ready, takes the next
//! delivery, and runs it through the stack (inline when it is done at once,
//! else on a tracked task of its own, which the subscription's sweeper
//! prompts for progress acks while it runs and stops at the shutdown
//! deadline, see [`watch`](crate::watch)); the outcome settles it (see
//! [`settle`](crate::settle)).

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::attempt::Stack;
use crate::attempts::{AttemptLedger, FirstAttempt};
use crate::coalesce::{AckWindow, Arrival};
use crate::in_flight::{InFlight, Running};
use crate::middleware::metrics::SubscriberMetrics;
use crate::middleware::retry::Backoff;
use crate::parked::Parked;
use crate::request::ManualAck;
use crate::settle::{Settler, Unsettled};
use crate::watch::{Watch, Watchers};
use crate::{
    AckMode, Acker, BoxError, Delivery, DeliveryStream, Metadata, Request, SubscriptionSpec,
    Transport,
};

/// What every message of one subscriber shares.
pub(crate) struct SubscriberContext<T> {
    pub(crate) name: String,
    pub(crate) spec: SubscriptionSpec,
    /// The durable, the queue, or `ephemeral`: names the subscriber in dead letters.
    pub(crate) durable_label: String,
    pub(crate) dead_letter: Option<String>,
    pub(crate) backoff: Backoff,
    pub(crate) metrics: Arc<SubscriberMetrics>,
    pub(crate) ledger: Arc<AttemptLedger>,
    pub(crate) transport: T,
    pub(crate) health: Arc<crate::health::HealthTally>,
}

/// Runs one subscription until `stop` is cancelled or the stream ends, then
/// stops pulling and hands back the deliveries the transport buffered.
/// Waiting for the handlers it started (on `tracker`) is
/// [`RunningApp::shutdown`](crate::RunningApp::shutdown)'s job.
pub(crate) async fn dispatch<T: Transport>(
    context: Arc<SubscriberContext<T>>,
    mut service: Stack,
    mut deliveries: T::Subscription,
    lifecycle: Lifecycle,
    in_flight: Arc<InFlight>,
) {
    let Lifecycle {
        stop,
        abandon,
        finish,
        tracker,
    } = lifecycle;
    let channel: Arc<str> = Arc::from(context.spec.channel.as_str());
    let progress_every = context.spec.ack_wait / 2;
    let (window, upkeep) = match (context.spec.ack, deliveries.ack_pending_probe()) {
        (AckMode::Coalesced, Some(probe)) => {
            let window = AckWindow::<T::Acker>::new(
                (context.spec.max_in_flight / 4).max(1),
                context.spec.max_deliver,
            );
            let window = Arc::new(match deliveries.bound_at() {
                Some(bound) if bound.unacked == 0 => window.known_up_to(bound.last_delivery),
                _ => window,
            });
            // Ends at `finish`, after every handler: then acks once more.
            let upkeep = tokio::spawn(crate::coalesce::keep(
                window.clone(),
                probe,
                progress_every,
                context.spec.ack_wait * 2,
                channel.clone(),
                finish.clone(),
            ));
            (Some(window), Some(upkeep))
        }
        _ => (None, None),
    };
    let watchers = Watchers::new(context.spec.max_in_flight);
    tokio::spawn(crate::watch::keep_watch(
        watchers.clone(),
        progress_every,
        abandon,
    ));
    let mut inline = InlinePolls::default();
    let mut parked = Parked::new(progress_every);
    loop {
        // The fast path costs no cancellation waiter: a free permit, a ready
        // stack and a delivery that is already there are taken at once; only
        // when one of them has to be waited for does the wait also watch
        // `stop`, and park the deliveries that arrive meanwhile.
        if stop.is_cancelled() || parked.exhausted() {
            break;
        }
        let permit = match in_flight.try_reserve() {
            Some(permit) => permit,
            None => match parked
                .wait_for(in_flight.reserve(), &mut deliveries, &stop)
                .await
            {
                Some(permit) => permit,
                None => break,
            },
        };
        // Readiness before the delivery: a layer that waits in `poll_ready`
        // (a concurrency limit, a rate limit) holds no message meanwhile
        // without progress acks.
        let ready = match service.ready().now_or_never() {
            Some(ready) => ready,
            None => match parked
                .wait_for(service.ready(), &mut deliveries, &stop)
                .await
            {
                Some(ready) => ready,
                None => break,
            },
        };
        let delivery = match parked.take() {
            Some(delivery) => delivery,
            None => match deliveries.next().now_or_never() {
                Some(Some(delivery)) => delivery,
                Some(None) => break,
                None => tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    delivery = deliveries.next() => match delivery {
                        Some(delivery) => delivery,
                        None => break,
                    },
                },
            },
        };
        context.metrics.received.increment(1);
        context.health.delivered();
        let Delivery {
            payload,
            metadata,
            acker,
        } = delivery;
        if metadata.delivery_count() > 1 {
            context.metrics.redelivered.increment(1);
        }
        let sequence = metadata.stream_sequence();
        let (settler, manual) = match (context.spec.ack, &window) {
            (AckMode::Coalesced, Some(window)) => {
                match window.delivered(sequence, metadata.consumer_sequence(), acker) {
                    Arrival::Handle(acker) => (
                        Settler::Coalesced {
                            acker,
                            window: window.clone(),
                            sequence,
                        },
                        None,
                    ),
                    Arrival::AlreadyHandled => {
                        tracing::debug!(channel = %channel, seq = sequence, "redelivery of a message already handled and waiting for its coalesced ack; not handled again");
                        continue;
                    }
                }
            }
            (AckMode::Auto | AckMode::Coalesced, _) => (Settler::Auto(acker), None),
            (AckMode::Manual, _) => {
                let handle = ManualAck::new(acker);
                (Settler::Manual(handle.clone()), Some(handle))
            }
        };
        let span = tracing::info_span!(
            "flowgate.message",
            subscriber = %context.name,
            channel = %channel,
            subject = metadata.subject(),
            seq = sequence,
            delivery = metadata.delivery_count(),
        );
        crate::trace_context::continue_in(&span, metadata.headers());
        // budget: where this delivery's attempts start. Only a redelivery
        // with an attempt store waits (for its record), and on a task of its
        // own: a store that is slow or out of reach (a cluster electing its
        // leader) holds up that message, never the deliveries behind it.
        let count = metadata.delivery_count();
        let Some(start) = context.ledger.start(sequence, count) else {
            // The stack made ready goes with the task; the loop keeps a clone
            // and makes that ready for the next delivery.
            let mut ready_service = service.clone();
            std::mem::swap(&mut service, &mut ready_service);
            let running = in_flight.start(permit);
            let task_context = context.clone();
            let work = async move {
                let start = task_context.ledger.start_redelivery(sequence, count).await;
                let (mut unsettled, request, ready) =
                    begin(&ready_service, ready, start, payload, metadata, manual);
                let handled = match ready {
                    Ok(()) => ready_service.call(request),
                    Err(err) => Stack::refuse(err, request),
                };
                let outcome = unsettled.take_back(handled.await);
                (outcome, unsettled)
            };
            let task =
                settle_when_handled(context.clone(), settler, work, watchers.watch(), running);
            tracker.spawn(Box::pin(task.instrument(span)));
            continue;
        };
        let (mut unsettled, request, ready) =
            begin(&service, ready, start, payload, metadata, manual);
        // In the message's span: the spans that the user's layers and the
        // attempts open when called are its children.
        let entered = span.enter();
        let mut handled = match ready {
            Ok(()) => service.call(request),
            Err(err) => Stack::refuse(err, request),
        };
        // Counted as running from here, so `in_flight` sees a handler during
        // its first poll too.
        let running = in_flight.start(permit);
        // Poll once here: a handler that is done at once (no I/O to wait for)
        // is settled without a task of its own, as a hand-written consume
        // loop would do; only one that has to wait gets a task. A handler
        // whose first poll is long (CPU work) would hold up the loop, so the
        // inline poll backs off for it and every message gets its own task.
        let first = match inline.try_now() {
            Some(InlinePoll::Timed) => {
                let started = std::time::Instant::now();
                let first = (&mut handled).now_or_never();
                inline.record(started.elapsed());
                first
            }
            Some(InlinePoll::Untimed) => (&mut handled).now_or_never(),
            None => None,
        };
        drop(entered);
        if let Some(Ok(())) = first {
            settler
                .settle(&context, Ok(()), unsettled)
                .instrument(span)
                .await;
            drop(running);
            continue;
        }
        let first = first.map(|handled| unsettled.take_back(handled));
        let work = async move {
            let outcome = match first {
                Some(outcome) => outcome,
                None => unsettled.take_back(handled.await),
            };
            (outcome, unsettled)
        };
        let task = settle_when_handled(context.clone(), settler, work, watchers.watch(), running);
        // Boxed: the task is a few KiB, and spawning moves it by value
        // through several calls; a box is moved as a pointer.
        tracker.spawn(Box::pin(task.instrument(span)));
    }
    release_buffered(&mut deliveries, &mut parked, window.as_deref()).await;
    // The subscription lives until every handler has settled: a transport
    // that ties acks to an open subscription (NATS Streaming) keeps them.
    finish.cancelled().await;
    watchers.close();
    if let Some(upkeep) = upkeep {
        let _ = upkeep.await;
    }
    drop(deliveries);
}

/// The request of a delivery whose attempts start at `start`, with what
/// settling it needs, and whether it may run (`Err`: its budget was spent,
/// or the stack failed to become ready). The caller runs it through the
/// stack, so the stack's large future is built where it stays.
#[inline(always)]
fn begin(
    service: &Stack,
    ready: Result<(), BoxError>,
    start: FirstAttempt,
    payload: Bytes,
    metadata: Metadata,
    manual: Option<ManualAck>,
) -> (Unsettled, Request, Result<(), BoxError>) {
    let ready = ready.and_then(|()| start.within_budget());
    let first_attempt = start.attempt;
    // The message goes into the request; it comes back with a failure, for
    // a dead letter, unless the user's layers keep it.
    let unsettled = Unsettled {
        sequence: metadata.stream_sequence(),
        delivered: metadata.delivery_count(),
        first_attempt,
        message: (!service.hands_back_requests())
            .then(|| Box::new(Request::new(payload.clone(), metadata.clone()))),
    };
    // budget: in-process attempts are recorded
    let request = Request::delivered(payload, metadata, first_attempt, start.recorder, manual);
    (unsettled, request, ready)
}

/// A handler's task: runs `work` (the handler, and whatever comes before
/// it) with progress acks while it takes long, settles its outcome, and is
/// dropped unsettled at the shutdown deadline.
async fn settle_when_handled<T: Transport>(
    context: Arc<SubscriberContext<T>>,
    settler: Settler<T::Acker>,
    work: impl Future<Output = (Result<(), BoxError>, Unsettled)>,
    watch: Arc<Watch>,
    running: Running,
) {
    let settled = async {
        let (outcome, unsettled) = with_progress(pin!(work), &settler, &watch).await;
        settler.settle(&context, outcome, unsettled).await;
    };
    // In a block of its own: the work (the handler with it) is dropped
    // before its room is given back.
    let abandoned = { unless_abandoned(pin!(settled), &watch).await.is_none() };
    if abandoned {
        tracing::warn!("handler abandoned at the shutdown deadline; the broker redelivers the message after the ack wait");
    }
    drop(running);
}

/// Whether the dispatcher polls a handler once itself before giving it a
/// task: yes while first polls are short; after two long ones in a row (a
/// handler doing CPU work; one alone may be a cold start or a preempted
/// thread), every message gets its own task, and an inline poll is tried
/// again now and then in case the handler changed its ways.
#[derive(Debug, Default)]
struct InlinePolls {
    /// Messages left to spawn before the next inline try.
    spawn_next: u32,
    /// Inline polls since the last switch; every `TIME_EVERY`th is timed.
    polls: u32,
    /// The last timed poll was long: the next one is timed too, and decides.
    long_once: bool,
}

/// How to poll a handler inline.
enum InlinePoll {
    /// Measure the poll (a clock read either side).
    Timed,
    /// Just poll.
    Untimed,
}

impl InlinePolls {
    /// A first poll longer than this goes to a task from now on.
    const LONG_POLL: Duration = Duration::from_micros(200);
    /// Messages spawned before an inline poll is tried again.
    const RETRY_AFTER: u32 = 1024;
    /// One inline poll in this many is timed (the first always is).
    const TIME_EVERY: u32 = 16;

    fn try_now(&mut self) -> Option<InlinePoll> {
        if self.spawn_next > 0 {
            self.spawn_next -= 1;
            return None;
        }
        let timed = self.long_once || self.polls.is_multiple_of(Self::TIME_EVERY);
        self.polls = self.polls.wrapping_add(1);
        Some(if timed {
            InlinePoll::Timed
        } else {
            InlinePoll::Untimed
        })
    }

    fn record(&mut self, first_poll: Duration) {
        let long = first_poll > Self::LONG_POLL;
        if long && self.long_once {
            self.spawn_next = Self::RETRY_AFTER;
            self.polls = 0;
        }
        self.long_once = long && !self.long_once;
    }
}

/// The cancellation signals of one subscription's dispatcher.
pub(crate) struct Lifecycle {
    /// Stop taking messages.
    pub(crate) stop: CancellationToken,
    /// Drop handlers still running (the shutdown deadline passed).
    pub(crate) abandon: CancellationToken,
    /// Every handler has ended: send the last coalesced ack and return.
    pub(crate) finish: CancellationToken,
    /// Every task the subscription spawns, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
}

/// Runs `handled`; each time the sweeper finds it has run a whole progress
/// interval, tells the broker work is ongoing, so the message is not
/// redelivered mid-work. Runs inside [`unless_abandoned`], which registers
/// the task with `watch` on every poll.
async fn with_progress<A: Acker, O>(
    mut handled: Pin<&mut impl Future<Output = O>>,
    settler: &Settler<A>,
    watch: &Watch,
) -> O {
    loop {
        let done = std::future::poll_fn(|cx| {
            if let Poll::Ready(outcome) = handled.as_mut().poll(cx) {
                return Poll::Ready(Some(outcome));
            }
            if watch.take_progress_due() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await;
        match done {
            Some(outcome) => return outcome,
            // Boxed: rare (once per progress interval of a long handler), it
            // must not grow every spawned handler's task.
            None => Box::pin(settler.in_progress()).await,
        }
    }
}

/// Runs `work` unless the shutdown deadline passes first: then drops it
/// (at once if it waits) and returns `None`. Registers the task with
/// `watch` on every poll (a wake uses the registration up) before polling
/// `work`, so a flag the sweeper sets after `work` looked wakes it. At the
/// end the waker is dropped, on the thread that runs the task.
async fn unless_abandoned<F: Future>(mut work: Pin<&mut F>, watch: &Watch) -> Option<F::Output> {
    let outcome = std::future::poll_fn(|cx| {
        watch.register(cx);
        if watch.abandoned() {
            return Poll::Ready(None);
        }
        work.as_mut().poll(cx).map(Some)
    })
    .await;
    watch.ended();
    outcome
}

/// Stops pulling, then hands back the deliveries the transport had already
/// buffered but no handler took, so the broker redelivers them at once (to
/// another instance, or after a restart) instead of after the ack wait.
/// Highest sequence first: nats-server 2.9 mishandles naks of the last
/// delivered messages in ascending order (one is left pending until its ack
/// wait, another delivered twice); in descending order each simply rolls
/// the consumer back.
async fn release_buffered<A: Acker>(
    deliveries: &mut impl DeliveryStream<A>,
    parked: &mut Parked<A>,
    window: Option<&AckWindow<A>>,
) {
    let buffered = deliveries.stop();
    let mut released: Vec<Delivery<A>> = parked.drain().chain(buffered).collect();
    released
        .sort_unstable_by_key(|delivery| std::cmp::Reverse(delivery.metadata.stream_sequence()));
    for delivery in released {
        if let Some(window) = window {
            window.released(
                delivery.metadata.stream_sequence(),
                delivery.metadata.delivery_count(),
            );
        }
        if let Err(err) = delivery.acker.nak(None).await {
            tracing::debug!(error = %err, "could not release a buffered delivery; it is redelivered after the ack wait");
        }
    }
}

#[cfg(test)]
mod inline_poll_tests {
    use super::*;

    const LONG: Duration = Duration::from_millis(1);
    const SHORT: Duration = Duration::from_micros(1);

    fn inline_now(polls: &mut InlinePolls) -> bool {
        polls.try_now().is_some()
    }

    #[test]
    fn one_long_poll_is_timed_again_and_two_in_a_row_spawn() {
        let mut polls = InlinePolls::default();
        assert!(matches!(polls.try_now(), Some(InlinePoll::Timed)));
        polls.record(LONG);
        // A single long poll (a cold start) switches nothing, but the next
        // poll is timed to see whether it was one.
        assert!(matches!(polls.try_now(), Some(InlinePoll::Timed)));
        polls.record(SHORT);
        assert!(matches!(polls.try_now(), Some(InlinePoll::Untimed)));
        for _ in 0..InlinePolls::TIME_EVERY {
            if let Some(InlinePoll::Timed) = polls.try_now() {
                polls.record(LONG);
                break;
            }
        }
        assert!(matches!(polls.try_now(), Some(InlinePoll::Timed)));
        polls.record(LONG);
        let spawned = (0..InlinePolls::RETRY_AFTER)
            .filter(|_| !inline_now(&mut polls))
            .count();
        assert_eq!(spawned, InlinePolls::RETRY_AFTER as usize);
        assert!(matches!(polls.try_now(), Some(InlinePoll::Timed)));
    }
}
