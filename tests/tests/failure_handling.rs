//! Failure handling on a real JetStream server: in-process retries and broker
//! redeliveries share one budget; a spent budget, a permanent error or an
//! undecodable payload goes to the dead letters (headers say where from and
//! why) before the original is terminated; timeouts and panics are failures;
//! long handlers are kept alive by progress acks; messages whose deliveries
//! run out unsettled reach the dead letters through the server's advisory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::dead_letter::{ATTEMPTS, FAILED_AT, LAST_ERROR, ORIGINAL_SEQUENCE, ORIGINAL_SUBJECT};
use flowgate::middleware::retry::RetryPolicy;
use flowgate::{App, Failure, Message, Publisher, Subscriber};
use flowgate_tests::{
    consumer_state, eventually, init_tracing, stored_messages, JobError, NatsServer, DEADLINE,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, flowgate::Event)]
struct Job {
    id: u64,
}

/// The attempt numbers a handler saw, shared with the test.
#[derive(Clone, Default)]
struct Attempts(Arc<Mutex<Vec<u32>>>);

impl Attempts {
    fn push(&self, attempt: u32) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(attempt);
    }

    fn seen(&self) -> Vec<u32> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn header<'a>(message: &'a async_nats::jetstream::message::StreamMessage, name: &str) -> &'a str {
    message
        .headers
        .get(name)
        .map(|value| value.as_str())
        .unwrap_or_else(|| panic!("dead letter lacks header {name}: {:?}", message.headers))
}

async fn publish_job(nats: &flowgate::JetStream, channel: &str, id: u64) {
    Publisher::new(nats.clone())
        .publish_with(
            &Job { id },
            flowgate::PublishOptions::new().channel(channel),
        )
        .await
        .expect("publish");
}

async fn dead_letters_reach(
    nats: &flowgate::JetStream,
    subject: &str,
    count: usize,
) -> Vec<async_nats::jetstream::message::StreamMessage> {
    let reached = eventually(DEADLINE, || async {
        stored_messages(nats, subject).await.len() >= count
    })
    .await;
    let letters = stored_messages(nats, subject).await;
    assert!(
        reached,
        "expected {count} dead letter(s) on {subject}, found {}",
        letters.len()
    );
    letters
}

