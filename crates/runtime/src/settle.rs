//! Settling a message from its outcome: `Ok` acks; a retryable failure naks
//! with the backoff delay while the failure budget lasts; a spent budget, a
//! permanent failure or a payload that does not decode goes to the dead
//! letters, and only once the broker has the dead letter is the original
//! terminated.

use std::time::Duration;

use std::sync::Arc;

use crate::attempt::Failed;
use crate::coalesce::AckWindow;
use crate::dead_letter::dead_letter_message;
use crate::dispatch::SubscriberContext;
use crate::failure::{attempts_reported, classify, Class};
use crate::middleware::metrics::DeadLetterReason;
use crate::request::{ManualAck, Settlement};
use crate::{Acker, BoxError, Request, Transport};

/// Who settles: the runtime through the transport's acker, or a manual-ack
/// handler through its handle (the runtime settles only what it left).
pub(crate) enum Settler<A> {
    Auto(A),
    Manual(ManualAck),
    /// Acks go through the subscription's window of coalesced acks.
    Coalesced {
        acker: A,
        window: Arc<AckWindow<A>>,
        sequence: u64,
    },
}

/// What settling a message needs besides its outcome.
pub(crate) struct Unsettled {
    pub(crate) sequence: u64,
    /// The broker's delivery count.
    pub(crate) delivered: u32,
    pub(crate) first_attempt: u32,
    /// The message, for its dead letter: handed back by the stack with a
    /// failure, or kept aside while it runs when the stack cannot. Boxed, as
    /// the request comes back, so every message's settling stays small.
    pub(crate) message: Option<Box<Request>>,
}

impl Unsettled {
    /// The outcome to settle by; a failure that hands its request back gives
    /// the message back for the dead letter.
    pub(crate) fn take_back(&mut self, handled: Result<(), Failed>) -> Result<(), BoxError> {
        handled.map_err(|Failed { error, request }| {
            if request.is_some() {
                self.message = request;
            }
            error
        })
    }
}

/// What the outcome asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    Ack,
    Nak {
        delay: Duration,
        attempts: u32,
    },
    DeadLetter {
        attempts: u32,
        reason: DeadLetterReason,
    },
}

/// Decides the settlement of an outcome.
pub(crate) fn decide(
    outcome: &Result<(), BoxError>,
    first_attempt: u32,
    budget: Option<u32>,
    backoff: &crate::middleware::retry::Backoff,
) -> Decision {
    let err = match outcome {
        Ok(()) => return Decision::Ack,
        Err(err) => err,
    };
    let attempts = attempts_reported(err).unwrap_or(first_attempt);
    match classify(err) {
        Class::Undecodable => Decision::DeadLetter {
            attempts,
            reason: DeadLetterReason::Decode,
        },
        Class::Permanent => Decision::DeadLetter {
            attempts,
            reason: DeadLetterReason::Permanent,
        },
        Class::Retry(_) if budget.is_some_and(|budget| attempts >= budget) => {
            Decision::DeadLetter {
                attempts,
                reason: DeadLetterReason::BudgetSpent,
            }
        }
        Class::Retry(hint) => Decision::Nak {
            delay: hint.unwrap_or_else(|| backoff.delay(attempts)),
            attempts,
        },
    }
}

impl<A: Acker> Settler<A> {
    /// Tells the broker the handler is still working.
    pub(crate) async fn in_progress(&self) {
        let result = match self {
            Settler::Auto(acker) | Settler::Coalesced { acker, .. } => acker.in_progress().await,
            Settler::Manual(handle) => handle.settle(Settlement::InProgress).await,
        };
        if let Err(err) = result {
            tracing::debug!(error = %err, "progress ack failed");
        }
    }

