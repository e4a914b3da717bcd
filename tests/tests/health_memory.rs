//! Health on the in-memory broker, on a paused clock: a simulated
//! disconnect, a subscription whose failures pile up, one that stops taking
//! deliveries, and the backlog gauges sampled from the broker.

use std::task::{Context, Poll};
use std::time::Duration;

use flowgate::middleware::metrics::names;
use flowgate::{App, BoxError, ConnectionState, Failure, HealthPolicy, Request, Subscriber};
use flowgate_testkit::{Fault, InMemory};
use flowgate_tests::eventually;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
struct Job {
    id: u64,
}

async fn publish_jobs(broker: &InMemory, channel: &str, ids: std::ops::Range<u64>) {
    let publisher = flowgate::Publisher::new(broker.clone());
    for id in ids {
        publisher
            .publish_to(channel, &Job { id })
            .await
            .expect("the broker stores it");
    }
}

#[tokio::test(start_paused = true)]
async fn a_simulated_disconnect_is_not_ready_and_deliveries_resume_after_it() {
    let broker = InMemory::new();
    let app = App::new()
        .subscriber(
            Subscriber::new("health.disconnect", |_: Job| async {
                Ok::<(), Failure>(())
            })
            .durable("worker")
            .ack_wait(Duration::from_secs(5)),
        )
        .start(broker.clone())
        .await
        .expect("app starts");
    let health = app.health();
    assert_eq!(health.connection, ConnectionState::Connected);
    assert!(health.is_live() && health.is_ready(), "{health}");

    broker.disconnect();
    assert_eq!(broker.faults(), vec![Fault::Disconnected]);
    let health = app.health();
    assert_eq!(health.connection, ConnectionState::Disconnected);
    assert!(
        health.is_live(),
        "an outage alone keeps the app live: {health}"
    );
    assert!(!health.is_ready(), "{health}");
    let publisher = flowgate::Publisher::new(broker.clone());
    assert!(
        publisher
            .publish_to("health.disconnect", &Job { id: 0 })
            .await
            .is_err(),
        "a publish while disconnected fails"
    );
    // Long past the stall threshold: a broker outage is not a stall.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let health = app.health();
    assert!(!health.subscriptions[0].stalled, "{health}");

    broker.reconnect();
    assert!(app.health().is_ready());
    publish_jobs(&broker, "health.disconnect", 1..4).await;
    broker.wait_idle().await;
    assert_eq!(broker.settlements("health.disconnect").acked().len(), 3);
    let health = app.health();
    assert!(
        health.subscriptions[0].last_delivery.is_some(),
        "deliveries are seen: {health}"
    );
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn failures_over_the_window_make_a_subscription_failing_then_it_recovers() {
    let broker = InMemory::new();
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let handler = {
        let failing = failing.clone();
        move |_: Job| {
            let failing = failing.clone();
            async move {
                if failing.load(std::sync::atomic::Ordering::Relaxed) {
                    Err(Failure::permanent("the downstream refuses"))
                } else {
                    Ok(())
                }
            }
        }
    };
    let policy = HealthPolicy {
        failing_min_settled: 5,
        failing_window: Duration::from_secs(30),
        ..HealthPolicy::default()
    };
    let app = App::new()
        .health_policy(policy)
        .subscriber(Subscriber::new("health.failing", handler).durable("worker"))
        .start(broker.clone())
        .await
        .expect("app starts");
    publish_jobs(&broker, "health.failing", 0..4).await;
    broker.wait_idle().await;
    let health = app.health();
    assert!(
        !health.subscriptions[0].failing,
        "4 settlements are fewer than failing_min_settled: {health}"
    );
    publish_jobs(&broker, "health.failing", 4..8).await;
    broker.wait_idle().await;
    let health = app.health();
    let subscription = &health.subscriptions[0];
    assert!(subscription.failing, "{health}");
    assert_eq!(subscription.failure_ratio, Some((1.0, 8)), "{health}");
    assert!(health.is_live() && !health.is_ready(), "{health}");

    failing.store(false, std::sync::atomic::Ordering::Relaxed);
    // The failures age out of the window; successes come in meanwhile.
    tokio::time::sleep(Duration::from_secs(40)).await;
    publish_jobs(&broker, "health.failing", 8..14).await;
    broker.wait_idle().await;
    let recovered = eventually(Duration::from_secs(5), || async { app.health().is_ready() }).await;
    assert!(recovered, "ready again: {}", app.health());
    assert_eq!(
        app.health().subscriptions[0].failure_ratio.map(|r| r.0),
        Some(0.0)
    );
    app.shutdown().await.expect("clean shutdown");
}

/// A layer whose service never becomes ready: its subscription takes no
/// delivery, as a dispatcher stuck behind a wedged rate limit.
#[derive(Clone)]
struct NeverReady;

impl<S> tower::Layer<S> for NeverReady {
    type Service = NeverReadyService;
    fn layer(&self, _: S) -> NeverReadyService {
        NeverReadyService
    }
}

#[derive(Clone)]
struct NeverReadyService;

impl tower::Service<Request> for NeverReadyService {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Pending
    }

    fn call(&mut self, _: Request) -> Self::Future {
        std::future::ready(Ok(()))
    }
}

