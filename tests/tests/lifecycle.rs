//! The life of an app on a real JetStream server: a durable resumes where
//! the last app stopped, shutdown drains and acks what is in flight, and a
//! durable whose settings drifted is refused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::{App, Error, Publisher, Subscriber, SubscriberSettings};
use flowgate_tests::{
    channel_of, consumer_state, eventually, init_tracing, lock, JobError, NatsServer, DEADLINE,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

// ---------------------------------------------------------------------------
// durable resume

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.lifecycle.resume")]
struct ResumeJob {
    id: u64,
}

fn recording_resume(handled: Arc<Mutex<Vec<u64>>>) -> Subscriber {
    Subscriber::new(channel_of::<ResumeJob>(), move |job: ResumeJob| {
        let handled = handled.clone();
        async move {
            lock(&handled).push(job.id);
            Ok::<(), JobError>(())
        }
    })
    .durable("resume")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_resumes_after_the_last_acked_message() {
    const BATCH: u64 = 20;
    init_tracing();
    let server = NatsServer::start().await;
    let channel = channel_of::<ResumeJob>();

    let nats_1 = server.jetstream().await;
    let first = Arc::new(Mutex::new(Vec::new()));
    let app_1 = App::new()
        .subscriber(recording_resume(first.clone()))
        .start(nats_1.clone())
        .await
        .expect("app 1 starts");
    let publisher = Publisher::new(nats_1.clone());
    for id in 0..BATCH {
        publisher.publish(&ResumeJob { id }).await.expect("publish");
    }
    let first_done = eventually(DEADLINE, || async {
        consumer_state(&nats_1, channel, "resume")
            .await
            .is_some_and(|s| s.ack_floor == BATCH && s.num_ack_pending == 0)
    })
    .await;
    assert!(
        first_done,
        "{:?}",
        consumer_state(&nats_1, channel, "resume").await
    );
    app_1.shutdown().await.expect("app 1 shuts down cleanly");

    for id in BATCH..2 * BATCH {
        publisher.publish(&ResumeJob { id }).await.expect("publish");
    }

    // A new process: new connection, same durable.
    let nats_2 = server.jetstream().await;
    let second = Arc::new(Mutex::new(Vec::new()));
    let app_2 = App::new()
        .subscriber(recording_resume(second.clone()))
        .start(nats_2.clone())
        .await
        .expect("app 2 starts");
    let second_done = eventually(DEADLINE, || async {
        consumer_state(&nats_2, channel, "resume")
            .await
            .is_some_and(|s| s.ack_floor == 2 * BATCH && s.num_ack_pending == 0)
    })
    .await;
    assert!(
        second_done,
        "app 2 did not ack the second batch: {:?}; app 2 handled {:?}",
        consumer_state(&nats_2, channel, "resume").await,
        lock(&second)
    );
    app_2.shutdown().await.expect("app 2 shuts down cleanly");

    let mut first = lock(&first).clone();
    let mut second = lock(&second).clone();
    first.sort_unstable();
    second.sort_unstable();
    assert_eq!(
        first,
        (0..BATCH).collect::<Vec<_>>(),
        "app 1: the first batch once"
    );
    assert_eq!(
        second,
        (BATCH..2 * BATCH).collect::<Vec<_>>(),
        "app 2: only the second batch, once"
    );
}

// ---------------------------------------------------------------------------
// graceful shutdown

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.lifecycle.drain")]
struct DrainJob {
    id: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_the_in_flight_handler_and_acks_it() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = channel_of::<DrainJob>();

    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let finished = Arc::new(AtomicBool::new(false));
    let handler = {
        let (started, release, finished) = (started.clone(), release.clone(), finished.clone());
        move |_job: DrainJob| {
            let (started, release, finished) = (started.clone(), release.clone(), finished.clone());
            async move {
                started.notify_one();
                release.notified().await;
                finished.store(true, Ordering::SeqCst);
                Ok::<(), JobError>(())
            }
        }
    };
    let app = App::new()
        .subscriber(Subscriber::new(channel, handler).durable("drain"))
        .shutdown_timeout(Duration::from_secs(20))
        .start(nats.clone())
        .await
        .expect("app starts");

    let ack = Publisher::new(nats.clone())
        .publish(&DrainJob { id: 1 })
        .await
        .expect("publish");
    tokio::time::timeout(DEADLINE, started.notified())
        .await
        .expect("the handler started");

    let mut shutdown = tokio::spawn(app.shutdown());
    // While the handler is blocked, shutdown must not return.
    let early = tokio::time::timeout(Duration::from_millis(300), &mut shutdown).await;
    assert!(
        early.is_err(),
        "shutdown returned while a handler was still running: {early:?}"
    );
    assert!(!finished.load(Ordering::SeqCst));

    release.notify_one();
    let result = tokio::time::timeout(DEADLINE, shutdown)
        .await
        .expect("shutdown returns once the handler is released")
        .expect("the shutdown task did not panic");
    assert!(result.is_ok(), "shutdown failed: {result:?}");
    assert!(
        finished.load(Ordering::SeqCst),
        "the handler ran to its end"
    );

    // The message was acked (not left pending for redelivery). The server
    // processes the ack asynchronously, so poll; the ack wait is 30 s, far
    // beyond this deadline, so nothing else can settle it meanwhile.
    let acked = eventually(Duration::from_secs(5), || async {
        consumer_state(&nats, channel, "drain")
            .await
            .is_some_and(|s| s.ack_floor == ack.sequence && s.num_ack_pending == 0)
    })
    .await;
    assert!(
        acked,
        "the in-flight message was not acked by shutdown: {:?}",
        consumer_state(&nats, channel, "drain").await
    );
}

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.lifecycle.gauge")]
struct GaugeJob {
    id: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_counts_running_handlers() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = channel_of::<GaugeJob>();

    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let handler = {
        let (started, release) = (started.clone(), release.clone());
        move |_job: GaugeJob| {
            let (started, release) = (started.clone(), release.clone());
            async move {
                started.notify_one();
                release.notified().await;
                Ok::<(), JobError>(())
            }
        }
    };
    let app = App::new()
        .subscriber(Subscriber::new(channel, handler).durable("gauge"))
        .start(nats.clone())
        .await
        .expect("app starts");
    assert_eq!(app.in_flight(), 0, "no message yet, no handler running");

    let ack = Publisher::new(nats.clone())
        .publish(&GaugeJob { id: 1 })
        .await
        .expect("publish");
    tokio::time::timeout(DEADLINE, started.notified())
        .await
        .expect("the handler started");
    assert_eq!(app.in_flight(), 1, "one handler is running");

    release.notify_one();
    let acked = eventually(DEADLINE, || async {
        consumer_state(&nats, channel, "gauge")
            .await
            .is_some_and(|s| s.ack_floor == ack.sequence)
    })
    .await;
    assert!(acked, "{:?}", consumer_state(&nats, channel, "gauge").await);
    // The permit is released just after the ack is sent: poll.
    let idle = eventually(DEADLINE, || async { app.in_flight() == 0 }).await;
    assert!(
        idle,
        "in_flight() is {} with no handler running",
        app.in_flight()
    );
    app.shutdown().await.expect("clean shutdown");
}

// ---------------------------------------------------------------------------
// config drift

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.lifecycle.drift")]
struct DriftJob {
    id: u64,
}

/// Starts `app` on `nats` (failing the test with `what` if it cannot), then
/// shuts it down cleanly.
async fn start_and_stop(app: App, nats: &flowgate::JetStream, what: &str) {
    app.start(nats.clone())
        .await
        .unwrap_or_else(|err| panic!("{what}: {err}"))
        .shutdown()
        .await
        .unwrap_or_else(|err| panic!("{what}, then shuts down cleanly: {err}"));
}

#[flowgate::subscriber(durable = "drift", max_in_flight = 8)]
async fn drift_v1(_job: DriftJob) -> Result<(), JobError> {
    Ok(())
}

#[flowgate::subscriber(durable = "drift", max_in_flight = 16)]
async fn drift_v2(_job: DriftJob) -> Result<(), JobError> {
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_with_changed_max_in_flight_is_refused() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = channel_of::<DriftJob>();

    start_and_stop(
        App::new().subscriber(drift_v1::subscriber()),
        &nats,
        "version 1 starts and creates the durable",
    )
    .await;

    let refused = App::new()
        .subscriber(drift_v2::subscriber())
        .start(nats.clone())
        .await;
    match refused {
        Err(Error::ConsumerMismatch {
            ref durable,
            field,
            ref existing,
            ref wanted,
            ..
        }) => {
            assert_eq!(durable, "drift");
            assert!(field.contains("max_in_flight"), "field: {field}");
            assert_eq!((existing.as_str(), wanted.as_str()), ("8", "16"));
        }
        Err(other) => panic!("expected Error::ConsumerMismatch, got {other}"),
        Ok(running) => panic!("version 2 started on a durable made for version 1: {running:?}"),
    }
    let state = consumer_state(&nats, channel, "drift")
        .await
        .expect("the durable still exists");
    assert_eq!(state.max_ack_pending, 8, "the durable was left as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_time_settings_keep_a_drifted_subscriber_on_its_durable_or_move_it() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = channel_of::<DriftJob>();
    start_and_stop(
        App::new().subscriber(drift_v1::subscriber()),
        &nats,
        "version 1 starts and creates the durable",
    )
    .await;

    // Version 2's attribute asks for 16 where the durable has 8. Without a
    // rebuild, the operator keeps 8 for this deployment...
    let kept = SubscriberSettings {
        max_in_flight: Some(8),
        ..Default::default()
    };
    start_and_stop(
        App::new()
            .subscriber(drift_v2::subscriber())
            .configure("drift_v2", kept),
        &nats,
        "version 2 starts on the durable version 1 made",
    )
    .await;

    // ...or gives it a durable of its own, where the attribute's 16 holds.
    let moved: std::collections::BTreeMap<String, SubscriberSettings> =
        serde_json::from_str(r#"{ "drift_v2": { "durable": "drift-next" } }"#)
            .expect("valid settings");
    start_and_stop(
        App::new()
            .subscriber(drift_v2::subscriber())
            .settings(moved),
        &nats,
        "version 2 starts on a new durable",
    )
    .await;
    let next = consumer_state(&nats, channel, "drift-next")
        .await
        .expect("the new durable exists");
    assert_eq!(next.max_ack_pending, 16);
    let old = consumer_state(&nats, channel, "drift")
        .await
        .expect("the old durable still exists");
    assert_eq!(old.max_ack_pending, 8, "the old durable was left as it was");
}
