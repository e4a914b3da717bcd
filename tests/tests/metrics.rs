//! The metrics flowgate records on the `metrics` facade, read back with
//! metrics-util's DebuggingRecorder (installed once for this test binary;
//! values are told apart by their channel label).

use std::collections::HashMap;
use std::time::Duration;

use flowgate::middleware::metrics::names;
use flowgate::middleware::retry::RetryPolicy;
use flowgate::{App, Failure, Message, PublishOptions, Publisher, Subscriber, Transport};
use flowgate_tests::{consumer_state, eventually, init_tracing, JobError, NatsServer};
use metrics::Key;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
struct Job {
    id: u64,
}

/// The snapshotter of the one recorder of this test binary, installed by
/// the first test that asks for it.
fn snapshotter() -> Snapshotter {
    static SNAPSHOTTER: std::sync::OnceLock<Snapshotter> = std::sync::OnceLock::new();
    SNAPSHOTTER
        .get_or_init(|| {
            let recorder = DebuggingRecorder::new();
            let snapshotter = recorder.snapshotter();
            recorder
                .install()
                .expect("the only recorder of this test binary");
            snapshotter
        })
        .clone()
}

/// Every metric recorded, with its description. Reading them resets the
/// counters, so each test reads once, and the tests take turns.
fn snapshot(snapshotter: &Snapshotter) -> Vec<(Key, Option<String>, DebugValue)> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, description, value)| {
            let description = description.map(|d| d.to_string());
            (key.key().clone(), description, value)
        })
        .collect()
}

/// Publishes a job of each id on `channel`, each stored before the next.
async fn publish_jobs<T: Transport>(
    publisher: &Publisher<T>,
    channel: &str,
    ids: impl IntoIterator<Item = u64>,
) {
    for id in ids {
        publisher
            .publish_with(&Job { id }, PublishOptions::new().channel(channel))
            .await
            .expect("publish");
    }
}

/// Tests of this binary take turns: a snapshot resets every counter.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn has_label(key: &Key, name: &str, value: &str) -> bool {
    key.labels().any(|l| l.key() == name && l.value() == value)
}

/// The value of every metric of `channel` without a `reason` label, by name.
fn values_of<'a>(
    snapshot: &'a [(Key, Option<String>, DebugValue)],
    channel: &str,
) -> HashMap<String, &'a DebugValue> {
    snapshot
        .iter()
        .filter(|(key, ..)| {
            has_label(key, "channel", channel)
                && !key
                    .labels()
                    .any(|l| l.key() == "reason" || l.key() == "outcome")
        })
        .map(|(key, _, value)| (key.name().to_owned(), value))
        .collect()
}

fn counter(values: &HashMap<String, &DebugValue>, name: &str) -> u64 {
    match values.get(name) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} is not a counter here: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlements_attempts_and_durations_are_counted_per_channel_and_durable() {
    init_tracing();
    let _turn = ONE_AT_A_TIME.lock().await;
    let snapshotter = snapshotter();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = "metrics.jobs";
    let app = App::new()
        .subscriber(
            Subscriber::new(channel, |job: Message<Job>| async move {
                match job.id {
                    5 => Err(Failure::permanent(JobError("job 5 is invalid".into()))),
                    6 if job.attempt() == 1 => Err(Failure::retryable(JobError("flaky".into()))),
                    _ => Ok(()),
                }
            })
            .durable("counted")
            .retry(RetryPolicy::broker_only()),
        )
        .start(nats.clone())
        .await
        .expect("app starts");
    let publisher = Publisher::new(nats.clone());
    publish_jobs(&publisher, channel, 0..7).await;
    let settled = eventually(Duration::from_secs(30), || async {
        consumer_state(&nats, channel, "counted")
            .await
            .is_some_and(|s| s.ack_floor == 7 && s.num_ack_pending == 0)
    })
    .await;
    assert!(settled, "all 7 settled");
    app.shutdown().await.expect("clean shutdown");

    let snapshot = snapshot(&snapshotter);
    let values = values_of(&snapshot, channel);
    assert_eq!(
        counter(&values, names::RECEIVED),
        8,
        "7 deliveries + 1 redelivery"
    );
    assert_eq!(counter(&values, names::ACKED), 6);
    assert_eq!(counter(&values, names::NAKD), 1);
    assert_eq!(
        dead_lettered_with(&snapshot, channel, "permanent"),
        1,
        "job 5"
    );
    assert_eq!(dead_lettered_with(&snapshot, channel, "budget_spent"), 0);
    assert_eq!(counter(&values, names::TERMINATED), 1);
    assert_eq!(
        counter(&values, names::PUBLISHED),
        7,
        "the publisher counts what the broker stored"
    );
    assert_eq!(
        durations(&snapshot, channel, "ok"),
        6,
        "one per attempt that succeeded"
    );
    assert_eq!(
        durations(&snapshot, channel, "failed"),
        2,
        "one per attempt that failed"
    );
    match values.get(names::IN_FLIGHT) {
        Some(DebugValue::Gauge(now)) => assert_eq!(now.into_inner(), 0.0, "nothing running"),
        other => panic!("no in-flight gauge: {other:?}"),
    }
    assert_eq!(counter(&values, names::REDELIVERED), 1, "job 6 came again");
    assert_eq!(failed_with(&snapshot, channel, "error"), 2, "jobs 5 and 6");
    assert_eq!(counter(&values, names::RETRIES), 0, "broker-only retries");
    let labelled_durable = snapshot
        .iter()
        .filter(|(key, ..)| {
            has_label(key, "channel", channel)
                && ![names::PUBLISHED, names::PUBLISH_FAILURES].contains(&key.name())
        })
        .all(|(key, ..)| has_label(key, "durable", "counted") && has_label(key, "queue", ""));
    assert!(
        labelled_durable,
        "metrics carry the durable label, and no queue"
    );
}

