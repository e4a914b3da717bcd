//! Migrating from NATS Streaming to JetStream: one handler fn, registered with
//! `<fn>::subscriber()` in two Apps at once, one on NATS Streaming (the
//! protocol double over a real nats-server) and one on JetStream (the same
//! nats-server). Every event is handled exactly once, by the transport it was
//! published on; the legacy durable drains and is then retired.
//!
//! Which transport delivered a message is told to the handler by a tower
//! layer each App's subscriber carries: it runs the handler inside a
//! task-local scope naming its transport and the log to record into.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use flowgate::transport::stan::SubscriptionEnd;
use flowgate::{App, BoxError, NatsStreaming, Publisher, Request, StanOptions, Transport};
use flowgate_tests::stan_double::StanDouble;
use flowgate_tests::{consumer_state, eventually, init_tracing, stream_messages, NatsServer};
use serde::{Deserialize, Serialize};

const DEADLINE: Duration = Duration::from_secs(20);
const CHANNEL: &str = "migration.orders";
const DURABLE: &str = "billing";

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "migration.orders")]
struct OrderPlaced {
    id: u64,
    total_cents: i64,
}

/// The transport a delivery came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    NatsStreaming,
    JetStream,
}

/// What each handler call saw: `(transport, order id)`, in order.
#[derive(Debug, Clone, Default)]
struct Log(Arc<Mutex<Vec<(Side, u64)>>>);

impl Log {
    fn entries(&self) -> Vec<(Side, u64)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The ids each transport handled, sorted, duplicates kept.
    fn by_side(&self) -> BTreeMap<Side, Vec<u64>> {
        let mut sides: BTreeMap<Side, Vec<u64>> = BTreeMap::new();
        for (side, id) in self.entries() {
            sides.entry(side).or_default().push(id);
        }
        for ids in sides.values_mut() {
            ids.sort_unstable();
        }
        sides
    }
}

#[derive(Debug, Clone)]
struct Origin {
    side: Side,
    log: Log,
}

tokio::task_local! {
    static ORIGIN: Origin;
}

#[derive(Debug, thiserror::Error)]
#[error("order {0} reached the handler outside a tagged subscriber")]
struct Untagged(u64);

/// The one handler both Apps run.
#[flowgate::subscriber(durable = "billing", max_in_flight = 16, timeout = "5s")]
async fn bill(order: OrderPlaced) -> Result<(), Untagged> {
    ORIGIN
        .try_with(|origin| {
            origin
                .log
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((origin.side, order.id));
        })
        .map_err(|_| Untagged(order.id))
}

/// Runs a subscriber's stack inside the task-local scope of `Origin`.
#[derive(Clone)]
struct Tag(Origin);

impl<S> tower::Layer<S> for Tag {
    type Service = Tagged<S>;

