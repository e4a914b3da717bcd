//! The JetStream transport: a channel is a stream, a subscriber a pull consumer.
//!
//! | flowgate | JetStream |
//! | --- | --- |
//! | channel `orders.placed` | the stream holding that subject (created as `orders_placed` when none does) |
//! | channel `orders.*`, `orders.>` | the stream whose subjects cover the whole pattern (created as `orders_any`, `orders_all` when none holds any of it; an error when streams hold only part of it); the consumer filters on the pattern |
//! | `durable` / `queue` | a durable pull consumer of that name; every app bound to it shares its work |
//! | `max_in_flight` | `max_ack_pending`, and the local bound on running handlers |
//! | `ack_wait`, `max_deliver` | the consumer's `ack_wait`, `max_deliver` |
//! | `start` | the consumer's deliver policy |
//! | the failure budget's count | a record per failing message in the key-value bucket [`ATTEMPTS_BUCKET`] |

mod acker;
mod advisory;
mod attempt_store;
pub(crate) mod bucket;
mod consumer;
mod consumers;
pub(crate) mod covering;
mod outstanding;
mod publish;
mod reopen;
mod server_version;
mod subscription;
mod unsettled_set;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, stream::StorageType};

pub use acker::JetStreamAcker;
pub use attempt_store::ATTEMPTS_BUCKET;
pub use consumers::{ConfigCheck, ConsumerCounts, ConsumerReport};
pub use publish::JetStreamPendingAck;
pub use server_version::{ServerFeature, ServerTooOld, ServerVersion};
pub use subscription::JetStreamSubscription;

use crate::{Error, OutgoingMessage, PublishError, SubscriptionSpec, Transport};

/// How the streams flowgate creates are stored.
///
/// ```
/// let settings = flowgate::JetStreamSettings::default().memory_storage().replicas(3);
/// ```
#[derive(Debug, Clone)]
pub struct JetStreamSettings {
    storage: StorageType,
    replicas: usize,
}

impl Default for JetStreamSettings {
    fn default() -> Self {
        Self {
            storage: StorageType::File,
            replicas: 1,
        }
    }
}

impl JetStreamSettings {
    /// Keep created streams in memory instead of on disk.
    pub fn memory_storage(mut self) -> Self {
        self.storage = StorageType::Memory;
        self
    }

    /// Replicate created streams over `replicas` servers of a cluster.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }
}

/// A connection to a NATS server with JetStream enabled.
///
/// ```no_run
/// # async fn demo() -> Result<(), flowgate::Error> {
/// // Plain URL...
/// let nats = flowgate::JetStream::connect("nats://127.0.0.1:4222").await?;
/// // ...or any async-nats option: TLS, token, user/password, nkey, credentials file.
/// let options = async_nats::ConnectOptions::new().token("s3cr3t".into());
/// let nats = flowgate::JetStream::connect_with_options("nats://127.0.0.1:4222", options).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct JetStream {
    client: async_nats::Client,
    context: jetstream::Context,
    settings: Arc<JetStreamSettings>,
    streams: Arc<Mutex<HashMap<String, String>>>,
    /// The subject published to last, whose stream is known.
    published: Arc<publish::LastSubject>,
}

impl JetStream {
    /// Connects to `url` with async-nats' default options. `url` may be a
    /// comma-separated seed list, and may carry credentials
    /// (`nats://user:password@host`, `nats://token@host`), which errors and
    /// logs never show.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with_options(url, async_nats::ConnectOptions::new()).await
    }

    /// Connects to `url` with `options` (TLS, credentials, reconnect policy...).
    pub async fn connect_with_options(
        url: &str,
        options: async_nats::ConnectOptions,
    ) -> Result<Self, Error> {
        let client = crate::transport::connect_nats(url, options).await?;
        Ok(Self::from_client(client))
    }

    /// Uses a client you connected yourself.
    pub fn from_client(client: async_nats::Client) -> Self {
        server_version::log_server(&client);
        let context = jetstream::new(client.clone());
        Self {
            client,
            context,
            settings: Arc::new(JetStreamSettings::default()),
            streams: Arc::default(),
            published: Arc::default(),
        }
    }

    /// Sets how created streams are stored.
    pub fn with_settings(mut self, settings: JetStreamSettings) -> Self {
        self.settings = Arc::new(settings);
        self
    }

    /// The underlying client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Replicas of the streams and buckets flowgate creates.
    pub(crate) fn replicas(&self) -> usize {
        self.settings.replicas
    }

    /// The underlying JetStream context.
    pub fn context(&self) -> &jetstream::Context {
        &self.context
    }

    /// The name of the stream that holds `channel`, creating it when no stream does.
    pub async fn ensure_stream(&self, channel: &str) -> Result<String, Error> {
        if let Some(name) = self.cached_stream(channel) {
            return Ok(name);
        }
        let name = consumer::ensure_stream(&self.context, &self.settings, channel).await?;
        if let Ok(mut streams) = self.streams.lock() {
            streams.insert(channel.to_owned(), name.clone());
        }
        Ok(name)
    }

    /// A work-queue stream requires explicit acks of its consumers: coalesced
    /// acks (ack policy "all") cannot work there.
    async fn refuse_coalesced_on_work_queue(
        &self,
        spec: &SubscriptionSpec,
        stream: &str,
    ) -> Result<(), Error> {
        let info = self
            .context
            .get_stream(stream)
            .await
            .map_err(|e| Error::Broker(Box::new(e)))?
            .cached_info()
            .clone();
        if info.config.retention == jetstream::stream::RetentionPolicy::WorkQueue {
            return Err(Error::Config(format!(
                "`{}` asks for coalesced acks, but stream `{stream}` has work-queue retention, which requires explicit acks: use ack = \"auto\" for it",
                spec.channel
            )));
        }
        Ok(())
    }

    fn knows_stream(&self, channel: &str) -> bool {
        self.streams
            .lock()
            .is_ok_and(|streams| streams.contains_key(channel))
    }

    fn cached_stream(&self, channel: &str) -> Option<String> {
        self.streams.lock().ok()?.get(channel).cloned()
    }
}

