//! The metrics flowgate records on the `metrics` facade, read back with
//! metrics-util's DebuggingRecorder (installed once for this test binary;
//! values are told apart by their channel label).

use std::collections::HashMap;
use std::time::Duration;

use flowgate::middleware::metrics::names;
use flowgate::middleware::retry::RetryPolicy;
use flowgate::{App, Failure, Message, PublishOptions, Publisher, Subscriber};
use flowgate_tests::{consumer_state, eventually, init_tracing, JobError, NatsServer};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
struct Job {
    id: u64,
}

fn snapshotter() -> Snapshotter {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    snapshotter
}

/// The value of every metric of `channel`, by name.
fn values_of(snapshotter: &Snapshotter, channel: &str) -> HashMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            key.key()
                .labels()
                .any(|label| label.key() == "channel" && label.value() == channel)
        })
        .map(|(key, _, _, value)| (key.key().name().to_owned(), value))
        .collect()
}

fn counter(values: &HashMap<String, DebugValue>, name: &str) -> u64 {
    match values.get(name) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} is not a counter here: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlements_attempts_and_durations_are_counted_per_channel_and_durable() {
    init_tracing();
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
    for id in 0..7 {
        publisher
            .publish_with(&Job { id }, PublishOptions::new().channel(channel))
            .await
            .expect("publish");
    }
    let settled = eventually(Duration::from_secs(30), || async {
        consumer_state(&nats, channel, "counted")
            .await
            .is_some_and(|s| s.ack_floor == 7 && s.num_ack_pending == 0)
    })
    .await;
    assert!(settled, "all 7 settled");
    app.shutdown().await.expect("clean shutdown");

    let values = values_of(&snapshotter, channel);
    assert_eq!(
        counter(&values, names::RECEIVED),
        8,
        "7 deliveries + 1 redelivery"
    );
    assert_eq!(counter(&values, names::ACKED), 6);
    assert_eq!(counter(&values, names::NAKD), 1);
    assert_eq!(counter(&values, names::DEAD_LETTERED), 1);
    assert_eq!(counter(&values, names::TERMINATED), 1);
    match values.get(names::HANDLER_DURATION) {
        Some(DebugValue::Histogram(samples)) => assert_eq!(samples.len(), 8, "one per attempt"),
        other => panic!("no duration histogram: {other:?}"),
    }
    match values.get(names::IN_FLIGHT) {
        Some(DebugValue::Gauge(now)) => assert_eq!(now.into_inner(), 0.0, "nothing running"),
        other => panic!("no in-flight gauge: {other:?}"),
    }
    let labelled_durable = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .any(|(key, ..)| {
            key.key()
                .labels()
                .any(|l| l.key() == "durable" && l.value() == "counted")
        });
    assert!(labelled_durable, "metrics carry the durable label");
}
