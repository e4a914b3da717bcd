//! Coalesced acks (JetStream's ack-all policy) on a real server: fewer acks
//! on the wire, every message still handled and acked, and never an ack past
//! a message that failed and awaits redelivery.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::{App, Failure, PublishOptions, Publisher, Subscriber};
use flowgate_tests::{
    consumer_state, eventually, init_tracing, round_trip, JobError, NatsServer, DEADLINE,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
struct Job {
    id: u64,
}

async fn publish(nats: &flowgate::JetStream, channel: &str, ids: std::ops::Range<u64>) {
    let mut window = Publisher::new(nats.clone()).window(128);
    for id in ids {
        window
            .publish_with(&Job { id }, PublishOptions::new().channel(channel))
            .await
            .expect("publish");
    }
    window.flush().await.expect("stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_acks_settle_everything_with_fewer_acks() {
    const N: u64 = 2000;
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = "coalesce.all";
    nats.ensure_stream(channel).await.expect("stream");

    // Watch the acks the app sends for this consumer.
    let watcher = async_nats::connect(server.url()).await.expect("watcher");
    let mut acks = watcher
        .subscribe("$JS.ACK.coalesce_all.batcher.>")
        .await
        .expect("watch acks");
    round_trip(&watcher).await.expect("watcher subscribed");
    let ack_count = Arc::new(AtomicUsize::new(0));
    let counted = ack_count.clone();
    let counting = tokio::spawn(async move {
        while let Some(ack) = acks.next().await {
            if &ack.payload[..] == b"+ACK" {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });

    let handled = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = handled.clone();
    let app = App::new()
        .subscriber(
            Subscriber::new(channel, move |job: Job| {
                let seen = seen.clone();
                async move {
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(job.id);
                    Ok::<_, JobError>(())
                }
            })
            .durable("batcher")
            .max_in_flight(64)
            .coalesced_acks(),
        )
        .start(nats.clone())
        .await
        .expect("app starts");
    publish(&nats, channel, 0..N).await;

    let settled = eventually(DEADLINE, || async {
        consumer_state(&nats, channel, "batcher")
            .await
            .is_some_and(|s| s.ack_floor == N && s.num_ack_pending == 0)
    })
    .await;
    let state = consumer_state(&nats, channel, "batcher").await;
    assert!(settled, "every message acked: {state:?}");
    app.shutdown().await.expect("clean shutdown");
    assert_eq!(handled.lock().map(|h| h.len()).unwrap_or(0) as u64, N);
    let sent = ack_count.load(Ordering::SeqCst);
    assert!(sent > 0, "acks were watched");
    assert!(
        (sent as u64) < N / 4,
        "{sent} acks for {N} messages: coalescing should send far fewer"
    );
    counting.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_acks_past_a_failed_message_and_loses_nothing() {
    const N: u64 = 50;
    const POISON: u64 = 10;
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = "coalesce.poison";
    let handled = Arc::new(Mutex::new(Vec::new()));
    let healed = Arc::new(AtomicBool::new(false));
    let subscriber = |handled: Arc<Mutex<Vec<u64>>>, healed: Arc<AtomicBool>| {
        Subscriber::new(channel, move |job: Job| {
            let (handled, healed) = (handled.clone(), healed.clone());
            async move {
                if job.id == POISON && !healed.load(Ordering::SeqCst) {
                    // Fails, and asks to be retried a little later.
                    return Err(Failure::retry_after(
                        Duration::from_secs(2),
                        JobError("poison".into()),
                    ));
                }
                handled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(job.id);
                Ok(())
            }
        })
        .durable("careful")
        .max_in_flight(8)
        .max_deliver(1000)
        .coalesced_acks()
    };
    let app = App::new()
        .subscriber(subscriber(handled.clone(), healed.clone()))
        .start(nats.clone())
        .await
        .expect("app starts");
    publish(&nats, channel, 0..N).await;

    // The messages before the poison one are acked; the ones after it are
    // handled but not acked (an ack would cover the poison one too), until
    // the consumer's max_ack_pending (2 × max_in_flight) holds the rest back.
    let behind_poison = || {
        handled
            .lock()
            .map(|h| h.iter().filter(|id| **id > POISON).count())
            .unwrap_or(0)
    };
    let stalled = eventually(DEADLINE, || async {
        behind_poison() == 15
            && consumer_state(&nats, channel, "careful")
                .await
                .is_some_and(|s| s.ack_floor == POISON && s.num_ack_pending == 16)
    })
    .await;
    let state = consumer_state(&nats, channel, "careful")
        .await
        .expect("consumer");
    assert!(
        stalled,
        "acked up to the message before the poison one, no further: {state:?}"
    );
    let after_poison = handled
        .lock()
        .map(|h| h.iter().filter(|id| **id > POISON).count())
        .unwrap_or(0);
    assert_eq!(
        after_poison, 15,
        "handled behind the poison message, waiting for it"
    );
    app.shutdown().await.expect("clean shutdown");
    let state = consumer_state(&nats, channel, "careful")
        .await
        .expect("consumer");
    assert_eq!(
        state.ack_floor, POISON,
        "shutdown acked nothing past the poison message"
    );

    // A new app that can handle it: the poison message and everything after
    // it come back (handled twice is allowed; lost is not).
    healed.store(true, Ordering::SeqCst);
    let again = Arc::new(Mutex::new(Vec::new()));
    let app = App::new()
        .subscriber(subscriber(again.clone(), healed.clone()))
        .start(nats.clone())
        .await
        .expect("second app starts");
    let settled = eventually(Duration::from_secs(90), || async {
        consumer_state(&nats, channel, "careful")
            .await
            .is_some_and(|s| s.ack_floor == N && s.num_ack_pending == 0)
    })
    .await;
    let state = consumer_state(&nats, channel, "careful").await;
    assert!(settled, "all acked after the restart: {state:?}");
    app.shutdown().await.expect("clean shutdown");
    let redelivered: BTreeSet<u64> = again
        .lock()
        .map(|a| a.iter().copied().collect())
        .unwrap_or_default();
    assert!(
        redelivered.contains(&POISON),
        "the poison message was handled at last"
    );
    assert!(
        redelivered.iter().all(|id| *id >= POISON),
        "nothing acked before the poison message came back: {redelivered:?}"
    );
    let first: BTreeSet<u64> = handled
        .lock()
        .map(|h| h.iter().copied().collect())
        .unwrap_or_default();
    let all: BTreeSet<u64> = first.union(&redelivered).copied().collect();
    assert_eq!(all, (0..N).collect::<BTreeSet<_>>(), "no message lost");
}
