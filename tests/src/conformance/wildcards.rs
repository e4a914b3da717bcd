//! Wildcard channels: a subscriber of `conformance.orders.*` or
//! `conformance.orders.>` reads every subject its pattern matches, from the
//! one stream that holds the pattern, and sees each message's own subject.

use std::collections::BTreeSet;

use flowgate::middleware::retry::RetryPolicy;
use flowgate::{App, Failure, Message, PublishOptions, StartPosition, Subscriber, Transport};

use super::apps::{publish_with, stop};
use super::{Harness, Job, Seen, ACK_WAIT};

/// The subjects the scenarios publish to; `ONE_TOKEN` matches the first two.
const ONE_TOKEN: &str = "conformance.orders.*";
const THE_REST: &str = "conformance.orders.>";

/// A subscriber of `pattern` that records every call and acks.
fn recording(pattern: &str, seen: &Seen) -> Subscriber {
    let seen = seen.clone();
    let handler = move |job: Message<Job>| {
        seen.record(&job, 0);
        async { Ok::<(), Failure>(()) }
    };
    Subscriber::new(pattern, handler).ack_wait(ACK_WAIT)
}

async fn publish_on<T: Transport>(transport: &T, id: u64, subject: &str) -> u64 {
    publish_with(transport, id, PublishOptions::new().channel(subject))
        .await
        .sequence
}

/// `orders.*` gets `orders.placed` and `orders.paid`, each with its own
/// subject and stream sequence, and not `orders.eu.placed`, which is in the
/// same stream (made for `orders.>`) but has a token more; `orders.>` gets
/// all three. `shipments.sent` goes to neither.
pub async fn wildcard_channels<H: Harness>(harness: &H) {
    let nats = harness.connect().await;
    let rest = Seen::new();
    let one = Seen::new();
    // Subscribed in this order: the stream is made for `orders.>`, and the
    // `orders.*` consumer filters it. One handler at a time, so a message it
    // should skip would be seen before the later ones it should not.
    let app = App::new()
        .subscriber(recording(THE_REST, &rest).durable("rest"))
        .subscriber(recording(ONE_TOKEN, &one).durable("one").max_in_flight(1))
        .start(nats.clone())
        .await
        .unwrap_or_else(|e| panic!("the app does not start: {e}"));
    publish_on(&nats, 9, "conformance.shipments.sent").await;
    let eu = publish_on(&nats, 1, "conformance.orders.eu.placed").await;
    let placed = publish_on(&nats, 2, "conformance.orders.placed").await;
    let paid = publish_on(&nats, 3, "conformance.orders.paid").await;
    assert!(eu < placed && placed < paid, "one stream, one sequence");

    let all = rest
        .wait_for("orders.> handled 3 jobs", |calls| calls.len() >= 3)
        .await;
    let got: BTreeSet<_> = all.iter().map(|c| (c.subject.as_str(), c.id)).collect();
    let wanted = BTreeSet::from([
        ("conformance.orders.eu.placed", 1),
        ("conformance.orders.placed", 2),
        ("conformance.orders.paid", 3),
    ]);
    assert_eq!(got, wanted);
    let ones = one
        .wait_for("orders.* handled 2 jobs", |calls| calls.len() >= 2)
        .await;
    let got: BTreeSet<_> = ones
        .iter()
        .map(|c| (c.subject.as_str(), c.id, c.sequence))
        .collect();
    let wanted = BTreeSet::from([
        ("conformance.orders.placed", 2, placed),
        ("conformance.orders.paid", 3, paid),
    ]);
    assert_eq!(got, wanted, "orders.* got exactly placed and paid");
    stop(app).await;
}

/// A failing first attempt on a wildcard subscription is redelivered by the
/// broker with its own subject and sequence, and then handled.
pub async fn wildcard_at_least_once<H: Harness>(harness: &H) {
    let nats = harness.connect().await;
    let seen = Seen::new();
    let record = seen.clone();
    let handler = move |job: Message<Job>| {
        record.record(&job, 0);
        let first = job.delivery_count() == 1;
        async move {
            if first {
                return Err(Failure::retryable("the first delivery fails"));
            }
            Ok(())
        }
    };
    let subscriber = Subscriber::new(ONE_TOKEN, handler)
        .ack_wait(ACK_WAIT)
        .durable("billing")
        .start(StartPosition::All)
        .retry(RetryPolicy::broker_only());
    let app = App::new()
        .subscriber(subscriber)
        .start(nats.clone())
        .await
        .unwrap_or_else(|e| panic!("the app does not start: {e}"));
    let placed = publish_on(&nats, 1, "conformance.orders.placed").await;
    let paid = publish_on(&nats, 2, "conformance.orders.paid").await;

    let calls = seen
        .wait_for("both jobs redelivered", |calls| {
            calls.iter().filter(|c| c.delivery == 2).count() == 2
        })
        .await;
    let got: BTreeSet<_> = calls
        .iter()
        .map(|c| (c.subject.as_str(), c.sequence, c.delivery))
        .collect();
    let wanted = BTreeSet::from([
        ("conformance.orders.placed", placed, 1),
        ("conformance.orders.placed", placed, 2),
        ("conformance.orders.paid", paid, 1),
        ("conformance.orders.paid", paid, 2),
    ]);
    assert_eq!(got, wanted);
    stop(app).await;
}
