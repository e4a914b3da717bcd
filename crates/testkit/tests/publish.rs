//! Publishing: receipts, de-duplication by message id, channel names, and
//! where new consumers start reading.

mod common;

use std::time::Duration;

use common::{order, publish_orders, settle, within, Handled, Log, Order, CHANNEL};
use flowgate::{
    App, Message, OutgoingMessage, PublishOptions, Publisher, StartPosition, Subscriber,
    SubscriptionSpec, Transport,
};
use flowgate_testkit::{InMemory, MESSAGE_ID_HEADER};
use futures::StreamExt;

#[tokio::test(start_paused = true)]
async fn a_message_id_is_stored_and_delivered_once() {
    let broker = InMemory::new();
    let publisher = Publisher::new(broker.clone());
    let first = publisher
        .publish_with(
            &Order { id: 1 },
            PublishOptions::new().message_id("order-1"),
        )
        .await
        .expect("stored");
    let other = publisher.publish(&Order { id: 2 }).await.expect("stored");
    let again = publisher
        .publish_with(
            &Order { id: 1 },
            PublishOptions::new().message_id("order-1"),
        )
        .await
        .expect("acknowledged");

    assert_eq!(
        (first.stream.as_str(), first.sequence, first.duplicate),
        ("orders_placed", 1, false)
    );
    assert_eq!((other.sequence, other.duplicate), (2, false));
    assert_eq!(
        (again.sequence, again.duplicate),
        (1, true),
        "the original's sequence"
    );
    let stored = broker.channel_messages(CHANNEL);
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].message_id.as_deref(), Some("order-1"));

    let seen = Log::new();
    let log = seen.clone();
    let handler = move |order: Message<Order>| {
        let log = log.clone();
        async move {
            let id = order
                .metadata()
                .headers()
                .and_then(|h| h.get(MESSAGE_ID_HEADER))
                .map(|v| v.as_str().to_owned());
            log.push((order.id, id));
            Handled::Ok(())
        }
    };
    let app = App::new()
        .subscriber(
            Subscriber::new(CHANNEL, handler)
                .durable("audit")
                .start(StartPosition::All),
        )
        .start(broker.clone())
        .await
        .expect("app starts");
    settle(&broker).await;
    let mut seen = seen.items();
    seen.sort();
    assert_eq!(seen, vec![(1, Some("order-1".to_owned())), (2, None)]);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn an_invalid_channel_is_refused() {
    let broker = InMemory::new();
    let refused = broker.publish(OutgoingMessage::new("orders.*", "{}")).await;
    assert!(
        matches!(refused, Err(flowgate::PublishError::Name(_))),
        "{refused:?}"
    );
    let refused = broker
        .subscribe(&SubscriptionSpec::new("orders..placed"))
        .await;
    assert!(matches!(refused, Err(flowgate::Error::Name(_))));
    assert!(broker.channel_messages("orders.*").is_empty());
}

/// The sequence of the first message a new consumer starting at `start` gets.
async fn first_sequence(broker: &InMemory, start: StartPosition) -> u64 {
    let mut spec = SubscriptionSpec::new(CHANNEL);
    spec.start = start;
    let mut deliveries = broker.subscribe(&spec).await.expect("subscribed");
    let delivery = within(deliveries.next()).await.expect("a delivery");
    delivery.metadata.stream_sequence()
}

#[tokio::test(start_paused = true)]
async fn start_positions() {
    let broker = InMemory::new();
    publish_orders(&broker, 1..=5).await;
    let third_stored = broker.channel_messages(CHANNEL)[2].timestamp;

    assert_eq!(first_sequence(&broker, StartPosition::All).await, 1);
    assert_eq!(first_sequence(&broker, StartPosition::Last).await, 5);
    assert_eq!(first_sequence(&broker, StartPosition::Sequence(4)).await, 4);
    assert_eq!(
        first_sequence(&broker, StartPosition::Time(third_stored)).await,
        3
    );

    // `New` skips what is stored: nothing arrives until the next publish.
    let mut spec = SubscriptionSpec::new(CHANNEL);
    spec.start = StartPosition::New;
    let mut deliveries = broker.subscribe(&spec).await.expect("subscribed");
    let early = tokio::time::timeout(Duration::from_secs(10), deliveries.next()).await;
    assert!(early.is_err(), "a stored message reached a `New` consumer");
    broker
        .publish(order(6))
        .await
        .expect("published")
        .await
        .expect("stored");
    let delivery = within(deliveries.next()).await.expect("a delivery");
    assert_eq!(delivery.metadata.stream_sequence(), 6);
    let timestamp = broker.channel_messages(CHANNEL)[5].timestamp;
    assert_eq!(delivery.metadata.timestamp(), timestamp);
    assert_eq!(delivery.metadata.subject(), CHANNEL);

    // A sequence beyond the end waits for it.
    let mut spec = SubscriptionSpec::new(CHANNEL);
    spec.start = StartPosition::Sequence(8);
    let mut deliveries = broker.subscribe(&spec).await.expect("subscribed");
    publish_orders(&broker, [7, 8]).await;
    let delivery = within(deliveries.next()).await.expect("a delivery");
    assert_eq!(delivery.metadata.stream_sequence(), 8);
}
