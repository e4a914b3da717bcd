//! Failure handling on the in-memory broker under tokio's paused clock: the
//! same rules as on JetStream (see failure_handling.rs), with virtual time, so
//! backoffs, timeouts and ack waits take no real time.

use flowgate_tests::JobError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::dead_letter::{ATTEMPTS, LAST_ERROR, ORIGINAL_SEQUENCE, ORIGINAL_SUBJECT};
use flowgate::middleware::retry::{Backoff, RetryPolicy};
use flowgate::{App, Failure, Message, OutgoingMessage, StartPosition, Subscriber, Transport};
use flowgate_testkit::InMemory;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "jobs")]
struct Job {
    id: u64,
}

/// What a handler saw: (attempt, delivery count, when), shared with the test.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(u32, u32, Instant)>>>);

impl Seen {
    fn push(&self, job: &Message<Job>) {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.push((job.attempt(), job.delivery_count(), Instant::now()));
    }

    fn attempts(&self) -> Vec<u32> {
        let seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter().map(|(attempt, ..)| *attempt).collect()
    }

    fn all(&self) -> Vec<(u32, u32, Instant)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn subscriber<F, Fut>(handler: F) -> Subscriber
where
    F: Fn(Message<Job>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Failure>> + Send + 'static,
{
    Subscriber::new("jobs", handler)
        .durable("worker")
        .start(StartPosition::All)
}

async fn run(broker: &InMemory, subscriber: Subscriber, jobs: &[u64]) {
    for id in jobs {
        broker
            .publish_event(&Job { id: *id })
            .await
            .expect("published");
    }
    let app = App::new()
        .subscriber(subscriber)
        .start(broker.clone())
        .await
        .expect("app starts");
    broker.wait_idle().await;
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(start_paused = true)]
async fn fails_twice_then_succeeds_and_is_acked_after_three_attempts() {
    let broker = InMemory::new();
    let seen = Seen::default();
    let log = seen.clone();
    let handler = move |job: Message<Job>| {
        let log = log.clone();
        async move {
            log.push(&job);
            if job.attempt() < 3 {
                return Err(Failure::retryable(JobError("not yet".into())));
            }
            Ok(())
        }
    };
    run(&broker, subscriber(handler), &[1]).await;
    assert_eq!(seen.attempts(), vec![1, 2, 3]);
    assert_eq!(broker.settlements("jobs").acked(), vec![1]);
    assert!(broker.channel_messages("dlq.jobs").is_empty());
}

#[tokio::test(start_paused = true)]
async fn always_failing_spends_exactly_the_budget_then_dead_letters_once() {
    let broker = InMemory::new();
    let seen = Seen::default();
    let log = seen.clone();
    let handler = move |job: Message<Job>| {
        let log = log.clone();
        async move {
            log.push(&job);
            Err(Failure::retryable(JobError(format!(
                "job {} is cursed",
                job.id
            ))))
        }
    };
    run(&broker, subscriber(handler).max_deliver(6), &[4]).await;
    assert_eq!(
        seen.attempts(),
        vec![1, 2, 3, 4, 5, 6],
        "exactly the budget"
    );
    let letters = broker.channel_messages("dlq.jobs");
    assert_eq!(letters.len(), 1, "one dead letter");
    let headers = letters[0].headers.as_ref().expect("headers");
    let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header(ORIGINAL_SUBJECT).as_deref(), Some("jobs"));
    assert_eq!(header(ORIGINAL_SEQUENCE).as_deref(), Some("1"));
    assert_eq!(header(ATTEMPTS).as_deref(), Some("6"));
    assert!(header(LAST_ERROR).is_some_and(|e| e.contains("job 4 is cursed")));
    assert_eq!(broker.settlements("jobs").terminated(), vec![1]);
}

#[tokio::test(start_paused = true)]
async fn nak_delays_follow_the_backoff_schedule() {
    let broker = InMemory::new();
    let seen = Seen::default();
    let log = seen.clone();
    let handler = move |job: Message<Job>| {
        let log = log.clone();
        async move {
            log.push(&job);
            Err(Failure::retryable(JobError("down".into())))
        }
    };
    let policy = RetryPolicy::broker_only().backoff_with(Backoff::default().without_jitter());
    run(
        &broker,
        subscriber(handler).max_deliver(4).retry(policy),
        &[1],
    )
    .await;
    let seen = seen.all();
    let deliveries: Vec<u32> = seen.iter().map(|(_, delivery, _)| *delivery).collect();
    assert_eq!(deliveries, vec![1, 2, 3, 4], "every retry was a redelivery");
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].2 - w[0].2).collect();
    assert_eq!(
        gaps,
        vec![
            Duration::from_millis(100),
            Duration::from_millis(200),
            Duration::from_millis(400)
        ],
        "no redelivery storm: the nak delays double"
    );
}

