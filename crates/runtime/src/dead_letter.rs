//! Dead letters: where a message goes when its failure budget is spent, its
//! error is permanent, or its payload does not decode.
//!
//! The runtime publishes the original payload to the dead-letter subject with
//! headers that say where it came from and why it failed, waits for the
//! broker's ack, and only then terminates the original: a crash between the
//! two redelivers the original, and the dead letter's message id lets the
//! broker drop the second copy.

use std::time::SystemTime;

use crate::{Headers, Metadata, OutgoingMessage};

/// Header: the subject the message was first published on.
pub const ORIGINAL_SUBJECT: &str = "Flowgate-Original-Subject";
/// Header: its sequence in the original stream.
pub const ORIGINAL_SEQUENCE: &str = "Flowgate-Original-Sequence";
/// Header: the attempts made.
pub const ATTEMPTS: &str = "Flowgate-Attempts";
/// Header: the last error, as text.
pub const LAST_ERROR: &str = "Flowgate-Last-Error";
/// Header: when it was dead-lettered (RFC 3339, UTC).
pub const FAILED_AT: &str = "Flowgate-Failed-At";
/// Header: the durable (or queue) that gave up on it.
pub const DURABLE: &str = "Flowgate-Durable";
/// Header of a replayed message: the dead letter it was replayed from, as
/// `<dead-letter stream>/<sequence>` (`dlq_orders_placed/7`); a dead
/// letter of a replayed message keeps it.
pub const REPLAY_OF: &str = "Flowgate-Replay-Of";

/// Where a subscriber's dead letters go.
///
/// ```
/// use flowgate::DeadLetter;
/// assert_eq!(DeadLetter::default().subject_for("orders.placed").as_deref(), Some("dlq.orders.placed"));
/// assert_eq!(DeadLetter::Subject("orders.failed".into()).subject_for("orders.placed").as_deref(), Some("orders.failed"));
/// assert_eq!(DeadLetter::Disabled.subject_for("orders.placed"), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DeadLetter {
    /// `dlq.<channel>` (the default). For a wildcard channel (`orders.*`),
    /// `dlq.<the message's subject>` (`dlq.orders.placed`).
    #[default]
    PerChannel,
    /// This subject.
    Subject(String),
    /// No dead letters: such messages are terminated, with an error log.
    Disabled,
}

impl DeadLetter {
    /// The dead-letter subject for messages of `channel`.
    pub fn subject_for(&self, channel: &str) -> Option<String> {
        match self {
            DeadLetter::PerChannel => Some(format!("dlq.{channel}")),
            DeadLetter::Subject(subject) => Some(subject.clone()),
            DeadLetter::Disabled => None,
        }
    }
}

/// The dead letter for one message. `subject` is the subscriber's
/// dead-letter subject; a wildcard channel's default one (`dlq.orders.*`)
/// becomes `dlq.<the message's subject>`.
pub(crate) fn dead_letter_message(
    subject: String,
    durable: &str,
    payload: bytes::Bytes,
    metadata: &Metadata,
    attempts: u32,
    last_error: &str,
) -> OutgoingMessage {
    let mut headers = Headers::new();
    headers.insert(ORIGINAL_SUBJECT, metadata.subject());
    headers.insert(
        ORIGINAL_SEQUENCE,
        metadata.stream_sequence().to_string().as_str(),
    );
    headers.insert(ATTEMPTS, attempts.to_string().as_str());
    headers.insert(LAST_ERROR, header_safe(last_error).as_str());
    headers.insert(FAILED_AT, rfc3339(SystemTime::now()).as_str());
    headers.insert(DURABLE, durable);
    crate::trace_context::carry_into_dead_letter(&mut headers, metadata.headers());
    if let Some(replay_of) = metadata.headers().and_then(|h| h.get(REPLAY_OF)) {
        headers.insert(REPLAY_OF, replay_of.as_str());
    }
    let id = format!(
        "flowgate-dlq-{}-{}-{}",
        metadata.subject(),
        durable,
        metadata.stream_sequence()
    );
    let subject = if crate::is_pattern(&subject) {
        format!("dlq.{}", metadata.subject())
    } else {
        subject
    };
    OutgoingMessage::new(subject, payload)
        .with_headers(headers)
        .with_message_id(id)
}

/// Header values are one line of at most a few hundred bytes.
fn header_safe(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match one_line.char_indices().nth(512) {
        Some((cut, _)) => format!("{}...", &one_line[..cut]),
        None => one_line,
    }
}

/// `at` in the form [`FAILED_AT`] is written in (RFC 3339, UTC), for tools
/// that show dead letters beside it.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// let at = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400);
/// assert_eq!(flowgate::dead_letter::rfc3339(at), "1970-01-02T00:00:00Z");
/// ```
pub fn rfc3339(at: SystemTime) -> String {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let time = time::OffsetDateTime::UNIX_EPOCH + since;
    time.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| since.as_secs().to_string())
}

