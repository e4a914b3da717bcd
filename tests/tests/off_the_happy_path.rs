//! Nothing lost off the happy path, on a real JetStream server: shutdown
//! stops every handler it leaves and hands back what it never started, a
//! layer waiting for readiness holds no message, a dead letter that cannot
//! be stored is retried without running the handler again, a consumer the
//! server lost is recreated without skipping a message, and every pull asks
//! for idle heartbeats.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::{App, Failure, Message, PublishOptions, Publisher, Subscriber};
use flowgate_tests::fault::{delete_consumer, full_stream, purge_stream};
use flowgate_tests::{
    consumer_state, eventually, init_tracing, lock, round_trip, stored_messages, JobError,
    NatsServer, DEADLINE,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Debug, Clone, Serialize, Deserialize, flowgate::Event)]
struct Job {
    id: u64,
}

async fn publish(nats: &flowgate::JetStream, channel: &str, ids: impl IntoIterator<Item = u64>) {
    let publisher = Publisher::new(nats.clone());
    for id in ids {
        publisher
            .publish_with(&Job { id }, PublishOptions::new().channel(channel))
            .await
            .expect("publish");
    }
}

/// A server of this test's own, and a transport connected to it.
async fn started() -> (NatsServer, flowgate::JetStream) {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    (server, nats)
}

/// How often each id was handled, shared with the test.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<BTreeMap<u64, usize>>>);

impl Runs {
    fn record(&self, id: u64) {
        *lock(&self.0).entry(id).or_default() += 1;
    }

    fn of(&self, id: u64) -> usize {
        lock(&self.0).get(&id).copied().unwrap_or(0)
    }

    fn all(&self) -> BTreeMap<u64, usize> {
        lock(&self.0).clone()
    }
}

