//! The conformance suite on NATS Streaming, through the protocol double over
//! a real `nats-server` (one server and double per scenario), in real time.
//!
//! Scenarios that cannot hold on NATS Streaming by design of the protocol
//! are listed as exceptions with the reason, and each has a test below that
//! asserts what NATS Streaming does instead.

use flowgate_tests::conformance::{stan::exceptions, StanHarness};

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
        start_time: "NATS Streaming sends a start time as a delta the server applies to its own \
            clock on receipt: a message stored within the request's transit after the start \
            time can be missed, and the scenario publishes right after it \
            (start_time_is_a_delta_on_the_server_clock)",
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nak_comes_back_after_the_ack_wait() {
    flowgate_tests::init_tracing();
    exceptions::nak_comes_back_after_the_ack_wait(&StanHarness::start().await).await;
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
