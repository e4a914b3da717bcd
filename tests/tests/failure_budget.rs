//! The failure budget holds across restarts and instances on a real
//! JetStream server: with `max_deliver` 10, a message that always fails runs
//! its handler at most 10 times in all and is dead-lettered once, whether its
//! app is shut down mid-retry after every delivery, aborted mid-retry like a
//! crash, or one of two instances bound to the durable that take turns with
//! it. The count lives in the `flowgate_attempts` key-value bucket; when that
//! bucket cannot be created, in-process retries stop and every delivery runs
//! the handler once, so the broker's delivery count still bounds it.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::stream::StorageType;
use flowgate::dead_letter::ATTEMPTS;
use flowgate::middleware::retry::{Backoff, RetryPolicy};
use flowgate::transport::jetstream::ATTEMPTS_BUCKET;
use flowgate::{App, Failure, Message, Publisher, Subscriber};
use flowgate_tests::{
    consumer_state, eventually, init_tracing, lock, stored_messages, JobError, NatsServer, DEADLINE,
};
use serde::{Deserialize, Serialize};

/// The failure budget of every test here.
const BUDGET: u32 = 10;
/// Short, so an abandoned delivery comes again within a second.
const ACK_WAIT: Duration = Duration::from_secs(1);
/// More instances than any run needs (the old per-process count needed 10).
const MOST_INSTANCES: usize = 16;

#[derive(Debug, Clone, Serialize, Deserialize, flowgate::Event)]
struct Job {
    id: u64,
}

/// One run of a handler: which instance, which attempt, which delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    instance: usize,
    attempt: u32,
    delivery: u32,
}

/// Every run of the handler, over all instances.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<Vec<Run>>>);

impl Runs {
    fn record(&self, instance: usize, job: &Message<Job>) {
        lock(&self.0).push(Run {
            instance,
            attempt: job.attempt(),
            delivery: job.delivery_count(),
        });
    }

    fn all(&self) -> Vec<Run> {
        lock(&self.0).clone()
    }

    fn of(&self, instance: usize) -> usize {
        lock(&self.0)
            .iter()
            .filter(|run| run.instance == instance)
            .count()
    }
}

/// Retries 20 ms apart, all in-process: one delivery could spend the whole
/// budget, so only a budget kept outside the process bounds a restarted app.
fn in_process_retries() -> RetryPolicy {
    RetryPolicy::default()
        .backoff_with(Backoff {
            initial: Duration::from_millis(20),
            multiplier: 1.0,
            max: Duration::from_millis(20),
            jitter: 0.0,
        })
        .in_process_limit(Duration::from_millis(100))
}

fn budgeted(subscriber: Subscriber, durable: &str) -> Subscriber {
    subscriber
        .durable(durable)
        .max_deliver(BUDGET)
        .ack_wait(ACK_WAIT)
        .max_in_flight(1)
        .retry(in_process_retries())
}

/// A handler whose first run in an instance fails (and is retried
/// in-process) and whose next run hangs until the instance is stopped: each
/// instance gets exactly one delivery and is stopped mid-retry.
fn fails_then_hangs(channel: &str, durable: &str, runs: &Runs, instance: usize) -> Subscriber {
    let runs = runs.clone();
    let here = Arc::new(AtomicU32::new(0));
    budgeted(
        Subscriber::new(channel, move |job: Message<Job>| {
            let runs = runs.clone();
            let here = here.clone();
            async move {
                runs.record(instance, &job);
                if here.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(JobError(format!("attempt {} fails", job.attempt())));
                }
                // Mid-retry when the instance stops.
                std::future::pending::<()>().await;
                Ok(())
            }
        }),
        durable,
    )
}

async fn publish_job(nats: &flowgate::JetStream, channel: &str) {
    Publisher::new(nats.clone())
        .publish_with(
            &Job { id: 1 },
            flowgate::PublishOptions::new().channel(channel),
        )
        .await
        .expect("publish");
}

async fn dead_lettered(nats: &flowgate::JetStream, channel: &str) -> bool {
    !stored_messages(nats, &format!("dlq.{channel}"))
        .await
        .is_empty()
}

/// Waits until the instance has run the handler twice (it is then
/// mid-retry) or the message is dead-lettered; true for the dead letter.
async fn mid_retry_or_dead_lettered(
    nats: &flowgate::JetStream,
    channel: &str,
    runs: &Runs,
    instance: usize,
) -> bool {
    let reached = eventually(DEADLINE, || async {
        runs.of(instance) >= 2 || dead_lettered(nats, channel).await
    })
    .await;
    assert!(
        reached,
        "instance {instance} neither ran twice nor dead-lettered the message; runs {:?}",
        runs.all()
    );
    dead_lettered(nats, channel).await
}

