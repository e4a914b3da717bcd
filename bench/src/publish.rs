//! Cases 3 and 4: publishing, with a window of outstanding acks or awaiting
//! each ack, through flowgate's `Publisher` or through the raw client.

use std::sync::atomic::Ordering;
use std::time::Instant;

use async_nats::jetstream;
use flowgate::{PublishOptions, Publisher, Transport};

use super::counters::counters;
use super::event::{BenchEvent, PUBLISH_CHANNEL};
use super::probe::Meter;
use super::stream::prepublish;
use super::{BenchError, RunStats};

/// Publishes `n` events of `size` bytes to `channel` through
/// `Publisher::window(window)` on any transport, counting each, then waits
/// for every ack.
pub async fn window_to<T: Transport>(
    transport: &T,
    channel: &str,
    n: u64,
    size: usize,
    window: usize,
) -> Result<(), BenchError> {
    let template = BenchEvent::sized(0, size);
    let mut pending = Publisher::new(transport.clone()).window(window);
    for id in 0..n {
        let event = template.numbered(id);
        pending
            .publish_with(&event, PublishOptions::new().channel(channel))
            .await?;
        counters().published.fetch_add(1, Ordering::Relaxed);
    }
    pending.flush().await?;
    Ok(())
}

/// Case 3, framework: `Publisher::window(window)`, then waits for every ack.
pub async fn framework_window<T: Transport>(
    transport: T,
    n: u64,
    size: usize,
    window: usize,
) -> Result<RunStats, BenchError> {
    let template = BenchEvent::sized(0, size);
    let publisher = Publisher::new(transport);
    let meter = Meter::start();
    let mut pending = publisher.window(window);
    for id in 0..n {
        let event = template.numbered(id);
        pending.publish(&event).await?;
        counters().published.fetch_add(1, Ordering::Relaxed);
    }
    pending.flush().await?;
    Ok(meter.stop(n))
}

/// Case 3, raw: `context.publish` with at most `window` ack futures kept.
pub async fn raw_window(
    context: &jetstream::Context,
    n: u64,
    size: usize,
    window: usize,
) -> Result<RunStats, BenchError> {
    let meter = Meter::start();
    prepublish(context, PUBLISH_CHANNEL, n, size, window).await?;
    Ok(meter.stop(n))
}

/// Case 4, framework: `Publisher::publish`, awaiting each ack.
pub async fn framework_each<T: Transport>(
    transport: T,
    n: u64,
    size: usize,
) -> Result<RunStats, BenchError> {
    let template = BenchEvent::sized(0, size);
    let publisher = Publisher::new(transport);
    let mut latencies = Vec::with_capacity(n as usize);
    let meter = Meter::start();
    for id in 0..n {
        let event = template.numbered(id);
        let sent = Instant::now();
        publisher.publish(&event).await?;
        latencies.push(sent.elapsed());
        counters().published.fetch_add(1, Ordering::Relaxed);
    }
    let mut stats = meter.stop(n);
    stats.latencies = latencies;
    Ok(stats)
}

/// Case 4, raw: `context.publish(..).await?.await?` per message.
pub async fn raw_each(
    context: &jetstream::Context,
    n: u64,
    size: usize,
) -> Result<RunStats, BenchError> {
    let template = BenchEvent::sized(0, size);
    let mut latencies = Vec::with_capacity(n as usize);
    let meter = Meter::start();
    for id in 0..n {
        let event = template.numbered(id);
        let sent = Instant::now();
        context
            .publish(PUBLISH_CHANNEL, event.to_json())
            .await?
            .await?;
        latencies.push(sent.elapsed());
        counters().published.fetch_add(1, Ordering::Relaxed);
    }
    let mut stats = meter.stop(n);
    stats.latencies = latencies;
    Ok(stats)
}