/// Sets its flag when dropped: tells whether a handler's future still exists.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------
// shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_past_the_shutdown_deadline_is_stopped_before_shutdown_returns() {
    let (_server, nats) = started().await;
    let channel = "offpath.abandon";
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let dropped = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let handler = {
        let (started, release) = (started.clone(), release.clone());
        let (dropped, finished) = (dropped.clone(), finished.clone());
        move |_job: Job| {
            let (started, release) = (started.clone(), release.clone());
            let (dropped, finished) = (dropped.clone(), finished.clone());
            async move {
                let _alive = DropFlag(dropped);
                started.notify_one();
                release.notified().await;
                finished.store(true, Ordering::SeqCst);
                Ok::<(), JobError>(())
            }
        }
    };
    let app = App::new()
        .subscriber(Subscriber::new(channel, handler).durable("abandon"))
        .shutdown_timeout(Duration::from_millis(300))
        .start(nats.clone())
        .await
        .expect("app starts");
    publish(&nats, channel, [1]).await;
    tokio::time::timeout(DEADLINE, started.notified())
        .await
        .expect("the handler started");

    let result = app.shutdown().await;
    assert!(
        matches!(
            result,
            Err(flowgate::Error::ShutdownTimeout { remaining: 1, .. })
        ),
        "shutdown reports the handler it gave up on: {result:?}"
    );
    assert!(
        dropped.load(Ordering::SeqCst),
        "the abandoned handler still exists after shutdown returned"
    );
    // Were it still alive, this would let it finish and ack.
    release.notify_waiters();
    round_trip(nats.client()).await.expect("round trip");
    assert!(!finished.load(Ordering::SeqCst), "the handler ran on");
    let state = consumer_state(&nats, channel, "abandon")
        .await
        .expect("consumer");
    assert_eq!(
        (state.ack_floor, state.num_ack_pending),
        (0, 1),
        "the abandoned message is left for redelivery, never acked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_buffered_deliveries_so_they_come_again_at_once() {
    let (_server, nats) = started().await;
    let channel = "offpath.release";
    let started = Arc::new(Notify::new());
    let (release, released) = tokio::sync::watch::channel(false);
    let first_runs = Runs::default();
    let handler = {
        let (started, released, runs) = (started.clone(), released.clone(), first_runs.clone());
        move |job: Job| {
            let (started, mut released, runs) = (started.clone(), released.clone(), runs.clone());
            async move {
                runs.record(job.id);
                started.notify_one();
                let _ = released.wait_for(|released| *released).await;
                Ok::<(), JobError>(())
            }
        }
    };
    // One handler at a time (the layer), four messages held by the
    // consumer: three wait in the client's buffer.
    let app = App::new()
        .subscriber(
            Subscriber::new(channel, handler)
                .durable("release")
                .max_in_flight(4)
                .layer(tower::limit::ConcurrencyLimitLayer::new(1)),
        )
        .shutdown_timeout(Duration::from_secs(10))
        .start(nats.clone())
        .await
        .expect("app starts");
    publish(&nats, channel, 1..=4).await;
    tokio::time::timeout(DEADLINE, started.notified())
        .await
        .expect("the first handler started");
    let buffered = eventually(DEADLINE, || async {
        consumer_state(&nats, channel, "release")
            .await
            .is_some_and(|s| s.num_ack_pending == 4)
    })
    .await;
    assert!(buffered, "the consumer delivered all four");

    // Its first poll stops the app taking messages; then the handler may end.
    let mut shutdown = Box::pin(app.shutdown());
    assert!(futures::poll!(shutdown.as_mut()).is_pending());
    let _ = release.send(true);
    tokio::time::timeout(DEADLINE, shutdown)
        .await
        .expect("shutdown returns")
        .expect("clean shutdown");
    let handled_first: Vec<u64> = first_runs.all().keys().copied().collect();
    assert!(
        !handled_first.is_empty() && handled_first.len() < 4,
        "the first app handled some, not all: {handled_first:?}"
    );

    // The rest come to the next app at once, not after the 30 s ack wait.
    let second_runs = Runs::default();
    let deliveries = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let (runs, deliveries) = (second_runs.clone(), deliveries.clone());
        move |job: Message<Job>| {
            let (runs, deliveries) = (runs.clone(), deliveries.clone());
            async move {
                lock(&deliveries).push(job.delivery_count());
                runs.record(job.payload().id);
                Ok::<(), JobError>(())
            }
        }
    };
    let app = App::new()
        .subscriber(
            Subscriber::new(channel, handler)
                .durable("release")
                .max_in_flight(4),
        )
        .start(nats.clone())
        .await
        .expect("second app starts");
    let rest: Vec<u64> = (1..=4).filter(|id| !handled_first.contains(id)).collect();
    let all = eventually(Duration::from_secs(10), || async {
        rest.iter().all(|id| second_runs.of(*id) >= 1)
    })
    .await;
    assert!(
        all,
        "the buffered messages did not come again within 10 s (ack wait 30 s): {:?}",
        second_runs.all()
    );
    // Delivered once before (older servers roll the consumer back for a
    // released message, and deliver it as new): none spent bouncing.
    assert!(
        lock(&deliveries).iter().all(|count| *count <= 2),
        "a delivery was spent bouncing back into the stopped subscription: {:?}",
        lock(&deliveries)
    );
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_waiting_for_readiness_holds_no_message() {
    let (_server, nats) = started().await;
    let channel = "offpath.ready";
    let runs = Runs::default();
    let handler = {
        let runs = runs.clone();
        move |job: Job| {
            let runs = runs.clone();
            async move {
                runs.record(job.id);
                tokio::time::sleep(Duration::from_millis(600)).await; // the work
                Ok::<(), JobError>(())
            }
        }
    };
    // A 1 s ack wait: a message taken and left waiting for the layer would
    // be redelivered and run twice.
    let app = App::new()
        .subscriber(
            Subscriber::new(channel, handler)
                .durable("ready")
                .ack_wait(Duration::from_secs(1))
                .max_in_flight(4)
                .layer(tower::limit::ConcurrencyLimitLayer::new(1)),
        )
        .start(nats.clone())
        .await
        .expect("app starts");
    publish(&nats, channel, 1..=4).await;
    let settled = eventually(DEADLINE, || async {
        consumer_state(&nats, channel, "ready")
            .await
            .is_some_and(|s| s.ack_floor == 4 && s.num_ack_pending == 0)
    })
    .await;
    assert!(
        settled,
        "{:?}",
        consumer_state(&nats, channel, "ready").await
    );
    app.shutdown().await.expect("clean shutdown");
    assert_eq!(
        runs.all(),
        (1..=4).map(|id| (id, 1)).collect::<BTreeMap<_, _>>(),
        "each message handled once"
    );
}

