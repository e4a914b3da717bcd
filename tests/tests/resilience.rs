//! Losing the server: killed hard mid-stream and restarted on the same port
//! with the same store, the app reconnects and no message is lost.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::{App, JetStream, PublishOptions, Publisher, Subscriber};
use flowgate_tests::{
    channel_of, consumer_state, eventually, init_tracing, lock, stream_messages, JobError,
    NatsServer,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.resilience.orders")]
struct SurvivorJob {
    id: u64,
}

/// Publishes `id` with a message id, retrying until the server acks it: a
/// retry of a message that was stored after all is dropped as a duplicate.
async fn publish_until_stored(publisher: &Publisher<JetStream>, id: u64, deadline: Instant) {
    loop {
        let options = PublishOptions::new().message_id(format!("survivor-{id}"));
        match publisher.publish_with(&SurvivorJob { id }, options).await {
            Ok(_) => return,
            Err(err) if Instant::now() < deadline => {
                tracing::debug!(id, error = %err, "publish failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await; // retry pacing
            }
            Err(err) => panic!("publishing {id} still fails at the deadline: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_stream_and_restarted_loses_no_message() {
    const HALF: u64 = 100;
    const TOTAL: u64 = 2 * HALF;
    init_tracing();
    let mut server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = channel_of::<SurvivorJob>();

    // Per id, how many times it was handled.
    let handled: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    let handler = {
        let handled = handled.clone();
        move |job: SurvivorJob| {
            let handled = handled.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await; // the work
                *lock(&handled).entry(job.id).or_default() += 1;
                Ok::<(), JobError>(())
            }
        }
    };
    let app = App::new()
        .subscriber(
            Subscriber::new(channel, handler)
                .durable("survivor")
                .max_in_flight(8)
                // Deliveries whose acks die with the server come back soon.
                .ack_wait(Duration::from_secs(2)),
        )
        .start(nats.clone())
        .await
        .expect("app starts");

    let publisher = Publisher::new(nats.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in 0..HALF {
        publish_until_stored(&publisher, id, deadline).await;
    }
    let consuming = eventually(Duration::from_secs(30), || async {
        lock(&handled).len() >= 10
    })
    .await;
    assert!(consuming, "the app did not start consuming");

    server.kill();
    let handled_at_kill = lock(&handled).len() as u64;
    assert!(
        handled_at_kill < HALF,
        "the first half was done before the kill ({handled_at_kill}): the test did not kill mid-stream"
    );
    server.restart().await;
    // Handling resumes soon after the server is back: the subscription
    // reopens on the reconnect, and the acks the old server lost are sent
    // again, so the consumer is not held at its max_ack_pending until their
    // ack wait.
    let back_at = Instant::now();
    let handled_when_back = lock(&handled).len();
    let resumed = eventually(Duration::from_secs(30), || async {
        lock(&handled).len() > handled_when_back
    })
    .await;
    let resumed_after = back_at.elapsed();
    assert!(resumed, "handling did not resume after the restart");
    assert!(
        resumed_after < Duration::from_secs(3),
        "handling resumed {resumed_after:?} after the server was back"
    );

    for id in HALF..TOTAL {
        publish_until_stored(&publisher, id, deadline).await;
    }

    let all_handled = eventually(Duration::from_secs(60), || async {
        lock(&handled).len() as u64 == TOTAL
    })
    .await;
    let missing: Vec<u64> = {
        let handled = lock(&handled);
        (0..TOTAL).filter(|id| !handled.contains_key(id)).collect()
    };
    assert!(
        all_handled,
        "{} of {TOTAL} ids never handled: {missing:?}; consumer {:?}; server log:\n{}",
        missing.len(),
        consumer_state(&nats, channel, "survivor").await,
        server.log()
    );
    let acked = eventually(Duration::from_secs(30), || async {
        consumer_state(&nats, channel, "survivor")
            .await
            .is_some_and(|s| s.ack_floor == TOTAL && s.num_ack_pending == 0)
    })
    .await;
    assert!(
        acked,
        "{:?}",
        consumer_state(&nats, channel, "survivor").await
    );
    assert_eq!(
        stream_messages(&nats, channel).await,
        Some(TOTAL),
        "publish retries were de-duplicated"
    );
    let duplicates: u32 = lock(&handled).values().map(|n| n - 1).sum();
    eprintln!(
        "server restart: {handled_at_kill} handled at the kill, resumed {resumed_after:?} after the server was back, 0 lost, {duplicates} handled more than once"
    );
    app.shutdown().await.expect("clean shutdown");
}
