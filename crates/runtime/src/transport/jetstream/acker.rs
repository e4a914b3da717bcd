//! Settling JetStream deliveries: `+ACK`, `-NAK {delay}`, `+TERM`, `+WPI`.

use std::time::Duration;

use async_nats::jetstream::message::{AckKind, Acker as NatsAcker};

use crate::{AckError, Acker, Metadata};

/// Settles one JetStream delivery by publishing to its reply subject.
pub struct JetStreamAcker {
    acker: NatsAcker,
    subject: async_nats::Subject,
    stream_sequence: u64,
}

impl std::fmt::Debug for JetStreamAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamAcker")
            .field("subject", &self.subject)
            .field("stream_sequence", &self.stream_sequence)
            .finish()
    }
}

impl JetStreamAcker {
    pub(crate) fn new(
        acker: NatsAcker,
        subject: async_nats::Subject,
        stream_sequence: u64,
    ) -> Self {
        Self {
            acker,
            subject,
            stream_sequence,
        }
    }

    async fn send(&self, action: &'static str, kind: AckKind) -> Result<(), AckError> {
        self.acker.ack_with(kind).await.map_err(|source| {
            let metadata = Metadata::new(
                self.subject.clone(),
                self.stream_sequence,
                0,
                std::time::SystemTime::UNIX_EPOCH,
                None,
            );
            AckError::new(action, &metadata, source)
        })
    }
}

impl Acker for JetStreamAcker {
    async fn ack(&self) -> Result<(), AckError> {
        self.send("ack", AckKind::Ack).await
    }

    async fn nak(&self, delay: Option<Duration>) -> Result<(), AckError> {
        self.send("nak", AckKind::Nak(delay)).await
    }

    async fn term(&self) -> Result<(), AckError> {
        self.send("term", AckKind::Term).await
    }

    async fn in_progress(&self) -> Result<(), AckError> {
        self.send("progress", AckKind::Progress).await
    }
}
