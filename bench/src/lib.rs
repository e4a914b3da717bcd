//! The benchmark, a package of its own so that its heavy dependencies
//! (plotting, the Prometheus exporter, CPU-time probes) stay out of the
//! examples a new user builds first. Four binaries:
//!
//! - `bench`: flowgate side by side with the bare async-nats client on the
//!   same server, in the same run (on NATS Streaming, with a raw client
//!   written on async-nats + prost).
//! - `prometheus`: the framework's metrics on a Prometheus endpoint, for the
//!   Grafana dashboard in `dashboards/`.
//! - `health`: `/healthz`, `/readyz` and `/metrics` on one axum port ([`ops`]).
//! - `trace`: one OpenTelemetry trace from a publisher through the broker to
//!   the handler's attempts and the dead letter, printed to the console.
//!
//! The parts of `bench`:
//!
//! - [`args`]: the command line.
//! - [`server`]: a throw-away `nats-server -js` on a free loopback port.
//! - [`event`], [`handlers`]: the benchmark's event type and subscribers.
//! - [`counters`]: published / received / acked counters, fed by flowgate's
//!   metrics and by the raw client alike, and sampled for the plot.
//! - [`probe`]: process CPU time and resident memory.
//! - [`alloc_count`]: heap allocations, counted by the global allocator.
//! - [`consume`], [`publish`], [`backlog`]: the measured cases.
//! - [`stan`]: the NATS Streaming cases (`--transport stan`), the raw
//!   stan.go-like baseline, and the protocol double in a child process.
//! - [`runner`]: warm-up, alternating rounds, medians.
//! - [`report`], [`plot`]: the table, JSON lines and the PNG.
//! - [`instructions`]: `--instructions`, instructions per message of the
//!   framework's consume path on the in-memory broker, under callgrind.

pub mod alloc_count;
pub mod args;
pub mod backlog;
pub mod consume;
pub mod counters;
pub mod event;
pub mod handlers;
pub mod instructions;
pub mod ops;
pub mod plot;
pub mod probe;
pub mod publish;
pub mod report;
pub mod runner;
pub mod server;
pub mod stan;
pub mod stream;

pub use args::Args;

/// What one measured run produced.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Messages handled (consumed and acked, or published and acked).
    pub messages: u64,
    /// Wall time from start until the last ack.
    pub elapsed: std::time::Duration,
    /// Process CPU time (user + system, every thread) over the run.
    pub cpu: std::time::Duration,
    /// Highest resident set size sampled during the run, in KiB.
    pub peak_rss_kib: u64,
    /// Per-message publish latencies (case 4 only).
    pub latencies: Vec<std::time::Duration>,
    /// Heap allocations over the run (`None` without the counting allocator).
    pub allocs: Option<alloc_count::AllocCount>,
}

impl RunStats {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Client CPU microseconds per message.
    pub fn cpu_us_per_msg(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.messages.max(1) as f64
    }

    /// Heap allocations (new blocks) per message.
    pub fn allocs_per_msg(&self) -> Option<f64> {
        self.per_msg(|a| a.allocations)
    }

    /// Reallocations per message.
    pub fn reallocs_per_msg(&self) -> Option<f64> {
        self.per_msg(|a| a.reallocations)
    }

    /// Heap bytes asked for per message.
    pub fn alloc_bytes_per_msg(&self) -> Option<f64> {
        self.per_msg(|a| a.bytes)
    }

    fn per_msg(&self, count: impl Fn(&alloc_count::AllocCount) -> u64) -> Option<f64> {
        let allocs = self.allocs.as_ref()?;
        Some(count(allocs) as f64 / self.messages.max(1) as f64)
    }
}

/// A boxed error for the benchmark's plumbing.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// Logs to stderr at the level `RUST_LOG` asks for (warnings by default).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
}
