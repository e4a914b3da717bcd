//! How the outcome of a handler settles the message on a real JetStream
//! server: `Ok` acks, `Err` and panics nak for redelivery, a payload that does
//! not decode is terminated once.
//!
//! The handlers here are `#[flowgate::subscriber]` fns; each test shares state
//! with its handler through statics of its own.

use std::collections::BTreeMap;
use std::sync::Mutex;

use flowgate::{App, Message, Publisher};
use flowgate_tests::{
    channel_of, consumer_state, eventually, init_tracing, lock, JobError, NatsServer, DEADLINE,
};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------
// Ok => acked

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.settle.auto")]
struct AutoAckJob {
    id: u64,
}

static AUTO_ACK_HANDLED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

#[flowgate::subscriber(durable = "auto-ack")]
async fn handle_auto_ack(job: AutoAckJob) -> Result<(), JobError> {
    lock(&AUTO_ACK_HANDLED).push(job.id);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_outcome_acks_every_message() {
    const N: u64 = 200;
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = channel_of::<AutoAckJob>();
    let app = App::new()
        .subscriber(handle_auto_ack::subscriber())
        .start(nats.clone())
        .await
        .expect("app starts");

    let mut window = Publisher::new(nats.clone()).window(64);
    for id in 0..N {
        window.publish(&AutoAckJob { id }).await.expect("publish");
    }
    window
        .flush()
        .await
        .expect("every publish acked by the server");

    let acked = eventually(DEADLINE, || async {
        consumer_state(&nats, channel, "auto-ack")
            .await
            .is_some_and(|s| s.ack_floor == N && s.num_ack_pending == 0)
    })
    .await;
    let state = consumer_state(&nats, channel, "auto-ack").await;
    assert!(acked, "ack floor never reached {N}: {state:?}");

    let mut handled = lock(&AUTO_ACK_HANDLED).clone();
    handled.sort_unstable();
    assert_eq!(
        handled,
        (0..N).collect::<Vec<_>>(),
        "every id handled exactly once"
    );
    app.shutdown().await.expect("clean shutdown");
}

// ---------------------------------------------------------------------------
// Err => nak'd, redelivered, then acked

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.settle.err")]
struct FlakyJob {
    id: u64,
}

/// Per id, the delivery count of every call.
static FLAKY_CALLS: Mutex<BTreeMap<u64, Vec<u32>>> = Mutex::new(BTreeMap::new());

#[flowgate::subscriber(durable = "flaky")]
async fn fail_first_delivery(job: Message<FlakyJob>) -> Result<(), JobError> {
    let delivery = job.delivery_count();
    lock(&FLAKY_CALLS).entry(job.id).or_default().push(delivery);
    if delivery == 1 {
        return Err(JobError(format!("job {} fails its first delivery", job.id)));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_outcome_naks_and_the_redelivery_is_acked() {
    const N: u64 = 20;
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = channel_of::<FlakyJob>();
    // Broker-only retries: every failure goes back to the broker as a nak, so
    // the retry is a redelivery (in-process retries are tested elsewhere).
    let app = App::new()
        .subscriber(
            fail_first_delivery::subscriber()
                .retry(flowgate::middleware::retry::RetryPolicy::broker_only()),
        )
        .start(nats.clone())
        .await
        .expect("app starts");

    let publisher = Publisher::new(nats.clone());
    for id in 0..N {
        publisher.publish(&FlakyJob { id }).await.expect("publish");
    }

    let acked = eventually(DEADLINE, || async {
        consumer_state(&nats, channel, "flaky")
            .await
            .is_some_and(|s| s.ack_floor == N && s.num_ack_pending == 0)
    })
    .await;
    let state = consumer_state(&nats, channel, "flaky").await;
    assert!(acked, "ack floor never reached {N}: {state:?}");

    let calls = lock(&FLAKY_CALLS).clone();
    let expected: BTreeMap<u64, Vec<u32>> = (0..N).map(|id| (id, vec![1, 2])).collect();
    assert_eq!(
        calls, expected,
        "each message: failed on delivery 1, succeeded on delivery 2, never again"
    );
    app.shutdown().await.expect("clean shutdown");
}

// ---------------------------------------------------------------------------
// panic => nak'd, redelivered; the app keeps going

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.settle.panic")]
struct PanickyJob {
    id: u64,
}

/// Per id, the delivery count of the call that succeeded.
static PANICKY_SUCCEEDED: Mutex<BTreeMap<u64, Vec<u32>>> = Mutex::new(BTreeMap::new());

#[flowgate::subscriber(durable = "panicky")]
async fn panic_on_first_delivery(job: Message<PanickyJob>) -> Result<(), JobError> {
    if job.id.is_multiple_of(4) && job.delivery_count() == 1 {
        panic!("job {} panics on its first delivery", job.id);
    }
    lock(&PANICKY_SUCCEEDED)
        .entry(job.id)
        .or_default()
        .push(job.delivery_count());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handler_naks_and_the_app_keeps_processing() {
    const N: u64 = 20;
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = channel_of::<PanickyJob>();
    let app = App::new()
        .subscriber(panic_on_first_delivery::subscriber())
        .start(nats.clone())
        .await
        .expect("app starts");

    let publisher = Publisher::new(nats.clone());
    for id in 0..N {
        publisher
            .publish(&PanickyJob { id })
            .await
            .expect("publish");
    }
    let acked = eventually(DEADLINE, || async {
        consumer_state(&nats, channel, "panicky")
            .await
            .is_some_and(|s| s.ack_floor == N && s.num_ack_pending == 0)
    })
    .await;
    let state = consumer_state(&nats, channel, "panicky").await;
    assert!(acked, "ack floor never reached {N}: {state:?}");

    // After the panics, the app still takes new messages.
    publisher
        .publish(&PanickyJob { id: N + 1 })
        .await
        .expect("publish after the panics");
    let later_handled = eventually(DEADLINE, || async {
        lock(&PANICKY_SUCCEEDED).contains_key(&(N + 1))
    })
    .await;
    assert!(
        later_handled,
        "a message published after the panics was not handled"
    );

    let succeeded = lock(&PANICKY_SUCCEEDED).clone();
    let expected: BTreeMap<u64, Vec<u32>> = (0..N)
        .chain([N + 1])
        .map(|id| (id, vec![if id.is_multiple_of(4) { 2 } else { 1 }]))
        .collect();
    assert_eq!(
        succeeded, expected,
        "panicking messages succeed on delivery 2, the others on delivery 1, each once"
    );
    app.shutdown().await.expect("clean shutdown");
}

// ---------------------------------------------------------------------------
// a payload that does not decode => terminated, delivered once

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.settle.garbage")]
struct StrictJob {
    id: u64,
}

static STRICT_HANDLED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

#[flowgate::subscriber(durable = "strict")]
async fn handle_strict(job: Message<StrictJob>) -> Result<(), JobError> {
    lock(&STRICT_HANDLED).push(job.id);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_payload_is_terminated_once_without_calling_the_handler() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = channel_of::<StrictJob>();
    let app = App::new()
        .subscriber(handle_strict::subscriber())
        .start(nats.clone())
        .await
        .expect("app starts");

    // Sequence 1: bytes that are not JSON, straight through async-nats.
    let garbage = nats
        .context()
        .publish(channel, bytes::Bytes::from_static(b"\xff\x00 not json {"))
        .await
        .expect("publish garbage")
        .await
        .expect("garbage stored");
    assert_eq!(garbage.sequence, 1);
    // Sequence 2: a good message after it.
    Publisher::new(nats.clone())
        .publish(&StrictJob { id: 7 })
        .await
        .expect("publish a good message");

    // The ack floor passes sequence 1 only if the garbage was settled for good
    // (terminated); a nak would hold it at 0.
    let settled = eventually(DEADLINE, || async {
        consumer_state(&nats, channel, "strict")
            .await
            .is_some_and(|s| s.ack_floor == 2 && s.num_ack_pending == 0)
    })
    .await;
    let state = consumer_state(&nats, channel, "strict")
        .await
        .expect("consumer exists");
    assert!(settled, "ack floor never passed the garbage: {state:?}");
    assert_eq!(
        state.delivered_consumer_sequence, 2,
        "two messages, two deliveries: the garbage was not redelivered ({state:?})"
    );
    assert_eq!(state.num_redelivered, 0, "{state:?}");
    assert_eq!(
        *lock(&STRICT_HANDLED),
        vec![7],
        "the handler saw the good message only"
    );
    app.shutdown().await.expect("clean shutdown");
}
