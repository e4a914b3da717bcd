//! `--backlog N`: consume a backlog of N messages with max_in_flight 1024 and
//! watch the resident set size stay flat.

use std::time::{Duration, Instant};

use flowgate::{App, Transport};
use serde::Serialize;

use super::counters::counters;
use super::event::CONSUME_CHANNEL;
use super::handlers;
use super::probe::rss_kib;
use super::runner::Env;
use super::stream::{fresh_stream, prepublish};
use super::BenchError;

/// What a backlog run saw.
#[derive(Debug, Clone, Serialize)]
pub struct BacklogReport {
    /// Always `backlog`.
    pub kind: &'static str,
    /// Backlog size.
    pub n: u64,
    /// RSS once the backlog was published, before consuming, MiB.
    pub rss_before_mib: f64,
    /// (messages consumed, RSS MiB) at 10k and every tenth of the backlog.
    pub rss_at: Vec<(u64, f64)>,
    /// Consume rate over the whole backlog.
    pub msgs_per_s: f64,
}

const PAYLOAD: usize = 128;

/// Publishes the backlog (raw client, or the in-memory broker), then
/// consumes it through the case-1 subscriber.
pub async fn run(env: &Env, n: u64) -> Result<BacklogReport, BenchError> {
    eprintln!("backlog: publishing {n} messages of {PAYLOAD} B");
    match (&env.framework, &env.raw) {
        (Some(js), Some((_, context))) => {
            fresh_stream(context, CONSUME_CHANNEL).await?;
            prepublish(context, CONSUME_CHANNEL, n, PAYLOAD, env.args.window).await?;
            consume(js.clone(), n).await
        }
        _ => {
            let memory = flowgate_testkit::InMemory::new();
            let mut pending = flowgate::Publisher::new(memory.clone()).window(env.args.window);
            let body = super::event::BenchEvent::sized(0, PAYLOAD).body;
            for id in 0..n {
                let event = super::event::BenchEvent {
                    id,
                    body: body.clone(),
                };
                pending
                    .publish_with(
                        &event,
                        flowgate::PublishOptions::new().channel(CONSUME_CHANNEL),
                    )
                    .await?;
            }
            pending.flush().await?;
            consume(memory, n).await
        }
    }
}

async fn consume<T: Transport>(transport: T, n: u64) -> Result<BacklogReport, BenchError> {
    let mib = |kib: Option<u64>| kib.unwrap_or(0) as f64 / 1024.0;
    let rss_before_mib = mib(rss_kib());
    let base = counters().acked();
    let mut marks: Vec<u64> = std::iter::once(10_000.min(n))
        .chain((1..=10).map(|tenth| n * tenth / 10))
        .collect();
    marks.sort_unstable();
    marks.dedup();
    let started = Instant::now();
    let app = App::new()
        .subscriber(handlers::consume::subscriber())
        .start(transport)
        .await?;
    let mut rss_at = Vec::new();
    let mut last_move = (0, Instant::now());
    for mark in marks {
        loop {
            let done = counters().acked() - base;
            if done >= mark {
                rss_at.push((done, mib(rss_kib())));
                eprintln!("backlog: {done} consumed, RSS {:.1} MiB", mib(rss_kib()));
                break;
            }
            if done != last_move.0 {
                last_move = (done, Instant::now());
            } else if last_move.1.elapsed() > Duration::from_secs(60) {
                return Err(format!("backlog stuck at {done} of {n}").into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let elapsed = started.elapsed();
    app.shutdown().await?;
    Ok(BacklogReport {
        kind: "backlog",
        n,
        rss_before_mib,
        rss_at,
        msgs_per_s: n as f64 / elapsed.as_secs_f64(),
    })
}
