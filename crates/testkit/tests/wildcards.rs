//! Wildcard channels on the in-memory broker: one stream holds the whole
//! pattern, its consumers filter on their own subject, sequences are the
//! stream's, and events of a wildcard type are published with `publish_to`.

mod common;

use common::{failure, settle, Handled, Log};
use flowgate::{App, Message, PublishError, Publisher, StartPosition, Subscriber, Transport};
use flowgate_testkit::InMemory;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "orders.*")]
struct OrderEvent {
    id: u64,
}

/// Records the concrete subject and stream sequence of every run.
fn recording(
    seen: &Log<(String, u64, u64)>,
) -> impl Fn(Message<OrderEvent>) -> std::future::Ready<Handled> + Clone {
    let seen = seen.clone();
    move |message: Message<OrderEvent>| {
        seen.push((
            message.subject().to_owned(),
            message.stream_sequence(),
            message.payload().id,
        ));
        std::future::ready(Ok(()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_wildcard_subscriber_reads_every_matching_subject_from_one_stream() {
    let broker = InMemory::new();
    let seen = Log::new();
    let app = App::new()
        .subscriber(
            Subscriber::new("orders.*", recording(&seen))
                .durable("audit")
                .start(StartPosition::All),
        )
        .start(broker.clone())
        .await
        .expect("app starts");
    let publisher = Publisher::new(broker.clone());
    publisher
        .publish_to("orders.placed", &OrderEvent { id: 1 })
        .await
        .expect("stored");
    let paid = publisher
        .publish_to("orders.paid", &OrderEvent { id: 2 })
        .await
        .expect("stored");
    assert_eq!((paid.stream.as_str(), paid.sequence), ("orders_any", 2));
    // Not matched by `orders.*`: another stream, and one token too many.
    publish_order_on(&broker, "shipments.sent", 3).await;
    settle(&broker).await;

    let mut runs = seen.items();
    runs.sort();
    assert_eq!(
        runs,
        vec![
            ("orders.paid".to_owned(), 2, 2),
            ("orders.placed".to_owned(), 1, 1)
        ]
    );
    let audit = broker.consumer_info("orders.*", "audit").expect("durable");
    assert_eq!(audit.acked, vec![1, 2]);
    assert_eq!(broker.channel_messages("orders.paid").len(), 1);
    assert_eq!(broker.channel_messages("orders.*").len(), 2);
    let mut published: Vec<u64> = broker
        .published::<OrderEvent>()
        .expect("decodes")
        .into_iter()
        .map(|e| e.id)
        .collect();
    published.sort_unstable();
    assert_eq!(
        published,
        [1, 2],
        "every subject the type's pattern matches"
    );
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_narrower_subscriber_skips_what_its_pattern_does_not_match() {
    let broker = InMemory::new();
    let everything = Log::new();
    let placed_only = Log::new();
    let all = everything.clone();
    let app = App::new()
        .subscriber(
            Subscriber::new("orders.>", move |m: Message<OrderEvent>| {
                all.push(m.subject().to_owned());
                std::future::ready(Handled::Ok(()))
            })
            .durable("everything"),
        )
        .subscriber(Subscriber::new("orders.*.placed", recording(&placed_only)).durable("placed"))
        .start(broker.clone())
        .await
        .expect("app starts");
    let publisher = Publisher::new(broker.clone());
    for (id, subject) in [
        (1, "orders.eu.placed"),
        (2, "orders.eu.paid"),
        (3, "orders.us.placed"),
    ] {
        publisher
            .publish_to(subject, &OrderEvent { id })
            .await
            .expect_err("orders.* only");
        publish_order_on(&broker, subject, id).await;
    }
    settle(&broker).await;

    let mut subjects = everything.items();
    subjects.sort();
    assert_eq!(
        subjects,
        ["orders.eu.paid", "orders.eu.placed", "orders.us.placed"]
    );
    let mut placed = placed_only.items();
    placed.sort();
    // The stream's sequences: 2 went to `orders.eu.paid`.
    assert_eq!(
        placed,
        vec![
            ("orders.eu.placed".to_owned(), 1, 1),
            ("orders.us.placed".to_owned(), 3, 3)
        ]
    );
    let info = broker.consumer_info("orders.>", "placed").expect("durable");
    assert_eq!(info.acked, vec![1, 3]);
    assert!(!info.delivery_counts.contains_key(&2), "never delivered");
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_is_redelivered_on_its_subject_and_dead_letters_keep_it() {
    let broker = InMemory::new();
    let runs = Log::new();
    let log = runs.clone();
    let handler = move |m: Message<OrderEvent>| {
        log.push((m.subject().to_owned(), m.delivery_count()));
        std::future::ready(match m.payload().id {
            1 if m.delivery_count() == 1 => failure("first attempt fails"),
            2 => failure("always fails"),
            _ => Ok(()),
        })
    };
    let app = App::new()
        .subscriber(
            Subscriber::new("orders.*", handler)
                .durable("billing")
                .max_deliver(2)
                .retry(flowgate::middleware::retry::RetryPolicy::broker_only()),
        )
        .start(broker.clone())
        .await
        .expect("app starts");
    let publisher = Publisher::new(broker.clone());
    publisher
        .publish_to("orders.placed", &OrderEvent { id: 1 })
        .await
        .expect("stored");
    publisher
        .publish_to("orders.paid", &OrderEvent { id: 2 })
        .await
        .expect("stored");
    settle(&broker).await;

    let mut seen = runs.items();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("orders.paid".to_owned(), 1),
            ("orders.paid".to_owned(), 2),
            ("orders.placed".to_owned(), 1),
            ("orders.placed".to_owned(), 2),
        ]
    );
    let letters = broker.channel_messages("dlq.orders.paid");
    assert_eq!(letters.len(), 1, "dead-lettered on dlq.<its subject>");
    assert!(broker.channel_messages("dlq.orders.placed").is_empty());
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_wildcard_type_is_published_only_to_a_subject_its_channel_matches() {
    let publisher = Publisher::new(InMemory::new());
    let err = publisher
        .publish(&OrderEvent { id: 1 })
        .await
        .expect_err("a pattern");
    assert!(matches!(
        err,
        PublishError::WildcardChannel {
            channel: "orders.*",
            ..
        }
    ));
    assert!(
        err.to_string().contains("publish_to(subject, &event)"),
        "{err}"
    );

    let err = publisher
        .publish_to("shipments.sent", &OrderEvent { id: 1 })
        .await
        .expect_err("not matched");
    let message = err.to_string();
    assert!(
        message.contains("`orders.*`") && message.contains("`shipments.sent`"),
        "{message}"
    );

    let err = publisher
        .publish_to("orders.*", &OrderEvent { id: 1 })
        .await
        .expect_err("a pattern");
    assert!(matches!(err, PublishError::Name(_)), "{err}");

    let mut window = publisher.window(4);
    window
        .publish_to("orders.placed", &OrderEvent { id: 1 })
        .await
        .expect("sent");
    window
        .publish_to("orders.placed", &OrderEvent { id: 2 })
        .await
        .expect("sent");
    window
        .publish_to("orders.paid", &OrderEvent { id: 3 })
        .await
        .expect("sent");
    window
        .publish_to("orders.eu.paid", &OrderEvent { id: 4 })
        .await
        .expect_err("two tokens");
    window.flush().await.expect("stored");
    assert_eq!(
        publisher
            .transport()
            .channel_messages("orders.placed")
            .len(),
        2
    );
}

#[tokio::test]
async fn a_stream_holding_part_of_a_pattern_is_an_error_that_says_what_to_do() {
    let broker = InMemory::new();
    let publisher = Publisher::new(broker.clone());
    publisher
        .publish_to("orders.placed", &OrderEvent { id: 1 })
        .await
        .expect("stored");
    let err = broker
        .subscribe(&flowgate::SubscriptionSpec::new("orders.*"))
        .await
        .expect_err("orders.placed has a stream of its own");
    let message = err.to_string();
    assert!(message.contains("`orders.placed`"), "{message}");
    assert!(
        message.contains("after its subscribers started"),
        "{message}"
    );
}

/// Publishes order `id` on `subject`, whatever the event type's channel,
/// and waits for it to be stored.
async fn publish_order_on(broker: &InMemory, subject: &str, id: u64) {
    let message = flowgate::OutgoingMessage::new(subject, format!("{{\"id\":{id}}}"));
    broker
        .publish(message)
        .await
        .expect("sent")
        .await
        .expect("stored");
}