// ---------------------------------------------------------------------------
// dead letters

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_that_cannot_be_stored_is_retried_without_running_the_handler_again() {
    let (_server, nats) = started().await;
    let channel = "offpath.dlqfull";
    let dead_letters = "dlq.offpath.dlqfull";
    let dlq_stream = full_stream(&nats, dead_letters).await;
    let runs = Runs::default();
    let handler = {
        let runs = runs.clone();
        move |job: Job| {
            let runs = runs.clone();
            async move {
                runs.record(job.id);
                Err::<(), _>(Failure::permanent(JobError("never".into())))
            }
        }
    };
    let app = App::new()
        .subscriber(
            Subscriber::new(channel, handler)
                .durable("dlqfull")
                .ack_wait(Duration::from_secs(1))
                .max_deliver(2),
        )
        .start(nats.clone())
        .await
        .expect("app starts");
    publish(&nats, channel, [7]).await;
    let ran = eventually(DEADLINE, || async { runs.of(7) == 1 }).await;
    assert!(ran, "the handler ran");
    // The dead-letter stream stays full for more than two ack waits: the
    // original must stay alive all that time.
    tokio::time::sleep(Duration::from_millis(2500)).await; // the fault's duration
    let state = consumer_state(&nats, channel, "dlqfull")
        .await
        .expect("consumer");
    assert_eq!(
        (state.ack_floor, state.num_ack_pending),
        (0, 1),
        "kept pending while its dead letter cannot be stored"
    );
    purge_stream(&nats, &dlq_stream).await;
    let stored = eventually(DEADLINE, || async {
        stored_messages(&nats, dead_letters).await.len() == 1
    })
    .await;
    assert!(stored, "the dead letter was stored once there was room");
    let terminated = eventually(DEADLINE, || async {
        consumer_state(&nats, channel, "dlqfull")
            .await
            .is_some_and(|s| s.num_ack_pending == 0)
    })
    .await;
    assert!(
        terminated,
        "the original was terminated after its dead letter"
    );
    app.shutdown().await.expect("clean shutdown");
    assert_eq!(runs.of(7), 1, "the handler never ran again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ephemeral_subscribers_each_get_their_dead_letter() {
    let (_server, nats) = started().await;
    let channel = "offpath.twins";
    let failing = |name: &str| {
        Subscriber::new(channel, |_job: Job| async {
            Err::<(), _>(Failure::permanent(JobError("never".into())))
        })
        .named(name)
    };
    let app = App::new()
        .subscriber(failing("left"))
        .subscriber(failing("right"))
        .start(nats.clone())
        .await
        .expect("app starts");
    publish(&nats, channel, [1]).await;
    let both = eventually(DEADLINE, || async {
        stored_messages(&nats, "dlq.offpath.twins").await.len() == 2
    })
    .await;
    let letters = stored_messages(&nats, "dlq.offpath.twins").await;
    assert!(
        both,
        "one dead letter per subscriber, found {}",
        letters.len()
    );
    app.shutdown().await.expect("clean shutdown");
}

// ---------------------------------------------------------------------------
// consumers the server lost

/// A subscriber on `channel` that fails job 2 once, asking for a retry in
/// 20 s (so it waits on the server for a while), and handles the rest.
fn naks_two_once(channel: &str, runs: Runs, ok: Runs) -> Subscriber {
    let failed = Arc::new(AtomicUsize::new(0));
    Subscriber::new(channel, move |job: Job| {
        let (runs, ok, failed) = (runs.clone(), ok.clone(), failed.clone());
        async move {
            runs.record(job.id);
            if job.id == 2 && failed.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(Failure::retry_after(
                    Duration::from_secs(20),
                    JobError("later".into()),
                ));
            }
            ok.record(job.id);
            Ok(())
        }
    })
}

