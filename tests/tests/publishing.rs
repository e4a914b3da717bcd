//! Publishing on a real JetStream server: a bounded window of outstanding
//! acks, de-duplication by message id, and protobuf payloads end to end.

use std::time::Duration;

use flowgate::{App, PublishOptions, Publisher, Subscriber};
use flowgate_tests::{channel_of, init_tracing, stream_messages, JobError, NatsServer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.publish.window")]
struct WindowJob {
    id: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_publish_stores_every_message() {
    const N: u64 = 1000;
    const WINDOW: usize = 64;
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;

    let mut window = Publisher::new(nats.clone()).window(WINDOW);
    let mut most_outstanding = 0;
    for id in 0..N {
        window.publish(&WindowJob { id }).await.expect("publish");
        most_outstanding = most_outstanding.max(window.outstanding());
    }
    assert!(
        most_outstanding <= WINDOW,
        "{most_outstanding} acks outstanding, window is {WINDOW}"
    );
    assert!(
        most_outstanding > 1,
        "the window never held more than one ack"
    );
    window.flush().await.expect("every publish acked");
    assert_eq!(window.outstanding(), 0);

    assert_eq!(
        stream_messages(&nats, channel_of::<WindowJob>()).await,
        Some(N),
        "the stream holds every message once"
    );
}

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.publish.dedup")]
struct DedupJob {
    id: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_message_id_is_stored_once() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let publisher = Publisher::new(nats.clone());

    let first = publisher
        .publish_with(
            &DedupJob { id: 7 },
            PublishOptions::new().message_id("job-7"),
        )
        .await
        .expect("first publish");
    let second = publisher
        .publish_with(
            &DedupJob { id: 7 },
            PublishOptions::new().message_id("job-7"),
        )
        .await
        .expect("second publish");
    assert!(!first.duplicate, "{first:?}");
    assert!(
        second.duplicate,
        "the broker did not flag the copy: {second:?}"
    );
    assert_eq!(
        second.sequence, first.sequence,
        "the copy points at the original"
    );
    assert_eq!(
        stream_messages(&nats, channel_of::<DedupJob>()).await,
        Some(1)
    );
}

/// A protobuf payload, as prost-build would generate it.
#[derive(Clone, PartialEq, prost::Message, flowgate::Event)]
#[event(channel = "e2e.publish.proto", codec = "protobuf")]
struct ProtoOrder {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(string, tag = "2")]
    customer: String,
    #[prost(sint64, tag = "3")]
    total_cents: i64,
    #[prost(string, repeated, tag = "4")]
    items: Vec<String>,
    #[prost(bool, tag = "5")]
    express: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_event_round_trips_through_the_server() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = channel_of::<ProtoOrder>();

    let (received_tx, mut received) = tokio::sync::mpsc::unbounded_channel();
    let app = App::new()
        .subscriber(
            Subscriber::new(channel, move |order: ProtoOrder| {
                let received_tx = received_tx.clone();
                async move {
                    received_tx
                        .send(order)
                        .map_err(|_| JobError("the test stopped listening".into()))
                }
            })
            .durable("proto"),
        )
        .start(nats.clone())
        .await
        .expect("app starts");

    let sent = ProtoOrder {
        id: 42,
        customer: "Zoë".into(),
        total_cents: -1250,
        items: vec!["book".into(), "lamp".into()],
        express: true,
    };
    let ack = Publisher::new(nats.clone())
        .publish(&sent)
        .await
        .expect("publish");

    let got = tokio::time::timeout(Duration::from_secs(30), received.recv())
        .await
        .expect("the handler received the order")
        .expect("the handler is still there");
    assert_eq!(got, sent);

    // On the wire it is protobuf, not JSON.
    let stored = nats
        .context()
        .get_stream(&ack.stream)
        .await
        .expect("the stream")
        .get_raw_message(ack.sequence)
        .await
        .expect("the stored message");
    let decoded =
        <ProtoOrder as prost::Message>::decode(stored.payload.as_ref()).expect("protobuf bytes");
    assert_eq!(decoded, sent);
    assert!(
        serde_json::from_slice::<serde_json::Value>(&stored.payload).is_err(),
        "the payload is JSON"
    );
    app.shutdown().await.expect("clean shutdown");
}