/// The message ends settled, with one dead letter that says `BUDGET`
/// attempts.
async fn dead_lettered_once(nats: &flowgate::JetStream, channel: &str, durable: &str) {
    let settled = eventually(DEADLINE, || async {
        consumer_state(nats, channel, durable)
            .await
            .is_some_and(|s| s.ack_floor == 1 && s.num_ack_pending == 0)
    })
    .await;
    assert!(settled, "the original is terminated");
    let letters = stored_messages(nats, &format!("dlq.{channel}")).await;
    assert_eq!(letters.len(), 1, "dead-lettered once");
    let attempts = letters[0]
        .headers
        .get(ATTEMPTS)
        .map(|value| value.as_str().to_owned());
    assert_eq!(attempts.as_deref(), Some("10"), "{:?}", letters[0].headers);
}

/// The message's record is dropped from the bucket once it is dead-lettered.
async fn record_dropped(nats: &flowgate::JetStream, channel: &str, durable: &str) {
    let bucket = nats
        .context()
        .get_key_value(ATTEMPTS_BUCKET)
        .await
        .expect("the attempt bucket exists");
    let key = format!("{}.{durable}.1", channel.replace('.', "_"));
    let forgotten = eventually(DEADLINE, || async {
        matches!(bucket.get(key.as_str()).await, Ok(None))
    })
    .await;
    assert!(forgotten, "the record {key} is dropped once dead-lettered");
}

fn assert_within_budget(runs: &Runs) {
    let all = runs.all();
    let attempts: Vec<u32> = all.iter().map(|run| run.attempt).collect();
    eprintln!(
        "handler runs: {} (attempt, delivery, instance): {:?}",
        all.len(),
        all.iter()
            .map(|run| (run.attempt, run.delivery, run.instance))
            .collect::<Vec<_>>()
    );
    assert!(
        all.len() <= BUDGET as usize,
        "the handler ran {} times, over the budget of {BUDGET}: attempts {attempts:?}",
        all.len()
    );
    let mut unique = attempts.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        attempts.len(),
        "no attempt number ran twice: {attempts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_shut_down_mid_retry_after_every_delivery_runs_the_handler_at_most_max_deliver_times(
) {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let (channel, durable) = ("budget.restart", "restarted");
    nats.ensure_stream(channel).await.expect("stream");
    let runs = Runs::default();
    let mut published = false;
    for instance in 0..MOST_INSTANCES {
        // Each instance is its own connection, as a restarted process would be.
        let connection = server.jetstream().await;
        let app = App::new()
            .subscriber(fails_then_hangs(channel, durable, &runs, instance))
            .shutdown_timeout(Duration::from_millis(100))
            .start(connection)
            .await
            .expect("app starts");
        if !published {
            publish_job(&nats, channel).await;
            published = true;
        }
        let done = mid_retry_or_dead_lettered(&nats, channel, &runs, instance).await;
        let stopped = app.shutdown().await;
        assert!(
            done || matches!(stopped, Err(flowgate::Error::ShutdownTimeout { .. })),
            "stopped mid-retry: the hanging handler is abandoned at the deadline ({stopped:?})"
        );
        if done {
            break;
        }
    }
    dead_lettered_once(&nats, channel, durable).await;
    assert_within_budget(&runs);
    record_dropped(&nats, channel, durable).await;

    let status = nats
        .context()
        .get_key_value(ATTEMPTS_BUCKET)
        .await
        .expect("bucket")
        .status()
        .await
        .expect("bucket status");
    let config = &status.info.config;
    assert_eq!(config.max_messages_per_subject, 1, "history 1");
    assert_eq!(config.storage, StorageType::File);
    assert_eq!(config.max_age, Duration::from_secs(7 * 24 * 3600));
}