/// Dead-letters the messages the broker gave up on (their deliveries ran out
/// while no handler settled them), until `stop` is cancelled. A publish that
/// fails is tried again with `backoff` until it is stored or `stop` comes.
pub(crate) async fn forward_exhausted<T: crate::Transport>(
    transport: T,
    mut exhausted: crate::ExhaustedStream,
    subject: String,
    durable: String,
    metrics: std::sync::Arc<crate::middleware::metrics::SubscriberMetrics>,
    backoff: crate::middleware::retry::Backoff,
    stop: tokio_util::sync::CancellationToken,
) {
    use crate::middleware::metrics::DeadLetterReason;
    use futures::StreamExt;
    let why = DeadLetterReason::Exhausted.describe();
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return,
            message = exhausted.next() => match message {
                Some(message) => message,
                None => return,
            },
        };
        let attempts = message.metadata.delivery_count();
        let letter = dead_letter_message(
            subject.clone(),
            &durable,
            message.payload,
            &message.metadata,
            attempts,
            why,
        );
        let mut retry = 0;
        loop {
            let stored = match transport.publish(letter.clone()).await {
                Ok(pending) => pending.await,
                Err(err) => Err(err),
            };
            let err = match stored {
                Ok(_) => {
                    metrics.dead_lettered(DeadLetterReason::Exhausted);
                    tracing::warn!(
                        channel = %metrics.channel,
                        subject = message.metadata.subject(),
                        seq = message.metadata.stream_sequence(),
                        reason = %DeadLetterReason::Exhausted,
                        attempts,
                        dead_letter = %subject,
                        "message dead-lettered"
                    );
                    break;
                }
                Err(err) => err,
            };
            retry += 1;
            let delay = backoff.delay(retry);
            metrics.dead_letter_retries.increment(1);
            tracing::error!(
                subject = message.metadata.subject(),
                seq = message.metadata.stream_sequence(),
                error = %err,
                retry_in = ?delay,
                "{why}; publishing its dead letter failed, trying again"
            );
            tokio::select! {
                _ = stop.cancelled() => {
                    tracing::error!(
                        subject = message.metadata.subject(),
                        seq = message.metadata.stream_sequence(),
                        "shutting down before the dead letter was stored: the message stays only in its stream"
                    );
                    return;
                }
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_channel_dead_letters_on_the_message_subject() {
        let meta = Metadata::new("orders.paid", 7, 1, SystemTime::UNIX_EPOCH, None);
        let subject = DeadLetter::PerChannel.subject_for("orders.*").expect("on");
        let message = dead_letter_message(subject, "billing", "{}".into(), &meta, 1, "no");
        assert_eq!(message.subject, "dlq.orders.paid");
    }

    #[test]
    fn a_replayed_message_dead_lettered_again_keeps_the_name_of_its_first_dead_letter() {
        let mut headers = Headers::new();
        headers.insert(REPLAY_OF, "dlq_orders_placed/7");
        let meta = Metadata::new(
            "orders.placed",
            43,
            2,
            SystemTime::UNIX_EPOCH,
            Some(headers),
        );
        let message = dead_letter_message(
            "dlq.orders.placed".into(),
            "billing",
            "{}".into(),
            &meta,
            2,
            "no",
        );
        let headers = message.headers.expect("headers");
        assert_eq!(
            headers.get(REPLAY_OF).map(|v| v.as_str()),
            Some("dlq_orders_placed/7")
        );
    }

    #[test]
    fn dead_letter_carries_where_and_why() {
        let meta = Metadata::new("orders.placed", 42, 3, SystemTime::UNIX_EPOCH, None);
        let message = dead_letter_message(
            "dlq.orders.placed".into(),
            "billing",
            "{}".into(),
            &meta,
            3,
            "card declined\nretry later",
        );
        let headers = message.headers.expect("headers");
        assert_eq!(
            headers.get(ORIGINAL_SUBJECT).map(|v| v.as_str()),
            Some("orders.placed")
        );
        assert_eq!(
            headers.get(ORIGINAL_SEQUENCE).map(|v| v.as_str()),
            Some("42")
        );
        assert_eq!(headers.get(ATTEMPTS).map(|v| v.as_str()), Some("3"));
        assert_eq!(
            headers.get(LAST_ERROR).map(|v| v.as_str()),
            Some("card declined retry later")
        );
        assert!(headers.get(FAILED_AT).is_some());
        assert_eq!(
            message.message_id.as_deref(),
            Some("flowgate-dlq-orders.placed-billing-42")
        );
    }
}
