//! The test API: `call`, the settlement log, typed publishing and reading
//! back, `wait_until`, all under paused time.

use std::time::Duration;

use flowgate::{App, Failure, Message, OutgoingMessage, Publisher, SubscriptionSpec, Transport};
use flowgate_testkit::{call, call_payload, InMemory, Outcome};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "api.orders")]
struct Order {
    id: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "api.shipped")]
struct Shipped {
    id: u64,
}

#[flowgate::subscriber(max_deliver = 2)]
async fn fail_odd(order: Order) -> Result<(), Failure> {
    if order.id % 2 == 1 {
        return Err(Failure::retry_after(
            Duration::from_secs(5),
            format!("order {} is odd", order.id),
        ));
    }
    Ok(())
}

#[flowgate::subscriber(channel = "api.refused")]
async fn refuse(order: Order) -> Result<(), Failure> {
    Err(Failure::permanent(format!("order {} refused", order.id)))
}

#[flowgate::subscriber(channel = "api.no-dlq", dead_letter = false)]
async fn refuse_without_dead_letters(order: Order) -> Result<(), Failure> {
    Err(Failure::permanent(format!("order {} refused", order.id)))
}

#[flowgate::subscriber(channel = "api.manual", ack = "manual")]
async fn term_by_hand(order: Message<Order>) -> Result<(), std::io::Error> {
    order.in_progress().await.map_err(std::io::Error::other)?;
    order.term().await.map_err(std::io::Error::other)
}

#[tokio::test(start_paused = true)]
async fn call_reports_each_settlement() {
    assert_eq!(
        call(fail_odd::subscriber(), &Order { id: 2 }).await,
        Outcome::Acked
    );
    assert_eq!(
        call(fail_odd::subscriber(), &Order { id: 1 }).await,
        Outcome::Nakked {
            delay: Some(Duration::from_secs(5))
        }
    );
    assert_eq!(
        call(refuse::subscriber(), &Order { id: 1 }).await,
        Outcome::DeadLettered,
        "dead-lettered, then terminated"
    );
    assert_eq!(
        call_payload(fail_odd::subscriber(), "{not json").await,
        Outcome::DeadLettered
    );
    assert_eq!(
        call(term_by_hand::subscriber(), &Order { id: 3 }).await,
        Outcome::Terminated,
        "in-progress is skipped: the final settlement counts, a term of the handler's own"
    );
    assert_eq!(
        call(refuse_without_dead_letters::subscriber(), &Order { id: 4 }).await,
        Outcome::Terminated,
        "dead letters are off: terminated, with no dead letter"
    );
}

#[flowgate::subscriber(channel = "api.shared", durable = "refusing")]
async fn refuse_shared(order: Order) -> Result<(), Failure> {
    Err(Failure::permanent(format!("order {} refused", order.id)))
}

