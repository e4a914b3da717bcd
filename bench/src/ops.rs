//! The operations endpoints of a flowgate service on one port, as the
//! `health` binary serves them: `/healthz` (live), `/readyz` (ready,
//! connected included) and `/metrics` (Prometheus text).
//!
//! ```no_run
//! # async fn demo(running: flowgate::RunningApp) -> Result<(), Box<dyn std::error::Error>> {
//! let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9464").await?;
//! let endpoints = flowgate_bench::ops::router(running.health_probe(), metrics);
//! axum::serve(listener, endpoints).await?;
//! # Ok(()) }
//! ```

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use flowgate::{Health, HealthProbe};
use metrics_exporter_prometheus::PrometheusHandle;

/// Where the endpoints bind unless `METRICS_ADDR` says otherwise: this host
/// only. Bind a wider address on purpose, behind whatever guards the
/// service's other ports.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";

#[derive(Clone)]
struct Endpoints {
    health: HealthProbe,
    metrics: PrometheusHandle,
}

/// The router: `GET /healthz`, `GET /readyz` (200 or 503, with the health
/// report as text) and `GET /metrics` (`metrics` rendered by the installed
/// Prometheus recorder).
pub fn router(health: HealthProbe, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(live))
        .route("/readyz", get(ready))
        .route("/metrics", get(render))
        .with_state(Endpoints { health, metrics })
}

/// 200 when the app is live, 503 when not; the report as the body.
async fn live(State(endpoints): State<Endpoints>) -> (StatusCode, String) {
    answer(endpoints.health.health(), Health::is_live)
}

/// 200 when the app is ready (connected, nothing failing), 503 when not.
async fn ready(State(endpoints): State<Endpoints>) -> (StatusCode, String) {
    answer(endpoints.health.health(), Health::is_ready)
}

async fn render(State(endpoints): State<Endpoints>) -> String {
    endpoints.metrics.render()
}

fn answer(health: Health, passes: fn(&Health) -> bool) -> (StatusCode, String) {
    let status = if passes(&health) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, format!("{health}\n"))
}

/// Publishes `event(1)`, `event(2)`, ... at `per_sec` until SIGINT or
/// SIGTERM, as the demo binaries do; a failed publish is logged (the
/// publisher counts it) and the next one goes on.
pub async fn publish_until_stopped<T, E>(
    publisher: &flowgate::Publisher<T>,
    per_sec: u64,
    mut event: impl FnMut(u64) -> E,
) where
    T: flowgate::Transport,
    E: flowgate::Event,
{
    let mut ticks =
        tokio::time::interval(std::time::Duration::from_micros(1_000_000 / per_sec.max(1)));
    let mut id = 0;
    let stop = flowgate::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticks.tick() => {
                id += 1;
                if let Err(err) = publisher.publish(&event(id)).await {
                    tracing::warn!(error = %err, "publish failed");
                }
            }
        }
    }
}