#[tokio::test(start_paused = true)]
async fn messages_waiting_with_no_delivery_for_the_threshold_stall_the_subscription() {
    let broker = InMemory::new();
    let app = App::new()
        .health_policy(HealthPolicy {
            stall_after: Duration::from_secs(30),
            ..HealthPolicy::default()
        })
        .subscriber(
            Subscriber::new("health.stalled", |_: Job| async { Ok::<(), Failure>(()) })
                .durable("worker")
                .max_in_flight(2)
                .layer(NeverReady),
        )
        .start(broker.clone())
        .await
        .expect("app starts");
    publish_jobs(&broker, "health.stalled", 0..5).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let health = app.health();
    let subscription = &health.subscriptions[0];
    assert!(!subscription.stalled, "not for long yet: {health}");
    assert_eq!(
        subscription.backlog.map(|(b, _)| b.pending),
        Some(3),
        "{health}"
    );
    let stalled = eventually(Duration::from_secs(60), || async {
        app.health().subscriptions[0].stalled
    })
    .await;
    let health = app.health();
    assert!(stalled, "{health}");
    assert!(!health.is_live() && !health.is_ready(), "{health}");
    assert!(health.to_string().contains("stalled"), "{health}");
    drop(app);
}

#[tokio::test(start_paused = true)]
async fn the_backlog_gauges_follow_the_broker() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _installed = metrics::set_default_local_recorder(&recorder);
    let broker = InMemory::new();
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let handler = {
        let release = release.clone();
        move |_: Job| {
            let release = release.clone();
            async move {
                let _permit = release
                    .acquire()
                    .await
                    .map_err(|e| Failure::permanent(e.to_string()))?;
                Ok::<(), Failure>(())
            }
        }
    };
    let app = App::new()
        .health_policy(HealthPolicy {
            sample_every: Duration::from_secs(2),
            ..HealthPolicy::default()
        })
        .subscriber(
            Subscriber::new("health.gauges", handler)
                .durable("worker")
                .max_in_flight(4),
        )
        .start(broker.clone())
        .await
        .expect("app starts");
    publish_jobs(&broker, "health.gauges", 0..10).await;
    let gauges = || {
        let mut pending = None;
        let mut ack_pending = None;
        for (key, _, description, value) in snapshotter.snapshot().into_vec() {
            let DebugValue::Gauge(value) = value else {
                continue;
            };
            let name = key.key().name();
            if name == names::CONSUMER_PENDING {
                assert!(description.is_some(), "{name} is described");
                pending = Some(value.into_inner());
            } else if name == names::CONSUMER_ACK_PENDING {
                ack_pending = Some(value.into_inner());
            }
        }
        (pending, ack_pending)
    };
    let sampled = eventually(Duration::from_secs(10), || async {
        gauges() == (Some(6.0), Some(4.0))
    })
    .await;
    assert!(sampled, "4 in flight, 6 waiting: {:?}", gauges());
    release.add_permits(100);
    let drained = eventually(Duration::from_secs(10), || async {
        gauges() == (Some(0.0), Some(0.0))
    })
    .await;
    assert!(drained, "all acked: {:?}", gauges());
    app.shutdown().await.expect("clean shutdown");
}