    /// Sends the final settlement. `delivered` is the broker's delivery count.
    async fn finish(self, how: Settlement, delivered: u32) -> Result<(), crate::AckError> {
        match self {
            Settler::Auto(acker) => match how {
                Settlement::Ack => acker.ack().await,
                Settlement::Nak(delay) => acker.nak(delay).await,
                Settlement::Term => acker.term().await,
                Settlement::InProgress => acker.in_progress().await,
            },
            Settler::Manual(handle) => handle.settle(how).await,
            Settler::Coalesced {
                acker,
                window,
                sequence,
            } => {
                let due = match how {
                    // No TERM under the ack-all policy: the server would
                    // settle every message before it too. The ack that
                    // passes it settles it.
                    Settlement::Ack | Settlement::Term => window.done(sequence, acker),
                    Settlement::Nak(delay) => {
                        acker.nak(delay).await?;
                        window.nakked(sequence, delivered);
                        return Ok(());
                    }
                    Settlement::InProgress => return acker.in_progress().await,
                };
                match due {
                    Some(prefix) => match prefix.ack().await {
                        Ok(()) => Ok(()),
                        Err(err) => {
                            // Sent again at the next flush.
                            window.unsent(prefix);
                            Err(err)
                        }
                    },
                    None => Ok(()),
                }
            }
        }
    }

