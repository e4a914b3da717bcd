//! Health against a real nats-server: connected and ready, not connected
//! and not ready while the server is down, ready again after its restart,
//! and the subscription handles messages again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::{App, ConnectionState, PublishOptions, Publisher, Subscriber};
use flowgate_tests::{eventually, init_tracing, lock, JobError, NatsServer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.health.orders")]
struct Order {
    id: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_server_down_and_back_and_handling_resumes() {
    init_tracing();
    let mut server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let handled: Arc<Mutex<Vec<u64>>> = Arc::default();
    let handler = {
        let handled = handled.clone();
        move |order: Order| {
            let handled = handled.clone();
            async move {
                lock(&handled).push(order.id);
                Ok::<(), JobError>(())
            }
        }
    };
    let app = App::new()
        .health_policy(flowgate::HealthPolicy {
            sample_every: Duration::from_secs(1),
            ..Default::default()
        })
        .subscriber(
            Subscriber::new("e2e.health.orders", handler)
                .durable("health")
                .ack_wait(Duration::from_secs(2)),
        )
        .start(nats.clone())
        .await
        .expect("app starts");
    let publisher = Publisher::new(nats.clone());
    publisher.publish(&Order { id: 1 }).await.expect("stored");

    let ready = eventually(Duration::from_secs(10), || async {
        let health = app.health();
        // The delivery is noted when it arrives, before the handler runs.
        health.is_ready()
            && !lock(&handled).is_empty()
            && health.subscriptions[0].last_delivery.is_some()
            && health.subscriptions[0].backlog.is_some()
    })
    .await;
    let health = app.health();
    assert!(ready, "connected, delivered and sampled: {health}");
    assert_eq!(health.connection, ConnectionState::Connected);
    assert_eq!(lock(&handled).as_slice(), &[1]);

    server.kill();
    let lost = eventually(Duration::from_secs(10), || async {
        app.health().connection == ConnectionState::Disconnected
    })
    .await;
    let health = app.health();
    assert!(lost, "the client notices the server is gone: {health}");
    assert!(!health.is_ready(), "{health}");
    assert!(
        health.is_live(),
        "an outage alone is no reason to restart: {health}"
    );

    server.restart().await;
    let back = eventually(Duration::from_secs(30), || async {
        app.health().is_ready()
    })
    .await;
    assert!(back, "ready again after the restart: {}", app.health());

    // Published until stored: the first tries may meet a stream whose
    // leader is not back yet.
    let stored = eventually(Duration::from_secs(30), || async {
        let options = PublishOptions::new().message_id("health-2");
        publisher
            .publish_with(&Order { id: 2 }, options)
            .await
            .is_ok()
    })
    .await;
    assert!(stored, "the server takes publishes again");
    let handled_again = eventually(Duration::from_secs(30), || async {
        lock(&handled).contains(&2)
    })
    .await;
    assert!(
        handled_again,
        "the subscription handles after the restart: {:?}, {}",
        lock(&handled),
        app.health()
    );
    let health = app.health();
    assert!(health.is_ready(), "{health}");
    app.shutdown().await.expect("clean shutdown");
}
