//! Settling JetStream deliveries: `+ACK`, `-NAK {delay}`, `+TERM`, `+WPI`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::{AckKind, Acker as NatsAcker};

use super::outstanding::{Outstanding, Settled};
use crate::{AckError, Acker};

/// Settles one JetStream delivery by publishing to its reply subject.
pub struct JetStreamAcker {
    acker: NatsAcker,
    /// Where the settlement goes, kept to send it again after a failover.
    reply: async_nats::Subject,
    /// The subscriber's channel, shared by all its deliveries, for errors.
    /// (Not the message's subject: a copy of that would cost an allocation
    /// per message, for a path that is rarely taken.)
    channel: Arc<str>,
    stream_sequence: u64,
    outstanding: Arc<Outstanding>,
    /// The consumer's ack policy is "all": an ack settles everything before it.
    acks_all: bool,
}

impl std::fmt::Debug for JetStreamAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamAcker")
            .field("channel", &self.channel)
            .field("stream_sequence", &self.stream_sequence)
            .finish()
    }
}

impl JetStreamAcker {
    pub(crate) fn new(
        acker: NatsAcker,
        reply: async_nats::Subject,
        channel: Arc<str>,
        stream_sequence: u64,
        outstanding: Arc<Outstanding>,
        acks_all: bool,
    ) -> Self {
        Self {
            acker,
            reply,
            channel,
            stream_sequence,
            outstanding,
            acks_all,
        }
    }

    async fn send(&self, action: &'static str, kind: AckKind) -> Result<(), AckError> {
        self.acker
            .ack_with(kind)
            .await
            .map_err(|source| AckError::on(action, &self.channel, self.stream_sequence, source))
    }
}

impl Acker for JetStreamAcker {
    async fn ack(&self) -> Result<(), AckError> {
        self.send("ack", AckKind::Ack).await?;
        if self.acks_all {
            self.outstanding
                .settled_through(self.stream_sequence, &self.reply);
        } else {
            self.outstanding
                .settled(self.stream_sequence, &self.reply, Settled::Acked);
        }
        Ok(())
    }

    async fn nak(&self, delay: Option<Duration>) -> Result<(), AckError> {
        self.send("nak", AckKind::Nak(delay)).await
    }

    async fn term(&self) -> Result<(), AckError> {
        self.send("term", AckKind::Term).await?;
        self.outstanding
            .settled(self.stream_sequence, &self.reply, Settled::Terminated);
        Ok(())
    }

    async fn in_progress(&self) -> Result<(), AckError> {
        self.send("progress", AckKind::Progress).await
    }
}
