//! A NATS Streaming protocol double: a small streaming server written for the
//! tests, speaking the reference protocol over a real nats-server.
//!
//! It follows nats-streaming-server's semantics where the tests need them:
//! discovery on `_STAN.discover.<cluster>`, the client-id check (a second
//! client with a live id is refused after the old client's heartbeat inbox
//! answers), heartbeats, client pings (an unknown connID gets "client has been
//! replaced or is no longer registered"), pub acks, durable positions that
//! survive close but not unsubscribe, ack-wait redelivery with the redelivered
//! flag and count, max in flight, queue groups and start positions; a
//! subscription ends by its ack inbox (or its delivery inbox), and acks that
//! come after it ended are dropped, as the real server drops them. It keeps
//! everything in memory; [`stop`](StanDouble::stop) and
//! [`resume`](StanDouble::resume) play a server that goes away and comes back
//! with its store.
//!
//! ```no_run
//! # async fn demo() {
//! let nats = flowgate_tests::NatsServer::start().await;
//! let double = flowgate_tests::stan_double::StanDouble::start(&nats.url()).await;
//! assert_eq!(double.stored("orders.placed"), 0);
//! # }
//! ```

mod server;
mod state;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use state::State;

/// How the double behaves.
#[derive(Debug, Clone)]
pub struct DoubleConfig {
    /// The cluster id it answers for.
    pub cluster_id: String,
    /// The ping interval it tells clients: seconds, or milliseconds when
    /// negative (the reference implementation's test convention).
    pub ping_interval: i32,
    /// Pings without answer after which clients give up.
    pub ping_max_out: i32,
    /// How often it heartbeats its clients.
    pub heartbeat_interval: Duration,
    /// Missed heartbeats after which a client is forgotten.
    pub heartbeat_max_misses: u32,
    /// How long a heartbeat (and the client-id check) waits for an answer.
    pub client_check_timeout: Duration,
}

impl Default for DoubleConfig {
    fn default() -> Self {
        Self {
            cluster_id: "test-cluster".to_owned(),
            ping_interval: -100,
            ping_max_out: 3,
            heartbeat_interval: Duration::from_millis(100),
            heartbeat_max_misses: 50,
            client_check_timeout: Duration::from_millis(250),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) nats: async_nats::Client,
    pub(crate) id: String,
    pub(crate) config: DoubleConfig,
    state: Mutex<State>,
    pub(crate) wake: Notify,
    pub(crate) answer_pings: AtomicBool,
    /// How long publish acks are held back (`None`: sent at once).
    pub(crate) pub_ack_delay: Mutex<Option<Duration>>,
    pub(crate) connect_requests: AtomicU64,
    pub(crate) refused_duplicates: AtomicU64,
    pub(crate) close_requests: AtomicU64,
    pub(crate) acks: AtomicU64,
    pub(crate) dropped_acks: AtomicU64,
    pub(crate) ends_by_delivery_inbox: AtomicU64,
    pub(crate) pings_answered: AtomicU64,
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running NATS Streaming double. Stops when dropped.
pub struct StanDouble {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for StanDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StanDouble")
            .field("id", &self.shared.id)
            .finish()
    }
}

impl StanDouble {
    /// Starts a double with the default config on the nats-server at `url`.
    pub async fn start(url: &str) -> Self {
        Self::start_with(url, DoubleConfig::default()).await
    }

    /// Starts a double with `config`, and returns once it answers.
    pub async fn start_with(url: &str, config: DoubleConfig) -> Self {
        let nats = async_nats::connect(url)
            .await
            .unwrap_or_else(|e| panic!("the double cannot connect to {url}: {e}"));
        let id = nats
            .new_inbox()
            .rsplit('.')
            .next()
            .unwrap_or("double")
            .to_owned();
        let shared = Arc::new(Shared {
            nats,
            id,
            config,
            state: Mutex::default(),
            wake: Notify::new(),
            answer_pings: AtomicBool::new(true),
            pub_ack_delay: Mutex::new(None),
            connect_requests: AtomicU64::new(0),
            refused_duplicates: AtomicU64::new(0),
            close_requests: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            dropped_acks: AtomicU64::new(0),
            ends_by_delivery_inbox: AtomicU64::new(0),
            pings_answered: AtomicU64::new(0),
        });
        let mut double = Self {
            shared,
            tasks: Vec::new(),
        };
        double.resume().await;
        double
    }

    /// Stops answering anything: its subjects have no subscribers, as when
    /// the server is gone. The store is kept for [`resume`](Self::resume).
    pub fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }

    /// Starts answering again with the store it had (a restart with a
    /// persistent store); returns once its subscriptions are in effect.
    pub async fn resume(&mut self) {
        self.stop();
        let s = &self.shared;
        let id = s.id.clone();
        self.tasks = vec![
            tokio::spawn(server::serve_connects(s.clone())),
            tokio::spawn(server::serve(
                s.clone(),
                format!("_STAN.pub.{id}.>"),
                server::publish,
            )),
            tokio::spawn(server::serve(
                s.clone(),
                format!("_STAN.sub.{id}"),
                server::subscribe,
            )),
            // Acks and the ends of subscriptions and clients on one NATS
            // subscription: handled in the order each client sent them, so
            // an ack sent before a close is never lost to it.
            tokio::spawn(server::serve(
                s.clone(),
                format!("_STAN.ctl.{id}.>"),
                server::control,
            )),
            tokio::spawn(server::serve(
                s.clone(),
                format!("_STAN.ping.{id}"),
                server::ping,
            )),
            tokio::spawn(server::pump(s.clone())),
            tokio::spawn(server::heartbeats(s.clone())),
        ];
        // Let the subscriptions reach the server before anyone connects.
        tokio::task::yield_now().await;
        let _ = crate::round_trip(&self.shared.nats).await;
        tokio::task::yield_now().await;
        let _ = crate::round_trip(&self.shared.nats).await;
    }

