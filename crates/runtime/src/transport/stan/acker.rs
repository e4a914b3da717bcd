//! Settling NATS Streaming deliveries. The protocol has one settlement, the
//! `Ack` to the subscription's ack inbox; everything else is mapped onto it
//! or onto the server's ack-wait redelivery.
//!
//! | flowgate | NATS Streaming |
//! | --- | --- |
//! | `ack` | `Ack{subject, sequence}` to the ack inbox |
//! | `nak(delay)` | nothing: the server redelivers after the subscription's ack wait (a shorter delay cannot be honoured) |
//! | `term` | `Ack` (so it is never redelivered), with a warning |
//! | `in_progress` | nothing: the protocol cannot extend the ack wait |

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::held::Hold;
use super::wire::{encode_ack, Chunks};
use crate::{AckError, Acker, Metadata};

/// Where the acks of one subscription go, shared by its ackers (one
/// reference count per delivery instead of a client clone).
#[derive(Debug)]
pub(crate) struct AckTo {
    nats: async_nats::Client,
    ack_inbox: async_nats::Subject,
    /// Memory for its acks.
    chunks: Chunks,
}

impl AckTo {
    pub(crate) fn new(nats: async_nats::Client, ack_inbox: async_nats::Subject) -> Self {
        Self {
            nats,
            ack_inbox,
            chunks: Chunks::default(),
        }
    }

    /// Sends the ack of the delivery of `sequence` on `subject`.
    pub(crate) async fn ack(
        &self,
        subject: &str,
        sequence: u64,
    ) -> Result<(), async_nats::PublishError> {
        self.nats
            .publish(
                self.ack_inbox.clone(),
                encode_ack(&self.chunks, subject, sequence),
            )
            .await
    }
}

/// Settles one NATS Streaming delivery. While it lives, redeliveries of its
/// message are held back (see the transport's notes on `max_deliver`).
pub struct StanAcker {
    to: Arc<AckTo>,
    subject: async_nats::Subject,
    sequence: u64,
    hold: Hold,
}

impl std::fmt::Debug for StanAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StanAcker")
            .field("subject", &self.subject)
            .field("sequence", &self.sequence)
            .finish()
    }
}

impl StanAcker {
    pub(crate) fn new(
        to: Arc<AckTo>,
        subject: async_nats::Subject,
        sequence: u64,
        hold: Hold,
    ) -> Self {
        Self {
            to,
            subject,
            sequence,
            hold,
        }
    }

    async fn send_ack(&self, action: &'static str) -> Result<(), AckError> {
        self.to
            .ack(&self.subject, self.sequence)
            .await
            .map(|()| self.hold.acked())
            .map_err(|source| {
                let metadata = Metadata::new(
                    self.subject.clone(),
                    self.sequence,
                    0,
                    SystemTime::UNIX_EPOCH,
                    None,
                );
                AckError::new(action, &metadata, Box::new(source))
            })
    }
}

impl Acker for StanAcker {
    async fn ack(&self) -> Result<(), AckError> {
        self.send_ack("ack").await
    }

    /// NATS Streaming has no nak: the message is left unacked and the server
    /// redelivers it once the subscription's ack wait has passed, whatever
    /// `delay` asks for.
    async fn nak(&self, delay: Option<Duration>) -> Result<(), AckError> {
        self.hold.release();
        tracing::debug!(subject = %self.subject, sequence = self.sequence, ?delay, "NATS Streaming has no nak: redelivered after the ack wait");
        Ok(())
    }

    /// Acks, so the message is never delivered again.
    async fn term(&self) -> Result<(), AckError> {
        tracing::warn!(subject = %self.subject, sequence = self.sequence, "terminating a NATS Streaming message: acked so it is never redelivered");
        self.send_ack("term").await
    }

    /// Does nothing: the protocol cannot restart the ack wait.
    async fn in_progress(&self) -> Result<(), AckError> {
        Ok(())
    }
}
