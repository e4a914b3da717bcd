//! One dead letter as it is stored: where it came from, why it failed, and
//! whether it was replayed.

use std::time::SystemTime;

use bytes::Bytes;

use super::replay::ReplayRecord;
use crate::dead_letter::{
    ATTEMPTS, DURABLE, FAILED_AT, LAST_ERROR, ORIGINAL_SEQUENCE, ORIGINAL_SUBJECT,
};
use crate::Headers;

/// A dead letter read from its stream.
///
/// The fields flowgate writes as `Flowgate-*` headers are parsed; a header
/// that is missing (a message someone else published on the dead-letter
/// subject) is `None`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLetterRecord {
    /// The stream that stores it.
    pub stream: String,
    /// Its sequence there: what `show`, `replay` and `purge` select by.
    pub sequence: u64,
    /// The dead-letter subject it was published on.
    pub subject: String,
    /// When the stream stored it.
    pub stored_at: SystemTime,
    /// The subject the message was first published on.
    pub original_subject: Option<String>,
    /// Its sequence in the original stream.
    pub original_sequence: Option<u64>,
    /// The durable (or queue group) that gave up on it.
    pub durable: Option<String>,
    /// The attempts made.
    pub attempts: Option<u32>,
    /// The last error, as text.
    pub last_error: Option<String>,
    /// When it was dead-lettered, as written (RFC 3339, UTC).
    pub failed_at: Option<String>,
    /// Every header it carries.
    pub headers: Headers,
    /// The original payload.
    pub payload: Bytes,
    /// Its replays, when it was replayed.
    pub replayed: Option<ReplayRecord>,
}

impl DeadLetterRecord {
    pub(crate) fn from_stored(
        stream: &str,
        message: async_nats::jetstream::message::StreamMessage,
    ) -> DeadLetterRecord {
        let headers = message.headers;
        let text = |name: &str| headers.get(name).map(|value| value.as_str().to_owned());
        let stored_at = SystemTime::UNIX_EPOCH
            + std::time::Duration::try_from(message.time - time::OffsetDateTime::UNIX_EPOCH)
                .unwrap_or_default();
        DeadLetterRecord {
            stream: stream.to_owned(),
            sequence: message.sequence,
            subject: message.subject.to_string(),
            stored_at,
            original_subject: text(ORIGINAL_SUBJECT),
            original_sequence: text(ORIGINAL_SEQUENCE).and_then(|s| s.parse().ok()),
            durable: text(DURABLE),
            attempts: text(ATTEMPTS).and_then(|s| s.parse().ok()),
            last_error: text(LAST_ERROR),
            failed_at: text(FAILED_AT),
            headers,
            payload: message.payload,
            replayed: None,
        }
    }

    /// `<stream>/<sequence>`: what a replayed message's
    /// [`REPLAY_OF`](crate::dead_letter::REPLAY_OF) header names.
    pub fn id(&self) -> String {
        format!("{}/{}", self.stream, self.sequence)
    }
}