async fn all_settled(nats: &flowgate::JetStream, channel: &str, durable: &str, floor: u64) -> bool {
    eventually(DEADLINE, || async {
        consumer_state(nats, channel, durable)
            .await
            .is_some_and(|s| s.ack_floor == floor && s.num_ack_pending == 0)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_twice_then_succeeds_is_acked_after_three_attempts() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let attempts = Attempts::default();
    let seen = attempts.clone();
    let app = App::new()
        .subscriber(
            Subscriber::new("fail.twice", move |job: Message<Job>| {
                let seen = seen.clone();
                async move {
                    seen.push(job.attempt());
                    if job.attempt() < 3 {
                        return Err(JobError(format!("attempt {} fails", job.attempt())));
                    }
                    Ok(())
                }
            })
            .durable("twice"),
        )
        .start(nats.clone())
        .await
        .expect("app starts");
    publish_job(&nats, "fail.twice", 1).await;

    assert!(
        all_settled(&nats, "fail.twice", "twice", 1).await,
        "message acked"
    );
    assert_eq!(attempts.seen(), vec![1, 2, 3]);
    assert!(
        stored_messages(&nats, "dlq.fail.twice").await.is_empty(),
        "no dead letter"
    );
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_failing_message_spends_the_budget_then_is_dead_lettered_once() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let attempts = Attempts::default();
    let seen = attempts.clone();
    // Attempts 1–3 in-process (100, 200 ms apart); the 400 ms wait after attempt 3
    // is longer than the in-process limit, so it is a nak and attempt 4 is a
    // broker redelivery. The budget of 4 counts them all.
    let policy = RetryPolicy::default()
        .backoff_with(flowgate::middleware::retry::Backoff::default().without_jitter())
        .in_process_limit(Duration::from_millis(250));
    let app = App::new()
        .subscriber(
            Subscriber::new("fail.always", move |job: Message<Job>| {
                let seen = seen.clone();
                async move {
                    seen.push(job.attempt());
                    Err::<(), _>(JobError(format!("card declined for job {}", job.id)))
                }
            })
            .durable("always")
            .max_deliver(4)
            .retry(policy),
        )
        .start(nats.clone())
        .await
        .expect("app starts");
    publish_job(&nats, "fail.always", 7).await;

    let letters = dead_letters_reach(&nats, "dlq.fail.always", 1).await;
    assert!(
        all_settled(&nats, "fail.always", "always", 1).await,
        "original terminated"
    );
    assert_eq!(
        attempts.seen(),
        vec![1, 2, 3, 4],
        "exactly the budget of attempts"
    );
    let state = consumer_state(&nats, "fail.always", "always")
        .await
        .expect("consumer");
    assert_eq!(
        state.delivered_consumer_sequence, 2,
        "one nak, one redelivery: {state:?}"
    );

    let letter = &letters[0];
    assert_eq!(letters.len(), 1, "one dead letter");
    assert_eq!(header(letter, ORIGINAL_SUBJECT), "fail.always");
    assert_eq!(header(letter, ORIGINAL_SEQUENCE), "1");
    assert_eq!(header(letter, ATTEMPTS), "4");
    assert_eq!(
        header(letter, LAST_ERROR),
        "handler failed: card declined for job 7"
    );
    assert!(
        header(letter, FAILED_AT).starts_with("20"),
        "an RFC 3339 time"
    );
    let original: Job = serde_json::from_slice(&letter.payload).expect("the original payload");
    assert_eq!(original.id, 7);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_count_against_the_budget() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = App::new()
        .subscriber(
            Subscriber::new("fail.panic", move |job: Job| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    if job.id < 1000 {
                        panic!("job {} blew up", job.id);
                    }
                    Ok::<_, JobError>(())
                }
            })
            .durable("panicky")
            .max_deliver(2),
        )
        .start(nats.clone())
        .await
        .expect("app starts");
    publish_job(&nats, "fail.panic", 3).await;

    let letters = dead_letters_reach(&nats, "dlq.fail.panic", 1).await;
    assert_eq!(header(&letters[0], ATTEMPTS), "2");
    assert!(header(&letters[0], LAST_ERROR).contains("job 3 blew up"));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "two attempts, both panicked"
    );
    // The app survived its panics: the next message is handled normally.
    publish_job(&nats, "fail.panic", 1000).await;
    assert!(all_settled(&nats, "fail.panic", "panicky", 2).await);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_attempt_is_retried() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let attempts = Attempts::default();
    let seen = attempts.clone();
    let app = App::new()
        .subscriber(
            Subscriber::new("fail.timeout", move |job: Message<Job>| {
                let seen = seen.clone();
                async move {
                    seen.push(job.attempt());
                    if job.attempt() == 1 {
                        tokio::time::sleep(Duration::from_secs(60)).await; // hangs
                    }
                    Ok::<_, JobError>(())
                }
            })
            .durable("slowpoke")
            .timeout(Duration::from_millis(200)),
        )
        .start(nats.clone())
        .await
        .expect("app starts");
    publish_job(&nats, "fail.timeout", 1).await;

    assert!(all_settled(&nats, "fail.timeout", "slowpoke", 1).await);
    assert_eq!(
        attempts.seen(),
        vec![1, 2],
        "the timed-out attempt was tried again"
    );
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_and_undecodable_payloads_are_dead_lettered_at_once() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = App::new()
        .subscriber(
            Subscriber::new("fail.permanent", move |job: Job| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>(Failure::permanent(JobError(format!(
                        "job {} is invalid",
                        job.id
                    ))))
                }
            })
            .durable("strict"),
        )
        .start(nats.clone())
        .await
        .expect("app starts");
    publish_job(&nats, "fail.permanent", 5).await;
    nats.context()
        .publish("fail.permanent", bytes::Bytes::from_static(b"\x00not json"))
        .await
        .expect("send garbage")
        .await
        .expect("garbage stored");

    let letters = dead_letters_reach(&nats, "dlq.fail.permanent", 2).await;
    assert!(all_settled(&nats, "fail.permanent", "strict", 2).await);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the handler ran once, for the decodable one"
    );
    let by_sequence = |seq: &str| {
        letters
            .iter()
            .find(|l| header(l, ORIGINAL_SEQUENCE) == seq)
            .unwrap_or_else(|| panic!("no dead letter for sequence {seq}"))
    };
    let permanent = by_sequence("1");
    assert_eq!(header(permanent, ATTEMPTS), "1");
    assert!(header(permanent, LAST_ERROR).contains("job 5 is invalid"));
    let garbage = by_sequence("2");
    assert_eq!(header(garbage, ATTEMPTS), "1");
    assert_eq!(
        &garbage.payload[..],
        b"\x00not json",
        "the payload is kept as it was"
    );
    assert!(header(garbage, LAST_ERROR).contains("json"));
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_six_second_handler_with_a_two_second_ack_wait_is_not_redelivered() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = App::new()
        .subscriber(
            Subscriber::new("slow.work", move |_job: Job| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(6)).await; // the work
                    Ok::<_, JobError>(())
                }
            })
            .durable("patient")
            .ack_wait(Duration::from_secs(2)),
        )
        .start(nats.clone())
        .await
        .expect("app starts");
    publish_job(&nats, "slow.work", 1).await;

    assert!(all_settled(&nats, "slow.work", "patient", 1).await);
    let state = consumer_state(&nats, "slow.work", "patient")
        .await
        .expect("consumer");
    assert_eq!(
        state.delivered_consumer_sequence, 1,
        "delivered once: {state:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tower_layer_flowgate_did_not_write_works_unchanged() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let (r, p, h) = (running.clone(), peak.clone(), handled.clone());
    let app = App::new()
        .layer(tower::limit::ConcurrencyLimitLayer::new(1))
        .subscriber(
            Subscriber::new("tower.limit", move |_job: Job| {
                let (running, peak, handled) = (r.clone(), p.clone(), h.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await; // the work
                    running.fetch_sub(1, Ordering::SeqCst);
                    handled.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, JobError>(())
                }
            })
            .durable("limited")
            .max_in_flight(8),
        )
        .start(nats.clone())
        .await
        .expect("app starts");
    for id in 0..20 {
        publish_job(&nats, "tower.limit", id).await;
    }
    assert!(all_settled(&nats, "tower.limit", "limited", 20).await);
    assert_eq!(handled.load(Ordering::SeqCst), 20);
    assert_eq!(
        peak.load(Ordering::SeqCst),
        1,
        "tower's ConcurrencyLimitLayer held it to 1"
    );
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_that_run_out_unsettled_reach_the_dead_letters() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let subscriber = || {
        Subscriber::new("crash.site", |_job: Job| async { Ok::<_, JobError>(()) })
            .durable("survivor")
            .max_deliver(1)
            .ack_wait(Duration::from_secs(2))
    };
    // Creates the durable, then goes away.
    App::new()
        .subscriber(subscriber())
        .start(nats.clone())
        .await
        .expect("first app starts")
        .shutdown()
        .await
        .expect("first app stops");
    publish_job(&nats, "crash.site", 9).await;

    // An app that takes the message and dies without a word (never settles it).
    let stream = nats
        .context()
        .get_stream("crash_site")
        .await
        .expect("stream");
    let consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("survivor").await.expect("durable");
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .messages()
        .await
        .expect("fetch");
    use futures::StreamExt;
    let taken = batch.next().await.expect("one message").expect("a message");
    assert_eq!(taken.info().expect("metadata").stream_sequence, 1);
    drop(batch);

    // The running app learns from the server's advisory and dead-letters it.
    let app = App::new()
        .subscriber(subscriber())
        .start(nats.clone())
        .await
        .expect("second app starts");
    let letters = dead_letters_reach(&nats, "dlq.crash.site", 1).await;
    assert_eq!(header(&letters[0], ORIGINAL_SEQUENCE), "1");
    assert_eq!(header(&letters[0], ATTEMPTS), "1");
    assert!(header(&letters[0], LAST_ERROR).contains("max deliveries"));
    app.shutdown().await.expect("clean shutdown");
}
