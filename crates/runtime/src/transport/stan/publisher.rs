//! Publishing: `PubMsg` to `<pub prefix>.<subject>` with the connection's acks
//! inbox as reply, matched with its `PubAck` by guid.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use prost::Message as _;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::proto::{PubAck, PubMsg};
use super::session::unique_id;
use super::StanError;
use crate::{OutgoingMessage, PublishAck, PublishError};

type AckSender = oneshot::Sender<Result<(), StanError>>;

/// The publishes of one registration still waiting for their ack.
#[derive(Debug)]
pub(crate) struct PubAcks {
    pub(crate) inbox: String,
    pending: Mutex<HashMap<String, AckSender>>,
}

impl PubAcks {
    pub(crate) fn new(inbox: String) -> Self {
        Self {
            inbox,
            pending: Mutex::default(),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, AckSender>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn insert(&self, guid: String) -> oneshot::Receiver<Result<(), StanError>> {
        let (tx, rx) = oneshot::channel();
        self.pending().insert(guid, tx);
        rx
    }

    fn remove(&self, guid: &str) -> Option<AckSender> {
        self.pending().remove(guid)
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
            if let Some(waiting) = self.remove(&ack.guid) {
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
    let guid = unique_id(&client.nats);
    let ack = session.acks.insert(guid.clone());
    let pub_msg = PubMsg {
        client_id: client.options.client_id.clone(),
        guid: guid.clone(),
        subject: subject.clone(),
        reply: String::new(),
        data: envelope.unwrap_or(message.payload).to_vec(),
        conn_id: session.conn_id.to_vec(),
        sha256: Vec::new(),
    };
    let sent = client
        .nats
        .publish_with_reply(
            format!("{}.{}", session.pub_prefix, subject),
            session.acks.inbox.clone(),
            pub_msg.encode_to_vec().into(),
        )
        .await;
    if let Err(err) = sent {
        session.acks.remove(&guid);
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
                session.acks.remove(&guid);
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