impl Transport for JetStream {
    type Acker = JetStreamAcker;
    type Subscription = JetStreamSubscription;
    type PendingAck = JetStreamPendingAck;

    async fn subscribe(&self, spec: &SubscriptionSpec) -> Result<Self::Subscription, Error> {
        spec.validate()?;
        let stream = self.ensure_stream(&spec.channel).await?;
        if spec.ack == crate::AckMode::Coalesced {
            self.refuse_coalesced_on_work_queue(spec, &stream).await?;
        }
        JetStreamSubscription::open(self.context.clone(), stream, spec.clone()).await
    }

    async fn publish(&self, message: OutgoingMessage) -> Result<Self::PendingAck, PublishError> {
        let subject = match self.published.get(&message.subject) {
            Some(subject) => subject,
            None => {
                if !self.knows_stream(&message.subject) {
                    self.ensure_stream(&message.subject).await.map_err(|e| {
                        PublishError::Broker {
                            subject: message.subject.clone(),
                            source: Box::new(e),
                        }
                    })?;
                }
                let subject = async_nats::Subject::from(message.subject);
                self.published.set(subject.clone());
                subject
            }
        };
        let mut publish = jetstream::message::PublishMessage::build().payload(message.payload);
        if let Some(headers) = message.headers {
            publish = publish.headers(headers);
        }
        if let Some(id) = message.message_id {
            publish = publish.message_id(id);
        }
        let sent = self
            .context
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| publish::broker_error(&subject, e))?;
        Ok(JetStreamPendingAck::new(subject, sent))
    }

    async fn exhausted(
        &self,
        spec: &SubscriptionSpec,
    ) -> Result<Option<crate::transport::ExhaustedStream>, Error> {
        let Some(consumer) = consumer::consumer_name(spec) else {
            return Ok(None);
        };
        let stream = self.ensure_stream(&spec.channel).await?;
        advisory::exhausted(
            &self.client,
            self.context.clone(),
            stream,
            consumer.to_owned(),
        )
        .await
        .map(Some)
    }

    fn supports_coalesced_acks(&self) -> bool {
        true
    }

    /// The async-nats client's connection state.
    fn connection(&self) -> crate::ConnectionState {
        crate::ConnectionState::of_nats(&self.client)
    }

    /// A durable's (or queue group's) records in [`ATTEMPTS_BUCKET`]; `None`
    /// for an ephemeral consumer, which no other process shares and which
    /// does not outlive its app.
    async fn attempt_store(
        &self,
        spec: &SubscriptionSpec,
    ) -> Result<Option<Arc<dyn crate::AttemptStore>>, Error> {
        let Some(consumer) = consumer::consumer_name(spec) else {
            return Ok(None);
        };
        let stream = self.ensure_stream(&spec.channel).await?;
        Ok(Some(Arc::new(attempt_store::KvAttemptStore::new(
            self.context.clone(),
            self.settings.replicas,
            &stream,
            consumer,
        ))))
    }

    /// Flushes, then makes one request on the connection: the server answers
    /// only after it has read everything sent before (acks, unsubscribes),
    /// which a flush alone does not wait for.
    async fn flush(&self) -> Result<(), Error> {
        self.client
            .flush()
            .await
            .map_err(|e| Error::Broker(Box::new(e)))?;
        self.client
            .request("$JS.API.INFO", bytes::Bytes::new())
            .await
            .map(|_| ())
            .map_err(|e| Error::Broker(Box::new(e)))
    }
}