/// The dead letters of `channel` for `reason` (0 when never registered).
fn dead_lettered_with(
    snapshot: &[(Key, Option<String>, DebugValue)],
    channel: &str,
    reason: &str,
) -> u64 {
    labelled(snapshot, names::DEAD_LETTERED, channel, ("reason", reason))
        .map(|value| match value {
            DebugValue::Counter(n) => *n,
            other => panic!("{} is not a counter: {other:?}", names::DEAD_LETTERED),
        })
        .sum()
}

/// Every value of metric `name` of `channel` whose label `label` is `value`.
fn labelled<'a>(
    snapshot: &'a [(Key, Option<String>, DebugValue)],
    name: &'a str,
    channel: &'a str,
    (label, value): (&'a str, &'a str),
) -> impl Iterator<Item = &'a DebugValue> + 'a {
    snapshot
        .iter()
        .filter(move |(key, ..)| {
            key.name() == name && has_label(key, "channel", channel) && has_label(key, label, value)
        })
        .map(|(.., value)| value)
}

/// How many attempts of `channel` with `outcome` were timed.
fn durations(
    snapshot: &[(Key, Option<String>, DebugValue)],
    channel: &str,
    outcome: &str,
) -> usize {
    labelled(
        snapshot,
        names::HANDLER_DURATION,
        channel,
        ("outcome", outcome),
    )
    .map(|value| match value {
        DebugValue::Histogram(samples) => samples.len(),
        other => panic!("{} is not a histogram: {other:?}", names::HANDLER_DURATION),
    })
    .sum()
}

/// The failed attempts of `channel` for `reason` (0 when never registered).
fn failed_with(snapshot: &[(Key, Option<String>, DebugValue)], channel: &str, reason: &str) -> u64 {
    labelled(
        snapshot,
        names::ATTEMPTS_FAILED,
        channel,
        ("reason", reason),
    )
    .map(|value| match value {
        DebugValue::Counter(n) => *n,
        other => panic!("{} is not a counter: {other:?}", names::ATTEMPTS_FAILED),
    })
    .sum()
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_are_counted_by_reason_with_the_retries_and_redeliveries() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let snapshotter = snapshotter();
    let channel = "metrics.reasons";
    let broker = flowgate_testkit::InMemory::new();
    let handler = |job: Message<Job>| async move {
        match (job.id, job.attempt()) {
            (1, 1) => panic!("job 1 panics once"),
            (2, 1) => tokio::time::sleep(Duration::from_secs(60)).await,
            (3, 1 | 2) => return Err(Failure::retryable(JobError("job 3 fails twice".into()))),
            _ => {}
        }
        Ok(())
    };
    let app = App::new()
        .subscriber(
            Subscriber::new(channel, handler)
                .durable("reasons")
                .timeout(Duration::from_secs(1)),
        )
        .start(broker.clone())
        .await
        .expect("app starts");
    let publisher = Publisher::new(broker.clone());
    publish_jobs(&publisher, channel, 1..=3).await;
    broker
        .publish(flowgate::OutgoingMessage::new(channel, "not json"))
        .await
        .expect("sent")
        .await
        .expect("stored");
    broker.wait_idle().await;
    app.shutdown().await.expect("clean shutdown");

    let snapshot = snapshot(&snapshotter);
    assert_eq!(failed_with(&snapshot, channel, "panic"), 1);
    assert_eq!(failed_with(&snapshot, channel, "timeout"), 1);
    assert_eq!(failed_with(&snapshot, channel, "error"), 2);
    assert_eq!(failed_with(&snapshot, channel, "decode"), 1);
    assert_eq!(failed_with(&snapshot, channel, "output"), 0);
    assert_eq!(
        durations(&snapshot, channel, "failed"),
        5,
        "the timed-out one too"
    );
    assert_eq!(durations(&snapshot, channel, "ok"), 3);
    let described = |name: &str| {
        snapshot
            .iter()
            .any(|(key, description, _)| key.name() == name && description.is_some())
    };
    for name in [
        names::DEAD_LETTERED,
        names::PUBLISHED,
        names::ATTEMPTS_FAILED,
        names::RETRIES,
        names::REDELIVERED,
        names::RECEIVED,
        names::HANDLER_DURATION,
    ] {
        assert!(described(name), "{name} has no HELP description");
    }
    let values = values_of(&snapshot, channel);
    assert_eq!(
        counter(&values, names::RETRIES),
        4,
        "every retryable failure retried in-process"
    );
    assert_eq!(
        counter(&values, names::REDELIVERED),
        0,
        "nothing went back to the broker"
    );
    assert_eq!(counter(&values, names::NAKD), 0);
    assert_eq!(
        dead_lettered_with(&snapshot, channel, "decode"),
        1,
        "the payload that is not JSON"
    );
}

