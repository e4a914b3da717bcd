//! Concurrency on a real JetStream server: `max_in_flight` bounds the
//! handlers running at once, and a queue group shares the work between apps.
//!
//! The handlers here are closures handed to `Subscriber::new`, sharing state
//! with the test through `Arc`s.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowgate::{App, Publisher, Subscriber};
use flowgate_tests::{
    channel_of, consumer_state, eventually, init_tracing, lock, JobError, NatsServer, DEADLINE,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.concurrency.slow")]
struct SlowJob {
    id: u64,
}

/// Handlers running now and the most that ever ran at once.
#[derive(Default)]
struct Gauge {
    current: AtomicUsize,
    high_water: AtomicUsize,
    done: Mutex<Vec<u64>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_bounds_concurrent_handlers() {
    const N: u64 = 40;
    const LIMIT: usize = 4;
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let channel = channel_of::<SlowJob>();

    let gauge = Arc::new(Gauge::default());
    let handler = {
        let gauge = gauge.clone();
        move |job: SlowJob| {
            let gauge = gauge.clone();
            async move {
                let now = gauge.current.fetch_add(1, Ordering::SeqCst) + 1;
                gauge.high_water.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await; // the work
                gauge.current.fetch_sub(1, Ordering::SeqCst);
                lock(&gauge.done).push(job.id);
                Ok::<(), JobError>(())
            }
        }
    };
    let app = App::new()
        .subscriber(
            Subscriber::new(channel, handler)
                .durable("slow")
                .max_in_flight(LIMIT),
        )
        .start(nats.clone())
        .await
        .expect("app starts");

    let mut window = Publisher::new(nats.clone()).window(64);
    for id in 0..N {
        window.publish(&SlowJob { id }).await.expect("publish");
    }
    window.flush().await.expect("every publish acked");

    let mut most_reported = 0;
    let finished = eventually(DEADLINE, || {
        most_reported = most_reported.max(app.in_flight());
        async { lock(&gauge.done).len() as u64 == N }
    })
    .await;
    assert!(finished, "only {} of {N} handled", lock(&gauge.done).len());
    assert_eq!(
        gauge.high_water.load(Ordering::SeqCst),
        LIMIT,
        "{LIMIT} handlers ran at once at the most, and that many did"
    );
    assert!(
        most_reported <= LIMIT,
        "RunningApp::in_flight reported {most_reported} > {LIMIT}"
    );
    let acked = eventually(DEADLINE, || async {
        consumer_state(&nats, channel, "slow")
            .await
            .is_some_and(|s| s.ack_floor == N)
    })
    .await;
    assert!(acked, "{:?}", consumer_state(&nats, channel, "slow").await);
    let mut done = lock(&gauge.done).clone();
    done.sort_unstable();
    assert_eq!(done, (0..N).collect::<Vec<_>>());
    app.shutdown().await.expect("clean shutdown");
}

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "e2e.concurrency.shared")]
struct SharedJob {
    id: u64,
}

/// A subscriber in queue group `workers` that records what it handled.
fn worker(handled: Arc<Mutex<Vec<u64>>>) -> Subscriber {
    Subscriber::new(channel_of::<SharedJob>(), move |job: SharedJob| {
        let handled = handled.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await; // the work
            lock(&handled).push(job.id);
            Ok::<(), JobError>(())
        }
    })
    .queue("workers")
    .max_in_flight(8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_group_members_share_messages_without_duplicates() {
    const N: u64 = 200;
    init_tracing();
    let server = NatsServer::start().await;
    let channel = channel_of::<SharedJob>();
    // Two apps, two connections: as two processes would.
    let nats_a = server.jetstream().await;
    let nats_b = server.jetstream().await;
    let handled_a = Arc::new(Mutex::new(Vec::new()));
    let handled_b = Arc::new(Mutex::new(Vec::new()));
    let app_a = App::new()
        .subscriber(worker(handled_a.clone()))
        .start(nats_a.clone())
        .await
        .expect("app a starts");
    let app_b = App::new()
        .subscriber(worker(handled_b.clone()))
        .start(nats_b.clone())
        .await
        .expect("app b starts");

    let mut window = Publisher::new(nats_a.clone()).window(64);
    for id in 0..N {
        window.publish(&SharedJob { id }).await.expect("publish");
    }
    window.flush().await.expect("every publish acked");

    let all_acked = eventually(DEADLINE, || async {
        consumer_state(&nats_a, channel, "workers")
            .await
            .is_some_and(|s| s.ack_floor == N && s.num_ack_pending == 0)
    })
    .await;
    assert!(
        all_acked,
        "{:?}",
        consumer_state(&nats_a, channel, "workers").await
    );
    app_a.shutdown().await.expect("app a shuts down");
    app_b.shutdown().await.expect("app b shuts down");

    let a = lock(&handled_a).clone();
    let b = lock(&handled_b).clone();
    let set_a: BTreeSet<u64> = a.iter().copied().collect();
    let set_b: BTreeSet<u64> = b.iter().copied().collect();
    assert_eq!(set_a.len(), a.len(), "app a handled an id twice");
    assert_eq!(set_b.len(), b.len(), "app b handled an id twice");
    assert!(
        set_a.is_disjoint(&set_b),
        "both apps handled {:?}",
        set_a.intersection(&set_b).collect::<Vec<_>>()
    );
    let union: BTreeSet<u64> = set_a.union(&set_b).copied().collect();
    assert_eq!(union, (0..N).collect::<BTreeSet<_>>(), "every id handled");
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both members got work: a {}, b {}",
        a.len(),
        b.len()
    );
    eprintln!("queue group split: a {}, b {}", a.len(), b.len());
}

/// Handlers that compute (no await) still run side by side on a
/// multi-threaded runtime: the dispatcher stops polling them inline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_bound_handlers_run_in_parallel() {
    use flowgate_testkit::InMemory;
    let broker = InMemory::new();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let app = App::new()
        .subscriber(
            Subscriber::new("cpu.jobs", move |_job: SlowJob| {
                let (running, peak) = (r.clone(), p.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    // Blocking work, as a CPU-bound handler does (no await).
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, JobError>(())
                }
            })
            .durable("crunch")
            .max_in_flight(8),
        )
        .start(broker.clone())
        .await
        .expect("app starts");
    for id in 0..40 {
        broker
            .publish_event_with(
                &SlowJob { id },
                flowgate::PublishOptions::new().channel("cpu.jobs"),
            )
            .await
            .expect("published");
    }
    let settled = eventually(DEADLINE, || async {
        broker
            .consumer_info("cpu.jobs", "crunch")
            .is_some_and(|c| c.acked.len() == 40)
    })
    .await;
    assert!(settled, "all 40 acked");
    app.shutdown().await.expect("clean shutdown");
    assert!(
        peak.load(Ordering::SeqCst) >= 2,
        "CPU-bound handlers ran one at a time"
    );
}
