//! The raw baseline of the NATS Streaming cases: a client written on
//! async-nats and prost the way the reference Go client (stan.go) is, and
//! nothing more. It registers with a connect request, answers heartbeats,
//! publishes `PubMsg`s with a window of `PubAck`s outstanding (matched by
//! guid), and subscribes with a subscription request, acking each `MsgProto`
//! with an `Ack` on the ack inbox after handling it inline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flowgate::transport::stan::proto::{
    Ack, CloseRequest, ConnectRequest, ConnectResponse, MsgProto, Ping, PubAck, PubMsg,
    StartPosition, SubscriptionRequest, SubscriptionResponse, UnsubscribeRequest,
};
use futures::StreamExt;
use prost::Message as _;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::BenchError;

/// How long requests (connect, subscribe, close) wait.
const REQUEST_WAIT: Duration = Duration::from_secs(5);

type AckResult = Result<(), String>;
type PendingMap = HashMap<String, Option<oneshot::Sender<AckResult>>>;

/// The publishes waiting for their ack, and the window they take slots of.
struct PubAcks {
    pending: Mutex<PendingMap>,
    window: Semaphore,
    size: usize,
    errors: AtomicU64,
}

/// One registered raw client.
pub struct RawStan {
    nats: async_nats::Client,
    client_id: String,
    conn_id: Vec<u8>,
    response: ConnectResponse,
    acks_inbox: async_nats::Subject,
    acks: Arc<PubAcks>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RawStan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawStan")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl RawStan {
    /// Registers `client_id` with the cluster `cluster_id` over `nats`, with
    /// at most `window` publish acks outstanding.
    pub async fn connect(
        nats: async_nats::Client,
        cluster_id: &str,
        client_id: &str,
        window: usize,
    ) -> Result<Self, BenchError> {
        let heartbeat_inbox = nats.new_inbox();
        let mut heartbeats = nats.subscribe(heartbeat_inbox.clone()).await?;
        let answerer = nats.clone();
        let heartbeat_task = tokio::spawn(async move {
            while let Some(beat) = heartbeats.next().await {
                if let Some(reply) = beat.reply {
                    let _ = answerer.publish(reply, bytes::Bytes::new()).await;
                }
            }
        });
        let conn_id = nuid::next().to_string().into_bytes();
        let request = ConnectRequest {
            client_id: client_id.to_owned(),
            heartbeat_inbox,
            protocol: 1,
            conn_id: conn_id.clone(),
            ping_interval: 5,
            ping_max_out: 88,
        };
        let reply = tokio::time::timeout(
            REQUEST_WAIT,
            nats.request(
                format!("_STAN.discover.{cluster_id}"),
                request.encode_to_vec().into(),
            ),
        )
        .await??;
        let response = ConnectResponse::decode(reply.payload.as_ref())?;
        if !response.error.is_empty() {
            return Err(format!("connect refused: {}", response.error).into());
        }
        let acks_inbox = async_nats::Subject::from(format!("_STAN.acks.{}", nuid::next()));
        let acks = Arc::new(PubAcks {
            pending: Mutex::default(),
            window: Semaphore::new(window),
            size: window,
            errors: AtomicU64::new(0),
        });
        let ack_task = tokio::spawn(route_acks(
            nats.subscribe(acks_inbox.clone()).await?,
            acks.clone(),
        ));
        let ping_task = tokio::spawn(ping(nats.clone(), &response, &conn_id));
        nats.flush().await?;
        Ok(Self {
            nats,
            client_id: client_id.to_owned(),
            conn_id,
            response,
            acks_inbox,
            acks,
            tasks: vec![heartbeat_task, ack_task, ping_task],
        })
    }

