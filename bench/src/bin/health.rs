//! Health checks and Prometheus metrics of a flowgate app on one port.
//!
//! ```text
//! cargo run -p flowgate-bench --bin health                 # in memory
//! NATS_URL=nats://127.0.0.1:4222 cargo run -p flowgate-bench --bin health
//! curl -i localhost:9464/healthz    # 200 while live: no subscription stalled
//! curl -i localhost:9464/readyz     # 200 while ready: connected, nothing failing
//! curl -s localhost:9464/metrics | grep flowgate_consumer_
//! ```
//!
//! It installs the Prometheus recorder without its own listener and serves
//! the rendered text from the same axum router as the health endpoints
//! (see `flowgate_bench::ops`), then bills orders published at a steady
//! rate. Stop the nats-server and `/readyz` answers 503 until it is back.
//! Set `METRICS_ADDR` (default `127.0.0.1:9464`, this host only) and
//! `ORDERS_PER_SEC` (default 50).

use std::net::SocketAddr;
use std::time::Duration;

use flowgate::{App, Publisher, Transport};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "orders.placed")]
struct OrderPlaced {
    id: u64,
}

/// Bills an order after a millisecond of simulated I/O.
#[flowgate::subscriber(durable = "billing-health", max_in_flight = 16)]
async fn bill(_order: OrderPlaced) -> Result<(), std::io::Error> {
    tokio::time::sleep(Duration::from_millis(1)).await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let addr: SocketAddr = std::env::var("METRICS_ADDR")
        .unwrap_or_else(|_| flowgate_bench::ops::DEFAULT_ADDR.into())
        .parse()?;
    let per_sec: u64 = std::env::var("ORDERS_PER_SEC")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    // Before the app starts: flowgate registers its metric handles then.
    let metrics = PrometheusBuilder::new().install_recorder()?;
    match std::env::var("NATS_URL") {
        Ok(url) => {
            run(
                flowgate::JetStream::connect(&url).await?,
                addr,
                metrics,
                per_sec,
            )
            .await
        }
        Err(_) => run(flowgate_testkit::InMemory::new(), addr, metrics, per_sec).await,
    }
}

async fn run<T: Transport>(
    transport: T,
    addr: SocketAddr,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    per_sec: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let app = App::new()
        .subscriber(bill::subscriber())
        .start(transport.clone())
        .await?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot listen on {addr} ({e}): set METRICS_ADDR to a free address")
    })?;
    let endpoints = flowgate_bench::ops::router(app.health_probe(), metrics);
    tokio::spawn(async move { axum::serve(listener, endpoints).await });
    println!("http://{addr}/healthz, /readyz and /metrics; Ctrl-C to stop");
    let publisher = Publisher::new(transport);
    flowgate_bench::ops::publish_until_stopped(&publisher, per_sec, |id| OrderPlaced { id }).await;
    app.shutdown().await?;
    Ok(())
}
