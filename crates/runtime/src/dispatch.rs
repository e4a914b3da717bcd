//! The dispatcher: one loop per subscription that takes a permit from the
//! `max_in_flight` semaphore, takes the next delivery, runs it through the
//! stack on a task of its own, and settles it from the outcome.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};
use tracing::Instrument;

use crate::in_flight::InFlight;
use crate::request::{ManualAck, Settlement};
use crate::subscriber::BoxHandlerService;
use crate::{AckMode, Acker, BoxError, Delivery, HandlerError, Request, SubscriptionSpec};

/// The delay before a failed message is delivered again: 100 ms, doubling
/// with each delivery, at most 10 s.
pub(crate) fn nak_delay(delivery_count: u32) -> Duration {
    let exponent = delivery_count.saturating_sub(1).min(7);
    Duration::from_millis(100 << exponent).min(Duration::from_secs(10))
}

/// Runs one subscription until `stop` is cancelled or the stream ends, then
/// hands back the deliveries the transport buffered. Waiting for the handlers
/// it started is [`RunningApp::shutdown`](crate::RunningApp::shutdown)'s job.
pub(crate) async fn dispatch<S, A>(
    name: String,
    spec: SubscriptionSpec,
    mut service: BoxHandlerService,
    mut deliveries: S,
    stop: CancellationToken,
    in_flight: Arc<InFlight>,
) where
    S: futures::Stream<Item = Delivery<A>> + Unpin,
    A: Acker,
{
    let channel: Arc<str> = Arc::from(spec.channel.as_str());
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
        let Delivery {
            payload,
            metadata,
            acker,
        } = delivery;
        let span = tracing::info_span!(
            "flowgate.message",
            subscriber = %name,
            channel = %channel,
            subject = metadata.subject(),
            seq = metadata.stream_sequence(),
            delivery = metadata.delivery_count(),
        );
        let delivery_count = metadata.delivery_count();
        let request = Request::new(payload, metadata);
        let settler = match spec.ack {
            AckMode::Auto => Settler::Auto(acker),
            AckMode::Manual => Settler::Manual(ManualAck::new(acker)),
        };
        let request = match &settler {
            Settler::Manual(handle) => request.with_manual_ack(handle.clone()),
            Settler::Auto(_) => request,
        };
        let handled = match service.ready().await {
            Ok(ready) => ready.call(request),
            Err(err) => Box::pin(futures::future::ready(Err(err))),
        };
        let running = in_flight.start(permit);
        tokio::spawn(
            async move {
                let outcome = AssertUnwindSafe(handled).catch_unwind().await;
                let outcome = outcome.unwrap_or_else(|panic| {
                    Err(Box::new(HandlerError::Panicked(panic_message(&panic))) as BoxError)
                });
                settler.settle(outcome, delivery_count).await;
                drop(running);
            }
            .instrument(span),
        );
    }
    release_buffered(&mut deliveries).await;
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

enum Settler<A> {
    Auto(A),
    Manual(ManualAck),
}

impl<A: Acker> Settler<A> {
    async fn settle(self, outcome: Result<(), BoxError>, delivery_count: u32) {
        let settlement = settlement_for(&outcome, delivery_count);
        let result = match self {
            Settler::Auto(acker) => match settlement {
                Settlement::Ack => acker.ack().await,
                Settlement::Nak(delay) => acker.nak(delay).await,
                Settlement::Term => acker.term().await,
                Settlement::InProgress => acker.in_progress().await,
            },
            Settler::Manual(handle) if handle.is_settled() => Ok(()),
            Settler::Manual(handle) => match settlement {
                // A manual handler that returned Ok without acking asked for nothing:
                // the message is nak'd so it is not left to the ack wait.
                Settlement::Ack => {
                    tracing::warn!("manual-ack handler returned Ok without settling; nak'd");
                    handle.settle(Settlement::Nak(None)).await
                }
                other => handle.settle(other).await,
            },
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, "settling the message failed; the broker redelivers it after the ack wait");
        }
    }
}

fn settlement_for(outcome: &Result<(), BoxError>, delivery_count: u32) -> Settlement {
    match outcome {
        Ok(()) => Settlement::Ack,
        Err(err) => match err.downcast_ref::<HandlerError>() {
            Some(HandlerError::Decode(decode)) => {
                tracing::error!(error = %decode, "payload does not decode; message terminated");
                Settlement::Term
            }
            Some(HandlerError::Panicked(message)) => {
                tracing::error!(panic = %message, "handler panicked; message nak'd");
                Settlement::Nak(Some(nak_delay(delivery_count)))
            }
            _ => {
                tracing::warn!(error = %err, "handler failed; message nak'd");
                Settlement::Nak(Some(nak_delay(delivery_count)))
            }
        },
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nak_delay_grows_and_is_capped() {
        assert_eq!(nak_delay(1), Duration::from_millis(100));
        assert_eq!(nak_delay(2), Duration::from_millis(200));
        assert_eq!(nak_delay(100), Duration::from_secs(10));
    }

    #[test]
    fn decode_failure_terminates_and_handler_failure_naks() {
        let decode: BoxError = Box::new(HandlerError::Decode(crate::DecodeError::new(
            "json",
            "T",
            "bad".into(),
        )));
        assert!(matches!(settlement_for(&Err(decode), 1), Settlement::Term));
        let failed: BoxError = Box::new(HandlerError::Failed("down".into()));
        assert!(matches!(
            settlement_for(&Err(failed), 3),
            Settlement::Nak(Some(d)) if d == Duration::from_millis(400)
        ));
        let foreign: BoxError = "timed out".into();
        assert!(matches!(
            settlement_for(&Err(foreign), 1),
            Settlement::Nak(_)
        ));
        assert!(matches!(settlement_for(&Ok(()), 1), Settlement::Ack));
    }
}