async fn consumer_names(nats: &flowgate::JetStream, stream: &str) -> Vec<String> {
    let stream = nats.context().get_stream(stream).await.expect("stream");
    stream
        .consumer_names()
        .filter_map(|name| async move { name.ok() })
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ephemeral_consumer_is_recreated_without_skipping_a_nakd_message() {
    let (_server, nats) = started().await;
    let channel = "offpath.ephemeral";
    let stream = nats.ensure_stream(channel).await.expect("stream");
    let (runs, ok) = (Runs::default(), Runs::default());
    let subscriber = naks_two_once(channel, runs.clone(), ok.clone());
    let app = App::new()
        .subscriber(subscriber)
        .start(nats.clone())
        .await
        .expect("app starts");
    publish(&nats, channel, 1..=5).await;
    let before = eventually(DEADLINE, || async {
        (1..=5).filter(|id| *id != 2).all(|id| ok.of(id) == 1) && runs.of(2) == 1
    })
    .await;
    assert!(before, "1, 3, 4, 5 handled, 2 nak'd: {:?}", runs.all());
    // The server loses the consumer while 2 waits for its redelivery.
    let names = consumer_names(&nats, &stream).await;
    assert_eq!(names.len(), 1, "one ephemeral consumer: {names:?}");
    delete_consumer(&nats, &stream, &names[0]).await;

    let healed = eventually(DEADLINE, || async { ok.of(2) == 1 }).await;
    assert!(
        healed,
        "the nak'd message was skipped by the recreated consumer: {:?}",
        runs.all()
    );
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_durable_is_recreated_from_the_lowest_unsettled_message() {
    let (_server, nats) = started().await;
    let channel = "offpath.durable";
    let stream = nats.ensure_stream(channel).await.expect("stream");
    let (runs, ok) = (Runs::default(), Runs::default());
    let subscriber = |runs: Runs, ok: Runs| naks_two_once(channel, runs, ok).durable("keeper");
    let app = App::new()
        .subscriber(subscriber(runs.clone(), ok.clone()))
        .start(nats.clone())
        .await
        .expect("app starts");
    publish(&nats, channel, 1..=5).await;
    let before = eventually(DEADLINE, || async {
        (1..=5).filter(|id| *id != 2).all(|id| ok.of(id) == 1) && runs.of(2) == 1
    })
    .await;
    assert!(before, "1, 3, 4, 5 handled, 2 nak'd: {:?}", runs.all());
    delete_consumer(&nats, &stream, "keeper").await;

    let healed = eventually(DEADLINE, || async { ok.of(2) == 1 }).await;
    assert!(
        healed,
        "the recreated durable skipped the nak'd message: {:?}",
        runs.all()
    );
    app.shutdown().await.expect("clean shutdown");

    // The recreated durable starts where it resumed, not at the code's
    // start: that is no drift, and the next start binds it.
    App::new()
        .subscriber(subscriber(Runs::default(), Runs::default()))
        .start(nats.clone())
        .await
        .expect("the recreated durable is accepted at the next start")
        .shutdown()
        .await
        .expect("clean shutdown");
}

// ---------------------------------------------------------------------------
// idle heartbeats

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ack_mode_pulls_with_an_idle_heartbeat() {
    let (server, nats) = started().await;
    let watcher = async_nats::connect(server.url()).await.expect("watcher");
    let mut pulls = watcher
        .subscribe("$JS.API.CONSUMER.MSG.NEXT.>")
        .await
        .expect("watch pull requests");
    round_trip(&watcher).await.expect("watcher subscribed");

    let auto = Subscriber::new("offpath.beat.auto", |_job: Job| async {
        Ok::<(), JobError>(())
    })
    .durable("auto");
    let manual = Subscriber::new("offpath.beat.manual", |job: Message<Job>| async move {
        job.ack().await.map_err(|e| JobError(e.to_string()))
    })
    .durable("manual")
    .manual_ack();
    let app = App::new()
        .subscriber(auto)
        .subscriber(manual)
        .start(nats.clone())
        .await
        .expect("app starts");
    let mut seen = BTreeMap::new();
    while seen.len() < 2 {
        let request = tokio::time::timeout(DEADLINE, pulls.next())
            .await
            .expect("a pull request")
            .expect("watching");
        let body: serde_json::Value =
            serde_json::from_slice(&request.payload).expect("pull request JSON");
        seen.insert(request.subject.to_string(), body);
    }
    app.shutdown().await.expect("clean shutdown");
    for (subject, body) in seen {
        let heartbeat = body
            .get("idle_heartbeat")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        assert!(
            heartbeat > 0 && heartbeat <= 10_000_000_000,
            "{subject} asks for no idle heartbeat of at most 10 s: {body}"
        );
    }
}