#[tokio::test(start_paused = true)]
async fn panics_and_timeouts_are_failures_that_count() {
    let broker = InMemory::new();
    let seen = Seen::default();
    let log = seen.clone();
    let handler = move |job: Message<Job>| {
        let log = log.clone();
        async move {
            log.push(&job);
            match job.attempt() {
                1 => panic!("attempt 1 blows up"),
                2 => tokio::time::sleep(Duration::from_secs(3600)).await, // hangs
                _ => {}
            }
            Ok(())
        }
    };
    let subscriber = subscriber(handler).timeout(Duration::from_secs(5));
    run(&broker, subscriber, &[1]).await;
    assert_eq!(
        seen.attempts(),
        vec![1, 2, 3],
        "a panic and a timeout, then success"
    );
    assert_eq!(broker.settlements("jobs").acked(), vec![1]);
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_and_undecodable_payloads_are_dead_lettered_at_once() {
    let broker = InMemory::new();
    let seen = Seen::default();
    let log = seen.clone();
    let handler = move |job: Message<Job>| {
        let log = log.clone();
        async move {
            log.push(&job);
            Err(Failure::permanent(JobError(format!(
                "job {} is invalid",
                job.id
            ))))
        }
    };
    broker
        .publish(OutgoingMessage::new("jobs", "not json"))
        .await
        .expect("garbage stored")
        .await
        .expect("acked");
    run(&broker, subscriber(handler), &[2]).await;
    assert_eq!(
        seen.attempts(),
        vec![1],
        "the permanent failure was not retried"
    );
    let letters = broker.channel_messages("dlq.jobs");
    assert_eq!(letters.len(), 2);
    assert_eq!(&letters[0].payload[..], b"not json", "kept as it was");
    let mut terminated = broker.settlements("jobs").terminated();
    terminated.sort_unstable();
    assert_eq!(terminated, vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_standard_tower_timeout_applied_by_the_user_makes_a_retryable_failure() {
    let broker = InMemory::new();
    let seen = Seen::default();
    let log = seen.clone();
    let handler = move |job: Message<Job>| {
        let log = log.clone();
        async move {
            log.push(&job);
            if job.attempt() == 1 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Ok(())
        }
    };
    for id in [1] {
        broker.publish_event(&Job { id }).await.expect("published");
    }
    let app = App::new()
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(2)))
        .subscriber(subscriber(handler))
        .start(broker.clone())
        .await
        .expect("app starts");
    broker.wait_idle().await;
    app.shutdown().await.expect("clean shutdown");
    // tower's timeout sits outside flowgate's retry layer, so its Elapsed
    // error reaches the dispatcher: a retryable failure, nak'd and redelivered.
    let attempts = seen.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let deliveries: Vec<u32> = seen.all().iter().map(|(_, d, _)| *d).collect();
    assert_eq!(deliveries, vec![1, 2], "the retry was a redelivery");
    assert_eq!(broker.settlements("jobs").acked(), vec![1]);
    assert!(broker.channel_messages("dlq.jobs").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_tower_timeout_as_an_attempt_layer_bounds_each_attempt_and_is_retried_in_process() {
    let broker = InMemory::new();
    let seen = Seen::default();
    let log = seen.clone();
    let handler = move |job: Message<Job>| {
        let log = log.clone();
        async move {
            log.push(&job);
            if job.attempt() == 1 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Ok(())
        }
    };
    broker
        .publish_event(&Job { id: 1 })
        .await
        .expect("published");
    let calls = Arc::new(Mutex::new((0, 0)));
    let (per_delivery, per_attempt) = (calls.clone(), calls.clone());
    let app = App::new()
        .layer(tower::util::MapRequestLayer::new(move |request| {
            flowgate_tests::lock(&per_delivery).0 += 1;
            request
        }))
        .attempt_layer(tower::util::MapRequestLayer::new(move |request| {
            flowgate_tests::lock(&per_attempt).1 += 1;
            request
        }))
        .subscriber(
            subscriber(handler)
                .attempt_layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(2))),
        )
        .start(broker.clone())
        .await
        .expect("app starts");
    broker.wait_idle().await;
    app.shutdown().await.expect("clean shutdown");
    // Inside flowgate's retry, the timeout cuts off one attempt; the next
    // one runs in-process, on the same delivery.
    let seen = seen.all();
    let runs: Vec<(u32, u32)> = seen.iter().map(|(a, d, _)| (*a, *d)).collect();
    assert_eq!(
        runs,
        vec![(1, 1), (2, 1)],
        "(attempt, delivery) of each run"
    );
    let waited = seen[1].2 - seen[0].2;
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "the second attempt began after the first one's 2 s and a short backoff, not after {waited:?}"
    );
    assert_eq!(
        *flowgate_tests::lock(&calls),
        (1, 2),
        "the delivery layer saw the message once, the attempt layer each attempt"
    );
    assert_eq!(broker.settlements("jobs").acked(), vec![1]);
}

#[tokio::test(start_paused = true)]
async fn dead_letters_carry_the_payload_with_and_without_user_layers() {
    // Without layers the runtime's stack hands the failed request back for
    // its dead letter; a user's tower layer consumes it, so the dispatcher
    // keeps a copy: both must dead-letter the payload as it was published.
    for layered in [false, true] {
        let broker = InMemory::new();
        let handler = |job: Message<Job>| async move {
            Err(Failure::retryable(JobError(format!(
                "job {} fails",
                job.id
            ))))
        };
        broker
            .publish_event(&Job { id: 7 })
            .await
            .expect("published");
        let app = App::new();
        let app = if layered {
            app.layer(tower::util::MapRequestLayer::new(|request| request))
        } else {
            app
        };
        let app = app
            .subscriber(subscriber(handler).max_deliver(3))
            .start(broker.clone())
            .await
            .expect("app starts");
        broker.wait_idle().await;
        app.shutdown().await.expect("clean shutdown");
        let letters = broker.channel_messages("dlq.jobs");
        assert_eq!(letters.len(), 1, "layered: {layered}");
        let published = serde_json::to_vec(&Job { id: 7 }).expect("encodes");
        assert_eq!(
            &letters[0].payload[..],
            &published[..],
            "layered: {layered}"
        );
        assert_eq!(broker.settlements("jobs").terminated(), vec![1]);
    }
}