    /// Settles the message from the handler's outcome.
    pub(crate) async fn settle<T: Transport>(
        self,
        context: &SubscriberContext<T>,
        outcome: Result<(), BoxError>,
        unsettled: Unsettled,
    ) {
        if let Settler::Manual(handle) = &self {
            if handle.is_settled() {
                return;
            }
            if outcome.is_ok() {
                tracing::warn!("manual-ack handler returned Ok without settling; nak'd");
            }
        }
        let mut decision = decide(
            &outcome,
            unsettled.first_attempt,
            context.spec.max_deliver,
            &context.backoff,
        );
        if matches!(self, Settler::Manual(_)) && decision == Decision::Ack {
            decision = Decision::Nak {
                delay: context.backoff.delay(unsettled.first_attempt),
                attempts: unsettled.first_attempt,
            };
        }
        let metrics = &context.metrics;
        context.health.settled(matches!(decision, Decision::Ack));
        // budget: an ack or a dead letter settles the message for good.
        let for_good = !matches!(decision, Decision::Nak { .. });
        let sequence = unsettled.sequence;
        let result = match decision {
            Decision::Ack => {
                metrics.acked.increment(1);
                self.finish(Settlement::Ack, unsettled.delivered).await
            }
            Decision::Nak { delay, attempts } => {
                if let Err(err) = &outcome {
                    match metrics.warnings.allow() {
                        Some(suppressed) => {
                            tracing::warn!(error = %err, attempts, retry_in = ?delay, suppressed, "handler failed; nak'd")
                        }
                        None => {
                            tracing::debug!(error = %err, attempts, retry_in = ?delay, "handler failed; nak'd")
                        }
                    }
                }
                // Boxed: the rare paths must not grow every message's task.
                Box::pin(self.nak(context, &unsettled, attempts, delay)).await
            }
            Decision::DeadLetter { attempts, reason } => {
                let error = outcome.err().map(|e| e.to_string()).unwrap_or_default();
                Box::pin(self.dead_letter(context, unsettled, attempts, reason, &error)).await
            }
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, "settling the message failed; the broker redelivers it after the ack wait");
        } else if for_good {
            // budget: drop the attempt record of a message that had one
            if let Some(forget) = context.ledger.settled(sequence) {
                // Boxed: only a message that failed before has a record,
                // and the store's future must not grow every message's.
                Box::pin(forget).await;
            }
        }
    }

    async fn nak<T: Transport>(
        self,
        context: &SubscriberContext<T>,
        unsettled: &Unsettled,
        attempts: u32,
        delay: Duration,
    ) -> Result<(), crate::AckError> {
        // budget: saved before the nak, so the next delivery (anywhere) continues the count
        context.ledger.nakked(unsettled.sequence, attempts).await;
        context.metrics.nakd.increment(1);
        // A coalescing window cannot ack past a nak'd message: its waits are
        // kept within one ack wait, so a failing message holds the acks
        // behind it for at most its failure budget of such waits.
        let delay = match self {
            Settler::Coalesced { .. } => delay.min(context.spec.ack_wait),
            Settler::Auto(_) | Settler::Manual(_) => delay,
        };
        self.finish(Settlement::Nak(Some(delay)), unsettled.delivered)
            .await
    }

    async fn dead_letter<T: Transport>(
        self,
        context: &SubscriberContext<T>,
        unsettled: Unsettled,
        attempts: u32,
        reason: DeadLetterReason,
        error: &str,
    ) -> Result<(), crate::AckError> {
        let Some(subject) = context.dead_letter.clone() else {
            tracing::error!(
                reason = %reason,
                attempts,
                error,
                "message terminated (dead letters are disabled)"
            );
            context.metrics.terminated.increment(1);
            return self.finish(Settlement::Term, unsettled.delivered).await;
        };
        let Some(request) = unsettled.message else {
            // Only a panic in the runtime's own stack (a handler's panic is
            // caught inside it) loses the request; the broker keeps the message.
            tracing::error!(
                reason = %reason,
                attempts,
                error,
                "a panic in the stack took the message with it: not dead-lettered, nak'd for the broker to redeliver"
            );
            return self
                .finish(Settlement::Nak(None), unsettled.delivered)
                .await;
        };
        let message = dead_letter_message(
            subject.clone(),
            &context.durable_label,
            request.payload().clone(),
            request.metadata(),
            attempts,
            error,
        );
        // The handler is never run again for it: the dead letter is retried
        // here, with progress acks keeping the original from redelivery,
        // until the broker stores it (or shutdown abandons the task).
        let mut retry = 0;
        let mut next_progress = tokio::time::Instant::now() + context.spec.ack_wait / 2;
        loop {
            let stored = match context.transport.publish(message.clone()).await {
                Ok(pending) => pending.await,
                Err(err) => Err(err),
            };
            let publish_error = match stored {
                Ok(_) => break,
                Err(err) => err,
            };
            retry += 1;
            let delay = context.backoff.delay(retry);
            tracing::error!(reason = %reason, error = %publish_error, retry_in = ?delay, dead_letter = %subject, "could not publish the dead letter; trying again (the message stays unsettled, the handler does not run again)");
            context.metrics.dead_letter_retries.increment(1);
            let wake = tokio::time::Instant::now() + delay;
            while next_progress < wake {
                tokio::time::sleep_until(next_progress).await;
                self.in_progress().await;
                next_progress += context.spec.ack_wait / 2;
            }
            tokio::time::sleep_until(wake).await;
        }
        tracing::warn!(
            channel = %context.metrics.channel,
            subject = request.metadata().subject(),
            seq = unsettled.sequence,
            reason = %reason,
            attempts,
            error,
            dead_letter = %subject,
            "message dead-lettered"
        );
        context.metrics.dead_lettered(reason);
        context.metrics.terminated.increment(1);
        self.finish(Settlement::Term, unsettled.delivered).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::retry::Backoff;
    use crate::{Failure, HandlerError};

    fn failed(err: BoxError) -> Result<(), BoxError> {
        Err(Box::new(HandlerError::Failed(err)))
    }

    #[test]
    fn outcomes_map_to_settlements() {
        let backoff = Backoff::default().without_jitter();
        assert_eq!(decide(&Ok(()), 1, Some(3), &backoff), Decision::Ack);
        assert_eq!(
            decide(&failed("down".into()), 2, Some(3), &backoff),
            Decision::Nak {
                delay: Duration::from_millis(200),
                attempts: 2
            }
        );
        assert_eq!(
            decide(&failed("down".into()), 3, Some(3), &backoff),
            Decision::DeadLetter {
                attempts: 3,
                reason: DeadLetterReason::BudgetSpent
            }
        );
        assert_eq!(
            decide(
                &failed(Failure::permanent("no").into()),
                1,
                Some(3),
                &backoff
            ),
            Decision::DeadLetter {
                attempts: 1,
                reason: DeadLetterReason::Permanent
            }
        );
        assert_eq!(
            decide(
                &failed(Failure::retry_after(Duration::from_secs(9), "later").into()),
                1,
                None,
                &backoff
            ),
            Decision::Nak {
                delay: Duration::from_secs(9),
                attempts: 1
            }
        );
        let decode: BoxError = Box::new(HandlerError::Decode(crate::DecodeError::new(
            "json",
            "T",
            "bad".into(),
        )));
        assert!(matches!(
            decide(&Err(decode), 1, None, &backoff),
            Decision::DeadLetter {
                reason: DeadLetterReason::Decode,
                ..
            }
        ));
    }
}
