//! The subscription state machine: waits for a registered client, sends the
//! subscription request, yields the messages, subscribes again after each new
//! registration (durables resume where they were, an ephemeral subscription
//! right after the last message it saw), and closes or unsubscribes when it ends.

use std::future::poll_fn;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::Stream;
use prost::Message as _;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::acker::AckTo;
use super::client::Client;
use super::decode::{decode_msg, Delivered};
use super::held::{Arrival, Held, Hold};
use super::next_unless::poll_next_unless;
use super::proto::{SubscriptionResponse, UnsubscribeRequest};
use super::request::subscription_request;
use super::session::Session;
use super::{StanAcker, StanError, SubscriptionEnd};
use crate::{Delivery, Error, Metadata, SubscriptionSpec};

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The deliveries of one subscriber. It re-subscribes on its own after the
/// client registers again. Dropping it closes the subscription on the server
/// (or unsubscribes, see [`SubscriptionEnd`]); [`close`](Self::close) and
/// [`unsubscribe`](Self::unsubscribe) do so and wait for the server's answer.
pub struct StanSubscription {
    deliveries: mpsc::Receiver<Delivery<StanAcker>>,
    end: CancellationToken,
    finished: CancellationToken,
    unsubscribe: Arc<AtomicBool>,
}

impl std::fmt::Debug for StanSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StanSubscription").finish_non_exhaustive()
    }
}

impl StanSubscription {
    pub(crate) async fn open(client: Arc<Client>, spec: SubscriptionSpec) -> Result<Self, Error> {
        let (tx, deliveries) = mpsc::channel(spec.max_in_flight.clamp(1, 65_536));
        let end = CancellationToken::new();
        let finished = CancellationToken::new();
        let unsubscribe = Arc::new(AtomicBool::new(
            client.options.subscription_end == SubscriptionEnd::Unsubscribe,
        ));
        let (first_tx, first_rx) = oneshot::channel();
        client.track((end.clone(), finished.clone()));
        let driver = Driver {
            client,
            spec: spec.clone(),
            end: end.clone(),
            unsubscribe: unsubscribe.clone(),
            deliveries: tx,
            last_sequence: None,
            held: Arc::default(),
        };
        let guard = finished.clone().drop_guard();
        tokio::spawn(async move {
            let _guard = guard;
            driver.run(first_tx).await;
        });
        match first_rx.await {
            Ok(Ok(())) => Ok(Self {
                deliveries,
                end,
                finished,
                unsubscribe,
            }),
            Ok(Err(err)) => Err(Error::Subscribe {
                channel: spec.channel,
                source: Box::new(err),
            }),
            Err(_) => Err(Error::Subscribe {
                channel: spec.channel,
                source: Box::new(StanError::NotRegistered),
            }),
        }
    }

    /// Closes the subscription on the server (a durable keeps its position)
    /// and waits for it to be done.
    pub async fn close(self) {
        self.unsubscribe.store(false, Ordering::SeqCst);
        self.end_and_wait().await;
    }

    /// Unsubscribes (a durable is deleted on the server) and waits for it.
    pub async fn unsubscribe(self) {
        self.unsubscribe.store(true, Ordering::SeqCst);
        self.end_and_wait().await;
    }

    async fn end_and_wait(&self) {
        self.end.cancel();
        self.finished.cancelled().await;
    }
}

impl Drop for StanSubscription {
    fn drop(&mut self) {
        self.end.cancel();
    }
}

impl crate::DeliveryStream<StanAcker> for StanSubscription {
    /// Takes what waits in the client's buffer. NATS Streaming cannot pause a
    /// subscription: it stays open (so acks of running handlers still count)
    /// until dropped, and what the server pushes meanwhile is redelivered
    /// after the ack wait.
    fn stop(&mut self) -> Vec<Delivery<StanAcker>> {
        let mut buffered = Vec::new();
        while let Ok(delivery) = self.deliveries.try_recv() {
            buffered.push(delivery);
        }
        buffered
    }
}

impl Stream for StanSubscription {
    type Item = Delivery<StanAcker>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.deliveries.poll_recv(cx)
    }
}

struct Driver {
    client: Arc<Client>,
    spec: SubscriptionSpec,
    end: CancellationToken,
    unsubscribe: Arc<AtomicBool>,
    deliveries: mpsc::Sender<Delivery<StanAcker>>,
    last_sequence: Option<u64>,
    /// What this subscription holds, over every subscribe-again.
    held: Arc<Held>,
}

