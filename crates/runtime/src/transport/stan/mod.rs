//! The NATS Streaming (STAN) transport: the legacy protocol of
//! nats-streaming-server behind the same handler API, for clusters that still
//! run it and for migrating to JetStream.
//!
//! | flowgate | NATS Streaming |
//! | --- | --- |
//! | channel `orders.placed` | the channel `orders.placed` |
//! | `durable` / `queue` | durable name / queue group (both: a durable queue group) |
//! | `max_in_flight` | the subscription's max in flight (plus the runtime's local bound, which also covers redeliveries) |
//! | `ack_wait` | `ackWaitInSecs`, rounded up to whole seconds |
//! | `start` | `New` → new only, `Last` → last received, `All` → first, `Sequence` → sequence start, `Time` → time delta computed when subscribing |
//! | `max_deliver` | counted by the client (the server has no limit): a delivery past it reaches the runtime, which dead-letters it (publishes the dead letter, waits for its ack, then acks the original) |
//!
//! What differs from JetStream, on purpose and documented:
//! - **No nak.** A nak leaves the message unacked; the server redelivers it
//!   after the subscription's ack wait, whatever delay was asked for.
//!   `term` acks (the message is never redelivered); `in_progress` does nothing.
//! - **No headers.** Published headers are not sent; deliveries have none.
//!   A dead letter travels in an envelope instead ([`StanDeadLetter`]), with
//!   what JetStream sends as headers and the original payload inside.
//! - **No de-duplication.** A message id is not sent; the publish ack has no
//!   sequence (it reports 0) and is never a duplicate.
//! - **Delivery count.** 1 for a first delivery; on a redelivery the server's
//!   `redeliveryCount` + 1 when it sends one, else 2 (a redelivered flag only),
//!   less the redeliveries this process held back.
//! - **No progress ack.** The server redelivers a message whose handler runs
//!   past the ack wait, again each ack wait. While the message is held here
//!   (buffered, or in a handler) such a redelivery is held back: it never
//!   runs in a second handler at once, and it does not count towards
//!   `max_deliver`. Redeliveries another process held back before it stopped
//!   are in the server's count and do count.
//!
//! The client is a state machine (see [`StanState`]): it registers with a
//! connect request to `<discover prefix>.<cluster id>`, answers the server's
//! heartbeats, pings the server, and when the pings go unanswered or the
//! server says the client is no longer registered it registers again by
//! itself; every subscription then subscribes again (durables resume where
//! they were). When that registration is refused because another live client
//! holds the id, the client was replaced: it closes with
//! [`StanError::Replaced`] unless told to keep retrying
//! ([`StanOptions::keep_retrying_when_replaced`]).

mod acker;
mod by_number;
mod client;
mod dead_letter;
mod decode;
mod error;
mod held;
mod next_unless;
mod options;
mod pings;
pub mod proto;
mod pub_acks;
mod publisher;
mod request;
mod session;
mod subscription;
mod wire;

use std::sync::Arc;

pub use acker::StanAcker;
pub use client::StanState;
pub use dead_letter::StanDeadLetter;
pub use error::StanError;
pub use options::{validate_client_id, StanOptions, SubscriptionEnd};
pub use publisher::StanPendingAck;
pub use subscription::StanSubscription;

use client::Client;

use crate::{Error, OutgoingMessage, PublishError, SubscriptionSpec, Transport};

/// A client of a NATS Streaming cluster, over one NATS connection.
///
/// ```no_run
/// # async fn demo() -> Result<(), flowgate::Error> {
/// use flowgate::{NatsStreaming, StanOptions};
///
/// let stan = NatsStreaming::connect(
///     "nats://127.0.0.1:4222",
///     StanOptions::new("billing-1").cluster_id("test-cluster"),
/// )
/// .await?;
/// // ... flowgate::App::new().discover().run(stan.clone()).await? ...
/// stan.close().await?; // ends subscriptions (durables kept) and the registration
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NatsStreaming {
    client: Arc<Client>,
    /// Shared by every clone; when the last one is dropped without
    /// [`close`](Self::close), the client stops answering for its id.
    _owner: Arc<Owner>,
}

