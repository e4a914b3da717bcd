//! The dispatcher: one loop per subscription that takes a permit from the
//! `max_in_flight` bound, takes the next delivery, and runs it through the
//! stack on a task of its own, sending progress acks while it runs; the
//! outcome settles it (see [`settle`](crate::settle)).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};
use tracing::Instrument;

use crate::attempts::AttemptLedger;
use crate::in_flight::InFlight;
use crate::middleware::metrics::SubscriberMetrics;
use crate::middleware::retry::Backoff;
use crate::request::ManualAck;
use crate::settle::{Settler, Unsettled};
use crate::subscriber::BoxHandlerService;
use crate::{AckMode, Acker, BoxError, Delivery, Request, SubscriptionSpec, Transport};

/// What every message of one subscriber shares.
pub(crate) struct SubscriberContext<T> {
    pub(crate) name: String,
    pub(crate) spec: SubscriptionSpec,
    /// The durable, the queue, or `ephemeral`: names the subscriber in dead letters.
    pub(crate) durable_label: String,
    pub(crate) dead_letter: Option<String>,
    pub(crate) backoff: Backoff,
    pub(crate) metrics: Arc<SubscriberMetrics>,
    pub(crate) ledger: AttemptLedger,
    pub(crate) transport: T,
}

/// Runs one subscription until `stop` is cancelled or the stream ends, then
/// hands back the deliveries the transport buffered. Waiting for the handlers
/// it started is [`RunningApp::shutdown`](crate::RunningApp::shutdown)'s job.
pub(crate) async fn dispatch<T: Transport>(
    context: Arc<SubscriberContext<T>>,
    mut service: BoxHandlerService,
    mut deliveries: T::Subscription,
    stop: CancellationToken,
    abandon: CancellationToken,
    in_flight: Arc<InFlight>,
) {
    let channel: Arc<str> = Arc::from(context.spec.channel.as_str());
    let progress_every = context.spec.ack_wait / 2;
    loop {
        let permit = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            permit = in_flight.reserve() => match permit {
                Some(permit) => permit,
                None => break,
            },
        };
        let delivery = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            delivery = deliveries.next() => match delivery {
                Some(delivery) => delivery,
                None => break,
            },
        };
        context.metrics.received.increment(1);
        let Delivery {
            payload,
            metadata,
            acker,
        } = delivery;
        let span = tracing::info_span!(
            "flowgate.message",
            subscriber = %context.name,
            channel = %channel,
            subject = metadata.subject(),
            seq = metadata.stream_sequence(),
            delivery = metadata.delivery_count(),
        );
        let first_attempt = context
            .ledger
            .first_attempt(metadata.stream_sequence(), metadata.delivery_count());
        let unsettled = Unsettled {
            payload: payload.clone(),
            metadata: metadata.clone(),
            first_attempt,
        };
        let request = Request::new(payload, metadata).with_attempt(first_attempt);
        let (settler, request) = match context.spec.ack {
            AckMode::Auto => (Settler::Auto(acker), request),
            AckMode::Manual => {
                let handle = ManualAck::new(acker);
                (
                    Settler::Manual(handle.clone()),
                    request.with_manual_ack(handle),
                )
            }
        };
        let handled = match service.ready().await {
            Ok(ready) => ready.call(request),
            Err(err) => Box::pin(futures::future::ready(Err(err))),
        };
        let running = in_flight.start(permit);
        let context = context.clone();
        let abandon = abandon.clone();
        tokio::spawn(
            async move {
                let handled = AssertUnwindSafe(handled).catch_unwind().map(|outcome| {
                    outcome.unwrap_or_else(|panic| Err(crate::handler::panicked(&*panic)))
                });
                let outcome = tokio::select! {
                    biased;
                    outcome = with_progress(handled, &settler, progress_every) => outcome,
                    _ = abandon.cancelled() => {
                        tracing::warn!("handler abandoned at the shutdown deadline; the broker redelivers the message after the ack wait");
                        return;
                    }
                };
                settler.settle(&context, outcome, unsettled).await;
                drop(running);
            }
            .instrument(span),
        );
    }
    release_buffered(&mut deliveries).await;
}

/// Runs `handled`; when it is still running after `every`, tells the broker
/// work is ongoing, and again each `every`, so the message is not redelivered
/// mid-work. A handler that finishes at once costs no timer.
async fn with_progress<A: Acker>(
    handled: impl Future<Output = Result<(), BoxError>>,
    settler: &Settler<A>,
    every: Duration,
) -> Result<(), BoxError> {
    let mut handled = pin!(handled);
    if let Poll::Ready(outcome) = futures::poll!(handled.as_mut()) {
        return outcome;
    }
    if every.is_zero() {
        return handled.await;
    }
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            outcome = handled.as_mut() => return outcome,
            _ = ticks.tick() => settler.in_progress().await,
        }
    }
}

/// Hands back deliveries the transport already buffered but no handler took,
/// so the broker redelivers them at once instead of after the ack wait.
async fn release_buffered<S, A>(deliveries: &mut S)
where
    S: futures::Stream<Item = Delivery<A>> + Unpin,
    A: Acker,
{
    while let Some(Some(delivery)) = deliveries.next().now_or_never() {
        if let Err(err) = delivery.acker.nak(None).await {
            tracing::debug!(error = %err, "could not release a buffered delivery; it is redelivered after the ack wait");
        }
    }
}
