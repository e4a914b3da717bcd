//! `--transport stan`: flowgate's NATS Streaming transport against a raw
//! client written on async-nats + prost the way stan.go is, both talking to
//! the project's protocol double over the bench's own nats-server.
//!
//! | case | flowgate (A) | raw (B) |
//! | --- | --- | --- |
//! | 1 pub+sub | an app with one subscriber + `Publisher::window(W)` | subscription acking inline + pipelined publish, W acks outstanding |
//! | 3 publish | `Publisher::window(W)` | pipelined publish, W acks outstanding |
//! | 4 publish, await each ack | `Publisher::publish` | publish, then await its ack |
//!
//! Every run uses a channel of its own, so each starts empty.

pub mod double;
pub mod raw;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use flowgate::{
    App, NatsStreaming, PublishOptions, Publisher, StanOptions, StartPosition, Subscriber,
    Transport as _,
};

use super::consume::wait_acked;
use super::counters::counters;
use super::event::BenchEvent;
use super::probe::Meter;
use super::{BenchError, RunStats};
use double::{DoubleProcess, CLUSTER_ID};
use raw::RawStan;

/// Unacked deliveries a subscription may have, on both sides (stan.go's
/// default max in flight, and the JetStream cases' `max_in_flight`).
pub const MAX_IN_FLIGHT: usize = 1024;

/// The double, and one client of each side.
#[derive(Debug)]
pub struct StanEnv {
    /// The flowgate client.
    pub flowgate: NatsStreaming,
    /// The raw client.
    pub raw: RawStan,
    runs: AtomicU64,
    double: DoubleProcess,
}

impl StanEnv {
    /// Starts the double on the nats-server at `url` and registers both clients.
    pub async fn start(url: &str, window: usize) -> Result<Self, BenchError> {
        let double = DoubleProcess::start(url)?;
        let flowgate = NatsStreaming::connect(
            url,
            StanOptions::new("bench-flowgate")
                .cluster_id(CLUSTER_ID)
                .max_pub_acks_in_flight(window),
        )
        .await?;
        let nats = async_nats::connect(url).await?;
        let raw = RawStan::connect(nats, CLUSTER_ID, "bench-raw", window).await?;
        Ok(Self {
            flowgate,
            raw,
            runs: AtomicU64::new(0),
            double,
        })
    }

    /// The double's process id.
    pub fn double_pid(&self) -> u32 {
        self.double.pid()
    }

    /// A channel nobody used yet.
    fn fresh_channel(&self) -> String {
        format!("bench.stan.{}", self.runs.fetch_add(1, Ordering::Relaxed))
    }

    /// One run of `case` (1, 3 or 4) on the framework side or the raw side.
    pub async fn run_once(
        &self,
        case: u8,
        framework: bool,
        n: u64,
        size: usize,
        window: usize,
    ) -> Result<RunStats, BenchError> {
        let channel = self.fresh_channel();
        match (case, framework) {
            (1, true) => framework_pubsub(&self.flowgate, &channel, n, size, window).await,
            (1, false) => raw_pubsub(&self.raw, &channel, n, size).await,
            (3, true) => framework_window(&self.flowgate, &channel, n, size, window).await,
            (3, false) => raw_window(&self.raw, &channel, n, size).await,
            (4, true) => framework_each(&self.flowgate, &channel, n, size).await,
            (4, false) => raw_each(&self.raw, &channel, n, size).await,
            _ => Err(format!("case {case} does not run on NATS Streaming (cases 1, 3, 4)").into()),
        }
    }

    /// Ends both registrations.
    pub async fn close(&self) -> Result<(), BenchError> {
        self.flowgate.close().await?;
        self.raw.close().await
    }
}

async fn raw_publish_window(
    raw: &RawStan,
    channel: &str,
    n: u64,
    size: usize,
) -> Result<(), BenchError> {
    let template = BenchEvent::sized(0, size);
    for id in 0..n {
        let data = serde_json::to_vec(&template.numbered(id))?;
        raw.publish(channel, data, false).await?;
        counters().published.fetch_add(1, Ordering::Relaxed);
    }
    raw.flush_publishes().await
}