#[flowgate::subscriber(channel = "api.shared", durable = "terming", ack = "manual")]
async fn term_shared(order: Message<Order>) -> Result<(), std::io::Error> {
    order.term().await.map_err(std::io::Error::other)
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_and_a_term_of_one_message_by_two_durables_are_told_apart() {
    let broker = InMemory::new();
    let app = App::new()
        .subscriber(refuse_shared::subscriber())
        .subscriber(term_shared::subscriber())
        .start(broker.clone())
        .await
        .expect("started");
    Publisher::new(broker.clone())
        .publish_with(
            &Order { id: 8 },
            flowgate::PublishOptions::new().channel("api.shared"),
        )
        .await
        .expect("published");
    broker
        .wait_until(|b| b.settlements("api.shared").terminated().len() == 2)
        .await;
    app.shutdown().await.expect("shut down");
    let log = broker.settlements("api.shared");
    assert_eq!(log.of_consumer(Some("refusing")).dead_lettered(), vec![1]);
    assert_eq!(
        log.of_consumer(Some("terming"))
            .iter()
            .map(|s| s.outcome)
            .collect::<Vec<_>>(),
        [Outcome::Terminated]
    );
}

#[tokio::test(start_paused = true)]
async fn a_thirty_second_ack_wait_passes_in_milliseconds() {
    let real = std::time::Instant::now();
    let virtual_start = tokio::time::Instant::now();
    let broker = InMemory::new();
    let mut spec = SubscriptionSpec::new("api.slow");
    spec.max_deliver = Some(2);
    let mut deliveries = broker.subscribe(&spec).await.expect("subscribed");
    broker
        .publish(OutgoingMessage::new("api.slow", "{}"))
        .await
        .expect("published")
        .await
        .expect("stored");
    let first = deliveries.next().await.expect("delivered");
    let second = deliveries
        .next()
        .await
        .expect("redelivered after the ack wait");
    assert_eq!(second.metadata.delivery_count(), 2);
    assert_eq!(virtual_start.elapsed(), Duration::from_secs(30));
    broker
        .wait_until(|b| !b.settlements("api.slow").exhausted().is_empty())
        .await;
    let log = broker.settlements("api.slow");
    assert_eq!(log.expired(), vec![1, 1]);
    let last = log.last().expect("a settlement");
    assert_eq!((last.delivery_count, last.outcome), (2, Outcome::Exhausted));
    assert_eq!(last.at - virtual_start, Duration::from_secs(60));
    assert!(
        real.elapsed() < Duration::from_secs(5),
        "paused time: took {:?}",
        real.elapsed()
    );
    drop((first, second));
}

#[tokio::test(start_paused = true)]
async fn the_log_keeps_every_consumer_and_the_published_events_read_back() {
    let broker = InMemory::new();
    let publisher = Publisher::new(broker.clone());
    let ship = move |order: Order| {
        let publisher = publisher.clone();
        async move {
            publisher
                .publish(&Shipped { id: order.id })
                .await
                .map(|_| ())
        }
    };
    let app = App::new()
        .subscriber(fail_odd::subscriber())
        .subscriber(flowgate::Subscriber::new("api.orders", ship))
        .start(broker.clone())
        .await
        .expect("app starts");
    for id in 1..=4 {
        broker
            .publish_event(&Order { id })
            .await
            .expect("published");
    }

    broker.wait_idle().await;
    app.shutdown().await.expect("clean shutdown");
    // Both consumers were ephemeral and have ended; their settlements stay.
    assert!(broker.consumers("api.orders").is_empty());
    let log = broker.settlements("api.orders");
    let mut acked = log.acked();
    acked.sort_unstable();
    assert_eq!(
        acked,
        vec![1, 2, 2, 3, 4, 4],
        "odd ids acked once, even twice"
    );
    assert_eq!(
        log.nakked(),
        vec![1, 3],
        "one nak: the second failure spends the budget"
    );
    assert_eq!(
        log.terminated(),
        vec![1, 3],
        "dead-lettered by the runtime, then terminated"
    );
    assert_eq!(log.of(3).iter().map(|s| s.delivery_count).max(), Some(2));
    assert_eq!(broker.channel_messages("dlq.api.orders").len(), 2);
    let mut shipped = broker.published::<Shipped>().expect("decodes");
    shipped.sort_by_key(|s| s.id);
    assert_eq!(
        shipped,
        (1..=4).map(|id| Shipped { id }).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn wait_until_sees_a_condition_without_polling() {
    let broker = InMemory::new();
    let app = App::new()
        .subscriber(fail_odd::subscriber())
        .start(broker.clone())
        .await
        .expect("app starts");
    broker
        .publish_event(&Order { id: 1 })
        .await
        .expect("published");
    let started = tokio::time::Instant::now();
    broker
        .wait_until(|b| b.settlements("api.orders").terminated().len() == 1)
        .await;
    // Nak'd at once, redelivered after its 5 s delay, then dead-lettered.
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    app.shutdown().await.expect("clean shutdown");
}
