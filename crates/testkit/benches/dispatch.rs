//! Testkit dispatch of no-op handlers through a real `App` on one core (a
//! current-thread runtime): messages handled and acked per second.
//!
//! Each sample publishes a batch into a fresh broker (not timed), starts an
//! app whose subscriber reads from the start, and times until the broker is
//! idle: every message delivered, handled and acked.
//!
//! `cargo bench -p flowgate-testkit --bench dispatch -- --warm-up-time 1 --measurement-time 5`

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowgate::{App, OutgoingMessage, StartPosition, Subscriber, Transport};
use flowgate_testkit::InMemory;

const BATCH: u64 = 10_000;

#[derive(serde::Serialize, serde::Deserialize, flowgate::Event)]
#[event(channel = "bench.noop")]
struct Noop {}

async fn noop(_: Noop) -> Result<(), std::io::Error> {
    Ok(())
}

async fn one_batch() -> Duration {
    let broker = InMemory::new();
    for _ in 0..BATCH {
        let receipt = broker
            .publish(OutgoingMessage::new("bench.noop", "{}"))
            .await
            .expect("published");
        receipt.await.expect("stored");
    }
    let subscriber = Subscriber::new("bench.noop", noop)
        .start(StartPosition::All)
        .max_in_flight(256);
    let started = Instant::now();
    let app = App::new()
        .subscriber(subscriber)
        .start(broker.clone())
        .await
        .expect("app starts");
    broker.wait_idle().await;
    let took = started.elapsed();
    app.shutdown().await.expect("clean shutdown");
    took
}

fn dispatch(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("testkit");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("dispatch_noop", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    total += one_batch().await;
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