/// Case 1, framework: an app with one subscriber (start at the first message,
/// `max_in_flight` 1024) and a windowed publisher, until all `n` are acked.
async fn framework_pubsub(
    stan: &NatsStreaming,
    channel: &str,
    n: u64,
    size: usize,
    window: usize,
) -> Result<RunStats, BenchError> {
    let target = counters().acked() + n;
    let meter = Meter::start();
    let handler = |event: BenchEvent| {
        std::hint::black_box(&event);
        futures::future::ready(Ok::<(), Infallible>(()))
    };
    let app = App::new()
        .subscriber(
            Subscriber::new(channel, handler)
                .start(StartPosition::All)
                .max_in_flight(MAX_IN_FLIGHT),
        )
        .start(stan.clone())
        .await?;
    super::publish::window_to(stan, channel, n, size, window).await?;
    wait_acked(target).await?;
    stan.flush().await?;
    let stats = meter.stop(n);
    app.shutdown().await?;
    Ok(stats)
}

/// Case 1, raw: a subscription task decoding and acking inline, and the
/// pipelined publisher.
async fn raw_pubsub(
    raw: &RawStan,
    channel: &str,
    n: u64,
    size: usize,
) -> Result<RunStats, BenchError> {
    let meter = Meter::start();
    let mut sub = raw
        .subscribe(channel, i32::try_from(MAX_IN_FLIGHT)?)
        .await?;
    let nats = raw.nats().clone();
    let consumer = tokio::spawn(async move {
        let c = counters();
        let consumed = sub
            .consume(&nats, n, |msg| {
                c.received.fetch_add(1, Ordering::Relaxed);
                let event: BenchEvent = serde_json::from_slice(&msg.data)?;
                std::hint::black_box(&event);
                c.acked.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .await;
        consumed.map(|()| sub)
    });
    raw_publish_window(raw, channel, n, size).await?;
    let sub = consumer.await?.map_err(|e| e.to_string())?;
    raw.nats().flush().await?;
    let stats = meter.stop(n);
    raw.close_subscription(sub).await?;
    Ok(stats)
}

/// Case 3, framework: `Publisher::window(window)`, then every ack.
async fn framework_window(
    stan: &NatsStreaming,
    channel: &str,
    n: u64,
    size: usize,
    window: usize,
) -> Result<RunStats, BenchError> {
    let meter = Meter::start();
    super::publish::window_to(stan, channel, n, size, window).await?;
    Ok(meter.stop(n))
}

/// Case 3, raw: pipelined publish with the window of acks outstanding.
async fn raw_window(
    raw: &RawStan,
    channel: &str,
    n: u64,
    size: usize,
) -> Result<RunStats, BenchError> {
    let meter = Meter::start();
    raw_publish_window(raw, channel, n, size).await?;
    Ok(meter.stop(n))
}

/// Case 4, framework: `Publisher::publish` awaiting each ack.
async fn framework_each(
    stan: &NatsStreaming,
    channel: &str,
    n: u64,
    size: usize,
) -> Result<RunStats, BenchError> {
    let template = BenchEvent::sized(0, size);
    let publisher = Publisher::new(stan.clone());
    let mut latencies = Vec::with_capacity(usize::try_from(n)?);
    let meter = Meter::start();
    for id in 0..n {
        let sent = Instant::now();
        publisher
            .publish_with(
                &template.numbered(id),
                PublishOptions::new().channel(channel),
            )
            .await?;
        latencies.push(sent.elapsed());
        counters().published.fetch_add(1, Ordering::Relaxed);
    }
    let mut stats = meter.stop(n);
    stats.latencies = latencies;
    Ok(stats)
}

/// Case 4, raw: publish, then await its ack.
async fn raw_each(
    raw: &RawStan,
    channel: &str,
    n: u64,
    size: usize,
) -> Result<RunStats, BenchError> {
    let template = BenchEvent::sized(0, size);
    let mut latencies = Vec::with_capacity(usize::try_from(n)?);
    let meter = Meter::start();
    for id in 0..n {
        let sent = Instant::now();
        let data = serde_json::to_vec(&template.numbered(id))?;
        let ack = raw
            .publish(channel, data, true)
            .await?
            .ok_or("no ack receiver")?;
        ack.await?.map_err(|e| format!("publish refused: {e}"))?;
        latencies.push(sent.elapsed());
        counters().published.fetch_add(1, Ordering::Relaxed);
    }
    let mut stats = meter.stop(n);
    stats.latencies = latencies;
    Ok(stats)
}
