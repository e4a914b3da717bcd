//! One OpenTelemetry trace from a publisher, through the broker, to the
//! handler's attempts and the dead letter, printed to the console.
//!
//! ```text
//! cargo run -p flowgate-bench --bin trace                  # in memory
//! NATS_URL=nats://127.0.0.1:4222 cargo run -p flowgate-bench --bin trace
//! ```
//!
//! It sets OpenTelemetry's W3C propagator, installs `tracing-opentelemetry`'s
//! layer with the stdout exporter, and publishes two orders inside an
//! `http.request` span: order 1 fails its first attempt and is billed on the
//! second, order 2 is declined until its failure budget is spent and is
//! dead-lettered. Every span printed carries the request's trace id:
//! `http.request` → `flowgate.message` (parent remote, over the broker) →
//! `flowgate.attempt`; the dead letter's `traceparent` header names the
//! delivery that gave up. For OTLP, build the tracer with
//! `opentelemetry-otlp`'s exporter instead; nothing else changes.

use std::time::Duration;

use flowgate::middleware::retry::{Backoff, RetryPolicy};
use flowgate::trace_context::TRACEPARENT;
use flowgate::{App, Message, Publisher, Transport};
use opentelemetry::trace::TracerProvider as _;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "orders.traced")]
struct OrderPlaced {
    id: u64,
}

/// An order as its dead letter holds it (the same payload, on `dlq.orders.traced`).
#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
struct DeadOrder {
    id: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("payment for order {0} declined")]
struct PaymentDeclined(u64);

async fn bill(order: Message<OrderPlaced>) -> Result<(), PaymentDeclined> {
    match (order.id, order.attempt()) {
        (1, 1) | (2, _) => Err(PaymentDeclined(order.id)),
        _ => Ok(()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("flowgate-trace-example")))
        .with(tracing_subscriber::EnvFilter::new("info,flowgate=info"))
        .init();
    match std::env::var("NATS_URL") {
        Ok(url) => run(flowgate::JetStream::connect(&url).await?).await?,
        Err(_) => run(flowgate_testkit::InMemory::new()).await?,
    }
    provider.shutdown()?;
    Ok(())
}

async fn run<T: Transport>(transport: T) -> Result<(), Box<dyn std::error::Error>> {
    let retry = RetryPolicy::default().backoff_with(Backoff {
        initial: Duration::from_millis(20),
        ..Backoff::default()
    });
    // The dead letters' own subscriber: its delivery continues the trace too.
    let (lettered, mut letters) = tokio::sync::mpsc::unbounded_channel();
    let audit = move |letter: Message<DeadOrder>| {
        let lettered = lettered.clone();
        async move {
            let traceparent = letter
                .metadata()
                .headers()
                .and_then(|h| h.get(TRACEPARENT))
                .map(|v| v.to_string());
            let _ = lettered.send((letter.id, traceparent));
            Ok::<_, PaymentDeclined>(())
        }
    };
    let app = App::new()
        .subscriber(
            flowgate::Subscriber::new("orders.traced", bill)
                .durable("billing-traced")
                .max_deliver(3)
                .retry(retry),
        )
        .subscriber(flowgate::Subscriber::new("dlq.orders.traced", audit).durable("audit-traced"))
        .start(transport.clone())
        .await?;
    let publisher = Publisher::new(transport);
    async {
        for id in [1, 2] {
            publisher.publish(&OrderPlaced { id }).await?;
        }
        Ok::<_, flowgate::PublishError>(())
    }
    .instrument(tracing::info_span!("http.request", route = "/orders"))
    .await?;
    let letter = tokio::time::timeout(Duration::from_secs(10), letters.recv()).await;
    app.shutdown().await?;
    match letter {
        Ok(Some((id, traceparent))) => {
            println!("dead letter of order {id}: {TRACEPARENT} {traceparent:?}");
            Ok(())
        }
        _ => Err("no dead letter within 10 s".into()),
    }
}