    /// Stops answering pings (while still doing everything else) or starts again.
    pub fn answer_pings(&self, answer: bool) {
        self.shared.answer_pings.store(answer, Ordering::SeqCst);
    }

    /// Sends each publish ack `delay` after storing its message (`None`:
    /// at once, the default), as a slow or stuck server would.
    pub fn delay_pub_acks(&self, delay: Option<Duration>) {
        *self
            .shared
            .pub_ack_delay
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = delay;
    }

    /// Forgets a client, as when another connection replaced it: its next
    /// ping is answered with an error.
    pub fn forget_client(&self, client_id: &str) {
        self.shared.state().remove_client(client_id);
    }

    /// The ids of the registered clients.
    pub fn clients(&self) -> Vec<String> {
        self.shared.state().clients.keys().cloned().collect()
    }

    /// Heartbeats `client_id`'s current registration answered.
    pub fn heartbeat_replies(&self, client_id: &str) -> u64 {
        self.shared
            .state()
            .clients
            .get(client_id)
            .map_or(0, |c| c.heartbeat_replies)
    }

    /// Connect requests received (accepted or not).
    pub fn connect_requests(&self) -> u64 {
        self.shared.connect_requests.load(Ordering::SeqCst)
    }

    /// Connect requests refused because the id's holder was alive.
    pub fn refused_duplicates(&self) -> u64 {
        self.shared.refused_duplicates.load(Ordering::SeqCst)
    }

    /// Pings of registered clients answered (without error).
    pub fn pings_answered(&self) -> u64 {
        self.shared.pings_answered.load(Ordering::SeqCst)
    }

    /// Close requests received.
    pub fn close_requests(&self) -> u64 {
        self.shared.close_requests.load(Ordering::SeqCst)
    }

    /// Acks received.
    pub fn acks(&self) -> u64 {
        self.shared.acks.load(Ordering::SeqCst)
    }

    /// Acks dropped because their subscription was gone (closed,
    /// unsubscribed, or its client replaced), as the real server drops them.
    pub fn dropped_acks(&self) -> u64 {
        self.shared.dropped_acks.load(Ordering::SeqCst)
    }

    /// Subscriptions ended (closed or unsubscribed) by naming their delivery
    /// inbox. The double accepts it; nats-streaming-server finds a
    /// subscription by its ack inbox only and refuses such a request.
    pub fn ends_by_delivery_inbox(&self) -> u64 {
        self.shared.ends_by_delivery_inbox.load(Ordering::SeqCst)
    }

    /// Messages of `channel` delivered and not acked, over every
    /// subscription (durables offline included).
    pub fn unacked(&self, channel: &str) -> usize {
        self.shared.state().unacked(channel)
    }

    /// Redeliveries sent on `channel` (after an ack wait, or to a durable
    /// or queue group back online).
    pub fn redeliveries(&self, channel: &str) -> u64 {
        self.shared
            .state()
            .redeliveries
            .get(channel)
            .copied()
            .unwrap_or_default()
    }

    /// The payloads stored on `channel`, in order.
    pub fn payloads(&self, channel: &str) -> Vec<Vec<u8>> {
        self.shared
            .state()
            .channels
            .get(channel)
            .map(|messages| messages.iter().map(|m| m.data.to_vec()).collect())
            .unwrap_or_default()
    }

    /// Messages stored on `channel`.
    pub fn stored(&self, channel: &str) -> usize {
        self.shared
            .state()
            .channels
            .get(channel)
            .map_or(0, Vec::len)
    }

    /// Whether the durable `durable` of `channel` exists (online or not).
    pub fn has_durable(&self, channel: &str, durable: &str) -> bool {
        self.shared.state().has_durable(channel, durable)
    }

    /// Active subscriptions on `channel`.
    pub fn active_subscriptions(&self, channel: &str) -> usize {
        self.shared.state().active_subscriptions(channel)
    }

    /// Every subscription request received so far.
    pub fn subscription_requests(
        &self,
    ) -> Vec<flowgate::transport::stan::proto::SubscriptionRequest> {
        self.shared.state().subscription_requests.clone()
    }
}

impl Drop for StanDouble {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real nats-server, a double over it, and a NATS Streaming client
/// registered as `client_id`: the setup of most NATS Streaming tests.
pub async fn start_with_client(
    client_id: &str,
) -> (crate::NatsServer, StanDouble, flowgate::NatsStreaming) {
    crate::init_tracing();
    let server = crate::NatsServer::start().await;
    let double = StanDouble::start(&server.url()).await;
    let stan =
        flowgate::NatsStreaming::connect(&server.url(), flowgate::StanOptions::new(client_id))
            .await
            .expect("registers with the double");
    (server, double, stan)
}
