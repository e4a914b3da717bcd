//! Settling JetStream deliveries: `+ACK`, `-NAK {delay}`, `+TERM`, `+WPI`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::AckKind;
use async_nats::{Client, Subject};

use super::outstanding::{Outstanding, Settled};
use crate::{AckError, Acker};

/// What the ackers of one subscription share: where settlements go, and
/// what they update.
#[derive(Debug)]
pub(crate) struct AckRoute {
    client: Client,
    /// The subscriber's channel, for errors. (Not the message's subject: a
    /// copy of that would cost an allocation per message, for a path that
    /// is rarely taken.)
    channel: Arc<str>,
    outstanding: Arc<Outstanding>,
    /// The consumer's ack policy is "all": an ack settles everything before it.
    acks_all: bool,
}

impl AckRoute {
    pub(crate) fn new(
        client: Client,
        channel: Arc<str>,
        outstanding: Arc<Outstanding>,
        acks_all: bool,
    ) -> Self {
        Self {
            client,
            channel,
            outstanding,
            acks_all,
        }
    }
}

/// Settles one JetStream delivery by publishing to its reply subject. It is
/// small (a shared route, the reply subject and the sequence), as every
/// message's futures carry it.
pub struct JetStreamAcker {
    route: Arc<AckRoute>,
    /// Where the settlement goes, kept to send it again after a failover.
    reply: Subject,
    stream_sequence: u64,
}

impl std::fmt::Debug for JetStreamAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamAcker")
            .field("channel", &self.route.channel)
            .field("stream_sequence", &self.stream_sequence)
            .finish()
    }
}

impl JetStreamAcker {
    pub(crate) fn new(route: Arc<AckRoute>, reply: Subject, stream_sequence: u64) -> Self {
        Self {
            route,
            reply,
            stream_sequence,
        }
    }

    async fn send(&self, action: &'static str, kind: AckKind) -> Result<(), AckError> {
        self.route
            .client
            .publish(self.reply.clone(), kind.into())
            .await
            .map_err(|source| {
                AckError::on(
                    action,
                    &self.route.channel,
                    self.stream_sequence,
                    Box::new(source),
                )
            })
    }
}

impl Acker for JetStreamAcker {
    async fn ack(&self) -> Result<(), AckError> {
        self.send("ack", AckKind::Ack).await?;
        let outstanding = &self.route.outstanding;
        if self.route.acks_all {
            outstanding.settled_through(self.stream_sequence, &self.reply);
        } else {
            outstanding.settled(self.stream_sequence, &self.reply, Settled::Acked);
        }
        Ok(())
    }

    async fn nak(&self, delay: Option<Duration>) -> Result<(), AckError> {
        self.send("nak", AckKind::Nak(delay)).await
    }

    async fn term(&self) -> Result<(), AckError> {
        self.send("term", AckKind::Term).await?;
        self.route
            .outstanding
            .settled(self.stream_sequence, &self.reply, Settled::Terminated);
        Ok(())
    }

    async fn in_progress(&self) -> Result<(), AckError> {
        self.send("progress", AckKind::Progress).await
    }
}
