//! Publishing: `PubMsg` to `<pub prefix>.<subject>` with the connection's acks
//! inbox as reply, matched with its `PubAck` by guid (see `pub_acks`).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::client::Client;
use super::wire::PubMsgParts;
use super::StanError;
use crate::{NameError, OutgoingMessage, PublishAck, PublishError};

/// `<pub prefix>.<subject>` for one registration, kept for the channel
/// published to last: publishing to it again clones a reference instead of
/// checking the channel and building the string.
#[derive(Debug)]
pub(crate) struct PubSubjects {
    prefix: String,
    last: Mutex<Option<async_nats::Subject>>,
}

impl PubSubjects {
    pub(crate) fn new(prefix: String) -> Self {
        Self {
            prefix,
            last: Mutex::default(),
        }
    }

    /// The subject a publish to `channel` goes to; an error when `channel`
    /// is not a valid channel name.
    pub(crate) fn to(&self, channel: &str) -> Result<async_nats::Subject, NameError> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(subject) = &*last {
            if subject.get(self.prefix.len() + 1..) == Some(channel) {
                return Ok(subject.clone());
            }
        }
        crate::validate_channel(channel)?;
        let mut to = String::with_capacity(self.prefix.len() + 1 + channel.len());
        to.push_str(&self.prefix);
        to.push('.');
        to.push_str(channel);
        let subject = async_nats::Subject::from(to);
        *last = Some(subject.clone());
        Ok(subject)
    }
}

/// Resolves to the server's ack of one publish: `Ok` once the server stored
/// it, or the publish error (`PubAckTimeout` when no ack came within the ack
/// wait after the send, `ConnectionLost` when the registration ended first).
/// Holds one of the `max_pub_acks_in_flight` slots until it resolves or is
/// dropped.
#[derive(Debug)]
pub struct StanPendingAck {
    ack: oneshot::Receiver<Result<(), StanError>>,
    /// The channel; taken when resolved.
    subject: String,
    /// Released when resolved.
    slot: Option<OwnedSemaphorePermit>,
}

impl Future for StanPendingAck {
    type Output = Result<PublishAck, PublishError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The registration's sweeper ends the wait (`PubAckTimeout`); a
        // dropped sender means the registration ended first.
        let outcome =
            ready!(Pin::new(&mut self.ack).poll(cx)).unwrap_or(Err(StanError::ConnectionLost));
        self.slot = None;
        let subject = std::mem::take(&mut self.subject);
        Poll::Ready(match outcome {
            // NATS Streaming's ack carries no sequence and knows no duplicates.
            Ok(()) => Ok(PublishAck {
                stream: subject,
                sequence: 0,
                duplicate: false,
            }),
            Err(err) => Err(PublishError::Broker {
                subject,
                source: Box::new(err),
            }),
        })
    }
}

/// Sends `message` and returns the future of its ack. Waits for a free slot
/// when `max_pub_acks_in_flight` publishes are already waiting.
pub(crate) async fn publish(
    client: &Arc<Client>,
    message: OutgoingMessage,
) -> Result<StanPendingAck, PublishError> {
    let envelope = super::dead_letter::envelope(&message);
    let subject = message.subject;
    let broker = |subject: &str, err: StanError| PublishError::Broker {
        subject: subject.to_owned(),
        source: Box::new(err),
    };
    if message.headers.is_some() && envelope.is_none() {
        tracing::debug!(%subject, "NATS Streaming has no headers: they are not sent");
    }
    if let Some(id) = &message.message_id {
        tracing::debug!(%subject, message_id = %id, "NATS Streaming does not de-duplicate: the message id is not sent");
    }
    // Registered: the channel is checked with its subject (once, while it
    // is the channel published to last). Not registered: checked before
    // waiting for a registration, so a bad channel fails at once.
    let session = match client.session(Duration::ZERO).await {
        Some(session) => session,
        None => {
            crate::validate_channel(&subject)?;
            client
                .session(client.options.connect_wait)
                .await
                .ok_or_else(|| {
                    let why = client.ended().unwrap_or(StanError::NotRegistered);
                    broker(&subject, why)
                })?
        }
    };
    let to = session.pub_subjects.to(&subject)?;
    let permit = client
        .pub_ack_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| broker(&subject, StanError::NotRegistered))?;
    let (number, guid) = session.acks.guids.next();
    let data = envelope.unwrap_or(message.payload);
    let pub_msg = PubMsgParts {
        client_id: &client.options.client_id,
        guid: &guid,
        subject: &subject,
        data: &data,
        conn_id: &session.conn_id,
    }
    .encode(&session.pub_chunks);
    drop(data);
    let ack = session.acks.insert(number);
    let sent = client
        .nats
        .publish_with_reply(to, session.acks.inbox.clone(), pub_msg)
        .await;
    if let Err(err) = sent {
        session.acks.remove(number);
        return Err(PublishError::Broker {
            subject,
            source: Box::new(err),
        });
    }
    session.acks.sent(number);
    Ok(StanPendingAck {
        ack,
        subject,
        slot: Some(permit),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_subject_is_built_once_per_channel_in_a_row() {
        let subjects = PubSubjects::new("_STAN.pub.x".to_owned());
        let to = |channel| subjects.to(channel).expect("a valid channel");
        let first = to("orders.placed");
        assert_eq!(first.as_str(), "_STAN.pub.x.orders.placed");
        let again = to("orders.placed");
        assert_eq!(again.as_ptr(), first.as_ptr(), "the same string, shared");
        assert_eq!(to("orders").as_str(), "_STAN.pub.x.orders");
        assert_eq!(to("orders.placed").as_str(), "_STAN.pub.x.orders.placed");
    }

    #[test]
    fn a_channel_is_checked_whenever_it_is_not_the_last_one() {
        let subjects = PubSubjects::new("_STAN.pub.x".to_owned());
        assert!(subjects.to("orders.placed").is_ok());
        for refused in ["orders..placed", "orders.*", "orders.placed ", ""] {
            assert!(subjects.to(refused).is_err(), "`{refused}` refused");
        }
        assert!(subjects.to("orders.placed").is_ok(), "still valid");
    }
}
