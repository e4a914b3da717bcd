//! Dead letters on NATS Streaming. The protocol has no headers, so what
//! JetStream sends as `Flowgate-*` headers travels in an envelope: a dead
//! letter's payload on NATS Streaming is a [`StanDeadLetter`] (protobuf),
//! with the original payload inside.

use bytes::Bytes;
use prost::Message as _;

use crate::dead_letter::{
    ATTEMPTS, DURABLE, FAILED_AT, LAST_ERROR, ORIGINAL_SEQUENCE, ORIGINAL_SUBJECT,
};
use crate::OutgoingMessage;

/// The envelope of a dead letter on NATS Streaming, in protobuf. Its schema,
/// for consumers in other languages:
///
/// ```proto
/// message StanDeadLetter {
///   string original_subject = 1;  // the channel it was published on
///   uint64 original_sequence = 2; // its sequence there
///   uint32 attempts = 3;          // attempts made
///   string last_error = 4;        // the last error, as text
///   string failed_at = 5;         // when it was dead-lettered (RFC 3339, UTC)
///   string durable = 6;           // the durable (or queue) that gave up on it
///   string message_id = 7;        // the same for every copy of one dead letter
///   bytes payload = 8;            // the original payload, unchanged
/// }
/// ```
///
/// NATS Streaming does not de-duplicate: a crash between storing the dead
/// letter and acking the original stores it twice, and both copies carry the
/// same `message_id`, so a consumer can drop the second.
///
/// ```
/// use flowgate::transport::stan::StanDeadLetter;
/// use prost::Message;
///
/// let letter = StanDeadLetter { original_subject: "orders.placed".into(), attempts: 5, ..Default::default() };
/// let read = StanDeadLetter::decode(letter.encode_to_vec().as_slice()).expect("decodes");
/// assert_eq!(read.attempts, 5);
/// ```
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct StanDeadLetter {
    /// The channel the message was published on.
    #[prost(string, tag = "1")]
    pub original_subject: String,
    /// Its sequence in that channel.
    #[prost(uint64, tag = "2")]
    pub original_sequence: u64,
    /// The attempts made.
    #[prost(uint32, tag = "3")]
    pub attempts: u32,
    /// The last error, as text.
    #[prost(string, tag = "4")]
    pub last_error: String,
    /// When it was dead-lettered (RFC 3339, UTC).
    #[prost(string, tag = "5")]
    pub failed_at: String,
    /// The durable (or queue) that gave up on it.
    #[prost(string, tag = "6")]
    pub durable: String,
    /// The same for every copy of one dead letter (JetStream's `Nats-Msg-Id`).
    #[prost(string, tag = "7")]
    pub message_id: String,
    /// The original payload.
    #[prost(bytes = "vec", tag = "8")]
    pub payload: Vec<u8>,
}

/// The envelope for `message` when it is a dead letter (its headers say where
/// it came from); `None` for any other message.
pub(crate) fn envelope(message: &OutgoingMessage) -> Option<Bytes> {
    let headers = message.headers.as_ref()?;
    let text = |name: &str| {
        headers
            .get(name)
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default()
    };
    let original_subject = headers.get(ORIGINAL_SUBJECT)?.as_str().to_owned();
    let letter = StanDeadLetter {
        original_subject,
        original_sequence: text(ORIGINAL_SEQUENCE).parse().unwrap_or_default(),
        attempts: text(ATTEMPTS).parse().unwrap_or_default(),
        last_error: text(LAST_ERROR),
        failed_at: text(FAILED_AT),
        durable: text(DURABLE),
        message_id: message.message_id.clone().unwrap_or_default(),
        payload: message.payload.to_vec(),
    };
    Some(letter.encode_to_vec().into())
}
