//! Cases 1 and 2: consume a pre-published backlog until every message is
//! acked, through a `#[flowgate::subscriber]` or through the raw client.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use flowgate::{App, Transport};
use futures::StreamExt;
use tokio::sync::Semaphore;

use super::counters::counters;
use super::event::BenchEvent;
use super::handlers::{self, IO_DELAY};
use super::probe::Meter;
use super::stream::stream_name;
use super::{BenchError, RunStats};

/// How long a run may go without a single ack before it is called stuck.
const STALL: Duration = Duration::from_secs(60);

/// The framework side: starts an app with the case's subscriber on
/// `transport`, waits until `n` more messages are acked and the acks are
/// flushed, then shuts the app down (not measured).
pub async fn framework<T: Transport>(
    transport: T,
    io: bool,
    n: u64,
    coalesced: bool,
) -> Result<RunStats, BenchError> {
    let subscriber = if io {
        handlers::consume_io::subscriber()
    } else {
        handlers::consume::subscriber()
    };
    let subscriber = if coalesced {
        subscriber.coalesced_acks()
    } else {
        subscriber
    };
    let target = counters().acked() + n;
    let meter = Meter::start();
    let app = App::new()
        .subscriber(subscriber)
        .start(transport.clone())
        .await?;
    wait_acked(target).await?;
    transport.flush().await?;
    let stats = meter.stop(n);
    app.shutdown().await?;
    Ok(stats)
}

/// The raw side: a pull consumer configured like flowgate's (explicit acks,
/// `max_ack_pending` 1024, batches of 1000), the same serde_json decode, one
/// ack per message. Without I/O it handles messages inline; with I/O it
/// spawns a task per message, bounded by a 1024-permit semaphore.
pub async fn raw(
    client: &async_nats::Client,
    context: &jetstream::Context,
    channel: &str,
    io: bool,
    n: u64,
) -> Result<RunStats, BenchError> {
    let target = counters().acked() + n;
    let meter = Meter::start();
    let stream = context.get_stream(stream_name(channel)).await?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("bench-raw".into()),
            name: Some("bench-raw".into()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1024,
            filter_subject: channel.to_owned(),
            ..Default::default()
        })
        .await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await?;
    let permits = Arc::new(Semaphore::new(1024));
    let c = counters();
    for _ in 0..n {
        let permit = permits.clone().acquire_owned().await?;
        let message = messages.next().await.ok_or("the pull stream ended")??;
        c.received.fetch_add(1, Ordering::Relaxed);
        if !io {
            let event: BenchEvent = serde_json::from_slice(&message.payload)?;
            std::hint::black_box(&event);
            message.ack().await?;
            c.acked.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        tokio::spawn(async move {
            match serde_json::from_slice::<BenchEvent>(&message.payload) {
                Ok(event) => {
                    tokio::time::sleep(IO_DELAY).await;
                    std::hint::black_box(&event);
                    if message.ack().await.is_ok() {
                        counters().acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    let _ = message.ack_with(jetstream::AckKind::Term).await;
                }
            }
            drop(permit);
        });
    }
    wait_acked(target).await?;
    client.flush().await?;
    Ok(meter.stop(n))
}

/// Waits until the acked counter reaches `target`; fails when it stops
/// moving for a minute.
pub async fn wait_acked(target: u64) -> Result<(), BenchError> {
    let mut last = counters().acked();
    let mut last_move = tokio::time::Instant::now();
    while last < target {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = counters().acked();
        if now != last {
            last = now;
            last_move = tokio::time::Instant::now();
        } else if last_move.elapsed() > STALL {
            return Err(format!("stuck: {} of the messages still unacked", target - now).into());
        }
    }
    Ok(())
}
