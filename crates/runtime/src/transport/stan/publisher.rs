//! Publishing: `PubMsg` to `<pub prefix>.<subject>` with the connection's acks
//! inbox as reply, matched with its `PubAck` by guid (see `pub_acks`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::client::Client;
use super::wire::PubMsgParts;
use super::StanError;
use crate::{OutgoingMessage, PublishAck, PublishError};

/// `<pub prefix>.<subject>`, the subject a publish goes to.
fn pub_subject(prefix: &str, subject: &str) -> String {
    let mut to = String::with_capacity(prefix.len() + 1 + subject.len());
    to.push_str(prefix);
    to.push('.');
    to.push_str(subject);
    to
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
    crate::validate_channel(&subject)?;
    if message.headers.is_some() && envelope.is_none() {
        tracing::debug!(%subject, "NATS Streaming has no headers: they are not sent");
    }
    if let Some(id) = &message.message_id {
        tracing::debug!(%subject, message_id = %id, "NATS Streaming does not de-duplicate: the message id is not sent");
    }
    let session = client
        .session(client.options.connect_wait)
        .await
        .ok_or_else(|| {
            let why = client.ended().unwrap_or(StanError::NotRegistered);
            broker(&subject, why)
        })?;
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
    .encode();
    drop(data);
    drop(guid);
    let ack = session.acks.insert(number);
    let sent = client
        .nats
        .publish_with_reply(
            async_nats::Subject::from(pub_subject(&session.pub_prefix, &subject)),
            session.acks.inbox.clone(),
            pub_msg,
        )
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
