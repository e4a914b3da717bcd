//! Fresh streams and pre-published backlogs, through the raw client.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use async_nats::jetstream::{self, stream};

use super::counters::counters;
use super::event::BenchEvent;
use super::BenchError;

/// The stream name used for `channel`.
pub fn stream_name(channel: &str) -> String {
    channel.replace('.', "_")
}

/// Deletes the stream of `channel` (with its consumers) and creates it anew,
/// file-backed like flowgate's default.
pub async fn fresh_stream(
    context: &jetstream::Context,
    channel: &str,
) -> Result<stream::Stream, BenchError> {
    let name = stream_name(channel);
    let _ = context.delete_stream(&name).await;
    let stream = context
        .create_stream(stream::Config {
            name,
            subjects: vec![channel.to_owned()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    Ok(stream)
}

/// Publishes `n` events of `size` bytes on `channel` with at most `window`
/// acks outstanding (not measured: this fills the backlog of a consume run).
pub async fn prepublish(
    context: &jetstream::Context,
    channel: &str,
    n: u64,
    size: usize,
    window: usize,
) -> Result<(), BenchError> {
    let template = BenchEvent::sized(0, size);
    let mut pending = VecDeque::with_capacity(window);
    for id in 0..n {
        if pending.len() >= window {
            if let Some(ack) = pending.pop_front() {
                ack.await?;
            }
        }
        let event = template.numbered(id);
        pending.push_back(context.publish(channel.to_owned(), event.to_json()).await?);
        counters().published.fetch_add(1, Ordering::Relaxed);
    }
    for ack in pending {
        ack.await?;
    }
    Ok(())
}
