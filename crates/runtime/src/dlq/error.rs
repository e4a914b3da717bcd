//! What can go wrong inspecting, replaying or purging dead letters.

use crate::BoxError;

/// Why a dead-letter operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// No stream stores the dead-letter subject: nothing was dead-lettered
    /// there yet, or the name is wrong.
    #[error("no stream stores `{subject}`: nothing has been dead-lettered there yet, or the channel is not the one the subscriber reads (the dead letters of channel `orders.placed` are on `dlq.orders.placed`; a subscriber's own dead-letter subject is named with --subject)")]
    NoStream {
        /// The dead-letter subject.
        subject: String,
    },
    /// The dead letters of a wildcard channel are in more than one stream.
    #[error("the dead letters on `{subject}` are in several streams ({streams}): name one subject, e.g. `{example}`")]
    SeveralStreams {
        /// The dead-letter subject pattern.
        subject: String,
        /// The streams that hold part of it.
        streams: String,
        /// One subject of one of them.
        example: String,
    },
    /// No dead letter has this sequence on the subject.
    #[error("stream `{stream}` holds no dead letter on `{subject}` at sequence {sequence}: `flowgate dlq list` shows the sequences there are")]
    NotFound {
        /// The dead-letter stream.
        stream: String,
        /// The dead-letter subject.
        subject: String,
        /// The sequence asked for.
        sequence: u64,
    },
    /// Replay or purge was asked for without saying which dead letters.
    #[error("no dead letters chosen: name sequences, a range, an error text or a durable, or choose all of them")]
    NothingSelected,
    /// The server refused or did not answer.
    #[error("{operation} failed: {source}")]
    Broker {
        /// What was being done, e.g. `reading stream dlq_orders_placed`.
        operation: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
}

impl DeadLetterError {
    pub(crate) fn broker(
        operation: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> DeadLetterError {
        DeadLetterError::Broker {
            operation: operation.into(),
            source: source.into(),
        }
    }
}
