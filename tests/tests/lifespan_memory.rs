//! The app's startup and shutdown hooks on the in-memory broker, on a paused
//! clock: the checks, then the on_start hooks, then the subscriptions; the
//! drain, then the on_shutdown hooks; and what each failure stops and
//! reports.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::{App, Error, Failure, Publisher, State, Subscriber};
use flowgate_testkit::InMemory;
use flowgate_tests::lock;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
struct Job {
    id: u64,
}

/// What happened, in the order it happened.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, entry: impl Into<String>) {
        lock(&self.0).push(entry.into());
    }

    fn entries(&self) -> Vec<String> {
        lock(&self.0).clone()
    }
}

/// A hook that writes what `entry` says about the broker at the time.
fn recording(
    log: &Log,
    broker: &InMemory,
    entry: impl Fn(&InMemory) -> String + Send + Sync + 'static,
) -> impl Fn() -> std::future::Ready<Result<(), std::io::Error>> + Send + Sync + 'static {
    let (log, broker) = (log.clone(), broker.clone());
    move || {
        log.push(entry(&broker));
        std::future::ready(Ok(()))
    }
}

async fn publish(broker: &InMemory, channel: &str, id: u64) {
    Publisher::new(broker.clone())
        .publish_to(channel, &Job { id })
        .await
        .expect("the broker stores it");
}

fn live_subscriptions(broker: &InMemory, channel: &str) -> usize {
    broker
        .consumers(channel)
        .iter()
        .map(|c| c.live_subscriptions)
        .sum()
}

fn recording_subscriber(channel: &'static str, log: &Log) -> Subscriber {
    let log = log.clone();
    Subscriber::new(channel, move |job: Job| {
        let log = log.clone();
        async move {
            log.push(format!("handled {}", job.id));
            Ok::<(), Failure>(())
        }
    })
    .durable("worker")
    .start(flowgate::StartPosition::All)
}

#[derive(Debug, thiserror::Error)]
#[error("relation \"orders\" already exists")]
struct MigrationError;

async fn migrate() -> Result<(), MigrationError> {
    Err(MigrationError)
}

