//! The errors of the runtime.

use crate::{DecodeError, EncodeError, NameError};

/// A boxed error, as tower layers produce.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Starting, running or stopping an app failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A channel, durable or queue name the broker would refuse.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A setting that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Connecting to the broker failed.
    #[error("cannot connect to NATS at {url}: {source}; check the URL, the credentials, and that the server is up")]
    Connect {
        /// The server address.
        url: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// The broker refused or failed a subscription.
    #[error("cannot subscribe to `{channel}`: {source}")]
    Subscribe {
        /// The channel.
        channel: String,
        /// The broker's error.
        #[source]
        source: BoxError,
    },
    /// A durable consumer exists with settings other than the subscriber's.
    #[error("durable `{durable}` on stream `{stream}` exists with {field} = {existing}, but the subscriber asks for {wanted}; delete the consumer (`nats consumer rm {stream} {durable}`) or choose a new durable name")]
    ConsumerMismatch {
        /// The stream.
        stream: String,
        /// The durable consumer.
        durable: String,
        /// The setting that differs.
        field: &'static str,
        /// What the broker has.
        existing: String,
        /// What the subscriber wants.
        wanted: String,
    },
    /// A requested JetStream feature needs a newer nats-server.
    #[error(transparent)]
    ServerTooOld(#[from] crate::transport::jetstream::ServerTooOld),
    /// Talking to the broker failed.
    #[error("broker error: {0}")]
    Broker(#[source] BoxError),
    /// In-flight handlers did not finish within the shutdown deadline.
    #[error("{remaining} handler(s) still running after the {deadline:?} shutdown deadline; their messages will be redelivered")]
    ShutdownTimeout {
        /// Handlers still running.
        remaining: usize,
        /// The deadline that passed.
        deadline: std::time::Duration,
    },
}

/// Publishing failed. The message may not have been stored: publish it again
/// (with a message id, so the broker drops the duplicate if it was).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The event could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The event type declares no channel.
    #[error("`{type_name}` declares no channel: add #[event(channel = \"...\")] to it or use `publish_to`")]
    NoChannel {
        /// The event type.
        type_name: &'static str,
    },
    /// A channel name the broker would refuse.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The broker refused the message or did not answer.
    #[error("publish to `{subject}` failed: {source}")]
    Broker {
        /// The subject.
        subject: String,
        /// The broker's error.
        #[source]
        source: BoxError,
    },
    /// Events of a [`PublishWindow`](crate::PublishWindow) the broker did
    /// not store (their acks failed or timed out): publish them again.
    #[error("{} event(s) not stored by the broker ({}): publish them again, with a message id so a copy that was stored after all is dropped", failures.len(), Unstored::summary(failures))]
    NotStored {
        /// Each event not stored, oldest first.
        failures: Vec<Unstored>,
    },
}

/// One event of a [`PublishWindow`](crate::PublishWindow) the broker did not
/// store.
#[derive(Debug)]
#[non_exhaustive]
pub struct Unstored {
    /// The window's number for it, as its `publish` returned.
    pub number: u64,
    /// Its encoded payload, to publish again.
    pub payload: bytes::Bytes,
    /// Its message id, if it had one.
    pub message_id: Option<String>,
    /// Why it was not stored.
    pub error: Box<PublishError>,
}

impl Unstored {
    /// "#3: <error>", with a count of the rest.
    fn summary(failures: &[Unstored]) -> String {
        match failures.first() {
            Some(first) if failures.len() > 1 => format!(
                "#{}: {}; and {} more",
                first.number,
                first.error,
                failures.len() - 1
            ),
            Some(first) => format!("#{}: {}", first.number, first.error),
            None => "none".to_owned(),
        }
    }
}

/// Why a handler did not succeed. The dispatcher decides the settlement from it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The payload did not decode: permanent, the message is terminated.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The handler returned an error: the message is nak'd and redelivered.
    #[error("handler failed: {0}")]
    Failed(#[source] BoxError),
    /// The handler panicked: the message is nak'd and redelivered.
    #[error("handler panicked: {0}")]
    Panicked(String),
}

impl HandlerError {
    /// Whether a redelivery could succeed.
    ///
    /// ```
    /// let err = flowgate::HandlerError::Failed("database down".into());
    /// assert!(err.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        !matches!(self, HandlerError::Decode(_))
    }
}
