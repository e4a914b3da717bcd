//! The app's startup and shutdown hooks on a real JetStream server: an
//! on_start hook runs before the durable consumer exists and may publish
//! what the subscriber then reads; the on_shutdown hook runs once the drain
//! has finished the in-flight handler and the server has its ack; a failing
//! on_start hook leaves no consumer behind.

use std::sync::{Arc, Mutex};

use flowgate::{App, Error, Publisher, StartPosition, Subscriber};
use flowgate_tests::{
    channel_of, consumer_state, eventually, init_tracing, lock, JobError, NatsServer, DEADLINE,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.lifespan.jobs")]
struct LifespanJob {
    id: u64,
}

/// What happened, in the order it happened.
type Log = Arc<Mutex<Vec<String>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_before_the_consumer_exists_and_after_the_drain_acked_the_in_flight_message() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = channel_of::<LifespanJob>();
    let log = Log::default();
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());

    let worker = {
        let (log, entered, release) = (log.clone(), entered.clone(), release.clone());
        Subscriber::new(channel, move |job: LifespanJob| {
            let (log, entered, release) = (log.clone(), entered.clone(), release.clone());
            async move {
                lock(&log).push(format!("handler {} began", job.id));
                entered.notify_one();
                release.notified().await;
                lock(&log).push(format!("handler {} ended", job.id));
                Ok::<(), JobError>(())
            }
        })
        .durable("lifespan")
        .start(StartPosition::All)
    };
    let seed = {
        let (log, nats) = (log.clone(), nats.clone());
        move || {
            let (log, nats) = (log.clone(), nats.clone());
            async move {
                Publisher::new(nats.clone())
                    .publish(&LifespanJob { id: 1 })
                    .await?;
                // The stream exists now (the publish made it); the consumer not yet.
                let consumer = consumer_state(&nats, channel, "lifespan").await;
                lock(&log).push(format!("on_start, consumer {consumer:?}"));
                Ok::<(), flowgate::PublishError>(())
            }
        }
    };
    let close = {
        let (log, nats) = (log.clone(), nats.clone());
        move || {
            let (log, nats) = (log.clone(), nats.clone());
            async move {
                // Asked on the app's own connection, after its acks.
                let consumer = consumer_state(&nats, channel, "lifespan").await;
                let settled = consumer.map(|c| (c.ack_floor, c.num_ack_pending));
                lock(&log).push(format!("on_shutdown, (ack floor, pending) {settled:?}"));
                Ok::<(), std::io::Error>(())
            }
        }
    };
    let running = App::new()
        .subscriber(worker)
        .on_start(seed)
        .on_shutdown(close)
        .start(nats.clone())
        .await
        .expect("the app starts");
    assert!(
        consumer_state(&nats, channel, "lifespan").await.is_some(),
        "start subscribed after the hook"
    );
    tokio::time::timeout(DEADLINE, entered.notified())
        .await
        .expect("the hook's message reaches the handler");
    assert_eq!(running.in_flight(), 1);

    // Let the handler end only once shutdown has begun: the drain waits for it.
    let probe = running.health_probe();
    let shutdown = tokio::spawn(running.shutdown());
    assert!(
        eventually(DEADLINE, || async { probe.health().draining }).await,
        "shutdown began"
    );
    let so_far = lock(&log).clone();
    assert_eq!(
        so_far.len(),
        2,
        "the hook waits for the handler: {so_far:?}"
    );
    release.notify_one();
    shutdown
        .await
        .expect("shutdown does not panic")
        .expect("a clean shutdown");
    assert_eq!(
        *lock(&log),
        [
            "on_start, consumer None",
            "handler 1 began",
            "handler 1 ended",
            "on_shutdown, (ack floor, pending) Some((1, 0))",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_on_start_hook_leaves_no_consumer_on_the_server() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = channel_of::<LifespanJob>();
    Publisher::new(nats.clone())
        .publish(&LifespanJob { id: 1 })
        .await
        .expect("the stream stores it");
    let log = Log::default();
    let worker = Subscriber::new(channel, |_: LifespanJob| async { Ok::<(), JobError>(()) })
        .durable("lifespan");
    let err = App::new()
        .subscriber(worker)
        .on_start(|| async { Err::<(), _>("the schema is newer than this build") })
        .on_shutdown({
            let log = log.clone();
            move || {
                let log = log.clone();
                async move {
                    lock(&log).push("on_shutdown".to_owned());
                    Ok::<(), std::io::Error>(())
                }
            }
        })
        .start(nats.clone())
        .await
        .expect_err("the hook fails");
    assert!(
        matches!(&err, Error::StartHook { index: 0, source, .. } if source.to_string() == "the schema is newer than this build"),
        "{err:?}"
    );
    assert_eq!(*lock(&log), ["on_shutdown"]);
    assert_eq!(
        consumer_state(&nats, channel, "lifespan").await,
        None,
        "no consumer was created"
    );
}
