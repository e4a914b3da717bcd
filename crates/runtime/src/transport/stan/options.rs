//! Connection options of the NATS Streaming client, with the reference Go
//! client's defaults.

use std::time::Duration;

use super::StanError;

/// What a subscription does with its server-side state when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscriptionEnd {
    /// Close it: a durable keeps its position for the next run (the default).
    #[default]
    Close,
    /// Unsubscribe: a durable is deleted on the server.
    Unsubscribe,
}

/// How to reach and talk to a NATS Streaming cluster.
///
/// Defaults are those of the reference client (stan.go): discover prefix
/// `_STAN.discover`, connect wait 2 s, pub ack wait 30 s, 16384 outstanding pub
/// acks, a ping every 5 s and 88 pings without answer before the connection
/// counts as lost, cluster id `test-cluster`.
///
/// ```
/// use std::time::Duration;
/// use flowgate::StanOptions;
///
/// let options = StanOptions::new("billing-1").cluster_id("prod").pings(2, 10);
/// assert_eq!(options.client_id_str(), "billing-1");
/// assert_eq!(StanOptions::new("a").connect_wait_duration(), Duration::from_secs(2));
/// assert!(StanOptions::new("not valid!").validate().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct StanOptions {
    pub(crate) cluster_id: String,
    pub(crate) client_id: String,
    pub(crate) discover_prefix: String,
    pub(crate) connect_wait: Duration,
    pub(crate) pub_ack_wait: Duration,
    pub(crate) max_pub_acks_in_flight: usize,
    pub(crate) ping_interval_secs: i32,
    pub(crate) ping_max_out: i32,
    pub(crate) subscription_end: SubscriptionEnd,
    pub(crate) keep_retrying_when_replaced: bool,
}

impl StanOptions {
    /// The reference client's default discover prefix.
    pub const DEFAULT_DISCOVER_PREFIX: &'static str = "_STAN.discover";
    /// The reference client's default cluster id.
    pub const DEFAULT_CLUSTER_ID: &'static str = "test-cluster";
    /// How long connect (and close, subscribe) requests wait for the server.
    pub const DEFAULT_CONNECT_WAIT: Duration = Duration::from_secs(2);
    /// How long a publish waits for the server's ack.
    pub const DEFAULT_PUB_ACK_WAIT: Duration = Duration::from_secs(30);
    /// The most published messages waiting for their ack.
    pub const DEFAULT_MAX_PUB_ACKS_IN_FLIGHT: usize = 16384;
    /// Seconds between two client pings.
    pub const DEFAULT_PING_INTERVAL: i32 = 5;
    /// Pings without answer before the connection counts as lost.
    pub const DEFAULT_PING_MAX_OUT: i32 = 88;

    /// Options for the client `client_id` with every other setting at its default.
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            cluster_id: Self::DEFAULT_CLUSTER_ID.to_owned(),
            client_id: client_id.into(),
            discover_prefix: Self::DEFAULT_DISCOVER_PREFIX.to_owned(),
            connect_wait: Self::DEFAULT_CONNECT_WAIT,
            pub_ack_wait: Self::DEFAULT_PUB_ACK_WAIT,
            max_pub_acks_in_flight: Self::DEFAULT_MAX_PUB_ACKS_IN_FLIGHT,
            ping_interval_secs: Self::DEFAULT_PING_INTERVAL,
            ping_max_out: Self::DEFAULT_PING_MAX_OUT,
            subscription_end: SubscriptionEnd::Close,
            keep_retrying_when_replaced: false,
        }
    }

    /// The cluster id the server was started with (`-cid`).
    pub fn cluster_id(mut self, cluster_id: impl Into<String>) -> Self {
        self.cluster_id = cluster_id.into();
        self
    }

    /// The subject prefix of connect requests (`<prefix>.<cluster id>`).
    pub fn discover_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.discover_prefix = prefix.into();
        self
    }

    /// How long connect, subscribe and close requests wait for an answer.
    pub fn connect_wait(mut self, wait: Duration) -> Self {
        self.connect_wait = wait;
        self
    }

    /// How long a publish waits for the server's ack, from when it was
    /// sent, before it fails with
    /// [`StanError::PubAckTimeout`](super::StanError::PubAckTimeout).
    pub fn pub_ack_wait(mut self, wait: Duration) -> Self {
        self.pub_ack_wait = wait;
        self
    }

    /// The most published messages waiting for their ack; more publishes wait.
    pub fn max_pub_acks_in_flight(mut self, max: usize) -> Self {
        self.max_pub_acks_in_flight = max.max(1);
        self
    }

    /// Ping the server every `interval_secs` seconds (at least 1) and count the
    /// connection as lost after `max_out` pings without answer (at least 2).
    /// The server may answer other values in its connect response; those win,
    /// as in the reference client.
    pub fn pings(mut self, interval_secs: u32, max_out: u32) -> Self {
        self.ping_interval_secs = i32::try_from(interval_secs.max(1)).unwrap_or(i32::MAX);
        self.ping_max_out = i32::try_from(max_out.max(2)).unwrap_or(i32::MAX);
        self
    }

    /// What subscriptions do on the server when they end: close (keep
    /// durables, the default) or unsubscribe (delete durables).
    pub fn on_subscription_end(mut self, end: SubscriptionEnd) -> Self {
        self.subscription_end = end;
        self
    }

    /// What the client does when, registering again, it finds its id held
    /// by another live client (it was replaced). By default (`false`) it
    /// stops, as the reference client does: the state becomes
    /// [`Closed`](super::StanState::Closed), subscriptions end, publishes and
    /// [`closed`](crate::NatsStreaming::closed) report
    /// [`StanError::Replaced`](super::StanError::Replaced). With `true` it
    /// keeps trying to register (every 2 s at most) until the id is free.
    pub fn keep_retrying_when_replaced(mut self, keep_retrying: bool) -> Self {
        self.keep_retrying_when_replaced = keep_retrying;
        self
    }

    /// The client id.
    pub fn client_id_str(&self) -> &str {
        &self.client_id
    }

    /// The connect wait.
    pub fn connect_wait_duration(&self) -> Duration {
        self.connect_wait
    }

    /// Checks the client id (letters, digits, `-`, `_`) before connecting.
    pub fn validate(&self) -> Result<(), StanError> {
        validate_client_id(&self.client_id)
    }

    pub(crate) fn discover_subject(&self) -> String {
        format!("{}.{}", self.discover_prefix, self.cluster_id)
    }
}

/// Checks a NATS Streaming client id: one or more letters, digits, `-` or `_`.
///
/// ```
/// use flowgate::transport::stan::validate_client_id;
/// assert!(validate_client_id("orders_worker-2").is_ok());
/// assert!(validate_client_id("orders.worker").is_err());
/// assert!(validate_client_id("").is_err());
/// ```
pub fn validate_client_id(client_id: &str) -> Result<(), StanError> {
    let valid = !client_id.is_empty()
        && client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(StanError::InvalidClientId(client_id.to_owned()))
    }
}
