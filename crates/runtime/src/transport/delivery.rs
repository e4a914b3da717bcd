//! One message handed over by a transport, and how it is settled.

use std::future::Future;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::Headers;

/// What the broker says about a delivery.
///
/// ```
/// use std::time::SystemTime;
/// let meta = flowgate::Metadata::new("orders.placed", 42, 2, SystemTime::UNIX_EPOCH, None);
/// assert!(meta.redelivered());
/// assert_eq!(meta.stream_sequence(), 42);
/// ```
#[derive(Debug, Clone)]
pub struct Metadata {
    subject: async_nats::Subject,
    stream_sequence: u64,
    /// 0 when the transport does not number deliveries.
    consumer_sequence: u64,
    delivered: u32,
    timestamp: SystemTime,
    headers: Option<Headers>,
}

impl Metadata {
    /// Metadata of one delivery.
    pub fn new(
        subject: impl Into<async_nats::Subject>,
        stream_sequence: u64,
        delivered: u32,
        timestamp: SystemTime,
        headers: Option<Headers>,
    ) -> Self {
        Self {
            subject: subject.into(),
            stream_sequence,
            consumer_sequence: 0,
            delivered,
            timestamp,
            headers,
        }
    }

    /// The same metadata with the consumer's number for this delivery (see
    /// [`consumer_sequence`](Self::consumer_sequence)).
    ///
    /// ```
    /// # use std::time::SystemTime;
    /// let meta = flowgate::Metadata::new("orders.placed", 42, 1, SystemTime::UNIX_EPOCH, None);
    /// assert_eq!(meta.consumer_sequence(), None);
    /// assert_eq!(meta.with_consumer_sequence(7).consumer_sequence(), Some(7));
    /// ```
    pub fn with_consumer_sequence(mut self, consumer_sequence: u64) -> Self {
        self.consumer_sequence = consumer_sequence;
        self
    }

    /// The consumer's number for this delivery: it rises by one with every
    /// delivery the consumer makes (redeliveries included), so a gap means
    /// deliveries were lost on the way. `None` where the transport does not
    /// number deliveries.
    pub fn consumer_sequence(&self) -> Option<u64> {
        (self.consumer_sequence > 0).then_some(self.consumer_sequence)
    }

    /// The subject the message was published on.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The message's sequence in its stream (channel).
    pub fn stream_sequence(&self) -> u64 {
        self.stream_sequence
    }

    /// How many times the message has been delivered, this time included.
    pub fn delivery_count(&self) -> u32 {
        self.delivered
    }

    /// Whether the message was delivered before.
    pub fn redelivered(&self) -> bool {
        self.delivered > 1
    }

    /// When the broker stored the message.
    pub fn timestamp(&self) -> SystemTime {
        self.timestamp
    }

    /// The message's headers, if it has any.
    pub fn headers(&self) -> Option<&Headers> {
        self.headers.as_ref()
    }
}

/// An error from the broker while settling a delivery.
#[derive(Debug, thiserror::Error)]
#[error("could not {action} message {stream_sequence} on `{subject}`: {source}")]
pub struct AckError {
    action: &'static str,
    subject: String,
    stream_sequence: u64,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl AckError {
    /// An error of `action` (ack, nak, term, progress) for the delivery in `metadata`.
    pub fn new(
        action: &'static str,
        metadata: &Metadata,
        source: Box<dyn std::error::Error + Send + Sync>,
    ) -> Self {
        Self::on(
            action,
            metadata.subject(),
            metadata.stream_sequence(),
            source,
        )
    }

    /// The same, from the subject and stream sequence alone (a transport's
    /// error path, which keeps no metadata).
    pub(crate) fn on(
        action: &'static str,
        subject: &str,
        stream_sequence: u64,
        source: Box<dyn std::error::Error + Send + Sync>,
    ) -> Self {
        Self {
            action,
            subject: subject.to_owned(),
            stream_sequence,
            source,
        }
    }
}

/// Settles one delivery with the broker. Each transport has its own.
pub trait Acker: Send + Sync + 'static {
    /// The message was handled: never deliver it again.
    fn ack(&self) -> impl Future<Output = Result<(), AckError>> + Send;
    /// The message was not handled: deliver it again after `delay` (at once when `None`).
    fn nak(&self, delay: Option<Duration>) -> impl Future<Output = Result<(), AckError>> + Send;
    /// The message can never be handled: never deliver it again.
    fn term(&self) -> impl Future<Output = Result<(), AckError>> + Send;
    /// Work is ongoing: restart the ack wait.
    fn in_progress(&self) -> impl Future<Output = Result<(), AckError>> + Send;
}

/// One message from a transport: payload, metadata and the means to settle it.
#[derive(Debug)]
pub struct Delivery<A> {
    /// The raw payload.
    pub payload: Bytes,
    /// What the broker says about it.
    pub metadata: Metadata,
    /// Settles it.
    pub acker: A,
}