enum Next {
    Resubscribe,
    End,
}

impl Driver {
    async fn run(mut self, first: oneshot::Sender<Result<(), StanError>>) {
        let mut first = Some(first);
        let mut backoff = BACKOFF_MIN;
        loop {
            let session = tokio::select! {
                _ = self.end.cancelled() => None,
                session = self.client.next_session() => session,
            };
            let Some(session) = session else {
                let why = self.client.ended();
                match first.take() {
                    Some(first) => {
                        let _ = first.send(Err(why.unwrap_or(StanError::NotRegistered)));
                    }
                    None => {
                        if let Some(why) = why {
                            tracing::error!(channel = %self.spec.channel, error = %why, "subscription ended");
                        }
                    }
                }
                return;
            };
            let subscribed = self.subscribe(&session).await;
            let (messages, ack_inbox) = match subscribed {
                Ok(subscribed) => subscribed,
                Err(err) => {
                    if let Some(first) = first.take() {
                        let _ = first.send(Err(err));
                        return;
                    }
                    tracing::warn!(channel = %self.spec.channel, error = %err, retry_in = ?backoff, "cannot subscribe again");
                    tokio::select! {
                        _ = self.end.cancelled() => return,
                        _ = session.lost.cancelled() => {}
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            backoff = BACKOFF_MIN;
            match first.take() {
                Some(first) => {
                    let _ = first.send(Ok(()));
                }
                None => tracing::info!(channel = %self.spec.channel, "subscribed again"),
            }
            match self.deliver(&session, messages, ack_inbox.clone()).await {
                Next::Resubscribe => continue,
                Next::End => {
                    self.end_on_server(&session, &ack_inbox).await;
                    return;
                }
            }
        }
    }

    /// Sends the subscription request on a fresh inbox; returns its messages
    /// and the ack inbox the server answered with.
    async fn subscribe(
        &self,
        session: &Session,
    ) -> Result<(async_nats::Subscriber, Arc<str>), StanError> {
        let failed = |reason: String| StanError::Request {
            what: "the subscription request",
            reason,
        };
        let nats = &self.client.nats;
        let inbox = nats.new_inbox();
        let messages = nats
            .subscribe(inbox.clone())
            .await
            .map_err(|e| failed(e.to_string()))?;
        let request = subscription_request(
            &self.spec,
            &self.client.options.client_id,
            &inbox,
            self.resume_at(),
            SystemTime::now(),
        );
        let reply = tokio::time::timeout(
            self.client.options.connect_wait,
            nats.request(session.sub_requests.clone(), request.encode_to_vec().into()),
        )
        .await
        .map_err(|_| failed("no answer".to_owned()))?
        .map_err(|e| failed(e.to_string()))?;
        let response = SubscriptionResponse::decode(reply.payload.as_ref())
            .map_err(|e| failed(e.to_string()))?;
        if !response.error.is_empty() {
            return Err(StanError::SubscribeRefused(response.error));
        }
        Ok((messages, Arc::from(response.ack_inbox)))
    }

    /// Where an ephemeral subscription made again starts: right after the
    /// last message it saw. A durable resumes on the server's record.
    fn resume_at(&self) -> Option<u64> {
        if self.spec.durable.is_some() {
            return None;
        }
        self.last_sequence.map(|sequence| sequence + 1)
    }

    async fn deliver(
        &mut self,
        session: &Session,
        mut messages: async_nats::Subscriber,
        ack_inbox: Arc<str>,
    ) -> Next {
        // Made once: each acker clones a reference.
        let ack_to = Arc::new(AckTo::new(
            self.client.nats.clone(),
            async_nats::Subject::from(ack_inbox.as_ref()),
        ));
        let mut channel = async_nats::Subject::from(self.spec.channel.as_str());
        // Registered once for the whole loop (see `poll_next_unless`).
        let mut ended = pin!(self.end.cancelled());
        let mut lost = pin!(session.lost.cancelled());
        loop {
            let next = poll_fn(|cx| {
                poll_next_unless(
                    cx,
                    &mut messages,
                    &mut [(&self.end, ended.as_mut()), (&session.lost, lost.as_mut())],
                )
            })
            .await;
            let message = match next {
                Err(0) => return Next::End,
                Err(_) | Ok(None) => return Next::Resubscribe,
                Ok(Some(message)) => message,
            };
            let msg = match decode_msg(&message.payload, &channel) {
                Ok(msg) => msg,
                Err(err) => {
                    tracing::warn!(channel = %self.spec.channel, error = %err, "malformed message ignored");
                    continue;
                }
            };
            drop(message);
            if channel.as_bytes() != msg.subject {
                channel = async_nats::Subject::from(msg.subject());
            }
            // A delivery past max_deliver goes on like any other: the
            // runtime dead-letters it (publish, wait for the ack, then ack).
            let (hold, delivered) = match self.held.arrive(msg.sequence, server_count(&msg)) {
                Arrival::Deliver { hold, delivered } => (hold, delivered),
                Arrival::HeldBack => {
                    tracing::debug!(channel = %self.spec.channel, sequence = msg.sequence, "redelivery of a message still held here (its handler runs past the ack wait): held back, not counted");
                    continue;
                }
                Arrival::Settled => {
                    tracing::debug!(channel = %self.spec.channel, sequence = msg.sequence, "redelivery of a message acked here already (sent before the server had the ack): acked again, not handled");
                    if let Err(err) = ack_to.ack(&channel, msg.sequence).await {
                        tracing::debug!(channel = %self.spec.channel, error = %err, "could not ack a late redelivery again; the server redelivers it after the ack wait");
                    }
                    continue;
                }
            };
            let sequence = msg.sequence;
            let delivery = into_delivery(msg, (&ack_to, &channel), hold, delivered);
            self.last_sequence = Some(sequence);
            let delivery = match self.deliveries.try_send(delivery) {
                Ok(()) => continue,
                Err(TrySendError::Closed(_)) => return Next::End,
                Err(TrySendError::Full(delivery)) => delivery,
            };
            tokio::select! {
                biased;
                () = ended.as_mut() => return Next::End,
                sent = self.deliveries.send(delivery) => if sent.is_err() { return Next::End },
            }
        }
    }

    /// Closes (keeps a durable) or unsubscribes (deletes it) on the server.
    /// The request names the subscription by its ack inbox: the server finds
    /// subscriptions by nothing else.
    async fn end_on_server(&self, session: &Session, ack_inbox: &str) {
        if session.lost.is_cancelled() {
            return;
        }
        let unsubscribe = self.unsubscribe.load(Ordering::SeqCst);
        let subject = if unsubscribe || session.sub_close_requests.is_empty() {
            session.unsub_requests.clone()
        } else {
            session.sub_close_requests.clone()
        };
        let request = UnsubscribeRequest {
            client_id: self.client.options.client_id.clone(),
            subject: self.spec.channel.clone(),
            inbox: ack_inbox.to_owned(),
            durable_name: self.spec.durable.clone().unwrap_or_default(),
        };
        let reply = tokio::time::timeout(
            self.client.options.connect_wait,
            self.client
                .nats
                .request(subject, request.encode_to_vec().into()),
        )
        .await;
        let error = match reply {
            Ok(Ok(reply)) => SubscriptionResponse::decode(reply.payload.as_ref())
                .map(|r| r.error)
                .unwrap_or_else(|e| e.to_string()),
            Ok(Err(err)) => err.to_string(),
            Err(_) => "no answer".to_owned(),
        };
        if !error.is_empty() {
            tracing::warn!(channel = %self.spec.channel, unsubscribe, %error, "ending the subscription on the server failed");
        }
    }
}

/// The server's count of this delivery: its `redeliveryCount` + 1 when it
/// sends one, else 2 for a redelivery (older servers send a flag only).
fn server_count(msg: &Delivered) -> u32 {
    if msg.redelivery_count > 0 {
        msg.redelivery_count.saturating_add(1)
    } else if msg.redelivered {
        2
    } else {
        1
    }
}

fn into_delivery(
    msg: Delivered,
    (ack_to, subject): (&Arc<AckTo>, &async_nats::Subject),
    hold: Hold,
    delivered: u32,
) -> Delivery<StanAcker> {
    let timestamp = SystemTime::UNIX_EPOCH
        + Duration::from_nanos(u64::try_from(msg.timestamp).unwrap_or_default());
    let acker = StanAcker::new(ack_to.clone(), subject.clone(), msg.sequence, hold);
    let metadata = Metadata::new(subject.clone(), msg.sequence, delivered, timestamp, None);
    Delivery {
        payload: msg.data,
        metadata,
        acker,
    }
}