    fn layer(&self, inner: S) -> Tagged<S> {
        Tagged {
            inner,
            origin: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Tagged<S> {
    inner: S,
    origin: Origin,
}

impl<S> tower::Service<Request> for Tagged<S>
where
    S: tower::Service<Request, Response = (), Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        Box::pin(ORIGIN.scope(self.origin.clone(), self.inner.call(request)))
    }
}

/// An App running `bill` on `transport`, tagged as `side`.
async fn start_billing<T: Transport>(transport: T, side: Side, log: &Log) -> flowgate::RunningApp {
    App::new()
        .subscriber(bill::subscriber().layer(Tag(Origin {
            side,
            log: log.clone(),
        })))
        .start(transport)
        .await
        .unwrap_or_else(|e| panic!("the {side:?} app starts: {e}"))
}

async fn publish<T: Transport>(transport: &T, ids: impl IntoIterator<Item = u64>) {
    let publisher = Publisher::new(transport.clone());
    for id in ids {
        publisher
            .publish(&OrderPlaced {
                id,
                total_cents: 100 * i64::try_from(id).unwrap_or(1),
            })
            .await
            .unwrap_or_else(|e| panic!("order {id} published and acked: {e}"));
    }
}

struct Servers {
    server: NatsServer,
    double: StanDouble,
    stan: NatsStreaming,
    jetstream: flowgate::JetStream,
}

async fn servers(client_id: &str) -> Servers {
    init_tracing();
    let server = NatsServer::start().await;
    let double = StanDouble::start(&server.url()).await;
    let stan = NatsStreaming::connect(&server.url(), StanOptions::new(client_id))
        .await
        .expect("registers with the streaming double");
    let jetstream = server.jetstream().await;
    Servers {
        server,
        double,
        stan,
        jetstream,
    }
}

/// Waits until JetStream's `billing` consumer has acked `count` messages.
async fn jetstream_acked(jetstream: &flowgate::JetStream, count: u64) -> bool {
    eventually(DEADLINE, || async {
        consumer_state(jetstream, CHANNEL, DURABLE)
            .await
            .is_some_and(|state| state.ack_floor == count && state.num_ack_pending == 0)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_handler_consumes_both_transports_side_by_side_exactly_once() {
    const N: u64 = 25;
    let Servers {
        server: _server,
        double,
        stan,
        jetstream,
    } = servers("migration-side-by-side").await;
    let log = Log::default();
    let legacy = start_billing(stan.clone(), Side::NatsStreaming, &log).await;
    let modern = start_billing(jetstream.clone(), Side::JetStream, &log).await;

    let stan_ids: Vec<u64> = (1..=N).collect();
    let jetstream_ids: Vec<u64> = (1001..=1000 + N).collect();
    // Both sides publish at the same time, as during a migration.
    tokio::join!(
        publish(&stan, stan_ids.clone()),
        publish(&jetstream, jetstream_ids.clone()),
    );

    let all = eventually(DEADLINE, || async { log.len() as u64 >= 2 * N }).await;
    assert!(
        all,
        "handled {} of {}: {:?}",
        log.len(),
        2 * N,
        log.by_side()
    );
    let stan_acked = eventually(DEADLINE, || async { double.acks() >= N }).await;
    assert!(
        stan_acked,
        "the streaming server saw {} acks",
        double.acks()
    );
    assert!(
        jetstream_acked(&jetstream, N).await,
        "JetStream consumer: {:?}",
        consumer_state(&jetstream, CHANNEL, DURABLE).await
    );

    legacy
        .shutdown()
        .await
        .expect("the NATS Streaming app drains");
    modern.shutdown().await.expect("the JetStream app drains");

    // Every event once, by the transport it was published on.
    let expected = BTreeMap::from([
        (Side::NatsStreaming, stan_ids),
        (Side::JetStream, jetstream_ids),
    ]);
    assert_eq!(log.by_side(), expected, "no loss, no duplicates, no mix-up");
    // The brokers agree: nothing redelivered, nothing left pending.
    assert_eq!(double.acks(), N, "one ack per NATS Streaming message");
    assert_eq!(double.stored(CHANNEL), N as usize);
    assert_eq!(stream_messages(&jetstream, CHANNEL).await, Some(N));
    let state = consumer_state(&jetstream, CHANNEL, DURABLE)
        .await
        .expect("the JetStream durable exists");
    assert_eq!(state.delivered_consumer_sequence, N, "no redelivery");
    assert_eq!(state.num_redelivered, 0);

    // A clean goodbye on the legacy side: the durable stays for the next run.
    stan.close()
        .await
        .expect("closes the NATS Streaming client");
    assert_eq!(double.close_requests(), 1);
    assert!(double.clients().is_empty(), "{:?}", double.clients());
    assert!(double.has_durable(CHANNEL, DURABLE));
    assert_eq!(double.active_subscriptions(CHANNEL), 0);
}

/// The step-by-step migration: both sides run; publishers switch to JetStream
/// while the legacy subscriber is down; it comes back, drains what was left
/// on NATS Streaming, and is retired by unsubscribing its durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_switch_then_the_legacy_durable_drains_and_is_retired() {
    let Servers {
        server,
        double,
        stan,
        jetstream,
    } = servers("migration-steps").await;
    let log = Log::default();

    // 1. Side by side.
    let legacy = start_billing(stan.clone(), Side::NatsStreaming, &log).await;
    let modern = start_billing(jetstream.clone(), Side::JetStream, &log).await;
    publish(&stan, 1..=5).await;
    publish(&jetstream, 101..=105).await;
    let both = eventually(DEADLINE, || async { log.len() >= 10 }).await;
    assert!(both, "handled {:?}", log.by_side());
    assert!(eventually(DEADLINE, || async { double.acks() >= 5 }).await);

    // 2. The legacy subscriber stops (its durable is kept) while the last
    //    legacy publishes land; publishers then switch to JetStream.
    legacy
        .shutdown()
        .await
        .expect("the NATS Streaming app drains");
    let offline = eventually(DEADLINE, || async {
        double.active_subscriptions(CHANNEL) == 0
    })
    .await;
    assert!(offline, "the legacy subscription was not closed");
    assert!(double.has_durable(CHANNEL, DURABLE));
    publish(&stan, 6..=8).await;
    publish(&jetstream, 106..=110).await;
    let switched = eventually(DEADLINE, || async { log.len() >= 15 }).await;
    assert!(switched, "handled {:?}", log.by_side());
    stan.close().await.expect("closes the first legacy client");

    // 3. Drain: a last legacy subscriber resumes the durable where it was and
    //    unsubscribes it when it ends. A NATS Streaming durable belongs to its
    //    client id: the drainer registers with the same one.
    let drainer = NatsStreaming::connect(
        &server.url(),
        StanOptions::new("migration-steps").on_subscription_end(SubscriptionEnd::Unsubscribe),
    )
    .await
    .expect("the draining client registers");
    let draining = start_billing(drainer.clone(), Side::NatsStreaming, &log).await;
    let drained = eventually(DEADLINE, || async { double.acks() >= 8 }).await;
    assert!(drained, "the durable drained {} of 8", double.acks());

    // 4. Retire NATS Streaming: the durable is deleted on the server.
    draining.shutdown().await.expect("the draining app drains");
    let retired = eventually(DEADLINE, || async { !double.has_durable(CHANNEL, DURABLE) }).await;
    assert!(retired, "the legacy durable still exists");
    drainer.close().await.expect("closes the draining client");

    assert!(
        jetstream_acked(&jetstream, 10).await,
        "JetStream consumer: {:?}",
        consumer_state(&jetstream, CHANNEL, DURABLE).await
    );
    modern.shutdown().await.expect("the JetStream app drains");

    let expected = BTreeMap::from([
        (Side::NatsStreaming, (1..=8).collect::<Vec<u64>>()),
        (Side::JetStream, (101..=110).collect()),
    ]);
    assert_eq!(log.by_side(), expected, "no loss, no duplicates, no mix-up");
    assert_eq!(double.acks(), 8, "one ack per NATS Streaming message");
    assert!(double.clients().is_empty(), "{:?}", double.clients());
}