/// An app on a runtime of its own, which can be stopped like a killed
/// process: every task dropped at its current await, the connection closed,
/// no graceful anything.
struct Crashable {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Crashable {
    async fn start(url: String, subscriber: Subscriber) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the app");
        let (started, running) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let nats = match flowgate::JetStream::connect(&url).await {
                Ok(nats) => nats,
                Err(err) => {
                    let _ = started.send(Err(err));
                    return;
                }
            };
            match App::new().subscriber(subscriber).start(nats).await {
                Ok(app) => {
                    // A crash runs no destructor: the app is never dropped.
                    let _app = ManuallyDrop::new(app);
                    let _ = started.send(Ok(()));
                    std::future::pending::<()>().await;
                }
                Err(err) => {
                    let _ = started.send(Err(err));
                }
            }
        });
        running
            .await
            .expect("the app's runtime answers")
            .expect("app starts");
        Self {
            runtime: Some(runtime),
        }
    }

    fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Crashable {
    /// A test that fails mid-way kills the app too (a runtime cannot be
    /// dropped the ordinary way inside another one).
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_killed_mid_retry_after_every_delivery_runs_the_handler_at_most_max_deliver_times() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let (channel, durable) = ("budget.crash", "crashed");
    nats.ensure_stream(channel).await.expect("stream");
    let runs = Runs::default();
    let mut published = false;
    for instance in 0..MOST_INSTANCES {
        let app = Crashable::start(
            server.url(),
            fails_then_hangs(channel, durable, &runs, instance),
        )
        .await;
        if !published {
            publish_job(&nats, channel).await;
            published = true;
        }
        let done = mid_retry_or_dead_lettered(&nats, channel, &runs, instance).await;
        app.kill();
        if done {
            break;
        }
    }
    dead_lettered_once(&nats, channel, durable).await;
    assert_within_budget(&runs);
    record_dropped(&nats, channel, durable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_taking_turns_with_a_failing_message_run_it_at_most_max_deliver_times() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let (channel, durable) = ("budget.shared", "shared");
    nats.ensure_stream(channel).await.expect("stream");
    let runs = Runs::default();
    // Each delivery: one failure retried in-process, then one that asks for
    // a delay longer than the in-process limit, so it goes back to the
    // broker, which hands the redelivery to the other instance's waiting pull.
    let instance = |index: usize| {
        let runs = runs.clone();
        let last_delivery = Arc::new(AtomicU32::new(0));
        budgeted(
            Subscriber::new(channel, move |job: Message<Job>| {
                let runs = runs.clone();
                let last_delivery = last_delivery.clone();
                async move {
                    runs.record(index, &job);
                    let error = JobError(format!("attempt {} fails", job.attempt()));
                    if last_delivery.swap(job.delivery_count(), Ordering::SeqCst)
                        != job.delivery_count()
                    {
                        return Err::<(), _>(Failure::retryable(error));
                    }
                    Err(Failure::retry_after(Duration::from_millis(300), error))
                }
            }),
            durable,
        )
    };
    let first = App::new()
        .subscriber(instance(0))
        .start(server.jetstream().await)
        .await
        .expect("first instance starts");
    let second = App::new()
        .subscriber(instance(1))
        .start(server.jetstream().await)
        .await
        .expect("second instance starts");
    publish_job(&nats, channel).await;

    let reached = eventually(DEADLINE, || dead_lettered(&nats, channel)).await;
    assert!(reached, "dead-lettered; runs {:?}", runs.all());
    dead_lettered_once(&nats, channel, durable).await;
    assert_within_budget(&runs);
    record_dropped(&nats, channel, durable).await;
    assert!(
        runs.of(0) > 0 && runs.of(1) > 0,
        "both instances took deliveries: {:?}",
        runs.all()
    );
    first.shutdown().await.expect("clean shutdown");
    second.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_writable_bucket_every_delivery_runs_the_handler_once() {
    init_tracing();
    // Two streams at most: the channel's and the dead letters'; the bucket's
    // stream is refused.
    let server = NatsServer::start_with_config(
        "accounts: { APP: { jetstream: { max_streams: 2 }, users: [ { user: app, password: app } ] } }\nno_auth_user: app\n",
    )
    .await;
    let nats = server.jetstream().await;
    let (channel, durable) = ("budget.nobucket", "unbucketed");
    nats.ensure_stream(channel).await.expect("stream");
    nats.ensure_stream(&format!("dlq.{channel}"))
        .await
        .expect("dead-letter stream");
    let runs = Runs::default();
    let recorded = runs.clone();
    let app = App::new()
        .subscriber(budgeted(
            Subscriber::new(channel, move |job: Message<Job>| {
                let runs = recorded.clone();
                async move {
                    runs.record(0, &job);
                    Err::<(), _>(JobError(format!("attempt {} fails", job.attempt())))
                }
            }),
            durable,
        ))
        .start(nats.clone())
        .await
        .expect("app starts");
    publish_job(&nats, channel).await;

    let reached = eventually(DEADLINE, || dead_lettered(&nats, channel)).await;
    assert!(reached, "dead-lettered; runs {:?}", runs.all());
    let all = runs.all();
    eprintln!("handler runs without a bucket: {all:?}");
    assert!(all.len() <= BUDGET as usize, "{all:?}");
    assert!(
        all.iter().all(|run| run.attempt == run.delivery),
        "no in-process retries: one run per delivery, numbered by it: {all:?}"
    );
    assert_eq!(
        stored_messages(&nats, &format!("dlq.{channel}"))
            .await
            .len(),
        1,
        "dead-lettered once"
    );
    assert!(
        nats.context().get_key_value(ATTEMPTS_BUCKET).await.is_err(),
        "no bucket could be made"
    );
    app.shutdown().await.expect("clean shutdown");
}
