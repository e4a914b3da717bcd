//! The conformance suite on NATS Streaming, through the protocol double over
//! a real `nats-server` (one server and double per scenario), in real time.
//!
//! Scenarios that cannot hold on NATS Streaming by design of the protocol
//! are listed as exceptions with the reason, and each has a test below that
//! asserts what NATS Streaming does instead.

use flowgate::{Acker, OutgoingMessage, SubscriptionSpec, Transport};
use flowgate_tests::conformance::{stan::exceptions, Harness, StanHarness, ACK_WAIT};
use futures::StreamExt;

flowgate_tests::conformance_suite!(
    tokio::test(flavor = "multi_thread", worker_threads = 2),
    flowgate_tests::conformance::StanHarness::start().await,
    except {
        nak_delay_respected: "NATS Streaming has no nak: a nak'd message is redelivered \
            after the subscription's ack wait, whatever delay was asked \
            (nak_comes_back_after_the_ack_wait)",
        headers_round_trip: "NATS Streaming messages have no headers: headers and the \
            message id are not sent (headers_are_dropped)",
        deduplication_by_message_id: "NATS Streaming does not de-duplicate: a message id is \
            not sent and the publish ack carries no sequence (duplicates_are_stored_twice)",
        durable_resume: "a NATS Streaming durable belongs to its client id, and the harness's \
            connections are independent clients with ids of their own: a restart resumes \
            under the same client id (durable_belongs_to_its_client_id)",
        redelivery_after_ack_wait: "NATS Streaming has no progress ack, so a delivery the \
            process still holds (buffered, or in a handler) is not handed out again: the \
            server's redelivery is held back until the delivery is settled or dropped, and \
            held-back redeliveries do not count (held_delivery_is_not_handed_out_twice)",
        start_time: "NATS Streaming sends a start time as a delta the server applies to its own \
            clock on receipt: a message stored within the request's transit after the start \
            time can be missed, and the scenario publishes right after it \
            (start_time_is_a_delta_on_the_server_clock)",
        wildcard_channels: "NATS Streaming has no wildcard subscriptions: an app with a \
            wildcard subscriber does not start (wildcard_channels_are_refused)",
        wildcard_at_least_once: "NATS Streaming has no wildcard subscriptions \
            (wildcard_channels_are_refused)",
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nak_comes_back_after_the_ack_wait() {
    flowgate_tests::init_tracing();
    exceptions::nak_comes_back_after_the_ack_wait(&StanHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_channels_are_refused() {
    flowgate_tests::init_tracing();
    exceptions::wildcard_channels_are_refused(&StanHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_dropped() {
    flowgate_tests::init_tracing();
    exceptions::headers_are_dropped(&StanHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_stored_twice() {
    flowgate_tests::init_tracing();
    exceptions::duplicates_are_stored_twice(&StanHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_belongs_to_its_client_id() {
    flowgate_tests::init_tracing();
    exceptions::durable_belongs_to_its_client_id(&StanHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_time_is_a_delta_on_the_server_clock() {
    flowgate_tests::init_tracing();
    exceptions::start_time_is_a_delta_on_the_server_clock(&StanHarness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_delivery_is_not_handed_out_twice() {
    flowgate_tests::init_tracing();
    let harness = StanHarness::start().await;
    let stan = harness.connect().await;
    let mut spec = SubscriptionSpec::new("conformance.held");
    spec.ack_wait = ACK_WAIT;
    let mut deliveries = stan.subscribe(&spec).await.expect("subscribed");
    let pending = stan
        .publish(OutgoingMessage::new("conformance.held", "1"))
        .await
        .expect("sent");
    pending.await.expect("stored");
    let wait = flowgate_tests::DEADLINE;
    let first = tokio::time::timeout(wait, deliveries.next())
        .await
        .expect("a delivery")
        .expect("the subscription lives");
    // Held past two ack waits: the server redelivers, the client holds back.
    let redelivered = flowgate_tests::eventually(wait, || async {
        harness.double().redeliveries("conformance.held") >= 2
    })
    .await;
    assert!(
        redelivered,
        "the server redelivered while the delivery was held"
    );
    let early =
        tokio::time::timeout(std::time::Duration::from_millis(100), deliveries.next()).await;
    assert!(early.is_err(), "a held delivery was handed out again");
    // Released (a nak leaves it to the server): the next redelivery comes,
    // counting only the deliveries handed out.
    first.acker.nak(None).await.expect("nak is accepted");
    let again = tokio::time::timeout(wait, deliveries.next())
        .await
        .expect("a redelivery once released")
        .expect("the subscription lives");
    assert_eq!(
        again.metadata.stream_sequence(),
        first.metadata.stream_sequence()
    );
    assert_eq!(
        again.metadata.delivery_count(),
        2,
        "held-back redeliveries do not count"
    );
}
