//! The harness itself: a server survives kill and restart with its store and
//! port, and a round trip makes a core NATS subscription visible.

use std::time::Duration;

use flowgate_tests::{init_tracing, round_trip, NatsServer};
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_server_keeps_its_port_and_store() {
    init_tracing();
    let mut server = NatsServer::start().await;
    let (url, port) = (server.url(), server.port());
    let nats = server.jetstream().await;
    nats.ensure_stream("e2e.harness.kept")
        .await
        .expect("stream created");

    server.kill();
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "the killed server still accepts connections"
    );
    server.restart().await;
    assert_eq!(server.url(), url);

    let fresh = server.jetstream().await;
    let stream = fresh
        .context()
        .stream_by_subject("e2e.harness.kept")
        .await
        .expect("the stream survived the restart");
    assert_eq!(stream, "e2e_harness_kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_makes_a_core_subscription_visible_to_other_connections() {
    init_tracing();
    let server = NatsServer::start().await;
    let listener = async_nats::connect(server.url()).await.expect("connect");
    let sender = async_nats::connect(server.url()).await.expect("connect");

    let mut subscription = listener
        .subscribe("e2e.harness.core")
        .await
        .expect("subscribe");
    round_trip(&listener).await.expect("round trip");
    // Published from another connection right after: without the round
    // trip the server might not know the subscription yet.
    sender
        .publish("e2e.harness.core", "hello".into())
        .await
        .expect("publish");
    sender.flush().await.expect("flush");

    let message = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("the message arrived")
        .expect("the subscription is open");
    assert_eq!(message.payload.as_ref(), b"hello");
}