#[tokio::test(start_paused = true)]
async fn queue_groups_budget_spent_dead_letters_and_failed_publishes_have_their_own_labels() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let snapshotter = snapshotter();
    let channel = "metrics.queued";
    let broker = flowgate_testkit::InMemory::new();
    let app = App::new()
        .subscriber(
            Subscriber::new(channel, |_: Message<Job>| async move {
                Err::<(), _>(JobError("always fails".into()))
            })
            .queue("workers")
            .max_deliver(2)
            .retry(RetryPolicy::broker_only()),
        )
        .start(broker.clone())
        .await
        .expect("app starts");
    let publisher = Publisher::new(broker.clone());
    publisher
        .publish_with(&Job { id: 1 }, PublishOptions::new().channel(channel))
        .await
        .expect("publish");
    broker.fail_next_publish(channel);
    let refused = publisher
        .publish_with(&Job { id: 2 }, PublishOptions::new().channel(channel))
        .await;
    assert!(refused.is_err(), "the broker refused the second publish");
    broker.wait_idle().await;
    app.shutdown().await.expect("clean shutdown");

    let snapshot = snapshot(&snapshotter);
    assert_eq!(dead_lettered_with(&snapshot, channel, "budget_spent"), 1);
    let values = values_of(&snapshot, channel);
    assert_eq!(counter(&values, names::PUBLISHED), 1);
    assert_eq!(counter(&values, names::PUBLISH_FAILURES), 1);
    let queue_labelled = snapshot
        .iter()
        .filter(|(key, ..)| key.name() == names::RECEIVED && has_label(key, "channel", channel))
        .all(|(key, ..)| has_label(key, "queue", "workers") && has_label(key, "durable", ""));
    assert!(
        queue_labelled,
        "a queue group is labelled as one, not as a durable"
    );
    assert_eq!(
        counter(&values, names::RECEIVED),
        2,
        "two deliveries, then dead-lettered"
    );
}

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "metrics.receipts")]
struct Receipt {
    id: u64,
}

#[tokio::test(start_paused = true)]
async fn a_handlers_publishes_are_counted_by_their_channel() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let snapshotter = snapshotter();
    let channel = "metrics.paid";
    let broker = flowgate_testkit::InMemory::new();
    let handler = |job: Job, receipts: flowgate::extract::Publisher<Receipt>| async move {
        receipts.publish(&Receipt { id: job.id }).await?;
        Ok::<(), flowgate::PublishError>(())
    };
    let app = App::new()
        .subscriber(Subscriber::new(channel, handler).durable("receipts"))
        .start(broker.clone())
        .await
        .expect("app starts");
    let publisher = Publisher::new(broker.clone());
    publish_jobs(&publisher, channel, 1..=3).await;
    broker.wait_idle().await;
    app.shutdown().await.expect("clean shutdown");

    let snapshot = snapshot(&snapshotter);
    let receipts = values_of(&snapshot, "metrics.receipts");
    assert_eq!(
        counter(&receipts, names::PUBLISHED),
        3,
        "one receipt per job"
    );
    assert_eq!(counter(&receipts, names::PUBLISH_FAILURES), 0);
    assert_eq!(counter(&values_of(&snapshot, channel), names::PUBLISHED), 3);
}
