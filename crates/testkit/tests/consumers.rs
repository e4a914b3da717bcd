//! Consumers the broker keeps: durable resume across app restarts, queue
//! groups sharing work, refused re-binds, ephemeral consumers.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{publish_orders, settle, within, Handled, Log, Order, CHANNEL};
use flowgate::{App, Message, StartPosition, Subscriber, SubscriptionSpec, Transport};
use flowgate_testkit::InMemory;
use futures::StreamExt;
use tokio::sync::Notify;

/// A subscriber that logs the stream sequence of each message it handles.
fn logging(log: &Log<u64>) -> Subscriber {
    let log = log.clone();
    let handler = move |order: Message<Order>| {
        let log = log.clone();
        async move {
            log.push(order.stream_sequence());
            Handled::Ok(())
        }
    };
    Subscriber::new(CHANNEL, handler)
}

#[tokio::test(start_paused = true)]
async fn a_durable_resumes_after_the_app_restarts() {
    let broker = InMemory::new();
    publish_orders(&broker, 1..=5).await;

    let first_run = Log::new();
    let app = App::new()
        .subscriber(
            logging(&first_run)
                .durable("billing")
                .start(StartPosition::All),
        )
        .start(broker.clone())
        .await
        .expect("app starts");
    settle(&broker).await;
    app.shutdown().await.expect("clean shutdown");
    assert_eq!(first_run.items().len(), 5);

    // Published while no app runs.
    publish_orders(&broker, 6..=8).await;
    let stopped = broker.consumer_info(CHANNEL, "billing").expect("kept");
    assert_eq!(stopped.live_subscriptions, 0);
    assert_eq!(stopped.ack_floor, 5);

    let second_run = Log::new();
    let app = App::new()
        .subscriber(
            logging(&second_run)
                .durable("billing")
                .start(StartPosition::All),
        )
        .start(broker.clone())
        .await
        .expect("app restarts");
    settle(&broker).await;
    let mut seen = second_run.items();
    seen.sort_unstable();
    assert_eq!(seen, vec![6, 7, 8], "acked messages are not seen again");
    let billing = broker.consumer_info(CHANNEL, "billing").expect("kept");
    assert_eq!(billing.acked, (1..=8).collect::<Vec<_>>());
    assert!(billing.delivery_counts.values().all(|&count| count == 1));
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_message_unsettled_at_shutdown_is_redelivered_after_restart() {
    let broker = InMemory::new();
    publish_orders(&broker, [1]).await;
    // The first app's handler says it started, then never finishes.
    let started = Arc::new(Notify::new());
    let signal = started.clone();
    let stuck = move |_: Order| {
        signal.notify_one();
        std::future::pending::<Handled>()
    };
    let app = App::new()
        .subscriber(
            Subscriber::new(CHANNEL, stuck)
                .durable("billing")
                .start(StartPosition::All)
                .ack_wait(Duration::from_secs(10)),
        )
        .shutdown_timeout(Duration::from_secs(1))
        .start(broker.clone())
        .await
        .expect("app starts");
    within(started.notified()).await;
    let pending = broker
        .consumer_info(CHANNEL, "billing")
        .expect("durable")
        .pending;
    assert_eq!(pending, vec![1]);
    let stopped = app.shutdown().await;
    assert!(
        matches!(
            stopped,
            Err(flowgate::Error::ShutdownTimeout { remaining: 1, .. })
        ),
        "{stopped:?}"
    );

    let redelivered = Log::new();
    let log = redelivered.clone();
    let handler = move |order: Message<Order>| {
        let log = log.clone();
        async move {
            log.push((order.stream_sequence(), order.delivery_count()));
            Handled::Ok(())
        }
    };
    let app = App::new()
        .subscriber(
            Subscriber::new(CHANNEL, handler)
                .durable("billing")
                .start(StartPosition::All)
                .ack_wait(Duration::from_secs(10)),
        )
        .start(broker.clone())
        .await
        .expect("app restarts");
    settle(&broker).await;
    assert_eq!(
        redelivered.items(),
        vec![(1, 2)],
        "redelivered after the ack wait"
    );
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn two_apps_on_one_queue_share_the_work_without_duplicates() {
    let broker = InMemory::new();
    let (first, second) = (Log::new(), Log::new());
    let slow = |log: &Log<u64>| {
        let log = log.clone();
        let handler = move |order: Message<Order>| {
            let log = log.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                log.push(order.stream_sequence());
                Handled::Ok(())
            }
        };
        Subscriber::new(CHANNEL, handler)
            .queue("workers")
            .max_in_flight(4)
    };
    let app_one = App::new()
        .subscriber(slow(&first))
        .start(broker.clone())
        .await
        .expect("first app starts");
    let app_two = App::new()
        .subscriber(slow(&second))
        .start(broker.clone())
        .await
        .expect("second app starts");
    publish_orders(&broker, 1..=40).await;

    settle(&broker).await;
    let (first, second) = (first.items(), second.items());
    assert!(
        !first.is_empty() && !second.is_empty(),
        "{first:?} / {second:?}"
    );
    let all: Vec<u64> = first.iter().chain(&second).copied().collect();
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len(), 40, "no message handled twice");
    assert_eq!(unique, (1..=40).collect());
    let workers = broker
        .consumer_info(CHANNEL, "workers")
        .expect("queue consumer");
    assert_eq!(workers.live_subscriptions, 2);
    assert_eq!(workers.ack_floor, 40);
    app_one.shutdown().await.expect("clean shutdown");
    app_two.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_durable_with_other_settings_is_refused() {
    let broker = InMemory::new();
    let spec = SubscriptionSpec::new(CHANNEL).with_durable("billing");
    let _bound = broker.subscribe(&spec).await.expect("created");

    let mut changed = spec.clone();
    changed.max_in_flight = 8;
    match broker.subscribe(&changed).await {
        Err(flowgate::Error::ConsumerMismatch {
            stream,
            durable,
            field,
            ..
        }) => {
            assert_eq!(stream, "orders_placed");
            assert_eq!(durable, "billing");
            assert_eq!(field, "max_ack_pending (max_in_flight)");
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    let mut moved = spec.clone();
    moved.start = StartPosition::All;
    assert!(matches!(
        broker.subscribe(&moved).await,
        Err(flowgate::Error::ConsumerMismatch {
            field: "deliver policy (start)",
            ..
        })
    ));
    // The same settings bind again.
    let _again = broker.subscribe(&spec).await.expect("bound again");
    let billing = broker.consumer_info(CHANNEL, "billing").expect("durable");
    assert_eq!(billing.live_subscriptions, 2);
}

#[tokio::test(start_paused = true)]
async fn an_ephemeral_consumer_ends_with_its_subscription() {
    let broker = InMemory::new();
    let mut deliveries = broker
        .subscribe(&SubscriptionSpec::new(CHANNEL))
        .await
        .expect("subscribed");
    publish_orders(&broker, [1]).await;
    let first = within(deliveries.next()).await.expect("delivery");
    assert_eq!(first.metadata.stream_sequence(), 1);
    assert_eq!(broker.consumers(CHANNEL).len(), 1);
    drop(deliveries);
    assert!(broker.consumers(CHANNEL).is_empty());
    // Settling after the consumer is gone is harmless.
    flowgate::Acker::ack(&first.acker).await.expect("ignored");

    publish_orders(&broker, [2]).await;
    let mut fresh = broker
        .subscribe(&SubscriptionSpec::new(CHANNEL))
        .await
        .expect("subscribed");
    publish_orders(&broker, [3]).await;
    let next = within(fresh.next()).await.expect("delivery");
    assert_eq!(
        next.metadata.stream_sequence(),
        3,
        "a new ephemeral starts at new messages"
    );
}