#[tokio::test(start_paused = true)]
async fn on_start_hooks_run_in_order_before_any_subscription_and_on_shutdown_hooks_after() {
    const CHANNEL: &str = "lifespan.order";
    let broker = InMemory::new();
    let log = Log::default();
    let publishing = {
        let (log, broker) = (log.clone(), broker.clone());
        move || {
            let (log, broker) = (log.clone(), broker.clone());
            async move {
                log.push(format!(
                    "on_start 1, consumers {}",
                    broker.consumers(CHANNEL).len()
                ));
                // A hook may publish: the subscriber, starting at the
                // stream's beginning, gets it.
                Publisher::new(broker)
                    .publish_to(CHANNEL, &Job { id: 7 })
                    .await
                    .map(drop)
            }
        }
    };
    let running = App::new()
        .subscriber(recording_subscriber(CHANNEL, &log))
        .on_start(recording(&log, &broker, |b| {
            format!("on_start 0, consumers {}", b.consumers(CHANNEL).len())
        }))
        .on_start(publishing)
        .on_shutdown(recording(&log, &broker, |b| {
            format!("on_shutdown 0, live {}", live_subscriptions(b, CHANNEL))
        }))
        .on_shutdown(recording(&log, &broker, |_| "on_shutdown 1".to_owned()))
        .start(broker.clone())
        .await
        .expect("the app starts");
    assert_eq!(live_subscriptions(&broker, CHANNEL), 1);
    broker.wait_idle().await;
    assert_eq!(broker.settlements(CHANNEL).acked(), vec![1]);
    assert_eq!(
        log.entries(),
        [
            "on_start 0, consumers 0",
            "on_start 1, consumers 0",
            "handled 7"
        ],
        "no on_shutdown hook runs before shutdown"
    );

    running.shutdown().await.expect("a clean shutdown");
    assert_eq!(
        log.entries(),
        [
            "on_start 0, consumers 0",
            "on_start 1, consumers 0",
            "handled 7",
            // The app's consumer stays bound until its dispatcher ends,
            // which is part of the drain.
            "on_shutdown 0, live 0",
            "on_shutdown 1",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_drain_finishes_the_in_flight_handler_before_on_shutdown_runs() {
    const CHANNEL: &str = "lifespan.drain";
    let broker = InMemory::new();
    let log = Log::default();
    let entered = Arc::new(Notify::new());
    let slow = {
        let (log, entered) = (log.clone(), entered.clone());
        Subscriber::new(CHANNEL, move |job: Job| {
            let (log, entered) = (log.clone(), entered.clone());
            async move {
                log.push(format!("handler {} began", job.id));
                entered.notify_one();
                // Work that takes a while on the paused clock.
                tokio::time::sleep(Duration::from_secs(5)).await;
                log.push(format!("handler {} ended", job.id));
                Ok::<(), Failure>(())
            }
        })
        .durable("worker")
    };
    let running = App::new()
        .subscriber(slow)
        .on_shutdown(recording(&log, &broker, |b| {
            format!("on_shutdown, acked {:?}", b.settlements(CHANNEL).acked())
        }))
        .start(broker.clone())
        .await
        .expect("the app starts");
    publish(&broker, CHANNEL, 1).await;
    entered.notified().await;
    assert_eq!(running.in_flight(), 1);

    running.shutdown().await.expect("a clean shutdown");
    assert_eq!(
        log.entries(),
        [
            "handler 1 began",
            "handler 1 ended",
            "on_shutdown, acked [1]"
        ],
        "the hook runs once the handler finished and its ack was settled"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_on_start_stops_the_start_subscribes_nothing_and_runs_the_shutdown_hooks() {
    const CHANNEL: &str = "lifespan.start_fails";
    let broker = InMemory::new();
    publish(&broker, CHANNEL, 1).await;
    let log = Log::default();
    let err = App::new()
        .subscriber(recording_subscriber(CHANNEL, &log))
        .on_start(recording(&log, &broker, |_| "on_start 0".to_owned()))
        .on_start(migrate)
        .on_start(recording(&log, &broker, |_| "on_start 2".to_owned()))
        .on_shutdown(recording(&log, &broker, |b| {
            format!("on_shutdown 0, consumers {}", b.consumers(CHANNEL).len())
        }))
        .on_shutdown(recording(&log, &broker, |_| "on_shutdown 1".to_owned()))
        .start(broker.clone())
        .await
        .expect_err("the migration fails");

    let Error::StartHook { index, name, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!((*index, *name), (1, "lifespan_memory::migrate"));
    assert_eq!(
        err.to_string(),
        "on_start hook #1 `lifespan_memory::migrate` failed: relation \"orders\" already exists; \
         the app did not start (nothing was subscribed, the on_shutdown hooks ran): \
         fix what the hook needs and start again"
    );
    assert_eq!(
        log.entries(),
        ["on_start 0", "on_shutdown 0, consumers 0", "on_shutdown 1"],
        "the later on_start hook does not run, every on_shutdown hook does"
    );
    assert!(broker.consumers(CHANNEL).is_empty(), "nothing subscribed");
    assert_eq!(broker.settlements(CHANNEL).acked(), Vec::<u64>::new());
}

#[tokio::test(start_paused = true)]
async fn a_panicking_on_start_is_a_start_hook_error() {
    let broker = InMemory::new();
    let log = Log::default();
    let err = App::new()
        .on_start(|| async {
            if true {
                panic!("no database url");
            }
            Ok::<(), std::io::Error>(())
        })
        .on_shutdown(recording(&log, &broker, |_| "on_shutdown".to_owned()))
        .start(broker.clone())
        .await
        .expect_err("the hook panics");
    assert!(
        matches!(&err, Error::StartHook { index: 0, source, .. } if source.to_string() == "panicked: no database url"),
        "{err:?}"
    );
    assert_eq!(log.entries(), ["on_shutdown"]);
}

#[tokio::test(start_paused = true)]
async fn a_subscription_that_fails_after_the_hooks_ran_runs_the_shutdown_hooks() {
    const FIRST: &str = "lifespan.subscribe_fails.a";
    const SECOND: &str = "lifespan.subscribe_fails.b";
    let broker = InMemory::new();
    let log = Log::default();
    // A durable on the broker with max_deliver 5 ...
    App::new()
        .subscriber(recording_subscriber(SECOND, &log).max_deliver(5))
        .start(broker.clone())
        .await
        .expect("the first app starts")
        .shutdown()
        .await
        .expect("and stops");
    // ... which the next app's subscriber wants with 3.
    let err = App::new()
        .subscriber(recording_subscriber(FIRST, &log))
        .subscriber(recording_subscriber(SECOND, &log).max_deliver(3))
        .on_start(recording(&log, &broker, |_| "on_start".to_owned()))
        .on_shutdown(recording(&log, &broker, |b| {
            format!(
                "on_shutdown, live {} + {}",
                live_subscriptions(b, FIRST),
                live_subscriptions(b, SECOND)
            )
        }))
        .start(broker.clone())
        .await
        .expect_err("the durable's settings differ");
    assert!(
        matches!(
            &err,
            Error::ConsumerMismatch {
                field: "max_deliver",
                ..
            }
        ),
        "the subscription's own error: {err:?}"
    );
    assert_eq!(
        log.entries(),
        ["on_start", "on_shutdown, live 0 + 0"],
        "the hooks ran, the shutdown ones after the first subscription was dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_on_shutdown_still_runs_the_others_and_is_reported() {
    let broker = InMemory::new();
    let log = Log::default();
    let flushing = {
        let log = log.clone();
        move || {
            let log = log.clone();
            async move {
                log.push("on_shutdown 1");
                Err::<(), _>("the cache is unreachable")
            }
        }
    };
    let running = App::new()
        .on_shutdown(recording(&log, &broker, |_| "on_shutdown 0".to_owned()))
        .on_shutdown(flushing)
        .on_shutdown(|| async {
            if true {
                panic!("pool poisoned");
            }
            Ok::<(), std::io::Error>(())
        })
        .on_shutdown(recording(&log, &broker, |_| "on_shutdown 3".to_owned()))
        .start(broker.clone())
        .await
        .expect("the app starts");
    let err = running.shutdown().await.expect_err("two hooks fail");

    assert_eq!(
        log.entries(),
        ["on_shutdown 0", "on_shutdown 1", "on_shutdown 3"],
        "every hook ran, in order"
    );
    let Error::ShutdownHooks { failures, drain } = &err else {
        panic!("{err:?}");
    };
    assert!(drain.is_none(), "{err:?}");
    let failed: Vec<_> = failures
        .iter()
        .map(|f| (f.index, f.error.to_string()))
        .collect();
    assert_eq!(
        failed,
        [
            (1, "the cache is unreachable".to_owned()),
            (2, "panicked: pool poisoned".to_owned()),
        ]
    );
    assert!(
        failures[0].name.starts_with("lifespan_memory::"),
        "{}",
        failures[0].name
    );
    let message = err.to_string();
    assert!(
        message
            .starts_with("2 on_shutdown hook(s) failed after a clean drain: #1 `lifespan_memory::"),
        "{message}"
    );
    assert!(
        message.contains("the cache is unreachable; #2 `"),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_drain_past_its_deadline_still_runs_the_hooks_and_comes_first_in_the_error() {
    const CHANNEL: &str = "lifespan.deadline";
    let broker = InMemory::new();
    let log = Log::default();
    let entered = Arc::new(Notify::new());
    let stuck = {
        let entered = entered.clone();
        Subscriber::new(CHANNEL, move |_: Job| {
            let entered = entered.clone();
            async move {
                entered.notify_one();
                std::future::pending::<Result<(), Failure>>().await
            }
        })
        .durable("worker")
    };
    let start = |failing: bool| {
        let log = log.clone();
        App::new()
            .subscriber(stuck.clone())
            .shutdown_timeout(Duration::from_secs(1))
            .on_shutdown(recording(&log, &broker, |_| "on_shutdown 0".to_owned()))
            .on_shutdown(move || {
                let log = log.clone();
                async move {
                    log.push("on_shutdown 1");
                    if failing {
                        Err("pool busy")
                    } else {
                        Ok(())
                    }
                }
            })
            .start(broker.clone())
    };

    // Hooks that succeed: the drain's error alone, as without hooks.
    let running = start(false).await.expect("the app starts");
    publish(&broker, CHANNEL, 1).await;
    entered.notified().await;
    let err = running
        .shutdown()
        .await
        .expect_err("the handler never ends");
    assert!(
        matches!(err, Error::ShutdownTimeout { remaining: 1, .. }),
        "{err:?}"
    );
    assert_eq!(log.entries(), ["on_shutdown 0", "on_shutdown 1"]);

    // A hook that fails too: both, the drain's error first.
    let running = start(true).await.expect("the app starts again");
    entered.notified().await; // the redelivery, after the ack wait
    let err = running.shutdown().await.expect_err("both fail");
    let Error::ShutdownHooks { failures, drain } = &err else {
        panic!("{err:?}");
    };
    assert!(
        matches!(
            drain.as_deref(),
            Some(Error::ShutdownTimeout { remaining: 1, .. })
        ),
        "{err:?}"
    );
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].index, 1);
    let message = err.to_string();
    assert!(
        message.starts_with(
            "the drain failed: 1 handler(s) still running after the 1s shutdown deadline"
        ),
        "{message}"
    );
    assert!(
        message.contains("then 1 on_shutdown hook(s) failed: #1 `"),
        "{message}"
    );
    assert!(message.contains("`: pool busy;"), "{message}");
    assert_eq!(
        log.entries(),
        [
            "on_shutdown 0",
            "on_shutdown 1",
            "on_shutdown 0",
            "on_shutdown 1"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_bad_subscriber_config_runs_no_hook() {
    #[derive(Clone)]
    struct Db;

    let broker = InMemory::new();
    let log = Log::default();
    let with_hooks = |app: App| {
        app.on_start(recording(&log, &broker, |_| "on_start".to_owned()))
            .on_shutdown(recording(&log, &broker, |_| "on_shutdown".to_owned()))
    };

    // Two subscribers on one durable: a check of the app.
    let twins = with_hooks(
        App::new()
            .subscriber(recording_subscriber("lifespan.config", &log).named("a"))
            .subscriber(recording_subscriber("lifespan.config", &log).named("b")),
    );
    let err = twins.start(broker.clone()).await.expect_err("refused");
    assert!(matches!(err, Error::Config(_)), "{err:?}");

    // A state the handler needs and the app lacks: a check of each subscriber.
    let stateless = with_hooks(App::new().subscriber(Subscriber::new(
        "lifespan.config",
        |_: Job, State(_): State<Db>| async { Ok::<(), Failure>(()) },
    )));
    let err = stateless.start(broker.clone()).await.expect_err("refused");
    assert!(matches!(err, Error::MissingState { .. }), "{err:?}");

    // A settings override for a name no subscriber has.
    let unknown = with_hooks(
        App::new()
            .subscriber(recording_subscriber("lifespan.config", &log))
            .configure("nobody", flowgate::SubscriberSettings::default()),
    );
    let err = unknown.start(broker.clone()).await.expect_err("refused");
    assert!(matches!(err, Error::Config(_)), "{err:?}");

    assert_eq!(log.entries(), Vec::<String>::new(), "no hook ran");
    assert!(broker.consumers("lifespan.config").is_empty());
}

#[tokio::test(start_paused = true)]
async fn run_until_runs_the_hooks_around_the_run_and_a_dropped_app_runs_none() {
    const CHANNEL: &str = "lifespan.run";
    let broker = InMemory::new();
    let log = Log::default();
    let app = App::new()
        .subscriber(recording_subscriber(CHANNEL, &log))
        .on_start({
            let broker = broker.clone();
            move || {
                let broker = broker.clone();
                async move {
                    Publisher::new(broker)
                        .publish_to(CHANNEL, &Job { id: 3 })
                        .await
                        .map(drop)
                }
            }
        })
        .on_shutdown(recording(&log, &broker, |_| "on_shutdown".to_owned()));

    // The signal: everything published was handled.
    let idle = {
        let broker = broker.clone();
        async move { broker.wait_idle().await }
    };
    app.clone()
        .run_until(broker.clone(), idle)
        .await
        .expect("a clean run");
    assert_eq!(log.entries(), ["handled 3", "on_shutdown"]);

    // Dropped without shutdown: the on_shutdown hooks do not run.
    let running = app.start(broker.clone()).await.expect("the app starts");
    broker.wait_idle().await;
    drop(running);
    assert_eq!(log.entries(), ["handled 3", "on_shutdown", "handled 3"]);
}
