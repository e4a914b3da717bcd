//! Publishing: `PubMsg` to `<pub prefix>.<subject>` with the connection's acks
//! inbox as reply, matched with its `PubAck` by guid.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use prost::Message as _;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::by_number::ByNumber;
use super::client::Client;
use super::proto::PubAck;
use super::wire::{Guids, PubMsgParts};
use super::StanError;
use crate::{OutgoingMessage, PublishAck, PublishError};

type AckSender = oneshot::Sender<Result<(), StanError>>;

/// The publishes of one registration still waiting for their ack.
#[derive(Debug)]
pub(crate) struct PubAcks {
    /// The inbox the acks come to (a `Subject`, so each publish clones a
    /// reference, not the string).
    inbox: async_nats::Subject,
    guids: Guids,
    /// By the running number of each guid.
    pending: Mutex<ByNumber<AckSender>>,
}

impl PubAcks {
    /// The acks of publishes that name `inbox` as their reply; their guids
    /// start with `guid_prefix`, unique to this registration.
    pub(crate) fn new(inbox: String, guid_prefix: String) -> Self {
        Self {
            inbox: inbox.into(),
            guids: Guids::new(guid_prefix),
            pending: Mutex::default(),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, ByNumber<AckSender>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn insert(&self, number: u64) -> oneshot::Receiver<Result<(), StanError>> {
        let (tx, rx) = oneshot::channel();
        self.pending().insert(number, tx);
        rx
    }

    fn remove(&self, number: u64) -> Option<AckSender> {
        self.pending().remove(&number)
    }

    /// Routes acks to their publishes until the registration ends, then fails
    /// every publish still waiting (their receivers see the sender dropped).
    pub(crate) async fn run(
        self: Arc<Self>,
        mut acks: async_nats::Subscriber,
        lost: CancellationToken,
    ) {
        loop {
            let message = tokio::select! {
                _ = lost.cancelled() => break,
                message = acks.next() => message,
            };
            let Some(message) = message else { break };
            let ack = match PubAck::decode(message.payload.as_ref()) {
                Ok(ack) => ack,
                Err(err) => {
                    tracing::warn!(error = %err, "malformed publish ack ignored");
                    continue;
                }
            };
            let waiting = self.guids.number(&ack.guid).and_then(|n| self.remove(n));
            if let Some(waiting) = waiting {
                let result = if ack.error.is_empty() {
                    Ok(())
                } else {
                    Err(StanError::PubAckError(ack.error))
                };
                let _ = waiting.send(result);
            }
        }
        self.pending().clear();
        let _ = acks.unsubscribe().await;
    }
}

/// `<pub prefix>.<subject>`, the subject a publish goes to.
fn pub_subject(prefix: &str, subject: &str) -> String {
    let mut to = String::with_capacity(prefix.len() + 1 + subject.len());
    to.push_str(prefix);
    to.push('.');
    to.push_str(subject);
    to
}

/// Resolves to the server's ack of one publish.
pub type StanPendingAck = futures::future::BoxFuture<'static, Result<PublishAck, PublishError>>;

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
    let wait = client.options.pub_ack_wait;
    Ok(Box::pin(async move {
        let _permit = permit;
        let outcome = match tokio::time::timeout(wait, ack).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(StanError::ConnectionLost),
            Err(_) => {
                session.acks.remove(number);
                Err(StanError::PubAckTimeout(wait))
            }
        };
        match outcome {
            // NATS Streaming's ack carries no sequence and knows no duplicates.
            Ok(()) => Ok(PublishAck {
                stream: subject,
                sequence: 0,
                duplicate: false,
            }),
            Err(err) => Err(broker(&subject, err)),
        }
    }))
}
