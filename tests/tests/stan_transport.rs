//! The NATS Streaming transport end to end, against the protocol double over
//! a real nats-server: publish and consume through an App, durable resume,
//! ack-wait redelivery, queue groups, start positions.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use flowgate::transport::stan::StanSubscription;
use flowgate::{
    Acker, App, NatsStreaming, OutgoingMessage, Publisher, StanOptions, StartPosition, Subscriber,
    SubscriptionSpec, Transport,
};
use flowgate_tests::stan_double::StanDouble;
use flowgate_tests::{eventually, NatsServer};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

const DEADLINE: Duration = Duration::from_secs(15);

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "stan.orders")]
struct Order {
    id: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

use flowgate_tests::lock;

async fn setup(client_id: &str) -> (NatsServer, StanDouble, NatsStreaming) {
    flowgate_tests::stan_double::start_with_client(client_id).await
}

type Seen = Arc<Mutex<Vec<u64>>>;
type Handled = futures::future::Ready<Result<(), Never>>;

/// A handler that records the ids it handled, and what it records.
fn recorder() -> (
    Seen,
    impl Fn(Order) -> Handled + Clone + Send + Sync + 'static,
) {
    let seen: Seen = Arc::default();
    let handler = {
        let seen = seen.clone();
        move |order: Order| {
            lock(&seen).push(order.id);
            futures::future::ready(Ok(()))
        }
    };
    (seen, handler)
}

async fn publish_raw(stan: &NatsStreaming, channel: &str, ids: std::ops::RangeInclusive<u64>) {
    for id in ids {
        let pending = stan
            .publish(OutgoingMessage::new(channel, id.to_string()))
            .await
            .expect("sent");
        pending.await.expect("acked by the double");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_consume_through_an_app() {
    const N: u64 = 50;
    let (_server, double, stan) = setup("e2e-app").await;
    let (seen, handler) = recorder();
    let app = App::new()
        .subscriber(Subscriber::new("stan.orders", handler).max_in_flight(8))
        .start(stan.clone())
        .await
        .expect("app starts");
    let publisher = Publisher::new(stan.clone());
    for id in 1..=N {
        publisher
            .publish(&Order { id })
            .await
            .expect("published and acked");
    }
    let all = eventually(DEADLINE, || async { lock(&seen).len() as u64 >= N }).await;
    assert!(all, "handled {} of {N}", lock(&seen).len());
    let acked = eventually(DEADLINE, || async { double.acks() >= N }).await;
    assert!(acked, "the double saw {} acks", double.acks());
    let ids: BTreeSet<u64> = lock(&seen).iter().copied().collect();
    assert_eq!(ids, (1..=N).collect(), "every message once");
    assert_eq!(double.stored("stan.orders"), N as usize);
    app.shutdown().await.expect("drains");
    stan.close().await.expect("closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_resumes_where_it_was() {
    let (_server, double, stan) = setup("e2e-durable").await;
    let publisher = Publisher::new(stan.clone());
    let (seen, handler) = recorder();
    let app = App::new()
        .subscriber(Subscriber::new("stan.orders", handler.clone()).durable("billing"))
        .start(stan.clone())
        .await
        .expect("app starts");
    for id in 1..=5 {
        publisher.publish(&Order { id }).await.expect("published");
    }
    assert!(eventually(DEADLINE, || async { lock(&seen).len() == 5 }).await);
    assert!(eventually(DEADLINE, || async { double.acks() >= 5 }).await);
    app.shutdown().await.expect("drains");
    // The dropped subscription closes on the server: the durable stays, offline.
    let offline = eventually(DEADLINE, || async {
        double.active_subscriptions("stan.orders") == 0
    })
    .await;
    assert!(offline, "the subscription was not closed");
    assert!(double.has_durable("stan.orders", "billing"));
    for id in 6..=10 {
        publisher.publish(&Order { id }).await.expect("published");
    }
    let app = App::new()
        .subscriber(Subscriber::new("stan.orders", handler).durable("billing"))
        .start(stan.clone())
        .await
        .expect("app starts again");
    assert!(eventually(DEADLINE, || async { lock(&seen).len() >= 10 }).await);
    assert_eq!(
        *lock(&seen),
        (1..=10).collect::<Vec<_>>(),
        "resumed at 6, nothing twice"
    );
    app.shutdown().await.expect("drains");
}

async fn next(
    sub: &mut StanSubscription,
) -> flowgate::Delivery<flowgate::transport::stan::StanAcker> {
    tokio::time::timeout(DEADLINE, sub.next())
        .await
        .expect("a delivery in time")
        .expect("the subscription is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacked_message_comes_back_after_the_ack_wait() {
    let (_server, _double, stan) = setup("e2e-redeliver").await;
    let mut spec = SubscriptionSpec::new("stan.redeliver");
    spec.ack_wait = Duration::from_secs(1);
    let mut sub = stan.subscribe_spec(&spec).await.expect("subscribed");
    publish_raw(&stan, "stan.redeliver", 1..=1).await;
    let first = next(&mut sub).await;
    assert_eq!(first.metadata.delivery_count(), 1);
    assert!(!first.metadata.redelivered());
    first
        .acker
        .nak(Some(Duration::from_millis(1)))
        .await
        .expect("nak is accepted");
    let again = next(&mut sub).await;
    assert_eq!(
        again.metadata.stream_sequence(),
        first.metadata.stream_sequence()
    );
    assert_eq!(
        again.metadata.delivery_count(),
        2,
        "redelivery count from the server"
    );
    assert!(again.metadata.redelivered());
    assert!(again.metadata.timestamp() > SystemTime::UNIX_EPOCH);
    assert!(
        again.metadata.headers().is_none(),
        "NATS Streaming has no headers"
    );
    again.acker.ack().await.expect("acked");
    let quiet = tokio::time::timeout(Duration::from_millis(1500), sub.next()).await;
    assert!(quiet.is_err(), "an acked message came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_past_max_deliver_reaches_the_stream_for_the_runtime_to_dead_letter() {
    let (_server, double, stan) = setup("e2e-maxdeliver").await;
    let mut spec = SubscriptionSpec::new("stan.maxdeliver");
    spec.ack_wait = Duration::from_secs(1);
    spec.max_deliver = Some(2);
    let mut sub = stan.subscribe_spec(&spec).await.expect("subscribed");
    publish_raw(&stan, "stan.maxdeliver", 1..=1).await;
    for count in 1..=3 {
        let delivery = next(&mut sub).await;
        assert_eq!(delivery.metadata.delivery_count(), count);
        delivery.acker.nak(None).await.expect("nak is accepted");
    }
    // The client never acks on its own: the runtime dead-letters first.
    assert_eq!(double.acks(), 0, "the client acked a message by itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_group_splits_the_work_without_duplicates() {
    const N: u64 = 40;
    let (server, _double, stan) = setup("e2e-queue-a").await;
    let other = NatsStreaming::connect(&server.url(), StanOptions::new("e2e-queue-b"))
        .await
        .expect("second client");
    let (seen_a, handler_a) = recorder();
    let (seen_b, handler_b) = recorder();
    let app_a = App::new()
        .subscriber(
            Subscriber::new("stan.orders", handler_a)
                .queue("workers")
                .max_in_flight(2),
        )
        .start(stan.clone())
        .await
        .expect("a starts");
    let app_b = App::new()
        .subscriber(
            Subscriber::new("stan.orders", handler_b)
                .queue("workers")
                .max_in_flight(2),
        )
        .start(other.clone())
        .await
        .expect("b starts");
    let publisher = Publisher::new(stan.clone());
    for id in 1..=N {
        publisher.publish(&Order { id }).await.expect("published");
    }
    let done = eventually(DEADLINE, || async {
        (lock(&seen_a).len() + lock(&seen_b).len()) as u64 >= N
    })
    .await;
    assert!(
        done,
        "handled {} + {}",
        lock(&seen_a).len(),
        lock(&seen_b).len()
    );
    let a: Vec<u64> = lock(&seen_a).clone();
    let b: Vec<u64> = lock(&seen_b).clone();
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both members work: {a:?} / {b:?}"
    );
    let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=N).collect::<Vec<_>>(),
        "no duplicates, none missing"
    );
    app_a.shutdown().await.expect("a drains");
    app_b.shutdown().await.expect("b drains");
}

async fn first_sequence(stan: &NatsStreaming, start: StartPosition) -> u64 {
    let mut spec = SubscriptionSpec::new("stan.start");
    spec.start = start;
    let mut sub = stan.subscribe_spec(&spec).await.expect("subscribed");
    let delivery = next(&mut sub).await;
    delivery.acker.ack().await.expect("acked");
    sub.unsubscribe().await;
    delivery.metadata.stream_sequence()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_positions_pick_the_first_message() {
    let (_server, double, stan) = setup("e2e-start").await;
    publish_raw(&stan, "stan.start", 1..=5).await;
    assert_eq!(first_sequence(&stan, StartPosition::All).await, 1);
    assert_eq!(first_sequence(&stan, StartPosition::Last).await, 5);
    assert_eq!(first_sequence(&stan, StartPosition::Sequence(3)).await, 3);
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    assert_eq!(
        first_sequence(&stan, StartPosition::Time(an_hour_ago)).await,
        1
    );
    let requests = double.subscription_requests();
    assert!(requests
        .iter()
        .any(|r| r.start_time_delta >= 3_600_000_000_000));

    let mut spec = SubscriptionSpec::new("stan.start");
    spec.start = StartPosition::New;
    let mut sub = stan.subscribe_spec(&spec).await.expect("subscribed");
    publish_raw(&stan, "stan.start", 6..=6).await;
    assert_eq!(
        next(&mut sub).await.metadata.stream_sequence(),
        6,
        "new only"
    );
}