    /// Sends one publish (waiting first for a free slot of the window); the
    /// receiver, when asked for, resolves with its ack.
    pub async fn publish(
        &self,
        channel: &str,
        data: Vec<u8>,
        want_ack: bool,
    ) -> Result<Option<oneshot::Receiver<AckResult>>, BenchError> {
        self.acks.window.acquire().await?.forget();
        let guid = nuid::next().to_string();
        let (tx, rx) = if want_ack {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.acks.lock().insert(guid.clone(), tx);
        let pub_msg = PubMsg {
            client_id: self.client_id.clone(),
            guid,
            subject: channel.to_owned(),
            reply: String::new(),
            data,
            conn_id: self.conn_id.clone(),
            sha256: Vec::new(),
        };
        self.nats
            .publish_with_reply(
                async_nats::Subject::from(format!("{}.{channel}", self.response.pub_prefix)),
                self.acks_inbox.clone(),
                pub_msg.encode_to_vec().into(),
            )
            .await?;
        Ok(rx)
    }

    /// Waits until every publish sent so far is acked; fails on any ack
    /// that reported an error.
    pub async fn flush_publishes(&self) -> Result<(), BenchError> {
        let all = u32::try_from(self.acks.size)?;
        let permits =
            tokio::time::timeout(Duration::from_secs(60), self.acks.window.acquire_many(all))
                .await??;
        drop(permits);
        match self.acks.errors.swap(0, Ordering::Relaxed) {
            0 => Ok(()),
            errors => Err(format!("{errors} publishes were refused").into()),
        }
    }

    /// Subscribes to `channel` from its first message with `max_in_flight`
    /// unacked deliveries at most; returns the deliveries and the ack inbox.
    pub async fn subscribe(
        &self,
        channel: &str,
        max_in_flight: i32,
    ) -> Result<RawSubscription, BenchError> {
        let inbox = self.nats.new_inbox();
        let messages = self.nats.subscribe(inbox.clone()).await?;
        let mut request = SubscriptionRequest {
            client_id: self.client_id.clone(),
            subject: channel.to_owned(),
            inbox,
            max_in_flight,
            ack_wait_in_secs: 30,
            ..Default::default()
        };
        request.set_start_position(StartPosition::First);
        let reply = tokio::time::timeout(
            REQUEST_WAIT,
            self.nats.request(
                self.response.sub_requests.clone(),
                request.encode_to_vec().into(),
            ),
        )
        .await??;
        let response = SubscriptionResponse::decode(reply.payload.as_ref())?;
        if !response.error.is_empty() {
            return Err(format!("subscription refused: {}", response.error).into());
        }
        Ok(RawSubscription {
            messages,
            ack_inbox: response.ack_inbox.into(),
            channel: channel.to_owned(),
        })
    }

    /// Closes a subscription on the server (subclose), by its ack inbox.
    pub async fn close_subscription(&self, sub: RawSubscription) -> Result<(), BenchError> {
        let request = UnsubscribeRequest {
            client_id: self.client_id.clone(),
            subject: sub.channel,
            inbox: sub.ack_inbox.to_string(),
            durable_name: String::new(),
        };
        let subject = if self.response.sub_close_requests.is_empty() {
            self.response.unsub_requests.clone()
        } else {
            self.response.sub_close_requests.clone()
        };
        let reply = tokio::time::timeout(
            REQUEST_WAIT,
            self.nats.request(subject, request.encode_to_vec().into()),
        )
        .await??;
        let response = SubscriptionResponse::decode(reply.payload.as_ref())?;
        match response.error.is_empty() {
            true => Ok(()),
            false => Err(format!("subclose refused: {}", response.error).into()),
        }
    }

    /// Ends the registration.
    pub async fn close(&self) -> Result<(), BenchError> {
        let request = CloseRequest {
            client_id: self.client_id.clone(),
        };
        tokio::time::timeout(
            REQUEST_WAIT,
            self.nats.request(
                self.response.close_requests.clone(),
                request.encode_to_vec().into(),
            ),
        )
        .await??;
        Ok(())
    }

    /// The NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }
}

impl Drop for RawStan {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl PubAcks {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingMap> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Matches each `PubAck` with its publish and frees its slot of the window.
async fn route_acks(mut acks: async_nats::Subscriber, state: Arc<PubAcks>) {
    while let Some(message) = acks.next().await {
        let Ok(ack) = PubAck::decode(message.payload.as_ref()) else {
            continue;
        };
        let Some(waiting) = state.lock().remove(&ack.guid) else {
            continue;
        };
        state.window.add_permits(1);
        let result = if ack.error.is_empty() {
            Ok(())
        } else {
            state.errors.fetch_add(1, Ordering::Relaxed);
            Err(ack.error)
        };
        if let Some(waiting) = waiting {
            let _ = waiting.send(result);
        }
    }
}

/// Pings the server at the interval it asked for (stan.go does the same).
fn ping(
    nats: async_nats::Client,
    response: &ConnectResponse,
    conn_id: &[u8],
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let subject = response.ping_requests.clone();
    let interval = match response.ping_interval {
        0 => None,
        v if v < 0 => Some(Duration::from_millis(u64::from(v.unsigned_abs()))),
        v => Some(Duration::from_secs(u64::from(v.unsigned_abs()))),
    };
    let ping = Ping {
        conn_id: conn_id.to_vec(),
    }
    .encode_to_vec();
    async move {
        let Some(interval) = interval else { return };
        loop {
            tokio::time::sleep(interval).await;
            let _ =
                tokio::time::timeout(interval, nats.request(subject.clone(), ping.clone().into()))
                    .await;
        }
    }
}

/// The deliveries of one raw subscription.
#[derive(Debug)]
pub struct RawSubscription {
    messages: async_nats::Subscriber,
    ack_inbox: async_nats::Subject,
    channel: String,
}

impl RawSubscription {
    /// Takes `n` deliveries: decodes each with `handle` and acks it, the
    /// way stan.go's auto-ack does after the handler returned.
    pub async fn consume<F>(
        &mut self,
        nats: &async_nats::Client,
        n: u64,
        mut handle: F,
    ) -> Result<(), BenchError>
    where
        F: FnMut(&MsgProto) -> Result<(), BenchError>,
    {
        for _ in 0..n {
            let message = self.messages.next().await.ok_or("the subscription ended")?;
            let msg = MsgProto::decode(message.payload.as_ref())?;
            handle(&msg)?;
            let ack = Ack {
                subject: msg.subject,
                sequence: msg.sequence,
            };
            nats.publish(self.ack_inbox.clone(), ack.encode_to_vec().into())
                .await?;
        }
        Ok(())
    }
}