/// Ends a client nobody holds any more. The client's own background task
/// keeps an `Arc<Client>`, so the client alone could never be dropped.
#[derive(Debug)]
struct Owner(Arc<Client>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

impl NatsStreaming {
    /// Connects to NATS at `url` and registers with the streaming server.
    pub async fn connect(url: &str, options: StanOptions) -> Result<Self, Error> {
        Self::connect_with_options(url, async_nats::ConnectOptions::new(), options).await
    }

    /// Connects with async-nats `nats_options` (TLS, credentials...) and registers.
    pub async fn connect_with_options(
        url: &str,
        nats_options: async_nats::ConnectOptions,
        options: StanOptions,
    ) -> Result<Self, Error> {
        options.validate().map_err(stan_config)?;
        let nats = crate::transport::connect_nats(url, nats_options).await?;
        Self::from_client(nats, options).await
    }

    /// Registers over a NATS client you connected yourself.
    pub async fn from_client(
        nats: async_nats::Client,
        options: StanOptions,
    ) -> Result<Self, Error> {
        options.validate().map_err(stan_config)?;
        let client = Client::start(nats, options)
            .await
            .map_err(|e| Error::Broker(Box::new(e)))?;
        Ok(Self {
            _owner: Arc::new(Owner(client.clone())),
            client,
        })
    }

    /// Where the client state machine is now.
    pub fn state(&self) -> StanState {
        self.client.state()
    }

    /// How many times the client has registered (1 after connecting; each
    /// re-registration after a lost connection adds one).
    pub fn registrations(&self) -> u64 {
        self.client.registrations()
    }

    /// Waits until the client is closed. Returns why when it closed by itself
    /// ([`StanError::Replaced`]: another live client took its id), `None`
    /// after [`close`](Self::close). An app can run until either comes:
    ///
    /// ```no_run
    /// # async fn demo(app: flowgate::App, stan: flowgate::NatsStreaming) -> Result<(), flowgate::Error> {
    /// let watched = stan.clone();
    /// let running = app.start(stan.clone()).await?;
    /// tokio::select! {
    ///     _ = flowgate::shutdown_signal() => {}
    ///     why = watched.closed() => eprintln!("the NATS Streaming client stopped: {why:?}"),
    /// }
    /// running.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn closed(&self) -> Option<StanError> {
        self.client.closed().await
    }

    /// The underlying NATS client.
    pub fn nats(&self) -> &async_nats::Client {
        &self.client.nats
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client.options.client_id
    }

    /// Subscribes like [`Transport::subscribe`], returning the concrete
    /// subscription, which can be closed or unsubscribed explicitly.
    pub async fn subscribe_spec(&self, spec: &SubscriptionSpec) -> Result<StanSubscription, Error> {
        spec.validate()?;
        refuse_wildcards(spec)?;
        StanSubscription::open(self.client.clone(), spec.clone()).await
    }

    /// Ends every subscription (closed, or unsubscribed when configured so),
    /// then sends the close request: the server forgets the client and keeps
    /// its durables. The client does not register again afterwards.
    pub async fn close(&self) -> Result<(), Error> {
        self.client
            .close()
            .await
            .map_err(|e| Error::Broker(Box::new(e)))
    }
}

fn stan_config(err: StanError) -> Error {
    Error::Config(err.to_string())
}

/// NATS Streaming channels are literal names: it has no wildcard
/// subscriptions, so a subscriber to `orders.*` cannot start on it.
fn refuse_wildcards(spec: &SubscriptionSpec) -> Result<(), Error> {
    if !crate::is_pattern(&spec.channel) {
        return Ok(());
    }
    Err(Error::Subscribe {
        channel: spec.channel.clone(),
        source: format!(
            "NATS Streaming has no wildcard subscriptions (its channels are literal names), a limit of NATS Streaming itself: subscribe to each channel `{}` should cover on its own, or run this subscriber on JetStream (`flowgate::JetStream`), which reads `{}` from one stream",
            spec.channel, spec.channel
        )
        .into(),
    })
}

impl Transport for NatsStreaming {
    type Acker = StanAcker;
    type Subscription = StanSubscription;
    type PendingAck = StanPendingAck;

    async fn subscribe(&self, spec: &SubscriptionSpec) -> Result<Self::Subscription, Error> {
        self.subscribe_spec(spec).await
    }

    /// Connected while the NATS connection is up and the client is
    /// registered with the streaming server: only then do deliveries and
    /// acks flow.
    fn connection(&self) -> crate::ConnectionState {
        match (crate::ConnectionState::of_nats(self.nats()), self.state()) {
            (crate::ConnectionState::Connected, StanState::Registered) => {
                crate::ConnectionState::Connected
            }
            _ => crate::ConnectionState::Disconnected,
        }
    }

    async fn publish(&self, message: OutgoingMessage) -> Result<Self::PendingAck, PublishError> {
        publisher::publish(&self.client, message).await
    }

    async fn flush(&self) -> Result<(), Error> {
        self.client
            .nats
            .flush()
            .await
            .map_err(|e| Error::Broker(Box::new(e)))
    }

    /// NATS Streaming has no progress ack: a handler's retries must fit in
    /// one ack wait.
    fn supports_progress(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod wildcard_tests {
    #[test]
    fn wildcard_channels_are_refused_with_what_to_do() {
        let err = super::refuse_wildcards(&crate::SubscriptionSpec::new("orders.>"))
            .expect_err("refused");
        let message = err.to_string();
        assert!(
            message.contains("NATS Streaming has no wildcard"),
            "{message}"
        );
        assert!(message.contains("JetStream"), "{message}");
        assert!(super::refuse_wildcards(&crate::SubscriptionSpec::new("orders.placed")).is_ok());
    }
}
