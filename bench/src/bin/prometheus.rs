//! flowgate's metrics on a Prometheus endpoint, for the Grafana dashboard in
//! `dashboards/`.
//!
//! ```text
//! cargo run -p flowgate-bench --bin prometheus                 # in memory
//! NATS_URL=nats://127.0.0.1:4222 cargo run -p flowgate-bench --bin prometheus
//! curl -s localhost:9464/metrics | grep flowgate_
//! ```
//!
//! It installs the `metrics-exporter-prometheus` recorder (before the app
//! starts: flowgate registers its metric handles then), publishes orders at
//! a steady rate and bills them; every 50th order is declined, retried and
//! finally dead-lettered, so every panel of the dashboard has data. Set
//! `METRICS_ADDR` (default `127.0.0.1:9464`, this host only) and `ORDERS_PER_SEC` (default 200).

use std::net::SocketAddr;
use std::time::Duration;

use flowgate::middleware::metrics::names;
use flowgate::{App, Publisher, Transport};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
struct OrderPlaced {
    id: u64,
    total_cents: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("payment for order {0} declined")]
struct PaymentDeclined(u64);

/// Bills an order after 1 to 5 ms of simulated I/O; declines every 50th.
/// Its durable is its own: the quickstart's `billing` consumer on the same
/// channel has other settings, and one server may run both examples.
#[flowgate::subscriber(durable = "billing-metrics", max_in_flight = 64, max_deliver = 3)]
async fn bill(order: OrderPlaced) -> Result<(), PaymentDeclined> {
    tokio::time::sleep(Duration::from_millis(1 + order.id % 5)).await;
    if order.id.is_multiple_of(50) {
        return Err(PaymentDeclined(order.id));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,flowgate=error".into()),
        )
        .init();
    let addr: SocketAddr = std::env::var("METRICS_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:9464".into())
        .parse()?;
    let per_sec: u64 = std::env::var("ORDERS_PER_SEC")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Full(names::HANDLER_DURATION.to_owned()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        )?
        .install()?;
    println!("metrics on http://{addr}/metrics; Ctrl-C to stop");
    match std::env::var("NATS_URL") {
        Ok(url) => run(flowgate::JetStream::connect(&url).await?, per_sec).await,
        Err(_) => run(flowgate_testkit::InMemory::new(), per_sec).await,
    }
}

async fn run<T: Transport>(transport: T, per_sec: u64) -> Result<(), Box<dyn std::error::Error>> {
    let app = App::new()
        .subscriber(bill::subscriber())
        .start(transport.clone())
        .await?;
    let publisher = Publisher::new(transport);
    flowgate_bench::ops::publish_until_stopped(&publisher, per_sec, |id| OrderPlaced {
        id,
        total_cents: 1000 + (id % 7) as i64 * 250,
    })
    .await;
    app.shutdown().await?;
    Ok(())
}
